/**
 * The fault layer for real ports (`sim serve --fault`): the same faults as the virtual link
 * (virtual-link.ts), applied in real time to the bytes a simulated device sends and receives.
 */
import { type BytePort, WrappingPort } from "../uart/port.js";
import type { Timers } from "../uart/scheduler.js";
import { type LinkFaults, prng } from "./virtual-link.js";

export interface RealFaults extends LinkFaults {
  /** Added to each write and each delivery (ms). */
  latencyMs?: number;
}

/** `ber=1e-6,drop=0.01,dropbyte=0,garbage=0.01,latency=16` → RealFaults. */
export function parseFaults(spec: string): RealFaults {
  const out: RealFaults = {};
  const keys: Record<string, keyof RealFaults> = {
    ber: "bitErrorRate",
    drop: "dropWriteRate",
    dropbyte: "dropByteRate",
    garbage: "garbageRate",
    latency: "latencyMs",
  };
  for (const part of spec.split(",").filter(Boolean)) {
    const [k, v] = part.split("=");
    const key = keys[k?.trim() ?? ""];
    const n = Number(v);
    if (!key || v === undefined || !Number.isFinite(n) || n < 0)
      throw new RangeError(
        `fault "${part}": expected one of ${Object.keys(keys).join(", ")} = a non-negative number`,
      );
    out[key] = n;
  }
  return out;
}

export class FaultPort extends WrappingPort {
  private readonly rand: () => number;

  constructor(
    inner: BytePort,
    private readonly timers: Timers,
    private readonly faults: RealFaults,
    seed = 1,
  ) {
    super(inner);
    this.rand = prng(seed);
    inner.onData((b) => {
      const out = this.mangle(b);
      if (out) this.later(() => this.dataCb?.(out));
    });
  }

  private later(fn: () => void): void {
    const ms = this.faults.latencyMs ?? 0;
    if (ms > 0) this.timers.setTimer(ms, fn);
    else fn();
  }

  private mangle(b: Uint8Array): Uint8Array | undefined {
    const f = this.faults;
    if (f.dropWriteRate && this.rand() < f.dropWriteRate) return undefined;
    const out: number[] = [];
    if (f.garbageRate && this.rand() < f.garbageRate) {
      const n = 1 + Math.floor(this.rand() * 32);
      for (let i = 0; i < n; i++) out.push(Math.floor(this.rand() * 256));
    }
    for (const x of b) {
      if (f.dropByteRate && this.rand() < f.dropByteRate) continue;
      let y = x;
      if (f.bitErrorRate && this.rand() < 8 * f.bitErrorRate) y ^= 1 << Math.floor(this.rand() * 8);
      out.push(y);
    }
    return Uint8Array.from(out);
  }

  write(bytes: Uint8Array): void {
    const out = this.mangle(bytes);
    if (out) this.later(() => this.inner.write(out));
  }
}
