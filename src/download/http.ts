/**
 * The undici adapter: one Agent per download (its own timeouts and trusted CA, closed at the
 * end), and a GET that follows redirects by hand so each hop is checked by redirectTarget
 * (http/https only, never https -> http, at most MAX_REDIRECTS) and the Range and If-Range headers
 * go to the final server. Errors come out as thrown transport errors, classified by the caller,
 * which knows why it may have aborted the request.
 */
import { Agent, type Dispatcher, request } from "undici";
import { EspOtaError } from "../errors.js";
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
  body: Dispatcher.ResponseData["body"];
}

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
): Promise<Response> {
  let at = url;
  for (let hops = 0; ; hops++) {
    const res = await request(at, {
      dispatcher,
      method: "GET",
      headers: { "user-agent": USER_AGENT, "accept-encoding": "identity", ...headers },
      signal,
    });
    const next = redirectTarget(res.statusCode, header(res.headers, "location"), at, hops);
    if (next.kind === "none")
      return { url: at, status: res.statusCode, headers: res.headers, body: res.body };
    // A redirect's body is not wanted; dropping it also frees the connection at once.
    discard(res.body);
    if (next.kind === "fail")
      throw new EspOtaError(next.code, `${next.reason} (at ${redactUrl(at)})`, {
        status: res.statusCode,
      });
    // Checked before the request, so a server on the list cannot send us to one that is not.
    if (!urlAllowed(next.url, allowed))
      throw new EspOtaError(
        "E_DOWNLOAD_URL_NOT_ALLOWED",
        `${redactUrl(at)} redirects to ${redactUrl(next.url)}, which is not under download.allowedUrls`,
        { status: res.statusCode },
      );
    at = next.url;
  }
}

/**
 * Drops a body not (or no longer) wanted. undici's body emits an AbortError when destroyed
 * unread; nobody waits for that error, so it is swallowed here rather than becoming uncaught.
 */
export function discard(body: Response["body"]): void {
  body.on("error", () => {});
  body.destroy();
}
