import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_SPEC, SimDevice } from "../../src/sim/device.js";
import { Efuses, type SimChip } from "../../src/sim/efuse.js";
import { NorFlash } from "../../src/sim/flash.js";
import type { VirtualScheduler } from "../../src/uart/scheduler.js";

export const FIXTURES = join(import.meta.dirname, "../fixtures/rom_protocol");
/** The MAC the traces' scripted device reported (mock_read_mac: 24:0a:c4:12:34:56). */
export const TRACE_MAC = Uint8Array.from([0x24, 0x0a, 0xc4, 0x12, 0x34, 0x56]);

export interface TraceFrame {
  dir: "host->mock" | "mock->host";
  frame_hex: string;
  op?: string;
}

/** The device-side log; the no-answer capture holds bare `[t, frame_hex]` pairs (host frames). */
export function loadTrace(name: string): TraceFrame[] {
  const raw: unknown[] = JSON.parse(
    readFileSync(join(FIXTURES, `${name}.device_side.json`), "utf8"),
  );
  return raw.map((f) =>
    Array.isArray(f)
      ? { dir: "host->mock", frame_hex: String(f[1]), op: `0x${String(f[1]).slice(4, 6)}` }
      : (f as TraceFrame),
  );
}

export function fixture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(join(FIXTURES, name)));
}

/** A factory-fresh chip: blank 4 MB flash, nothing burned but the MAC. */
export function blankDevice(chip: SimChip = "esp32", mac = TRACE_MAC): SimDevice {
  const size = 4 * 1024 * 1024;
  return new SimDevice(
    { chip, flashSize: size, ...DEFAULT_SPEC },
    new Efuses(chip, mac),
    new NorFlash({ size }),
  );
}

/**
 * Runs an async host session on a VirtualScheduler: between scheduler events, the promise chain
 * runs to rest (one macrotask turn), so `await`s and timers interleave as on a real event loop.
 */
export async function drive<T>(
  sched: VirtualScheduler,
  p: Promise<T>,
  maxEvents = 100_000,
): Promise<T> {
  let done = false;
  p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  for (let i = 0; i < maxEvents && !done; i++) {
    await new Promise((r) => setImmediate(r));
    if (done) break;
    let n = 0;
    sched.run({ until: () => n++ >= 1 });
  }
  if (!done) throw new Error(`drive: not settled after ${maxEvents} events`);
  return p;
}
