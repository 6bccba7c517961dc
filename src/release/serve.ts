/**
 * `esp-ota serve DIR`: a static HTTP server for a release directory, for the demo, the tests and
 * small sites (large fleets publish to a CDN; the manifest's URLs point anywhere). GET and HEAD,
 * one byte range (resumed downloads), strong ETags, If-Range and If-None-Match. The decisions are
 * in range.ts; this file only does the sockets and files.
 */
import { createReadStream, realpathSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join, sep } from "node:path";
import { ifNoneMatchHits, ifRangeAllows, makeEtag, parseRange, safePathSegments } from "./range.js";

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  json: "application/json",
  bin: "application/octet-stream",
  md: "text/markdown; charset=utf-8",
  txt: "text/plain; charset=utf-8",
};

export interface ServeOptions {
  /** Called once per request after the response is sent (for a log line). */
  onRequest?: (method: string, url: string, status: number) => void;
}

/** The request handler; createStaticServer wraps it in an http.Server. */
export function staticHandler(root: string, opts: ServeOptions = {}) {
  const realRoot = realpathSync(root);
  return (req: IncomingMessage, res: ServerResponse): void => {
    const method = req.method ?? "GET";
    const done = (status: number) => opts.onRequest?.(method, req.url ?? "", status);
    const plain = (status: number, text: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": String(Buffer.byteLength(text)),
        ...headers,
      });
      res.end(method === "HEAD" ? undefined : text);
      done(status);
    };
    if (method !== "GET" && method !== "HEAD") {
      plain(405, "method not allowed\n", { Allow: "GET, HEAD" });
      return;
    }
    const segments = safePathSegments(req.url ?? "/");
    if (segments === null || segments.length === 0) {
      plain(404, "not found\n");
      return;
    }
    // Symlinks inside the tree must not lead out of it either.
    let path: string;
    let st: ReturnType<typeof statSync>;
    try {
      path = realpathSync(join(realRoot, ...segments));
      if (!path.startsWith(realRoot + sep)) throw new Error("outside root");
      st = statSync(path);
      if (!st.isFile()) throw new Error("not a file");
    } catch {
      plain(404, "not found\n");
      return;
    }
    const size = st.size;
    const etag = makeEtag(size, st.mtimeMs);
    const ext = path.slice(path.lastIndexOf(".") + 1);
    const common: Record<string, string> = {
      ETag: etag,
      "Last-Modified": st.mtime.toUTCString(),
      "Accept-Ranges": "bytes",
      "Cache-Control": "no-cache",
    };
    if (ifNoneMatchHits(req.headers["if-none-match"], etag)) {
      res.writeHead(304, common);
      res.end();
      done(304);
      return;
    }
    const h = req.headers["if-range"];
    const ifRange = Array.isArray(h) ? h.join(",") : h;
    const range = ifRangeAllows(ifRange, etag)
      ? parseRange(req.headers.range, size)
      : ({ kind: "none" } as const);
    if (range.kind === "unsatisfiable") {
      plain(416, "range not satisfiable\n", { ...common, "Content-Range": `bytes */${size}` });
      return;
    }
    const [status, start, end] =
      range.kind === "range" ? [206, range.start, range.end] : [200, 0, size - 1];
    res.writeHead(status, {
      ...common,
      "Content-Type": CONTENT_TYPES[ext] ?? "application/octet-stream",
      "Content-Length": String(end - start + 1),
      ...(status === 206 ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}),
    });
    if (method === "HEAD" || size === 0) {
      res.end();
      done(status);
      return;
    }
    const stream = createReadStream(path, { start, end });
    stream.on("error", () => res.destroy());
    res.on("close", () => stream.destroy());
    stream.pipe(res).on("finish", () => done(status));
  };
}

export function createStaticServer(root: string, opts: ServeOptions = {}): Server {
  return createServer(staticHandler(root, opts));
}
