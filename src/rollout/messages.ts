/**
 * The rollout's two messages (docs/rollouts.md, docs/mqtt-api.md):
 *
 * - RolloutState, retained at `<prefix>/rollouts/<id>/state`: the whole rollout (plan, per-device
 *   progress, owner heartbeat). It is the rollout's only durable copy, so any operator machine can
 *   read it, take over, or apply a pause/abort itself when the owner is gone.
 * - RolloutControl, at `<prefix>/rollouts/<id>/control` (not retained): pause, resume, abort,
 *   retry-failed or next-wave, for the operator process that owns the rollout.
 *
 * TypeBox schemas, JSON on the wire, `format: 1`, as in src/mqtt/messages.ts. Pure: no I/O.
 */
import { type Static, Type } from "@sinclair/typebox";
import type { DeviceState, Parsed } from "../mqtt/messages.js";
import { UPDATE_STATES } from "../mqtt/messages.js";
import { firstSchemaError } from "../schema.js";
import { quote } from "../text.js";

export const ROLLOUT_FORMAT = 1;

/**
 * Largest state document we decode. The state holds one entry per device (about 200 bytes), so
 * 8 MiB is some 40 000 devices; Mosquitto's default message_size_limit is far above this, and
 * aedes has no limit by default.
 */
export const MAX_STATE_BYTES = 8 * 1024 * 1024;
/** A control message is a few dozen bytes; anything near this is not one. */
export const MAX_CONTROL_BYTES = 16 * 1024;

const TOPIC_ID = "^[A-Za-z0-9._-]{1,64}$";
const TIMESTAMP = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]{1,3})?Z$";
const Timestamp = (description: string) => Type.String({ pattern: TIMESTAMP, description });

export const ROLLOUT_PHASES = ["running", "paused", "aborted", "completed"] as const;
export type RolloutPhase = (typeof ROLLOUT_PHASES)[number];

/** Why a rollout is paused or aborted. */
export const REASON_KINDS = [
  "operator-pause",
  "operator-abort",
  "wave-timeout",
  "failure-rate",
] as const;
export type ReasonKind = (typeof REASON_KINDS)[number];

const DEVICE_STATES = ["idle", "offline", ...UPDATE_STATES] as const;

const ReasonSchema = Type.Object(
  {
    kind: Type.Union(
      REASON_KINDS.map((k) => Type.Literal(k)),
      { description: "What paused or aborted the rollout." },
    ),
    message: Type.String({ maxLength: 4096, description: "For people; never parsed." }),
    at: Timestamp("When it happened."),
  },
  { additionalProperties: false },
);

const DeviceEntrySchema = Type.Object(
  {
    wave: Type.Integer({ minimum: 0, description: "Index of the wave (into `waves`) it is in." }),
    counter: Type.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      description:
        "The device's manifest counter (from the release index), copied into its notice: the state carries all a notice needs, so a machine without the release directory can continue the rollout.",
    }),
    state: Type.Optional(
      Type.Union(
        DEVICE_STATES.map((s) => Type.Literal(s)),
        {
          description:
            "The last state the device reported for this rollout's notice (DeviceStatus.noticeDigest; another notice's succeeded or rolled-back counts too: docs/rollouts.md \"Which statuses count\"). A final state (succeeded, rolled-back, failed, cancelled) is never replaced: the gateway sends one final status per notice.",
        },
      ),
    ),
    seq: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          "Highest DeviceStatus.seq seen for the device (any release); a status with a seq not above it is a duplicate or out of order, and ignored.",
      }),
    ),
    errorCode: Type.Optional(
      Type.String({ maxLength: 64, description: "DeviceStatus.error.code of the final status." }),
    ),
    notifiedAt: Type.Optional(Timestamp("When its update notice was published (once).")),
    startedAt: Type.Optional(
      Timestamp(
        "When it first reported a state past `queued` for this release: from then on an abort leaves it to finish.",
      ),
    ),
    finishedAt: Type.Optional(Timestamp("When its final status for this release arrived.")),
    clearedAt: Type.Optional(
      Timestamp(
        "When an abort withdrew its notice (empty retained payload) because it had not started.",
      ),
    ),
  },
  { additionalProperties: false },
);

const OwnerSchema = Type.Object(
  {
    host: Type.String({ maxLength: 255 }),
    pid: Type.Integer({ minimum: 0 }),
    heartbeatAt: Timestamp("Refreshed every heartbeatMs while the process runs the rollout."),
    heartbeatMs: Type.Integer({
      minimum: 1,
      description:
        "The owner's heartbeat period. Other machines treat the owner as gone after 3 periods without a heartbeat.",
    }),
  },
  { additionalProperties: false },
);

const RolloutStateSchema = Type.Object(
  {
    format: Type.Literal(ROLLOUT_FORMAT),
    rolloutId: Type.String({ pattern: TOPIC_ID, description: "The rollout's topic level." }),
    releaseId: Type.String({
      pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
      description: "The release being rolled out (index.json releaseId).",
    }),
    version: Type.String({ pattern: "^[ -~]{1,31}$", description: "The release's app version." }),
    releaseDir: Type.Optional(
      Type.String({
        maxLength: 4096,
        description: "Where the operator built the release (informative only).",
      }),
    ),
    manifestBaseUrl: Type.String({
      pattern: "^https?://[!-~]+$",
      maxLength: 2048,
      description:
        "The release directory's published URL; a device's manifest is `<manifestBaseUrl>/<deviceId>/manifest.json`.",
    }),
    devices: Type.Array(Type.String({ pattern: TOPIC_ID }), {
      minItems: 1,
      uniqueItems: true,
      description: "The devices in rollout order: wave k takes the next slice of this list.",
    }),
    waves: Type.Array(Type.Number({ exclusiveMinimum: 0, maximum: 100 }), {
      minItems: 1,
      maxItems: 100,
      description:
        "Cumulative percentages of `devices`, strictly increasing, the last 100. Wave k ends at ceil(waves[k] × n / 100) devices (at least 1).",
    }),
    maxFailureRate: Type.Number({
      minimum: 0,
      maximum: 100,
      description:
        "Percent. The rollout aborts when (failed + rolled-back) / finished × 100 exceeds it.",
    }),
    minSample: Type.Integer({
      minimum: 1,
      description: "The failure rate is judged once at least this many devices have finished.",
    }),
    waveTimeoutMs: Type.Integer({
      minimum: 1,
      description:
        "A wave not finished this long after it started (or was resumed) pauses the rollout.",
    }),
    state: Type.Union(
      ROLLOUT_PHASES.map((p) => Type.Literal(p)),
      { description: "running | paused | aborted | completed (the last two are final)." },
    ),
    currentWave: Type.Integer({
      minimum: -1,
      description: "Index of the wave in progress; -1 before the first notice is published.",
    }),
    waveStartedAt: Type.Optional(
      Timestamp("When the current wave started or was last resumed: its timeout counts from here."),
    ),
    perDevice: Type.Record(Type.String({ pattern: TOPIC_ID }), DeviceEntrySchema, {
      description: "One entry per id of `devices`.",
    }),
    reason: Type.Optional(ReasonSchema),
    startedAt: Timestamp("When the rollout was created."),
    updatedAt: Timestamp("The last change of anything but the heartbeat."),
    finishedAt: Type.Optional(Timestamp("When it completed or aborted.")),
    owner: Type.Optional(OwnerSchema),
  },
  { additionalProperties: false },
);

/** What an operator can ask of a rollout (the control message's `action`; machine.ts inputs). */
export const CONTROL_ACTIONS = ["pause", "resume", "abort", "retry-failed", "next-wave"] as const;
export type ControlAction = (typeof CONTROL_ACTIONS)[number];

const RolloutControlSchema = Type.Object(
  {
    format: Type.Literal(ROLLOUT_FORMAT),
    action: Type.Union(
      CONTROL_ACTIONS.map((a) => Type.Literal(a)),
      {
        description:
          "retry-failed: notify the failed devices again; next-wave: start the next wave now (docs/rollouts.md).",
      },
    ),
    reason: Type.Optional(Type.String({ maxLength: 1024, description: "Recorded in the state." })),
    at: Timestamp("When the operator sent it."),
  },
  { additionalProperties: false },
);

export interface RolloutReason {
  kind: ReasonKind;
  message: string;
  at: string;
}

export interface DeviceEntry {
  wave: number;
  counter: number;
  state?: DeviceState;
  seq?: number;
  errorCode?: string;
  notifiedAt?: string;
  startedAt?: string;
  finishedAt?: string;
  clearedAt?: string;
}

export interface RolloutOwner {
  host: string;
  pid: number;
  heartbeatAt: string;
  heartbeatMs: number;
}

export interface RolloutState {
  format: 1;
  rolloutId: string;
  releaseId: string;
  version: string;
  releaseDir?: string;
  manifestBaseUrl: string;
  devices: string[];
  waves: number[];
  maxFailureRate: number;
  minSample: number;
  waveTimeoutMs: number;
  state: RolloutPhase;
  currentWave: number;
  waveStartedAt?: string;
  perDevice: Record<string, DeviceEntry>;
  reason?: RolloutReason;
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
  owner?: RolloutOwner;
}

export interface RolloutControl {
  format: 1;
  action: ControlAction;
  reason?: string;
  at: string;
}

// The interfaces are what callers write; these fail to compile if they and the schemas drift.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _state: Same<RolloutState, Static<typeof RolloutStateSchema>> = true;
const _control: Same<RolloutControl, Static<typeof RolloutControlSchema>> = true;
void _state;
void _control;

function decodeJson(payload: Uint8Array | string, max: number): Parsed<unknown> {
  const size = typeof payload === "string" ? payload.length : payload.byteLength;
  if (size > max)
    return { ok: false, code: "E_MQTT_MESSAGE_JSON", reason: `larger than ${max} bytes` };
  try {
    const text =
      typeof payload === "string"
        ? payload
        : new TextDecoder("utf-8", { fatal: true }).decode(payload);
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    // V8's message quotes the payload: cut and escaped like every untrusted text (src/text.ts).
    return { ok: false, code: "E_MQTT_MESSAGE_JSON", reason: quote((e as Error).message, 200) };
  }
}

function schemaProblem(
  schema: typeof RolloutStateSchema | typeof RolloutControlSchema,
  v: unknown,
) {
  const first = firstSchemaError(schema, v);
  return first ? `${first.path || "/"}: ${first.message}` : undefined;
}

/** What the schema cannot say: the parts of a state that must agree with each other. */
export function stateInconsistency(s: RolloutState): string | undefined {
  const ids = Object.keys(s.perDevice);
  if (ids.length !== s.devices.length || s.devices.some((d) => !Object.hasOwn(s.perDevice, d)))
    return "perDevice must have exactly one entry per id of devices";
  for (let i = 0; i < s.waves.length; i++) {
    if (i > 0 && !(s.waves[i]! > s.waves[i - 1]!)) return "waves must be strictly increasing";
  }
  if (s.waves.at(-1) !== 100) return "the last wave must be 100 (%)";
  if (s.currentWave >= s.waves.length) return "currentWave is past the last wave";
  for (const [id, d] of Object.entries(s.perDevice)) {
    if (d.wave >= s.waves.length) return `perDevice.${id}.wave is past the last wave`;
  }
  return undefined;
}

/** Decodes a retained rollout state. Never throws on bad input. */
export function parseRolloutState(payload: Uint8Array | string): Parsed<RolloutState> {
  const j = decodeJson(payload, MAX_STATE_BYTES);
  if (!j.ok) return j;
  const bad = schemaProblem(RolloutStateSchema, j.value);
  if (bad) return { ok: false, code: "E_MQTT_MESSAGE_SCHEMA", reason: bad };
  const s = j.value as RolloutState;
  const inconsistent = stateInconsistency(s);
  if (inconsistent) return { ok: false, code: "E_MQTT_MESSAGE_SCHEMA", reason: inconsistent };
  return { ok: true, value: s };
}

/** JSON bytes; throws TypeError for a state that would not parse (we never publish one). */
export function encodeRolloutState(s: RolloutState): Uint8Array {
  const bad = schemaProblem(RolloutStateSchema, s) ?? stateInconsistency(s);
  if (bad) throw new TypeError(`encodeRolloutState: ${bad}`);
  return new TextEncoder().encode(JSON.stringify(s));
}

export function parseRolloutControl(payload: Uint8Array | string): Parsed<RolloutControl> {
  const j = decodeJson(payload, MAX_CONTROL_BYTES);
  if (!j.ok) return j;
  const bad = schemaProblem(RolloutControlSchema, j.value);
  if (bad) return { ok: false, code: "E_MQTT_MESSAGE_SCHEMA", reason: bad };
  return { ok: true, value: j.value as RolloutControl };
}

export function encodeRolloutControl(c: RolloutControl): Uint8Array {
  const bad = schemaProblem(RolloutControlSchema, c);
  if (bad) throw new TypeError(`encodeRolloutControl: ${bad}`);
  return new TextEncoder().encode(JSON.stringify(c));
}

function withHeader(schema: object, id: string, title: string, description: string): object {
  const plain = JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: `urn:esp-ota-gateway:schema:${id}:1`,
    title,
    description: `${description} Generated from src/rollout/messages.ts by \`npm run docs:schemas\`; see docs/rollouts.md.`,
    ...plain,
  };
}

/** JSON Schemas (draft 2020-12) for docs/schemas/rollout-state.schema.json and rollout-control. */
export function rolloutJsonSchemas(): { "rollout-state": object; "rollout-control": object } {
  return {
    "rollout-state": withHeader(
      RolloutStateSchema,
      "rollout-state",
      "esp-ota rollout state",
      "Retained at <prefix>/rollouts/<id>/state: a rollout's plan, per-device progress and owner heartbeat.",
    ),
    "rollout-control": withHeader(
      RolloutControlSchema,
      "rollout-control",
      "esp-ota rollout control",
      "Published (not retained) to <prefix>/rollouts/<id>/control: pause, resume, abort, retry the failed devices of, or advance to the next wave a rollout.",
    ),
  };
}

/** Heartbeats an owner may miss before other machines treat it as gone. */
export const STALE_HEARTBEATS = 3;

/**
 * The caller's direct look at the owner process, where it can take one (the CLI: a process on
 * this host, by signal 0): false when it is certainly gone, undefined when it cannot tell.
 */
export type OwnerProbe = (owner: RolloutOwner) => boolean | undefined;

/**
 * Why the state's owner is gone (for the message that says so), or undefined while it is live:
 * its heartbeat is fresh (clocks in NTP sync) and `probe` does not say the process is gone.
 * The probe is what makes a crashed owner on this host visible at once rather than after
 * STALE_HEARTBEATS periods (issue 13 item 11); it can only shorten the wait, never make a stale
 * heartbeat live (a pid may have been reused).
 */
export function ownerGone(s: RolloutState, now: number, probe?: OwnerProbe): string | undefined {
  const o = s.owner;
  if (!o) return "no process owns it";
  const age = now - Date.parse(o.heartbeatAt);
  if (!(age < STALE_HEARTBEATS * o.heartbeatMs))
    return `${o.host}:${o.pid} missed ${STALE_HEARTBEATS} heartbeats (last ${o.heartbeatAt})`;
  if (probe?.(o) === false) return `${o.host}:${o.pid} is not running (pid ${o.pid} on this host)`;
  return undefined;
}

/** Whether the state's owner process is alive (ownerGone says why not). */
export function ownerLive(s: RolloutState, now: number, probe?: OwnerProbe): boolean {
  return ownerGone(s, now, probe) === undefined;
}
