/**
 * `esp-ota serve` over real HTTP on loopback (STYLE.md §14): Range, HEAD, ETag, If-Range,
 * If-None-Match, Content-Length, and no way out of the served directory. Requests are sent with
 * node:http and raw paths, because fetch() would normalise `..` away before sending it.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseRange, safePathSegments } from "../../src/release/range.js";
import { createStaticServer } from "../../src/release/serve.js";

const root = mkdtempSync(join(tmpdir(), "serve-"));
const site = join(root, "site");
const body = new Uint8Array(5000).map((_, i) => (i * 7) & 0xff);
let server: Server;
let port: number;

beforeAll(async () => {
  mkdirSync(join(site, "240ac4000001"), { recursive: true });
  writeFileSync(join(site, "240ac4000001", "ota_0.bin"), body);
  writeFileSync(join(site, "index.json"), '{"format":1}\n');
  writeFileSync(join(site, "empty.bin"), new Uint8Array(0));
  writeFileSync(join(site, "a.bin.partial"), "half");
  writeFileSync(join(root, "secret.txt"), "outside");
  symlinkSync(join(root, "secret.txt"), join(site, "link.txt"));
  server = createStaticServer(site);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise((ok) => server.close(ok));
  rmSync(root, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}
function get(path: string, headers: Record<string, string> = {}, method = "GET"): Promise<Reply> {
  return new Promise((ok, fail) => {
    const req = request({ host: "127.0.0.1", port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.on("error", fail);
    req.end();
  });
}
const FILE = "/240ac4000001/ota_0.bin";

describe("serve", () => {
  it("GET sends the whole file with its length, a strong ETag and Accept-Ranges", async () => {
    const r = await get(FILE);
    expect(r.status).toBe(200);
    expect(r.body).toEqual(Buffer.from(body));
    expect(r.headers["content-length"]).toBe("5000");
    expect(r.headers["accept-ranges"]).toBe("bytes");
    expect(r.headers.etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    expect(r.headers["content-type"]).toBe("application/octet-stream");
    expect((await get("/index.json")).headers["content-type"]).toBe("application/json");
  });

  it("HEAD sends the headers of GET and no body", async () => {
    const [g, h] = await Promise.all([get(FILE), get(FILE, {}, "HEAD")]);
    expect(h.status).toBe(200);
    expect(h.body.length).toBe(0);
    expect(h.headers["content-length"]).toBe("5000");
    expect(h.headers.etag).toBe(g.headers.etag);
    const hr = await get(FILE, { Range: "bytes=10-19" }, "HEAD");
    expect(hr.status).toBe(206);
    expect(hr.headers["content-length"]).toBe("10");
  });

  it("serves one byte range: closed, open-ended, suffix, clamped to the end", async () => {
    const cases: [string, number, number][] = [
      ["bytes=10-19", 10, 19],
      ["bytes=4990-", 4990, 4999],
      ["bytes=-100", 4900, 4999],
      ["bytes=4000-999999", 4000, 4999],
      ["bytes=0-0", 0, 0],
    ];
    for (const [range, start, end] of cases) {
      const r = await get(FILE, { Range: range });
      expect(r.status, range).toBe(206);
      expect(r.headers["content-range"]).toBe(`bytes ${start}-${end}/5000`);
      expect(r.headers["content-length"]).toBe(String(end - start + 1));
      expect(r.body).toEqual(Buffer.from(body.subarray(start, end + 1)));
    }
  });

  it("answers 416 with the size when the range is unsatisfiable", async () => {
    for (const range of ["bytes=5000-", "bytes=6000-7000", "bytes=-0"]) {
      const r = await get(FILE, { Range: range });
      expect(r.status, range).toBe(416);
      expect(r.headers["content-range"]).toBe("bytes */5000");
    }
    expect((await get("/empty.bin", { Range: "bytes=0-" })).status).toBe(416);
  });

  it("ignores multiple, malformed and non-byte ranges and sends the whole file", async () => {
    for (const range of ["bytes=0-1,5-6", "bytes=abc", "items=0-1", "bytes=9-3"]) {
      const r = await get(FILE, { Range: range });
      expect(r.status, range).toBe(200);
      expect(r.body.length).toBe(5000);
    }
  });

  it("honours If-Range only with the current strong ETag", async () => {
    const etag = (await get(FILE)).headers.etag as string;
    const hit = await get(FILE, { Range: "bytes=0-9", "If-Range": etag });
    expect(hit.status).toBe(206);
    for (const v of ['"stale-1"', `W/${etag}`, new Date().toUTCString()]) {
      const miss = await get(FILE, { Range: "bytes=0-9", "If-Range": v });
      expect(miss.status, v).toBe(200);
      expect(miss.body.length).toBe(5000);
    }
  });

  it("answers If-None-Match with 304, and a changed file gets a new ETag", async () => {
    const path = join(site, "240ac4000001", "ota_0.bin");
    const etag = (await get(FILE)).headers.etag as string;
    const r = await get(FILE, { "If-None-Match": etag });
    expect(r.status).toBe(304);
    expect(r.body.length).toBe(0);
    utimesSync(path, new Date(), new Date(Date.now() + 10_000));
    const changed = await get(FILE, {
      "If-None-Match": etag,
      Range: "bytes=0-9",
      "If-Range": etag,
    });
    expect(changed.status).toBe(200);
    expect(changed.headers.etag).not.toBe(etag);
  });

  it("never leaves the directory: traversal, encoded traversal, symlinks, dot-files", async () => {
    for (const p of [
      "/../secret.txt",
      "/%2e%2e/secret.txt",
      "/240ac4000001/..%2f..%2fsecret.txt",
      "/240ac4000001/%2e%2e/%2e%2e/secret.txt",
      "/..\\secret.txt",
      "/link.txt",
      "/a.bin.partial",
      "/%00",
      "/%zz",
      "/",
      "/240ac4000001",
      "/missing.bin",
    ]) {
      const r = await get(p);
      expect(r.status, p).toBe(404);
      expect(r.body.toString()).not.toContain("outside");
    }
  });

  it("allows GET and HEAD only", async () => {
    const r = await get(FILE, {}, "POST");
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe("GET, HEAD");
  });
});

describe("range parsing (pure)", () => {
  it("never throws and always selects bytes inside the file", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => `bytes=${a}-${b}`),
        ),
        fc.nat(10_000),
        (h, size) => {
          const r = parseRange(h, size);
          if (r.kind !== "range") return true;
          return r.start >= 0 && r.start <= r.end && r.end < size;
        },
      ),
    );
  });
  it("finds no path segments that climb out", () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        const segs = safePathSegments(`/${s}`);
        return segs === null || segs.every((x) => x !== ".." && x !== "." && !x.includes("/"));
      }),
    );
  });
});
