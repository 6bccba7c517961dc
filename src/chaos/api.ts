/**
 * The chaos proxy's control API: a few JSON routes over node:http, loopback by default, so a
 * test or a tester's shell changes the faults of a running proxy (docs/chaos.md, "Control API").
 * Also the client the CLI uses (`esp-ota chaos toxic ...`).
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { ERROR_CODES, type ErrorCode, EspOtaError, isEspOtaError } from "../errors.js";
import { formatHostPort, type HostPort } from "./address.js";
import type { ChaosProxy, ChaosStats } from "./proxy.js";
import type { Toxic } from "./toxics.js";

/** Largest request body taken: a toxic is under 300 bytes of JSON. */
const MAX_BODY = 64 * 1024;

export interface ChaosStatus {
  readonly listen: string;
  readonly upstream: string;
  readonly enabled: boolean;
  readonly stats: ChaosStats;
  readonly toxics: readonly Toxic[];
}

export interface ChaosApi {
  readonly address: HostPort;
  /** `http://host:port` */
  readonly url: string;
  close(): Promise<void>;
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  E_CHAOS_TOXIC: 400,
  E_CHAOS_REQUEST: 400,
  E_CHAOS_TOXIC_NOT_FOUND: 404,
  E_CHAOS_TOXIC_EXISTS: 409,
};

function status(proxy: ChaosProxy): ChaosStatus {
  return {
    listen: formatHostPort(proxy.address),
    upstream: formatHostPort(proxy.upstream),
    enabled: proxy.enabled,
    stats: proxy.stats,
    toxics: proxy.listToxics(),
  };
}

/** `at` defaults to 127.0.0.1 port 0 (a free port): nothing is exposed by accident. */
export async function startChaosApi(
  proxy: ChaosProxy,
  at: HostPort = { host: "127.0.0.1", port: 0 },
): Promise<ChaosApi> {
  const server = createServer((req, res) => {
    handle(proxy, req)
      .then(([code, body]) => send(res, code, body))
      .catch((e: unknown) => {
        const err = isEspOtaError(e)
          ? e
          : new EspOtaError("E_INTERNAL", e instanceof Error ? e.message : String(e));
        const code = typeof err.context.status === "number" ? err.context.status : undefined;
        send(res, code ?? STATUS[err.code] ?? 500, {
          error: { code: err.code, message: err.message },
        });
      });
  });
  const address = await new Promise<HostPort>((ok, fail) => {
    server.once("error", (e) =>
      fail(
        new EspOtaError(
          "E_CHAOS_LISTEN",
          `control API cannot listen on ${formatHostPort(at)}: ${e.message}`,
          { address: formatHostPort(at) },
          e,
        ),
      ),
    );
    server.listen(at.port, at.host, () => {
      const a = server.address();
      ok(typeof a === "object" && a ? { host: a.address, port: a.port } : at);
    });
  });
  return {
    address,
    url: `http://${formatHostPort(address)}`,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, code: number, body: unknown): void {
  if (body === undefined) {
    res.writeHead(code).end();
    return;
  }
  const text = JSON.stringify(body);
  res
    .writeHead(code, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
    })
    .end(text);
}

/** E_CHAOS_REQUEST with its HTTP status (400, or 404 for no such route, 413 for too large). */
function requestError(message: string, status = 400): EspOtaError {
  return new EspOtaError("E_CHAOS_REQUEST", message, { status });
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) throw requestError(`request body over ${MAX_BODY} bytes`, 413);
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text);
  } catch {
    throw requestError("the request body is not JSON");
  }
}

/** One route per (method, path); returns [status, JSON body or undefined for none]. */
async function handle(proxy: ChaosProxy, req: IncomingMessage): Promise<[number, unknown]> {
  const path = new URL(req.url ?? "/", "http://x").pathname.replace(/\/+$/, "") || "/";
  const method = req.method ?? "GET";
  const route = `${method} ${path.startsWith("/toxics/") ? "/toxics/:name" : path}`;
  let name = "";
  try {
    if (path.startsWith("/toxics/")) name = decodeURIComponent(path.slice(8));
  } catch {
    throw requestError(`${path}: malformed percent-encoding`);
  }
  switch (route) {
    case "GET /":
      return [200, status(proxy)];
    case "GET /toxics":
      return [200, proxy.listToxics()];
    case "POST /toxics":
      return [201, proxy.addToxic((await readJson(req)) as Toxic)];
    case "GET /toxics/:name": {
      const t = proxy.listToxics().find((x) => x.name === name);
      if (!t) throw new EspOtaError("E_CHAOS_TOXIC_NOT_FOUND", `no toxic named ${name}`);
      return [200, t];
    }
    // POST as well as PATCH: Toxiproxy's clients update a toxic with POST.
    case "PATCH /toxics/:name":
    case "POST /toxics/:name": {
      const body = await readJson(req);
      if (typeof body !== "object" || body === null || Array.isArray(body))
        throw new EspOtaError(
          "E_CHAOS_TOXIC",
          "an update is a JSON object of the fields to change",
        );
      return [200, proxy.updateToxic(name, body as Record<string, unknown>)];
    }
    case "DELETE /toxics/:name":
      proxy.removeToxic(name);
      return [204, undefined];
    case "POST /reset":
      return [200, { reset: proxy.resetConnections() }];
    case "POST /enabled": {
      const body = (await readJson(req)) as { enabled?: unknown } | null;
      if (typeof body?.enabled !== "boolean")
        throw requestError('POST /enabled takes {"enabled": true|false}');
      await proxy.setEnabled(body.enabled);
      return [200, status(proxy)];
    }
    default:
      throw requestError(`no route ${method} ${path}`, 404);
  }
}

/** The API seen from a client: each call maps an error answer back to its coded error. */
export interface ChaosApiClient {
  status(): Promise<ChaosStatus>;
  list(): Promise<Toxic[]>;
  add(toxic: Toxic | Readonly<Record<string, unknown>>): Promise<Toxic>;
  update(name: string, partial: Readonly<Record<string, unknown>>): Promise<Toxic>;
  remove(name: string): Promise<void>;
  reset(): Promise<number>;
  setEnabled(enabled: boolean): Promise<ChaosStatus>;
}

/** `base`: `http://host:port`, or `host:port`. */
export function chaosApiClient(base: string): ChaosApiClient {
  const root = (/^https?:\/\//.test(base) ? base : `http://${base}`).replace(/\/+$/, "");
  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    let res: Response;
    try {
      res = await fetch(`${root}${path}`, {
        method,
        ...(body === undefined
          ? {}
          : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
      });
    } catch (e) {
      const cause = (e as { cause?: { message?: string } }).cause?.message;
      throw new EspOtaError(
        "E_CHAOS_API",
        `cannot reach the control API at ${root}: ${cause ?? (e as Error).message}`,
        { api: root },
        e,
      );
    }
    if (res.status === 204) return undefined;
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new EspOtaError("E_CHAOS_API", `${method} ${path}: HTTP ${res.status}, not JSON`, {
        api: root,
      });
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } }).error;
      const code =
        err?.code && Object.hasOwn(ERROR_CODES, err.code) ? (err.code as ErrorCode) : "E_CHAOS_API";
      throw new EspOtaError(code, err?.message ?? `${method} ${path}: HTTP ${res.status}`, {
        api: root,
      });
    }
    return json;
  };
  const at = (name: string) => `/toxics/${encodeURIComponent(name)}`;
  return {
    status: async () => (await call("GET", "/")) as ChaosStatus,
    list: async () => (await call("GET", "/toxics")) as Toxic[],
    add: async (t) => (await call("POST", "/toxics", t)) as Toxic,
    update: async (name, p) => (await call("PATCH", at(name), p)) as Toxic,
    remove: async (name) => {
      await call("DELETE", at(name));
    },
    reset: async () => ((await call("POST", "/reset")) as { reset: number }).reset,
    setEnabled: async (enabled) => (await call("POST", "/enabled", { enabled })) as ChaosStatus,
  };
}
