/**
 * Durable agent state (issue 6 "Durable state"): one ledger file per device under
 * `stateDir/devices/`, written atomically (temporary file, fsync, rename, fsync of the
 * directory) so a crash or power loss leaves either the old or the new ledger, never a torn one.
 * The agent saves before it publishes anything derived from the ledger, so a restart never
 * re-publishes an older status or repeats a finished step.
 */
import { mkdirSync, readFileSync, renameSync } from "node:fs";
import { open, rename } from "node:fs/promises";
import { join } from "node:path";
import { EspOtaError } from "../src/errors.js";
import { type DeviceLedger, newLedger } from "../src/gateway/ledger.js";
import { isTopicId } from "../src/mqtt/topics.js";

/**
 * Writes `text` to `path` so that a crash or power loss leaves the old or the new file, never a
 * torn one: a temporary file, fsync, rename, fsync of the directory. Asynchronous: the writes and
 * fsyncs run on libuv's thread pool, so a gateway with many devices never waits for the disk on
 * its event loop (two synchronous fsyncs per status stalled a process serving 400 simulated
 * devices: docs/benchmarks.md, "Fleet").
 */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  // The rename itself is only durable once the directory entry is on disk.
  const dir = await open(join(path, ".."), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** One device's writes: at most one in flight; saves made meanwhile coalesce into the next. */
interface WriteQueue {
  running: boolean;
  /** The latest snapshot not yet being written, and whoever waits for it. */
  next: string | undefined;
  waiters: { resolve(): void; reject(e: unknown): void }[];
  /** Resolves when the queue is empty. */
  idle: Promise<void>;
  settle: () => void;
}

export class LedgerStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "devices");
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new EspOtaError(
        "E_AGENT_STATE",
        `cannot create ${this.dir}: ${(e as Error).message}`,
        { path: this.dir },
        e,
      );
    }
  }

  private file(deviceId: string): string {
    if (!isTopicId(deviceId)) throw new RangeError(`LedgerStore: bad device id ${deviceId}`);
    return join(this.dir, `${deviceId}.json`);
  }

  load(deviceId: string): DeviceLedger {
    const f = this.file(deviceId);
    let text: string;
    try {
      text = readFileSync(f, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return newLedger(deviceId);
      throw new EspOtaError("E_AGENT_STATE", `cannot read ${f}: ${(e as Error).message}`, {}, e);
    }
    try {
      const l = JSON.parse(text) as DeviceLedger;
      if (l.format !== 1 || l.deviceId !== deviceId || !Number.isSafeInteger(l.seq))
        throw new Error("not a device ledger");
      return l;
    } catch (e) {
      // Atomic writes make this a foreign or hand-edited file: keep it for inspection, start
      // afresh, and keep the status sequence moving forward from a safe point.
      renameSync(f, `${f}.corrupt`);
      const fresh = newLedger(deviceId);
      fresh.seq = Date.now();
      void e;
      return fresh;
    }
  }

  private readonly queues = new Map<string, WriteQueue>();

  /**
   * Writes the ledger as it is now; resolves once that snapshot (or a later one) is on disk,
   * rejects with E_AGENT_STATE when it cannot be written. Writes of one device never overlap,
   * and saves made while one is in flight are written once, as the latest snapshot: the ledger
   * is one object, so the latest snapshot holds every earlier change. Whoever publishes
   * something derived from the ledger awaits this first.
   */
  save(l: DeviceLedger): Promise<void> {
    const f = this.file(l.deviceId);
    const text = `${JSON.stringify(l, null, 1)}\n`;
    let q = this.queues.get(f);
    if (!q) {
      let settle = () => {};
      const idle = new Promise<void>((r) => {
        settle = r;
      });
      q = { running: false, next: undefined, waiters: [], idle, settle };
      this.queues.set(f, q);
    }
    const queue = q;
    return new Promise<void>((resolve, reject) => {
      queue.next = text;
      queue.waiters.push({ resolve, reject });
      if (!queue.running) void this.drain(f, queue);
    });
  }

  /** Resolves when every save made so far has been written (or has failed). */
  async flush(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.idle));
  }

  private async drain(f: string, q: WriteQueue): Promise<void> {
    q.running = true;
    while (q.next !== undefined) {
      const text = q.next;
      const waiters = q.waiters;
      q.next = undefined;
      q.waiters = [];
      try {
        await writeFileAtomic(f, text);
        for (const w of waiters) w.resolve();
      } catch (e) {
        const err = new EspOtaError(
          "E_AGENT_STATE",
          `cannot write ${f}: ${(e as Error).message}`,
          { path: f },
          e,
        );
        for (const w of waiters) w.reject(err);
      }
    }
    q.running = false;
    this.queues.delete(f);
    q.settle();
  }
}
