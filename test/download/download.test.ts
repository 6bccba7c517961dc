/**
 * downloadImage and fetchDocument over real HTTP(S) on loopback (STYLE.md §14): servers written
 * here misbehave on purpose (resets, truncation, stalls, drips, endless bodies, wrong content,
 * changed files), and `esp-ota serve`'s own server does Range/ETag/If-Range. Limits are
 * milliseconds so the whole file runs in a few seconds.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  type DownloadLimits,
  downloadImage,
  fetchDocument,
  type ImageDownload,
} from "../../src/download/download.js";
import { EspOtaError } from "../../src/errors.js";
import { makeEtag } from "../../src/release/range.js";
import { staticHandler } from "../../src/release/serve.js";
import { latch, pattern, sendFile, sha256Hex, startServer, type TestServer } from "./harness.js";

const root = mkdtempSync(join(tmpdir(), "download-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const SIZE = 20_000;
const BODY = pattern(SIZE);
const SHA = sha256Hex(BODY);

/**
 * Millisecond limits; the rate floor is off except where a test is about it. Where a timeout is
 * the subject it is a few hundred ms, not less: an event loop blocked that long on a loaded CI
 * machine fires the timer before reading data that is waiting, and a good attempt looks stalled.
 */
const FAST: Partial<DownloadLimits> = {
  connectTimeoutMs: 2000,
  idleTimeoutMs: 2000,
  totalTimeoutMs: 20_000,
  minRateBytesPerSec: 0,
  retries: 3,
  backoffBaseMs: 1,
  backoffMaxMs: 4,
};

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
async function server(h: Parameters<typeof startServer>[0], tls?: { key: string; cert: string }) {
  const s = await startServer(h, tls);
  servers.push(s);
  return s;
}

let n = 0;
function dest(): string {
  return join(root, `d${n++}`, "image.bin");
}

function image(urls: string[], path = dest()): ImageDownload {
  return { urls, size: SIZE, sha256: SHA, dest: path };
}

/** The rejection of `p`, which must be an EspOtaError. */
async function failure(p: Promise<unknown>): Promise<EspOtaError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(EspOtaError);
  return e as EspOtaError;
}

function retries() {
  const seen: { attempt: number; url: string; code: string; delayMs: number }[] = [];
  return { seen, onRetry: (i: (typeof seen)[number]) => seen.push(i) };
}

/** Writes a partial staging file and its sidecar as an interrupted download leaves them. */
function stagePartial(path: string, bytes: Uint8Array, url: string, etag: string | null): void {
  execFileSync("mkdir", ["-p", join(path, "..")]);
  writeFileSync(path, bytes);
  writeFileSync(`${path}.json`, JSON.stringify({ url, etag, size: SIZE, sha256: SHA }));
}

describe("downloadImage", () => {
  it("downloads, verifies and syncs an image; the sidecar is gone afterwards", async () => {
    const s = await server((req, res) => sendFile(req, res, BODY));
    const progress: number[] = [];
    const d = image([s.url()]);
    const r = await downloadImage(d, FAST, undefined, { onProgress: (b) => progress.push(b) });
    expect(r).toEqual({ path: d.dest, bytes: SIZE, resumedFrom: 0, attempts: 1, url: s.url() });
    expect(readFileSync(d.dest)).toEqual(Buffer.from(BODY));
    expect(existsSync(`${d.dest}.json`)).toBe(false);
    expect(progress.at(-1)).toBe(SIZE);
    expect(s.hits.map((h) => h.range)).toEqual([undefined]);
  });

  it("resumes a partial file with Range and If-Range from esp-ota serve; the hash is of the whole file", async () => {
    const site = join(root, "site");
    execFileSync("mkdir", ["-p", site]);
    writeFileSync(join(site, "image.bin"), BODY);
    const st = statSync(join(site, "image.bin"));
    const etag = makeEtag(st.size, st.mtimeMs);
    const handler = staticHandler(site);
    const s = await server((req, res) => handler(req, res));
    const d = image([s.url()]);
    stagePartial(d.dest, BODY.subarray(0, 7000), s.url(), etag);
    const r = await downloadImage(d, FAST);
    expect(s.hits).toEqual([{ n: 0, url: "/image.bin", range: "bytes=7000-", ifRange: etag }]);
    expect(r.resumedFrom).toBe(7000);
    expect(readFileSync(d.dest)).toEqual(Buffer.from(BODY));

    // Without its sidecar a partial file is not trusted: it starts over, without Range.
    const d2 = image([s.url()]);
    execFileSync("mkdir", ["-p", join(d2.dest, "..")]);
    writeFileSync(d2.dest, BODY.subarray(0, 7000));
    const r2 = await downloadImage(d2, FAST);
    expect(r2.resumedFrom).toBe(0);
    expect(s.hits[1]?.range).toBeUndefined();
  });

  it("a complete staged file with its sidecar is verified without a request", async () => {
    const s = await server((req, res) => sendFile(req, res, BODY));
    const d = image([s.url()]);
    stagePartial(d.dest, BODY, s.url(), null);
    const r = await downloadImage(d, FAST);
    expect(r).toMatchObject({ attempts: 0, resumedFrom: SIZE, url: s.url() });
    expect(s.hits).toHaveLength(0);
    expect(existsSync(`${d.dest}.json`)).toBe(false);
  });

  for (const how of ["rst", "fin"] as const) {
    it(`a connection ${how === "rst" ? "reset" : "closed"} mid-body resumes from the bytes that arrived`, async () => {
      const arrived = latch();
      const s = await server((req, res, hit) =>
        hit.n === 0
          ? sendFile(req, res, BODY, { cutAt: 6000, how, beforeCut: () => arrived.promise })
          : sendFile(req, res, BODY),
      );
      const r0 = retries();
      const r = await downloadImage(image([s.url()]), FAST, undefined, {
        ...r0,
        // The reset waits until the client has the bytes: an RST can discard unread data.
        onProgress: (b) => b >= 6000 && arrived.open(),
      });
      expect(r0.seen.map((x) => x.code)).toEqual([
        how === "rst" ? "E_DOWNLOAD_NETWORK" : "E_DOWNLOAD_TRUNCATED",
      ]);
      expect(s.hits.map((h) => h.range)).toEqual([undefined, "bytes=6000-"]);
      expect(s.hits[1]?.ifRange).toMatch(/^"/);
      expect(r.attempts).toBe(2);
    });
  }

  it("a body that keeps ending short is retried with Range until the retries run out", async () => {
    // The first response stops at 5000 (FIN); every later one sends its headers and nothing.
    // The cut waits for the client to have the bytes: undici drops a body's unread buffer when
    // the connection ends in the same instant.
    const arrived = latch();
    const s = await server((req, res, hit) =>
      sendFile(req, res, BODY, {
        cutAt: hit.n === 0 ? 5000 : 0,
        how: "fin",
        beforeCut: () => (hit.n === 0 ? arrived.promise : undefined),
      }),
    );
    const d = image([s.url()]);
    const e = await failure(
      downloadImage(d, { ...FAST, retries: 2 }, undefined, {
        onProgress: (b) => b >= 5000 && arrived.open(),
      }),
    );
    expect(e.code).toBe("E_DOWNLOAD_FAILED");
    expect(e.context).toMatchObject({ codes: "E_DOWNLOAD_TRUNCATED", bytes: 5000, attempt: 3 });
    expect(s.hits.map((h) => h.range)).toEqual([undefined, "bytes=5000-", "bytes=5000-"]);
    // The bytes stay for a later resume.
    expect(statSync(d.dest).size).toBe(5000);
    expect(existsSync(`${d.dest}.json`)).toBe(true);
  });

  it("a chunked body that ends cleanly but short is truncated, and resumed", async () => {
    const s = await server((req, res, hit) => {
      if (hit.n > 0) return sendFile(req, res, BODY);
      res.writeHead(200, { ETag: '"x"' }); // no Content-Length: chunked
      res.end(BODY.subarray(0, 3000));
    });
    const r0 = retries();
    const r = await downloadImage(image([s.url()]), FAST, undefined, r0);
    expect(r0.seen.map((x) => x.code)).toEqual(["E_DOWNLOAD_TRUNCATED"]);
    expect(s.hits[1]?.range).toBe("bytes=3000-");
    expect(r.bytes).toBe(SIZE);
  });

  it("a Content-Length other than the manifest's size is refused before a byte is written", async () => {
    const s = await server((_req, res) => {
      res.writeHead(200, { "Content-Length": String(SIZE + 1) });
      res.end(pattern(SIZE + 1));
    });
    const d = image([s.url()]);
    const e = await failure(downloadImage(d, FAST));
    expect(e.context.codes).toBe("E_DOWNLOAD_SIZE");
    expect(s.hits).toHaveLength(1); // not retried on that mirror
    expect(existsSync(d.dest)).toBe(false);
  });

  it("an endless chunked body is cut off at the signed size: never a byte more on disk", async () => {
    let serverSaw = "";
    const s = await server((_req, res) => {
      res.writeHead(200); // chunked, no length
      let sent = 0;
      const more = () => {
        while (!res.destroyed && res.write(pattern(4096, sent))) sent += 4096;
        if (!res.destroyed) res.once("drain", more);
      };
      res.on("close", () => {
        serverSaw = res.writableFinished ? "finished" : "closed by the client";
      });
      more();
    });
    const d = image([s.url()]);
    let most = 0;
    const e = await failure(
      downloadImage(d, FAST, undefined, { onProgress: (b) => (most = Math.max(most, b)) }),
    );
    expect(e.context.codes).toBe("E_DOWNLOAD_TOO_LARGE");
    expect(most).toBeLessThanOrEqual(SIZE);
    expect(existsSync(d.dest)).toBe(false); // that server's bytes are not trusted either
    await new Promise((ok) => setTimeout(ok, 20));
    expect(serverSaw).toBe("closed by the client");
  });

  it("wrong content: hash mismatch, file and sidecar removed, not retried on that mirror; the next mirror is used", async () => {
    const wrong = pattern(SIZE, 99);
    const bad = await server((req, res) => sendFile(req, res, wrong));
    const d = image([bad.url()]);
    const e = await failure(downloadImage(d, FAST));
    expect(e.code).toBe("E_DOWNLOAD_FAILED");
    expect(e.context.codes).toBe("E_DOWNLOAD_HASH_MISMATCH");
    expect(bad.hits).toHaveLength(1);
    expect(existsSync(d.dest)).toBe(false);
    expect(existsSync(`${d.dest}.json`)).toBe(false);

    const good = await server((req, res) => sendFile(req, res, BODY));
    const r0 = retries();
    const r = await downloadImage(image([bad.url(), good.url()]), FAST, undefined, r0);
    expect(r.url).toBe(good.url());
    expect(r0.seen).toEqual([
      { attempt: 1, url: bad.url(), code: "E_DOWNLOAD_HASH_MISMATCH", delayMs: 0 },
    ]);
    expect(readFileSync(r.path)).toEqual(Buffer.from(BODY));
  });

  it("a spliced file that fails the hash is downloaded once more from 0 on the same mirror", async () => {
    const s = await server((req, res) => sendFile(req, res, BODY));
    const d = image([s.url()]);
    // A staged prefix that is not this file's (an older build, a torn write before a power cut).
    stagePartial(d.dest, pattern(5000, 7), s.url(), null);
    const r0 = retries();
    const r = await downloadImage(d, FAST, undefined, r0);
    expect(s.hits.map((h) => h.range)).toEqual(["bytes=5000-", undefined]);
    expect(r0.seen.map((x) => x.code)).toEqual(["E_DOWNLOAD_HASH_MISMATCH"]);
    expect(r).toMatchObject({ resumedFrom: 0, attempts: 2 });
  });

  it("404 on the first mirror: the second mirror is used at once", async () => {
    const missing = await server((_req, res) => {
      res.writeHead(404, { "Content-Length": "0" });
      res.end();
    });
    const good = await server((req, res) => sendFile(req, res, BODY));
    const r0 = retries();
    const r = await downloadImage(image([missing.url(), good.url()]), FAST, undefined, r0);
    expect(r).toMatchObject({ url: good.url(), attempts: 2 });
    expect(missing.hits).toHaveLength(1);
    expect(r0.seen).toEqual([
      { attempt: 1, url: missing.url(), code: "E_DOWNLOAD_HTTP", delayMs: 0 },
    ]);
  });

  it("503 is retried with exponential backoff and full jitter, then succeeds", async () => {
    const s = await server((req, res, hit) => {
      if (hit.n >= 2) return sendFile(req, res, BODY);
      res.writeHead(503, { "Content-Length": "0" });
      res.end();
    });
    const r0 = retries();
    const slept: number[] = [];
    const r = await downloadImage(
      image([s.url()]),
      { ...FAST, backoffBaseMs: 4, backoffMaxMs: 100 },
      undefined,
      {
        ...r0,
        random: () => 0.5,
        sleep: async (ms) => {
          slept.push(ms);
        },
      },
    );
    expect(r.attempts).toBe(3);
    expect(r0.seen).toEqual([
      { attempt: 1, url: s.url(), code: "E_DOWNLOAD_SERVER", delayMs: 2 },
      { attempt: 2, url: s.url(), code: "E_DOWNLOAD_SERVER", delayMs: 4 },
    ]);
    expect(slept).toEqual([2, 4]);
  });

  it("429 honours Retry-After up to backoffMaxMs", async () => {
    const s = await server((req, res, hit) => {
      if (hit.n >= 1) return sendFile(req, res, BODY);
      res.writeHead(429, { "Retry-After": "120", "Content-Length": "0" });
      res.end();
    });
    const r0 = retries();
    await downloadImage(image([s.url()]), FAST, undefined, r0);
    expect(r0.seen).toEqual([{ attempt: 1, url: s.url(), code: "E_DOWNLOAD_SERVER", delayMs: 4 }]);
  });

  it("a stalled body hits the idle timeout and is resumed", async () => {
    const s = await server((req, res, hit) =>
      sendFile(req, res, BODY, hit.n === 0 ? { cutAt: 8000, how: "stall" } : {}),
    );
    const r0 = retries();
    const r = await downloadImage(image([s.url()]), { ...FAST, idleTimeoutMs: 300 }, undefined, r0);
    expect(r0.seen.map((x) => x.code)).toEqual(["E_DOWNLOAD_STALLED"]);
    expect(s.hits[1]?.range).toBe("bytes=8000-");
    expect(r.bytes).toBe(SIZE);
  });

  it("a drip below the minimum rate is aborted (E_DOWNLOAD_SLOW) and retried", async () => {
    const s = await server((req, res, hit) => {
      if (hit.n > 0) return sendFile(req, res, BODY);
      res.writeHead(200, { "Content-Length": String(SIZE) });
      // 10 bytes every 20 ms = 500 B/s: never idle for the idle timeout, far below the floor.
      let at = 0;
      const t = setInterval(() => {
        if (res.destroyed) return clearInterval(t);
        res.write(BODY.subarray(at, at + 10));
        at += 10;
      }, 20);
      res.on("close", () => clearInterval(t));
    });
    const r0 = retries();
    const r = await downloadImage(
      image([s.url()]),
      { ...FAST, minRateBytesPerSec: 20_000, minRateWindowMs: 300 },
      undefined,
      r0,
    );
    expect(r0.seen.map((x) => x.code)).toEqual(["E_DOWNLOAD_SLOW"]);
    expect(s.hits[1]?.range).toMatch(/^bytes=\d+-$/); // the dripped bytes are kept
    expect(readFileSync(r.path)).toEqual(Buffer.from(BODY));
  });

  it("a file changed on the server since the partial download (new ETag) is started over", async () => {
    const s = await server((req, res) => sendFile(req, res, BODY, { etag: '"new"' }));
    const d = image([s.url()]);
    stagePartial(d.dest, pattern(9000, 3), s.url(), '"old"');
    const r = await downloadImage(d, FAST);
    expect(s.hits).toEqual([{ n: 0, url: "/image.bin", range: "bytes=9000-", ifRange: '"old"' }]);
    expect(r).toMatchObject({ resumedFrom: 0, attempts: 1 });
    expect(readFileSync(d.dest)).toEqual(Buffer.from(BODY));
  });

  it("a 206 that does not start where asked is discarded and the download restarts from 0", async () => {
    const s = await server((req, res, hit) => {
      if (hit.n > 0) return sendFile(req, res, BODY);
      res.writeHead(206, { "Content-Range": `bytes 0-${SIZE - 1}/${SIZE}` });
      res.end(BODY);
    });
    const d = image([s.url()]);
    stagePartial(d.dest, BODY.subarray(0, 4000), s.url(), null);
    const r = await downloadImage(d, FAST);
    expect(s.hits.map((h) => h.range)).toEqual(["bytes=4000-", undefined]);
    expect(r.resumedFrom).toBe(0);
  });

  it("cancelling keeps the staged bytes; the next call resumes from them", async () => {
    const s = await server((req, res, hit) =>
      sendFile(req, res, BODY, hit.n === 0 ? { cutAt: 12_000, how: "stall" } : {}),
    );
    const d = image([s.url()]);
    const ac = new AbortController();
    const e = await failure(
      downloadImage(d, FAST, undefined, {
        signal: ac.signal,
        onProgress: (b) => b >= 12_000 && ac.abort(new Error("operator cancel")),
      }),
    );
    expect(e.code).toBe("E_DOWNLOAD_CANCELLED");
    expect(e.context).toMatchObject({ url: s.url(), bytes: 12_000, attempt: 1 });
    expect(statSync(d.dest).size).toBe(12_000);
    const r = await downloadImage(d, FAST);
    expect(s.hits[1]?.range).toBe("bytes=12000-");
    expect(r.resumedFrom).toBe(12_000);
  });

  it("a staging path that cannot be created is E_DOWNLOAD_STAGING, before any request", async () => {
    const s = await server((req, res) => sendFile(req, res, BODY));
    const blocker = join(root, "a-file");
    writeFileSync(blocker, "not a directory");
    const e = await failure(downloadImage(image([s.url()], join(blocker, "image.bin")), FAST));
    expect(e.code).toBe("E_DOWNLOAD_STAGING");
    expect(e.context).toMatchObject({ url: s.url(), bytes: 0, attempt: 0 });
    expect(s.hits).toHaveLength(0);
  });

  it("the total budget ends the download (E_DOWNLOAD_TIMEOUT)", async () => {
    const s = await server(() => {}); // never answers
    const e = await failure(
      downloadImage(image([s.url()]), { ...FAST, idleTimeoutMs: 5000, totalTimeoutMs: 150 }),
    );
    expect(e.code).toBe("E_DOWNLOAD_TIMEOUT");
  });

  it("follows up to 3 redirects, refuses a 4th, and refuses non-http URLs", async () => {
    // /rN redirects to /r(N-1), /r1 to the image: /r3 is 3 redirects away, /r4 is 4.
    const s = await server((req, res, hit) => {
      const m = /^\/r(\d)$/.exec(hit.url);
      if (!m) return sendFile(req, res, BODY);
      const k = Number(m[1]);
      res.writeHead(302, { Location: k > 1 ? `/r${k - 1}` : "/image.bin", "Content-Length": "0" });
      res.end();
    });
    const ok = await downloadImage(image([s.url("/r3")]), FAST);
    expect(ok).toMatchObject({ url: s.url("/r3"), attempts: 1 });
    const e = await failure(downloadImage(image([s.url("/r4"), "ftp://example.com/x.bin"]), FAST));
    expect(e.context.codes).toBe("E_DOWNLOAD_REDIRECT,E_DOWNLOAD_URL");
  });
});

describe("downloadImage over https with a pinned CA", () => {
  const haveOpenssl = (() => {
    try {
      execFileSync("openssl", ["version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

  function makeCa(dir: string, name: string): void {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        join(dir, `${name}.key`),
        "-out",
        join(dir, `${name}.pem`),
        "-days",
        "2",
        "-subj",
        `/CN=${name}`,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
      ],
      { stdio: "ignore" },
    );
  }

  it.skipIf(!haveOpenssl)(
    "trusts the pinned CA and refuses a server from another CA (skipped without openssl)",
    async () => {
      const dir = mkdtempSync(join(root, "tls-"));
      makeCa(dir, "pinned-ca");
      makeCa(dir, "other-ca");
      writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1\n");
      execFileSync(
        "openssl",
        [
          "req",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-keyout",
          join(dir, "server.key"),
          "-out",
          join(dir, "server.csr"),
          "-subj",
          "/CN=127.0.0.1",
        ],
        { stdio: "ignore" },
      );
      execFileSync(
        "openssl",
        [
          "x509",
          "-req",
          "-in",
          join(dir, "server.csr"),
          "-CA",
          join(dir, "pinned-ca.pem"),
          "-CAkey",
          join(dir, "pinned-ca.key"),
          "-CAcreateserial",
          "-days",
          "2",
          "-extfile",
          join(dir, "san.ext"),
          "-out",
          join(dir, "server.pem"),
        ],
        { stdio: "ignore" },
      );
      const s = await server((req, res) => sendFile(req, res, BODY), {
        key: readFileSync(join(dir, "server.key"), "utf8"),
        cert: readFileSync(join(dir, "server.pem"), "utf8"),
      });
      const pinned = readFileSync(join(dir, "pinned-ca.pem"));
      const r = await downloadImage(image([s.url()]), FAST, { ca: new Uint8Array(pinned) });
      expect(readFileSync(r.path)).toEqual(Buffer.from(BODY));

      const other = readFileSync(join(dir, "other-ca.pem"), "utf8");
      const e = await failure(downloadImage(image([s.url()]), FAST, { ca: other }));
      expect(e.context.codes).toBe("E_DOWNLOAD_TLS");
      expect(s.hits).toHaveLength(1); // the refused handshake never became a request
    },
  );
});

describe("download.allowedUrls", () => {
  it("a mirror outside the list is never requested; the next one, inside, is used", async () => {
    const outside = await server((req, res) => sendFile(req, res, BODY));
    const inside = await server((req, res) => sendFile(req, res, BODY));
    const r0 = retries();
    const r = await downloadImage(
      {
        ...image([outside.url("/a.bin"), inside.url("/fw/a.bin")]),
        allowedUrls: [inside.url("/fw/")],
      },
      FAST,
      undefined,
      r0,
    );
    expect(r.url).toBe(inside.url("/fw/a.bin"));
    expect(outside.hits).toHaveLength(0);
    expect(r0.seen[0]?.code).toBe("E_DOWNLOAD_URL_NOT_ALLOWED");
  });

  it("a redirect from an allowed server to one outside the list is not followed", async () => {
    const target = await server((req, res) => sendFile(req, res, BODY));
    const redirecting = await server((_req, res) => {
      res.writeHead(302, { Location: target.url("/elsewhere.bin"), "Content-Length": "0" });
      res.end();
    });
    const e = await failure(
      fetchDocument([redirecting.url("/m.json")], {
        limits: FAST,
        allowedUrls: [redirecting.url("/")],
      }),
    );
    expect(e.code).toBe("E_DOWNLOAD_FAILED");
    expect(e.context.codes).toBe("E_DOWNLOAD_URL_NOT_ALLOWED");
    expect(redirecting.hits).toHaveLength(1);
    expect(target.hits).toHaveLength(0);
    // Allowed too: followed.
    const ok = await fetchDocument([redirecting.url("/m.json")], {
      limits: FAST,
      allowedUrls: [redirecting.url("/"), target.url("/")],
    });
    expect(ok.bytes).toEqual(BODY);
  });
});

describe("fetchDocument", () => {
  const DOC = new TextEncoder().encode('{"format":1,"releaseId":"r1"}\n');

  it("returns the whole body, from the second mirror when the first fails", async () => {
    const down = await server((_req, res) => {
      res.writeHead(500, { "Content-Length": "0" });
      res.end();
    });
    const s = await server((req, res) => sendFile(req, res, DOC));
    const r = await fetchDocument([down.url("/m.json"), s.url("/m.json")], {
      limits: { ...FAST, retries: 1 },
    });
    expect(r).toEqual({ bytes: DOC, url: s.url("/m.json") });
    expect(down.hits).toHaveLength(2);
  });

  it("refuses more than maxBytes: by Content-Length, and by an endless chunked body", async () => {
    const big = await server((req, res) => sendFile(req, res, pattern(1000)));
    const e1 = await failure(fetchDocument([big.url()], { maxBytes: 999, limits: FAST }));
    expect(e1.context.codes).toBe("E_DOWNLOAD_TOO_LARGE");

    const endless = await server((_req, res) => {
      res.writeHead(200);
      const t = setInterval(() => res.write(pattern(256)), 1);
      res.on("close", () => clearInterval(t));
    });
    let most = 0;
    const e2 = await failure(
      fetchDocument([endless.url()], {
        maxBytes: 4096,
        limits: FAST,
        hooks: { onProgress: (b) => (most = Math.max(most, b)) },
      }),
    );
    expect(e2.context.codes).toBe("E_DOWNLOAD_TOO_LARGE");
    expect(most).toBeLessThanOrEqual(4096);
    expect(endless.hits).toHaveLength(1);
  });

  it("a connection refused is E_DOWNLOAD_CONNECT, retried", async () => {
    // A port that was just free: nothing listens there.
    const probe: Server = createServer();
    await new Promise<void>((ok) => probe.listen(0, "127.0.0.1", ok));
    const { port } = probe.address() as AddressInfo;
    await new Promise((ok) => probe.close(ok));
    const r0 = retries();
    const e = await failure(
      fetchDocument([`http://127.0.0.1:${port}/m.json`], {
        limits: { ...FAST, retries: 1 },
        hooks: r0,
      }),
    );
    expect(e.context.codes).toBe("E_DOWNLOAD_CONNECT");
    expect(r0.seen.map((x) => x.code)).toEqual(["E_DOWNLOAD_CONNECT"]);
  });
});
