/**
 * The download decisions, pure (STYLE.md §1): limits and their defaults, backoff, what a response
 * status and its headers mean for a download, which failures are retried where, and how a thrown
 * transport error is named. No socket, file or timer here: download.ts and its adapters do the I/O
 * and ask these functions what to do. docs/downloads.md is the prose for the same rules.
 */
import type { ErrorCode } from "../errors.js";
import { quote } from "../text.js";

/**
 * Per-download limits; the agent configuration's `download.*` keys have the same names
 * (docs/configuration.md). Each default and the reason for it is on the field.
 */
export interface DownloadLimits {
  /**
   * TCP + TLS handshake per connection. Default 10 s: a LAN needs milliseconds; a cellular uplink
   * needs a few round trips of up to a second each plus one lost-SYN retransmission (1 s, then 3 s).
   */
  connectTimeoutMs: number;
  /**
   * No byte (headers or body) for this long aborts the attempt, which is retried (undici
   * headersTimeout and bodyTimeout). Default 30 s: longer than TCP's first retransmissions
   * (1+2+4+8 s) so a short outage is ridden through, far shorter than the ~15 minutes Linux keeps
   * a dead connection open (tcp_retries2).
   */
  idleTimeoutMs: number;
  /**
   * The whole download: every attempt on every mirror and every backoff. Default 600 s: a 4 MB
   * image (an ESP32 OTA slot's usual upper bound) at 7 KB/s. Bounds how long any server, however
   * it behaves, can keep a download slot busy (TUF's slow-retrieval attack).
   */
  totalTimeoutMs: number;
  /**
   * The rate over the last `minRateWindowMs` below this aborts the attempt (E_DOWNLOAD_SLOW), which
   * is retried. Default 1024 B/s: far below any working link (GPRS carries ~5 KB/s), far above a
   * server dripping bytes just often enough to beat `idleTimeoutMs`. 0 turns the floor off.
   */
  minRateBytesPerSec: number;
  /**
   * The window `minRateBytesPerSec` is measured over, counted from the attempt's start. Default
   * 20 s: long enough that TCP slow start and a brief stall do not trip it.
   */
  minRateWindowMs: number;
  /**
   * Attempts per mirror after the first, for retryable failures (DOWNLOAD_CODE_ACTION). Default 6:
   * with the default backoff the waits are capped at 0.5+1+2+4+8+16 s, so one mirror rides through
   * a server restart or an outage of about half a minute before the next mirror is tried.
   */
  retries: number;
  /**
   * The first retry waits up to this; each further retry doubles the cap, with full jitter.
   * Default 500 ms: a dropped connection is retried at once in human terms, and jitter spreads a
   * fleet of gateways that all lost the same server at once (AWS Architecture Blog, "Exponential
   * Backoff and Jitter", 2015).
   */
  backoffBaseMs: number;
  /** The longest wait between attempts, and the most a Retry-After is honoured. Default 30 s. */
  backoffMaxMs: number;
}

export const DEFAULT_LIMITS: DownloadLimits = Object.freeze({
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  totalTimeoutMs: 600_000,
  minRateBytesPerSec: 1024,
  minRateWindowMs: 20_000,
  retries: 6,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
});

/** The longest delay Node.js timers can hold; a longer one fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** Defaults overlaid with the given keys (undefined keys keep the default); misuse throws. */
export function resolveLimits(partial: Partial<DownloadLimits> = {}): DownloadLimits {
  const out: DownloadLimits = { ...DEFAULT_LIMITS };
  for (const k of Object.keys(DEFAULT_LIMITS) as (keyof DownloadLimits)[]) {
    const v = partial[k];
    if (v !== undefined) out[k] = v;
  }
  const check = (k: keyof DownloadLimits, min: number) => {
    const v = out[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > MAX_TIMER_MS)
      throw new RangeError(`download limit ${k} must be an integer in ${min}..${MAX_TIMER_MS}`);
  };
  for (const k of [
    "connectTimeoutMs",
    "idleTimeoutMs",
    "totalTimeoutMs",
    "minRateWindowMs",
  ] as const)
    check(k, 1);
  for (const k of ["minRateBytesPerSec", "retries", "backoffBaseMs", "backoffMaxMs"] as const)
    check(k, 0);
  if (out.backoffBaseMs > out.backoffMaxMs)
    throw new RangeError("download limit backoffBaseMs must not exceed backoffMaxMs");
  return out;
}

/**
 * Full-jitter exponential backoff: a uniformly random delay in [0, min(max, base * 2^attempt)),
 * `attempt` counting from 0 for the first retry. Full jitter rather than "equal" or none: it
 * spreads synchronized clients best for the least total wait (AWS, "Exponential Backoff and
 * Jitter"). `random` must return a number in [0, 1), like Math.random.
 */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random: () => number,
): number {
  if (!Number.isInteger(attempt) || attempt < 0)
    throw new RangeError("attempt must be a non-negative integer");
  if (!(baseMs >= 0) || !(maxMs >= 0)) throw new RangeError("baseMs and maxMs must be >= 0");
  const r = random();
  if (!(r >= 0 && r < 1)) throw new RangeError("random() must return a number in [0, 1)");
  // 2 ** attempt overflows to Infinity past 1023: min() then picks maxMs, which is right,
  // except that 0 * Infinity is NaN (found by the property test), so a zero base stays zero.
  const cap = baseMs === 0 ? 0 : Math.min(maxMs, baseMs * 2 ** attempt);
  return cap * r;
}

/**
 * Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, in milliseconds from `nowMs`;
 * undefined when absent or unparseable. A date in the past is 0.
 */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - nowMs);
}

export interface ContentRange {
  /** First and last byte position; undefined for the unsatisfied form `bytes * /total`. */
  start?: number;
  end?: number;
  /** The complete length; undefined for `/*`. */
  total?: number;
}

/** Content-Range (RFC 9110 §14.4) in bytes; null when absent or malformed. */
export function parseContentRange(value: string | undefined): ContentRange | null {
  if (value === undefined) return null;
  const m = /^\s*bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)\s*$/i.exec(value);
  if (!m) return null;
  const num = (s: string | undefined) => (s === undefined || s === "*" ? undefined : Number(s));
  const r: ContentRange = {};
  const start = num(m[1]);
  const end = num(m[2]);
  const total = num(m[3]);
  for (const n of [start, end, total]) if (n !== undefined && !Number.isSafeInteger(n)) return null;
  if (start !== undefined && end !== undefined) {
    if (end < start) return null;
    r.start = start;
    r.end = end;
  }
  if (total !== undefined) {
    if (r.end !== undefined && r.end >= total) return null;
    r.total = total;
  } else if (r.start === undefined) return null; // `bytes */*` says nothing
  return r;
}

/** Response header values as undici gives them (lower-case names). */
export type HeaderMap = Readonly<Record<string, string | string[] | undefined>>;

export function header(h: HeaderMap, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

export type FailureCode = Extract<ErrorCode, `E_DOWNLOAD_${string}`>;

export type Failure = { kind: "fail"; code: FailureCode; reason: string; retryAfterMs?: number };

/** Write the body from `start` (0 = start over); `length` bytes when the response said so. */
export type Accept = {
  kind: "accept";
  start: number;
  length: number | undefined;
  etag: string | undefined;
};

export type ImageDecision =
  | Accept
  | Failure
  /** 416 and every byte is already staged: verify the hash. */
  | { kind: "complete" }
  /** The staged bytes do not fit this response: discard them and ask again from 0. */
  | { kind: "restart"; reason: string };

const fail = (code: FailureCode, reason: string): Failure => ({ kind: "fail", code, reason });

/**
 * What every response shares: retryable statuses, and for a 200/206 an identity body and a
 * well-formed Content-Length. Returns the failure, or the length and strong ETag to go on with.
 */
function commonChecks(
  status: number,
  headers: HeaderMap,
  nowMs: number,
): Failure | { kind: "ok"; length: number | undefined; etag: string | undefined } | null {
  if (status === 408 || status === 429 || (status >= 500 && status <= 599)) {
    const retryAfterMs = parseRetryAfter(header(headers, "retry-after"), nowMs);
    return {
      ...fail("E_DOWNLOAD_SERVER", `the server answered HTTP ${status}`),
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    };
  }
  if (status !== 200 && status !== 206) return null;
  // A compressed body is not the file's bytes, and its offsets are not the file's offsets.
  const encoding = header(headers, "content-encoding")?.trim().toLowerCase();
  if (encoding !== undefined && encoding !== "" && encoding !== "identity")
    return fail(
      "E_DOWNLOAD_RESPONSE",
      `the body is encoded (Content-Encoding: ${quote(encoding, 40)})`,
    );
  const clText = header(headers, "content-length");
  let length: number | undefined;
  if (clText !== undefined) {
    length = /^\s*\d+\s*$/.test(clText) ? Number(clText) : Number.NaN;
    if (!Number.isSafeInteger(length))
      return fail(
        "E_DOWNLOAD_RESPONSE",
        `Content-Length ${JSON.stringify(quote(clText, 40))} is not a length`,
      );
  }
  return { kind: "ok", length, etag: strongEtag(header(headers, "etag")) };
}

/** Any status that is neither retried nor usable: 4xx refuses, other 2xx/3xx cannot be used. */
function unusable(status: number): Failure {
  return fail(
    status >= 200 && status < 300 ? "E_DOWNLOAD_RESPONSE" : "E_DOWNLOAD_HTTP",
    `the server answered HTTP ${status}`,
  );
}

/**
 * What a response (after redirects) means for an image of exactly `size` bytes of which `offset`
 * are staged (a Range request when offset > 0). RFC 9110 §14 (ranges), §13.1.5 (If-Range).
 */
export function decideImageResponse(
  size: number,
  offset: number,
  status: number,
  headers: HeaderMap,
  nowMs: number,
): ImageDecision {
  const sizeFail = (total: number) =>
    fail("E_DOWNLOAD_SIZE", `the server's file is ${total} bytes, the manifest says ${size}`);
  const ranged = offset > 0;
  if (status === 416 && ranged) {
    const cr = parseContentRange(header(headers, "content-range"));
    if (cr?.total !== undefined && cr.total !== size) return sizeFail(cr.total);
    if (offset === size) return { kind: "complete" };
    return { kind: "restart", reason: `the server has no byte at ${offset} (416)` };
  }
  const c = commonChecks(status, headers, nowMs);
  if (c === null) return unusable(status);
  if (c.kind === "fail") return c;
  if (status === 200) {
    // To a Range request, a 200 is the whole current file (If-Range failed, or the server
    // ignores Range): start over, which is correct, not an error (RFC 9110 §13.1.5).
    if (c.length !== undefined && c.length !== size) return sizeFail(c.length);
    return { kind: "accept", start: 0, length: c.length, etag: c.etag };
  }
  // 206
  if (!ranged) return fail("E_DOWNLOAD_RESPONSE", "206 to a request without Range");
  const cr = parseContentRange(header(headers, "content-range"));
  if (cr === null || cr.start === undefined || cr.end === undefined)
    return fail("E_DOWNLOAD_RESPONSE", "206 without a valid Content-Range");
  if (cr.total !== undefined && cr.total !== size) return sizeFail(cr.total);
  if (cr.end >= size)
    return fail(
      "E_DOWNLOAD_SIZE",
      `the server sent bytes up to ${cr.end}, past the manifest's ${size}`,
    );
  if (cr.start !== offset)
    return {
      kind: "restart",
      reason: `asked for bytes from ${offset}, the server sent from ${cr.start}`,
    };
  const rangeLength = cr.end - cr.start + 1;
  if (c.length !== undefined && c.length !== rangeLength)
    return fail(
      "E_DOWNLOAD_RESPONSE",
      `Content-Length ${c.length} disagrees with Content-Range ${cr.start}-${cr.end}`,
    );
  return { kind: "accept", start: offset, length: rangeLength, etag: c.etag };
}

/** What a response means for a whole document of at most `maxBytes` (no Range is sent). */
export function decideDocumentResponse(
  maxBytes: number,
  status: number,
  headers: HeaderMap,
  nowMs: number,
): Accept | Failure {
  const c = commonChecks(status, headers, nowMs);
  if (c === null) return unusable(status);
  if (c.kind === "fail") return c;
  if (status === 206) return fail("E_DOWNLOAD_RESPONSE", "206 to a request without Range");
  if (c.length !== undefined && c.length > maxBytes)
    return fail(
      "E_DOWNLOAD_TOO_LARGE",
      `the document is ${c.length} bytes, more than the ${maxBytes} allowed`,
    );
  return { kind: "accept", start: 0, length: c.length, etag: c.etag };
}

/**
 * The ETag usable in If-Range: strong only (RFC 9110 §13.1.5: a client MUST NOT send a weak tag
 * in If-Range), and only in its quoted form.
 */
export function strongEtag(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  return /^"[\x21\x23-\x7e\x80-\xff]*"$/.test(v) ? v : undefined;
}

/** The statuses whose Location we follow (RFC 9110 §15.4). */
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * At most this many redirects per request. Bounded because every hop is a request the server
 * chooses and a loop would otherwise spend the whole time budget; a CDN needs one or two hops.
 */
export const MAX_REDIRECTS = 3;

export type RedirectDecision =
  | { kind: "none" }
  | { kind: "follow"; url: string }
  | { kind: "fail"; code: FailureCode; reason: string };

/** Whether a response is a redirect to follow, where to, or a redirect we refuse. */
export function redirectTarget(
  status: number,
  location: string | undefined,
  from: string,
  hops: number,
): RedirectDecision {
  if (!REDIRECTS.has(status)) return { kind: "none" };
  if (location === undefined || location.trim() === "")
    return { kind: "fail", code: "E_DOWNLOAD_REDIRECT", reason: `HTTP ${status} without Location` };
  if (hops >= MAX_REDIRECTS)
    return {
      kind: "fail",
      code: "E_DOWNLOAD_REDIRECT",
      reason: `more than ${MAX_REDIRECTS} redirects`,
    };
  let to: URL;
  try {
    to = new URL(location.trim(), from);
  } catch {
    return { kind: "fail", code: "E_DOWNLOAD_REDIRECT", reason: "a Location that is not a URL" };
  }
  if (to.protocol !== "http:" && to.protocol !== "https:")
    return {
      kind: "fail",
      code: "E_DOWNLOAD_REDIRECT",
      reason: `a redirect to ${quote(to.protocol, 40)} (only http and https are fetched)`,
    };
  // A pinned CA (download.ca) means "only talk to our server": a hop to plain http would drop it.
  if (new URL(from).protocol === "https:" && to.protocol === "http:")
    return { kind: "fail", code: "E_DOWNLOAD_REDIRECT", reason: "a redirect from https to http" };
  to.hash = "";
  return { kind: "follow", url: to.toString() };
}

/** An absolute http(s) URL, or why not. */
export function checkUrl(url: string): { ok: true; url: URL } | { ok: false; reason: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { ok: false, reason: "not an absolute URL" };
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    return {
      ok: false,
      reason: `${quote(u.protocol, 40)} URLs are not fetched (only http and https)`,
    };
  return { ok: true, url: u };
}

/**
 * Why `prefix` cannot be an entry of an allow-list of URL prefixes, or undefined when it can: an
 * absolute http(s) URL with a host, without user info, query or fragment.
 */
export function allowListEntryProblem(prefix: string): string | undefined {
  let u: URL;
  try {
    u = new URL(prefix);
  } catch {
    return "not an absolute URL";
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    return `${quote(u.protocol, 40)} URLs are never fetched (only http and https)`;
  if (u.hostname === "") return "no host";
  if (u.username !== "" || u.password !== "") return "a prefix has no user name or password";
  if (u.search !== "" || u.hash !== "") return "a prefix has no query or fragment";
  return undefined;
}

/**
 * Whether `url` may be fetched under an allow-list of URL prefixes (the agent's
 * download.allowedUrls; empty: any http(s) URL). Compared after WHATWG URL parsing, so tricks in
 * the text do not count: the origin (scheme, host, port) must equal an entry's, and the
 * normalised path (dot segments resolved, percent-encoding as the parser leaves it) must start
 * with the entry's path. `https://updates.example.com@evil.example/` is judged by its real host,
 * and a URL with user info is never allowed by a non-empty list. End a directory prefix with
 * "/": `https://h/fw` also allows `https://h/fwx/...`.
 */
export function urlAllowed(url: string, prefixes: readonly string[]): boolean {
  if (prefixes.length === 0) return true;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (u.username !== "" || u.password !== "") return false;
  for (const prefix of prefixes) {
    let p: URL;
    try {
      p = new URL(prefix);
    } catch {
      continue;
    }
    if (u.origin === p.origin && u.pathname.startsWith(p.pathname)) return true;
  }
  return false;
}

/**
 * A URL as it may appear in logs, errors and the sidecar: no user name or password, and the query
 * replaced (pre-signed CDN URLs carry a bearer signature there). Two URLs of one object that
 * differ only in their signature redact to the same string, which is what resume wants.
 */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "(not a URL)";
  }
  return `${u.protocol}//${u.host}${u.pathname}${u.search ? "?(query)" : ""}`;
}

/** Where a failure sends the downloader next. Retry decisions read this, never a message. */
export type NextStep = "retry" | "next-mirror" | "stop";

export const DOWNLOAD_CODE_ACTION: Readonly<Record<FailureCode, NextStep>> = {
  // Transient: the same mirror again, after a backoff.
  E_DOWNLOAD_CONNECT: "retry",
  E_DOWNLOAD_NETWORK: "retry",
  E_DOWNLOAD_TRUNCATED: "retry",
  E_DOWNLOAD_STALLED: "retry",
  E_DOWNLOAD_SLOW: "retry",
  E_DOWNLOAD_SERVER: "retry",
  // The mirror answers, but with something retrying will not change.
  E_DOWNLOAD_URL: "next-mirror",
  E_DOWNLOAD_URL_NOT_ALLOWED: "next-mirror",
  E_DOWNLOAD_TLS: "next-mirror",
  E_DOWNLOAD_HTTP: "next-mirror",
  E_DOWNLOAD_REDIRECT: "next-mirror",
  E_DOWNLOAD_RESPONSE: "next-mirror",
  E_DOWNLOAD_SIZE: "next-mirror",
  E_DOWNLOAD_TOO_LARGE: "next-mirror",
  E_DOWNLOAD_HASH_MISMATCH: "next-mirror",
  // No other mirror helps.
  E_DOWNLOAD_TIMEOUT: "stop",
  E_DOWNLOAD_CANCELLED: "stop",
  E_DOWNLOAD_STAGING: "stop",
  E_DOWNLOAD_FAILED: "stop",
};

/** Node's certificate verification codes (X509_V_ERR_* as node:tls names them). */
const TLS_CODES = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_CHAIN_TOO_LONG",
  "CERT_REVOKED",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

const CONNECT_CODES = new Set([
  "UND_ERR_CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EAI_FAIL",
  "EAI_NONAME",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "ENETDOWN",
  "EADDRNOTAVAIL",
]);

function codeOf(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === "string" ? c : undefined;
}

/**
 * A thrown transport error (undici's or the socket's), named. `phase` is "head" until the
 * response headers arrived, then "body": a connection the server closes during the body is a
 * truncated response (resumable), before it a network failure.
 */
export function classifyTransportError(
  e: unknown,
  phase: "head" | "body",
): { code: FailureCode; reason: string } {
  const codes = [codeOf(e), codeOf((e as { cause?: unknown } | null)?.cause)].filter(
    (c): c is string => c !== undefined,
  );
  // Socket and resolver messages name the host, which comes from a notice: quoted, not whole.
  const msg = quote(e instanceof Error ? e.message : String(e), 200);
  const has = (p: (c: string) => boolean) => codes.some(p);
  if (has((c) => TLS_CODES.has(c) || c.startsWith("ERR_SSL_") || c.startsWith("ERR_TLS_")))
    return { code: "E_DOWNLOAD_TLS", reason: `TLS: ${msg}` };
  if (has((c) => CONNECT_CODES.has(c)))
    return { code: "E_DOWNLOAD_CONNECT", reason: `cannot connect: ${msg}` };
  if (has((c) => c === "UND_ERR_HEADERS_TIMEOUT" || c === "UND_ERR_BODY_TIMEOUT"))
    return {
      code: "E_DOWNLOAD_STALLED",
      reason: `no byte arrived for the idle timeout (${phase === "head" ? "headers" : "body"})`,
    };
  if (has((c) => c === "UND_ERR_HEADERS_OVERFLOW"))
    return { code: "E_DOWNLOAD_RESPONSE", reason: "the response headers are too large" };
  if (phase === "body" && has((c) => c === "UND_ERR_SOCKET"))
    return {
      code: "E_DOWNLOAD_TRUNCATED",
      reason: `the server closed the connection early: ${msg}`,
    };
  return { code: "E_DOWNLOAD_NETWORK", reason: `connection failed: ${msg}` };
}
