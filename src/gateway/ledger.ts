/**
 * The gateway's per-device ledger and the pure decisions over it (STYLE.md §3): what a notice
 * does to the device's update (docs/mqtt-api.md "Notice semantics"), which status comes next
 * (never backwards, exactly one final status per release), and what survives a restart. The
 * agent (agent/) persists the ledger atomically before it publishes anything derived from it.
 */
import { type Static, Type } from "@sinclair/typebox";
import type { ErrorCode } from "../errors.js";
import type { DeviceStatus, RunningApp, UpdateNotice, UpdateState } from "../mqtt/messages.js";
import { FINAL_STATES, noticeEcho, parseMessage, UPDATE_STATES } from "../mqtt/messages.js";
import type { TrustPolicy } from "../release/keyring.js";
import type { ManifestVariant } from "../release/manifest.js";
import { firstSchemaError } from "../schema.js";

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
  /**
   * When the device was last made to start a transfer afresh (a BEGIN its progress record
   * does not resume: otadata's inactive sector and the slot are erased), newest last, at most
   * the erase budget's `cycles` (issue 12 defect 6; eraseBudgetLeft).
   */
  erases?: string[];
  /** The last notice refused with a final status: the same notice again is not answered twice. */
  refused?: { releaseId: string; issuedAt: string; rolloutId?: string; code: string };
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

// ---- the ledger's shape on disk (issue 12 defect 9) ------------------------------------------
// A ledger that was valid JSON with a wrong type in it (`marks: 5`, a job without a notice)
// passed the old check of three fields and crashed the agent at the next notice. Every field is
// checked on load; the notices and statuses in it by the MQTT schemas they were parsed with.

const Iso = Type.String({ minLength: 1, maxLength: 40 });
const Id = Type.String({ pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$" });
const Counter = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const KeyId = Type.String({ pattern: "^[0-9a-f]{32}$" });

const CounterMarkSchema = Type.Object({
  counter: Counter,
  releaseId: Id,
  keyIds: Type.Optional(Type.Array(KeyId, { maxItems: 64 })),
});

const VariantSchema = Type.Object({
  slot: Type.String({ minLength: 1, maxLength: 16 }),
  offset: Type.Integer({ minimum: 0, maximum: 0xffffffff }),
  size: Type.Integer({ minimum: 1, maximum: 0xffffffff }),
  sha256: Type.String({ pattern: "^[0-9a-f]{64}$" }),
  urls: Type.Array(Type.String({ maxLength: 2048 }), { minItems: 1, maxItems: 8 }),
});

const RunningAppSchema = Type.Object({
  project: Type.String({ maxLength: 32 }),
  version: Type.String({ maxLength: 32 }),
  secureVersion: Counter,
  slot: Type.String({ maxLength: 16 }),
  offset: Type.Integer({ minimum: 0, maximum: 0xffffffff }),
  state: Type.String({ maxLength: 32 }),
});

const FinalStateSchema = Type.Union(
  (["succeeded", "rolled-back", "failed", "cancelled"] as const).map((x) => Type.Literal(x)),
);

/** Notices and statuses are checked by parseMessage (their own schemas), not here. */
const Message = Type.Unknown();

const JobSchema = Type.Object({
  notice: Message,
  step: Type.Union(STEPS.map((x) => Type.Literal(x))),
  startedAt: Iso,
  manifestText: Type.Optional(Type.String({ maxLength: 1 << 20 })),
  variant: Type.Optional(VariantSchema),
  targetVersion: Type.Optional(Type.String({ maxLength: 32 })),
  previous: Type.Optional(RunningAppSchema),
  staging: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
});

export const DeviceLedgerSchema = Type.Object({
  format: Type.Literal(1),
  deviceId: Id,
  seq: Counter,
  highWater: Type.Optional(CounterMarkSchema),
  marks: Type.Optional(Type.Array(CounterMarkSchema, { maxItems: MAX_SIGNER_SETS })),
  lastFinal: Type.Optional(Type.Object({ releaseId: Id, state: FinalStateSchema, at: Iso })),
  job: Type.Optional(JobSchema),
  lastNotice: Type.Optional(Message),
  pending: Type.Optional(Message),
  lastStatus: Type.Optional(Message),
  erases: Type.Optional(Type.Array(Iso, { maxItems: 1024 })),
  refused: Type.Optional(
    Type.Object({
      releaseId: Id,
      issuedAt: Iso,
      rolloutId: Type.Optional(Id),
      code: Type.String({ pattern: "^E_[A-Z0-9_]+$" }),
    }),
  ),
});

/** What a ledger that failed its check still holds that must not be lost. */
export interface LedgerSalvage {
  /** The anti-rollback marks that are themselves well-formed (the highest first). */
  marks: CounterMark[];
  /** The status seq, when it is a number (the next status must be above it). */
  seq: number | undefined;
}

export type LedgerCheck =
  | { ok: true; ledger: DeviceLedger }
  | { ok: false; reason: string; salvage: LedgerSalvage };

/**
 * Checks a parsed ledger file against the whole shape (pure). On failure, `salvage` holds every
 * well-formed high-water mark found in it, so a ledger damaged elsewhere (a job, a status) does
 * not silently lose the device's anti-rollback mark (docs/operations.md "State directory").
 */
export function checkLedger(value: unknown, deviceId: string): LedgerCheck {
  const bad = (reason: string): LedgerCheck => ({ ok: false, reason, salvage: salvage(value) });
  const shape = firstSchemaError(DeviceLedgerSchema, value);
  if (shape) return bad(`${shape.path || "/"}: ${shape.message}`);
  const l = value as Static<typeof DeviceLedgerSchema>;
  if (l.deviceId !== deviceId) return bad(`the ledger is for ${l.deviceId}, not ${deviceId}`);
  const message = (kind: "notice" | "status", v: unknown, where: string) => {
    if (v === undefined) return undefined;
    const p = parseMessage(kind, JSON.stringify(v));
    return p.ok ? undefined : `${where}: ${p.reason}`;
  };
  const problem =
    message("notice", l.job?.notice, "/job/notice") ??
    message("notice", l.lastNotice, "/lastNotice") ??
    message("notice", l.pending, "/pending") ??
    message("status", l.lastStatus, "/lastStatus");
  if (problem) return bad(problem);
  return { ok: true, ledger: value as DeviceLedger };
}

function salvage(value: unknown): LedgerSalvage {
  const out: LedgerSalvage = { marks: [], seq: undefined };
  if (typeof value !== "object" || value === null) return out;
  const v = value as Record<string, unknown>;
  if (Number.isSafeInteger(v.seq) && (v.seq as number) >= 0) out.seq = v.seq as number;
  const isMark = (m: unknown): m is CounterMark => {
    if (typeof m !== "object" || m === null) return false;
    const x = m as Record<string, unknown>;
    return (
      Number.isSafeInteger(x.counter) &&
      (x.counter as number) >= 0 &&
      typeof x.releaseId === "string" &&
      /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(x.releaseId) &&
      (x.keyIds === undefined ||
        (Array.isArray(x.keyIds) &&
          x.keyIds.length <= 64 &&
          x.keyIds.every((k) => typeof k === "string" && /^[0-9a-f]{32}$/.test(k))))
    );
  };
  const found = [...(Array.isArray(v.marks) ? v.marks : []), v.highWater].filter(isMark);
  const l = newLedger("salvage");
  for (const m of found.sort((a, b) => a.counter - b.counter))
    recordMark(l, {
      counter: m.counter,
      releaseId: m.releaseId,
      ...(m.keyIds ? { keyIds: m.keyIds } : {}),
    });
  out.marks = l.marks ?? [];
  return out;
}

export type NoticeDecision =
  | { action: "ignore"; reason: string }
  /**
   * Not run, and answered with a final `failed` status carrying `code` (issue 12 defect 16: a
   * notice refused without a status left its rollout waiting for the wave timeout).
   */
  | { action: "refuse"; code: ErrorCode; reason: string; notice: UpdateNotice }
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
  if (job?.notice.releaseId === notice.releaseId)
    return { action: "ignore", reason: `${notice.releaseId} is already in flight (duplicate)` };
  const r = l.refused;
  if (
    r &&
    r.releaseId === notice.releaseId &&
    r.issuedAt === notice.issuedAt &&
    r.rolloutId === notice.rolloutId
  )
    // The retained notice seen again (a reconnect): its refusal is already the last word.
    return { action: "ignore", reason: `${notice.releaseId} was already refused (${r.code})` };
  if (notice.deviceId !== l.deviceId)
    return {
      action: "refuse",
      code: "E_AGENT_NOTICE_INVALID",
      reason: `the notice names device ${notice.deviceId}, but its topic is ${l.deviceId}'s`,
      notice,
    };
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
      action: "refuse",
      code: "E_MANIFEST_COUNTER",
      reason: `counter ${notice.counter} is below the device's high-water mark ${mark.counter} (replayed or stale notice)`,
      notice,
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
 * The final status that answers a refused notice (pure): `failed` at parseNotice with the code,
 * naming the notice (its release, rollout and digest, so the rollout that published it counts
 * it) and nothing of the job in flight, which goes on. The caller signs, records and publishes.
 */
export function refusalStatus(
  l: DeviceLedger,
  d: Extract<NoticeDecision, { action: "refuse" }>,
  gatewayId: string,
  now: Date,
): DeviceStatus {
  const at = now.toISOString();
  const n = d.notice;
  return {
    format: 1,
    deviceId: l.deviceId,
    gatewayId,
    seq: l.seq + 1,
    state: "failed",
    step: "parseNotice",
    ...noticeEcho(n),
    error: { code: d.code, message: d.reason.slice(0, 512), step: "parseNotice" },
    startedAt: at,
    finishedAt: at,
    updatedAt: at,
  };
}

/** Records a refusal in the ledger once its status is built (the same notice is then ignored). */
export function recordRefusal(
  l: DeviceLedger,
  d: Extract<NoticeDecision, { action: "refuse" }>,
  status: DeviceStatus,
): void {
  l.seq = status.seq;
  l.lastStatus = status;
  l.refused = {
    releaseId: d.notice.releaseId,
    issuedAt: d.notice.issuedAt,
    ...(d.notice.rolloutId ? { rolloutId: d.notice.rolloutId } : {}),
    code: d.code,
  };
}

// ---- erase budget (issue 12 defect 6) ----------------------------------------------------------

/**
 * How often one device may be made to start a transfer afresh. Each fresh BEGIN erases
 * otadata's inactive sector and the slot's sectors again (docs/uart-protocol.md §6.2); notice
 * churn (supersede, re-issue) did it every 2 s, which wears a NOR sector's ~100,000 erase cycles
 * out in days. 4 an hour still leaves a rollout, a corrective release and two retries room, and
 * makes 100,000 cycles last about three years of continuous abuse.
 */
export interface EraseBudget {
  cycles: number;
  windowMs: number;
}
export const DEFAULT_ERASE_BUDGET: EraseBudget = { cycles: 4, windowMs: 3_600_000 };

/** The erases that count now: within the window either side of `now` (a clock set back counts too). */
function recentErases(l: DeviceLedger, b: EraseBudget, now: Date): number[] {
  const t = now.getTime();
  return (l.erases ?? [])
    .map((x) => Date.parse(x))
    .filter((x) => Number.isFinite(x) && Math.abs(t - x) < b.windowMs);
}

/**
 * Whether the device may be made to erase once more now, and if not, when it may again (the
 * oldest counted erase leaving the window).
 */
export function eraseBudgetLeft(
  l: DeviceLedger,
  b: EraseBudget,
  now: Date,
): { ok: true; left: number } | { ok: false; until: Date } {
  const recent = recentErases(l, b, now);
  if (recent.length < b.cycles) return { ok: true, left: b.cycles - recent.length };
  return { ok: false, until: new Date(Math.min(...recent) + b.windowMs) };
}

/** Counts one fresh transfer start (keeps only the erases that still count). */
export function recordErase(l: DeviceLedger, b: EraseBudget, now: Date): void {
  const kept = recentErases(l, b, now)
    .sort((x, y) => x - y)
    .slice(-Math.max(0, b.cycles - 1));
  l.erases = [...kept.map((x) => new Date(x).toISOString()), now.toISOString()];
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
