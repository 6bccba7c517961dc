/**
 * The real host (HostSession, as `esp-ota device flash` runs it) against the shipped C device
 * side, compiled to wasm, over the in-memory link in virtual time.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { describe, expect, it } from "vitest";
import { OTA_STATE } from "../../src/esp/otadata.js";
import type { FirmwareEndpoint } from "../../src/sim/firmware-device.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { makeDevice, security } from "../helpers/sim.js";
import { nextImage, rig, runFlash } from "../uart/harness.js";

describe("the C firmware (wasm) as the device side", () => {
  it("a full OTA: HELLO, INFO, BAUD, BEGIN, DATA…, END, ACTIVATE, REBOOT, confirm", async () => {
    const r = rig({ link: { baud: 115200, latencyMs: 4 } });
    const img = nextImage("esp32", "2.0.0", 0x12345);
    const res = await runFlash(r, img, { targetBaud: 921600 });
    expect(res.error).toBeUndefined();
    expect(res.outcome).toMatchObject({
      kind: "confirmed",
      slotOffset: 0x160000,
      version: "2.0.0",
    });
    expect(r.dev.flash.read(0x160000, img.length)).toEqual(img);
    expect(res.events).toContainEqual({ kind: "baud", baud: 921600, confirmed: true });
    expect(r.ep.rx.lost).toBe(0);
    const st = r.dev.state;
    expect(st.kind === "running" && st.partition.offset).toBe(0x160000);
    expect(st.kind === "running" && st.bootState).toBe(OTA_STATE.PENDING_VERIFY);
  });

  it("a full OTA with the ISR not in IRAM (batches, busyMs pauses), on an ESP32-S3", async () => {
    const r = rig({ chip: "esp32s3", rx: RX_CONFIGS.noIram, link: { baud: 921600 } });
    const img = nextImage("esp32s3", "2.0.0", 0x20000);
    const res = await runFlash(r, img);
    expect(res.error).toBeUndefined();
    expect(res.outcome?.kind).toBe("confirmed");
    expect(r.ep.rx.lost).toBe(0);
  });

  it("resumes after a device reset in the middle of the transfer", async () => {
    const r = rig({ link: { baud: 921600 } });
    const img = nextImage("esp32", "2.0.0", 0x30000);
    let cut = false;
    const first = await runFlash(r, img, {}, (rig, s) => {
      const poll = () => {
        const p = s.stats.dataBytesSent;
        if (!cut && p > 0x1c000) {
          cut = true;
          rig.ep.reset("POWERON_RESET");
          return;
        }
        if (!cut) rig.sched.setTimer(5, poll);
      };
      rig.sched.setTimer(5, poll);
    });
    expect(cut).toBe(true);
    // The host sees the reset (ROM banner), says HELLO again, and BEGIN resumes from the
    // progress record: from a 64 KB boundary, not from 0.
    expect(first.error).toBeUndefined();
    expect(first.outcome?.kind).toBe("confirmed");
    expect(first.events).toContainEqual({ kind: "device-reset" });
    const resumed = first.events.find((e) => e.kind === "resumed");
    expect(resumed?.kind === "resumed" && resumed.from).toBeGreaterThanOrEqual(0x10000);
    expect(resumed?.kind === "resumed" && resumed.from % 0x10000).toBe(0);
    expect(r.dev.flash.read(0x160000, img.length)).toEqual(img);
  });

  it("refuses the running slot, a non-slot offset and an image bigger than the slot", async () => {
    const img = nextImage("esp32", "2.0.0");
    for (const [offset, size] of [
      [0x10000, img.length],
      [0x9000, img.length],
      [0x160000, 0x151000],
    ] as const) {
      const r = rig();
      const res = await runFlash(r, img, { image: { offset, size, sha256: sha256(img) } });
      expect(res.error?.code).toBe("E_UART_SLOT_REFUSED");
      expect(r.ep.transferState).toBe("idle");
    }
  });

  it("the self-test hook marks the new app valid, or rolls it back", async () => {
    for (const ok of [true, false]) {
      const dev = makeDevice("esp32", security("esp32"), { behaviours: { "2.0.0": "hang" } });
      const r = rig({ dev, link: { baud: 921600 } });
      const res = await runFlash(r, nextImage("esp32", "2.0.0"), { timeouts: { confirmMs: 1000 } });
      expect(res.error?.code).toBe("E_UART_CONFIRM_TIMEOUT");
      const ep = r.ep as unknown as FirmwareEndpoint;
      const heard: number[] = [];
      r.link.host.onData((b) => heard.push(...b));
      expect(ep.selfTestDone(ok)).toBe(0);
      r.sched.run({ limitMs: r.sched.now() + 5000 });
      const st = r.dev.state;
      if (ok) {
        expect(st.kind === "running" && st.partition.offset).toBe(0x160000);
        expect(
          r.dev.ota.esp_ota_get_state_partition(r.dev.ota.esp_ota_get_running_partition()).state,
        ).toBe(OTA_STATE.VALID);
        // ANNOUNCE (0x90) went out: A5 5A 90.
        expect(Buffer.from(heard).includes(Buffer.from([0xa5, 0x5a, 0x90]))).toBe(true);
      } else {
        expect(st.kind === "running" && st.partition.offset).toBe(0x10000);
      }
    }
  });

  it("one 64 KB page of wasm memory per simulated device", () => {
    const r = rig();
    const ep = r.ep as unknown as FirmwareEndpoint;
    expect(ep.contextBytes).toBeGreaterThan(8192);
    expect(ep.memoryBytes).toBe(65536);
  });

  it("a wrong SHA-256 fails END and nothing is activated", async () => {
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
});
