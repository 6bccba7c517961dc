/**
 * The gateway agent's download adapter (docs/downloads.md): signed manifests (fetchDocument) and
 * pre-encrypted images (downloadImage) over HTTP(S) with undici, from a list of mirrors, with
 * retries, exponential backoff with full jitter, timeouts, a minimum rate, and exact size caps.
 * An image is written to its staging file as it arrives and hashed on the way; a partial file is
 * resumed with Range/If-Range after a failure or a restart of the agent.
 *
 * The decisions (what a status means, what is retried where, backoff) are pure, in policy.ts and
 * rate.ts; staging.ts does the file, http.ts the sockets. This file runs attempts over mirrors.
 */
import { setTimeout as sleepTimer } from "node:timers/promises";
import type { Agent } from "undici";
import { type ErrorContext, EspOtaError } from "../errors.js";
import { quote } from "../text.js";
import { createAgent, discard, get, type Response, type TlsPinning } from "./http.js";
import {
  backoffDelay,
  checkUrl,
  classifyTransportError,
  DOWNLOAD_CODE_ACTION,
  type DownloadLimits,
  decideDocumentResponse,
  decideImageResponse,
  type FailureCode,
  redactUrl,
  resolveLimits,
  urlAllowed,
} from "./policy.js";
import { RateFloor } from "./rate.js";
import { StagingFile } from "./staging.js";

export type { TlsPinning } from "./http.js";
export { backoffDelay, DEFAULT_LIMITS, type DownloadLimits } from "./policy.js";

export interface ImageDownload {
  /** Mirrors, in order of preference. */
  urls: readonly string[];
  /** URL prefixes the mirrors and their redirects must be under (urlAllowed); default: any. */
  allowedUrls?: readonly string[];
  /** The exact size from the signed manifest: never more is accepted or written. */
  size: number;
  /** Lowercase hex SHA-256 from the signed manifest. */
  sha256: string;
  /**
   * The staging file. An existing partial file is resumed (Range) when its sidecar
   * `${dest}.json` ({url, etag, size, sha256}) says it is this image; one download per dest at
   * a time.
   */
  dest: string;
}

export interface DownloadResult {
  /** `dest`: complete, synced to disk, its SHA-256 checked. */
  path: string;
  /** Bytes in the file (the manifest's size). */
  bytes: number;
  /** Bytes that were already staged when the call began and were kept (0 when started over). */
  resumedFrom: number;
  /** HTTP requests made (redirects not counted); 0 when the staged file was already complete. */
  attempts: number;
  /** The mirror (from `urls`) the file came from. */
  url: string;
}

export interface DownloadHooks {
  /** Cancels the download: E_DOWNLOAD_CANCELLED, the staged bytes are kept for a resume. */
  signal?: AbortSignal;
  /** Bytes staged so far and the total (a document's total is its Content-Length or the cap). */
  onProgress?: (bytes: number, total: number) => void;
  /**
   * Before each further request after a failure: the attempt that failed (counted over the whole
   * download), its mirror (redacted: no credentials or query), its code, and the wait before the
   * next request (0 when moving to the next mirror or starting over).
   */
  onRetry?: (info: { attempt: number; url: string; code: string; delayMs: number }) => void;
  /** The jitter source, in [0, 1). Default Math.random. */
  random?: () => number;
  /** The backoff wait; must end early (resolve or reject) when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** A manifest is a few KB; the cap bounds what a hostile server can make us hold in memory. */
const DEFAULT_MAX_DOCUMENT_BYTES = 65_536;

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Failures after which the staged bytes are not trusted: that server serves another file. */
const DISCARD_ON = new Set<string>([
  "E_DOWNLOAD_SIZE",
  "E_DOWNLOAD_TOO_LARGE",
  "E_DOWNLOAD_HASH_MISMATCH",
]);

/**
 * Downloads an image into `d.dest`, resuming what is staged there, and checks its size and
 * SHA-256 against the signed manifest's. Throws an EspOtaError (E_DOWNLOAD_*); every one carries
 * {url, bytes, attempt} in its context.
 */
export async function downloadImage(
  d: ImageDownload,
  limits?: Partial<DownloadLimits>,
  tls?: TlsPinning,
  hooks: DownloadHooks = {},
): Promise<DownloadResult> {
  if (!Number.isSafeInteger(d.size) || d.size < 0)
    throw new RangeError("size must be a non-negative integer");
  if (!SHA256_HEX.test(d.sha256)) throw new TypeError("sha256 must be 64 lowercase hex digits");
  const lim = resolveLimits(limits);
  // Where a failure outside the mirror loop (the staging file) happened, for its context.
  const at = { url: redactUrl(d.urls[0] ?? ""), bytes: 0, attempt: 0 };
  throwIfCancelled(hooks, at);
  const located = (e: unknown) =>
    e instanceof EspOtaError && e.context.attempt !== undefined
      ? e
      : withContext(asEspOtaError(e), { ...at });

  const file = await StagingFile.open(d.dest, { size: d.size, sha256: d.sha256 }).catch(
    (e: unknown) => {
      throw located(e);
    },
  );
  let outcome: "done" | "keep" = "keep";
  try {
    let resumedFrom = file.offset;
    at.bytes = file.offset;
    const resetsAtStart = file.resets;
    // Complete already (the agent stopped between the last byte and the end): the hash decides.
    if (file.offset === d.size) {
      if ((await file.finish()) === d.sha256) {
        outcome = "done";
        const from = d.urls.find((u) => redactUrl(u) === file.sourceUrl) ?? d.urls[0] ?? "";
        return { path: d.dest, bytes: d.size, resumedFrom, attempts: 0, url: from };
      }
      await file.reset();
      resumedFrom = 0;
    }
    hooks.onProgress?.(file.offset, d.size);
    const mismatchRetried = new Set<string>();
    const r = await acrossMirrors(
      d.urls,
      lim,
      tls,
      hooks,
      () => file.offset,
      (ctx) => imageAttempt(ctx, file, d, hooks, mismatchRetried),
      d.allowedUrls,
    );
    outcome = "done";
    Object.assign(at, { url: redactUrl(r.url), bytes: d.size, attempt: r.attempts });
    if (file.resets > resetsAtStart) resumedFrom = 0;
    return { path: d.dest, bytes: d.size, resumedFrom, attempts: r.attempts, url: r.url };
  } catch (e) {
    throw located(e);
  } finally {
    if (outcome === "done")
      await file.close("done").catch((e: unknown) => Promise.reject(located(e)));
    // The original failure matters more than one in closing the file.
    else await file.close("keep").catch(() => {});
  }
}

/**
 * A small document (a signed manifest): the whole body, at most `maxBytes` (default 65536), with
 * the same mirrors, retries and timeouts as images; kept in memory, never on disk.
 */
export async function fetchDocument(
  urls: readonly string[],
  o: {
    maxBytes?: number;
    limits?: Partial<DownloadLimits>;
    tls?: TlsPinning;
    hooks?: DownloadHooks;
    /** URL prefixes the mirrors and their redirects must be under (urlAllowed); default: any. */
    allowedUrls?: readonly string[];
  } = {},
): Promise<{ bytes: Uint8Array; url: string }> {
  const maxBytes = o.maxBytes ?? DEFAULT_MAX_DOCUMENT_BYTES;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0)
    throw new RangeError("maxBytes must be a non-negative integer");
  const lim = resolveLimits(o.limits);
  const hooks = o.hooks ?? {};
  throwIfCancelled(hooks, { url: redactUrl(urls[0] ?? ""), bytes: 0, attempt: 0 });
  let bytes = 0;
  const r = await acrossMirrors(
    urls,
    lim,
    o.tls,
    hooks,
    () => bytes,
    async (ctx) => {
      bytes = 0;
      return documentAttempt(ctx, maxBytes, hooks, (n) => {
        bytes = n;
      });
    },
    o.allowedUrls,
  );
  return { bytes: r.value, url: r.url };
}

// ---------------------------------------------------------------------------------------------
// Attempts

type AttemptResult<T> =
  | { kind: "done"; value: T }
  /** Start over on the same mirror at once, without counting a failure (the reason is logged). */
  | { kind: "again"; code: FailureCode; reason: string };

interface AttemptContext {
  url: string;
  /** The URL as it may be logged and stored (redactUrl). */
  key: string;
  /** download.allowedUrls: every redirect hop must be under one (empty: any). */
  allowed: readonly string[];
  dispatcher: Agent;
  signal: AbortSignal;
  /** Aborts the request; the attempt then fails with this code (first reason wins). */
  abort(code: FailureCode, reason: string): void;
  /** Body bytes received in this attempt, for the rate floor. */
  count(n: number): void;
  /** The error for a failure in `phase`: our abort reason if we aborted, else the error named. */
  failure(e: unknown, phase: "head" | "body"): EspOtaError;
}

async function imageAttempt(
  ctx: AttemptContext,
  file: StagingFile,
  d: ImageDownload,
  hooks: DownloadHooks,
  mismatchRetried: Set<string>,
): Promise<AttemptResult<undefined>> {
  const offset = file.offset;
  const headers: Record<string, string> = {};
  if (offset > 0) {
    headers.range = `bytes=${offset}-`;
    const etag = file.validatorFor(ctx.key);
    if (etag !== undefined) headers["if-range"] = etag;
  }

  const verify = async (): Promise<AttemptResult<undefined>> => {
    const actual = await file.finish();
    if (actual === d.sha256) return { kind: "done", value: undefined };
    // Bytes from two responses (or from disk and a response) may be two versions spliced: one
    // download from 0 on this mirror tells that apart from a mirror serving the wrong file.
    const spliced = file.pieces > 1;
    await file.reset();
    const reason = `the SHA-256 of the ${d.size} bytes is ${actual}, the manifest says ${d.sha256}`;
    if (spliced && !mismatchRetried.has(ctx.key)) {
      mismatchRetried.add(ctx.key);
      return { kind: "again", code: "E_DOWNLOAD_HASH_MISMATCH", reason };
    }
    throw new EspOtaError("E_DOWNLOAD_HASH_MISMATCH", reason, {
      expected: d.sha256,
      actual,
    });
  };

  let phase: "head" | "body" = "head";
  let res: Response | undefined;
  try {
    // At most the image's bytes are held for the staging file (a 200 to a Range is the whole file).
    res = await get(ctx.dispatcher, ctx.url, headers, ctx.signal, ctx.allowed, d.size);
    const dec = decideImageResponse(d.size, offset, res.status, res.headers, Date.now());
    if (dec.kind !== "accept") discard(res.body);
    if (dec.kind === "fail")
      throw new EspOtaError(dec.code, dec.reason, {
        status: res.status,
        ...(dec.retryAfterMs !== undefined ? { retryAfterMs: dec.retryAfterMs } : {}),
      });
    if (dec.kind === "restart") {
      await file.reset();
      return { kind: "again", code: "E_DOWNLOAD_RESPONSE", reason: dec.reason };
    }
    if (dec.kind === "complete") return await verify();

    await file.begin(ctx.key, dec.etag, dec.start);
    hooks.onProgress?.(file.offset, d.size);
    phase = "body";
    let tooLarge = false;
    for await (const chunk of res.body) {
      if (file.offset + chunk.length > d.size) {
        // The endless-data defence: not one byte past the signed size reaches the disk.
        tooLarge = true;
        ctx.abort("E_DOWNLOAD_TOO_LARGE", `the body goes on past the manifest's ${d.size} bytes`);
        break;
      }
      await file.write(chunk);
      ctx.count(chunk.length);
      hooks.onProgress?.(file.offset, d.size);
    }
    if (tooLarge || file.offset < d.size)
      throw new EspOtaError(
        "E_DOWNLOAD_TRUNCATED",
        `the response ended at byte ${file.offset} of ${d.size}`,
        { status: res.status },
      );
    return await verify();
  } catch (e) {
    if (res) discard(res.body);
    const err = ctx.failure(e, phase);
    if (DISCARD_ON.has(err.code)) await file.reset();
    throw err;
  }
}

async function documentAttempt(
  ctx: AttemptContext,
  maxBytes: number,
  hooks: DownloadHooks,
  progress: (n: number) => void,
): Promise<AttemptResult<Uint8Array>> {
  let phase: "head" | "body" = "head";
  let res: Response | undefined;
  try {
    res = await get(ctx.dispatcher, ctx.url, {}, ctx.signal, ctx.allowed, maxBytes);
    const dec = decideDocumentResponse(maxBytes, res.status, res.headers, Date.now());
    if (dec.kind === "fail") {
      discard(res.body);
      throw new EspOtaError(dec.code, dec.reason, {
        status: res.status,
        ...(dec.retryAfterMs !== undefined ? { retryAfterMs: dec.retryAfterMs } : {}),
      });
    }
    phase = "body";
    const total = dec.length ?? maxBytes;
    const chunks: Buffer[] = [];
    let n = 0;
    let tooLarge = false;
    for await (const chunk of res.body) {
      if (n + chunk.length > maxBytes) {
        tooLarge = true;
        ctx.abort("E_DOWNLOAD_TOO_LARGE", `the document goes on past ${maxBytes} bytes`);
        break;
      }
      chunks.push(chunk);
      n += chunk.length;
      progress(n);
      ctx.count(chunk.length);
      hooks.onProgress?.(n, total);
    }
    if (tooLarge || (dec.length !== undefined && n < dec.length))
      throw new EspOtaError("E_DOWNLOAD_TRUNCATED", `the response ended at byte ${n} of ${total}`);
    return { kind: "done", value: new Uint8Array(Buffer.concat(chunks, n)) };
  } catch (e) {
    if (res) discard(res.body);
    throw ctx.failure(e, phase);
  }
}

// ---------------------------------------------------------------------------------------------
// Mirrors, retries, backoff, deadlines

function throwIfCancelled(hooks: DownloadHooks, context: ErrorContext): void {
  if (hooks.signal?.aborted)
    throw new EspOtaError(
      "E_DOWNLOAD_CANCELLED",
      "download cancelled",
      context,
      hooks.signal.reason,
    );
}

/** Errors about the download as a whole, or the disk: their message does not start with a URL. */
const UNLOCATED = new Set<string>([
  "E_DOWNLOAD_STAGING",
  "E_DOWNLOAD_CANCELLED",
  "E_DOWNLOAD_TIMEOUT",
  "E_DOWNLOAD_FAILED",
]);

/**
 * The same error with the download's {url, bytes, attempt} in its context. The message names the
 * mirror by a quote of its redacted URL: a notice may list 8 URLs of 2,000 characters, and a
 * message holding them whole did not fit the device's status (issue 12, defect 1).
 */
function withContext(err: EspOtaError, context: ErrorContext): EspOtaError {
  return new EspOtaError(
    err.code,
    UNLOCATED.has(err.code) ? err.message : `${quote(String(context.url))}: ${err.message}`,
    { ...err.context, ...context },
    err.cause,
  );
}

function asEspOtaError(e: unknown): EspOtaError {
  if (e instanceof EspOtaError) return e;
  // Misuse and broken invariants are bugs to see, not network failures to retry.
  if (e instanceof TypeError || e instanceof RangeError) throw e;
  // Anything else escaping an attempt is a transport failure the classifier did not see.
  return new EspOtaError(
    "E_DOWNLOAD_NETWORK",
    `download failed: ${quote(e instanceof Error ? e.message : String(e), 300)}`,
    {},
    e,
  );
}

const defaultSleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
  await sleepTimer(ms, undefined, signal ? { signal } : {});
};

async function acrossMirrors<T>(
  urls: readonly string[],
  lim: DownloadLimits,
  tls: TlsPinning | undefined,
  hooks: DownloadHooks,
  bytes: () => number,
  attempt: (ctx: AttemptContext) => Promise<AttemptResult<T>>,
  allowed: readonly string[] = [],
): Promise<{ value: T; url: string; attempts: number }> {
  const random = hooks.random ?? Math.random;
  const sleep = hooks.sleep ?? defaultSleep;
  const user = hooks.signal;
  const deadline = new AbortController();
  const deadlineAt = Date.now() + lim.totalTimeoutMs;
  const deadlineTimer = setTimeout(() => deadline.abort(), lim.totalTimeoutMs);
  const dispatcher = createAgent(lim, tls);
  let attempts = 0;
  let key = redactUrl(urls[0] ?? "");
  const here = (): ErrorContext => ({ url: key, bytes: bytes(), attempt: attempts });
  const cancelled = () =>
    new EspOtaError("E_DOWNLOAD_CANCELLED", "download cancelled", {}, user?.reason);
  const timedOut = () =>
    new EspOtaError(
      "E_DOWNLOAD_TIMEOUT",
      `the download took longer than totalTimeoutMs (${lim.totalTimeoutMs} ms)`,
      { totalTimeoutMs: lim.totalTimeoutMs },
    );
  const stopIfOver = () => {
    if (user?.aborted) throw withContext(cancelled(), here());
    if (deadline.signal.aborted) throw withContext(timedOut(), here());
  };
  const failed: EspOtaError[] = [];

  try {
    if (urls.length === 0)
      throw withContext(new EspOtaError("E_DOWNLOAD_URL", "no URL to download from"), here());
    for (let m = 0; m < urls.length; m++) {
      const url = urls[m]!;
      key = redactUrl(url);
      let last: EspOtaError;
      const valid = checkUrl(url);
      if (!valid.ok) {
        last = withContext(new EspOtaError("E_DOWNLOAD_URL", valid.reason), here());
      } else if (!urlAllowed(url, allowed)) {
        // Never requested: a notice must not make the gateway reach an arbitrary server.
        last = withContext(
          new EspOtaError(
            "E_DOWNLOAD_URL_NOT_ALLOWED",
            `${quote(key)} is not under download.allowedUrls`,
          ),
          here(),
        );
      } else {
        let failures = 0;
        for (;;) {
          stopIfOver();
          attempts++;
          let result: AttemptResult<T> | undefined;
          let err: EspOtaError | undefined;
          try {
            result = await runAttempt(
              url,
              key,
              dispatcher,
              lim,
              user,
              deadline.signal,
              attempt,
              { cancelled, timedOut },
              allowed,
            );
          } catch (e) {
            err = withContext(asEspOtaError(e), here());
          }
          if (result?.kind === "done") return { value: result.value, url, attempts };
          if (result?.kind === "again") {
            hooks.onRetry?.({ attempt: attempts, url: key, code: result.code, delayMs: 0 });
            continue;
          }
          last = err!;
          const next = DOWNLOAD_CODE_ACTION[last.code as FailureCode] ?? "stop";
          if (next === "stop") throw last;
          if (next === "next-mirror" || failures >= lim.retries) break;
          const retryAfter = last.context.retryAfterMs;
          const delayMs =
            typeof retryAfter === "number"
              ? Math.min(retryAfter, lim.backoffMaxMs)
              : backoffDelay(failures, lim.backoffBaseMs, lim.backoffMaxMs, random);
          failures++;
          // No point waiting for a retry the total budget cannot fit.
          if (Date.now() + delayMs >= deadlineAt) throw withContext(timedOut(), here());
          hooks.onRetry?.({ attempt: attempts, url: key, code: last.code, delayMs });
          const wake = user ? AbortSignal.any([user, deadline.signal]) : deadline.signal;
          try {
            await sleep(delayMs, wake);
          } catch {
            // An aborted sleep: which signal it was is checked next.
          }
          stopIfOver();
        }
      }
      failed.push(last);
      if (m + 1 < urls.length)
        hooks.onRetry?.({ attempt: attempts, url: key, code: last.code, delayMs: 0 });
    }
    // Each mirror by a quote of its URL, and at most 8 of them (a manifest lists at most 8): the
    // message stays a few hundred characters however many and however long the URLs are.
    const listed = failed.slice(0, 8).map((e) => `${quote(String(e.context.url))}: ${e.code}`);
    if (failed.length > listed.length) listed.push(`${failed.length - listed.length} more`);
    const summary = listed.join("; ");
    throw new EspOtaError(
      "E_DOWNLOAD_FAILED",
      `download failed on every mirror (${summary})`,
      {
        ...here(),
        codes: failed.map((e) => e.code).join(","),
        errors: quote(failed.map((e) => e.message).join("; "), 2000),
      },
      new AggregateError(failed, "the last error of each mirror"),
    );
  } finally {
    clearTimeout(deadlineTimer);
    await dispatcher.destroy().catch(() => {});
  }
}

/** One request with its own abort controller, rate floor and the download's signals wired in. */
async function runAttempt<T>(
  url: string,
  key: string,
  dispatcher: Agent,
  lim: DownloadLimits,
  user: AbortSignal | undefined,
  deadline: AbortSignal,
  attempt: (ctx: AttemptContext) => Promise<AttemptResult<T>>,
  errors: { cancelled(): EspOtaError; timedOut(): EspOtaError },
  allowed: readonly string[],
): Promise<AttemptResult<T>> {
  const ac = new AbortController();
  let why: (() => EspOtaError) | undefined;
  const abort = (make: () => EspOtaError) => {
    if (why !== undefined) return;
    why = make;
    ac.abort();
  };
  const onUser = () => abort(errors.cancelled);
  const onDeadline = () => abort(errors.timedOut);
  user?.addEventListener("abort", onUser);
  deadline.addEventListener("abort", onDeadline);
  if (user?.aborted) onUser();
  if (deadline.aborted) onDeadline();

  let received = 0;
  let rateTimer: ReturnType<typeof setInterval> | undefined;
  if (lim.minRateBytesPerSec > 0) {
    const floor = new RateFloor(lim.minRateBytesPerSec, lim.minRateWindowMs, performance.now());
    // Four samples per window: the measured window is at most a quarter longer than asked.
    rateTimer = setInterval(
      () => {
        const rate = floor.sample(performance.now(), received);
        if (rate !== undefined)
          abort(
            () =>
              new EspOtaError(
                "E_DOWNLOAD_SLOW",
                `${Math.round(rate)} B/s over the last ${lim.minRateWindowMs} ms, below minRateBytesPerSec ${lim.minRateBytesPerSec}`,
                { rate: Math.round(rate) },
              ),
          );
      },
      Math.max(1, Math.floor(lim.minRateWindowMs / 4)),
    );
  }

  const ctx: AttemptContext = {
    url,
    key,
    allowed,
    dispatcher,
    signal: ac.signal,
    abort: (code, reason) => abort(() => new EspOtaError(code, reason)),
    count: (n) => {
      received += n;
    },
    failure: (e, phase) => {
      if (why !== undefined) return why();
      if (e instanceof EspOtaError) return e;
      const c = classifyTransportError(e, phase);
      return new EspOtaError(c.code, c.reason, {}, e);
    },
  };
  try {
    return await attempt(ctx);
  } finally {
    if (rateTimer !== undefined) clearInterval(rateTimer);
    user?.removeEventListener("abort", onUser);
    deadline.removeEventListener("abort", onDeadline);
  }
}
