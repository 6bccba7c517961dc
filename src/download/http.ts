/**
 * The undici adapter: one Agent per download (its own timeouts and trusted CA, closed at the
 * end), and a GET that follows redirects by hand so each hop is checked by redirectTarget
 * (http/https only, never https -> http, at most MAX_REDIRECTS) and the Range and If-Range headers
 * go to the final server. Errors come out as thrown transport errors, classified by the caller,
 * which knows why it may have aborted the request.
 */
import type { Readable } from "node:stream";
import { Agent, type Dispatcher, request } from "undici";
import { EspOtaError } from "../errors.js";
import { quote } from "../text.js";
import { type DownloadLimits, header, redactUrl, redirectTarget, urlAllowed } from "./policy.js";

/** TLS trust for downloads. */
export interface TlsPinning {
  /**
   * PEM certificate(s): trust only these CAs for https downloads, instead of the system's (a
   * private CA). Default: the system CAs.
   */
  ca?: string | Uint8Array;
  /** Verify the server's certificate. Default true; false is for tests against throwaway servers. */
  rejectUnauthorized?: boolean;
}

const USER_AGENT = "esp-ota-gateway";

export function createAgent(limits: DownloadLimits, tls: TlsPinning = {}): Agent {
  const ca =
    tls.ca === undefined ? undefined : typeof tls.ca === "string" ? tls.ca : Buffer.from(tls.ca);
  return new Agent({
    connect: {
      timeout: limits.connectTimeoutMs,
      ...(ca !== undefined ? { ca } : {}),
      ...(tls.rejectUnauthorized !== undefined
        ? { rejectUnauthorized: tls.rejectUnauthorized }
        : {}),
    },
    // Both are "no byte for this long": before the headers, and between body chunks.
    headersTimeout: limits.idleTimeoutMs,
    bodyTimeout: limits.idleTimeoutMs,
  });
}

export interface Response {
  /** The URL that answered (after redirects). */
  url: string;
  status: number;
  headers: Dispatcher.ResponseData["headers"];
  /** Already being drained (unpausedBody): read it at once or drop it with `discard`. */
  body: UnpausedBody;
}

/**
 * undici never pauses a body whose reader's buffer is this large (push() returns false only at
 * the highWaterMark). Why it must never pause: see unpausedBody. What bounds memory instead is
 * UnpausedBody's byte limit.
 */
const NEVER_PAUSE = Number.MAX_SAFE_INTEGER;

/**
 * GET `url`, following redirects. `headers` are sent to every hop (Range must reach the server
 * that has the file). A refused redirect throws E_DOWNLOAD_REDIRECT, one to a URL outside
 * `allowed` E_DOWNLOAD_URL_NOT_ALLOWED.
 */
export async function get(
  dispatcher: Dispatcher,
  url: string,
  headers: Readonly<Record<string, string>>,
  signal: AbortSignal,
  /** URL prefixes every hop must be under (urlAllowed); empty or absent: any. */
  allowed: readonly string[] = [],
  /**
   * The most body bytes held in memory for a reader (unpausedBody); the caller refuses a body
   * longer than this anyway (the manifest's size, a document's cap). Default 64 MiB.
   */
  maxBodyBytes = 64 * 1024 * 1024,
): Promise<Response> {
  let at = url;
  for (let hops = 0; ; hops++) {
    const res = await request(at, {
      dispatcher,
      method: "GET",
      headers: { "user-agent": USER_AGENT, "accept-encoding": "identity", ...headers },
      signal,
      highWaterMark: NEVER_PAUSE,
    });
    const next = redirectTarget(res.statusCode, header(res.headers, "location"), at, hops);
    if (next.kind === "none")
      return {
        url: at,
        status: res.statusCode,
        headers: res.headers,
        body: unpausedBody(res.body, maxBodyBytes),
      };
    // A redirect's body is not wanted; dropping it also frees the connection at once.
    discard(res.body);
    if (next.kind === "fail")
      throw new EspOtaError(next.code, `${next.reason} (at ${quote(redactUrl(at))})`, {
        status: res.statusCode,
      });
    // Checked before the request, so a server on the list cannot send us to one that is not.
    if (!urlAllowed(next.url, allowed))
      throw new EspOtaError(
        "E_DOWNLOAD_URL_NOT_ALLOWED",
        `${quote(redactUrl(at))} redirects to ${quote(redactUrl(next.url))}, which is not under download.allowedUrls`,
        { status: res.statusCode },
      );
    at = next.url;
  }
}

/**
 * Drops a body not (or no longer) wanted. undici's body emits an AbortError when destroyed
 * unread; nobody waits for that error, so it is swallowed here rather than becoming uncaught.
 */
export function discard(body: Readable | UnpausedBody): void {
  if (body instanceof UnpausedBody) {
    body.destroy();
    return;
  }
  body.on("error", () => {});
  body.destroy();
}

/**
 * A response body read without ever pausing undici's parser, as an async iterable of chunks.
 *
 * Why: undici 7.30.2 and 7.30.3 (the newest 7.x; 8.x needs Node 22) throw an AssertionError
 * (`assert(!this.paused)`, client-h1.js onHttpSocketEnd) from a socket event listener, where no
 * caller can catch it, when the server closes the connection while the parser is paused for
 * backpressure at the body's last byte. A plain `Connection: close` server with a 64 KiB or
 * 128 KiB body did it to `for await (chunk of res.body)` (issue 12, defect 2;
 * test/download/backpressure.test.ts), and a resumed download crashed the agent on every restart.
 * The parser pauses only when the body's push() returns false; with the request's highWaterMark
 * at NEVER_PAUSE and this reader draining every chunk as it is pushed ('data', flowing mode), it
 * never does.
 *
 * What backpressure did instead, bounding memory, is done by `limit`: at most `limit` bytes (plus
 * the one chunk that crosses it, so the reader sees that the body is too long) are queued; bytes
 * after that are dropped, and the reader, which refuses a body past its own limit, aborts. The
 * queue holds what the network delivered faster than the staging file took it: on a working disk
 * one chunk or two.
 */
export function unpausedBody(raw: Readable, limit: number): UnpausedBody {
  return new UnpausedBody(raw, limit);
}

export class UnpausedBody implements AsyncIterable<Buffer> {
  private readonly queue: Buffer[] = [];
  private received = 0;
  private over = false;
  private ended = false;
  private failed: { error: unknown } | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly raw: Readable,
    readonly limit: number,
  ) {
    if (!Number.isSafeInteger(limit) || limit < 0)
      throw new RangeError("limit must be a non-negative integer");
    raw.on("data", (chunk: Buffer) => {
      if (this.over) return;
      this.received += chunk.length;
      if (this.received > limit) this.over = true;
      this.queue.push(chunk);
      this.notify();
    });
    raw.on("end", () => {
      this.ended = true;
      this.notify();
    });
    raw.on("error", (error: unknown) => {
      this.failed ??= { error };
      this.notify();
    });
    raw.on("close", () => {
      if (!this.ended) this.failed ??= { error: new Error("the response body closed early") };
      this.notify();
    });
  }

  /** Bytes the server sent so far, counted up to the first chunk past `limit`. */
  get bytesReceived(): number {
    return this.received;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    try {
      for (;;) {
        const chunk = this.queue.shift();
        if (chunk !== undefined) yield chunk;
        // What arrived before a failure is still written: it is resumable (kept) data.
        else if (this.failed !== undefined) throw this.failed.error;
        else if (this.ended) return;
        else
          await new Promise<void>((ok) => {
            this.wake = ok;
          });
      }
    } finally {
      // A reader that stops early (break, throw) drops the rest and frees the connection.
      if (!this.ended) this.destroy();
    }
  }

  destroy(): void {
    this.queue.length = 0;
    this.over = true;
    if (!this.raw.destroyed) this.raw.destroy();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
