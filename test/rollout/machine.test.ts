import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type DeviceState, type DeviceStatus, noticeDigest } from "../../src/mqtt/messages.js";
import {
  createRollout,
  type RolloutEffect,
  type RolloutEvent,
  type RolloutInput,
  type RolloutPlan,
  summarize,
  transition,
  waveDeadline,
} from "../../src/rollout/machine.js";
import type { RolloutState } from "../../src/rollout/messages.js";
import { encodeRolloutState, parseRolloutState } from "../../src/rollout/messages.js";
import { noticeFor, waveEnds } from "../../src/rollout/plan.js";

const T0 = Date.parse("2025-03-01T12:00:00.000Z");
const REL = "app-1.2.0-0123456789ab";
const OTHER = "app-1.1.0-ba9876543210";

const ids = (n: number) => Array.from({ length: n }, (_, i) => `d${String(i).padStart(2, "0")}`);

function plan(n: number, over: Partial<RolloutPlan> = {}): RolloutPlan {
  return {
    rolloutId: "r1",
    releaseId: REL,
    version: "1.2.0",
    manifestBaseUrl: "http://rel.example/app",
    devices: ids(n).map((deviceId, i) => ({ deviceId, counter: 100 + i })),
    waves: [10, 50, 100],
    maxFailureRate: 20,
    minSample: 1,
    waveTimeoutMs: 60_000,
    ...over,
  };
}

// Each status gets a fresh seq unless one is given (per device seq only grows).
let seqs = new Map<string, number>();
/**
 * The digest a status echoes: `ours` of the notice the default rollout publishes for the device
 * (plan(10)), `foreign` of a notice of the same release anyone else published (a URL that 404s).
 */
function digestOf(deviceId: string, whose: "ours" | "foreign"): string {
  const ours = noticeFor(createRollout(plan(10), T0), deviceId, T0);
  return noticeDigest(
    whose === "ours" ? ours : { ...ours, manifestUrls: ["http://attacker.example/404"] },
  );
}

function status(
  deviceId: string,
  state: DeviceState,
  o: {
    release?: string;
    seq?: number;
    code?: string;
    at?: number;
    notice?: "ours" | "foreign";
    rolloutId?: string;
  } = {},
): RolloutInput {
  const seq = o.seq ?? (seqs.get(deviceId) ?? 0) + 1;
  seqs.set(deviceId, Math.max(seq, seqs.get(deviceId) ?? 0));
  const st: DeviceStatus = {
    format: 1,
    deviceId,
    gatewayId: "gw1",
    seq,
    state,
    releaseId: o.release ?? REL,
    ...(o.rolloutId ? { rolloutId: o.rolloutId } : {}),
    ...(o.notice ? { noticeDigest: digestOf(deviceId, o.notice) } : {}),
    updatedAt: new Date(T0).toISOString(),
    ...(o.code ? { error: { code: o.code, message: "boom", step: "transfer" } } : {}),
  };
  return { type: "status", status: st, now: o.at ?? T0 + 1000 };
}
const start = (now = T0): RolloutInput => ({ type: "start", now });
const pause = (now = T0 + 2000): RolloutInput => ({ type: "pause", now });
const resume = (now = T0 + 3000): RolloutInput => ({ type: "resume", now });
const abortIn = (now = T0 + 2000): RolloutInput => ({ type: "abort", reason: "bad build", now });
const tick = (now: number): RolloutInput => ({ type: "tick", now });
const waveTimeout = (wave: number, now = T0 + 61_000): RolloutInput => ({
  type: "wave-timeout",
  wave,
  now,
});

function run(s: RolloutState, inputs: readonly RolloutInput[]): RolloutState {
  return inputs.reduce((acc, i) => transition(acc, i).state, s);
}

const notices = (fx: RolloutEffect[]) =>
  fx.flatMap((e) => (e.type === "publish-notice" ? [e.deviceId] : []));
const republished = (fx: RolloutEffect[]) =>
  fx.flatMap((e) => (e.type === "republish-notice" ? [e.deviceId] : []));
const clears = (fx: RolloutEffect[]) =>
  fx.flatMap((e) => (e.type === "clear-notice" ? [e.deviceId] : []));
const events = (fx: RolloutEffect[]) =>
  fx.flatMap((e) => (e.type === "event" ? [e.event.kind] : []));
const eventOf = <K extends RolloutEvent["kind"]>(fx: RolloutEffect[], kind: K) =>
  fx.find((e) => e.type === "event" && e.event.kind === kind) as
    | { type: "event"; event: Extract<RolloutEvent, { kind: K }> }
    | undefined;

interface Expect {
  state?: RolloutState["state"];
  currentWave?: number;
  notices?: string[];
  /** republish-notice effects (publish-notice ones are `notices`). */
  republished?: string[];
  clears?: string[];
  events?: RolloutEvent["kind"][];
  saved?: boolean;
  finish?: "completed" | "aborted";
  reason?: string;
  device?: Record<string, Partial<RolloutState["perDevice"][string]>>;
  /** The transition returns the very same state object (nothing changed). */
  unchanged?: boolean;
  /** Anything else to check of the state the transition led to. */
  check?: (s: RolloutState) => void;
}

interface Row {
  name: string;
  n?: number;
  plan?: Partial<RolloutPlan>;
  /** Inputs applied before `input`, from a new rollout (status seqs restart per row). */
  given: () => RolloutInput[];
  input: () => RolloutInput;
  expect: Expect;
}

// Shorthands for the usual 10-device rollout (waves 10,50,100: d00 | d01-d04 | d05-d09).
const wave0Done = () => [start(), status("d00", "succeeded")];
const wave1Started = () => [...wave0Done()];

const rows: Row[] = [
  {
    name: "start publishes the first wave: 1% of 40 devices rounds up to 1",
    n: 40,
    plan: { waves: [1, 10, 50, 100] },
    given: () => [],
    input: () => start(),
    expect: {
      state: "running",
      currentWave: 0,
      notices: ["d00"],
      events: ["wave-started"],
      saved: true,
    },
  },
  {
    name: "the first wave's final status starts wave 2 at once, all its notices together",
    given: () => [start()],
    input: () => status("d00", "succeeded"),
    expect: {
      currentWave: 1,
      notices: ["d01", "d02", "d03", "d04"],
      events: ["device", "wave-started"],
      device: { d00: { state: "succeeded" } },
    },
  },
  {
    name: "a wave waits while any of its devices has no final status",
    given: () => [
      ...wave1Started(),
      status("d01", "succeeded"),
      status("d02", "succeeded"),
      status("d03", "cancelled"),
    ],
    input: () => status("d04", "downloading"),
    expect: {
      currentWave: 1,
      notices: [],
      events: ["device"],
      device: { d04: { state: "downloading" } },
    },
  },
  {
    name: "the last device of the last wave completes the rollout",
    n: 2,
    plan: { waves: [50, 100] },
    given: () => [start(), status("d00", "succeeded")],
    input: () => status("d01", "succeeded"),
    expect: { state: "completed", events: ["device", "completed"], finish: "completed" },
  },
  {
    name: "a final status for another release does not count (only the seq is kept)",
    given: () => [start()],
    input: () => status("d00", "succeeded", { release: OTHER, seq: 7 }),
    expect: { currentWave: 0, notices: [], events: [], saved: true, device: { d00: { seq: 7 } } },
  },
  {
    name: "a duplicate status (same seq) changes nothing",
    given: () => [start(), status("d00", "downloading", { seq: 5 })],
    input: () => status("d00", "downloading", { seq: 5 }),
    expect: { unchanged: true, events: [] },
  },
  {
    name: "an out-of-order status (lower seq) changes nothing, even a final one",
    given: () => [start(), status("d00", "verifying-device", { seq: 9 })],
    input: () => status("d00", "failed", { seq: 8, code: "E_X" }),
    expect: { unchanged: true, device: { d00: { state: "verifying-device", seq: 9 } } },
  },
  {
    name: "a status for a device outside the rollout changes nothing",
    given: () => [start()],
    input: () => status("zz", "failed"),
    expect: { unchanged: true },
  },
  {
    name: "a final state sticks: idle after succeeded (higher seq) keeps succeeded",
    n: 2,
    plan: { waves: [100] },
    given: () => [start(), status("d00", "succeeded")],
    input: () => status("d00", "idle"),
    expect: { device: { d00: { state: "succeeded", seq: 2 } }, events: [] },
  },
  {
    name: "failure rate above the limit aborts: withdraws notified devices that have not started, leaves the started one",
    given: () => [
      ...wave1Started(),
      status("d02", "queued"),
      status("d03", "offline"),
      status("d04", "downloading"),
    ],
    input: () => status("d01", "failed", { code: "E_AGENT_VERIFY" }),
    expect: {
      state: "aborted",
      clears: ["d02", "d03"],
      finish: "aborted",
      reason: "failure-rate",
      events: ["device", "aborted"],
      device: {
        d02: { clearedAt: new Date(T0 + 1000).toISOString() },
        d04: { state: "downloading" },
      },
    },
  },
  {
    name: "a failure rate equal to the limit does not abort (it must exceed it)",
    plan: { maxFailureRate: 50 },
    given: () => wave1Started(),
    input: () => status("d01", "failed"),
    expect: { state: "running", currentWave: 1, clears: [] },
  },
  {
    name: "below the minimum sample a failure does not abort, and the wave advances",
    plan: { minSample: 3 },
    given: () => [start()],
    input: () => status("d00", "failed"),
    expect: { state: "running", currentWave: 1, notices: ["d01", "d02", "d03", "d04"] },
  },
  {
    name: "the minimum sample reached with the rate above the limit aborts",
    plan: { minSample: 3 },
    given: () => [start(), status("d00", "failed"), status("d01", "succeeded")],
    input: () => status("d02", "succeeded"),
    expect: { state: "aborted", reason: "failure-rate", clears: ["d03", "d04"], finish: "aborted" },
  },
  {
    name: "rolled-back counts as a failure",
    given: () => wave1Started(),
    input: () => status("d01", "rolled-back", { code: "E_AGENT_CONFIRM_TIMEOUT" }),
    expect: { state: "aborted", reason: "failure-rate", finish: "aborted" },
  },
  {
    name: "cancelled is finished but not a failure",
    given: () => wave1Started(),
    input: () => status("d01", "cancelled", { code: "E_AGENT_CANCELLED" }),
    expect: {
      state: "running",
      device: { d01: { state: "cancelled", errorCode: "E_AGENT_CANCELLED" } },
    },
  },
  {
    name: "a retained failure of a device whose wave has not started does not count yet",
    given: () => [start()],
    input: () => status("d07", "failed"),
    expect: { state: "running", currentWave: 0, device: { d07: { state: "failed" } } },
  },
  {
    name: "... but counts once its wave starts (the gateway will not run that release again)",
    n: 4,
    plan: { waves: [25, 100] },
    given: () => [start(), status("d03", "failed")],
    input: () => status("d00", "succeeded"),
    expect: {
      state: "aborted",
      reason: "failure-rate",
      notices: ["d01", "d02", "d03"],
      clears: ["d01", "d02"],
      finish: "aborted",
    },
  },
  {
    name: "abort wins over completion when the last status crosses the limit",
    n: 2,
    plan: { waves: [50, 100] },
    given: () => [start(), status("d00", "succeeded")],
    input: () => status("d01", "failed"),
    expect: { state: "aborted", finish: "aborted" },
  },
  {
    name: "empty waves are passed at once (1% and 10% of 10 devices are both 1)",
    plan: { waves: [1, 10, 100] },
    given: () => [start()],
    input: () => status("d00", "succeeded"),
    expect: {
      currentWave: 2,
      notices: ids(10).slice(1),
      events: ["device", "wave-started", "wave-started"],
    },
  },
  {
    name: "pause holds the next wave",
    given: () => [start()],
    input: () => pause(),
    expect: { state: "paused", reason: "operator-pause", events: ["paused"] },
  },
  {
    name: "while paused a finished wave does not advance",
    given: () => [start(), pause()],
    input: () => status("d00", "succeeded"),
    expect: { state: "paused", currentWave: 0, notices: [] },
  },
  {
    name: "while paused the failure rate still aborts",
    given: () => [...wave1Started(), pause()],
    input: () => status("d01", "failed"),
    expect: {
      state: "aborted",
      reason: "failure-rate",
      clears: ["d02", "d03", "d04"],
      finish: "aborted",
    },
  },
  {
    name: "resume advances a wave that finished while paused",
    given: () => [start(), pause(), status("d00", "succeeded")],
    input: () => resume(),
    expect: {
      state: "running",
      currentWave: 1,
      notices: ["d01", "d02", "d03", "d04"],
      events: ["resumed", "wave-started"],
    },
  },
  {
    name: "paused before the first wave: start publishes nothing",
    given: () => [pause(T0)],
    input: () => start(),
    expect: { state: "paused", currentWave: -1, notices: [] },
  },
  {
    name: "... and resume then starts the first wave",
    given: () => [pause(T0), start()],
    input: () => resume(),
    expect: {
      state: "running",
      currentWave: 0,
      notices: ["d00"],
      events: ["resumed", "wave-started"],
    },
  },
  {
    name: "pause while paused is ignored (no save)",
    given: () => [start(), pause()],
    input: () => pause(),
    expect: { unchanged: true, events: ["ignored"] },
  },
  {
    name: "resume while running is ignored",
    given: () => [start()],
    input: () => resume(),
    expect: { unchanged: true, events: ["ignored"] },
  },
  {
    name: "operator abort withdraws the notified devices that have not started",
    given: () => [...wave1Started(), status("d01", "transferring"), status("d02", "succeeded")],
    input: () => abortIn(),
    expect: {
      state: "aborted",
      reason: "operator-abort",
      clears: ["d03", "d04"],
      finish: "aborted",
    },
  },
  {
    name: "abort of a paused rollout",
    given: () => [start(), pause()],
    input: () => abortIn(),
    expect: { state: "aborted", clears: ["d00"], finish: "aborted" },
  },
  {
    name: "abort after completion is ignored",
    n: 1,
    plan: { waves: [100] },
    given: () => [start(), status("d00", "succeeded")],
    input: () => abortIn(),
    expect: { unchanged: true, events: ["ignored"] },
  },
  {
    name: "after an abort, a mid-update device's final status is recorded; nothing else happens",
    given: () => [...wave1Started(), status("d01", "downloading"), abortIn()],
    input: () => status("d01", "succeeded", { at: T0 + 5000 }),
    expect: { state: "aborted", notices: [], clears: [], device: { d01: { state: "succeeded" } } },
  },
  {
    name: "a wave timeout pauses instead of advancing",
    given: () => [start(), status("d00", "downloading")],
    input: () => waveTimeout(0),
    expect: { state: "paused", reason: "wave-timeout", notices: [], events: ["paused"] },
  },
  {
    name: "a stale wave timeout (for a past wave) is ignored",
    given: () => wave1Started(),
    input: () => waveTimeout(0),
    expect: { unchanged: true, events: [] },
  },
  {
    name: "a tick before the deadline does nothing",
    given: () => [start()],
    input: () => tick(T0 + 59_999),
    expect: { unchanged: true },
  },
  {
    name: "a tick at the deadline pauses (an offline device keeps its wave open)",
    given: () => [start(), status("d00", "offline")],
    input: () => tick(T0 + 60_000),
    expect: { state: "paused", reason: "wave-timeout" },
  },
  {
    name: "a tick while paused does nothing",
    given: () => [start(), pause()],
    input: () => tick(T0 + 600_000),
    expect: { unchanged: true },
  },
  {
    name: "start again after a restart publishes nothing twice",
    given: () => [...wave1Started(), status("d01", "downloading")],
    input: () => start(T0 + 9000),
    expect: { unchanged: true, notices: [] },
  },
  // Issue 12 defect 4: anyone who may publish can make a gateway run a notice of this release
  // that fails (a URL that 404s) and sign a genuine `failed`; only our notices' outcomes count.
  {
    name: "an outsider's notice of this release failing on a later-wave device does not count when its wave starts (it aborted the rollout)",
    given: () => [
      start(),
      status("d01", "failed", { notice: "foreign", code: "E_DOWNLOAD_FAILED", rolloutId: "r1" }),
    ],
    input: () => status("d00", "succeeded", { notice: "ours", rolloutId: "r1" }),
    expect: {
      state: "running",
      currentWave: 1,
      notices: ["d01", "d02", "d03", "d04"],
      events: ["device", "wave-started"],
      check: (s) => expect(s.perDevice.d01!.state).toBeUndefined(),
    },
  },
  {
    name: "an outsider's notice failing on a device of the current wave changes nothing",
    given: () => wave1Started(),
    input: () => status("d01", "failed", { notice: "foreign", code: "E_DOWNLOAD_FAILED" }),
    expect: {
      state: "running",
      notices: [],
      events: [],
      check: (s) => expect(s.perDevice.d01).toEqual({ ...s.perDevice.d01, seq: 1 }),
    },
  },
  {
    name: "nor do the steps of an outsider's notice: the device has not started ours, so an abort still withdraws it",
    given: () => [...wave1Started(), status("d01", "downloading", { notice: "foreign" })],
    input: () => abortIn(),
    expect: { state: "aborted", clears: ["d01", "d02", "d03", "d04"], finish: "aborted" },
  },
  {
    name: "an outsider's notice cancelled (withdrawn or superseded) does not finish the device",
    given: () => wave1Started(),
    input: () => status("d01", "cancelled", { notice: "foreign", code: "E_AGENT_CLEARED" }),
    expect: {
      events: [],
      check: (s) => expect(summarize(s).counts.notified).toBe(4),
    },
  },
  {
    name: "an outsider's notice sent to a later wave and withdrawn again does not finish that device when its wave starts (it advanced the rollout past a device never updated)",
    given: () => [
      start(),
      status("d01", "cancelled", { notice: "foreign", code: "E_AGENT_CLEARED", rolloutId: "r1" }),
    ],
    input: () => status("d00", "succeeded", { notice: "ours" }),
    expect: {
      currentWave: 1,
      check: (s) => {
        expect(s.perDevice.d01!.state).toBeUndefined();
        expect(summarize(s).counts).toMatchObject({ succeeded: 1, notified: 4, cancelled: 0 });
      },
    },
  },
  {
    name: "our notice's failure counts (the status echoes our notice's digest)",
    given: () => [start()],
    input: () => status("d00", "failed", { notice: "ours", code: "E_DOWNLOAD_FAILED" }),
    expect: { state: "aborted", reason: "failure-rate", finish: "aborted" },
  },
  {
    name: "a notice of ours the gateway refuses (one final status with its code, nothing before it) is a failure at once, not a wait for the wave timeout",
    given: () => [start()],
    input: () => status("d00", "failed", { notice: "ours", code: "E_MANIFEST_COUNTER" }),
    expect: {
      state: "aborted",
      reason: "failure-rate",
      finish: "aborted",
      device: { d00: { state: "failed", errorCode: "E_MANIFEST_COUNTER" } },
    },
  },
  {
    name: "another notice's success counts: the device runs the release, and its gateway will not run it again for ours",
    given: () => [start()],
    input: () => status("d00", "succeeded", { notice: "foreign" }),
    expect: { currentWave: 1, device: { d00: { state: "succeeded" } } },
  },
  {
    name: "another notice's rollback counts as a failure (a fact about the release on that device)",
    given: () => [start()],
    input: () => status("d00", "rolled-back", { notice: "foreign", code: "E_UART_ROLLED_BACK" }),
    expect: { state: "aborted", reason: "failure-rate", finish: "aborted" },
  },
  {
    name: "a status without a digest (an agent before it) naming another rollout counts for nothing",
    given: () => [start()],
    input: () => status("d00", "failed", { rolloutId: "r-earlier", code: "E_DOWNLOAD_FAILED" }),
    expect: { state: "running", events: [] },
  },
  {
    name: "a status without a digest naming this rollout counts",
    given: () => [start()],
    input: () => status("d00", "failed", { rolloutId: "r1", code: "E_DOWNLOAD_FAILED" }),
    expect: { state: "aborted", reason: "failure-rate", finish: "aborted" },
  },
  {
    name: "resume republishes, unchanged, the notices of the waves so far that have not started ours (replaced, or dropped as a duplicate of another notice that failed)",
    given: () => [
      ...wave1Started(),
      status("d01", "downloading", { notice: "ours" }),
      status("d02", "succeeded", { notice: "ours" }),
      status("d03", "failed", { notice: "foreign", code: "E_DOWNLOAD_FAILED" }),
      waveTimeout(1),
    ],
    input: () => resume(T0 + 100_000),
    expect: {
      state: "running",
      notices: [],
      republished: ["d03", "d04"],
      events: ["resumed"],
      check: (s) => expect(s.perDevice.d03!.notifiedAt).toBe(new Date(T0 + 1000).toISOString()),
    },
  },
  {
    name: "retry-failed on an aborted rollout re-issues the failed devices' notices (a new issuedAt) and runs it again",
    plan: { maxFailureRate: 100 },
    given: () => [
      ...wave1Started(),
      status("d01", "failed", { code: "E_DOWNLOAD_FAILED" }),
      status("d02", "rolled-back", { code: "E_UART_ROLLED_BACK" }),
      abortIn(T0 + 5000),
    ],
    input: () => ({ type: "retry-failed", now: T0 + 9000 }),
    expect: {
      state: "running",
      currentWave: 1,
      notices: ["d01"],
      events: ["retried"],
      device: { d01: { notifiedAt: new Date(T0 + 9000).toISOString() } },
      check: (s) => {
        expect(s.perDevice.d01!.state).toBeUndefined();
        expect(s.perDevice.d01!.errorCode).toBeUndefined();
        // Rolled back is a fact about the release on that device: not retried.
        expect(s.perDevice.d02!.state).toBe("rolled-back");
        expect(s.reason).toBeUndefined();
        expect(s.finishedAt).toBeUndefined();
        expect(s.waveStartedAt).toBe(new Date(T0 + 9000).toISOString());
      },
    },
  },
  {
    name: "the retried device's old failed status, delivered again, does not count (its seq is not above)",
    plan: { maxFailureRate: 100 },
    given: () => [
      ...wave1Started(),
      status("d01", "failed", { code: "E_DOWNLOAD_FAILED", seq: 9 }),
      { type: "retry-failed", now: T0 + 9000 },
    ],
    input: () => status("d01", "failed", { code: "E_DOWNLOAD_FAILED", seq: 9 }),
    expect: { unchanged: true, events: [] },
  },
  {
    name: "a retried device's new status of our notice counts (the digest leaves issuedAt out)",
    plan: { maxFailureRate: 100 },
    given: () => [
      ...wave1Started(),
      status("d01", "failed", { code: "E_DOWNLOAD_FAILED" }),
      { type: "retry-failed", now: T0 + 9000 },
    ],
    input: () => status("d01", "succeeded", { notice: "ours" }),
    expect: { events: ["device"], device: { d01: { state: "succeeded" } } },
  },
  {
    name: "a retry that leaves the failure rate above the limit aborts again at once",
    given: () => [
      ...wave1Started(),
      status("d01", "failed", { code: "E_DOWNLOAD_FAILED" }),
      status("d02", "rolled-back", { code: "E_UART_ROLLED_BACK" }),
    ],
    input: () => ({ type: "retry-failed", now: T0 + 9000 }),
    expect: {
      state: "aborted",
      reason: "failure-rate",
      notices: ["d01"],
      events: ["retried", "aborted"],
      finish: "aborted",
    },
  },
  {
    name: "retry-failed with no failed device is ignored",
    given: () => wave1Started(),
    input: () => ({ type: "retry-failed", now: T0 + 9000 }),
    expect: { unchanged: true, events: ["ignored"] },
  },
  {
    name: "a completed rollout does not complete again while a retried device of an earlier wave runs",
    n: 2,
    plan: { waves: [50, 100], maxFailureRate: 100 },
    given: () => [
      start(),
      status("d00", "failed", { code: "E_DOWNLOAD_FAILED" }),
      status("d01", "succeeded"),
    ],
    input: () => ({ type: "retry-failed", now: T0 + 9000 }),
    expect: { state: "running", currentWave: 1, notices: ["d00"], events: ["retried"] },
  },
  {
    name: "next-wave starts the next wave while the current one is still open",
    given: () => [start(), status("d00", "downloading")],
    input: () => ({ type: "next-wave", now: T0 + 5000 }),
    expect: {
      state: "running",
      currentWave: 1,
      notices: ["d01", "d02", "d03", "d04"],
      events: ["wave-started", "advanced"],
    },
  },
  {
    name: "next-wave on a paused rollout runs it again",
    given: () => [start(), pause()],
    input: () => ({ type: "next-wave", now: T0 + 5000 }),
    expect: { state: "running", currentWave: 1, events: ["wave-started", "advanced"] },
  },
  {
    name: "after next-wave the later wave finishing does not advance past an earlier open wave",
    given: () => [
      start(),
      { type: "next-wave", now: T0 + 5000 },
      ...["d01", "d02", "d03"].map((d) => status(d, "succeeded")),
    ],
    input: () => status("d04", "succeeded"),
    expect: { currentWave: 1, notices: [], events: ["device"] },
  },
  {
    name: "the earlier wave's last device then starts the wave after",
    given: () => [
      start(),
      { type: "next-wave", now: T0 + 5000 },
      ...["d01", "d02", "d03", "d04"].map((d) => status(d, "succeeded")),
    ],
    input: () => status("d00", "succeeded"),
    expect: { currentWave: 2, events: ["device", "wave-started"] },
  },
  {
    name: "next-wave at the last wave is ignored",
    n: 2,
    plan: { waves: [50, 100] },
    given: () => [start(), status("d00", "succeeded")],
    input: () => ({ type: "next-wave", now: T0 + 5000 }),
    expect: { unchanged: true, events: ["ignored"] },
  },
  {
    name: "next-wave on an aborted rollout is ignored",
    given: () => [start(), abortIn()],
    input: () => ({ type: "next-wave", now: T0 + 5000 }),
    expect: { unchanged: true, events: ["ignored"] },
  },
  {
    name: "start on an aborted rollout is ignored",
    given: () => [start(), abortIn()],
    input: () => start(T0 + 9000),
    expect: { unchanged: true, events: ["ignored"] },
  },
];

describe("rollout machine: transition table", () => {
  for (const row of rows) {
    it(row.name, () => {
      seqs = new Map();
      const s0 = createRollout(plan(row.n ?? 10, row.plan), T0);
      const from = run(s0, row.given());
      const { state, effects } = transition(from, row.input());
      const x = row.expect;
      if (x.unchanged) expect(state).toBe(from);
      if (x.state) expect(state.state).toBe(x.state);
      if (x.currentWave !== undefined) expect(state.currentWave).toBe(x.currentWave);
      if (x.notices) expect(notices(effects)).toEqual(x.notices);
      if (x.clears) expect(clears(effects)).toEqual(x.clears);
      expect(republished(effects)).toEqual(x.republished ?? []);
      if (x.events) expect(events(effects)).toEqual(x.events);
      if (x.saved !== undefined) expect(effects.some((e) => e.type === "save-state")).toBe(x.saved);
      const fin = effects.find((e) => e.type === "finish");
      expect(fin && fin.type === "finish" ? fin.state : undefined).toBe(x.finish);
      if (x.reason) expect(state.reason?.kind).toBe(x.reason);
      for (const [id, want] of Object.entries(x.device ?? {}))
        expect(state.perDevice[id]).toMatchObject(want);
      x.check?.(state);
      // Every state the machine makes is one the schema accepts (what gets retained).
      expect(parseRolloutState(encodeRolloutState(state))).toEqual({ ok: true, value: state });
      // Effects come in order: notices, save, events, finish.
      const order = effects.map((e) =>
        e.type === "publish-notice" || e.type === "republish-notice" || e.type === "clear-notice"
          ? 0
          : e.type === "save-state"
            ? 1
            : e.type === "event"
              ? 2
              : 3,
      );
      expect(order).toEqual([...order].sort());
    });
  }

  it("the input state is never modified", () => {
    seqs = new Map();
    const s = run(createRollout(plan(10), T0), wave1Started());
    const copy = structuredClone(s);
    transition(s, status("d01", "failed"));
    transition(s, abortIn());
    expect(s).toEqual(copy);
  });

  it("the abort event and reason name the failing devices and their codes", () => {
    seqs = new Map();
    const s = run(createRollout(plan(10), T0), wave1Started());
    const { state, effects } = transition(s, status("d01", "failed", { code: "E_AGENT_VERIFY" }));
    expect(eventOf(effects, "aborted")?.event.failures).toEqual([
      { deviceId: "d01", state: "failed", errorCode: "E_AGENT_VERIFY" },
    ]);
    expect(state.reason?.message).toContain("1/2 = 50.0% exceeds 20%: d01 failed E_AGENT_VERIFY");
    expect(summarize(state).counts).toMatchObject({
      succeeded: 1,
      failed: 1,
      withdrawn: 3,
      pending: 5,
    });
  });

  it("resume restarts the wave clock; the timeout message names the open devices", () => {
    seqs = new Map();
    const s = run(createRollout(plan(10), T0), [start(), waveTimeout(0)]);
    expect(s.reason?.message).toMatch(
      /wave 1 \(10%\) did not finish within 1m; 1 device\(s\) not finished: d00/,
    );
    const r = transition(s, resume(T0 + 100_000)).state;
    expect(waveDeadline(r)).toBe(T0 + 160_000);
  });

  it("waveEnds: cumulative, rounded up, at least one device", () => {
    expect(waveEnds(40, [1, 10, 50, 100])).toEqual([1, 4, 20, 40]);
    expect(waveEnds(10, [10, 50, 100])).toEqual([1, 5, 10]);
    expect(waveEnds(3, [10, 100])).toEqual([1, 3]);
    expect(waveEnds(30, [10, 100])).toEqual([3, 30]);
    expect(waveEnds(1, [1, 100])).toEqual([1, 1]);
  });

  it("createRollout refuses a plan that cannot run", () => {
    expect(() => createRollout(plan(0), T0)).toThrow(RangeError);
    expect(() => createRollout(plan(3, { waves: [50, 90] }), T0)).toThrow(/last wave/);
    expect(() => createRollout(plan(3, { minSample: 0 }), T0)).toThrow(RangeError);
  });
});

describe("rollout machine: properties", () => {
  const FINAL: DeviceState[] = ["succeeded", "rolled-back", "failed", "cancelled"];
  const ALL: DeviceState[] = ["queued", "downloading", "transferring", "idle", "offline", ...FINAL];

  const arbInput = fc.oneof(
    {
      weight: 100,
      arbitrary: fc.record({
        kind: fc.constant("status" as const),
        dev: fc.nat({ max: 1000 }), // modulo n + 1: n is a device outside the rollout
        state: fc.oneof(
          { weight: 3, arbitrary: fc.constantFrom(...FINAL) },
          { weight: 2, arbitrary: fc.constantFrom(...ALL) },
        ),
        ours: fc.integer({ min: 0, max: 9 }).map((v) => v < 8),
        seqDelta: fc.integer({ min: -1, max: 2 }), // duplicates and out-of-order ones too
      }),
    },
    {
      weight: 8,
      arbitrary: fc.constantFrom("resume", "resume", "pause", "start", "tick", "timeout"),
    },
    { weight: 1, arbitrary: fc.constant("abort") },
  );

  it("never notifies a device twice, never beyond the wave's cumulative size, aborts iff the failure rate crossed the limit", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 25 }),
        fc.constantFrom([100], [10, 100], [1, 10, 50, 100], [20, 40, 60, 80, 100]),
        fc.constantFrom(0, 10, 25, 50, 75, 100),
        fc.integer({ min: 1, max: 4 }),
        fc.array(arbInput, { minLength: 5, maxLength: 150, size: "max" }),
        (n, waves, maxFailureRate, minSample, script) => {
          let s = createRollout(plan(n, { waves, maxFailureRate, minSample }), T0);
          const ends = waveEnds(n, waves);
          const notified = new Set<string>();
          // An independent model of what counts: per device the highest seq, and the first final
          // state it reported for this release.
          const lastSeq = new Map<string, number>();
          const final = new Map<string, DeviceState>();
          let now = T0;
          let crossed = false;
          let abortedByRate = false;
          const step = (input: RolloutInput) => {
            const before = s;
            const r = transition(s, input);
            s = r.state;
            for (const e of r.effects) {
              if (e.type === "republish-notice") {
                expect(input.type, "republished other than on resume").toBe("resume");
                expect(notified.has(e.deviceId), `${e.deviceId} republished unnotified`).toBe(true);
              }
              if (e.type === "publish-notice") {
                expect(notified.has(e.deviceId), `notice for ${e.deviceId} twice`).toBe(false);
                notified.add(e.deviceId);
              }
              if (e.type === "finish" && e.state === "aborted" && s.reason?.kind === "failure-rate")
                abortedByRate = true;
            }
            if (s.currentWave >= 0) expect(notified.size).toBeLessThanOrEqual(ends[s.currentWave]!);
            // The model's verdict, over the devices notified so far.
            let fin = 0;
            let bad = 0;
            for (const id of notified) {
              const f = final.get(id);
              if (!f) continue;
              fin++;
              if (f === "failed" || f === "rolled-back") bad++;
            }
            const ended = before.state === "aborted" || before.state === "completed";
            if (!ended && fin >= minSample && bad * 100 > maxFailureRate * fin) crossed = true;
          };
          step(start(now));
          for (const x of script) {
            now += 1000;
            if (typeof x === "string") {
              if (x === "tick") step(tick(now + 120_000));
              else if (x === "timeout") step(waveTimeout(s.currentWave, now));
              else if (x === "abort") step({ type: "abort", now });
              else step({ type: x, now } as RolloutInput);
              continue;
            }
            const id = x.dev % (n + 1) < n ? ids(n)[x.dev % (n + 1)]! : "outsider";
            const prev = lastSeq.get(id);
            const seq = Math.max(0, (prev ?? 0) + x.seqDelta);
            const release = x.ours ? REL : OTHER;
            if (prev === undefined || seq > prev) {
              lastSeq.set(id, seq);
              if (x.ours && !final.has(id) && FINAL.includes(x.state)) final.set(id, x.state);
            }
            step(status(id, x.state, { seq, release, at: now }));
          }
          expect(abortedByRate).toBe(crossed);
          if (s.state === "completed") expect(notified.size).toBe(n);
        },
      ),
      { numRuns: 300 },
    );
  });
});
