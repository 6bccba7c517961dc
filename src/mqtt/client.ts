/**
 * The MQTT client adapter (STYLE.md §1): the only file besides broker/ that imports `mqtt`.
 * Connecting with coded errors, request/response over MQTT 5 properties with an MQTT 3.1.1
 * fallback in the payload, and a snapshot of retained messages (docs/mqtt-api.md).
 */
import { randomUUID } from "node:crypto";
import {
  connect,
  type IClientOptions,
  type IClientPublishOptions,
  type IPublishPacket,
  type MqttClient,
} from "mqtt";
import { type ErrorCode, EspOtaError, isEspOtaError } from "../errors.js";
import {
  type CommandName,
  type CommandRequest,
  type CommandResponse,
  encodeMessage,
  parseMessage,
} from "./messages.js";
import { MAX_PACKET_BYTES } from "./packet-size.js";
import { isTopicId, matchesFilter, parseTopic } from "./topics.js";

export interface MqttConnectOptions {
  /** mqtt://, mqtts://, ws://, wss:// */
  url: string;
  /** Default: mqtt.js makes a random one (fine for a clean session; a persistent session needs a fixed id). */
  clientId?: string;
  username?: string;
  password?: string;
  /** PEM CA bundle the broker's certificate must chain to (mqtts, wss); default the system's. */
  ca?: string | Uint8Array;
  /** PEM client certificate and key, for brokers that authenticate clients by certificate. */
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /** Default true: an unverified broker could feed a gateway notices (the manifests are still signed). */
  rejectUnauthorized?: boolean;
  /**
   * Default: MQTT 5, and MQTT 3.1.1 when the broker refuses 5 with "unsupported protocol version"
   * (the embedded aedes broker does). 5 or 4 forces that version; a refusal is then E_MQTT_CONNECT.
   */
  protocolVersion?: 4 | 5;
  /** Seconds, default 30: a dead gateway's last will fires within 1.5 × this (MQTT 5 §3.1.2.10). */
  keepalive?: number;
  /** Default true; the agent uses false + a fixed clientId (persistent session). */
  clean?: boolean;
  /**
   * The last will. `payload` may be a function: it is called for every CONNECT (the first and
   * each reconnect), so a will can say which connection it ends (the agent's presence seq).
   */
  will?: { topic: string; payload: Uint8Array | (() => Uint8Array); retain: boolean; qos: 0 | 1 };
  /**
   * Installed on the client before it connects: a persistent session's queued messages arrive
   * right behind the CONNACK, and a listener attached after connectMqtt resolves may miss them
   * (issue 12 defect 16: a queued command was dropped after a crash).
   */
  onMessage?: (client: MqttClient, topic: string, payload: Buffer, packet: IPublishPacket) => void;
  /** Default 10000: how long connectMqtt keeps trying (a broker starting at the same time is fine). */
  connectTimeoutMs?: number;
  /** Default 1000 (mqtt.js reconnects forever after the first connect). */
  reconnectPeriodMs?: number;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
export const DEFAULT_SETTLE_MS = 300;
/** The same for one topic without wildcards, whose retained message ends the wait when it comes. */
export const EXACT_SETTLE_MS = 1500;

/**
 * MQTT 5 session expiry for clean: false. 3.1.1 keeps a persistent session until the client
 * returns; MQTT 5 ends it at disconnect unless this is set (§3.1.2.11.2). 0xFFFFFFFF means
 * "never"; brokers cap it to their own limit (AWS IoT Core: 1 hour by default, up to 7 days).
 */
const SESSION_NEVER_EXPIRES = 0xffff_ffff;

const SCHEMES = new Set(["mqtt:", "mqtts:", "ws:", "wss:"]);

/** Socket errors that can go away by themselves (the broker is starting, a route flaps). */
const TRANSIENT = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/** CONNACK codes that mean "try again later" (3.1.1 §3.2.2.3: 3; MQTT 5 §3.2.2.2: 0x88, 0x89, 0x97). */
const BUSY_CODES = new Set([3, 0x88, 0x89, 0x97]);
/** CONNACK codes refusing the protocol version (3.1.1: 1; MQTT 5: 0x84). */
const VERSION_CODES = new Set([1, 0x84]);
const CONNACK_WHY: Readonly<Record<number, string>> = {
  1: "the broker does not support this MQTT version",
  2: "the broker refused the client id",
  3: "the broker is unavailable",
  4: "bad user name or password",
  5: "not authorized",
  132: "the broker does not support this MQTT version",
  133: "the broker refused the client id",
  134: "bad user name or password",
  135: "not authorized",
  136: "the broker is unavailable",
  137: "the broker is busy",
  138: "this client is banned",
  140: "bad authentication method",
  149: "the packet is too large",
  151: "the broker's quota is exceeded",
};

/** The URL without its password, for messages (never print secrets). */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, "//***@");
  }
}

/** Resolves on the first CONNACK; rejects with EspOtaError E_MQTT_CONNECT (bad URL, refused, auth, timeout; message says which). */
export async function connectMqtt(o: MqttConnectOptions): Promise<MqttClient> {
  const shown = safeUrl(o.url);
  let scheme: string;
  try {
    scheme = new URL(o.url).protocol;
  } catch {
    throw new EspOtaError("E_MQTT_CONNECT", `${shown} is not a URL`, { url: shown });
  }
  if (!SCHEMES.has(scheme)) {
    throw new EspOtaError(
      "E_MQTT_CONNECT",
      `${shown}: the scheme must be mqtt://, mqtts://, ws:// or wss://`,
      { url: shown },
    );
  }
  const timeoutMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  if (o.protocolVersion !== undefined) return attempt(o, o.protocolVersion, deadline, shown);
  try {
    return await attempt(o, 5, deadline, shown);
  } catch (e) {
    if (isEspOtaError(e) && e.context.refusedVersion === true) {
      return attempt(o, 4, deadline, shown);
    }
    throw e;
  }
}

function clientOptions(o: MqttConnectOptions, version: 4 | 5, timeoutMs: number): IClientOptions {
  const clean = o.clean ?? true;
  const buf = (v: string | Uint8Array) => (typeof v === "string" ? v : Buffer.from(v));
  return {
    protocolVersion: version,
    keepalive: o.keepalive ?? 30,
    clean,
    connectTimeout: Math.max(1, timeoutMs),
    reconnectPeriod: o.reconnectPeriodMs ?? 1000,
    // mqtt.js stops reconnecting after a refused CONNACK unless told otherwise; a long-running
    // gateway must come back when the broker's "server unavailable" or an ACL change passes.
    // connectMqtt itself gives up on a refusal before the first connect (see attempt()).
    reconnectOnConnackError: true,
    resubscribe: true,
    ...(o.clientId !== undefined ? { clientId: o.clientId } : {}),
    ...(o.username !== undefined ? { username: o.username } : {}),
    ...(o.password !== undefined ? { password: o.password } : {}),
    ...(o.ca !== undefined ? { ca: buf(o.ca) } : {}),
    ...(o.cert !== undefined ? { cert: buf(o.cert) } : {}),
    ...(o.key !== undefined ? { key: buf(o.key) } : {}),
    rejectUnauthorized: o.rejectUnauthorized ?? true,
    // MQTT 5 §3.1.2.11.4: the broker must not send this client a packet over MAX_PACKET_BYTES
    // (Mosquitto drops such a message for it), so a huge retained message cannot fill the
    // gateway's memory (issue 12, defect 7). MQTT 3.1.1 has no such field: there the broker's
    // own limit (the embedded broker's maxPacketBytes, Mosquitto's max_packet_size) bounds it.
    ...(version === 5
      ? {
          properties: {
            maximumPacketSize: MAX_PACKET_BYTES,
            ...(!clean ? { sessionExpiryInterval: SESSION_NEVER_EXPIRES } : {}),
          },
        }
      : {}),
    ...(o.will
      ? {
          will: {
            topic: o.will.topic,
            payload: willPayload(o.will.payload),
            retain: o.will.retain,
            qos: o.will.qos,
          },
        }
      : {}),
  };
}

function willPayload(p: Uint8Array | (() => Uint8Array)): Buffer {
  return Buffer.from(typeof p === "function" ? p() : p);
}

/** One protocol version: resolves on CONNACK 0, retries transient failures until the deadline. */
function attempt(
  o: MqttConnectOptions,
  version: 4 | 5,
  deadline: number,
  shown: string,
): Promise<MqttClient> {
  const left = Math.max(1, deadline - Date.now());
  const client = connect(o.url, clientOptions(o, version, left));
  // An 'error' event without a listener throws (node:events); later errors (a reconnect that is
  // refused) show as 'offline'/'close' to callers that care, so one listener stays for good.
  client.on("error", () => {});
  const will = o.will;
  if (will && typeof will.payload === "function") {
    const make = will.payload;
    // mqtt.js builds each reconnect's CONNECT from client.options.will (client.js, connect
    // packet): a fresh payload before every reconnect.
    client.on("close", () => {
      if (client.options.will) client.options.will.payload = willPayload(make);
    });
  }
  const onMessage = o.onMessage;
  if (onMessage) client.on("message", (t, p, packet) => onMessage(client, t, p, packet));
  else holdEarlyMessages(client);
  return new Promise<MqttClient>((resolve, reject) => {
    let last = "";
    const cleanup = () => {
      clearTimeout(timer);
      client.off("connect", onConnect);
      client.off("error", onError);
      client.off("close", onClose);
    };
    const fail = (
      message: string,
      context: Record<string, string | boolean> = {},
      cause?: unknown,
    ) => {
      cleanup();
      client.end(true);
      reject(new EspOtaError("E_MQTT_CONNECT", message, { url: shown, ...context }, cause));
    };
    const timer = setTimeout(
      () =>
        fail(
          `no connection to ${shown} within ${Math.round(left)} ms${last ? `: ${last}` : " (no CONNACK)"}`,
        ),
      left,
    );
    const onConnect = () => {
      cleanup();
      resolve(client);
    };
    const onError = (e: Error & { code?: string | number }) => {
      if (typeof e.code === "number") {
        // A CONNACK refusal (mqtt.js ErrorWithReasonCode).
        const why = CONNACK_WHY[e.code] ?? e.message;
        if (VERSION_CODES.has(e.code)) {
          return fail(
            `${shown} refused MQTT ${version === 5 ? "5" : "3.1.1"}: ${why}${version === 5 ? " (use protocol version 4)" : ""}`,
            { refusedVersion: version === 5 },
            e,
          );
        }
        if (BUSY_CODES.has(e.code)) {
          last = `refused: ${why}`;
          return;
        }
        return fail(`${shown} refused the connection: ${why}`, {}, e);
      }
      if (typeof e.code === "string" && TRANSIENT.has(e.code)) {
        last = e.message;
        return;
      }
      // TLS (certificate) errors, an unknown host, and the like do not heal by retrying.
      fail(`cannot connect to ${shown}: ${e.message}`, {}, e);
    };
    const onClose = () => {
      // Without reconnects there is no second try.
      if (client.options.reconnectPeriod === 0) {
        fail(`cannot connect to ${shown}${last ? `: ${last}` : ": the connection closed"}`);
      }
    };
    client.on("connect", onConnect);
    client.on("error", onError);
    client.on("close", onClose);
  });
}

/** More than this many messages before anyone listens: nobody will; stop holding them. */
const MAX_HELD = 1000;

/**
 * A persistent session's queued messages arrive right behind the CONNACK, before connectMqtt's
 * caller can attach a 'message' listener (test/mqtt/client.test.ts "clean: false keeps the
 * session": without this the queued command never reached the caller). They are held and handed to the first 'message' listener the caller attaches, before
 * any later message, in their order.
 */
function holdEarlyMessages(client: MqttClient): void {
  type Args = [topic: string, payload: Buffer, packet: IPublishPacket];
  const held: Args[] = [];
  let holding = true;
  // mqtt.js types its events without node:events' own 'newListener'; the emitter has it.
  const events = client as unknown as NodeJS.EventEmitter;
  const flush = () => {
    if (!holding) return;
    holding = false;
    client.off("message", hold);
    events.off("newListener", onNewListener);
    for (const m of held.splice(0)) client.emit("message", ...m);
  };
  const hold = (...m: Args) => {
    if (!holding) return;
    // Someone else listens now: they get the held messages first, then this one.
    if (client.listenerCount("message") > 1) return flush();
    held.push(m);
    if (held.length > MAX_HELD) {
      held.length = 0;
      holding = false;
      client.off("message", hold);
      events.off("newListener", onNewListener);
    }
  };
  const onNewListener = (event: string | symbol, listener: unknown) => {
    // 'newListener' fires before the listener is added: flush once it is in place.
    if (event === "message" && listener !== hold) queueMicrotask(flush);
  };
  client.on("message", hold);
  events.on("newListener", onNewListener);
}

// ---- subscriptions shared by concurrent requests ------------------------------------------------

interface SharedSub {
  count: number;
  ready: Promise<void>;
}
interface SharedSubs {
  live: Map<string, SharedSub>;
  /** UNSUBSCRIBEs in flight: a new SUBSCRIBE to the same filter must follow them, not pass them. */
  leaving: Map<string, Promise<void>>;
}
const shared = new WeakMap<MqttClient, SharedSubs>();

async function subscribeChecked(client: MqttClient, filter: string): Promise<void> {
  let granted: { qos: number }[];
  try {
    granted = await client.subscribeAsync(filter, { qos: 1 });
  } catch (e) {
    throw new EspOtaError(
      "E_MQTT_SUBSCRIBE",
      `cannot subscribe to ${filter}: ${(e as Error).message}`,
      { filter },
      e,
    );
  }
  // SUBACK 0x80 (3.1.1) or a reason code >= 0x80 (MQTT 5): refused, usually by an ACL.
  if (granted.some((g) => g.qos >= 0x80)) {
    throw new EspOtaError("E_MQTT_SUBSCRIBE", `the broker refused the subscription to ${filter}`, {
      filter,
    });
  }
}

/** Subscribes to `filter` once for all concurrent users of the same client (reference counted). */
function acquire(client: MqttClient, filter: string): Promise<void> {
  let subs = shared.get(client);
  if (!subs) {
    subs = { live: new Map(), leaving: new Map() };
    shared.set(client, subs);
  }
  let s = subs.live.get(filter);
  if (!s) {
    const before = subs.leaving.get(filter) ?? Promise.resolve();
    const entry: SharedSub = {
      count: 0,
      ready: before.then(() => subscribeChecked(client, filter)),
    };
    subs.live.set(filter, entry);
    const live = subs.live;
    entry.ready.catch(() => {
      if (live.get(filter) === entry) live.delete(filter);
    });
    s = entry;
  }
  s.count++;
  return s.ready;
}

function release(client: MqttClient, filter: string): void {
  const subs = shared.get(client);
  const s = subs?.live.get(filter);
  if (!subs || !s) return;
  if (--s.count > 0) return;
  subs.live.delete(filter);
  const leaving = s.ready.then(
    () => client.unsubscribeAsync(filter).then(() => undefined),
    () => undefined,
  );
  const done = leaving.catch(() => undefined);
  subs.leaving.set(filter, done);
  void done.then(() => {
    if (subs.leaving.get(filter) === done) subs.leaving.delete(filter);
  });
}

function publish(
  client: MqttClient,
  topic: string,
  payload: Uint8Array,
  opts: IClientPublishOptions,
): Promise<void> {
  return client.publishAsync(topic, Buffer.from(payload), opts).then(
    () => undefined,
    (e: Error) => {
      throw new EspOtaError(
        "E_MQTT_PUBLISH",
        `cannot publish to ${topic}: ${e.message}`,
        { topic },
        e,
      );
    },
  );
}

// ---- request / response ------------------------------------------------------------------------

/**
 * Request/response: MQTT 5 responseTopic + correlationData when the client is v5, else
 * replyTo/correlationId in the payload. Rejects E_MQTT_TIMEOUT.
 *
 * A v5 requester writes replyTo/correlationId into the payload as well: a gateway connected with
 * MQTT 3.1.1 never sees the properties (the broker drops them), and can still answer. The reply
 * topic is subscribed once per client however many requests share it.
 */
export async function requestCommand(
  client: MqttClient,
  requestTopic: string,
  replyTopic: string,
  req: CommandRequest,
  timeoutMs: number = DEFAULT_REQUEST_TIMEOUT_MS,
): Promise<CommandResponse> {
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(`requestCommand: timeoutMs must be positive, not ${timeoutMs}`);
  }
  const correlationId = req.correlationId ?? randomUUID();
  const payload = encodeMessage("command", { ...req, replyTo: replyTopic, correlationId });
  const v5 = client.options.protocolVersion === 5;

  await acquire(client, replyTopic);
  let onMessage: ((topic: string, payload: Buffer, packet: IPublishPacket) => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<CommandResponse>((resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new EspOtaError(
              "E_MQTT_TIMEOUT",
              `no response to "${req.command}" on ${replyTopic} within ${timeoutMs} ms`,
              { topic: requestTopic, command: req.command },
            ),
          ),
        timeoutMs,
      );
      onMessage = (topic, body, packet) => {
        if (topic !== replyTopic) return;
        const data = packet.properties?.correlationData;
        const byProperty =
          data !== undefined && Buffer.from(data).toString("utf8") === correlationId;
        if (data !== undefined && !byProperty) return;
        const p = parseMessage("response", body);
        if (!p.ok) {
          // Without the property we cannot tell a broken answer to us from someone else's.
          if (byProperty)
            reject(new EspOtaError(p.code, `response to "${req.command}": ${p.reason}`, { topic }));
          return;
        }
        if (byProperty || p.value.correlationId === correlationId) resolve(p.value);
      };
      client.on("message", onMessage);
      publish(client, requestTopic, payload, {
        qos: 1,
        ...(v5
          ? {
              properties: {
                responseTopic: replyTopic,
                correlationData: Buffer.from(correlationId, "utf8"),
              },
            }
          : {}),
      }).catch(reject);
    });
  } finally {
    clearTimeout(timer);
    if (onMessage) client.off("message", onMessage);
    release(client, replyTopic);
  }
}

/** The prefix of a `<prefix>/gateways/<id>/commands` topic, else undefined. */
function prefixOfCommands(topic: string): string | undefined {
  const m = /^(.+)\/gateways\/([^/]+)\/commands$/.exec(topic);
  return m && parseTopic(m[1]!, topic)?.kind === "commands" ? m[1] : undefined;
}

/** replyTo / correlationId of a request that failed its schema, if they are usable as such. */
function salvage(payload: Buffer): { replyTo?: string; correlationId?: string; command?: string } {
  try {
    const v = JSON.parse(payload.toString("utf8")) as Record<string, unknown>;
    if (typeof v !== "object" || v === null) return {};
    const out: { replyTo?: string; correlationId?: string; command?: string } = {};
    const r = v.replyTo;
    if (
      typeof r === "string" &&
      r.length > 0 &&
      r.length <= 1024 &&
      !/[+#]/.test(r) &&
      !r.includes("\u0000")
    )
      out.replyTo = r;
    const c = v.correlationId;
    if (typeof c === "string" && c.length > 0 && c.length <= 128) out.correlationId = c;
    if (typeof v.command === "string") out.command = v.command;
    return out;
  } catch {
    return {};
  }
}

const COMMANDS: readonly CommandName[] = ["info", "cancel", "retry", "reboot"];

/** Why a command got no answer or an error answer, for the responder's log (bounded). */
export interface CommandRefusal {
  code: ErrorCode;
  /** At most 200 characters; the request's own text is never quoted whole. */
  reason: string;
  command?: string;
  /** The refused reply address, cut to 200 characters. */
  replyTo?: string;
}

export interface CommandResponderOptions {
  /**
   * Called for every request that was malformed or whose reply address was refused: the
   * conventions say "logged and dropped" (issue 13 item 15). Default: nothing.
   */
  onRefused?: (r: CommandRefusal) => void;
}

/** A `(client, topic, payload, packet)` message listener answering commands on one topic. */
export type CommandListener = (
  client: MqttClient,
  topic: string,
  payload: Buffer,
  packet: IPublishPacket,
) => void;

const cut = (s: string, n = 200) => (s.length > n ? `${s.slice(0, n)}…` : s);

/**
 * The responder side (the agent), without subscribing: parses each CommandRequest on `topic`
 * (bad ones get an ok:false response with E_MQTT_MESSAGE_* if a reply address is usable), calls
 * handler, publishes the response to the request's responseTopic property or replyTo, echoing
 * correlation data. Made before the client connects and passed to connectMqtt's `onMessage`, it
 * also answers the commands a persistent session queued while the gateway was away (issue 12
 * defect 16).
 *
 * When `topic` is `<prefix>/gateways/<id>/commands`, the reply address must be in the prefix's
 * reply space, `<prefix>/replies/<clientId>` (docs/mqtt-api.md "Commands"; issue 12 defect 12):
 * anything else, under the prefix or outside it, is refused (E_MQTT_REPLY_REFUSED, logged), so
 * a request cannot make the gateway publish on its own notice or status topics, nor on another
 * application's topics. Any other `topic` (tests, custom deployments) allows any reply address.
 */
export function commandResponder(
  topic: string,
  handler: (req: CommandRequest) => Promise<CommandResponse>,
  o: CommandResponderOptions = {},
): CommandListener {
  const prefix = prefixOfCommands(topic);
  const levelBeforeLast = topic.split("/").at(-2) ?? "";
  const gatewayId = isTopicId(levelBeforeLast) ? levelBeforeLast : "unknown";
  const allowed = (replyTo: string) =>
    prefix === undefined || parseTopic(prefix, replyTo)?.kind === "replies";
  const refused = (r: CommandRefusal) => {
    try {
      o.onRefused?.(r);
    } catch {
      // A logger that throws must not stop the responder.
    }
  };

  const answer = async (
    client: MqttClient,
    replyTo: string,
    correlationData: Buffer | undefined,
    response: CommandResponse,
  ) => {
    let bytes: Uint8Array;
    try {
      bytes = encodeMessage("response", response);
    } catch (e) {
      // The handler's result does not fit the schema (or 256 KiB): say so instead of nothing.
      bytes = encodeMessage("response", {
        format: 1,
        gatewayId,
        command: response.command,
        ok: false,
        error: { code: "E_MQTT_COMMAND", message: (e as Error).message.slice(0, 4096) },
        ...(response.correlationId !== undefined ? { correlationId: response.correlationId } : {}),
      });
    }
    await publish(client, replyTo, bytes, {
      qos: 1,
      ...(correlationData !== undefined && client.options.protocolVersion === 5
        ? { properties: { correlationData } }
        : {}),
    }).catch(() => undefined);
  };

  return (client, t, payload, packet) => {
    if (!matchesFilter(topic, t)) return;
    const props = packet.properties;
    const correlationData = props?.correlationData;
    const p = parseMessage("command", payload);
    const fallback = p.ok ? p.value : salvage(payload);
    const replyTo = props?.responseTopic ?? fallback.replyTo;
    const command = typeof fallback.command === "string" ? cut(fallback.command, 40) : undefined;
    if (replyTo === undefined || !allowed(replyTo)) {
      refused({
        code: p.ok ? "E_MQTT_REPLY_REFUSED" : p.code,
        reason:
          replyTo === undefined
            ? `no usable reply address${p.ok ? "" : `; ${cut(p.reason)}`}`
            : `reply address outside ${prefix}/replies/`,
        ...(command !== undefined ? { command } : {}),
        ...(replyTo !== undefined ? { replyTo: cut(replyTo) } : {}),
      });
      return;
    }
    const echo =
      fallback.correlationId !== undefined ? { correlationId: fallback.correlationId } : {};
    if (!p.ok) {
      refused({
        code: p.code,
        reason: cut(p.reason),
        ...(command !== undefined ? { command } : {}),
        replyTo: cut(replyTo),
      });
      const named = COMMANDS.find((c) => c === fallback.command);
      void answer(client, replyTo, correlationData, {
        format: 1,
        gatewayId,
        // The schema needs a command name; "info" for a request that has none it knows: the
        // error code, not this field, tells the requester the request was refused.
        command: named ?? "info",
        ok: false,
        error: { code: p.code, message: p.reason.slice(0, 4096) },
        ...echo,
      });
      return;
    }
    const req = p.value;
    void (async () => {
      let res: CommandResponse;
      try {
        res = await handler(req);
      } catch (e) {
        const code: ErrorCode = isEspOtaError(e) ? e.code : "E_MQTT_COMMAND";
        res = {
          format: 1,
          gatewayId,
          command: req.command,
          ok: false,
          error: { code, message: String((e as Error)?.message ?? e).slice(0, 4096) },
        };
      }
      const { correlationId: _, ...rest } = res;
      await answer(client, replyTo, correlationData, { ...rest, ...echo });
    })().catch(() => undefined);
  };
}

/**
 * commandResponder on a connected client, subscribed to `topic`. Returns a stop function that
 * removes the listener and, unless `keepSubscription`, unsubscribes. A gateway with a persistent
 * session keeps the subscription when it stops (issue 12 defect 16): the broker then queues the
 * QoS 1 commands sent while it is away, and it answers them when it returns.
 */
export function serveCommands(
  client: MqttClient,
  topic: string,
  handler: (req: CommandRequest) => Promise<CommandResponse>,
  o: CommandResponderOptions & { keepSubscription?: boolean } = {},
): () => Promise<void> {
  const respond = commandResponder(topic, handler, o);
  const onMessage = (t: string, payload: Buffer, packet: IPublishPacket) =>
    respond(client, t, payload, packet);
  client.on("message", onMessage);
  const ready = subscribeChecked(client, topic);
  ready.catch(() => undefined);
  return async () => {
    client.off("message", onMessage);
    await ready.catch(() => undefined);
    if (!o.keepSubscription) await client.unsubscribeAsync(topic).catch(() => undefined);
  };
}

/** Subscribes to `topic` (QoS 1), E_MQTT_SUBSCRIBE when refused. */
export function subscribeCommands(client: MqttClient, topic: string): Promise<void> {
  return subscribeChecked(client, topic);
}

// ---- retained snapshot -------------------------------------------------------------------------

/**
 * Subscribes to `filter`, collects retained messages until none arrived for `settleMs` (default
 * 300; for one topic without wildcards 1500, and its retained message ends the wait at once),
 * unsubscribes. A message published live to a matching topic meanwhile is newer state and
 * replaces the retained one (an empty payload, a cleared retained message, removes it). Do not
 * call it with a filter the client is subscribed to for something else: it unsubscribes at the end.
 */
export async function readRetained(
  client: MqttClient,
  filter: string,
  settleMs?: number,
): Promise<Map<string, Uint8Array>> {
  // One topic, no wildcard: at most one retained message can come, so it ends the wait. Waiting
  // out the settle after it bought nothing, and a short settle missed a retained message the
  // broker sent a moment after its SUBACK on a busy machine (load 11: `rollout status` printed
  // nothing). So for one topic the default wait for "there is none" is longer, and a message
  // that does come returns at once.
  const exact = !/[+#]/.test(filter);
  const wait = settleMs ?? (exact ? EXACT_SETTLE_MS : DEFAULT_SETTLE_MS);
  const got = new Map<string, Uint8Array>();
  let timer: NodeJS.Timeout | undefined;
  let settled!: () => void;
  const done = new Promise<void>((resolve) => {
    settled = resolve;
  });
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(settled, wait);
  };
  const onMessage = (topic: string, payload: Buffer, packet: IPublishPacket) => {
    if (!matchesFilter(filter, topic)) return;
    if (payload.byteLength === 0) got.delete(topic);
    else got.set(topic, new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
    // Only the retained burst delays the end: live traffic on a busy topic must not.
    if (packet.retain) {
      if (exact) settled();
      else arm();
    }
  };
  client.on("message", onMessage);
  try {
    await subscribeChecked(client, filter);
    arm();
    await done;
  } finally {
    clearTimeout(timer);
    client.off("message", onMessage);
  }
  await client.unsubscribeAsync(filter).catch(() => undefined);
  return got;
}

export type { MqttClient };
