/**
 * The operator console's HTTP side (docs/console.md): fastify serving one page, a server-sent
 * event stream of snapshots of the model (model.ts), the actions, and /metrics, /healthz,
 * /readyz. The page is a thin viewer; every decision is the rollout code's (src/rollout), run
 * here with the console's own broker connection (actions.ts).
 *
 * Security (docs/console.md "Security"): no anonymous access but the probes; a session cookie
 * that is HttpOnly and SameSite=Strict; every action a POST carrying the session's CSRF token in
 * a header and, when the browser sends one, an Origin naming this host; viewers are refused
 * (403) every action here, whatever the page shows; a Content-Security-Policy that allows only
 * this origin's script and style, so text from the network can never become markup or code.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import { isEspOtaError } from "../errors.js";
import type { MqttClient } from "../mqtt/client.js";
import type { GatewayTrust } from "../mqtt/status-auth.js";
import { isTopicId, type Topics } from "../mqtt/topics.js";
import { BUCKETS } from "../rollout/machine.js";
import { CONTROL_ACTIONS, type ControlAction } from "../rollout/messages.js";
import { realTimers } from "../uart/scheduler.js";
import { ConsoleActions, type ReleaseReader, type StartRequest } from "./actions.js";
import {
  applyToModel,
  type ConsoleModel,
  deviceDetail,
  emptyModel,
  snapshot,
  summarizeForMetrics,
} from "./model.js";
import { APP_CSS, APP_JS, INDEX_HTML } from "./page.js";
import { csrfMatches, type Session, Sessions } from "./sessions.js";
import { PushThrottle } from "./throttle.js";
import type { Authenticator } from "./users.js";

export const COOKIE = "esp_ota_console";
/** Open event streams at most: each holds a socket and gets every snapshot. */
export const MAX_SSE_CLIENTS = 64;
/** Bytes a slow page may leave unread on its stream before it is dropped (a dozen snapshots of 1,000 devices). */
export const MAX_SSE_BUFFER = 4 * 1024 * 1024;
/** A snapshot is pushed at most this often while things change (a wave's statuses arrive in bursts). */
export const DEFAULT_PUSH_MS = 500;
/** And at least this often, so ages and owner liveness stay current on a quiet fleet. */
export const REFRESH_MS = 5000;
/** JSON bodies: a start request with 10 000 device ids fits. */
const BODY_LIMIT = 1024 * 1024;

export interface ConsoleServerOptions {
  client: MqttClient;
  topics: Topics;
  gateways?: GatewayTrust;
  authenticate: Authenticator;
  /** Accept `Authorization: Bearer <token>` too (token mode): for scripts, no cookie, no CSRF. */
  bearer?: boolean;
  host: string;
  port: number;
  readRelease?: ReleaseReader;
  pushMs?: number;
  controlTimeoutMs?: number;
  heartbeatMs?: number;
  clock?: () => number;
  /** One line per login, action and rollout event (the audit trail; stderr in the CLI). */
  onLog?: (line: string) => void;
}

export interface ConsoleServer {
  url: string;
  app: FastifyInstance;
  model: ConsoleModel;
  actions: ConsoleActions;
  /** Subscribed and the retained burst folded in. */
  ready: Promise<void>;
  close(): Promise<void>;
}

function parseCookie(header: string | undefined, name: string): string | undefined {
  if (!header || header.length > 8192) return undefined;
  for (const part of header.split(";")) {
    const i = part.indexOf("=");
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

function sameHost(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host === host;
  } catch {
    return false;
  }
}

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cache-control": "no-store",
};

export async function startConsoleServer(o: ConsoleServerOptions): Promise<ConsoleServer> {
  const clock = o.clock ?? Date.now;
  const log = o.onLog ?? (() => {});
  const { client, topics } = o;
  const model = emptyModel(topics.prefix, o.gateways);
  const sessions = new Sessions(clock);
  const actions = new ConsoleActions({
    client,
    topics,
    ...(o.gateways ? { gateways: o.gateways } : {}),
    ...(o.readRelease ? { readRelease: o.readRelease } : {}),
    ...(o.controlTimeoutMs ? { controlTimeoutMs: o.controlTimeoutMs } : {}),
    ...(o.heartbeatMs ? { heartbeatMs: o.heartbeatMs } : {}),
    lookup: (id) => model.rollouts.get(id),
    onLog: log,
  });

  // --- metrics --------------------------------------------------------------------------------
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "esp_ota_console_" });
  const sse = new Set<FastifyReply>();
  new Gauge({
    name: "esp_ota_console_rollout_devices",
    help: "Devices of each rollout the broker retains, by state (docs/rollouts.md buckets).",
    labelNames: ["rollout", "state"],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of summarizeForMetrics(model))
        for (const b of BUCKETS) this.set({ rollout: r.rolloutId, state: b }, r.counts[b]);
    },
  });
  new Gauge({
    name: "esp_ota_console_rollouts",
    help: "Rollouts the broker retains, by rollout state.",
    labelNames: ["state"],
    registers: [registry],
    collect() {
      this.reset();
      const n: Record<string, number> = { running: 0, paused: 0, aborted: 0, completed: 0 };
      for (const s of model.rollouts.values()) n[s.state] = (n[s.state] ?? 0) + 1;
      for (const [state, v] of Object.entries(n)) this.set({ state }, v);
    },
  });
  new Gauge({
    name: "esp_ota_console_sse_clients",
    help: "Browsers following the live event stream.",
    registers: [registry],
    collect() {
      this.set(sse.size);
    },
  });
  new Gauge({
    name: "esp_ota_console_broker_connected",
    help: "1 while the console's MQTT connection is up.",
    registers: [registry],
    collect() {
      this.set(client.connected ? 1 : 0);
    },
  });
  const invalidMessages = new Counter({
    name: "esp_ota_console_invalid_messages_total",
    help: "Messages on the watched topics refused by their parser (bad JSON, schema, signature).",
    registers: [registry],
  });
  const actionsTotal = new Counter({
    name: "esp_ota_console_actions_total",
    help: "Operator actions, by action and outcome (ok, refused, failed).",
    labelNames: ["action", "outcome"],
    registers: [registry],
  });

  // --- the model, fed by the broker ------------------------------------------------------------
  let pushed = -1;
  const push = () => {
    pushed = model.version;
    if (sse.size === 0) return;
    const data = `event: snapshot\ndata: ${JSON.stringify(snapshot(model, clock(), client.connected))}\n\n`;
    for (const r of sse) send(r, data);
  };
  /**
   * A page that does not read its stream (a laptop asleep, a stalled proxy) would make the
   * socket buffer every snapshot: past MAX_SSE_BUFFER it is dropped, and its EventSource
   * reconnects when it can (retry: 2000).
   */
  const send = (r: FastifyReply, data: string) => {
    if (r.raw.writableLength > MAX_SSE_BUFFER) {
      sse.delete(r);
      r.raw.destroy();
      return;
    }
    r.raw.write(data);
  };
  const throttle = new PushThrottle(realTimers, o.pushMs ?? DEFAULT_PUSH_MS, push);
  const schedule = () => {
    if (sse.size > 0) throttle.changed();
  };
  const refresh = setInterval(() => throttle.now(), REFRESH_MS);
  const keepalive = setInterval(() => {
    for (const r of sse) send(r, ": keepalive\n\n");
  }, 15_000);
  const onMessage = (topic: string, payload: Buffer) => {
    const r = applyToModel(
      model,
      topic,
      new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength),
      clock(),
    );
    if (r.kind === "invalid") invalidMessages.inc();
    if (model.version !== pushed) schedule();
  };
  const onConnectChange = () => schedule();
  client.on("message", onMessage);
  client.on("connect", onConnectChange);
  client.on("close", onConnectChange);
  const p = topics.prefix;
  const filters = [
    topics.allPresence,
    topics.allInventory,
    topics.allStatus,
    topics.allDesired,
    `${p}/devices/+/progress`,
    `${p}/devices/+/log`,
    topics.allRollouts,
  ];
  let subscribed = false;
  const ready = client.subscribeAsync(filters, { qos: 1 }).then(() => {
    subscribed = true;
  });
  ready.catch(() => {});

  // --- HTTP -----------------------------------------------------------------------------------
  const app = Fastify({ bodyLimit: BODY_LIMIT, logger: false, trustProxy: false });
  app.addHook("onSend", async (_req, reply) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
  });

  const sessionOf = (req: FastifyRequest): Session | "bearer" | undefined => {
    if (o.bearer) {
      const h = req.headers.authorization;
      if (typeof h === "string" && h.startsWith("Bearer ")) return "bearer";
    }
    return sessions.get(parseCookie(req.headers.cookie, COOKIE));
  };

  /** The viewer or operator behind a request, or a reply already sent (401). */
  const whoever = async (
    req: FastifyRequest,
    reply: FastifyReply,
  ): Promise<{ user: string; role: "operator" | "viewer"; session?: Session } | undefined> => {
    const s = sessionOf(req);
    if (s === "bearer") {
      const got = await o.authenticate("", req.headers.authorization!.slice("Bearer ".length));
      if (got && got !== "busy") return { user: got.name, role: got.role };
    } else if (s) return { user: s.user, role: s.role, session: s };
    await reply.code(401).send({ error: "E_CONSOLE_AUTH", message: "log in first" });
    return undefined;
  };

  /** An operator's POST with its CSRF token and this origin, or a reply sent (401/403). */
  const operator = async (req: FastifyRequest, reply: FastifyReply, action: string) => {
    const who = await whoever(req, reply);
    if (!who) return undefined;
    const origin = req.headers.origin;
    // A browser names the page's origin on every POST; a proxy may add TLS in front (https).
    if (typeof origin === "string" && !sameHost(origin, req.headers.host)) {
      actionsTotal.inc({ action, outcome: "refused" });
      await reply.code(403).send({ error: "E_CONSOLE_ORIGIN", message: "cross-origin request" });
      return undefined;
    }
    if (who.session && !csrfMatches(who.session, req.headers["x-csrf-token"])) {
      actionsTotal.inc({ action, outcome: "refused" });
      await reply
        .code(403)
        .send({ error: "E_CONSOLE_CSRF", message: "missing or wrong CSRF token" });
      return undefined;
    }
    if (who.role !== "operator") {
      actionsTotal.inc({ action, outcome: "refused" });
      log(`refused ${action} for ${who.user} (viewer)`);
      await reply
        .code(403)
        .send({ error: "E_CONSOLE_FORBIDDEN", message: `${who.user} may watch, not act (viewer)` });
      return undefined;
    }
    return who;
  };

  const failed = async (reply: FastifyReply, action: string, e: unknown) => {
    actionsTotal.inc({ action, outcome: "failed" });
    if (isEspOtaError(e)) {
      const status =
        e.code === "E_ROLLOUT_NOT_FOUND"
          ? 404
          : e.code === "E_ROLLOUT_NOT_APPLICABLE" ||
              e.code === "E_ROLLOUT_FINISHED" ||
              e.code === "E_ROLLOUT_BUSY" ||
              e.code === "E_ROLLOUT_MISMATCH"
            ? 409
            : e.code === "E_ROLLOUT_CONTROL_TIMEOUT"
              ? 504
              : 400;
      return reply.code(status).send({ error: e.code, message: e.message });
    }
    // Misuse (a bug), not an expected failure: said as it is, and the audit log keeps it.
    log(`${action} failed: ${(e as Error).message}`);
    return reply.code(500).send({ error: "E_INTERNAL", message: (e as Error).message });
  };

  app.get("/", async (_req, reply) => reply.type("text/html; charset=utf-8").send(INDEX_HTML));
  app.get("/app.js", async (_req, reply) =>
    reply.type("text/javascript; charset=utf-8").send(APP_JS),
  );
  app.get("/app.css", async (_req, reply) => reply.type("text/css; charset=utf-8").send(APP_CSS));

  app.get("/healthz", async (_req, reply) => reply.type("text/plain").send("ok\n"));
  app.get("/readyz", async (_req, reply) => {
    const ok = client.connected && subscribed;
    return reply
      .code(ok ? 200 : 503)
      .type("text/plain")
      .send(
        ok
          ? "ready\n"
          : `not ready: ${client.connected ? "subscribing" : "broker not connected"}\n`,
      );
  });
  app.get("/metrics", async (_req, reply) =>
    reply.type(registry.contentType).send(await registry.metrics()),
  );

  app.post("/api/login", async (req, reply) => {
    const b = req.body as { username?: unknown; password?: unknown } | undefined;
    const username = typeof b?.username === "string" ? b.username : "";
    const password = typeof b?.password === "string" ? b.password : "";
    const got = await o.authenticate(username, password);
    if (got === "busy")
      return reply.code(429).send({ error: "E_CONSOLE_BUSY", message: "too many logins at once" });
    if (!got) {
      log(`login refused for ${JSON.stringify(username.slice(0, 64))}`);
      return reply.code(401).send({ error: "E_CONSOLE_AUTH", message: "wrong name or password" });
    }
    const s = sessions.create(got.name, got.role);
    log(`login: ${got.name} (${got.role})`);
    reply.header(
      "set-cookie",
      `${COOKIE}=${s.id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.floor((s.expiresAt - clock()) / 1000)}`,
    );
    return { user: s.user, role: s.role, csrf: s.csrf };
  });

  app.post("/api/logout", async (req, reply) => {
    sessions.delete(parseCookie(req.headers.cookie, COOKIE));
    reply.header("set-cookie", `${COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
    return { ok: true };
  });

  app.get("/api/session", async (req, reply) => {
    const who = await whoever(req, reply);
    if (!who) return reply;
    return { user: who.user, role: who.role, csrf: who.session?.csrf ?? "" };
  });

  app.get("/api/events", async (req, reply) => {
    const who = await whoever(req, reply);
    if (!who) return reply;
    if (sse.size >= MAX_SSE_CLIENTS)
      return reply.code(503).send({ error: "E_CONSOLE_BUSY", message: "too many event streams" });
    reply.hijack();
    reply.raw.writeHead(200, {
      ...SECURITY_HEADERS,
      "content-type": "text/event-stream; charset=utf-8",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    reply.raw.write(
      `retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(snapshot(model, clock(), client.connected))}\n\n`,
    );
    sse.add(reply);
    req.raw.on("close", () => sse.delete(reply));
    return reply;
  });

  app.get("/api/devices/:id", async (req, reply) => {
    const who = await whoever(req, reply);
    if (!who) return reply;
    const id = (req.params as { id: string }).id;
    if (!isTopicId(id))
      return reply.code(400).send({ error: "E_USAGE", message: "not a device id" });
    return deviceDetail(model, id, clock());
  });

  app.get("/api/release", async (req, reply) => {
    const who = await operator(req, reply, "read-release");
    if (!who) return reply;
    const dir = (req.query as { dir?: unknown }).dir;
    if (typeof dir !== "string" || dir === "" || dir.length > 4096)
      return reply.code(400).send({ error: "E_USAGE", message: "dir: a release directory" });
    try {
      return actions.describeRelease(dir);
    } catch (e) {
      return failed(reply, "read-release", e);
    }
  });

  app.post("/api/rollouts", async (req, reply) => {
    const who = await operator(req, reply, "start");
    if (!who) return reply;
    try {
      const s = await actions.start(req.body as StartRequest, who.user);
      actionsTotal.inc({ action: "start", outcome: "ok" });
      return { rolloutId: s.rolloutId, state: s.state };
    } catch (e) {
      return failed(reply, "start", e);
    }
  });

  app.post("/api/rollouts/:id/:action", async (req, reply) => {
    const { id, action } = req.params as { id: string; action: string };
    if (!(CONTROL_ACTIONS as readonly string[]).includes(action))
      return reply.code(404).send({ error: "E_USAGE", message: "no such action" });
    const who = await operator(req, reply, action);
    if (!who) return reply;
    if (!isTopicId(id))
      return reply.code(400).send({ error: "E_USAGE", message: "not a rollout id" });
    const body = req.body as { reason?: unknown } | undefined;
    const reason =
      typeof body?.reason === "string" && body.reason !== ""
        ? body.reason.slice(0, 500)
        : undefined;
    try {
      const s = await actions.control(id, action as ControlAction, who.user, reason);
      actionsTotal.inc({ action, outcome: "ok" });
      return { rolloutId: s.rolloutId, state: s.state, currentWave: s.currentWave + 1 };
    } catch (e) {
      return failed(reply, action, e);
    }
  });

  await app.listen({ host: o.host, port: o.port });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : o.port;
  const host = o.host.includes(":") ? `[${o.host}]` : o.host;

  let closed: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    app,
    model,
    actions,
    ready,
    close() {
      closed ??= (async () => {
        clearInterval(refresh);
        clearInterval(keepalive);
        throttle.stop();
        client.off("message", onMessage);
        client.off("connect", onConnectChange);
        client.off("close", onConnectChange);
        await actions.close();
        for (const r of sse) r.raw.end();
        sse.clear();
        await app.close();
      })();
      return closed;
    },
  };
}
