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
import { join } from "node:path";
import { EspOtaError } from "../src/errors.js";
import { type DeviceLedger, newLedger } from "../src/gateway/ledger.js";
import { isTopicId } from "../src/mqtt/topics.js";

export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  // The rename itself is only durable once the directory entry is on disk.
  const dir = openSync(join(path, ".."), "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
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

  save(l: DeviceLedger): void {
    const f = this.file(l.deviceId);
    try {
      writeFileAtomic(f, `${JSON.stringify(l, null, 1)}\n`);
    } catch (e) {
      throw new EspOtaError(
        "E_AGENT_STATE",
        `cannot write ${f}: ${(e as Error).message}`,
        { path: f },
        e,
      );
    }
  }
}
