/**
 * The pure download decisions (src/download/policy.ts, rate.ts) as tables of rows (STYLE.md §12)
 * and fast-check properties: backoff, response decisions, Content-Range, Retry-After, redirects,
 * transport error names, the rate floor, limits.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  allowListEntryProblem,
  backoffDelay,
  checkUrl,
  classifyTransportError,
  DEFAULT_LIMITS,
  DOWNLOAD_CODE_ACTION,
  decideDocumentResponse,
  decideImageResponse,
  MAX_REDIRECTS,
  parseContentRange,
  parseRetryAfter,
  redactUrl,
  redirectTarget,
  resolveLimits,
  strongEtag,
  urlAllowed,
} from "../../src/download/policy.js";
import { RateFloor } from "../../src/download/rate.js";
import { downloadCodes } from "../../src/error-codes/download.js";

describe("backoffDelay", () => {
  it("is full jitter under min(max, base * 2^attempt), scaled by random()", () => {
    fc.assert(
      fc.property(
        fc.nat(2000),
        fc.nat(10_000),
        fc.nat(100_000),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, base, extra, r) => {
          const max = base + extra;
          const d = backoffDelay(attempt, base, max, () => r);
          const cap = base === 0 ? 0 : Math.min(max, base * 2 ** attempt);
          expect(d).toBeGreaterThanOrEqual(0);
          expect(d).toBeLessThanOrEqual(cap);
          expect(d).toBeCloseTo(cap * r, 6);
          expect(Number.isFinite(d)).toBe(true);
        },
      ),
    );
  });

  it("its cap doubles per attempt until backoffMaxMs", () => {
    const caps = [0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffDelay(a, 500, 30_000, () => 0.999999));
    expect(caps.map((c) => Math.round(c))).toEqual([
      500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000,
    ]);
  });

  it("misuse throws", () => {
    expect(() => backoffDelay(-1, 1, 2, Math.random)).toThrow(RangeError);
    expect(() => backoffDelay(0.5, 1, 2, Math.random)).toThrow(RangeError);
    expect(() => backoffDelay(0, 1, 2, () => 1)).toThrow(RangeError);
  });
});

describe("decideImageResponse", () => {
  const size = 1000;
  const rows: {
    name: string;
    offset: number;
    status: number;
    headers: Record<string, string>;
    expect: Record<string, unknown>;
  }[] = [
    {
      name: "200 whole file",
      offset: 0,
      status: 200,
      headers: { "content-length": "1000", etag: '"a"' },
      expect: { kind: "accept", start: 0, length: 1000, etag: '"a"' },
    },
    {
      name: "200 chunked",
      offset: 0,
      status: 200,
      headers: {},
      expect: { kind: "accept", start: 0, length: undefined },
    },
    {
      name: "200 to a Range request restarts the file",
      offset: 400,
      status: 200,
      headers: { "content-length": "1000" },
      expect: { kind: "accept", start: 0 },
    },
    {
      name: "200 of another size",
      offset: 0,
      status: 200,
      headers: { "content-length": "1001" },
      expect: { kind: "fail", code: "E_DOWNLOAD_SIZE" },
    },
    {
      name: "206 from the offset",
      offset: 400,
      status: 206,
      headers: { "content-range": "bytes 400-999/1000", "content-length": "600", etag: '"a"' },
      expect: { kind: "accept", start: 400, length: 600, etag: '"a"' },
    },
    {
      name: "206 with unknown total",
      offset: 400,
      status: 206,
      headers: { "content-range": "bytes 400-999/*" },
      expect: { kind: "accept", start: 400, length: 600 },
    },
    {
      name: "206 not starting at the offset",
      offset: 400,
      status: 206,
      headers: { "content-range": "bytes 0-999/1000" },
      expect: { kind: "restart" },
    },
    {
      name: "206 of another total",
      offset: 400,
      status: 206,
      headers: { "content-range": "bytes 400-1999/2000" },
      expect: { kind: "fail", code: "E_DOWNLOAD_SIZE" },
    },
    {
      name: "206 past the size with unknown total",
      offset: 400,
      status: 206,
      headers: { "content-range": "bytes 400-1000/*" },
      expect: { kind: "fail", code: "E_DOWNLOAD_SIZE" },
    },
    {
      name: "206 without Content-Range",
      offset: 400,
      status: 206,
      headers: {},
      expect: { kind: "fail", code: "E_DOWNLOAD_RESPONSE" },
    },
    {
      name: "206 to a request without Range",
      offset: 0,
      status: 206,
      headers: { "content-range": "bytes 0-999/1000" },
      expect: { kind: "fail", code: "E_DOWNLOAD_RESPONSE" },
    },
    {
      name: "206 whose Content-Length disagrees",
      offset: 400,
      status: 206,
      headers: { "content-range": "bytes 400-999/1000", "content-length": "599" },
      expect: { kind: "fail", code: "E_DOWNLOAD_RESPONSE" },
    },
    {
      name: "416 with everything staged",
      offset: 1000,
      status: 416,
      headers: { "content-range": "bytes */1000" },
      expect: { kind: "complete" },
    },
    {
      name: "416 short of the end",
      offset: 400,
      status: 416,
      headers: { "content-range": "bytes */1000" },
      expect: { kind: "restart" },
    },
    {
      name: "416 of another total",
      offset: 400,
      status: 416,
      headers: { "content-range": "bytes */300" },
      expect: { kind: "fail", code: "E_DOWNLOAD_SIZE" },
    },
    {
      name: "416 without Range",
      offset: 0,
      status: 416,
      headers: {},
      expect: { kind: "fail", code: "E_DOWNLOAD_HTTP" },
    },
    {
      name: "gzip",
      offset: 0,
      status: 200,
      headers: { "content-encoding": "gzip" },
      expect: { kind: "fail", code: "E_DOWNLOAD_RESPONSE" },
    },
    {
      name: "bad Content-Length",
      offset: 0,
      status: 200,
      headers: { "content-length": "12x" },
      expect: { kind: "fail", code: "E_DOWNLOAD_RESPONSE" },
    },
    {
      name: "503 with Retry-After",
      offset: 0,
      status: 503,
      headers: { "retry-after": "7" },
      expect: { kind: "fail", code: "E_DOWNLOAD_SERVER", retryAfterMs: 7000 },
    },
    {
      name: "408",
      offset: 0,
      status: 408,
      headers: {},
      expect: { kind: "fail", code: "E_DOWNLOAD_SERVER" },
    },
    {
      name: "429",
      offset: 0,
      status: 429,
      headers: {},
      expect: { kind: "fail", code: "E_DOWNLOAD_SERVER" },
    },
    {
      name: "404",
      offset: 0,
      status: 404,
      headers: {},
      expect: { kind: "fail", code: "E_DOWNLOAD_HTTP" },
    },
    {
      name: "304",
      offset: 0,
      status: 304,
      headers: {},
      expect: { kind: "fail", code: "E_DOWNLOAD_HTTP" },
    },
    {
      name: "204",
      offset: 0,
      status: 204,
      headers: {},
      expect: { kind: "fail", code: "E_DOWNLOAD_RESPONSE" },
    },
  ];
  for (const row of rows)
    it(row.name, () => {
      expect(decideImageResponse(size, row.offset, row.status, row.headers, 0)).toMatchObject(
        row.expect,
      );
    });

  it("never accepts a body that could end past the size", () => {
    fc.assert(
      fc.property(
        fc.nat(5000),
        fc.nat(5000),
        fc.nat(6000),
        fc.nat(6000),
        fc.option(fc.nat(6000)),
        (size, offsetRaw, start, len, total) => {
          const offset = Math.min(offsetRaw, size);
          const end = start + len;
          const headers = {
            "content-range": `bytes ${start}-${end}/${total ?? "*"}`,
          };
          const d = decideImageResponse(size, offset, 206, headers, 0);
          if (d.kind === "accept") {
            expect(d.start).toBe(offset);
            expect(d.start + (d.length ?? 0)).toBeLessThanOrEqual(size);
          }
        },
      ),
    );
  });
});

describe("decideDocumentResponse", () => {
  it.each([
    [200, { "content-length": "10" }, { kind: "accept", length: 10 }],
    [200, { "content-length": "101" }, { kind: "fail", code: "E_DOWNLOAD_TOO_LARGE" }],
    [200, {}, { kind: "accept", length: undefined }],
    [206, { "content-range": "bytes 0-9/10" }, { kind: "fail", code: "E_DOWNLOAD_RESPONSE" }],
    [500, {}, { kind: "fail", code: "E_DOWNLOAD_SERVER" }],
    [403, {}, { kind: "fail", code: "E_DOWNLOAD_HTTP" }],
  ] as const)("%i %o", (status, headers, want) => {
    expect(decideDocumentResponse(100, status, headers, 0)).toMatchObject(want);
  });
});

describe("header parsers", () => {
  it.each([
    ["bytes 0-9/10", { start: 0, end: 9, total: 10 }],
    ["bytes 5-9/*", { start: 5, end: 9 }],
    ["bytes */10", { total: 10 }],
    ["BYTES 1-1/2", { start: 1, end: 1, total: 2 }],
    ["bytes 9-5/10", null],
    ["bytes 0-10/10", null],
    ["bytes */*", null],
    ["items 0-1/2", null],
    ["bytes 0-1", null],
    ["bytes 0-99999999999999999999/100000000000000000000", null],
  ])("Content-Range %s", (v, want) => {
    expect(parseContentRange(v)).toEqual(want);
  });

  it("Retry-After: seconds, a date, or nothing usable", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:00:10 GMT", now)).toBe(10_000);
    expect(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it("only a strong, quoted ETag is used in If-Range", () => {
    expect(strongEtag('"abc"')).toBe('"abc"');
    expect(strongEtag('W/"abc"')).toBeUndefined();
    expect(strongEtag("abc")).toBeUndefined();
    expect(strongEtag(undefined)).toBeUndefined();
  });
});

describe("redirects and URLs", () => {
  const from = "https://cdn.example/a/img.bin";
  it.each([
    [200, undefined, 0, { kind: "none" }],
    [302, "/b/img.bin", 0, { kind: "follow", url: "https://cdn.example/b/img.bin" }],
    [307, "https://mirror.example/x#frag", 2, { kind: "follow", url: "https://mirror.example/x" }],
    [301, "/b", MAX_REDIRECTS, { kind: "fail", code: "E_DOWNLOAD_REDIRECT" }],
    [302, undefined, 0, { kind: "fail", code: "E_DOWNLOAD_REDIRECT" }],
    [302, "http://cdn.example/b", 0, { kind: "fail", code: "E_DOWNLOAD_REDIRECT" }],
    [308, "file:///etc/passwd", 0, { kind: "fail", code: "E_DOWNLOAD_REDIRECT" }],
  ] as const)("%i to %s after %i hops", (status, location, hops, want) => {
    expect(redirectTarget(status, location, from, hops)).toMatchObject(want);
  });

  it("checks and redacts URLs", () => {
    expect(checkUrl("https://a.example/x").ok).toBe(true);
    expect(checkUrl("ftp://a.example/x").ok).toBe(false);
    expect(checkUrl("/relative").ok).toBe(false);
    expect(redactUrl("https://user:pw@cdn.example:8443/a.bin?X-Amz-Signature=s3cr3t")).toBe(
      "https://cdn.example:8443/a.bin?(query)",
    );
    expect(redactUrl("http://h/a.bin")).toBe("http://h/a.bin");
  });
});

describe("urlAllowed (download.allowedUrls)", () => {
  const list = ["https://updates.example.com/fw/", "http://10.0.0.5:8080/"];

  it("allows only URLs under an entry: same origin, path starting with the entry's", () => {
    const yes = [
      "https://updates.example.com/fw/a.bin",
      "https://UPDATES.example.com:443/fw/x/../b.bin",
      "http://10.0.0.5:8080/anything?sig=1",
    ];
    const no = [
      "https://updates.example.com/fwx/a.bin",
      "https://updates.example.com/fw/../secret",
      "https://updates.example.com.evil.example/fw/a.bin",
      "https://updates.example.com@evil.example/fw/a.bin",
      "https://user@updates.example.com/fw/a.bin",
      "https://updates.example.com:444/fw/a.bin",
      "http://updates.example.com/fw/a.bin",
      "http://10.0.0.5/",
      "http://10.0.0.5:8081/",
      "file:///etc/passwd",
      "not a url",
    ];
    for (const u of yes) expect([u, urlAllowed(u, list)]).toEqual([u, true]);
    for (const u of no) expect([u, urlAllowed(u, list)]).toEqual([u, false]);
    expect(urlAllowed("http://anywhere.example/x", [])).toBe(true);
  });

  it("property: any URL on another host, or on a path outside the entry, is refused", () => {
    const label = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/);
    const seg = fc.stringMatching(/^[a-zA-Z0-9._~%-]{1,8}$/);
    fc.assert(
      fc.property(label, fc.array(seg, { maxLength: 4 }), (host, path) => {
        const u = `https://${host}.example.org/${path.join("/")}`;
        const onHost = urlAllowed(u, [`https://${host}.example.org/`]);
        const other = urlAllowed(u, [`https://${host}x.example.org/`]);
        const parsed = new URL(u).pathname;
        const under = urlAllowed(u, ["https://" + host + ".example.org/only/"]);
        return onHost && !other && under === parsed.startsWith("/only/");
      }),
    );
  });

  it("allowListEntryProblem: absolute http(s) URLs without user info, query or fragment", () => {
    expect(allowListEntryProblem("https://updates.example.com/fw/")).toBeUndefined();
    for (const bad of [
      "updates.example.com/fw/",
      "ftp://updates.example.com/",
      "https://u:p@updates.example.com/",
      "https://updates.example.com/?a=1",
      "https://updates.example.com/#x",
    ])
      expect([bad, allowListEntryProblem(bad)]).not.toEqual([bad, undefined]);
  });
});

describe("classifyTransportError", () => {
  const err = (code: string, message = code) => Object.assign(new Error(message), { code });
  it.each([
    [err("ECONNREFUSED"), "head", "E_DOWNLOAD_CONNECT"],
    [err("UND_ERR_CONNECT_TIMEOUT"), "head", "E_DOWNLOAD_CONNECT"],
    [err("ENOTFOUND"), "head", "E_DOWNLOAD_CONNECT"],
    [err("SELF_SIGNED_CERT_IN_CHAIN"), "head", "E_DOWNLOAD_TLS"],
    [err("ERR_TLS_CERT_ALTNAME_INVALID"), "head", "E_DOWNLOAD_TLS"],
    [
      Object.assign(new Error("wrapped"), { cause: err("CERT_HAS_EXPIRED") }),
      "head",
      "E_DOWNLOAD_TLS",
    ],
    [err("UND_ERR_HEADERS_TIMEOUT"), "head", "E_DOWNLOAD_STALLED"],
    [err("UND_ERR_BODY_TIMEOUT"), "body", "E_DOWNLOAD_STALLED"],
    [err("UND_ERR_SOCKET"), "head", "E_DOWNLOAD_NETWORK"],
    [err("UND_ERR_SOCKET"), "body", "E_DOWNLOAD_TRUNCATED"],
    [err("ECONNRESET"), "body", "E_DOWNLOAD_NETWORK"],
    [err("HPE_INVALID_CHUNK_SIZE"), "body", "E_DOWNLOAD_NETWORK"],
    [err("UND_ERR_HEADERS_OVERFLOW"), "head", "E_DOWNLOAD_RESPONSE"],
    ["a string", "head", "E_DOWNLOAD_NETWORK"],
  ] as const)("%o in %s is %s", (e, phase, code) => {
    expect(classifyTransportError(e, phase).code).toBe(code);
  });

  it("every download code has a next step, and every next step's code is documented", () => {
    expect(Object.keys(DOWNLOAD_CODE_ACTION).sort()).toEqual(Object.keys(downloadCodes).sort());
  });
});

describe("RateFloor", () => {
  it("judges nothing before a whole window, then the rate over the last window", () => {
    const f = new RateFloor(100, 1000, 0); // 100 B/s over 1 s
    expect(f.sample(250, 10)).toBeUndefined();
    expect(f.sample(500, 20)).toBeUndefined();
    expect(f.sample(750, 30)).toBeUndefined();
    expect(f.sample(1000, 40)).toBe(40); // 40 B in the first second
    const g = new RateFloor(100, 1000, 0);
    for (const [t, b] of [
      [250, 0],
      [500, 0],
      [750, 0],
      [1000, 500],
    ] as const)
      expect(g.sample(t, b)).toBeUndefined();
    // 500 B arrived in the first second, then nothing: the window slides past them.
    expect(g.sample(1250, 500)).toBeUndefined(); // window 250..1250: 500 B
    expect(g.sample(2000, 500)).toBe(0); // window 1000..2000: nothing
  });

  it("is off at 0 B/s", () => {
    const f = new RateFloor(0, 10, 0);
    expect(f.sample(100, 0)).toBeUndefined();
  });

  it("a steady rate above the floor never trips it, whatever the sampling", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 1, maxLength: 60 }),
        (rate, steps) => {
          const f = new RateFloor(rate, 1000, 0);
          let t = 0;
          for (const s of steps) {
            t += s;
            // 0.1 % above the floor, so float rounding cannot decide the outcome.
            expect(f.sample(t, (rate * 1.001 * t) / 1000)).toBeUndefined();
          }
        },
      ),
    );
  });
});

describe("resolveLimits", () => {
  it("overlays given keys on the defaults, ignoring undefined and unknown ones", () => {
    const extra = { retries: 2, idleTimeoutMs: undefined, maxConcurrent: 4 } as Record<
      string,
      unknown
    >;
    expect(resolveLimits(extra)).toEqual({ ...DEFAULT_LIMITS, retries: 2 });
  });
  it.each([
    { connectTimeoutMs: 0 },
    { retries: -1 },
    { retries: 1.5 },
    { backoffBaseMs: 10, backoffMaxMs: 5 },
    { totalTimeoutMs: 2 ** 31 },
  ])("refuses %o", (bad) => {
    expect(() => resolveLimits(bad)).toThrow(RangeError);
  });
});
