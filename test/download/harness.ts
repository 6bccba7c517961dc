/**
 * Real HTTP(S) servers on loopback for the download tests (STYLE.md §14), with misbehaviour
 * injected per request: a handler sees each request's number and headers and answers as it
 * likes. `sendFile` answers like a correct server (200/206 per Range and If-Range, using the
 * release server's own range decisions) and can cut the body short in several ways.
 */
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { ifRangeAllows, parseRange } from "../../src/release/range.js";

export interface Hit {
  /** 0 for the first request this server saw. */
  n: number;
  url: string;
  range?: string;
  ifRange?: string;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, hit: Hit) => void;

export interface TestServer {
  url(path?: string): string;
  hits: Hit[];
  close(): Promise<void>;
}

export async function startServer(
  handle: Handler,
  tls?: { key: string; cert: string },
): Promise<TestServer> {
  const hits: Hit[] = [];
  const sockets = new Set<Socket>();
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const hit: Hit = {
      n: hits.length,
      url: req.url ?? "",
      ...(req.headers.range !== undefined ? { range: req.headers.range } : {}),
      ...(typeof req.headers["if-range"] === "string" ? { ifRange: req.headers["if-range"] } : {}),
    };
    hits.push(hit);
    handle(req, res, hit);
  };
  const server: Server = tls ? createHttpsServer(tls, onRequest) : createServer(onRequest);
  // TLS connections do not show up in closeAllConnections before their first request.
  server.on(tls ? "secureConnection" : "connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  const base = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  return {
    url: (path = "/image.bin") => base + path,
    hits,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((ok) => server.close(ok));
    },
  };
}

/** How `sendFile` ends a body cut short after `cutAt` bytes of this response. */
export type Cut =
  /** Close the connection (FIN) after the bytes before the cut: "other side closed". */
  | "fin"
  /** Reset the connection (RST). */
  | "rst"
  /** Keep the connection open and send nothing more. */
  | "stall";

export interface SendOptions {
  etag?: string;
  /** Send only this many body bytes of this response, then end it as `how` says. */
  cutAt?: number;
  how?: Cut;
  /** Called when the cut bytes were handed to the kernel (before the cut). */
  beforeCut?: () => Promise<void> | void;
}

/** Answers like a correct server: 200, or 206 for `Range: bytes=N-` when If-Range allows. */
export function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  body: Uint8Array,
  o: SendOptions = {},
): void {
  const etag = o.etag ?? `"${sha256Hex(body).slice(0, 16)}"`;
  const ifRange = req.headers["if-range"];
  const range = ifRangeAllows(typeof ifRange === "string" ? ifRange : undefined, etag)
    ? parseRange(req.headers.range, body.length)
    : ({ kind: "none" } as const);
  if (range.kind === "unsatisfiable") {
    res.writeHead(416, { "Content-Range": `bytes */${body.length}`, "Content-Length": "0" });
    res.end();
    return;
  }
  const [status, start, end] =
    range.kind === "range" ? [206, range.start, range.end] : [200, 0, body.length - 1];
  res.writeHead(status, {
    ETag: etag,
    "Accept-Ranges": "bytes",
    "Content-Length": String(end - start + 1),
    ...(status === 206 ? { "Content-Range": `bytes ${start}-${end}/${body.length}` } : {}),
  });
  const part = body.subarray(start, end + 1);
  if (o.cutAt === undefined || o.cutAt >= part.length) {
    res.end(part);
    return;
  }
  res.write(part.subarray(0, o.cutAt), async () => {
    await o.beforeCut?.();
    if (o.how === "rst") res.socket?.resetAndDestroy();
    // end(), not destroy(): destroy would drop bytes still queued in the socket.
    else if (o.how === "fin" || o.how === undefined) res.socket?.end();
  });
}

export function sha256Hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Deterministic test content. */
export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** A promise and the function that resolves it. */
export function latch(): { promise: Promise<void>; open: () => void } {
  let open = () => {};
  const promise = new Promise<void>((ok) => {
    open = ok;
  });
  return { promise, open };
}
