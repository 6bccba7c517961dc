/**
 * Issue 12, defect 1 (the text-bounding part): one status message that is too long locked a
 * device out for good. Two ways to make one, both from outside: a notice whose 8 mirror URLs of
 * about 2,000 characters all 404 (E_DOWNLOAD_FAILED quoted every URL whole: over 16,000
 * characters), and a manifest server that puts a 60 KB unknown key in the manifest
 * (E_MANIFEST_SCHEMA quoted the key). The status schema holds 4096 characters of message, so
 * encoding the final status threw. Texts are now bounded where they are made (quote, src/text.ts);
 * these tests put each message into a real DeviceStatus and encode it.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ed25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { Type } from "@sinclair/typebox";
import { afterAll, describe, expect, it } from "vitest";
import { downloadImage } from "../../src/download/download.js";
import { EspOtaError, MAX_ERROR_MESSAGE } from "../../src/errors.js";
import { encodeMessage } from "../../src/mqtt/messages.js";
import { manifestKeyId, trustPolicyFromKeys } from "../../src/release/keyring.js";
import { verifyManifest } from "../../src/release/manifest.js";
import { eventLine } from "../../src/rollout/view.js";
import { firstSchemaError } from "../../src/schema.js";
import { printable, quote } from "../../src/text.js";
import { startServer } from "../download/harness.js";

const root = mkdtempSync(join(tmpdir(), "bounded-text-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The final status a gateway publishes for a failed update: what must always encode. */
function failedStatus(code: string, message: string): Uint8Array {
  return encodeMessage("status", {
    format: 1,
    deviceId: "esp32-24a16074b2c8",
    gatewayId: "gw-1",
    seq: 7,
    state: "failed",
    releaseId: "blink-1.2.0",
    error: { code, message, step: "download" },
    updatedAt: new Date().toISOString(),
  });
}

describe("quote and printable", () => {
  it("cut after max characters with a mark; escapes never split; bounded work and output", () => {
    expect(quote("short")).toBe("short");
    const q = quote("a".repeat(60_000), 50);
    expect(q).toBe(`${"a".repeat(50)}…(cut, 60000 characters)`);
    expect(quote("ab\x1b[31m", 4)).toBe("ab…(cut, 7 characters)");
    expect(quote("ab\x1b[31m", 6)).toBe("ab\\x1b…(cut, 7 characters)");
    // A surrogate pair is one character to the cut.
    expect(quote("😀😀", 3)).toBe("😀…(cut, 4 characters)");
    for (const max of [1, 10, 120])
      expect(quote("\n".repeat(10_000), max).length).toBeLessThan(max + 32);
    expect(() => quote("x", 0)).toThrow(RangeError);
  });

  it("escapes C0, DEL, C1, line separators and bidi controls; leaves other text alone", () => {
    expect(printable("\x1b]0;owned\x07\r\n\t\x7f\x9b\u2028\u202e\u2066ok é 漢")).toBe(
      "\\x1b]0;owned\\x07\\x0d\\x0a\\x09\\x7f\\x9b\\u2028\\u202e\\u2066ok é 漢",
    );
    expect(printable("plain 1.2.0")).toBe("plain 1.2.0");
  });

  it("EspOtaError cuts a message over MAX_ERROR_MESSAGE: the last line of defence", () => {
    const e = new EspOtaError("E_INTERNAL", "x".repeat(100_000));
    expect(e.message.length).toBeLessThanOrEqual(MAX_ERROR_MESSAGE);
    expect(e.message).toMatch(/…\(cut, 100000 characters\)$/);
    expect(() => failedStatus(e.code, e.message)).not.toThrow();
  });
});

describe("E_DOWNLOAD_FAILED over 8 long mirror URLs that all 404", () => {
  it("names each mirror by a quote: the message is short and the status encodes", async () => {
    const s = await startServer((_req, res) => {
      res.writeHead(404, { "content-length": "0" });
      res.end();
    });
    try {
      const urls = Array.from({ length: 8 }, (_, i) => s.url(`/${i}/${"p".repeat(2000)}.bin`));
      expect(urls.every((u) => u.length > 2000)).toBe(true);
      const err = await downloadImage(
        { urls, size: 1000, sha256: "ab".repeat(32), dest: join(root, "img.bin") },
        { retries: 0, minRateBytesPerSec: 0 },
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(EspOtaError);
      const e = err as EspOtaError;
      expect(e.code).toBe("E_DOWNLOAD_FAILED");
      expect(s.hits).toHaveLength(8);
      // Before: 8 x 2,000 characters of URL, over 16,000 characters.
      expect(e.message.length).toBeLessThan(2000);
      expect(e.message.match(/E_DOWNLOAD_HTTP/g)).toHaveLength(8);
      expect(() => failedStatus(e.code, e.message)).not.toThrow();
      for (const v of Object.values(e.context))
        if (typeof v === "string") expect(v.length).toBeLessThan(4096);
    } finally {
      await s.close();
    }
  });
});

describe("E_MANIFEST_SCHEMA for a manifest with a 60 KB unknown key", () => {
  const publicKey = ed25519.getPublicKey(sha256(new TextEncoder().encode("bounded-text")));
  const policy = trustPolicyFromKeys(
    [{ keyId: manifestKeyId("ed25519", publicKey), alg: "ed25519", publicKey }],
    1,
  );
  const bigKey = `k${"\x1b[2J".repeat(15_000)}`;
  const signed = {
    format: 1,
    releaseId: "blink-1.2.0",
    deviceId: "esp32-24a16074b2c8",
    chip: "esp32",
    partitionTableSha256: "11".repeat(32),
    project: "blink",
    version: "1.2.0",
    secureVersion: 2,
    counter: 7,
    issuedAt: "2026-11-01T12:00:00Z",
    expiresAt: "2026-12-01T12:00:00Z",
    variants: [
      {
        slot: "ota_0",
        offset: 0x10000,
        size: 0x2000,
        sha256: "aa".repeat(32),
        urls: ["https://cdn.example/r/ota_0.bin"],
      },
    ],
  };
  const signatures = [{ keyId: "ab".repeat(16), alg: "ed25519", signature: "AAAA" }];
  it.each([
    ["at the top", { signed, signatures, [bigKey]: 1 }],
    ["inside signed", { signed: { ...signed, [bigKey]: 1 }, signatures }],
  ])("%s: the key is quoted, not echoed; the status encodes", (_where, doc) => {
    const text = JSON.stringify(doc);
    expect(text.length).toBeGreaterThan(60_000);
    const r = verifyManifest(text, policy, { now: new Date() });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.code).toBe("E_MANIFEST_SCHEMA");
    expect(r.reason.length).toBeLessThan(300);
    expect(r.reason).not.toContain("\x1b");
    expect(() => failedStatus(r.code, r.reason)).not.toThrow();
  });

  it("firstSchemaError cuts every path segment", () => {
    const s = Type.Object({ a: Type.String() }, { additionalProperties: false });
    const e = firstSchemaError(s, { a: "x", ["z".repeat(60_000)]: 1 });
    expect(e?.message).toBe("Unexpected property");
    expect(e?.path.length).toBeLessThan(100);
  });
});

describe("rollout text renderers escape what came from retained messages (defect 8)", () => {
  it("eventLine", () => {
    const line = eventLine({
      kind: "paused",
      reason: { kind: "failure-rate", message: "gw said \x1b[2J\x1b]0;owned\x07" },
    } as Parameters<typeof eventLine>[0]);
    expect(line).not.toContain("\x1b");
    expect(line).toContain("\\x1b[2J");
  });
});
