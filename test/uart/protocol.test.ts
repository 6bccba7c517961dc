/** The whole protocol in virtual time: a simulated ESP32 behind a simulated cable. */
import { sha256 } from "@noble/hashes/sha2.js";
import { describe, expect, it } from "vitest";
import { OTA_STATE } from "../../src/esp/otadata.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";
import { nextImage, rig, runFlash } from "./harness.js";

const sec = security("esp32");

function slotBytes(r: ReturnType<typeof rig>, len: number): Uint8Array {
  return r.dev.flash.read(0x160000, len);
}

describe("UART OTA over a simulated cable", () => {
  it("flashes, activates, reboots and sees the new app confirm itself; console lines surface", async () => {
    const r = rig({ link: { baud: 115200, latencyMs: 4 } });
    const img = nextImage("esp32", "2.0.0", 0x10000);
    const res = await runFlash(r, img, { targetBaud: 921600 });
    expect(res.error).toBeUndefined();
    expect(res.outcome).toMatchObject({
      kind: "confirmed",
      slotOffset: 0x160000,
      version: "2.0.0",
    });
    expect(slotBytes(r, img.length)).toEqual(img);
    expect(res.events).toContainEqual({ kind: "baud", baud: 921600, confirmed: true });
    // The reboot's ROM banner and the app's log lines reached the host as log events.
    expect(res.logs.some((l) => l.startsWith("ets Jun  8 2016"))).toBe(true);
    expect(res.logs).toContain(res.logs.find((l) => l.includes("app marked valid")));
    expect(r.ep.rx.lost).toBe(0);
    const st = r.dev.state;
    expect(st.kind === "running" && st.partition.offset).toBe(0x160000);
  });

  it("refuses, before ACTIVATE, an image whose verified version is not the expected one (a manifest that lies)", async () => {
    const r = rig({ link: { baud: 115200 } });
    const img = nextImage("esp32", "2.0.0");
    const res = await runFlash(r, img, { expectVersion: "9.9.9" });
    expect(res.error?.code).toBe("E_UART_VERSION_MISMATCH");
    expect(res.error?.message).toContain('"2.0.0"');
    expect(res.events).not.toContainEqual({ kind: "phase", phase: "activate" });
    expect(r.ep.transferState).toBe("idle");
    r.ep.reset("POWERON_RESET");
    const st = r.dev.state;
    expect(st.kind === "running" && st.app?.version).toBe("1.0.0");
    // The right version goes through.
    const ok = await runFlash(rig({ link: { baud: 115200 } }), img, { expectVersion: "2.0.0" });
    expect(ok.outcome?.kind).toBe("confirmed");
  });

  it("reports a rollback when the new app refuses its self-test", async () => {
    const dev = makeDevice("esp32", sec, { behaviours: { "2.0.0": "refuses" } });
    const r = rig({ dev });
    const res = await runFlash(r, nextImage("esp32", "2.0.0"));
    expect(res.outcome).toMatchObject({ kind: "rolled-back", runningOffset: 0x10000 });
    if (res.outcome?.kind === "rolled-back")
      expect([OTA_STATE.INVALID, OTA_STATE.ABORTED]).toContain(res.outcome.newSlotState);
  });

  it("reports a rollback when the new app crashes on every boot", async () => {
    const dev = makeDevice("esp32", sec, { behaviours: { "2.0.0": "crash-loop" } });
    const r = rig({ dev });
    const res = await runFlash(r, nextImage("esp32", "2.0.0"));
    expect(res.outcome).toMatchObject({ kind: "rolled-back", runningOffset: 0x10000 });
    expect(res.logs.some((l) => l.startsWith("Guru Meditation Error"))).toBe(true);
  });

  it("times out with a code when the new app never confirms itself", async () => {
    const dev = makeDevice("esp32", sec, { behaviours: { "2.0.0": "hang" } });
    const r = rig({ dev });
    const res = await runFlash(r, nextImage("esp32", "2.0.0"), { timeouts: { confirmMs: 5000 } });
    expect(res.error?.code).toBe("E_UART_CONFIRM_TIMEOUT");
  });

  it("refuses the running slot, a non-slot offset and an image bigger than the slot", async () => {
    const img = nextImage("esp32", "2.0.0");
    for (const [offset, size, code] of [
      [0x10000, img.length, "E_UART_SLOT_REFUSED"],
      [0x9000, img.length, "E_UART_SLOT_REFUSED"],
      [0x160000, 0x151000, "E_UART_SLOT_REFUSED"],
    ] as const) {
      const r = rig();
      const res = await runFlash(r, img, { image: { offset, size, sha256: sha256(img) } });
      expect(res.error?.code).toBe(code);
    }
  });

  it("the host refuses an offset that is not the next slot (the CLI's check)", async () => {
    const r = rig();
    const img = nextImage("esp32", "2.0.0");
    const res = await runFlash(r, img, {
      image: { offset: 0x10000, size: img.length, sha256: sha256(img) },
      requireNextSlot: true,
    });
    expect(res.error?.code).toBe("E_UART_SLOT_NOT_NEXT");
  });

  it("refuses to start while the running app is still PENDING_VERIFY", async () => {
    const dev = makeDevice("esp32", sec, { behaviours: { "2.0.0": "hang" } });
    const r = rig({ dev });
    await runFlash(r, nextImage("esp32", "2.0.0"), { timeouts: { confirmMs: 2000 } });
    const again = otaImage("esp32", sec, app("esp32", "3.0.0"), 0x10000);
    const res = await runFlash(r, again, {
      image: { offset: 0x10000, size: again.length, sha256: sha256(again) },
    });
    expect(res.error?.code).toBe("E_UART_PENDING_VERIFY");
  });

  it("a wrong SHA-256 fails END with E_UART_HASH_MISMATCH and nothing is activated", async () => {
    const r = rig();
    const img = nextImage("esp32", "2.0.0");
    const res = await runFlash(r, img, {
      image: { offset: 0x160000, size: img.length, sha256: new Uint8Array(32) },
    });
    expect(res.error?.code).toBe("E_UART_HASH_MISMATCH");
    r.ep.reset("POWERON_RESET");
    const st = r.dev.state;
    expect(st.kind === "running" && st.partition.offset).toBe(0x10000);
  });

  it("an image encrypted for the wrong slot arrives intact but fails END (E_UART_IMAGE_INVALID)", async () => {
    const r = rig();
    const wrong = otaImage("esp32", sec, app("esp32", "2.0.0"), 0x10000);
    const res = await runFlash(r, wrong);
    expect(res.error?.code).toBe("E_UART_IMAGE_INVALID");
    r.ep.reset("POWERON_RESET");
    const st = r.dev.state;
    expect(st.kind === "running" && st.app?.version).toBe("1.0.0");
  });

  it("an AbortSignal cancels: the device ABORTs and keeps its old app", async () => {
    const r = rig({ link: { baud: 115200 } });
    const ac = new AbortController();
    const res = await runFlash(
      r,
      nextImage("esp32", "2.0.0", 0x20000),
      {},
      (rr) => {
        rr.sched.setTimer(1500, () => ac.abort("operator"));
      },
      ac.signal,
    );
    expect(res.error?.code).toBe("E_UART_CANCELLED");
    // The ABORT frame may still be on the wire behind the window's DATA frames.
    r.sched.run({ limitMs: r.sched.now() + 10_000 });
    expect(r.ep.transferState).toBe("idle");
    r.ep.reset("POWERON_RESET");
    const st = r.dev.state;
    expect(st.kind === "running" && st.app?.version).toBe("1.0.0");
  });

  it("falls back to 115200 when the adapter cannot carry the negotiated rate", async () => {
    const r = rig({ link: { baud: 115200, faults: { maxBaud: 921600 } } });
    const img = nextImage("esp32", "2.0.0");
    const res = await runFlash(r, img, { targetBaud: 2000000 });
    expect(res.events).toContainEqual({ kind: "baud", baud: 115200, confirmed: false });
    expect(res.outcome?.kind).toBe("confirmed");
    expect(slotBytes(r, img.length)).toEqual(img);
  });

  it("finds the device at the new rate when the rate's confirmation came back too late (§3.3)", async () => {
    // 450 ms each way: the device gets the HELLO at 2 Mbaud (and so keeps that rate for good)
    // but its INFO reaches the host after the host's 800 ms wait, so the host falls back to
    // 115200 alone. Its HELLOs there go unanswered until it asks at 2 Mbaud too.
    const r = rig({ link: { baud: 115200, latencyMs: 450 } });
    const img = nextImage("esp32", "2.0.0", 0x10000);
    const res = await runFlash(r, img, { targetBaud: 2000000 });
    expect(res.error).toBeUndefined();
    expect(res.events).toContainEqual({ kind: "baud", baud: 115200, confirmed: false });
    expect(res.events).toContainEqual({ kind: "baud", baud: 2000000, confirmed: true });
    expect(res.outcome?.kind).toBe("confirmed");
    expect(slotBytes(r, img.length)).toEqual(img);
  });

  it("never overflows either receive configuration, at any of the bench's rates", async () => {
    for (const rx of [RX_CONFIGS.iram, RX_CONFIGS.noIram]) {
      for (const baud of [921600, 2000000]) {
        const r = rig({ rx, link: { baud: 115200, latencyMs: 16 } });
        const img = nextImage("esp32", "2.0.0", 0x30000);
        const res = await runFlash(r, img, { targetBaud: baud });
        expect(res.outcome?.kind).toBe("confirmed");
        expect(r.ep.rx.lost).toBe(0);
        expect(r.ep.rx.highWater).toBeLessThanOrEqual(r.ep.rx.capacity);
      }
    }
  });

  it("a transfer that stopped (host gone) resumes from the device's progress record", async () => {
    const r = rig({ link: { baud: 921600 } });
    const img = nextImage("esp32", "2.0.0", 0x40000);
    const first = await runFlash(r, img, {}, (rr) => {
      rr.sched.setTimer(2500, () => rr.link.disconnect());
    });
    expect(first.error?.code).toBe("E_UART_DISCONNECTED");
    r.link.reconnect();
    const second = await runFlash(r, img);
    expect(second.outcome?.kind).toBe("confirmed");
    const resumed = second.events.find((e) => e.kind === "resumed");
    expect(resumed && resumed.kind === "resumed" && resumed.from).toBeGreaterThan(0);
    expect(slotBytes(r, img.length)).toEqual(img);
  });

  it("a device reset mid-transfer is survived within one session (resume after ANNOUNCE)", async () => {
    const r = rig({ link: { baud: 921600 } });
    const img = nextImage("esp32", "2.0.0", 0x40000);
    const res = await runFlash(r, img, {}, (rr) => {
      rr.sched.setTimer(2500, () => rr.ep.reset("RTCWDT_RTC_RESET"));
    });
    expect(res.outcome?.kind).toBe("confirmed");
    expect(res.events.some((e) => e.kind === "device-reset")).toBe(true);
    expect(slotBytes(r, img.length)).toEqual(img);
  });
});
