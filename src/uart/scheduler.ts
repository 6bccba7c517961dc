/**
 * Time for the UART OTA sides, injected (STYLE.md §3). `VirtualScheduler` runs a whole transfer
 * in virtual time, deterministically (tests, npm run bench:uart); `realTimers` is the wall clock
 * for serial ports.
 */
export interface TimerHandle {
  readonly id: number;
}

export interface Timers {
  now(): number;
  setTimer(ms: number, fn: () => void): TimerHandle;
  clearTimer(h: TimerHandle | undefined): void;
}

interface Entry {
  at: number;
  seq: number;
  fn: () => void;
  live: boolean;
}

/** A discrete-event scheduler: a binary heap ordered by (time, insertion order). */
export class VirtualScheduler implements Timers {
  private t = 0;
  private seq = 0;
  private heap: Entry[] = [];
  private byId = new Map<number, Entry>();

  now(): number {
    return this.t;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    if (!(ms >= 0)) throw new RangeError(`setTimer: ${ms} is not a delay`);
    return this.at(this.t + ms, fn);
  }

  at(time: number, fn: () => void): TimerHandle {
    const e: Entry = { at: Math.max(time, this.t), seq: ++this.seq, fn, live: true };
    this.push(e);
    this.byId.set(e.seq, e);
    return { id: e.seq };
  }

  clearTimer(h: TimerHandle | undefined): void {
    if (!h) return;
    const e = this.byId.get(h.id);
    if (e) {
      e.live = false;
      this.byId.delete(h.id);
    }
  }

  /** Runs events until none are left, `until` returns true, or time passes `limitMs`. */
  run(opts: { until?: () => boolean; limitMs?: number } = {}): void {
    const limit = opts.limitMs ?? Number.POSITIVE_INFINITY;
    while (this.heap.length > 0) {
      if (opts.until?.()) return;
      const e = this.pop()!;
      if (!e.live) continue;
      if (e.at > limit) {
        this.push(e);
        this.t = limit;
        return;
      }
      this.byId.delete(e.seq);
      this.t = e.at;
      e.fn();
    }
  }

  private less(a: Entry, b: Entry): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): Entry | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

let nextRealId = 0;
const realHandles = new Map<number, NodeJS.Timeout>();

export const realTimers: Timers = {
  now: () => performance.now(),
  setTimer(ms, fn) {
    const id = ++nextRealId;
    realHandles.set(
      id,
      setTimeout(() => {
        realHandles.delete(id);
        fn();
      }, ms),
    );
    return { id };
  },
  clearTimer(h) {
    if (!h) return;
    const t = realHandles.get(h.id);
    if (t) clearTimeout(t);
    realHandles.delete(h.id);
  },
};
