/**
 * Durable agent state (issue 6 "Durable state"): one ledger file per device under
 * `stateDir/devices/`, written atomically (temporary file, fsync, rename, fsync of the
 * directory) so a crash or power loss leaves either the old or the new ledger, never a torn one.
 * The agent saves before it publishes anything derived from the ledger, so a restart never
 * re-publishes an older status or repeats a finished step.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { EspOtaError } from "../src/errors.js";
import { tempPathFor, writeFileAtomicSync } from "../src/fs/write-atomic.js";
import {
  checkLedger,
  type DeviceLedger,
  type LedgerSalvage,
  newLedger,
} from "../src/gateway/ledger.js";
import { isTopicId } from "../src/mqtt/topics.js";

/**
 * Ledgers kept at most (issue 12 defect 14): every MAC a device ever reported left one for good,
 * and a serial device can report any MAC it likes. 1,024 is four times the devices one gateway
 * serves (256, docs/operations.md) and a few MB of disk; beyond it the least recently written
 * ledgers of devices not attached now are removed (LedgerStore.prune).
 */
export const MAX_LEDGERS = 1024;

/** The log lines the store writes (pino's Logger fits). */
export interface StoreLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface LedgerStoreOptions {
  log?: StoreLog;
  /** Ledgers kept at most (default MAX_LEDGERS). */
  maxLedgers?: number;
  /** Devices whose ledgers are never pruned: the attached ones (default: none). */
  inUse?: () => Iterable<string>;
  /** Told which ledgers were pruned (the agent clears their retained statuses). */
  onPruned?: (deviceIds: string[]) => void;
}

/** fsync of a directory: a rename in it is durable only once its entry is on disk. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** One device's file: what has been renamed into place, and the background writes. */
interface FileState {
  /** Generation of the next save (each save gets the next one). */
  nextGen: number;
  /** Generation of the snapshot now in place (renamed); older ones are never renamed over it. */
  inPlace: number;
  running: boolean;
  /** The latest snapshot not yet being written, its generation, and whoever waits for it. */
  next: { text: string; gen: number } | undefined;
  waiters: { resolve(): void; reject(e: unknown): void }[];
  /** Resolves when no write is pending. */
  idle: Promise<void>;
  settle: () => void;
}

export class LedgerStore {
  readonly dir: string;
  readonly maxLedgers: number;
  /** Device ids with a ledger file (read at start, then kept up to date by save and prune). */
  private readonly onDisk = new Set<string>();

  constructor(
    stateDir: string,
    private readonly o: LedgerStoreOptions = {},
  ) {
    this.dir = join(stateDir, "devices");
    this.maxLedgers = o.maxLedgers ?? MAX_LEDGERS;
    if (!Number.isSafeInteger(this.maxLedgers) || this.maxLedgers < 1)
      throw new RangeError(
        `LedgerStore: maxLedgers must be a positive integer, not ${o.maxLedgers}`,
      );
    let names: string[];
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      names = readdirSync(this.dir);
    } catch (e) {
      throw new EspOtaError(
        "E_AGENT_STATE",
        `cannot create ${this.dir}: ${(e as Error).message}`,
        { path: this.dir },
        e,
      );
    }
    // A writer that crashed (or lost power) between creating its temporary file and renaming it
    // left it behind for good: nothing else ever removes them (issue 12 defect 14). One agent
    // owns a state directory, so at start every temporary file in it is such a leftover.
    const tmp = names.filter((n) => n.endsWith(".tmp"));
    for (const n of tmp) rmSync(join(this.dir, n), { force: true });
    if (tmp.length > 0)
      o.log?.info({ count: tmp.length, dir: this.dir }, "removed temporary files left by a crash");
    for (const n of names) {
      const id = n.endsWith(".json") ? n.slice(0, -".json".length) : undefined;
      if (id !== undefined && isTopicId(id)) this.onDisk.add(id);
    }
  }

  /**
   * Removes the least recently written ledgers (and their `*.corrupt`) of devices not in use
   * until at most maxLedgers remain, and returns their ids. A device pruned and plugged in again
   * starts with a fresh ledger: its high-water mark is gone with it (docs/operations.md "State
   * directory"), so pruning only ever takes ledgers of devices long away. Ledgers with a write in
   * flight are kept.
   */
  prune(writing?: string): string[] {
    if (this.onDisk.size <= this.maxLedgers) return [];
    const inUse = new Set(this.o.inUse?.() ?? []);
    if (writing !== undefined) inUse.add(writing);
    const candidates: { id: string; mtime: number }[] = [];
    for (const id of this.onDisk) {
      if (inUse.has(id) || this.files.get(this.file(id))?.running) continue;
      let mtime: number;
      try {
        mtime = statSync(this.file(id)).mtimeMs;
      } catch {
        mtime = 0; // gone already: drop it from the count first
      }
      candidates.push({ id, mtime });
    }
    candidates.sort((a, b) => a.mtime - b.mtime || (a.id < b.id ? -1 : 1));
    const pruned: string[] = [];
    for (const c of candidates) {
      if (this.onDisk.size <= this.maxLedgers) break;
      const f = this.file(c.id);
      try {
        rmSync(f, { force: true });
        rmSync(`${f}.corrupt`, { force: true });
      } catch (e) {
        this.o.log?.warn({ deviceId: c.id, err: String(e) }, "cannot prune ledger");
        continue;
      }
      this.onDisk.delete(c.id);
      this.files.delete(f);
      pruned.push(c.id);
    }
    if (pruned.length > 0) {
      this.o.log?.info(
        { count: pruned.length, deviceIds: pruned.slice(0, 16), max: this.maxLedgers },
        `pruned ${pruned.length} ledgers of devices not seen for the longest (at most ${this.maxLedgers} kept)`,
      );
      this.o.onPruned?.(pruned);
    }
    return pruned;
  }

  /** A new device's first save: counted, and the oldest ledgers pruned beyond the cap. */
  private noteOnDisk(deviceId: string): void {
    if (this.onDisk.has(deviceId)) return;
    this.onDisk.add(deviceId);
    if (this.onDisk.size > this.maxLedgers) this.prune(deviceId);
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
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      return this.corrupt(deviceId, f, `not JSON: ${(e as Error).message}`, {
        marks: [],
        seq: undefined,
      });
    }
    const c = checkLedger(value, deviceId);
    return c.ok ? c.ledger : this.corrupt(deviceId, f, c.reason, c.salvage);
  }

  /**
   * Atomic writes make a ledger that fails its check a foreign, hand-edited or damaged file
   * (issue 12 defect 9): it is kept as `*.corrupt` for inspection, and the device starts afresh
   * with every well-formed high-water mark found in it and a status seq above any it used (the
   * clock in ms), so neither the anti-rollback mark nor the status order is lost silently.
   */
  private corrupt(
    deviceId: string,
    f: string,
    reason: string,
    salvage: LedgerSalvage,
  ): DeviceLedger {
    try {
      renameSync(f, `${f}.corrupt`);
    } catch (e) {
      throw new EspOtaError(
        "E_AGENT_STATE",
        `cannot move the corrupt ledger ${f} aside: ${(e as Error).message}`,
        { path: f },
        e,
      );
    }
    const fresh = newLedger(deviceId);
    fresh.seq = Math.max(salvage.seq ?? 0, Date.now());
    if (salvage.marks.length > 0) {
      fresh.marks = salvage.marks;
      fresh.highWater = salvage.marks[0];
    }
    const err = new EspOtaError(
      "E_AGENT_LEDGER_CORRUPT",
      `the ledger of ${deviceId} is not a valid ledger (${reason.slice(0, 200)}); kept as ${f}.corrupt, the device starts afresh`,
      { deviceId, path: `${f}.corrupt` },
    );
    const mark = fresh.highWater;
    this.o.log?.error(
      { deviceId, code: err.code, path: `${f}.corrupt`, highWater: mark?.counter ?? null },
      mark
        ? `${err.message}; its high-water mark ${mark.counter} (${mark.releaseId}) is kept`
        : `${err.message}; it held no readable high-water mark: until the next release installs, only the downgrade policy and the device's eFuse secure_version stop an older release (docs/operations.md)`,
    );
    // The fresh ledger replaces the corrupt one on disk now, marks included: a second crash
    // before the next status must not find no ledger at all and lose the marks after all.
    this.saveNow(fresh);
    return fresh;
  }

  private readonly files = new Map<string, FileState>();

  private stateOf(f: string): FileState {
    let st = this.files.get(f);
    if (!st) {
      st = {
        nextGen: 1,
        inPlace: 0,
        running: false,
        next: undefined,
        waiters: [],
        idle: Promise.resolve(),
        settle: () => {},
      };
      this.files.set(f, st);
    }
    return st;
  }

  /**
   * Writes the ledger as it is now, in the background (temporary file, fsync, rename, fsync of
   * the directory, the slow parts on libuv's thread pool: two synchronous fsyncs per status
   * stalled a process serving 400 simulated devices, docs/benchmarks.md "Fleet"). Resolves once
   * that snapshot, or a later one, is on disk; rejects with E_AGENT_STATE when it cannot be
   * written. One write per device is in flight; saves made meanwhile are written once, as the
   * latest snapshot (the ledger is one object, so it holds every earlier change). Whoever
   * publishes something derived from the ledger awaits this first.
   */
  save(l: DeviceLedger): Promise<void> {
    const f = this.file(l.deviceId);
    this.noteOnDisk(l.deviceId);
    const st = this.stateOf(f);
    const text = `${JSON.stringify(l, null, 1)}\n`;
    const gen = st.nextGen++;
    return new Promise<void>((resolve, reject) => {
      st.next = { text, gen };
      st.waiters.push({ resolve, reject });
      if (!st.running) {
        st.running = true;
        st.idle = new Promise<void>((r) => {
          st.settle = r;
        });
        void this.drain(f, st);
      }
    });
  }

  /**
   * Writes the ledger now, durably, before returning (two fsyncs on the event loop): for the
   * one moment that cannot wait, the step recorded before ACTIVATE leaves the port, so that a
   * crash after it is settled by asking the device rather than by sending the image again. A
   * background write still in flight for an older snapshot is never renamed over this one.
   * Throws E_AGENT_STATE.
   */
  saveNow(l: DeviceLedger): void {
    const f = this.file(l.deviceId);
    this.noteOnDisk(l.deviceId);
    const st = this.stateOf(f);
    const gen = st.nextGen++;
    try {
      writeFileAtomicSync(f, `${JSON.stringify(l, null, 1)}\n`, { mode: 0o600, durable: true });
      st.inPlace = gen;
    } catch (e) {
      throw this.writeError(f, e);
    }
  }

  /** Resolves when every save made so far has been written (or has failed). */
  async flush(): Promise<void> {
    await Promise.all([...this.files.values()].map((st) => st.idle));
  }

  private writeError(f: string, e: unknown): EspOtaError {
    return new EspOtaError(
      "E_AGENT_STATE",
      `cannot write ${f}: ${(e as Error).message}`,
      { path: f },
      e,
    );
  }

  private async drain(f: string, st: FileState): Promise<void> {
    // Unique per write (src/fs/write-atomic.ts), so a crashed writer's file never collides.
    const tmp = tempPathFor(f);
    while (st.next !== undefined) {
      const { text, gen } = st.next;
      const waiters = st.waiters;
      st.next = undefined;
      st.waiters = [];
      try {
        const fh = await open(tmp, "w", 0o600);
        try {
          await fh.writeFile(text);
          await fh.sync();
        } finally {
          await fh.close();
        }
        // The rename is synchronous (a metadata update, no fsync): decided and done in one turn
        // of the event loop, so no saveNow can slip between the check and the rename.
        if (gen > st.inPlace) {
          renameSync(tmp, f);
          st.inPlace = gen;
          await syncDir(this.dir);
        } else {
          // A newer snapshot (saveNow) is already in place and on disk.
          await rm(tmp, { force: true });
        }
        for (const w of waiters) w.resolve();
      } catch (e) {
        await rm(tmp, { force: true }).catch(() => {});
        const err = this.writeError(f, e);
        for (const w of waiters) w.reject(err);
      }
    }
    st.running = false;
    st.settle();
  }
}
