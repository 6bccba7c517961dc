/**
 * The messages of the MQTT API (docs/mqtt-api.md): JSON on the wire, every one with `format: 1`.
 * The TypeBox schemas below are the single source: parseMessage checks them, encodeMessage
 * refuses what they refuse, docs/schemas/mqtt-<kind>.schema.json is generated from them
 * (`npm run docs:schemas`), and the interfaces fail to compile if they drift from them.
 *
 * Readers ignore fields they do not know (no additionalProperties: false): a gateway and the tools
 * talking to it are upgraded at different times, and a field added within format 1 must not make
 * an older reader drop the message. A change old readers cannot ignore bumps `format`.
 *
 * Pure: no I/O.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { type Static, type TSchema, Type } from "@sinclair/typebox";
import canonicalizeModule from "canonicalize";
import { firstSchemaError } from "../schema.js";
import { quote } from "../text.js";

// canonicalize is CommonJS (`module.exports = serialize`); see src/release/manifest.ts.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined;

export const MESSAGE_FORMAT = 1;

/**
 * Largest payload parseMessage decodes. The largest message is an inventory of many devices
 * (about 300 bytes each); 256 KiB is far above what a gateway sends and bounds a reader's work on
 * a hostile payload. AWS IoT Core refuses payloads over 128 KB (docs/mqtt-api.md).
 */
export const MAX_MESSAGE_BYTES = 256 * 1024;

const U32 = 0xffff_ffff;
const TOPIC_ID = "^[A-Za-z0-9._-]{1,64}$";
// The manifest's release id (src/release/manifest.ts).
const RELEASE_ID = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
// RFC 3339 in UTC, as Date.prototype.toISOString writes it (milliseconds optional).
const TIMESTAMP = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]{1,3})?Z$";
const ERROR_CODE = "^E_[A-Z0-9_]{1,62}$";

const Timestamp = (description: string) => Type.String({ pattern: TIMESTAMP, description });
const TopicId = (description: string) => Type.String({ pattern: TOPIC_ID, description });
const Count = (description: string) =>
  Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description });
const Text = (maxLength: number, description: string) => Type.String({ maxLength, description });
const Format = Type.Literal(MESSAGE_FORMAT, { description: "Message format version." });

export type UpdateState =
  | "queued"
  | "fetching-manifest"
  | "verifying-manifest"
  | "reading-device"
  | "downloading"
  | "transferring"
  | "verifying-device"
  | "activating"
  | "rebooting"
  | "awaiting-confirm"
  | "succeeded"
  | "rolled-back"
  | "failed"
  | "cancelled";
/** idle: attached, nothing in flight; offline: unplugged. */
export type DeviceState = "idle" | "offline" | UpdateState;

/** In the order an update passes them (the order "status never goes backwards" refers to). */
export const UPDATE_STATES: readonly UpdateState[] = Object.freeze([
  "queued",
  "fetching-manifest",
  "verifying-manifest",
  "reading-device",
  "downloading",
  "transferring",
  "verifying-device",
  "activating",
  "rebooting",
  "awaiting-confirm",
  "succeeded",
  "rolled-back",
  "failed",
  "cancelled",
] as const);
/** Each release ends in exactly one of these per device. */
export const FINAL_STATES: readonly UpdateState[] = Object.freeze([
  "succeeded",
  "rolled-back",
  "failed",
  "cancelled",
] as const);
const DEVICE_STATES: readonly DeviceState[] = ["idle", "offline", ...UPDATE_STATES];

export function isFinalState(s: string): boolean {
  return (FINAL_STATES as readonly string[]).includes(s);
}

const UpdateNoticeSchema = Type.Object(
  {
    format: Format,
    deviceId: TopicId("The device to update; equals the <deviceId> level of the topic."),
    releaseId: Type.String({ pattern: RELEASE_ID, description: "The release to install." }),
    counter: Count(
      "The manifest's release counter. A hint for ordering and display: the signed manifest's counter decides.",
    ),
    manifestUrls: Type.Array(Type.String({ pattern: "^https?://[!-~]+$", maxLength: 2048 }), {
      minItems: 1,
      maxItems: 8,
      description:
        "Where the device's signed manifest is, mirrors tried in order. http is allowed: the manifest is signed.",
    }),
    rolloutId: Type.Optional(TopicId("The rollout that published the notice, if any.")),
    issuedAt: Timestamp("When the notice was published."),
  },
  { description: "The desired update of one device." },
);

const RunningAppSchema = Type.Object(
  {
    project: Text(32, "esp_app_desc_t.project_name of the running app."),
    version: Text(32, "esp_app_desc_t.version of the running app."),
    secureVersion: Type.Integer({
      minimum: 0,
      maximum: U32,
      description: "esp_app_desc_t.secure_version of the running app.",
    }),
    slot: Text(16, "Label of the partition the app runs from (ota_0, factory, ...)."),
    offset: Type.Integer({ minimum: 0, maximum: U32, description: "Flash offset of that slot." }),
    state: Text(32, "The slot's otadata state (VALID, PENDING_VERIFY, UNDEFINED, ...)."),
  },
  { description: "The app the device runs, from its UART INFO." },
);

const OtadataEntrySchema = Type.Object(
  {
    seq: Type.Union([Type.Integer({ minimum: 0, maximum: U32 }), Type.Null()], {
      description: "ota_seq of the entry; null when the sector is erased.",
    }),
    state: Text(
      32,
      "ota_state of the entry (NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, EMPTY).",
    ),
  },
  { description: "One of the two otadata sectors." },
);
const Otadata = Type.Array(OtadataEntrySchema, {
  maxItems: 2,
  description: "Both otadata sectors as the device reads them.",
});
const Step = Text(
  64,
  "The agent step name: parseNotice, fetchManifest, verifyManifest, readDevice, selectSlot, download, transfer, verifyOnDevice, activate, reboot, awaitConfirm, report.",
);

const DeviceStatusSchema = Type.Object(
  {
    format: Format,
    deviceId: TopicId("The device; equals the <deviceId> level of the topic."),
    gatewayId: TopicId("The gateway the device is attached to."),
    seq: Count(
      "Per device, strictly increasing across every status the gateway publishes (it survives restarts). A reader ignores a status whose seq is not above the last it saw.",
    ),
    state: Type.Union(
      DEVICE_STATES.map((s) => Type.Literal(s)),
      { description: "idle, offline, or the state of the update in flight or just ended." },
    ),
    step: Type.Optional(Step),
    releaseId: Type.Optional(Type.String({ pattern: RELEASE_ID })),
    counter: Type.Optional(Count("The verified manifest's counter.")),
    rolloutId: Type.Optional(TopicId("The rollout of the notice, if any.")),
    noticeDigest: Type.Optional(
      Type.String({
        pattern: "^[0-9a-f]{64}$",
        description:
          "noticeDigest() of the update notice this status answers (the job's notice): a rollout counts a status only when it echoes the digest of the notice the rollout itself published (docs/rollouts.md). Absent from agents before it, and when nothing is in flight.",
      }),
    ),
    targetVersion: Type.Optional(Text(32, "Version of the app being installed.")),
    targetSlot: Type.Optional(
      Type.Object({
        label: Text(16, "Partition label of the slot being written."),
        offset: Type.Integer({ minimum: 0, maximum: U32 }),
      }),
    ),
    progress: Type.Optional(
      Type.Object({
        bytes: Count("Bytes done in the current step."),
        total: Count("Bytes of the current step."),
      }),
    ),
    running: Type.Optional(RunningAppSchema),
    previousVersion: Type.Optional(Text(32, "The version that ran before the update.")),
    otadata: Type.Optional(Otadata),
    error: Type.Optional(
      Type.Object({
        code: Type.String({ pattern: ERROR_CODE, description: "A code of docs/errors.md." }),
        message: Text(4096, "For people; never parsed."),
        step: Step,
      }),
    ),
    startedAt: Type.Optional(Timestamp("When the gateway started working on the release.")),
    finishedAt: Type.Optional(Timestamp("When the release reached its final state.")),
    updatedAt: Timestamp("When this status was published."),
    sig: Type.Optional(
      Type.Object(
        {
          keyId: Type.String({
            pattern: "^[0-9a-f]{32}$",
            description: "The gateway's status-signing key (`esp-ota agent key`).",
          }),
          signature: Type.String({
            maxLength: 200,
            description:
              "Base64 signature over the RFC 8785 canonical JSON of the status without `sig` (src/mqtt/status-auth.ts).",
          }),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { description: "What a gateway last reported about one device." },
);

const ProgressEventSchema = Type.Object(
  {
    format: Format,
    deviceId: TopicId("The device."),
    releaseId: Type.String({ pattern: RELEASE_ID }),
    step: Step,
    bytes: Count("Bytes done in the step."),
    total: Count("Bytes of the step."),
    at: Timestamp("When."),
  },
  { description: "Byte progress of a download or transfer (at most a few per second)." },
);

const LogEventSchema = Type.Object(
  {
    format: Format,
    deviceId: TopicId("The device."),
    lines: Type.Array(Text(4096, "One console line, without its line end."), {
      // The gateway config's largest log.deviceLinesPerSec, flushed once a second.
      maxItems: 10_000,
      description: "Console lines of the device since the previous event.",
    }),
    dropped: Count("Lines dropped by the gateway's rate limit since the previous event."),
    at: Timestamp("When."),
  },
  { description: "A batch of the device's console output." },
);

const PresenceHealthSchema = Type.Object(
  {
    ready: Type.Boolean({
      description:
        "What the agent's /readyz says: connected to the broker, ports scanned, state directory writable.",
    }),
    devices: Type.Object(
      {
        attached: Count("Ports serving a device with no update running."),
        updating: Count("Ports with an update running."),
        identifying: Count("Ports being identified."),
        failed: Count("Ports whose attach failed, waiting to retry."),
        conflict: Count("Ports reporting a device another port serves."),
      },
      { description: "Ports by state (docs/metrics.md, esp_ota_agent_ports)." },
    ),
    updates: Type.Object(
      {
        started: Count("Updates started since the agent started."),
        succeeded: Count("Of those, succeeded."),
        failed: Count("Failed."),
        rolledBack: Count("Rolled back by the device."),
        cancelled: Count("Cancelled or superseded."),
      },
      { description: "Since the agent started (its counters restart with it)." },
    ),
    lastFailure: Type.Optional(
      Type.Object(
        {
          code: Type.String({ pattern: ERROR_CODE, description: "A code of docs/errors.md." }),
          at: Timestamp("When."),
        },
        { description: "The last update that ended failed or rolled back." },
      ),
    ),
    uartFrameErrors: Count("UART frame errors of every kind (CRC, gap, timeout)."),
    mqttReconnects: Count("Broker reconnections since the agent started."),
    stagingBytes: Count("Bytes in the staging directory."),
    eventLoopDelayMs: Count(
      "The event loop's p99 delay (ms) over the last minute or so: a stalled loop breaks UART timing first.",
    ),
    uptimeSec: Count("Seconds since the agent started."),
  },
  {
    description:
      "A compact health summary for gateways nobody can scrape (behind NAT): the counters of docs/metrics.md in brief. Only in `online` presence; refreshed every minute.",
  },
);

const PresenceSchema = Type.Object(
  {
    format: Format,
    gatewayId: TopicId("The gateway; equals the <gatewayId> level of the topic."),
    state: Type.Union([Type.Literal("online"), Type.Literal("offline")]),
    version: Text(64, "The gateway agent's version."),
    at: Timestamp(
      "When the gateway wrote it. The last will is written at connect time, so its `at` is older than the `online` of the same connection: order presence by `seq`, never by `at`.",
    ),
    seq: Type.Optional(
      Count(
        "Orders one gateway's presence messages: each connection's `online` is below its `offline` (the last will and the clean stop's), which is below the next connection's `online` (issue 12 defect 16). Absent from agents before it.",
      ),
    ),
    health: Type.Optional(PresenceHealthSchema),
  },
  { description: "Whether a gateway is connected; retained, and the gateway's last will." },
);

/** The most devices one gateway serves (and its inventory lists): see InventorySchema. */
export const MAX_INVENTORY_DEVICES = 256;

const InventoryDeviceSchema = Type.Object({
  deviceId: TopicId("The device (its base MAC in hex unless configured)."),
  port: Text(256, "The serial port it is attached to."),
  chip: Text(32, "esptool chip name."),
  running: Type.Optional(RunningAppSchema),
  otadata: Otadata,
  busy: Type.Boolean({ description: "An update is in flight." }),
  attachedAt: Timestamp("When the gateway attached it."),
});

const InventorySchema = Type.Object(
  {
    format: Format,
    gatewayId: TopicId("The gateway; equals the <gatewayId> level of the topic."),
    devices: Type.Array(InventoryDeviceSchema, {
      // 256 devices × ~300 bytes stays below AWS IoT Core's 128 KB payload limit.
      maxItems: MAX_INVENTORY_DEVICES,
      description: "Every device attached now.",
    }),
    conflicts: Type.Optional(
      Type.Array(
        Type.Object({
          deviceId: TopicId("The device id both ports report."),
          port: Text(256, "The port refused: it reports a device another port serves."),
          heldBy: Text(256, "The port that serves the device."),
          code: Type.Literal("E_AGENT_DEVICE_CONFLICT"),
        }),
        {
          maxItems: MAX_INVENTORY_DEVICES,
          description:
            "Ports that report the MAC of a device another port serves (a cloned MAC, an impostor, or a device moved before its old port was seen to go): not attached; when either port goes, the other is identified again.",
        },
      ),
    ),
    at: Timestamp("When."),
  },
  { description: "The devices attached to a gateway; republished on every attach and detach." },
);

const COMMAND_NAMES = ["info", "cancel", "retry", "reboot"] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];
const CommandNameSchema = Type.Union(
  COMMAND_NAMES.map((c) => Type.Literal(c)),
  { description: "info: gateway or device details; cancel / retry / reboot: of one device." },
);
const CorrelationId = Type.String({
  minLength: 1,
  maxLength: 128,
  description: "Echoed in the response (MQTT 3.1.1 fallback of the correlation data property).",
});

const CommandRequestSchema = Type.Object(
  {
    format: Format,
    command: CommandNameSchema,
    deviceId: Type.Optional(TopicId("The device the command is for (all but a gateway info).")),
    replyTo: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 1024,
        pattern: "^[^+#\\u0000]+$",
        description:
          "MQTT 3.1.1 fallback of the response topic property: where to publish the response.",
      }),
    ),
    correlationId: Type.Optional(CorrelationId),
  },
  { description: "A command to a gateway." },
);

const CommandResponseSchema = Type.Object(
  {
    format: Format,
    gatewayId: TopicId("The gateway that answers."),
    command: CommandNameSchema,
    ok: Type.Boolean(),
    result: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: "The command's result." }),
    ),
    error: Type.Optional(
      Type.Object({
        code: Type.String({ pattern: ERROR_CODE, description: "A code of docs/errors.md." }),
        message: Text(4096, "For people; never parsed."),
      }),
    ),
    correlationId: Type.Optional(CorrelationId),
  },
  { description: "A gateway's answer to a CommandRequest." },
);

export interface UpdateNotice {
  format: 1;
  deviceId: string;
  releaseId: string;
  /** The manifest's release counter (a hint; the signed manifest's counter decides). */
  counter: number;
  /** Where the signed manifest is (mirrors, tried in order): 1..8 http(s) URLs. */
  manifestUrls: string[];
  rolloutId?: string;
  /** ISO 8601 */
  issuedAt: string;
}
/**
 * What names a notice in the statuses that answer it (DeviceStatus.noticeDigest): SHA-256, hex,
 * of the RFC 8785 canonical JSON of the notice without `issuedAt`. Anyone who may publish on a
 * desired topic can make a gateway run a notice of the same release that fails (a URL that
 * 404s) and sign a genuine `failed`; the digest lets a rollout tell that outcome from the one of
 * its own notice (issue 12 defect 4). `issuedAt` is left out because it says when, not what: a
 * rollout republishes the same notice with a new `issuedAt` after a crash between publishing
 * and recording it, and a gateway running the first treats the second as a duplicate
 * (docs/mqtt-api.md "Notice semantics"), so its statuses must still match.
 */
export function noticeDigest(notice: UpdateNotice): string {
  const { issuedAt: _, ...what } = notice;
  const text = canonicalize(what);
  if (text === undefined) throw new TypeError("noticeDigest: the notice is not JSON");
  return bytesToHex(sha256(new TextEncoder().encode(text)));
}

/**
 * The fields by which every status about a notice names it: its release, counter, rollout and
 * digest. The job's statuses carry them, and so must a final status that refuses a notice (its
 * code says why): a rollout matches statuses to its notices by these (docs/rollouts.md).
 */
export function noticeEcho(
  notice: UpdateNotice,
): Pick<DeviceStatus, "releaseId" | "counter" | "rolloutId" | "noticeDigest"> {
  return {
    releaseId: notice.releaseId,
    counter: notice.counter,
    ...(notice.rolloutId === undefined ? {} : { rolloutId: notice.rolloutId }),
    noticeDigest: noticeDigest(notice),
  };
}
export interface RunningApp {
  project: string;
  version: string;
  secureVersion: number;
  slot: string;
  offset: number;
  state: string;
}
export interface OtadataEntry {
  seq: number | null;
  state: string;
}
export interface DeviceStatus {
  format: 1;
  deviceId: string;
  gatewayId: string;
  /** Per device, strictly increasing across every status the gateway publishes (survives restarts). */
  seq: number;
  state: DeviceState;
  /** The agent step name (parseNotice, fetchManifest, ..., report). */
  step?: string;
  releaseId?: string;
  counter?: number;
  rolloutId?: string;
  /** noticeDigest() of the notice this status answers; absent from agents before it. */
  noticeDigest?: string;
  targetVersion?: string;
  targetSlot?: { label: string; offset: number };
  progress?: { bytes: number; total: number };
  running?: RunningApp;
  previousVersion?: string;
  otadata?: OtadataEntry[];
  error?: { code: string; message: string; step: string };
  startedAt?: string;
  finishedAt?: string;
  updatedAt: string;
  /** The gateway's signature (src/mqtt/status-auth.ts); absent from agents before it. */
  sig?: { keyId: string; signature: string };
}
export interface ProgressEvent {
  format: 1;
  deviceId: string;
  releaseId: string;
  step: string;
  bytes: number;
  total: number;
  at: string;
}
export interface LogEvent {
  format: 1;
  deviceId: string;
  lines: string[];
  dropped: number;
  at: string;
}
export interface PresenceHealth {
  ready: boolean;
  devices: {
    attached: number;
    updating: number;
    identifying: number;
    failed: number;
    conflict: number;
  };
  updates: {
    started: number;
    succeeded: number;
    failed: number;
    rolledBack: number;
    cancelled: number;
  };
  lastFailure?: { code: string; at: string };
  uartFrameErrors: number;
  mqttReconnects: number;
  stagingBytes: number;
  eventLoopDelayMs: number;
  uptimeSec: number;
}
export interface Presence {
  format: 1;
  gatewayId: string;
  state: "online" | "offline";
  version: string;
  at: string;
  seq?: number;
  health?: PresenceHealth;
}
export interface InventoryDevice {
  deviceId: string;
  port: string;
  chip: string;
  running?: RunningApp;
  otadata: OtadataEntry[];
  /** An update is in flight. */
  busy: boolean;
  attachedAt: string;
}
export interface InventoryConflict {
  deviceId: string;
  port: string;
  heldBy: string;
  code: "E_AGENT_DEVICE_CONFLICT";
}
export interface Inventory {
  format: 1;
  gatewayId: string;
  devices: InventoryDevice[];
  conflicts?: InventoryConflict[];
  at: string;
}
export interface CommandRequest {
  format: 1;
  command: CommandName;
  deviceId?: string;
  /** MQTT 3.1.1 fallback: where to reply and the id to echo (MQTT 5 uses the responseTopic / correlationData properties). */
  replyTo?: string;
  correlationId?: string;
}
export interface CommandResponse {
  format: 1;
  gatewayId: string;
  command: CommandName;
  ok: boolean;
  result?: Record<string, unknown>;
  error?: { code: string; message: string };
  correlationId?: string;
}

// The interfaces above are what callers write; these lines fail to compile if they and the
// schemas (what parseMessage and docs/schemas check) drift apart.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _matches: [
  Same<UpdateNotice, Static<typeof UpdateNoticeSchema>>,
  Same<RunningApp, Static<typeof RunningAppSchema>>,
  Same<OtadataEntry, Static<typeof OtadataEntrySchema>>,
  Same<DeviceStatus, Static<typeof DeviceStatusSchema>>,
  Same<ProgressEvent, Static<typeof ProgressEventSchema>>,
  Same<LogEvent, Static<typeof LogEventSchema>>,
  Same<Presence, Static<typeof PresenceSchema>>,
  Same<PresenceHealth, Static<typeof PresenceHealthSchema>>,
  Same<InventoryDevice, Static<typeof InventoryDeviceSchema>>,
  Same<Inventory, Static<typeof InventorySchema>>,
  Same<CommandRequest, Static<typeof CommandRequestSchema>>,
  Same<CommandResponse, Static<typeof CommandResponseSchema>>,
] = [true, true, true, true, true, true, true, true, true, true, true, true];
void _matches;

export type MessageKind =
  | "notice"
  | "status"
  | "progress"
  | "log"
  | "presence"
  | "inventory"
  | "command"
  | "response";
export interface MessageTypes {
  notice: UpdateNotice;
  status: DeviceStatus;
  progress: ProgressEvent;
  log: LogEvent;
  presence: Presence;
  inventory: Inventory;
  command: CommandRequest;
  response: CommandResponse;
}

const SCHEMAS: Readonly<Record<MessageKind, TSchema>> = {
  notice: UpdateNoticeSchema,
  status: DeviceStatusSchema,
  progress: ProgressEventSchema,
  log: LogEventSchema,
  presence: PresenceSchema,
  inventory: InventorySchema,
  command: CommandRequestSchema,
  response: CommandResponseSchema,
};

/** Every kind, in the order of docs/mqtt-api.md. */
export const MESSAGE_KINDS: readonly MessageKind[] = Object.freeze(
  Object.keys(SCHEMAS) as MessageKind[],
);

const TITLES: Readonly<Record<MessageKind, string>> = {
  notice: "UpdateNotice",
  status: "DeviceStatus",
  progress: "ProgressEvent",
  log: "LogEvent",
  presence: "Presence",
  inventory: "Inventory",
  command: "CommandRequest",
  response: "CommandResponse",
};

export type Parsed<T> =
  | { ok: true; value: T }
  | { ok: false; code: "E_MQTT_MESSAGE_JSON" | "E_MQTT_MESSAGE_SCHEMA"; reason: string };

function checkKind(kind: unknown, fn: string): asserts kind is MessageKind {
  if (typeof kind !== "string" || !Object.hasOwn(SCHEMAS, kind)) {
    throw new TypeError(`${fn}: unknown message kind ${JSON.stringify(kind)}`);
  }
}

function schemaProblem(kind: MessageKind, value: unknown): string | undefined {
  const first = firstSchemaError(SCHEMAS[kind], value);
  return first ? `${TITLES[kind]}${first.path.replaceAll("/", ".")}: ${first.message}` : undefined;
}

/**
 * Why `entry` would not fit an inventory (a device's INFO the gateway republishes), or undefined:
 * the gateway checks a device's INFO with it once, where it enters (src/gateway/port-state.ts).
 */
export function inventoryDeviceProblem(entry: InventoryDevice): string | undefined {
  const first = firstSchemaError(InventoryDeviceSchema, entry);
  return first ? `InventoryDevice${first.path.replaceAll("/", ".")}: ${first.message}` : undefined;
}

/** Decodes UTF-8 JSON (max 256 KiB) and checks the schema. Never throws on bad input. */
export function parseMessage<K extends MessageKind>(
  kind: K,
  payload: Uint8Array | string,
): Parsed<MessageTypes[K]> {
  checkKind(kind, "parseMessage");
  const size =
    typeof payload === "string"
      ? payload.length
      : payload instanceof Uint8Array
        ? payload.byteLength
        : -1;
  if (size < 0) {
    return { ok: false, code: "E_MQTT_MESSAGE_JSON", reason: "the payload is not bytes or text" };
  }
  // A string's UTF-8 form is at least as long as its UTF-16 length, so this bound holds for both.
  if (size > MAX_MESSAGE_BYTES) {
    return {
      ok: false,
      code: "E_MQTT_MESSAGE_JSON",
      reason: `${size} bytes is more than the ${MAX_MESSAGE_BYTES} a message may have`,
    };
  }
  let value: unknown;
  try {
    const text =
      typeof payload === "string"
        ? payload
        : new TextDecoder("utf-8", { fatal: true }).decode(payload);
    value = JSON.parse(text);
  } catch (e) {
    // V8's message quotes part of the payload: quoted again, so it is bounded and printable.
    return {
      ok: false,
      code: "E_MQTT_MESSAGE_JSON",
      reason: `not JSON: ${quote((e as Error).message, 200)}`,
    };
  }
  const problem = schemaProblem(kind, value);
  if (problem) return { ok: false, code: "E_MQTT_MESSAGE_SCHEMA", reason: problem };
  return { ok: true, value: value as MessageTypes[K] };
}

/** JSON bytes; throws TypeError if `value` does not satisfy the schema (we never publish what we could not parse). */
export function encodeMessage<K extends MessageKind>(kind: K, value: MessageTypes[K]): Uint8Array {
  checkKind(kind, "encodeMessage");
  const problem = schemaProblem(kind, value);
  if (problem) throw new TypeError(`encodeMessage: ${problem}`);
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  if (bytes.byteLength > MAX_MESSAGE_BYTES) {
    throw new TypeError(
      `encodeMessage: a ${TITLES[kind]} of ${bytes.byteLength} bytes is more than the ${MAX_MESSAGE_BYTES} readers accept`,
    );
  }
  return bytes;
}

/** JSON Schemas (draft 2020-12) for docs/schemas/mqtt-<kind>.schema.json. */
export function mqttJsonSchemas(): Record<MessageKind, object> {
  const out = {} as Record<MessageKind, object>;
  for (const kind of MESSAGE_KINDS) {
    // The JSON round trip drops TypeBox's symbol-keyed metadata.
    const plain = JSON.parse(JSON.stringify(SCHEMAS[kind])) as Record<string, unknown>;
    out[kind] = {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      $id: `urn:esp-ota-gateway:schema:mqtt-${kind}:1`,
      title: `esp-ota MQTT ${TITLES[kind]}`,
      ...plain,
      description: `${plain.description as string} Generated from src/mqtt/messages.ts by \`npm run docs:schemas\`; see docs/mqtt-api.md.`,
    };
  }
  return out;
}
