import type { ErrorCodeTable } from "./types.js";

/**
 * Downloads of signed manifests and pre-encrypted images (src/download, docs/downloads.md).
 * What the downloader does with each code (retry the mirror, move to the next one, or stop) is
 * the table DOWNLOAD_CODE_ACTION in src/download/policy.ts.
 */
export const downloadCodes = {
  E_DOWNLOAD_URL: {
    meaning:
      "A download URL is not an absolute http: or https: URL (or the list of URLs is empty). That mirror is skipped.",
    action:
      "Fix the URL in the release (`esp-ota release build` writes the manifest's URLs) or in the notice; only http and https are fetched.",
  },
  E_DOWNLOAD_URL_NOT_ALLOWED: {
    meaning:
      "A download URL, or a redirect from one, is not under any prefix of the gateway's download.allowedUrls. Nothing was requested from it; that mirror is skipped.",
    action:
      "If the server is yours, add its URL prefix to download.allowedUrls in the gateway config; otherwise the notice (or the manifest) points somewhere it should not: check who published it.",
  },
  E_DOWNLOAD_CONNECT: {
    meaning:
      "No connection to the server: refused, the name does not resolve, no route, or no TCP/TLS handshake within download.connectTimeoutMs. Retried with backoff.",
    action:
      "Check the gateway's network, DNS and any firewall or proxy on the way to the image server; the context names the host.",
  },
  E_DOWNLOAD_TLS: {
    meaning:
      "The server's TLS certificate was refused: not issued by the trusted CA (download.ca pins one), expired, or for another host name. Not retried on that mirror.",
    action:
      "Check download.ca against the CA that issued the server's certificate, and the host name in the URL against the certificate's names.",
  },
  E_DOWNLOAD_NETWORK: {
    meaning:
      "The connection failed during the exchange (reset, broken pipe, a garbled response). Retried with backoff; an image resumes from the bytes already staged.",
    action:
      "Usually transient. If it repeats, look for a proxy or middlebox that cuts long transfers.",
  },
  E_DOWNLOAD_TRUNCATED: {
    meaning:
      "The response ended before all of its bytes arrived (the server closed the connection early). Retried; an image resumes from what arrived.",
    action:
      "If every attempt ends at the same point, the file on the server is cut short: republish it.",
  },
  E_DOWNLOAD_STALLED: {
    meaning:
      "No byte arrived for download.idleTimeoutMs (waiting for the response headers or during the body). The attempt was aborted and retried.",
    action:
      "A stalled server or link. Raise download.idleTimeoutMs only for links that really pause that long.",
  },
  E_DOWNLOAD_SLOW: {
    meaning:
      "The transfer ran below download.minRateBytesPerSec over download.minRateWindowMs (a slow-retrieval defence) and was aborted and retried.",
    action:
      "Check the link's real throughput; on a link that is legitimately this slow lower download.minRateBytesPerSec (0 turns the floor off).",
  },
  E_DOWNLOAD_SERVER: {
    meaning:
      "The server answered 5xx, 408 or 429: overloaded, restarting or rate limiting. Retried with backoff (Retry-After honoured up to download.backoffMaxMs).",
    action:
      "Usually transient. If it persists, check the image server's health and rate limits; the context has the status.",
  },
  E_DOWNLOAD_HTTP: {
    meaning:
      "The server refused the request with a 4xx status (404 Not Found, 403 Forbidden, ...) or another status a download cannot use. Not retried on that mirror.",
    action:
      "Check that the file is published at that URL and readable without credentials; the context has the status.",
  },
  E_DOWNLOAD_REDIRECT: {
    meaning:
      "The server redirected more than 3 times, without a Location, to a scheme other than http/https, or from https to http. Not followed.",
    action: "Point the manifest's URL at the file itself, or at most 3 redirects away from it.",
  },
  E_DOWNLOAD_RESPONSE: {
    meaning:
      "The response cannot be used as the file: a 206 without a valid Content-Range or to a request without Range, a compressed body (Content-Encoding), or a bad Content-Length. Not retried on that mirror.",
    action:
      "Serve the file as is: no compression for .bin files, byte ranges per RFC 9110 §14 (`esp-ota serve` does this).",
  },
  E_DOWNLOAD_SIZE: {
    meaning:
      "The server's Content-Length or Content-Range says the file has another size than the signed manifest. Nothing of that response was written.",
    action:
      "The mirror serves another file (an older build, another device's image): republish the release's files there.",
  },
  E_DOWNLOAD_TOO_LARGE: {
    meaning:
      "The body went past the size the signed manifest allows (or past the manifest size cap for a manifest). The transfer was cut off at that byte and nothing beyond it was written.",
    action:
      "The mirror serves another or an endless file (the endless-data attack): republish the release's files there and check who controls the server.",
  },
  E_DOWNLOAD_HASH_MISMATCH: {
    meaning:
      "All bytes arrived but their SHA-256 differs from the signed manifest's. The staging file was deleted; the next mirror is tried.",
    action:
      "The mirror serves a different file than the release signed: republish the release's files there. Repeated on every mirror, suspect tampering on the path.",
  },
  E_DOWNLOAD_TIMEOUT: {
    meaning:
      "The whole download (every attempt and backoff) took longer than download.totalTimeoutMs. The staged bytes are kept for a later resume.",
    action:
      "Retry the update; on a slow link raise download.totalTimeoutMs (the image size divided by the link's bytes per second, with margin).",
  },
  E_DOWNLOAD_CANCELLED: {
    meaning:
      "The download was cancelled (a cancel command, shutdown). The staged bytes are kept, so the next attempt resumes.",
    action: "Nothing to undo. Start the update again to continue.",
  },
  E_DOWNLOAD_STAGING: {
    meaning:
      "The staging file or its .json sidecar could not be created, read, written or synced (disk full, read-only, permissions).",
    action:
      "Free space in stagingDir (it needs room for each image in flight) and check its owner and mode.",
  },
  E_DOWNLOAD_FAILED: {
    meaning:
      "Every mirror failed. The message and context list each mirror's last error code; the staged bytes (if any) are kept for a later resume.",
    action: "Act on the per-mirror codes (each is in this table), then retry the update.",
  },
} as const satisfies ErrorCodeTable;
