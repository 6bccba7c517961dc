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
 *   duplicates and out-of-order ones (DeviceStatus.seq per device) change nothing.
 * - Failure rate = (failed + rolled-back) / finished, over every notified device. Once at least
 *   `minSample` devices finished and the rate exceeds `maxFailureRate`, the rollout aborts: notices
 *   of devices that have not started are withdrawn, devices mid-update are left to finish.
 * - A wave not finished within `waveTimeoutMs` pauses the rollout (it does not advance).
 */
import type { DeviceState, DeviceStatus } from "../mqtt/messages.js";
import { isFinalState } from "../mqtt/messages.js";
import type { DeviceEntry, ReasonKind, RolloutReason, RolloutState } from "./messages.js";
import { stateInconsistency } from "./messages.js";
import { formatDuration, type PlannedDevice, waveEnds } from "./plan.js";

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
  | { type: "wave-timeout"; wave: number; now: number };

export interface DeviceFailure {
  deviceId: string;
  state: "failed" | "rolled-back";
  errorCode?: string;
}

export type RolloutEvent =
  | { kind: "wave-started"; wave: number; devices: string[] }
  | { kind: "device"; deviceId: string; state: DeviceState; errorCode?: string }
  | { kind: "paused"; reason: RolloutReason }
  | { kind: "resumed" }
  | { kind: "aborted"; reason: RolloutReason; failures: DeviceFailure[]; cleared: string[] }
  | { kind: "completed" }
  /** An operator input that does not apply in this state (resume while running, ...). */
  | { kind: "ignored"; input: RolloutInput["type"]; why: string };

export type RolloutEffect =
  /** Publish the device's UpdateNotice, retained, on its desired topic. */
  | { type: "publish-notice"; deviceId: string }
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

function waveFinished(s: RolloutState, wave: number): boolean {
  return waveDevices(s, wave).every((id) => isFinal(s.perDevice[id]!.state));
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

  unset(key: "reason" | "waveStartedAt"): void {
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
  const open = waveDevices(d, d.currentWave).filter((id) => !isFinal(d.perDevice[id]!.state));
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

function onStatus(t: Step, st: DeviceStatus): void {
  const d = t.draft;
  const known = d.perDevice[st.deviceId];
  // Not one of ours, or a duplicate / out-of-order status (seq only grows per device).
  if (!known || (known.seq !== undefined && st.seq <= known.seq)) return;
  const e = t.entry(st.deviceId);
  e.seq = st.seq;
  // Another release's status counts for nothing; a final state is never replaced (the gateway
  // sends exactly one final status per release; anything after it is idle/offline chatter).
  if (st.releaseId !== d.releaseId || isFinal(e.state)) return;
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
        t.event({ kind: "resumed" });
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

export interface WaveSummary {
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
  currentWave: number;
  waves: WaveSummary[];
  counts: Record<Bucket, number>;
  failureRate: { failed: number; finished: number; percent: number; max: number };
  failures: DeviceFailure[];
  devices: {
    deviceId: string;
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
  const waves: WaveSummary[] = s.waves.map((percent, wave) => ({
    wave,
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
      wave: e.wave,
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
    currentWave: s.currentWave,
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
