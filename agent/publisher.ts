/**
 * Everything the agent publishes (docs/mqtt-api.md), apart from scheduling and commands (issue
 * 12 "The agent's shape"): presence, inventory, status, progress and device log lines, with
 * their rate limits. Every method here is safe to call without awaiting: none of them rejects
 * (a publish that fails is logged; the broker connection's own queue retries QoS 1 publishes
 * after a reconnect), and none throws into its caller because a message did not encode: a
 * status that does not fit the schema is replaced by a bounded one with the same code (issue
 * 12 defect 1: one too-long status message used to make every later attach() fail).
 *
 * The decisions are pure functions (nextStatus, boundedStatus, presenceSeqs): tested alone.
 */
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { type ErrorCode, isEspOtaError } from "../src/errors.js";
import { type DeviceLedger, statusMayFollow } from "../src/gateway/ledger.js";
import {
  type DeviceState,
  type DeviceStatus,
  encodeMessage,
  type InventoryConflict,
  type InventoryDevice,
  MAX_INVENTORY_DEVICES,
  noticeEcho,
  type PresenceHealth,
} from "../src/mqtt/messages.js";
import { signStatus } from "../src/mqtt/status-auth.js";
import type { Topics } from "../src/mqtt/topics.js";
import type { ManifestSigningKey } from "../src/release/keyring.js";
import { VERSION } from "../src/version.js";

/** Progress events: at most one per device per this many ms (status carries the rest). */
export const PROGRESS_EVERY_MS = 500;
/**
 * The retained status's `progress.bytes`: refreshed at most this often during a download or a
 * transfer (issue 12 defect 16: it stayed 0 through a transfer). Each refresh is a signed
 * status and a ledger write, so not at the progress events' rate.
 */
export const STATUS_PROGRESS_EVERY_MS = 5000;
/** A status error message is cut to this (the schema allows 4096; the cause is in the log). */
export const STATUS_MESSAGE_MAX = 1024;

// ---- pure decisions -----------------------------------------------------------------------------

export interface NextStatusInput {
  ledger: DeviceLedger;
  state: DeviceState;
  extra?: Partial<DeviceStatus>;
  gatewayId: string;
  now: Date;
  /** What the device's INFO says (deviceFields), for a status with no job in flight. */
  device?: Partial<DeviceStatus>;
}

/**
 * The device's next status (seq + 1), or undefined when it would go backwards within a run
 * (docs/mqtt-api.md, "Status never goes backwards"). Not signed: the agent signs what it saves.
 */
export function nextStatus(i: NextStatusInput): DeviceStatus | undefined {
  const l = i.ledger;
  const job = l.job;
  const now = i.now.toISOString();
  const prev = l.lastStatus;
  const carried: Partial<DeviceStatus> = job
    ? {
        // releaseId, counter, rolloutId and the notice's digest: a rollout counts only the
        // outcomes of its own notices (docs/rollouts.md "Which statuses count").
        ...noticeEcho(job.notice),
        ...(job.targetVersion ? { targetVersion: job.targetVersion } : {}),
        ...(job.variant
          ? { targetSlot: { label: job.variant.slot, offset: job.variant.offset } }
          : {}),
        ...(job.previous ? { previousVersion: job.previous.version } : {}),
        startedAt: job.startedAt,
        ...(prev?.releaseId === job.notice.releaseId && prev.running
          ? { running: prev.running }
          : {}),
        ...(prev?.releaseId === job.notice.releaseId && prev.otadata
          ? { otadata: prev.otadata }
          : {}),
      }
    : (i.device ?? {});
  const st: DeviceStatus = {
    format: 1,
    deviceId: l.deviceId,
    gatewayId: i.gatewayId,
    state: i.state,
    ...carried,
    ...i.extra,
    seq: l.seq + 1,
    updatedAt: now,
  };
  if (job && (i.state === "idle" || i.state === "offline")) {
    delete st.releaseId;
    delete st.noticeDigest;
  }
  return statusMayFollow(prev, st) ? st : undefined;
}

const cutText = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * `st` if it encodes; else the same status with its error message cut, and failing that, a
 * status of only the fields that name it (ids, seq, state, release, times) and its error code.
 * Never throws for a status built by nextStatus.
 */
export function boundedStatus(st: DeviceStatus): { status: DeviceStatus; replaced: boolean } {
  if (encodes(st)) return { status: st, replaced: false };
  const { sig: _, ...unsigned } = st;
  if (unsigned.error) {
    const cut: DeviceStatus = {
      ...unsigned,
      error: { ...unsigned.error, message: cutText(unsigned.error.message, STATUS_MESSAGE_MAX) },
    };
    if (encodes(cut)) return { status: cut, replaced: true };
  }
  const keep = <K extends keyof DeviceStatus>(k: K): Partial<DeviceStatus> =>
    unsigned[k as keyof typeof unsigned] !== undefined
      ? { [k]: unsigned[k as keyof typeof unsigned] }
      : {};
  const minimal: DeviceStatus = {
    format: 1,
    deviceId: unsigned.deviceId,
    gatewayId: unsigned.gatewayId,
    seq: unsigned.seq,
    state: unsigned.state,
    updatedAt: unsigned.updatedAt,
    ...keep("releaseId"),
    ...keep("counter"),
    ...keep("rolloutId"),
    ...keep("noticeDigest"),
    ...keep("startedAt"),
    ...keep("finishedAt"),
    ...(unsigned.error
      ? {
          error: {
            code: unsigned.error.code,
            message: "the status did not fit the message schema; the gateway's log has the cause",
            step: cutText(unsigned.error.step, 64),
          },
        }
      : {}),
  };
  // Every field kept is one a valid status had; a broken id would have failed long before.
  return { status: minimal, replaced: true };
}

function encodes(st: DeviceStatus): boolean {
  try {
    encodeMessage("status", st);
    return true;
  } catch {
    return false;
  }
}

/**
 * Presence seqs for a new connection (issue 12 defect 16: the last will's `at` is its connect
 * time, older than the `online` published after it): `online` of the connection, then its
 * `offline` (the last will and a clean stop's), above every seq of earlier connections. From
 * the clock, twice its milliseconds, so they also increase across restarts.
 */
export function presenceSeqs(nowMs: number, last: number): { online: number; offline: number } {
  const online = Math.max(last + 1, Math.floor(nowMs) * 2);
  return { online, offline: online + 1 };
}

// ---- the publisher ------------------------------------------------------------------------------

export interface PublisherOptions {
  client: () => MqttClient | undefined;
  topics: Topics;
  gatewayId: string;
  /** Signs statuses that had to be replaced by a bounded form. */
  statusKey: ManifestSigningKey;
  log: Logger;
  now: () => Date;
  deviceLines: boolean;
  deviceLinesPerSec: number;
  /** The health summary an `online` presence carries (docs/mqtt-api.md "presence"). */
  health?: () => PresenceHealth;
}

interface LogBucket {
  tokens: number;
  at: number;
  lines: string[];
  dropped: number;
}

export class Publisher {
  private presence = { online: 0, offline: 0 };
  private readonly lastProgress = new Map<string, number>();
  private readonly lastStatusProgress = new Map<string, number>();
  private readonly buckets = new Map<string, LogBucket>();

  constructor(private readonly o: PublisherOptions) {}

  private publish(topic: string, payload: Uint8Array, qos: 0 | 1, retain: boolean): Promise<void> {
    const c = this.o.client();
    if (!c) return Promise.resolve();
    return c.publishAsync(topic, Buffer.from(payload), { qos, retain }).then(
      () => undefined,
      (e: unknown) => this.o.log.warn({ topic, err: String(e) }, "publish failed"),
    );
  }

  // ---- presence

  private presenceMessage(state: "online" | "offline", seq: number): Uint8Array {
    const base = {
      format: 1 as const,
      gatewayId: this.o.gatewayId,
      state,
      version: VERSION,
      at: this.o.now().toISOString(),
      seq,
    };
    // Only `online` carries it: a will is written at connect time, when there is nothing to say.
    if (state === "online" && this.o.health) {
      try {
        return encodeMessage("presence", { ...base, health: this.o.health() });
      } catch (e) {
        // A summary that does not encode is a bug; the presence itself must still go out.
        this.o.log.error({ code: "E_INTERNAL", err: String(e).slice(0, 300) }, "presence health");
      }
    }
    return encodeMessage("presence", base);
  }

  /**
   * The last will of the connection about to be made (connectMqtt calls it for every CONNECT):
   * starts that connection's presence seqs.
   */
  willForNextConnection(): Uint8Array {
    this.presence = presenceSeqs(this.o.now().getTime(), this.presence.offline);
    return this.presenceMessage("offline", this.presence.offline);
  }

  online(): Promise<void> {
    return this.publish(
      this.o.topics.presence(this.o.gatewayId),
      this.presenceMessage("online", this.presence.online),
      1,
      true,
    );
  }

  /** A clean stop's offline: the same seq as the connection's will, which it stands for. */
  offline(): Promise<void> {
    return this.publish(
      this.o.topics.presence(this.o.gatewayId),
      this.presenceMessage("offline", this.presence.offline),
      1,
      true,
    );
  }

  // ---- inventory

  inventory(devices: InventoryDevice[], conflicts: InventoryConflict[]): Promise<void> {
    let payload: Uint8Array;
    try {
      payload = encodeMessage("inventory", {
        format: 1,
        gatewayId: this.o.gatewayId,
        // Attach refuses the 257th device (E_AGENT_TOO_MANY_DEVICES); the cap here is the
        // backstop that keeps the message valid whatever happens.
        devices: devices.slice(0, MAX_INVENTORY_DEVICES),
        ...(conflicts.length > 0 ? { conflicts: conflicts.slice(0, MAX_INVENTORY_DEVICES) } : {}),
        at: this.o.now().toISOString(),
      });
    } catch (e) {
      // Every entry was checked at attach (checkDeviceInfo); this is a bug, not a device.
      this.o.log.error(
        { code: "E_INTERNAL", err: String(e).slice(0, 500) },
        "inventory not published",
      );
      return Promise.resolve();
    }
    return this.publish(this.o.topics.inventory(this.o.gatewayId), payload, 1, true);
  }

  // ---- status

  /**
   * Publishes a signed status (retained, QoS 1). One that does not encode is replaced by its
   * bounded form, re-signed, with the same seq (nobody saw the original: it never left).
   * Resolves to what was published.
   */
  async status(signed: DeviceStatus): Promise<DeviceStatus> {
    let st = signed;
    const b = boundedStatus(signed);
    if (b.replaced) {
      st = signStatus(b.status, this.o.statusKey);
      this.o.log.warn(
        { deviceId: signed.deviceId, seq: signed.seq, code: signed.error?.code },
        "status too large for the schema: published in a bounded form",
      );
    }
    let payload: Uint8Array;
    try {
      payload = encodeMessage("status", st);
    } catch (e) {
      this.o.log.error(
        { deviceId: signed.deviceId, err: String(e).slice(0, 500) },
        "status not published",
      );
      return st;
    }
    await this.publish(this.o.topics.status(st.deviceId), payload, 1, true);
    return st;
  }

  // ---- progress

  /** A progress event (QoS 0, at most one per PROGRESS_EVERY_MS per device, and the last). */
  progress(deviceId: string, releaseId: string, step: string, bytes: number, total: number): void {
    const now = Date.now();
    if (now - (this.lastProgress.get(deviceId) ?? 0) < PROGRESS_EVERY_MS && bytes < total) return;
    this.lastProgress.set(deviceId, now);
    let ev: Uint8Array;
    try {
      ev = encodeMessage("progress", {
        format: 1,
        deviceId,
        releaseId,
        step,
        bytes,
        total,
        at: this.o.now().toISOString(),
      });
    } catch {
      return;
    }
    void this.publish(this.o.topics.progress(deviceId), ev, 0, false);
  }

  /** Whether the retained status's progress is due a refresh now (STATUS_PROGRESS_EVERY_MS). */
  statusProgressDue(deviceId: string, bytes: number, total: number): boolean {
    const now = Date.now();
    const last = this.lastStatusProgress.get(deviceId);
    if (last === undefined) {
      // The step's own status (bytes 0) was just published: the first refresh waits a period.
      this.lastStatusProgress.set(deviceId, now);
      return false;
    }
    if (now - last < STATUS_PROGRESS_EVERY_MS || bytes >= total || bytes === 0) return false;
    this.lastStatusProgress.set(deviceId, now);
    return true;
  }

  /** The device's step ended or it left: forget its rate-limit state. */
  forget(deviceId: string): void {
    this.lastProgress.delete(deviceId);
    this.lastStatusProgress.delete(deviceId);
    this.flushDevice(deviceId);
    this.buckets.delete(deviceId);
  }

  resetStatusProgress(deviceId: string): void {
    this.lastStatusProgress.delete(deviceId);
  }

  // ---- device log lines

  /** A device console line: forwarded in batches, at most deviceLinesPerSec (token bucket). */
  deviceLine(deviceId: string, line: string): void {
    this.o.log.debug({ deviceId, device: line }, "device log");
    if (!this.o.deviceLines) return;
    const rate = this.o.deviceLinesPerSec;
    const now = Date.now();
    let b = this.buckets.get(deviceId);
    if (!b) {
      b = { tokens: rate, at: now, lines: [], dropped: 0 };
      this.buckets.set(deviceId, b);
    }
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.lines.push(line.length > 4096 ? line.slice(0, 4096) : line);
    } else b.dropped++;
  }

  flushLogs(): void {
    for (const id of this.buckets.keys()) this.flushDevice(id);
  }

  private flushDevice(deviceId: string): void {
    const b = this.buckets.get(deviceId);
    if (!b || (b.lines.length === 0 && b.dropped === 0)) return;
    let ev: Uint8Array;
    try {
      ev = encodeMessage("log", {
        format: 1,
        deviceId,
        lines: b.lines.splice(0),
        dropped: b.dropped,
        at: this.o.now().toISOString(),
      });
    } catch {
      b.lines.length = 0;
      return;
    } finally {
      b.dropped = 0;
    }
    void this.publish(this.o.topics.log(deviceId), ev, 0, false);
  }
}

/** A code from a caught value: an EspOtaError's, else E_INTERNAL. */
export function codeOf(e: unknown): ErrorCode {
  return isEspOtaError(e) ? e.code : "E_INTERNAL";
}
