/**
 * The gateway's per-device ledger and the pure decisions over it (STYLE.md §3): what a notice
 * does to the device's update (docs/mqtt-api.md "Notice semantics"), which status comes next
 * (never backwards, exactly one final status per release), and what survives a restart. The
 * agent (agent/) persists the ledger atomically before it publishes anything derived from it.
 */
import type { ErrorCode } from "../errors.js";
import type { DeviceStatus, RunningApp, UpdateNotice, UpdateState } from "../mqtt/messages.js";
import { FINAL_STATES, UPDATE_STATES } from "../mqtt/messages.js";
import type { TrustPolicy } from "../release/keyring.js";
import type { ManifestVariant } from "../release/manifest.js";

/** The named steps of one update (STYLE.md §4), in order; each appears in logs and errors. */
export const STEPS = [
  "parseNotice",
  "fetchManifest",
  "verifyManifest",
  "readDevice",
  "selectSlot",
  "download",
  "transfer",
  "verifyOnDevice",
  "activate",
  "reboot",
  "awaitConfirm",
  "report",
] as const;
export type StepName = (typeof STEPS)[number];

/** The status state a step reports while it runs. */
export const STEP_STATE: Readonly<Record<StepName, UpdateState>> = {
  parseNotice: "queued",
  fetchManifest: "fetching-manifest",
  verifyManifest: "verifying-manifest",
  readDevice: "reading-device",
  selectSlot: "reading-device",
  download: "downloading",
  transfer: "transferring",
  verifyOnDevice: "verifying-device",
  activate: "activating",
  reboot: "rebooting",
  awaitConfirm: "awaiting-confirm",
  report: "awaiting-confirm",
};

/** From ACTIVATE on, the device is switching slots: the update can no longer be withdrawn. */
export function pastPointOfNoReturn(step: StepName): boolean {
  return STEPS.indexOf(step) >= STEPS.indexOf("activate");
}

export interface Job {
  notice: UpdateNotice;
  step: StepName;
  startedAt: string;
  /** The signed manifest as fetched (re-verified after a restart; cheap, and no trust in disk). */
  manifestText?: string;
  variant?: ManifestVariant;
  targetVersion?: string;
  /** The app that ran before the update (what "rolled back" returns to). */
  previous?: RunningApp;
  /** Staging file of the ciphertext (under the agent's staging directory). */
  staging?: string;
}

export type FinalState = "succeeded" | "rolled-back" | "failed" | "cancelled";

export interface DeviceLedger {
  format: 1;
  deviceId: string;
  /** Last status seq published for this device: the next one is seq + 1. */
  seq: number;
  /**
   * Highest release counter of a manifest that verified for this device, its release, and the
   * key ids whose signatures counted (absent in ledgers written before they were recorded).
   */
  highWater?: CounterMark;
  /**
   * The highest mark of each set of signers, highest first, at most MAX_SIGNER_SETS (recordMark):
   * when the operator revokes keys that signed a fast-forwarded counter, the highest mark still
   * backed by the trust policy applies instead (effectiveMark; docs/security.md, fast-forward).
   */
  marks?: CounterMark[];
  /** The last release that reached a final status (a notice for it again is a no-op). */
  lastFinal?: { releaseId: string; state: FinalState; at: string };
  job?: Job;
  /** The notice of the last finished job (what the `retry` command runs again). */
  lastNotice?: UpdateNotice;
  /** A notice that arrived while the job could no longer be withdrawn: runs after it. */
  pending?: UpdateNotice;
  /** The last status published (republished as is after a restart). */
  lastStatus?: DeviceStatus;
}

/** A release counter accepted for the device: a high-water mark. */
export interface CounterMark {
  counter: number;
  releaseId: string;
  /** The key ids whose signatures counted toward the threshold, sorted. */
  keyIds?: string[];
}

/**
 * Signer sets whose marks a ledger keeps. A policy of n keys and threshold k has C(n, k) sets,
 * and operators sign with one or two of them; 16 leaves room for rotations while an attacker's
 * marks (all from the keys it holds, one set per choice of keys) cannot push every genuine one
 * out before the operator reacts.
 */
export const MAX_SIGNER_SETS = 16;

/** Records an accepted manifest's counter (the highest per signer set is kept). */
export function recordMark(l: DeviceLedger, mark: CounterMark): void {
  const keyIds = mark.keyIds ? [...mark.keyIds].sort() : undefined;
  const m: CounterMark = {
    counter: mark.counter,
    releaseId: mark.releaseId,
    ...(keyIds ? { keyIds } : {}),
  };
  const set = (x: CounterMark) => (x.keyIds ? x.keyIds.join(",") : "(unknown signers)");
  // A ledger from before marks were kept: its high-water mark is the first, signers unknown.
  const marks = l.marks ?? (l.highWater ? [l.highWater] : []);
  const others = marks.filter((x) => set(x) !== set(m));
  const same = marks.find((x) => set(x) === set(m));
  const kept = same && same.counter > m.counter ? same : m;
  l.marks = [kept, ...others].sort((a, b) => b.counter - a.counter).slice(0, MAX_SIGNER_SETS);
  if (!l.highWater || m.counter >= l.highWater.counter) l.highWater = m;
}

/**
 * Whether a mark is still backed by `trust`: enough of the keys that signed it are still
 * trusted and not revoked to meet today's threshold. A mark whose signers are unknown (recorded
 * before signers were kept) counts as backed.
 */
export function markBacked(mark: CounterMark, trust: TrustPolicy): boolean {
  if (!mark.keyIds) return true;
  const trusted = new Set(trust.keys.map((k) => k.keyId));
  const revoked = new Set(trust.revoked);
  const still = mark.keyIds.filter((id) => trusted.has(id) && !revoked.has(id)).length;
  return still >= trust.threshold;
}

/**
 * The high-water mark in force: the highest recorded mark still backed by `trust` (all of them
 * without `trust`). A counter fast-forwarded with keys the operator has since revoked stops
 * freezing the device: the genuine mark below it applies again (TUF resets its counters on a
 * root rotation for the same reason; docs/security.md).
 */
export function effectiveMark(l: DeviceLedger, trust?: TrustPolicy): CounterMark | undefined {
  const marks = l.marks ?? (l.highWater ? [l.highWater] : []);
  if (!trust) return marks[0];
  return marks.find((m) => markBacked(m, trust));
}

export function newLedger(deviceId: string): DeviceLedger {
  return { format: 1, deviceId, seq: 0 };
}

export type NoticeDecision =
  | { action: "ignore"; reason: string }
  | { action: "start"; notice: UpdateNotice }
  /** Cancel the running job (final status `cancelled` with `code`), then start `notice` if any. */
  | { action: "cancel"; code: ErrorCode; reason: string; next?: UpdateNotice }
  /** The running job is past its point of no return: remember `notice` (or a clear) for after. */
  | { action: "defer"; notice: UpdateNotice | null };

/**
 * What a notice (or a cleared desired topic: `null`) does, given the ledger
 * (docs/mqtt-api.md "Notice semantics"). Pure; the manifest's signed counter is checked later,
 * by verifyManifest: the notice's counter is only a hint, so here it can only make us ignore.
 */
export function decideNotice(
  l: DeviceLedger,
  notice: UpdateNotice | null,
  /** The trust policy in force; the high-water mark is effectiveMark(l, trust). */
  trust?: TrustPolicy,
): NoticeDecision {
  const job = l.job;
  if (notice === null) {
    if (!job) return { action: "ignore", reason: "desired update cleared; nothing in flight" };
    if (pastPointOfNoReturn(job.step)) return { action: "defer", notice: null };
    return {
      action: "cancel",
      code: "E_AGENT_CLEARED",
      reason: `the desired update was cleared while ${job.notice.releaseId} was at ${job.step}`,
    };
  }
  if (notice.deviceId !== l.deviceId)
    return { action: "ignore", reason: `notice is for ${notice.deviceId}, not ${l.deviceId}` };
  if (job?.notice.releaseId === notice.releaseId)
    return { action: "ignore", reason: `${notice.releaseId} is already in flight (duplicate)` };
  if (!job && l.lastFinal?.releaseId === notice.releaseId) {
    // A release that succeeded or rolled back is done: running it again gives the same answer.
    // One that failed or was cancelled (a transient error, an aborted rollout) runs again when
    // the notice is a new one — re-issued, or from another rollout — never for a replay.
    const same =
      l.lastNotice?.issuedAt === notice.issuedAt && l.lastNotice?.rolloutId === notice.rolloutId;
    const rerunnable = l.lastFinal.state === "failed" || l.lastFinal.state === "cancelled";
    if (same || !rerunnable)
      return {
        action: "ignore",
        reason: `${notice.releaseId} already ended (${l.lastFinal.state}); re-issue the notice or use the retry command to run it again`,
      };
  }
  const mark = effectiveMark(l, trust);
  if (mark && notice.counter < mark.counter)
    return {
      action: "ignore",
      reason: `counter ${notice.counter} is below the high-water mark ${mark.counter} (replayed or stale notice)`,
    };
  if (!job) return { action: "start", notice };
  if (pastPointOfNoReturn(job.step)) return { action: "defer", notice };
  return {
    action: "cancel",
    code: "E_AGENT_SUPERSEDED",
    reason: `${job.notice.releaseId} was replaced by ${notice.releaseId} at ${job.step}`,
    next: notice,
  };
}

/**
 * The minimum counter a manifest must have to be accepted for this notice: above the high-water
 * mark, or equal to it for the very release that set it (a retry of the same release).
 */
export function minCounterFor(l: DeviceLedger, releaseId: string, trust?: TrustPolicy): number {
  const mark = effectiveMark(l, trust);
  if (!mark) return 0;
  return mark.releaseId === releaseId ? mark.counter : mark.counter + 1;
}

const order = (s: string) => {
  const i = (UPDATE_STATES as readonly string[]).indexOf(s);
  return i < 0 ? -1 : i;
};

/**
 * Whether status `next` may follow `prev` for the same release: within one run of a release the
 * state never goes backwards and nothing follows a final state (docs/mqtt-api.md).
 */
export function statusMayFollow(prev: DeviceStatus | undefined, next: DeviceStatus): boolean {
  if (!prev || prev.releaseId !== next.releaseId || next.releaseId === undefined) return true;
  // Another run of the same release (the retry command; a re-issued notice after failed or
  // cancelled) starts afresh: each run has its own startedAt. Without this a retry published
  // nothing after the first run's final status, and its own final status was never recorded.
  if (prev.startedAt !== next.startedAt) return true;
  if ((FINAL_STATES as readonly string[]).includes(prev.state)) return false;
  if (next.state === "idle" || next.state === "offline") return true;
  return order(next.state) >= order(prev.state);
}

/** Dotted numeric versions ("v1.2.10-rc1" -> [1,2,10]); undefined when there is no number. */
export function versionParts(v: string): number[] | undefined {
  const m = /^v?(\d+(?:\.\d+)*)/.exec(v.trim());
  return m ? m[1]!.split(".").map(Number) : undefined;
}

/** -1, 0, 1 comparing dotted numeric versions; undefined if either is not one. */
export function compareVersions(a: string, b: string): number | undefined {
  const pa = versionParts(a);
  const pb = versionParts(b);
  if (!pa || !pb) return undefined;
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}
