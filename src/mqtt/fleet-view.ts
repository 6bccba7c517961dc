/**
 * The fleet as the broker sees it, for `esp-ota status` (docs/mqtt-api.md): the retained presence,
 * inventory, status and desired messages (plus live progress events) folded into one state, and
 * the rows, table, JSON and change lines drawn from it. Pure: the command feeds it messages and
 * the clock; nothing here touches the network or the terminal.
 */

import { printable } from "../text.js";
import {
  type DeviceState,
  type DeviceStatus,
  type Inventory,
  isFinalState,
  type Parsed,
  type Presence,
  type ProgressEvent,
  parseMessage,
  type UpdateNotice,
} from "./messages.js";
import { checkStatus, type GatewayTrust } from "./status-auth.js";
import { parseTopic } from "./topics.js";

export interface FleetState {
  readonly prefix: string;
  /** When set, a status counts only if signed by the gateway it names (status-auth.ts). */
  readonly gateways?: GatewayTrust;
  readonly presence: Map<string, Presence>;
  readonly inventory: Map<string, Inventory>;
  readonly status: Map<string, DeviceStatus>;
  readonly desired: Map<string, UpdateNotice>;
  readonly progress: Map<string, ProgressEvent>;
}

export function emptyFleet(prefix: string, gateways?: GatewayTrust): FleetState {
  return {
    prefix,
    ...(gateways ? { gateways } : {}),
    presence: new Map(),
    inventory: new Map(),
    status: new Map(),
    desired: new Map(),
    progress: new Map(),
  };
}

export type ApplyResult =
  | { kind: "applied" }
  /** Not one of the topics the view shows, or a duplicate / older status. */
  | { kind: "ignored" }
  | { kind: "invalid"; code: string; reason: string };

const APPLIED: ApplyResult = { kind: "applied" };
const IGNORED: ApplyResult = { kind: "ignored" };

function invalid(p: Parsed<unknown> & { ok: false }): ApplyResult {
  return { kind: "invalid", code: p.code, reason: p.reason };
}
function mismatch(field: string, value: string, id: string): ApplyResult {
  return {
    kind: "invalid",
    code: "E_MQTT_MESSAGE_SCHEMA",
    reason: `${field} ${value} differs from the topic's ${id}`,
  };
}

/**
 * Folds one message into `state` (mutating it). An empty payload clears a retained topic. A
 * status whose seq is not above the last one from the same gateway is a duplicate or out of
 * order (docs/mqtt-api.md "status never goes backwards") and is ignored.
 */
export function applyMessage(state: FleetState, topic: string, payload: Uint8Array): ApplyResult {
  const t = parseTopic(state.prefix, topic);
  if (!t) return IGNORED;
  const cleared = payload.byteLength === 0;
  switch (t.kind) {
    case "presence": {
      if (cleared) return state.presence.delete(t.id) ? APPLIED : IGNORED;
      const p = parseMessage("presence", payload);
      if (!p.ok) return invalid(p);
      if (p.value.gatewayId !== t.id) return mismatch("gatewayId", p.value.gatewayId, t.id);
      state.presence.set(t.id, p.value);
      return APPLIED;
    }
    case "inventory": {
      if (cleared) return state.inventory.delete(t.id) ? APPLIED : IGNORED;
      const p = parseMessage("inventory", payload);
      if (!p.ok) return invalid(p);
      if (p.value.gatewayId !== t.id) return mismatch("gatewayId", p.value.gatewayId, t.id);
      state.inventory.set(t.id, p.value);
      return APPLIED;
    }
    case "status": {
      if (cleared) return state.status.delete(t.id) ? APPLIED : IGNORED;
      const p = parseMessage("status", payload);
      if (!p.ok) return invalid(p);
      if (p.value.deviceId !== t.id) return mismatch("deviceId", p.value.deviceId, t.id);
      if (state.gateways) {
        const auth = checkStatus(p.value, state.gateways);
        if (!auth.ok) return { kind: "invalid", code: auth.code, reason: auth.reason };
      }
      const prev = state.status.get(t.id);
      if (prev && prev.gatewayId === p.value.gatewayId && p.value.seq <= prev.seq) return IGNORED;
      state.status.set(t.id, p.value);
      return APPLIED;
    }
    case "desired": {
      if (cleared) return state.desired.delete(t.id) ? APPLIED : IGNORED;
      const p = parseMessage("notice", payload);
      if (!p.ok) return invalid(p);
      if (p.value.deviceId !== t.id) return mismatch("deviceId", p.value.deviceId, t.id);
      state.desired.set(t.id, p.value);
      return APPLIED;
    }
    case "progress": {
      if (cleared) return IGNORED;
      const p = parseMessage("progress", payload);
      if (!p.ok) return invalid(p);
      if (p.value.deviceId !== t.id) return mismatch("deviceId", p.value.deviceId, t.id);
      state.progress.set(t.id, p.value);
      return APPLIED;
    }
    default:
      return IGNORED;
  }
}

export interface GatewayRow {
  gatewayId: string;
  /** unknown: an inventory but no presence message. */
  state: "online" | "offline" | "unknown";
  version?: string;
  /** Devices in its inventory; undefined without an inventory. */
  devices?: number;
  /** When the presence was published. */
  since?: string;
  ageMs?: number;
}

export interface DeviceRow {
  deviceId: string;
  gatewayId?: string;
  /** The gateway's presence; undefined when it has none. */
  gatewayOnline?: boolean;
  /** unknown: only a desired update names the device; no gateway reported it. */
  state: DeviceState | "unknown";
  step?: string;
  releaseId?: string;
  targetVersion?: string;
  /** The release of the desired update, when there is one. */
  desiredReleaseId?: string;
  /** Percent of the current step (download or transfer), 0..100, while an update is in flight. */
  progress?: number;
  runningVersion?: string;
  runningSlot?: string;
  errorCode?: string;
  updatedAt?: string;
  ageMs?: number;
}

export interface FleetView {
  gateways: GatewayRow[];
  devices: DeviceRow[];
}

const byId = <T>(m: Map<string, T>) => [...m.keys()].sort();

function age(at: string | undefined, now: number): number | undefined {
  if (at === undefined) return undefined;
  const t = Date.parse(at);
  return Number.isNaN(t) ? undefined : Math.max(0, now - t);
}

function percent(bytes: number, total: number): number | undefined {
  return total > 0 ? Math.min(100, Math.floor((bytes * 100) / total)) : undefined;
}

/** Drops undefined fields, so rows compare and print the same however they were built. */
function compact<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function deviceRow(s: FleetState, deviceId: string, now: number): DeviceRow {
  const status = s.status.get(deviceId);
  const desired = s.desired.get(deviceId);
  // The gateway whose newest inventory lists the device: a device moved to another gateway
  // shows there even while its old status is still retained.
  let attached: { gw: Inventory; running?: DeviceStatus["running"] } | undefined;
  for (const inv of s.inventory.values()) {
    const d = inv.devices.find((x) => x.deviceId === deviceId);
    if (d && (!attached || Date.parse(inv.at) > Date.parse(attached.gw.at))) {
      attached = { gw: inv, ...(d.running ? { running: d.running } : {}) };
    }
  }
  const gatewayId = attached?.gw.gatewayId ?? status?.gatewayId;
  const presence = gatewayId !== undefined ? s.presence.get(gatewayId) : undefined;
  const state: DeviceRow["state"] = status?.state ?? (attached ? "idle" : "unknown");
  const running = status?.running ?? attached?.running;

  let progress: number | undefined;
  if (status && state !== "idle" && state !== "offline" && !isFinalState(state)) {
    const ev = s.progress.get(deviceId);
    if (
      ev &&
      ev.releaseId === status.releaseId &&
      Date.parse(ev.at) >= Date.parse(status.updatedAt)
    ) {
      progress = percent(ev.bytes, ev.total);
    } else if (status.progress) {
      progress = percent(status.progress.bytes, status.progress.total);
    }
  }
  const updatedAt = status?.updatedAt ?? attached?.gw.at ?? desired?.issuedAt;
  return compact({
    deviceId,
    gatewayId,
    gatewayOnline: presence ? presence.state === "online" : undefined,
    state,
    step: status?.step,
    releaseId: status?.releaseId,
    targetVersion: status?.targetVersion,
    desiredReleaseId: desired?.releaseId,
    progress,
    runningVersion: running?.version,
    runningSlot: running?.slot,
    errorCode: status?.error?.code,
    updatedAt,
    ageMs: age(updatedAt, now),
  });
}

function gatewayRow(s: FleetState, gatewayId: string, now: number): GatewayRow {
  const p = s.presence.get(gatewayId);
  const inv = s.inventory.get(gatewayId);
  return compact({
    gatewayId,
    state: p?.state ?? "unknown",
    version: p?.version,
    devices: inv?.devices.length,
    since: p?.at,
    ageMs: age(p?.at, now),
  });
}

/**
 * The rows, sorted by id. With `deviceId`, only that device and its gateway (no rows at all when
 * the broker knows nothing of it).
 */
export function fleetView(s: FleetState, now: number, o: { deviceId?: string } = {}): FleetView {
  const deviceIds = new Set([...byId(s.status), ...byId(s.desired)]);
  for (const inv of s.inventory.values()) for (const d of inv.devices) deviceIds.add(d.deviceId);
  let devices = [...deviceIds].sort().map((id) => deviceRow(s, id, now));
  const gatewayIds = [...new Set([...byId(s.presence), ...byId(s.inventory)])].sort();
  let gateways = gatewayIds.map((id) => gatewayRow(s, id, now));
  if (o.deviceId !== undefined) {
    devices = devices.filter((d) => d.deviceId === o.deviceId);
    const gw = devices[0]?.gatewayId;
    gateways = gateways.filter((g) => g.gatewayId === gw);
  }
  return { gateways, devices };
}

/** 42s, 5m, 3h, 2d: enough to tell a live device from a stale retained status. */
export function formatAge(ms: number | undefined): string {
  if (ms === undefined) return "-";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

function table(header: string[], textRows: string[][]): string[] {
  // Every cell but the header came from the network (a device's own app descriptor can carry
  // escape sequences, issue 12 defect 8): escaped before the widths are measured.
  const rows = textRows.map((r) => r.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

const dash = (v: string | number | undefined) => (v === undefined ? "-" : String(v));

function gatewayCell(d: DeviceRow): string {
  if (d.gatewayId === undefined) return "-";
  return d.gatewayOnline === false ? `${d.gatewayId} (offline)` : d.gatewayId;
}

/** The plain text tables: gateways, then devices. */
export function renderTable(v: FleetView): string[] {
  const out: string[] = [];
  if (v.gateways.length === 0) out.push("no gateways");
  else {
    out.push(
      ...table(
        ["GATEWAY", "PRESENCE", "DEVICES", "VERSION", "SINCE"],
        v.gateways.map((g) => [
          g.gatewayId,
          g.state,
          dash(g.devices),
          dash(g.version),
          formatAge(g.ageMs),
        ]),
      ),
    );
  }
  out.push("");
  if (v.devices.length === 0) out.push("no devices");
  else {
    out.push(
      ...table(
        [
          "DEVICE",
          "GATEWAY",
          "STATE",
          "RELEASE",
          "VERSION",
          "PROGRESS",
          "RUNNING",
          "SLOT",
          "ERROR",
          "DESIRED",
          "AGE",
        ],
        v.devices.map((d) => [
          d.deviceId,
          gatewayCell(d),
          d.state,
          dash(d.releaseId),
          dash(d.targetVersion),
          d.progress === undefined ? "-" : `${d.progress}%`,
          dash(d.runningVersion),
          dash(d.runningSlot),
          dash(d.errorCode),
          dash(d.desiredReleaseId),
          formatAge(d.ageMs),
        ]),
      ),
    );
  }
  return out;
}

/** One line for a changed device, for --watch without a terminal. */
export function deviceLine(d: DeviceRow): string {
  const parts = [`device ${d.deviceId} ${d.state}`];
  if (d.step !== undefined && !isFinalState(d.state)) parts.push(`step ${d.step}`);
  if (d.releaseId !== undefined)
    parts.push(`release ${d.releaseId}${d.targetVersion ? ` (${d.targetVersion})` : ""}`);
  if (d.progress !== undefined) parts.push(`${d.progress}%`);
  if (d.errorCode !== undefined) parts.push(`error ${d.errorCode}`);
  if (d.runningVersion !== undefined)
    parts.push(`running ${d.runningVersion}${d.runningSlot ? ` from ${d.runningSlot}` : ""}`);
  if (d.desiredReleaseId !== undefined && d.desiredReleaseId !== d.releaseId)
    parts.push(`desired ${d.desiredReleaseId}`);
  if (d.gatewayId !== undefined) parts.push(`on ${gatewayCell(d)}`);
  return printable(parts.join(", "));
}

/** One line for a changed gateway. */
export function gatewayLine(g: GatewayRow): string {
  const parts = [`gateway ${g.gatewayId} ${g.state}`];
  if (g.devices !== undefined) parts.push(`${g.devices} device${g.devices === 1 ? "" : "s"}`);
  if (g.version !== undefined) parts.push(`agent ${g.version}`);
  return printable(parts.join(", "));
}

export type FleetChange =
  | { kind: "gateway"; row: GatewayRow; removed?: true }
  | { kind: "device"; row: DeviceRow; removed?: true };

/** Rows that differ between two views (age aside), gateways first; removed rows flagged. */
export function diffViews(before: FleetView, after: FleetView): FleetChange[] {
  const key = (r: object) => JSON.stringify({ ...r, ageMs: undefined });
  const changes: FleetChange[] = [];
  const diff = <R extends { ageMs?: number }>(
    a: R[],
    b: R[],
    id: (r: R) => string,
    make: (row: R, removed?: true) => FleetChange,
  ) => {
    const old = new Map(a.map((r) => [id(r), r]));
    for (const r of b) {
      const o = old.get(id(r));
      old.delete(id(r));
      if (!o || key(o) !== key(r)) changes.push(make(r));
    }
    for (const r of old.values()) changes.push(make(r, true));
  };
  diff(
    before.gateways,
    after.gateways,
    (g) => g.gatewayId,
    (row, removed) => (removed ? { kind: "gateway", row, removed } : { kind: "gateway", row }),
  );
  diff(
    before.devices,
    after.devices,
    (d) => d.deviceId,
    (row, removed) => (removed ? { kind: "device", row, removed } : { kind: "device", row }),
  );
  return changes;
}

/** The text line of a change (--watch without a terminal). */
export function changeLine(c: FleetChange): string {
  if (c.removed)
    return printable(
      `${c.kind} ${c.kind === "gateway" ? c.row.gatewayId : c.row.deviceId} removed`,
    );
  return c.kind === "gateway" ? gatewayLine(c.row) : deviceLine(c.row);
}
