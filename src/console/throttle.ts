/**
 * How often the console pushes a snapshot to its pages: at most once per `everyMs` while the
 * fleet changes (`changed`), and on a periodic refresh whatever happens (`now`), so a page shows
 * ages and stale gateways moving on a quiet fleet. Time is injected (STYLE.md §3).
 *
 * A refresh cancels a throttled push still pending. Without that, each refresh during a busy
 * stretch started another chain of pushes: bench:fleet's console stream carried 4.4-4.9
 * snapshots a second against the 2 intended (test/console/throttle.test.ts).
 */
import type { TimerHandle, Timers } from "../uart/scheduler.js";

export class PushThrottle {
  private timer: TimerHandle | undefined;
  private last = Number.NEGATIVE_INFINITY;
  private stopped = false;

  constructor(
    private readonly timers: Timers,
    private readonly everyMs: number,
    private readonly push: () => void,
  ) {
    if (!(everyMs >= 0 && Number.isFinite(everyMs)))
      throw new RangeError(`PushThrottle: everyMs ${everyMs} is not a duration`);
  }

  /** Something changed: push within `everyMs` of the last push, once for any number of changes. */
  changed(): void {
    if (this.timer || this.stopped) return;
    const wait = Math.max(0, this.last + this.everyMs - this.timers.now());
    this.timer = this.timers.setTimer(wait, () => this.now());
  }

  /** Push now (the refresh, or the throttled push coming due); a pending push is cancelled. */
  now(): void {
    if (this.stopped) return;
    this.timers.clearTimer(this.timer);
    this.timer = undefined;
    this.last = this.timers.now();
    this.push();
  }

  stop(): void {
    this.stopped = true;
    this.timers.clearTimer(this.timer);
    this.timer = undefined;
  }
}
