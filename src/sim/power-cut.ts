/**
 * The power-cut harness (issue: "run an update once to count its N flash operations, then rerun
 * it with a cut at every operation 1..N, plus a sample of double cuts"). Each run starts from a
 * clone of the same device, cuts power inside one erase or page program (leaving it half done),
 * powers on, and checks what a user of the gateway needs to be true:
 *   - the device boots a verified app, the old or the new one, never the half-written slot;
 *   - otadata still decodes;
 *   - the update, retried, succeeds (or had already taken effect).
 */

import { isEspOtaError } from "../errors.js";
import { decodeOtadata, OTADATA_SIZE } from "../esp/otadata.js";
import {
  DATA_SUBTYPE,
  findPartition,
  isEncryptedPartition,
  PART_TYPE,
  type Partition,
} from "../esp/partition-table.js";
import type { SimDevice } from "./device.js";
import { applyPreEncryptedUpdate } from "./ota-update.js";

export interface PowerCutOptions {
  /** A device running the old app, confirmed VALID. Never modified: runs use clones. */
  base: SimDevice;
  /** The new image, signed then encrypted for `slot`. */
  ciphertext: Uint8Array;
  slot: Partition;
  oldVersion: string;
  newVersion: string;
  /** Which cut points to try (1-based operation numbers within the update); default all. */
  cutPoints?: number[];
  /** Also cut power again during the recovery boot for every `doubleCutEvery`-th point (0 = never). */
  doubleCutEvery?: number;
  /** Fraction of the interrupted operation that completes. */
  fraction?: number;
  chunkSize?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface PowerCutFailure {
  cut: number;
  second?: number;
  reason: string;
}

export interface PowerCutReport {
  /** Flash operations in one uninterrupted update (erase, program, otadata, boot, confirm). */
  operations: number;
  tried: number;
  doubleCuts: number;
  bootedOld: number;
  bootedNew: number;
  retried: number;
  unbootable: number;
  failures: PowerCutFailure[];
}

export function countUpdateOperations(opts: PowerCutOptions): number {
  const d = opts.base.clone();
  const before = d.flash.operationCount;
  const r = applyPreEncryptedUpdate(d, opts.ciphertext, {
    slot: opts.slot,
    ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
  });
  if (!r.ok) throw new Error(`the uninterrupted update fails: ${r.message}`);
  const s = d.state;
  if (s.kind !== "running" || s.app?.version !== opts.newVersion) {
    throw new Error(
      `the uninterrupted update does not end running ${opts.newVersion} (state ${s.kind})`,
    );
  }
  return d.flash.operationCount - before;
}

export function runPowerCutSweep(opts: PowerCutOptions): PowerCutReport {
  const n = countUpdateOperations(opts);
  const points = opts.cutPoints ?? Array.from({ length: n }, (_, i) => i + 1);
  const report: PowerCutReport = {
    operations: n,
    tried: 0,
    doubleCuts: 0,
    bootedOld: 0,
    bootedNew: 0,
    retried: 0,
    unbootable: 0,
    failures: [],
  };
  points.forEach((cut, i) => {
    runOne(opts, report, cut, undefined);
    if (opts.doubleCutEvery && i % opts.doubleCutEvery === 0) {
      for (const second of [1, 2]) runOne(opts, report, cut, second);
    }
    opts.onProgress?.(i + 1, points.length);
  });
  return report;
}

function runOne(
  opts: PowerCutOptions,
  report: PowerCutReport,
  cut: number,
  second: number | undefined,
): void {
  const d = opts.base.clone();
  const fraction = opts.fraction ?? 0.5;
  d.flash.schedulePowerCut(d.flash.operationCount + cut, fraction);
  const fail = (reason: string) => {
    report.failures.push({ cut, ...(second ? { second } : {}), reason });
  };
  report.tried++;
  if (second) report.doubleCuts++;
  const cutHappened = update(d, opts);
  if (!cutHappened) {
    fail("the scheduled cut was never reached");
    return;
  }
  if (second) {
    d.flash.schedulePowerCut(d.flash.operationCount + second, fraction);
    d.powerOn();
    d.flash.cancelPowerCut();
  }
  let s = d.powerOn();
  if (s.kind !== "running") {
    report.unbootable++;
    fail(
      `device does not boot after the cut: ${s.kind}${s.kind === "no-app" ? ` (${s.reason})` : ""}`,
    );
    return;
  }
  const otadataOk = otadataDecodes(d);
  if (!otadataOk) fail("otadata does not decode after the cut");
  const version = s.app?.version;
  if (version === opts.newVersion) {
    report.bootedNew++;
  } else if (version === opts.oldVersion) {
    report.bootedOld++;
    report.retried++;
    if (update(d, opts)) {
      fail("unexpected power cut on retry");
      return;
    }
    s = d.state;
    if (s.kind !== "running" || s.app?.version !== opts.newVersion)
      fail(`the retried update does not end running ${opts.newVersion}`);
  } else {
    report.unbootable++;
    fail(`device runs an unexpected app version ${version}`);
  }
}

/** Runs the update; true when a power cut interrupted it. */
function update(d: SimDevice, opts: PowerCutOptions): boolean {
  try {
    const r = applyPreEncryptedUpdate(d, opts.ciphertext, {
      slot: opts.slot,
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
    });
    if (!r.ok) throw new Error(`update failed without a power cut: ${r.message}`);
    return d.state.kind === "off";
  } catch (e) {
    if (isEspOtaError(e) && e.code === "E_SIM_POWER_CUT") return true;
    throw e;
  }
}

function otadataDecodes(d: SimDevice): boolean {
  const part = findPartition(d.partitions, PART_TYPE.data, DATA_SUBTYPE.ota);
  if (!part) return true;
  try {
    const spi = d.spi;
    decodeOtadata(
      spi.read(part.offset, OTADATA_SIZE, spi.encryptionEnabled && isEncryptedPartition(part)),
    );
    return true;
  } catch {
    return false;
  }
}
