/**
 * One direction of a proxied connection as a chain of toxics (Toxiproxy's ToxicLink, link.go):
 * an item enters the first toxic, waits in that toxic's queue until it is due, then enters the
 * next, and leaves the last one as something to write. No socket, timer or clock: the caller
 * says what time it is and asks when to come back (`nextAt`), so the chain runs as fast as a
 * unit test likes and the proxy (src/chaos/proxy.ts) needs just one timer per connection.
 *
 * Each toxic's queue is first in, first out: an item never leaves before one that entered the
 * toxic earlier, whatever its own delay (a jittered chunk waits for the one before it, as in
 * Toxiproxy, where each toxic handles one chunk at a time). So the stream's order always holds.
 */
import {
  expireToxic,
  type Item,
  sameToxic,
  startToxic,
  stepToxic,
  stopToxic,
  type Toxic,
  type ToxicState,
} from "./toxics.js";

interface Stage {
  toxic: Toxic;
  state: ToxicState;
  /** Items this toxic has let out, each to enter the next toxic at its `at`. */
  queue: Item[];
  head: number;
  /** `at` of the last item queued: later items are never due earlier (FIFO). */
  lastAt: number;
  /** It has let out the end of the stream; it takes nothing more. */
  closed: boolean;
}

const isEnd = (i: Item) => i.kind !== "data";

export class ToxicPipe {
  private stages: Stage[] = [];
  private out: Item[] = [];
  private ended = false;
  private queued = 0;

  constructor(
    toxics: readonly Toxic[],
    now: number,
    private readonly random: () => number,
  ) {
    for (const t of toxics) this.stages.push(this.newStage(t, now));
  }

  /** The toxics in the chain, in order. */
  get toxics(): readonly Toxic[] {
    return this.stages.map((s) => s.toxic);
  }

  /** Bytes held in the chain: what the proxy bounds by pausing the source. */
  get queuedBytes(): number {
    return this.queued;
  }

  /** The last item (end of stream, close or reset) has left: nothing more will. */
  get done(): boolean {
    return this.ended;
  }

  /** When `advance` has something to do next; undefined when nothing is waiting. */
  get nextAt(): number | undefined {
    let next: number | undefined;
    for (const s of this.stages) {
      const q = s.queue[s.head]?.at;
      for (const t of [q, s.closed ? undefined : s.state.deadline]) {
        if (t !== undefined && (next === undefined || t < next)) next = t;
      }
    }
    return next;
  }

  /** An item from the source at `now` (its own `at` is ignored); returns what is due now. */
  write(item: Item, now: number): Item[] {
    this.feed(0, { ...item, at: now } as Item);
    return this.advance(now);
  }

  /** Moves everything due by `now` along the chain; returns the items that leave it, in order. */
  advance(now: number): Item[] {
    for (let i = 0; i < this.stages.length; i++) {
      const s = this.stages[i]!;
      for (;;) {
        const head = s.queue[s.head];
        const deadline = s.closed ? undefined : s.state.deadline;
        // An item queued before the deadline leaves first; the deadline's own item goes after.
        if (head && head.at <= now && (deadline === undefined || head.at <= deadline)) {
          s.queue[s.head++] = undefined as unknown as Item;
          if (head.kind === "data") this.queued -= head.data.length;
          if (s.head > 1024 && s.head * 2 > s.queue.length) {
            s.queue = s.queue.slice(s.head);
            s.head = 0;
          }
          this.feed(i + 1, head);
        } else if (deadline !== undefined && deadline <= now) {
          const step = expireToxic(s.toxic, s.state);
          s.state = step.state;
          for (const o of step.out) this.enqueue(s, o);
        } else break;
      }
    }
    const out = this.out;
    this.out = [];
    return out;
  }

  /**
   * The proxy's toxics changed while the connection is open (Toxiproxy's AddToxic, UpdateToxic,
   * RemoveToxic on a live link). Toxics are matched by name. A removed toxic lets everything it
   * holds go on at once, so no data is lost ("don't drop data on the floor", bandwidth.go); an
   * updated one lets its held items out at once and starts again with the new parameters; new
   * toxics join at the end of the chain. Returns what is due now.
   */
  setToxics(toxics: readonly Toxic[], now: number): Item[] {
    const emitted = this.advance(now);
    const byName = new Map(toxics.map((t) => [t.name, t]));
    const kept: Stage[] = [];
    let carry: Item[] = [];
    for (const s of this.stages) {
      const t = byName.get(s.toxic.name);
      if (!t) {
        carry.push(...this.drain(s, now));
        if (!s.closed) carry.push(...stopToxic(s.toxic, s.state, now));
        continue;
      }
      byName.delete(t.name);
      if (!sameToxic(t, s.toxic)) {
        const held = this.drain(s, now);
        s.toxic = t;
        s.state = startToxic(t, now, this.random, s.state);
        s.lastAt = now;
        for (const h of held) this.enqueue(s, h);
      }
      kept.push(s);
      // What the removed toxics before this one held is later in the stream than anything this
      // one holds, so it goes through this toxic after them.
      for (const c of carry) this.feedInto(s, c);
      carry = [];
    }
    this.stages = kept;
    for (const c of carry) this.feedInto(undefined, { ...c, at: Math.min(c.at, now) } as Item);
    for (const t of toxics) if (byName.has(t.name)) this.stages.push(this.newStage(t, now));
    return [...emitted, ...this.advance(now)];
  }

  private newStage(toxic: Toxic, now: number): Stage {
    return {
      toxic,
      state: startToxic(toxic, now, this.random),
      queue: [],
      head: 0,
      lastAt: now,
      closed: false,
    };
  }

  /** Takes a stage's held items out, due no later than `now`. */
  private drain(s: Stage, now: number): Item[] {
    const held = s.queue.slice(s.head).map((i) => (i.at > now ? ({ ...i, at: now } as Item) : i));
    for (const h of held) if (h.kind === "data") this.queued -= h.data.length;
    // An end still held has not left the stage: it is closed again when the end re-enters.
    if (held.some(isEnd)) s.closed = false;
    s.queue = [];
    s.head = 0;
    s.lastAt = Math.min(s.lastAt, now);
    return held;
  }

  /** An item enters stage `index` (or leaves the chain when index is past the last stage). */
  private feed(index: number, item: Item): void {
    this.feedInto(this.stages[index], item);
  }

  private feedInto(s: Stage | undefined, item: Item): void {
    if (!s) {
      if (this.ended) return;
      this.out.push(item);
      if (isEnd(item)) this.ended = true;
      return;
    }
    if (s.closed) return;
    const step = stepToxic(s.toxic, s.state, item, this.random);
    s.state = step.state;
    for (const o of step.out) this.enqueue(s, o);
  }

  private enqueue(s: Stage, item: Item): void {
    if (s.closed) return;
    const at = Math.max(item.at, s.lastAt);
    s.lastAt = at;
    s.queue.push(at === item.at ? item : ({ ...item, at } as Item));
    if (item.kind === "data") this.queued += item.data.length;
    if (isEnd(item)) s.closed = true;
  }
}
