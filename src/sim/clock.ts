/**
 * The simulator's time. Flash operations are synchronous and *spend* time on the clock: a
 * VirtualClock just advances (tests and benchmarks run a 10 s erase in microseconds), a RealClock
 * accumulates the time owed so an async caller can `settle()` it (live runs on a pty, where the
 * host must see a slow erase as a slow erase).
 */
export interface SimClock {
  /** Milliseconds since the clock's epoch. */
  now(): number;
  /** The simulated hardware was busy for `ms`. */
  spend(ms: number): void;
}

export class VirtualClock implements SimClock {
  private t: number;
  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  spend(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`VirtualClock.spend: ${ms} is not a duration`);
    this.t += ms;
  }
}

export class RealClock implements SimClock {
  private owed = 0;
  private readonly epoch = performance.now();
  now(): number {
    return performance.now() - this.epoch + this.owed;
  }
  spend(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`RealClock.spend: ${ms} is not a duration`);
    this.owed += ms;
  }
  /** Waits out the time the hardware spent since the last settle. */
  async settle(): Promise<void> {
    const ms = this.owed;
    this.owed = 0;
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }
}
