/**
 * The probe endpoint of a daemon (docs/metrics.md): `/metrics` (a prom-client registry in the
 * Prometheus text format), `/healthz` (the process answers) and `/readyz` (the daemon's own
 * readiness checks). Used by the gateway agent and the embedded broker; the operator console
 * serves the same three paths from its own fastify app (src/console/server.ts).
 *
 * node:http rather than fastify: three GET routes with no body, no session and no parser need
 * nothing fastify adds, and the agent then loads no HTTP framework at start (docs/benchmarks.md
 * "CLI start-up"). Nothing here is authenticated: the default address is loopback, and what a
 * scrape shows (counts, codes, device states) is what the retained presence shows anyway.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Registry } from "prom-client";
import { EspOtaError } from "../errors.js";

/** A listen address, `host:port` (IPv6 in brackets); port 0 picks a free one. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** Why `text` is not a listen address, or undefined when it is one. */
export function listenProblem(text: string): string | undefined {
  const r = splitListen(text);
  return typeof r === "string" ? r : undefined;
}

/** `127.0.0.1:9477`, `[::1]:9477`, `localhost:9477`; RangeError with the reason otherwise. */
export function parseListen(text: string): ListenAddress {
  const r = splitListen(text);
  if (typeof r === "string") throw new RangeError(`${JSON.stringify(text.slice(0, 80))}: ${r}`);
  return r;
}

function splitListen(text: string): ListenAddress | string {
  if (typeof text !== "string" || text.length === 0 || text.length > 300)
    return "expected host:port, e.g. 127.0.0.1:9477";
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  if (!m)
    return "expected host:port, e.g. 127.0.0.1:9477 (an IPv6 address in brackets: [::1]:9477)";
  const port = Number(m[3]);
  if (port > 65535) return `port ${port} is outside 0..65535`;
  return { host: m[1] ?? m[2]!, port };
}

/** Whether `host` is a loopback address or name (a probe there is reachable from this host only). */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** What /readyz answers: ready, or the checks that failed (each a short phrase). */
export type Readiness = { ok: true } | { ok: false; failing: string[] };

export interface ProbeServerOptions extends ListenAddress {
  registry: Registry;
  ready(): Readiness | Promise<Readiness>;
}

export interface ProbeServer {
  /** http://HOST:PORT, with the port chosen when 0 was asked for. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * A scrape that takes longer than this is answered 503: a collector stuck on a slow disk (the
 * staging directory, a broker's store) must not hold Prometheus's connection for its whole
 * scrape_timeout.
 */
const SCRAPE_TIMEOUT_MS = 5000;

function send(res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, {
    "content-type": type,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  res.end(body);
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`took over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function handle(o: ProbeServerOptions, req: IncomingMessage, res: ServerResponse) {
  const path = (req.url ?? "/").split("?", 1)[0];
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
    return;
  }
  switch (path) {
    case "/healthz":
      send(res, 200, "text/plain; charset=utf-8", "ok\n");
      return;
    case "/readyz": {
      const r = await withTimeout(Promise.resolve(o.ready()), SCRAPE_TIMEOUT_MS);
      if (r.ok) send(res, 200, "text/plain; charset=utf-8", "ready\n");
      else send(res, 503, "text/plain; charset=utf-8", `not ready: ${r.failing.join("; ")}\n`);
      return;
    }
    case "/metrics": {
      const text = await withTimeout(o.registry.metrics(), SCRAPE_TIMEOUT_MS);
      send(res, 200, o.registry.contentType, text);
      return;
    }
    default:
      send(res, 404, "text/plain; charset=utf-8", "not found: /metrics, /healthz, /readyz\n");
  }
}

/** Starts listening; E_METRICS_LISTEN when the address cannot be bound. */
export async function startProbeServer(o: ProbeServerOptions): Promise<ProbeServer> {
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    handle(o, req, res).catch((e: unknown) => {
      if (!res.headersSent)
        send(res, 503, "text/plain; charset=utf-8", `unavailable: ${String(e).slice(0, 200)}\n`);
      else res.destroy();
    });
  });
  // Probes are small GETs: a client that sends nothing for this long is dropped.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(o.port, o.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    throw new EspOtaError(
      "E_METRICS_LISTEN",
      `cannot serve metrics on ${formatHost(o.host)}:${o.port}: ${(e as Error).message}`,
      { host: o.host, port: o.port },
      e,
    );
  }
  // The daemon keeps the process alive, never its probe listener.
  server.unref();
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${formatHost(o.host)}:${port}`,
    port,
    close() {
      closing ??= new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

function formatHost(h: string): string {
  return h.includes(":") ? `[${h}]` : h;
}
