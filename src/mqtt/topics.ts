/**
 * The MQTT topic tree (docs/mqtt-api.md). Every gateway and tool of one deployment shares a
 * prefix (default `esp-ota/v1`); below it the levels are fixed:
 *
 *   <p>/devices/<deviceId>/{desired,status,progress,log}
 *   <p>/gateways/<gatewayId>/{presence,inventory,commands}
 *   <p>/replies/<clientId>
 *   <p>/rollouts/<rolloutId>/{state,control}
 *
 * With the default two-level prefix no topic has more than 5 levels, inside AWS IoT Core's limit
 * of 7. Pure: no I/O.
 */
import { EspOtaError } from "../errors.js";

export const DEFAULT_PREFIX = "esp-ota/v1";

/**
 * Longest prefix accepted. Topic names may be 65535 bytes in MQTT, but AWS IoT Core allows 256
 * bytes; 128 leaves room for the fixed levels and a 64-character id.
 */
export const MAX_PREFIX_LENGTH = 128;

const TOPIC_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Throws RangeError for a prefix with wildcards (+ #), empty levels, a leading or trailing "/". */
export function checkPrefix(prefix: string): string {
  if (typeof prefix !== "string") throw new TypeError("checkPrefix: prefix must be a string");
  const why = prefixProblem(prefix);
  if (why) throw new RangeError(`topic prefix "${prefix}" ${why}`);
  return prefix;
}

function prefixProblem(prefix: string): string | undefined {
  if (prefix === "") return "is empty";
  if (prefix.length > MAX_PREFIX_LENGTH) return `is longer than ${MAX_PREFIX_LENGTH} characters`;
  // MQTT 5 §4.7.1: wildcards are not allowed in topic names.
  if (/[+#]/.test(prefix)) return "must not contain the MQTT wildcards + or #";
  // MQTT 5 §1.5.4: topic strings must not contain U+0000.
  if (prefix.includes("\u0000")) return "must not contain a NUL character";
  // MQTT 5 §4.7.2: topics starting with $ are the broker's ($SYS); wildcards never match them.
  if (prefix.startsWith("$")) return 'must not start with "$" (reserved for the broker)';
  if (prefix.startsWith("/") || prefix.endsWith("/"))
    return 'must not start or end with "/" (an empty topic level)';
  if (prefix.split("/").some((l) => l === "")) return 'must not contain an empty level ("//")';
  return undefined;
}

/** A device id / gateway id / rollout id usable as one topic level: 1..64 chars of [A-Za-z0-9._-]. */
export function isTopicId(id: string): boolean {
  return typeof id === "string" && TOPIC_ID.test(id);
}

export interface Topics {
  prefix: string;
  /** Retained, QoS 1 — UpdateNotice; an empty retained payload means "cleared". */
  desired(deviceId: string): string;
  /** Retained, QoS 1 — DeviceStatus. */
  status(deviceId: string): string;
  /** Not retained, QoS 0 — ProgressEvent. */
  progress(deviceId: string): string;
  /** Not retained, QoS 0 — LogEvent. */
  log(deviceId: string): string;
  /** Retained, QoS 1, also the gateway's last will — Presence. */
  presence(gatewayId: string): string;
  /** Retained, QoS 1 — Inventory. */
  inventory(gatewayId: string): string;
  /** QoS 1 — CommandRequest. */
  commands(gatewayId: string): string;
  /** QoS 1 — CommandResponse (the default reply topic of a requester). */
  replies(clientId: string): string;
  /** Retained, QoS 1 — RolloutState (src/rollout). */
  rolloutState(rolloutId: string): string;
  /** QoS 1 — RolloutControl (src/rollout). */
  rolloutControl(rolloutId: string): string;
  allDesired: string;
  allStatus: string;
  allPresence: string;
  allInventory: string;
  allRollouts: string;
}

function level(what: string, id: string): string {
  if (!isTopicId(id)) {
    throw new EspOtaError(
      "E_MQTT_TOPIC",
      `${what} ${JSON.stringify(id)} cannot be a topic level (1..64 of A-Z a-z 0-9 . _ -)`,
      { [what.replace(/ /g, "")]: String(id) },
    );
  }
  return id;
}

/** The topics under `prefix` (checked with checkPrefix). Builders throw E_MQTT_TOPIC for a bad id. */
export function topics(prefix: string = DEFAULT_PREFIX): Topics {
  const p = checkPrefix(prefix);
  return {
    prefix: p,
    desired: (id) => `${p}/devices/${level("device id", id)}/desired`,
    status: (id) => `${p}/devices/${level("device id", id)}/status`,
    progress: (id) => `${p}/devices/${level("device id", id)}/progress`,
    log: (id) => `${p}/devices/${level("device id", id)}/log`,
    presence: (gw) => `${p}/gateways/${level("gateway id", gw)}/presence`,
    inventory: (gw) => `${p}/gateways/${level("gateway id", gw)}/inventory`,
    commands: (gw) => `${p}/gateways/${level("gateway id", gw)}/commands`,
    replies: (c) => `${p}/replies/${level("client id", c)}`,
    rolloutState: (id) => `${p}/rollouts/${level("rollout id", id)}/state`,
    rolloutControl: (id) => `${p}/rollouts/${level("rollout id", id)}/control`,
    allDesired: `${p}/devices/+/desired`,
    allStatus: `${p}/devices/+/status`,
    allPresence: `${p}/gateways/+/presence`,
    allInventory: `${p}/gateways/+/inventory`,
    allRollouts: `${p}/rollouts/+/state`,
  };
}

export type TopicKind =
  | "desired"
  | "status"
  | "progress"
  | "log"
  | "presence"
  | "inventory"
  | "commands"
  | "replies"
  | "rollout-state"
  | "rollout-control";

/** [area, leaf] -> kind; the replies topic has no leaf. */
const KINDS: Readonly<Record<string, TopicKind>> = {
  "devices/desired": "desired",
  "devices/status": "status",
  "devices/progress": "progress",
  "devices/log": "log",
  "gateways/presence": "presence",
  "gateways/inventory": "inventory",
  "gateways/commands": "commands",
  "rollouts/state": "rollout-state",
  "rollouts/control": "rollout-control",
};

/** Which topic of ours this is, and its id level; undefined for anything else. */
export function parseTopic(
  prefix: string,
  topic: string,
): { kind: TopicKind; id: string } | undefined {
  if (typeof topic !== "string" || !topic.startsWith(`${prefix}/`)) return undefined;
  const rest = topic.slice(prefix.length + 1).split("/");
  if (rest.length === 2 && rest[0] === "replies") {
    return isTopicId(rest[1]!) ? { kind: "replies", id: rest[1]! } : undefined;
  }
  if (rest.length !== 3) return undefined;
  const [area, id, leaf] = rest as [string, string, string];
  const kind = Object.hasOwn(KINDS, `${area}/${leaf}`) ? KINDS[`${area}/${leaf}`] : undefined;
  return kind !== undefined && isTopicId(id) ? { kind, id } : undefined;
}

/**
 * Whether `topic` matches the subscription `filter` (MQTT 5 §4.7: "+" one level, "#" the rest
 * including the parent; a wildcard in the first level does not match a topic starting with "$").
 * The client adapter needs it because one client's messages all arrive on one event.
 */
export function matchesFilter(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return i === f.length - 1;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}
