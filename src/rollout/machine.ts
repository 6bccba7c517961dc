/**
 * A rollout as a pure state machine (STYLE.md §3; docs/rollouts.md): `transition(state, input)`
 * returns the next state and the effects the adapter (runner.ts) must carry out. The state is the
 * retained RolloutState document itself, so what is persisted is exactly what decides; the clock
 * arrives as `now` on every input. No MQTT, timers or files here.
 *
 * The rules, each one a section of docs/rollouts.md:
 * - Waves: cumulative percentages of the device list; a wave's notices are published at once.
 * - A wave is finished when each of its devices reported a final status (succeeded, rolled-back,
 *   failed, cancelled) for THIS release; then the next wave starts. Statuses for other releases,
 *   duplicates and out-of-order ones (DeviceStatus.seq per device) change nothing, nor do the
 *   outcomes of notices this rollout did not publish (statusAnswers).
 * - Failure rate = (failed + rolled-back) / finished, over every notified device. Once at least
 *   `minSample` devices finished and the rate exceeds `maxFailureRate`, the rollout aborts: notices
 *   of devices that have not started are withdrawn, devices mid-update are left to finish.
 * - A wave not finished within `waveTimeoutMs` pauses the rollout (it does not advance). A
 *   resume publishes again the notices of devices that have not started on ours (resendNotices).
 */
import type { DeviceState, DeviceStatus } from "../mqtt/messages.js";
import { isFinalState, noticeDigest } from "../mqtt/messages.js";
import type { DeviceEntry, ReasonKind, RolloutReason, RolloutState } from "./messages.js";
import { stateInconsistency } from "./messages.js";
import { formatDuration, noticeFor, type PlannedDevice, waveEnds } from "./plan.js";

export type RolloutInput =
  /** Publish what the current waves still owe (first call: wave 0). Idempotent: used on restart. */
  | { type: "start"; now: number }
  | { type: "status"; status: DeviceStatus; now: number }
  /** The clock: an overdue wave pauses the rollout (also catches up after the process slept). */
  | { type: "tick"; now: number }
  | { type: "pause"; reason?: string; now: number }
  | { type: "resume"; now: number }
  | { type: "abort"; reason?: string; now: number }
  /** The adapter's timer for wave `wave` fired; stale when that wave is no longer current. */
  | { type: "wave-timeout"; wave: number; now: number }
  /**
   * Notify again, with a re-issued notice, every device of the waves so far whose final status
   * is `failed` (docs/rollouts.md "Retry the failed"); the rollout runs again, aborted or not.
   */
  | { type: "retry-failed"; now: number }
  /** Start the next wave now, without waiting for the current one (docs/rollouts.md "Next wave"). */
  | { type: "next-wave"; now: number };

export interface DeviceFailure {
  deviceId: string;
  state: "failed" | "rolled-back";
  errorCode?: string;
}

export type RolloutEvent =
  | { kind: "wave-started"; wave: number; devices: string[] }
  | { kind: "device"; deviceId: string; state: DeviceState; errorCode?: string }
  | { kind: "paused"; reason: RolloutReason }
  /** `republished`: the notices published again (resendNotices). */
  | { kind: "resumed"; republished: string[] }
  | { kind: "aborted"; reason: RolloutReason; failures: DeviceFailure[]; cleared: string[] }
  | { kind: "completed" }
  /** retry-failed: the devices notified again (their failure no longer counts). */
  | { kind: "retried"; devices: string[] }
  /** next-wave: the operator started wave `wave` (0-based) before the one before it finished. */
  | { kind: "advanced"; wave: number }
  /** An operator input that does not apply in this state (resume while running, ...). */
  | { kind: "ignored"; input: RolloutInput["type"]; why: string };

export type RolloutEffect =
  /** Publish the device's UpdateNotice, retained, on its desired topic. */
  | { type: "publish-notice"; deviceId: string }
  /** Publish the device's notice again, the very same one (its issuedAt is notifiedAt). */
  | { type: "republish-notice"; deviceId: string }
  /** Publish an empty retained payload on its desired topic (withdraws the notice). */
  | { type: "clear-notice"; deviceId: string }
  /** Publish the state, retained, on the rollout's state topic. */
  | { type: "save-state" }
  | { type: "event"; event: RolloutEvent }
  | { type: "finish"; state: "completed" | "aborted" };

export interface Transition {
  state: RolloutState;
  /** In the order to carry them out: notices, then save-state, then events, then finish. */
  effects: RolloutEffect[];
}

export interface RolloutPlan {
  rolloutId: string;
  releaseId: string;
  version: string;
  releaseDir?: string;
  manifestBaseUrl: string;
  devices: readonly PlannedDevice[];
  /** Cumulative percentages, strictly increasing, the last 100 (plan.ts parseWaves). */
  waves: readonly number[];
  /** Percent, 0..100. */
  maxFailureRate: number;
  /** Finished devices needed before the failure rate is judged; at least 1. */
  minSample: number;
  waveTimeoutMs: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** A new rollout, running, before its first wave (`start` publishes it). Throws on a bad plan. */
export function createRollout(plan: RolloutPlan, now: number): RolloutState {
  if (plan.devices.length === 0) throw new RangeError("createRollout: no devices");
  if (!Number.isInteger(plan.minSample) || plan.minSample < 1)
    throw new RangeError("createRollout: minSample must be an integer >= 1");
  const ends = waveEnds(plan.devices.length, plan.waves);
  const perDevice: Record<string, DeviceEntry> = {};
  plan.devices.forEach((d, i) => {
    perDevice[d.deviceId] = { wave: ends.findIndex((end) => i < end), counter: d.counter };
  });
  const state: RolloutState = {
    format: 1,
    rolloutId: plan.rolloutId,
    releaseId: plan.releaseId,
    version: plan.version,
    ...(plan.releaseDir === undefined ? {} : { releaseDir: plan.releaseDir }),
    manifestBaseUrl: plan.manifestBaseUrl,
    devices: plan.devices.map((d) => d.deviceId),
    waves: [...plan.waves],
    maxFailureRate: plan.maxFailureRate,
    minSample: plan.minSample,
    waveTimeoutMs: plan.waveTimeoutMs,
    state: "running",
    currentWave: -1,
    perDevice,
    startedAt: iso(now),
    updatedAt: iso(now),
  };
  const bad = stateInconsistency(state);
  if (bad) throw new RangeError(`createRollout: ${bad}`);
  return state;
}

const isFinal = (s: DeviceState | undefined) => s !== undefined && isFinalState(s);
/** Past `queued`: the gateway is working on it, so an abort leaves it to finish. */
const isStarted = (s: DeviceState) => s !== "queued" && s !== "idle" && s !== "offline";

export function waveDevices(s: RolloutState, wave: number): string[] {
  return s.devices.filter((id) => s.perDevice[id]!.wave === wave);
}

/**
 * Every device of waves 0..`wave` has a final status. Cumulative, not the one wave: `next-wave`
 * can leave an earlier wave open and `retry-failed` reopens devices of earlier waves, and the
 * rollout must not complete (or time out as finished) while any of them is still updating.
 */
function waveFinished(s: RolloutState, wave: number): boolean {
  return s.devices.every((id) => {
    const e = s.perDevice[id]!;
    return e.wave > wave || isFinal(e.state);
  });
}

/** When the current wave times out (ms since the epoch); undefined when nothing can time out. */
export function waveDeadline(s: RolloutState): number | undefined {
  if (s.state !== "running" || s.currentWave < 0 || !s.waveStartedAt) return undefined;
  return Date.parse(s.waveStartedAt) + s.waveTimeoutMs;
}

/** The failure-rate inputs: over every notified device, how many finished and how many failed. */
export function failureTally(s: RolloutState): { finished: number; failed: number } {
  let finished = 0;
  let failed = 0;
  for (const id of s.devices) {
    const e = s.perDevice[id]!;
    if (!e.notifiedAt || !isFinal(e.state)) continue;
    finished++;
    if (e.state === "failed" || e.state === "rolled-back") failed++;
  }
  return { finished, failed };
}

export function failuresOf(s: RolloutState): DeviceFailure[] {
  return s.devices.flatMap((id) => {
    const e = s.perDevice[id]!;
    if (!e.notifiedAt || (e.state !== "failed" && e.state !== "rolled-back")) return [];
    return [{ deviceId: id, state: e.state, ...(e.errorCode ? { errorCode: e.errorCode } : {}) }];
  });
}

/** A draft of the next state: copies what it changes (the input state is never touched). */
class Step {
  readonly at: string;
  draft: RolloutState;
  private perDeviceCopied = false;
  private readonly copied = new Set<string>();
  readonly notices: RolloutEffect[] = [];
  readonly events: RolloutEffect[] = [];
  finish?: "completed" | "aborted";
  changed = false;

  constructor(
    readonly from: RolloutState,
    readonly now: number,
  ) {
    this.at = iso(now);
    this.draft = { ...from };
  }

  /** The device's entry, writable. */
  entry(id: string): DeviceEntry {
    if (!this.perDeviceCopied) {
      this.draft.perDevice = { ...this.draft.perDevice };
      this.perDeviceCopied = true;
    }
    if (!this.copied.has(id)) {
      this.draft.perDevice[id] = { ...this.draft.perDevice[id]! };
      this.copied.add(id);
    }
    this.changed = true;
    return this.draft.perDevice[id]!;
  }

  set<K extends keyof RolloutState>(key: K, value: RolloutState[K]): void {
    this.draft[key] = value;
    this.changed = true;
  }

  unset(key: "reason" | "waveStartedAt" | "finishedAt"): void {
    if (key in this.draft) {
      delete this.draft[key];
      this.changed = true;
    }
  }

  event(event: RolloutEvent): void {
    this.events.push({ type: "event", event });
  }

  result(): Transition {
    if (!this.changed) return { state: this.from, effects: this.events };
    this.draft.updatedAt = this.at;
    const effects: RolloutEffect[] = [...this.notices, { type: "save-state" }, ...this.events];
    if (this.finish) effects.push({ type: "finish", state: this.finish });
    return { state: this.draft, effects };
  }
}

function reason(t: Step, kind: ReasonKind, message: string): RolloutReason {
  return { kind, message, at: t.at };
}

/** Publishes the notices wave `wave` still owes (none twice: notifiedAt marks each). */
function notifyWave(t: Step, wave: number): string[] {
  const sent: string[] = [];
  for (const id of waveDevices(t.draft, wave)) {
    const e = t.draft.perDevice[id]!;
    if (e.notifiedAt || e.clearedAt) continue;
    t.entry(id).notifiedAt = t.at;
    t.notices.push({ type: "publish-notice", deviceId: id });
    sent.push(id);
  }
  return sent;
}

/**
 * On resume, publishes again the notices of the devices of the waves so far that have not
 * started on ours: their retained notice may have been replaced by someone else's, or their
 * gateway, busy with another notice of this release, dropped ours as a duplicate
 * (docs/mqtt-api.md "Notice semantics" 1) and that one failed. The very same notice (its
 * issuedAt is notifiedAt) is a no-op for a gateway that has it in flight or ran it; one whose
 * last run of the release was another notice's failure runs ours. Without this a device held
 * that way stalls its wave at every resume until the rollout is aborted.
 */
function resendNotices(t: Step): string[] {
  const d = t.draft;
  const sent: string[] = [];
  for (const id of d.devices) {
    const e = d.perDevice[id]!;
    if (e.wave > d.currentWave || !e.notifiedAt || e.clearedAt || e.startedAt || isFinal(e.state))
      continue;
    t.notices.push({ type: "republish-notice", deviceId: id });
    sent.push(id);
  }
  return sent;
}

function startWave(t: Step, wave: number): void {
  t.set("currentWave", wave);
  t.set("waveStartedAt", t.at);
  notifyWave(t, wave);
  t.event({ kind: "wave-started", wave, devices: waveDevices(t.draft, wave) });
}

function abort(t: Step, kind: ReasonKind, message: string): void {
  const d = t.draft;
  const r = reason(t, kind, message);
  t.set("state", "aborted");
  t.set("reason", r);
  t.set("finishedAt", t.at);
  t.unset("waveStartedAt");
  // Withdraw what has not started; a device past `queued` is left to finish (docs/rollouts.md
  // "Abort"): pulling a notice mid-transfer only makes the gateway cancel a half-written slot.
  const cleared: string[] = [];
  for (const id of d.devices) {
    const e = d.perDevice[id]!;
    if (!e.notifiedAt || e.clearedAt || e.startedAt || isFinal(e.state)) continue;
    t.entry(id).clearedAt = t.at;
    t.notices.push({ type: "clear-notice", deviceId: id });
    cleared.push(id);
  }
  t.event({ kind: "aborted", reason: r, failures: failuresOf(t.draft), cleared });
  t.finish = "aborted";
}

function describeFailures(f: readonly DeviceFailure[]): string {
  const shown = f
    .slice(0, 10)
    .map((x) => `${x.deviceId} ${x.state}${x.errorCode ? ` ${x.errorCode}` : ""}`);
  return shown.join(", ") + (f.length > 10 ? `, and ${f.length - 10} more` : "");
}

/** Decides what follows from the current counts: abort, next wave(s), completion, or nothing. */
function settle(t: Step): void {
  for (;;) {
    const d = t.draft;
    if (d.state === "aborted" || d.state === "completed" || d.currentWave < 0) return;
    const { finished, failed } = failureTally(d);
    // Integer form of failed / finished > maxFailureRate / 100 (no rounding at the boundary).
    if (finished >= d.minSample && failed * 100 > d.maxFailureRate * finished) {
      const pct = ((failed / finished) * 100).toFixed(1);
      abort(
        t,
        "failure-rate",
        `failure rate ${failed}/${finished} = ${pct}% exceeds ${d.maxFailureRate}%: ${describeFailures(failuresOf(d))}`,
      );
      return;
    }
    if (d.state !== "running" || !waveFinished(d, d.currentWave)) return;
    if (d.currentWave === d.waves.length - 1) {
      t.set("state", "completed");
      t.set("finishedAt", t.at);
      t.unset("waveStartedAt");
      t.unset("reason");
      t.event({ kind: "completed" });
      t.finish = "completed";
      return;
    }
    // An empty wave, or one whose devices had already finished, is passed at once.
    startWave(t, d.currentWave + 1);
  }
}

function pauseForTimeout(t: Step): void {
  const d = t.draft;
  const open = d.devices.filter((id) => {
    const e = d.perDevice[id]!;
    return e.wave <= d.currentWave && !isFinal(e.state);
  });
  const shown = open.slice(0, 10).join(", ") + (open.length > 10 ? ", ..." : "");
  const r = reason(
    t,
    "wave-timeout",
    `wave ${d.currentWave + 1} (${d.waves[d.currentWave]}%) did not finish within ${formatDuration(d.waveTimeoutMs)}; ${open.length} device(s) not finished: ${shown}`,
  );
  t.set("state", "paused");
  t.set("reason", r);
  t.event({ kind: "paused", reason: r });
}

/**
 * Whose outcome a status of this rollout's release is (docs/rollouts.md "Which statuses
 * count"): `ours` answers the notice this rollout published for the device; `foreign` answers
 * another notice of the same release (another rollout's, or one anyone who may publish sent);
 * `other` is about another release or none.
 *
 * A status that echoes a notice digest is ours only when it is the digest of our notice. One
 * without (agents before the digest) is ours unless it names another rollout; the runner with
 * `--gateways` drops those first, since an old agent echoes any rolloutId a publisher wrote.
 */
export function statusAnswers(s: RolloutState, st: DeviceStatus): "ours" | "foreign" | "other" {
  if (st.releaseId !== s.releaseId || !Object.hasOwn(s.perDevice, st.deviceId)) return "other";
  if (st.noticeDigest !== undefined)
    return st.noticeDigest === noticeDigest(noticeFor(s, st.deviceId, 0)) ? "ours" : "foreign";
  return st.rolloutId === undefined || st.rolloutId === s.rolloutId ? "ours" : "foreign";
}

/**
 * What a foreign status of this release still tells: `succeeded` and `rolled-back` are facts
 * about the release on that device whoever asked (the manifest is signed, and a publisher can
 * only make a transfer fail, not an installed app confirm or roll back), and its gateway will
 * never run that release again for our notice (docs/mqtt-api.md "Notice semantics" 1), so the
 * device would otherwise hold its wave until the timeout. `failed`, `cancelled` and every
 * state on the way are what a bad URL or a superseding notice makes, and a failed or
 * cancelled release is run again for our notice: they count for nothing.
 */
const FOREIGN_FINAL_COUNTS: readonly DeviceState[] = ["succeeded", "rolled-back"];

function onStatus(t: Step, st: DeviceStatus): void {
  const d = t.draft;
  const known = d.perDevice[st.deviceId];
  // Not one of ours, or a duplicate / out-of-order status (seq only grows per device).
  if (!known || (known.seq !== undefined && st.seq <= known.seq)) return;
  const e = t.entry(st.deviceId);
  e.seq = st.seq;
  // Another release's status counts for nothing, nor does another notice's outcome, but what
  // FOREIGN_FINAL_COUNTS says; a final state is never replaced (the gateway sends exactly one
  // final status per notice; anything after it is idle/offline chatter).
  const whose = statusAnswers(d, st);
  if (whose === "other" || isFinal(e.state)) return;
  if (whose === "foreign" && !FOREIGN_FINAL_COUNTS.includes(st.state)) return;
  const changed = e.state !== st.state;
  e.state = st.state;
  if (!e.startedAt && isStarted(st.state)) e.startedAt = t.at;
  if (isFinalState(st.state)) {
    e.finishedAt = t.at;
    if (st.error) e.errorCode = st.error.code;
  }
  if (changed)
    t.event({
      kind: "device",
      deviceId: st.deviceId,
      state: st.state,
      ...(e.errorCode ? { errorCode: e.errorCode } : {}),
    });
  settle(t);
}

const ended = (s: RolloutState) => s.state === "aborted" || s.state === "completed";

/**
 * retry-failed: a re-issued notice (a new issuedAt: notifiedAt is now) for each failed device
 * of the waves so far. The gateway runs a release that ended `failed` again for a re-issued
 * notice, never for the same one replayed (docs/mqtt-api.md "Notice semantics" 1), and the
 * digest leaves issuedAt out, so the statuses answering it are still ours. `rolled-back` is not
 * retried: the gateway never re-runs it for a notice, and the release is what failed there.
 * The old final status cannot count again: its seq is not above the entry's.
 */
function retryFailed(t: Step): string[] {
  const d = t.draft;
  const again: string[] = [];
  for (const id of d.devices) {
    const e = d.perDevice[id]!;
    if (e.state !== "failed" || !e.notifiedAt) continue;
    const w = t.entry(id);
    delete w.state;
    delete w.errorCode;
    delete w.startedAt;
    delete w.finishedAt;
    w.notifiedAt = t.at;
    t.notices.push({ type: "publish-notice", deviceId: id });
    again.push(id);
  }
  return again;
}

/** Running again after an operator input: no reason, no finish, the wave clock from now. */
function reopen(t: Step): void {
  t.set("state", "running");
  t.unset("reason");
  t.unset("finishedAt");
  if (t.draft.currentWave >= 0) t.set("waveStartedAt", t.at);
}

/**
 * Why an operator input would be ignored in this state (the `ignored` event's words), or
 * undefined when it applies: the CLI and the console refuse it up front instead of waiting for
 * an owner that will not act.
 */
export function notApplicable(
  action: "pause" | "resume" | "abort" | "retry-failed" | "next-wave",
  s: RolloutState,
): string | undefined {
  switch (action) {
    case "pause":
      return s.state === "running" ? undefined : `the rollout is ${s.state}`;
    case "resume":
      return s.state === "paused" ? undefined : `the rollout is ${s.state}`;
    case "abort":
      return ended(s) ? `the rollout already ${s.state}` : undefined;
    case "retry-failed":
      if (s.currentWave < 0) return "the rollout has not started";
      return s.devices.some((id) => s.perDevice[id]!.state === "failed")
        ? undefined
        : "no device of the rollout failed";
    case "next-wave":
      if (ended(s)) return `the rollout already ${s.state}`;
      return s.currentWave >= s.waves.length - 1 ? "the rollout is at its last wave" : undefined;
  }
}

export function transition(s: RolloutState, input: RolloutInput): Transition {
  const t = new Step(s, input.now);
  const ignore = (why: string) => t.event({ kind: "ignored", input: input.type, why });
  switch (input.type) {
    case "status":
      // Recorded even after the end, so the retained state shows how mid-update devices ended.
      onStatus(t, input.status);
      break;
    case "start":
      if (ended(s)) ignore(`the rollout already ${s.state}`);
      else if (s.currentWave < 0) {
        // Paused before its first notice (an operator got there first): resume starts it.
        if (s.state === "running") startWave(t, 0);
        settle(t);
      } else {
        // A restarted operator process: publish what an interrupted wave still owes (nothing
        // twice), then look again (statuses may have finished the wave meanwhile).
        for (let w = 0; w <= s.currentWave; w++) notifyWave(t, w);
        settle(t);
      }
      break;
    case "pause":
      if (s.state !== "running") ignore(`the rollout is ${s.state}`);
      else {
        const r = reason(t, "operator-pause", input.reason ?? "paused by the operator");
        t.set("state", "paused");
        t.set("reason", r);
        t.event({ kind: "paused", reason: r });
      }
      break;
    case "resume":
      if (s.state !== "paused") ignore(`the rollout is ${s.state}`);
      else {
        t.set("state", "running");
        t.unset("reason");
        t.event({ kind: "resumed", republished: s.currentWave >= 0 ? resendNotices(t) : [] });
        // The wave's timeout counts again from the resume: the operator just looked at it.
        if (s.currentWave >= 0) t.set("waveStartedAt", t.at);
        else startWave(t, 0);
        settle(t);
      }
      break;
    case "abort":
      if (ended(s)) ignore(`the rollout already ${s.state}`);
      else abort(t, "operator-abort", input.reason ?? "aborted by the operator");
      break;
    case "wave-timeout":
      if (s.state === "running" && input.wave === s.currentWave && !waveFinished(s, s.currentWave))
        pauseForTimeout(t);
      break;
    case "retry-failed": {
      const why = notApplicable("retry-failed", s);
      if (why) ignore(why);
      else {
        const again = retryFailed(t);
        reopen(t);
        t.event({ kind: "retried", devices: again });
        settle(t);
      }
      break;
    }
    case "next-wave": {
      const why = notApplicable("next-wave", s);
      if (why) ignore(why);
      else {
        reopen(t);
        startWave(t, s.currentWave + 1);
        t.event({ kind: "advanced", wave: s.currentWave + 1 });
        settle(t);
      }
      break;
    }
    case "tick": {
      const due = waveDeadline(s);
      if (due !== undefined && input.now >= due && !waveFinished(s, s.currentWave))
        pauseForTimeout(t);
      break;
    }
  }
  return t.result();
}

/** What the summary groups devices into (docs/rollouts.md "Output"). */
export const BUCKETS = [
  "pending",
  "notified",
  "updating",
  "succeeded",
  "rolled-back",
  "failed",
  "cancelled",
  "withdrawn",
] as const;
export type Bucket = (typeof BUCKETS)[number];

/**
 * pending: its wave has not started; notified: notice published, not started (queued, idle,
 * offline, or nothing heard yet); updating: past queued, not final; withdrawn: an abort cleared
 * its notice before it started (until the gateway reports `cancelled`).
 */
export function bucketOf(e: DeviceEntry): Bucket {
  if (e.state && isFinalState(e.state)) return e.state as Bucket;
  if (e.clearedAt) return "withdrawn";
  if (!e.notifiedAt) return "pending";
  return e.startedAt ? "updating" : "notified";
}

/**
 * Wave numbers in the summary (what `--json` prints) are the ones the text shows: 1-based, wave
 * 1 the first; `currentWave` 0 before the first wave starts (docs/rollouts.md "Output"). The
 * retained state keeps 0-based indexes (RolloutState.currentWave, perDevice.wave): it is the
 * machine's own record, and its schema says so.
 */
export interface WaveSummary {
  /** 1-based. */
  wave: number;
  percent: number;
  devices: number;
  finished: number;
  failed: number;
}

export interface RolloutSummary {
  rolloutId: string;
  releaseId: string;
  version: string;
  state: RolloutState["state"];
  reason?: RolloutReason;
  /** 1-based number of the wave in progress (or last run); 0 before the first wave. */
  currentWave: number;
  waves: WaveSummary[];
  counts: Record<Bucket, number>;
  failureRate: { failed: number; finished: number; percent: number; max: number };
  failures: DeviceFailure[];
  devices: {
    deviceId: string;
    /** 1-based. */
    wave: number;
    bucket: Bucket;
    state?: DeviceState;
    errorCode?: string;
  }[];
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
}

/** The document `--json` prints and the live view draws. */
export function summarize(s: RolloutState): RolloutSummary {
  const counts = Object.fromEntries(BUCKETS.map((b) => [b, 0])) as Record<Bucket, number>;
  const waves: WaveSummary[] = s.waves.map((percent, i) => ({
    wave: i + 1,
    percent,
    devices: 0,
    finished: 0,
    failed: 0,
  }));
  const devices: RolloutSummary["devices"] = [];
  for (const id of s.devices) {
    const e = s.perDevice[id]!;
    const bucket = bucketOf(e);
    counts[bucket]++;
    const w = waves[e.wave]!;
    w.devices++;
    if (isFinal(e.state)) w.finished++;
    if (e.state === "failed" || e.state === "rolled-back") w.failed++;
    devices.push({
      deviceId: id,
      wave: e.wave + 1,
      bucket,
      ...(e.state ? { state: e.state } : {}),
      ...(e.errorCode ? { errorCode: e.errorCode } : {}),
    });
  }
  const { failed, finished } = failureTally(s);
  return {
    rolloutId: s.rolloutId,
    releaseId: s.releaseId,
    version: s.version,
    state: s.state,
    ...(s.reason ? { reason: s.reason } : {}),
    currentWave: s.currentWave + 1,
    waves,
    counts,
    failureRate: {
      failed,
      finished,
      percent: finished === 0 ? 0 : Math.round((failed / finished) * 1000) / 10,
      max: s.maxFailureRate,
    },
    failures: failuresOf(s),
    devices,
    startedAt: s.startedAt,
    updatedAt: s.updatedAt,
    ...(s.finishedAt ? { finishedAt: s.finishedAt } : {}),
  };
}
