/**
 * Fault runs (issue 4): bit errors, dropped frames, disconnects and device resets (power cuts
 * in the middle of flash operations included) at random points. Every run ends with the slot
 * byte-identical to the image and the new app confirmed, or with a coded error and the old app
 * still booting. Never a wrong image activated.
 */
import { describe, expect, it } from "vitest";
import { equalBytes } from "../../src/bytes.js";
import { prng } from "../../src/sim/virtual-link.js";
import { nextImage, type Rig, rig, runFlash } from "./harness.js";

const RETRYABLE = new Set(["E_UART_DISCONNECTED", "E_UART_TIMEOUT", "E_UART_NO_DEVICE"]);

function runsNew(r: Rig, img: Uint8Array): boolean {
  const s = r.dev.state;
  return (
    s.kind === "running" &&
    s.partition.offset === 0x160000 &&
    equalBytes(r.dev.flash.read(0x160000, img.length), img)
  );
}

/** A gateway's loop: retry what is retryable; each new session resumes from the device's record. */
async function gateway(r: Rig, img: Uint8Array, chaos: (r: Rig) => void, sessions = 10) {
  const codes: string[] = [];
  for (let i = 0; i < sessions; i++) {
    r.link.reconnect();
    const res = await runFlash(r, img, { timeouts: { ackMs: 1500, responseMs: 1500 } }, chaos);
    if (res.outcome?.kind === "confirmed") return { ok: true, codes };
    codes.push(res.error?.code ?? res.outcome?.kind ?? "?");
    if (runsNew(r, img)) return { ok: true, codes };
    if (res.error && !RETRYABLE.has(res.error.code)) return { ok: false, codes };
  }
  return { ok: false, codes };
}

function checkInvariant(r: Rig, img: Uint8Array, ok: boolean, codes: string[]) {
  // Let a device that was cut off come back, then look at what it runs.
  if (!r.ep.up) r.ep.powerOn();
  r.sched.run({ limitMs: r.sched.now() + 5000 });
  const s = r.dev.state;
  expect(s.kind).toBe("running");
  if (s.kind !== "running") return;
  if (ok) expect(runsNew(r, img)).toBe(true);
  else {
    for (const c of codes) expect(c).toMatch(/^E_UART_/);
    // Old app, or (only if every byte is right) the new one.
    if (s.partition.offset === 0x160000) expect(runsNew(r, img)).toBe(true);
    else expect(s.app?.version).toBe("1.0.0");
  }
}

describe("fault runs", () => {
  const img = nextImage("esp32", "2.0.0", 0x30000);

  it("completes at bit error rate 1e-5 (retransmissions, no session lost)", async () => {
    const r = rig({
      link: { baud: 921600, latencyMs: 2, faults: { bitErrorRate: 1e-5 }, seed: 7 },
    });
    const res = await runFlash(r, img, { targetBaud: 2000000 });
    expect(res.outcome?.kind).toBe("confirmed");
    expect(res.session.stats.crcErrors + r.ep.framesHandled).toBeGreaterThan(0);
    expect(runsNew(r, img)).toBe(true);
  });

  it("completes with 1% of frames dropped in each direction and garbage between frames", async () => {
    const r = rig({
      link: {
        baud: 921600,
        latencyMs: 8,
        faults: { dropWriteRate: 0.01, garbageRate: 0.02 },
        seed: 3,
      },
    });
    const res = await runFlash(r, img);
    expect(res.outcome?.kind).toBe("confirmed");
    expect(r.link.host.stats.droppedWrites + r.link.device.stats.droppedWrites).toBeGreaterThan(0);
    expect(runsNew(r, img)).toBe(true);
  });

  for (let seed = 1; seed <= 12; seed++) {
    it(`seed ${seed}: BER 1e-6, 1% drops, a disconnect, a reset or a power cut at a random point`, async () => {
      const rand = prng(seed * 7919);
      const r = rig({
        link: {
          baud: 921600,
          latencyMs: 1 + Math.floor(rand() * 16),
          faults: { bitErrorRate: 1e-6, dropWriteRate: 0.01 },
          seed,
        },
      });
      let fired = false;
      const chaos = (rr: Rig) => {
        if (fired) return;
        fired = true;
        const at = 100 + rand() * 2500;
        const kind = Math.floor(rand() * 3);
        rr.sched.setTimer(at, () => {
          if (kind === 0) rr.link.disconnect();
          else if (kind === 1) rr.ep.reset("RTCWDT_RTC_RESET");
          else {
            rr.dev.flash.schedulePowerCut(
              rr.dev.flash.operationCount + 1 + Math.floor(rand() * 40),
            );
            // Power comes back 300 ms after the cut (checked every 50 ms).
            const poll = () => {
              if (!rr.ep.up && rr.dev.state.kind === "off")
                rr.sched.setTimer(300, () => rr.ep.powerOn());
              else rr.sched.setTimer(50, poll);
            };
            poll();
          }
        });
      };
      const { ok, codes } = await gateway(r, img, chaos);
      checkInvariant(r, img, ok, codes);
    });
  }
});
