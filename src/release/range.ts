/**
 * HTTP Range and conditional-request decisions for `esp-ota serve` (RFC 9110 §14, §13), pure:
 * header strings and a file's size and validator in, what to send out. serve.ts does the I/O.
 *
 * One range only: a gateway resuming a download asks for one (`bytes=N-`). A request for several
 * ranges gets the whole file (RFC 9110 §14.2 lets a server ignore Range), which every client
 * handles, rather than multipart/byteranges, which gateways do not need.
 */

export type RangeRequest =
  | { kind: "none" }
  | { kind: "range"; start: number; end: number }
  | { kind: "unsatisfiable" };

/**
 * `Range` header against a representation of `size` bytes. Syntax errors and other units are
 * ignored (RFC 9110 §14.2: "a server MAY ignore the Range header field"); a syntactically valid
 * single range that selects nothing is unsatisfiable (416).
 */
export function parseRange(header: string | undefined, size: number): RangeRequest {
  if (header === undefined) return { kind: "none" };
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return { kind: "none" };
  const specs = m[1]!
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (specs.length !== 1) return { kind: "none" };
  const r = /^(\d*)-(\d*)$/.exec(specs[0]!);
  if (!r || (r[1] === "" && r[2] === "")) return { kind: "none" };
  if (r[1] === "") {
    // Suffix range: the last N bytes.
    const n = Number(r[2]);
    if (!Number.isSafeInteger(n)) return { kind: "none" };
    if (n === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "range", start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(r[1]);
  const last = r[2] === "" ? Number.MAX_SAFE_INTEGER : Number(r[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(last)) return { kind: "none" };
  // last < first is invalid syntax (§14.1.1), so ignored; a valid one past the end is a 416.
  if (last < start) return { kind: "none" };
  if (start >= size) return { kind: "unsatisfiable" };
  return { kind: "range", start, end: Math.min(last, size - 1) };
}

/** A strong validator from size and modification time (RFC 9110 §8.8.3). */
export function makeEtag(size: number, mtimeMs: number): string {
  return `"${size.toString(16)}-${Math.floor(mtimeMs).toString(16)}"`;
}

/**
 * If-Range (RFC 9110 §13.1.5): the range applies only if the validator is our current strong
 * ETag, byte for byte. A date or a weak tag never matches (our Last-Modified is not strong), so
 * the client gets the whole, current file instead of a piece of a changed one.
 */
export function ifRangeAllows(ifRange: string | undefined, etag: string): boolean {
  if (ifRange === undefined) return true;
  const v = ifRange.trim();
  return !v.startsWith("W/") && v === etag;
}

/** If-None-Match (RFC 9110 §13.1.2), weak comparison: "*" or any listed tag equal to ours. */
export function ifNoneMatchHits(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  if (header.trim() === "*") return true;
  const bare = (t: string) => t.trim().replace(/^W\//, "");
  return header.split(",").some((t) => bare(t) === bare(etag));
}

/**
 * The file a URL path names under the served root, as path segments, or null when it may not be
 * served: undecodable, containing NUL or a backslash, or with a `.`/`..` segment (no directory
 * traversal, however encoded), a dot-file, or a `.partial` file (a ciphertext or manifest the
 * build is still writing: serving half of one would only make a gateway fail its hash check).
 */
export function safePathSegments(urlPath: string): string[] | null {
  const q = urlPath.indexOf("?");
  const raw = q >= 0 ? urlPath.slice(0, q) : urlPath;
  if (!raw.startsWith("/")) return null;
  const segments: string[] = [];
  for (const enc of raw.slice(1).split("/")) {
    let s: string;
    try {
      s = decodeURIComponent(enc);
    } catch {
      return null;
    }
    if (s === "") continue;
    if (s.includes("\0") || s.includes("/") || s.includes("\\")) return null;
    if (s.startsWith(".") || s.endsWith(".partial")) return null;
    segments.push(s);
  }
  return segments;
}
