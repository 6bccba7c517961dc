/**
 * What the console shows (docs/console.md), as a pure fold of the retained topics `esp-ota
 * status` and `rollout status` read: presence, inventory, status, desired and progress go into
 * the same FleetState (src/mqtt/fleet-view.ts), rollout states are parsed as the rollout tools
 * parse them (src/rollout/messages.ts), and the console adds what a live viewer can remember and
 * a one-shot snapshot cannot: each device's history of final statuses, its forwarded log lines,
 * and when each gateway was last heard. Everything a publisher sent is checked by the parsers
 * and bounded here before it is kept; the page puts it in the DOM as text only.
 *
 * No network, no timers: the server feeds messages and the clock.
 */
import { ERROR_CODES } from "../errors.js";
import {
  type ApplyResult,
  applyMessage,
  emptyFleet,
  type FleetState,
  fleetView,
  type GatewayRow,
} from "../mqtt/fleet-view.js";
import { isFinalState, type PresenceHealth, parseMessage } from "../mqtt/messages.js";
import type { GatewayTrust } from "../mqtt/status-auth.js";
import { parseTopic } from "../mqtt/topics.js";
import {
  BUCKETS,
  type Bucket,
  bucketOf,
  failureTally,
  notApplicable,
  summarize,
  waveDevices,
} from "../rollout/machine.js";
import {
  CONTROL_ACTIONS,
  type ControlAction,
  ownerLive,
  parseRolloutState,
  type RolloutState,
} from "../rollout/messages.js";
import { quote } from "../text.js";

/** Final statuses kept per device (its update history). */
export const HISTORY_PER_DEVICE = 20;
/** Forwarded log lines kept per device, and the longest line kept (cut beyond). */
export const LOG_LINES_PER_DEVICE = 200;
export const LOG_LINE_MAX = 400;
/** Devices whose logs and history are kept; the least recently heard goes first. */
export const MAX_TRACKED_DEVICES = 20_000;
/** Rollouts kept; the oldest (by startedAt) goes first. */
export const MAX_ROLLOUTS = 200;
/** Failing devices listed per rollout (the count is always exact). */
export const FAILURES_SHOWN = 200;
/** Gateways whose last health summary is kept after they go offline; the least recently heard goes first. */
export const MAX_TRACKED_GATEWAYS = 5_000;
/**
 * An event-loop p99 above this marks a gateway degraded: the threshold of docs/metrics.md's
 * EspOtaEventLoopStalled alert (a stalled loop breaks UART timing first), so the page and the
 * alert agree on what is too slow.
 */
export const EVENT_LOOP_DEGRADED_MS = 100;

export interface HistoryEntry {
  releaseId?: string;
  targetVersion?: string;
  rolloutId?: string;
  state: string;
  errorCode?: string;
  errorMessage?: string;
  at: string;
}

export interface LogLine {
  at: string;
  text: string;
}

export interface ConsoleModel {
  readonly fleet: FleetState;
  readonly rollouts: Map<string, RolloutState>;
  readonly history: Map<string, HistoryEntry[]>;
  readonly logs: Map<string, LogLine[]>;
  /** Last message of any kind from the gateway (presence or inventory), ms since the epoch. */
  readonly lastSeen: Map<string, number>;
  /**
   * Each gateway's last health summary and the `at` of the `online` presence that carried it.
   * Kept when the gateway goes offline (its will carries none), so the page can still say what
   * it reported last, marked stale; dropped when its presence is cleared.
   */
  readonly health: Map<string, { health: PresenceHealth; at: string }>;
  /** Messages refused by a parser since start (bad JSON, wrong schema, bad signature). */
  invalid: number;
  /** Bumped on every change: the server pushes a snapshot when it moved. */
  version: number;
}

export function emptyModel(prefix: string, gateways?: GatewayTrust): ConsoleModel {
  return {
    fleet: emptyFleet(prefix, gateways),
    rollouts: new Map(),
    history: new Map(),
    logs: new Map(),
    lastSeen: new Map(),
    health: new Map(),
    invalid: 0,
    version: 0,
  };
}

/** Map insertion order as recency: touching a key moves it last; beyond `max` the first goes. */
function touch<V>(m: Map<string, V>, key: string, value: V, max: number): void {
  m.delete(key);
  m.set(key, value);
  if (m.size > max) {
    const first = m.keys().next().value;
    if (first !== undefined) m.delete(first);
  }
}

/** What a message did to the model. */
export type ModelChange = ApplyResult;

/** Folds one message into the model (mutating it). `now` stamps when a gateway was heard. */
export function applyToModel(
  m: ConsoleModel,
  topic: string,
  payload: Uint8Array,
  now: number,
): ModelChange {
  const t = parseTopic(m.fleet.prefix, topic);
  if (!t) return { kind: "ignored" };
  let r: ModelChange;
  if (t.kind === "rollout-state") r = applyRollout(m, t.id, payload);
  else if (t.kind === "log") r = applyLog(m, t.id, payload);
  else {
    const before = t.kind === "status" ? m.fleet.status.get(t.id) : undefined;
    r = applyMessage(m.fleet, topic, payload);
    if (r.kind === "applied") {
      if (t.kind === "presence" || t.kind === "inventory") m.lastSeen.set(t.id, now);
      if (t.kind === "presence") recordHealth(m, t.id);
      if (t.kind === "status") recordHistory(m, t.id, before?.seq);
    }
  }
  if (r.kind === "invalid") m.invalid++;
  if (r.kind === "applied") m.version++;
  return r;
}

function applyRollout(m: ConsoleModel, id: string, payload: Uint8Array): ModelChange {
  if (payload.byteLength === 0)
    return m.rollouts.delete(id) ? { kind: "applied" } : { kind: "ignored" };
  const p = parseRolloutState(payload);
  if (!p.ok) return { kind: "invalid", code: p.code, reason: p.reason };
  if (p.value.rolloutId !== id)
    return {
      kind: "invalid",
      code: "E_MQTT_MESSAGE_SCHEMA",
      reason: `rolloutId ${p.value.rolloutId} differs from the topic's ${id}`,
    };
  const prev = m.rollouts.get(id);
  // A heartbeat-only republish changes the owner's heartbeatAt, nothing the page shows but the
  // owner's liveness: still kept (the owner column reads it), not counted as a change.
  m.rollouts.set(id, p.value);
  if (m.rollouts.size > MAX_ROLLOUTS) {
    const oldest = [...m.rollouts.values()].sort((a, b) =>
      a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0,
    )[0];
    if (oldest) m.rollouts.delete(oldest.rolloutId);
  }
  return prev && prev.updatedAt === p.value.updatedAt ? { kind: "ignored" } : { kind: "applied" };
}

function applyLog(m: ConsoleModel, deviceId: string, payload: Uint8Array): ModelChange {
  if (payload.byteLength === 0) return { kind: "ignored" };
  const p = parseMessage("log", payload);
  if (!p.ok) return { kind: "invalid", code: p.code, reason: p.reason };
  if (p.value.deviceId !== deviceId)
    return {
      kind: "invalid",
      code: "E_MQTT_MESSAGE_SCHEMA",
      reason: `deviceId ${p.value.deviceId} differs from the topic's ${deviceId}`,
    };
  const lines = m.logs.get(deviceId) ?? [];
  for (const text of p.value.lines) lines.push({ at: p.value.at, text: quote(text, LOG_LINE_MAX) });
  if (p.value.dropped > 0)
    lines.push({ at: p.value.at, text: `(${p.value.dropped} line(s) dropped by the gateway)` });
  touch(m.logs, deviceId, lines.slice(-LOG_LINES_PER_DEVICE), MAX_TRACKED_DEVICES);
  return { kind: "applied" };
}

/** The health an `online` presence carries replaces the kept one; `offline` keeps it (stale). */
function recordHealth(m: ConsoleModel, gatewayId: string): void {
  const p = m.fleet.presence.get(gatewayId);
  if (p?.state === "online" && p.health)
    touch(m.health, gatewayId, { health: p.health, at: p.at }, MAX_TRACKED_GATEWAYS);
  // Cleared, or online without one (an agent from before `health`): the kept one is not its.
  else if (!p || p.state === "online") m.health.delete(gatewayId);
}

/** A new final status (one per release and notice) is one line of the device's history. */
function recordHistory(m: ConsoleModel, deviceId: string, prevSeq: number | undefined): void {
  const st = m.fleet.status.get(deviceId);
  if (!st || !isFinalState(st.state) || st.seq === prevSeq) return;
  const list = m.history.get(deviceId) ?? [];
  const at = st.finishedAt ?? st.updatedAt;
  const last = list.at(-1);
  // The same final status seen again (retained, after a reconnect) is not another update.
  if (last && last.at === at && last.state === st.state && last.releaseId === st.releaseId) return;
  list.push({
    state: st.state,
    at,
    ...(st.releaseId ? { releaseId: st.releaseId } : {}),
    ...(st.targetVersion ? { targetVersion: st.targetVersion } : {}),
    ...(st.rolloutId ? { rolloutId: st.rolloutId } : {}),
    ...(st.error ? { errorCode: st.error.code, errorMessage: quote(st.error.message, 300) } : {}),
  });
  touch(m.history, deviceId, list.slice(-HISTORY_PER_DEVICE), MAX_TRACKED_DEVICES);
}

// ---------------------------------------------------------------------------------------------
// What the page receives

export interface ErrorHelp {
  meaning: string;
  action: string;
}

/** docs/errors.md's entry for a code (the same table), or undefined for a code we do not know. */
export function errorHelp(code: string | undefined): ErrorHelp | undefined {
  if (code === undefined || !Object.hasOwn(ERROR_CODES, code)) return undefined;
  const e = (ERROR_CODES as Record<string, ErrorHelp>)[code]!;
  return { meaning: e.meaning, action: e.action };
}

export interface WaveCard {
  /** 1-based, as the CLI prints. */
  wave: number;
  percent: number;
  devices: number;
  counts: Record<Bucket, number>;
  startedAt?: string;
  finishedAt?: string;
}

export interface TimelineMark {
  at: string;
  kind: "started" | "wave" | "failure" | "paused" | "aborted" | "completed" | "now";
  label: string;
}

export interface RolloutCard {
  rolloutId: string;
  releaseId: string;
  version: string;
  state: RolloutState["state"];
  reason?: RolloutState["reason"];
  currentWave: number;
  devices: number;
  counts: Record<Bucket, number>;
  waves: WaveCard[];
  failureRate: {
    failed: number;
    finished: number;
    percent: number;
    max: number;
    minSample: number;
  };
  failures: {
    deviceId: string;
    state: string;
    errorCode?: string;
    at?: string;
    help?: ErrorHelp;
  }[];
  failuresTotal: number;
  owner?: { host: string; pid: number; live: boolean };
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
  waveTimeoutMs: number;
  timeline: TimelineMark[];
  /** Per action: undefined when it applies, else why not (machine.ts notApplicable). */
  actions: Partial<Record<ControlAction, string>>;
}

const maxIso = (a: string | undefined, b: string | undefined) =>
  a === undefined ? b : b === undefined ? a : a > b ? a : b;
const minIso = (a: string | undefined, b: string | undefined) =>
  a === undefined ? b : b === undefined ? a : a < b ? a : b;

export function rolloutCard(s: RolloutState, now: number): RolloutCard {
  const sum = summarize(s);
  const bucketOfId = new Map(sum.devices.map((d) => [d.deviceId, d.bucket]));
  const waves: WaveCard[] = s.waves.map((percent, i) => {
    const counts = Object.fromEntries(BUCKETS.map((b) => [b, 0])) as Record<Bucket, number>;
    let startedAt: string | undefined;
    let finishedAt: string | undefined;
    let open = false;
    const ids = waveDevices(s, i);
    for (const id of ids) {
      const e = s.perDevice[id]!;
      counts[bucketOfId.get(id)!]++;
      startedAt = minIso(startedAt, e.notifiedAt);
      if (e.state && isFinalState(e.state)) finishedAt = maxIso(finishedAt, e.finishedAt);
      else open = true;
    }
    return {
      wave: i + 1,
      percent,
      devices: ids.length,
      counts,
      ...(startedAt ? { startedAt } : {}),
      ...(!open && finishedAt && startedAt ? { finishedAt } : {}),
    };
  });
  const failuresAll = sum.failures.map((f) => {
    const e = s.perDevice[f.deviceId]!;
    const help = errorHelp(f.errorCode);
    return {
      deviceId: f.deviceId,
      state: f.state,
      ...(f.errorCode ? { errorCode: f.errorCode } : {}),
      ...(e.finishedAt ? { at: e.finishedAt } : {}),
      ...(help ? { help } : {}),
    };
  });
  const timeline: TimelineMark[] = [{ at: s.startedAt, kind: "started", label: "created" }];
  for (const w of waves)
    if (w.startedAt)
      timeline.push({ at: w.startedAt, kind: "wave", label: `wave ${w.wave} (${w.percent}%)` });
  for (const f of failuresAll.slice(0, 50))
    if (f.at)
      timeline.push({
        at: f.at,
        kind: "failure",
        label: `${f.deviceId} ${f.state}${f.errorCode ? ` ${f.errorCode}` : ""}`,
      });
  if (s.reason && s.state === "paused")
    timeline.push({ at: s.reason.at, kind: "paused", label: `paused: ${s.reason.kind}` });
  if (s.state === "aborted" && s.reason)
    timeline.push({ at: s.reason.at, kind: "aborted", label: `aborted: ${s.reason.kind}` });
  if (s.state === "completed" && s.finishedAt)
    timeline.push({ at: s.finishedAt, kind: "completed", label: "completed" });
  if (s.state === "running" || s.state === "paused")
    timeline.push({ at: new Date(now).toISOString(), kind: "now", label: "now" });
  timeline.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  const { failed, finished } = failureTally(s);
  const actions: Partial<Record<ControlAction, string>> = {};
  for (const a of CONTROL_ACTIONS) {
    const why = notApplicable(a, s);
    if (why) actions[a] = why;
  }
  return {
    rolloutId: s.rolloutId,
    releaseId: s.releaseId,
    version: s.version,
    state: s.state,
    ...(s.reason ? { reason: s.reason } : {}),
    currentWave: sum.currentWave,
    devices: s.devices.length,
    counts: sum.counts,
    waves,
    failureRate: {
      failed,
      finished,
      percent: sum.failureRate.percent,
      max: s.maxFailureRate,
      minSample: s.minSample,
    },
    failures: failuresAll.slice(0, FAILURES_SHOWN),
    failuresTotal: failuresAll.length,
    ...(s.owner
      ? { owner: { host: s.owner.host, pid: s.owner.pid, live: ownerLive(s, now) } }
      : {}),
    startedAt: s.startedAt,
    updatedAt: s.updatedAt,
    ...(s.finishedAt ? { finishedAt: s.finishedAt } : {}),
    waveTimeoutMs: s.waveTimeoutMs,
    timeline,
    actions,
  };
}

/** Per rollout its devices by bucket (what /metrics exports). */
export function summarizeForMetrics(
  m: ConsoleModel,
): { rolloutId: string; counts: Record<Bucket, number> }[] {
  return [...m.rollouts.values()].map((s) => {
    const counts = Object.fromEntries(BUCKETS.map((b) => [b, 0])) as Record<Bucket, number>;
    for (const id of s.devices) counts[bucketOf(s.perDevice[id]!)]++;
    return { rolloutId: s.rolloutId, counts };
  });
}

/**
 * The readiness badge of a gateway: `ready`; `degraded` (ready, but a port failed or conflicts,
 * or the event loop is slow); `not-ready` (its /readyz would say 503); `stale` (offline or
 * unknown now: the summary is the last one it sent while online).
 */
export type HealthBadge = "ready" | "degraded" | "not-ready" | "stale";

export interface GatewayHealthView extends PresenceHealth {
  badge: HealthBadge;
  /** Why the badge is not `ready`, in words made of the summary's numbers only. */
  problems: string[];
  /** The `at` of the presence that carried it. */
  at: string;
  /** docs/errors.md's entry for lastFailure's code. */
  lastFailureHelp?: ErrorHelp;
}

/** Pure: the badge and its reasons for one summary. `online`: the gateway's presence now. */
export function gatewayHealth(h: PresenceHealth, at: string, online: boolean): GatewayHealthView {
  const problems: string[] = [];
  if (!online) problems.push("offline: the last summary it sent while online");
  if (!h.ready) problems.push("not ready (broker, port scan or state directory)");
  if (h.devices.failed > 0) problems.push(`${h.devices.failed} port(s) failed to attach`);
  if (h.devices.conflict > 0) problems.push(`${h.devices.conflict} port(s) in conflict`);
  if (h.eventLoopDelayMs > EVENT_LOOP_DEGRADED_MS)
    problems.push(`event loop p99 ${h.eventLoopDelayMs} ms > ${EVENT_LOOP_DEGRADED_MS} ms`);
  const badge: HealthBadge = !online
    ? "stale"
    : !h.ready
      ? "not-ready"
      : problems.length > 0
        ? "degraded"
        : "ready";
  const help = errorHelp(h.lastFailure?.code);
  return { ...h, badge, problems, at, ...(help ? { lastFailureHelp: help } : {}) };
}

export interface ConsoleGateway extends GatewayRow {
  lastSeenAt?: string;
  /** The gateway's last health summary (docs/mqtt-api.md "presence"); absent from older agents. */
  health?: GatewayHealthView;
}

export interface ConsoleSnapshot {
  at: string;
  broker: { connected: boolean };
  rollouts: RolloutCard[];
  devices: ReturnType<typeof fleetView>["devices"];
  gateways: ConsoleGateway[];
  invalid: number;
}

export function snapshot(m: ConsoleModel, now: number, connected: boolean): ConsoleSnapshot {
  const v = fleetView(m.fleet, now);
  const rollouts = [...m.rollouts.values()]
    .sort((a, b) => (a.startedAt > b.startedAt ? -1 : a.startedAt < b.startedAt ? 1 : 0))
    .map((s) => rolloutCard(s, now));
  return {
    at: new Date(now).toISOString(),
    broker: { connected },
    rollouts,
    devices: v.devices,
    gateways: v.gateways.map((g) => {
      const seen = m.lastSeen.get(g.gatewayId);
      const h = m.health.get(g.gatewayId);
      return {
        ...g,
        ...(seen === undefined ? {} : { lastSeenAt: new Date(seen).toISOString() }),
        ...(h ? { health: gatewayHealth(h.health, h.at, g.state === "online") } : {}),
      };
    }),
    invalid: m.invalid,
  };
}

export interface DeviceDetail {
  deviceId: string;
  row?: ReturnType<typeof fleetView>["devices"][number];
  status?: {
    step?: string;
    targetSlot?: string;
    previousVersion?: string;
    error?: { code: string; message: string; step: string; help?: ErrorHelp };
    startedAt?: string;
    progress?: { bytes: number; total: number };
  };
  history: HistoryEntry[];
  logs: LogLine[];
  inventory?: { gatewayId: string; port: string; chip: string; attachedAt: string; busy: boolean };
}

export function deviceDetail(m: ConsoleModel, deviceId: string, now: number): DeviceDetail {
  const row = fleetView(m.fleet, now, { deviceId }).devices[0];
  const st = m.fleet.status.get(deviceId);
  const ev = m.fleet.progress.get(deviceId);
  let inventory: DeviceDetail["inventory"];
  for (const inv of m.fleet.inventory.values()) {
    const d = inv.devices.find((x) => x.deviceId === deviceId);
    if (d)
      inventory = {
        gatewayId: inv.gatewayId,
        port: d.port,
        chip: d.chip,
        attachedAt: d.attachedAt,
        busy: d.busy,
      };
  }
  const progress =
    ev && st && ev.releaseId === st.releaseId
      ? { bytes: ev.bytes, total: ev.total }
      : st?.progress
        ? { ...st.progress }
        : undefined;
  return {
    deviceId,
    ...(row ? { row } : {}),
    ...(st
      ? {
          status: {
            ...(st.step ? { step: st.step } : {}),
            ...(st.targetSlot ? { targetSlot: st.targetSlot.label } : {}),
            ...(st.previousVersion ? { previousVersion: st.previousVersion } : {}),
            ...(st.error
              ? {
                  error: {
                    code: st.error.code,
                    message: quote(st.error.message, 500),
                    step: st.error.step,
                    ...(errorHelp(st.error.code) ? { help: errorHelp(st.error.code)! } : {}),
                  },
                }
              : {}),
            ...(st.startedAt ? { startedAt: st.startedAt } : {}),
            ...(progress ? { progress } : {}),
          },
        }
      : {}),
    history: [...(m.history.get(deviceId) ?? [])].reverse(),
    logs: m.logs.get(deviceId) ?? [],
    ...(inventory ? { inventory } : {}),
  };
}
