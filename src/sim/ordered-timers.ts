/**
 * Real timers for the simulator's real-time runs (`sim serve`, `sim fleet serve`, the in-memory
 * fleet): the Timers interface of src/uart/scheduler.ts on the event loop, strictly in due order.
 */
import type { TimerHandle, Timers } from "../uart/scheduler.js";

/** Due times closer than this are one time: far below a UART byte (5 µs at 2 Mbaud). */
const TIE_MS = 1e-3;

/**
 * Real timers that fire in due-time order, ties in the order they were set. Node's setTimeout
 * counts a delay from the event loop's cached millisecond clock (getLibuvNow), not from
 * performance.now(): two delays computed from performance.now() in one tick can fire in the
 * wrong order, and FirmwareEndpoint and the paced link compute theirs that way (a boot log line, or
 * an ACK, overtook the one written before it when these used `realTimers`). One Node timer per
 * queue.
 */
export class OrderedTimers implements Timers {
  private queue: { at: number; id: number; fn: () => void }[] = [];
  private nextId = 0;
  private armed: { at: number; timer: ReturnType<typeof setTimeout> } | undefined;
  private closed = false;
  private tickNow: number | undefined;

  /**
   * One value per synchronous run, like the event loop's own clock. A caller that computes a
   * delay as `due - now()` then sets a timer gets exactly `due` back: with a fresh reading here
   * the two readings differed by microseconds (more under load), enough to order two frames of
   * one device time (a RESULT and the ACK sent after it) the wrong way round.
   */
  now(): number {
    if (this.tickNow === undefined) {
      this.tickNow = performance.now();
      queueMicrotask(() => {
        this.tickNow = undefined;
      });
    }
    return this.tickNow;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    if (!(ms >= 0)) throw new RangeError(`setTimer: ${ms} is not a delay`);
    const e = { at: this.now() + ms, id: ++this.nextId, fn };
    if (this.closed) return { id: e.id };
    // After every entry due no later, ties in the order set. "No later" within TIE_MS, for float
    // rounding: now + (due - now) can be a few ulps off `due` (boot log lines printed at one
    // device time came out shuffled before this).
    let i = this.queue.length;
    while (i > 0 && this.queue[i - 1]!.at > e.at + TIE_MS) i--;
    this.queue.splice(i, 0, e);
    this.arm();
    return { id: e.id };
  }

  clearTimer(h: TimerHandle | undefined): void {
    if (!h) return;
    const i = this.queue.findIndex((e) => e.id === h.id);
    if (i >= 0) this.queue.splice(i, 1);
  }

  /** Drops every pending timer; later ones are never run. */
  close(): void {
    this.closed = true;
    this.queue = [];
    if (this.armed) clearTimeout(this.armed.timer);
    this.armed = undefined;
  }

  private arm(): void {
    const head = this.queue[0];
    if (!head || (this.armed && this.armed.at <= head.at)) return;
    if (this.armed) clearTimeout(this.armed.timer);
    this.armed = {
      at: head.at,
      timer: setTimeout(() => this.fire(), Math.max(0, head.at - this.now())),
    };
  }

  private fire(): void {
    this.armed = undefined;
    const now = this.now();
    try {
      while (this.queue.length > 0 && this.queue[0]!.at <= now) this.queue.shift()!.fn();
    } finally {
      // Early by up to a millisecond (libuv rounds), or set meanwhile: wait for the rest.
      this.arm();
    }
  }
}
