/**
 * Durable agent state (issue 6 "Durable state"): one ledger file per device under
 * `stateDir/devices/`, written atomically (temporary file, fsync, rename, fsync of the
 * directory) so a crash or power loss leaves either the old or the new ledger, never a torn one.
 * The agent saves before it publishes anything derived from the ledger, so a restart never
 * re-publishes an older status or repeats a finished step.
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { EspOtaError } from "../src/errors.js";
import { type DeviceLedger, newLedger } from "../src/gateway/ledger.js";
import { isTopicId } from "../src/mqtt/topics.js";

/** fsync of a directory: a rename in it is durable only once its entry is on disk. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function syncDirNow(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
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
    const st = this.stateOf(f);
    const gen = st.nextGen++;
    const tmp = `${f}.${process.pid}.now.tmp`;
    try {
      const fd = openSync(tmp, "w", 0o600);
      try {
        writeSync(fd, `${JSON.stringify(l, null, 1)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, f);
      st.inPlace = gen;
      syncDirNow(this.dir);
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
    const tmp = `${f}.${process.pid}.tmp`;
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
        const err = this.writeError(f, e);
        for (const w of waiters) w.reject(err);
      }
    }
    st.running = false;
    st.settle();
  }
}
