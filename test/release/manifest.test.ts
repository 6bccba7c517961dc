import { createPublicKey, verify as nodeVerify } from "node:crypto";
import { readFileSync } from "node:fs";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  encodeManifestPrivateKeyPem,
  type ManifestKeyAlg,
  type ManifestSigningKey,
  manifestKeyId,
  parseTrustPolicy,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import {
  canonicalManifestBytes,
  MANIFEST_FORMAT,
  manifestJsonSchema,
  type ReleaseManifest,
  type SignedManifest,
  signManifest,
  verifyManifest,
} from "../../src/release/manifest.js";
import { codeOf } from "../helpers/cli.js";

function fixedKey(alg: ManifestKeyAlg, seed: string): ManifestSigningKey {
  const privateKey = sha256(new TextEncoder().encode(seed));
  const publicKey =
    alg === "ecdsa-p256" ? p256.getPublicKey(privateKey, true) : ed25519.getPublicKey(privateKey);
  return { keyId: manifestKeyId(alg, publicKey), alg, publicKey, privateKey };
}

function sample(): ReleaseManifest {
  return {
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
      {
        slot: "ota_1",
        offset: 0x110000,
        size: 0x2000,
        sha256: "bb".repeat(32),
        urls: ["http://127.0.0.1:8080/ota_1.bin"],
      },
    ],
  };
}

const now = new Date("2026-11-15T00:00:00Z");

describe("canonical bytes (RFC 8785)", () => {
  it("sort keys by UTF-16 code units, no whitespace, integers as ECMAScript prints them", () => {
    const text = new TextDecoder().decode(canonicalManifestBytes(sample()));
    expect(text).toBe(
      '{"chip":"esp32","counter":7,"deviceId":"esp32-24a16074b2c8","expiresAt":"2026-12-01T12:00:00Z",' +
        '"format":1,"issuedAt":"2026-11-01T12:00:00Z","partitionTableSha256":"' +
        "11".repeat(32) +
        '","project":"blink","releaseId":"blink-1.2.0","secureVersion":2,"variants":[' +
        '{"offset":65536,"sha256":"' +
        "aa".repeat(32) +
        '","size":8192,"slot":"ota_0","urls":["https://cdn.example/r/ota_0.bin"]},' +
        '{"offset":1114112,"sha256":"' +
        "bb".repeat(32) +
        '","size":8192,"slot":"ota_1","urls":["http://127.0.0.1:8080/ota_1.bin"]}],"version":"1.2.0"}',
    );
  });

  it("do not depend on key order or on formatting of the JSON received", () => {
    const m = sample();
    const reordered = Object.fromEntries(Object.entries(m).reverse()) as unknown as ReleaseManifest;
    expect(canonicalManifestBytes(reordered)).toEqual(canonicalManifestBytes(m));
    const reparsed = JSON.parse(JSON.stringify(m, null, 4)) as ReleaseManifest;
    expect(canonicalManifestBytes(reparsed)).toEqual(canonicalManifestBytes(m));
  });
});

describe("sign and verify", () => {
  const k1 = fixedKey("ecdsa-p256", "m1");
  const k2 = fixedKey("ed25519", "m2");
  const policy = trustPolicyFromKeys([k1, k2], 2);

  it("a manifest signed by k of n keys verifies from its JSON text, bytes or object", () => {
    const signed = signManifest(sample(), [k1, k2]);
    expect(signed.signatures.map((s) => [s.keyId, s.alg])).toEqual([
      [k1.keyId, "ecdsa-p256"],
      [k2.keyId, "ed25519"],
    ]);
    const text = JSON.stringify(signed, null, 2);
    for (const input of [text, new TextEncoder().encode(text), JSON.parse(text)]) {
      const r = verifyManifest(input, policy, {
        now,
        deviceId: "esp32-24a16074b2c8",
        chip: "esp32",
        minCounter: 7,
      });
      expect(r).toEqual({
        ok: true,
        manifest: sample(),
        keyIds: [k1.keyId, k2.keyId],
        ignored: [],
      });
    }
  });

  it("signatures are over the canonical bytes: OpenSSL (node:crypto) verifies them independently", () => {
    const signed = signManifest(sample(), [k1, k2]);
    const bytes = canonicalManifestBytes(sample());
    for (const [i, k] of [k1, k2].entries()) {
      const pub = createPublicKey(encodeManifestPrivateKeyPem(k));
      const sig = Buffer.from(signed.signatures[i]!.signature, "base64");
      const ok =
        k.alg === "ecdsa-p256"
          ? nodeVerify("sha256", bytes, { key: pub, dsaEncoding: "ieee-p1363" }, sig)
          : nodeVerify(null, bytes, pub, sig);
      expect(ok, k.alg).toBe(true);
    }
  });

  it("refuses to sign a manifest that breaks the schema (E_MANIFEST_SCHEMA); misuse throws", () => {
    expect(codeOf(() => signManifest({ ...sample(), version: "" }, [k1]))).toBe(
      "E_MANIFEST_SCHEMA",
    );
    expect(codeOf(() => signManifest({ ...sample(), expiresAt: sample().issuedAt }, [k1]))).toBe(
      "E_MANIFEST_SCHEMA",
    );
    expect(() => signManifest(sample(), [])).toThrow(TypeError);
    expect(() => signManifest(sample(), [k1, k1])).toThrow(RangeError);
  });

  it("a threshold-0 or malformed policy is refused, not treated as 'trust nothing needed'", () => {
    const signed = signManifest(sample(), [k1]);
    expect(codeOf(() => verifyManifest(signed, { ...policy, threshold: 0 }, { now }))).toBe(
      "E_TRUST_POLICY_INVALID",
    );
    expect(() => verifyManifest(signed, policy, { now: new Date("x") })).toThrow(TypeError);
  });

  it("a signature by a key that is not trusted is ignored (key rotation) but reported", () => {
    const newKey = fixedKey("ed25519", "new");
    const signed = signManifest(sample(), [k1, k2, newKey]);
    const r = verifyManifest(signed, policy, { now });
    expect(r.ok).toBe(true);
    if (r.ok)
      expect(r.ignored).toEqual([
        {
          index: 2,
          keyId: newKey.keyId,
          code: "E_MANIFEST_KEY_UNTRUSTED",
          reason: expect.any(String),
        },
      ]);
  });
});

describe("JSON Schema", () => {
  it("docs/schemas/manifest.schema.json is generated from the code (run `npm run docs:schemas`)", () => {
    const onDisk = readFileSync(
      new URL("../../docs/schemas/manifest.schema.json", import.meta.url),
      "utf8",
    );
    expect(onDisk).toBe(`${JSON.stringify(manifestJsonSchema(), null, 2)}\n`);
  });

  it("describes format 1 and forbids unknown fields", () => {
    const s = manifestJsonSchema() as {
      additionalProperties: boolean;
      properties: {
        signed: { additionalProperties: boolean; properties: { format: { const: number } } };
      };
    };
    expect(s.properties.signed.properties.format.const).toBe(MANIFEST_FORMAT);
    expect(s.additionalProperties).toBe(false);
    expect(s.properties.signed.additionalProperties).toBe(false);
  });
});

describe("docs/manifest.md examples", () => {
  const doc = readFileSync(new URL("../../docs/manifest.md", import.meta.url), "utf8");
  const block = (name: string) => {
    const m = new RegExp(`<!-- example:${name} -->\\n\`\`\`json\\n([\\s\\S]*?)\`\`\``).exec(doc);
    if (!m) throw new Error(`no example:${name} block`);
    return m[1]!;
  };
  const keys = ["A", "B", "C"].map((x, i) =>
    fixedKey(i === 1 ? "ed25519" : "ecdsa-p256", `docs example key ${x}`),
  );

  it("the example manifest verifies under the example trust policy", () => {
    const policy = parseTrustPolicy(block("trust"));
    expect(policy).toEqual(trustPolicyFromKeys(keys, 2));
    const r = verifyManifest(block("manifest"), policy, {
      now: new Date("2026-11-20T00:00:00Z"),
      deviceId: "esp32s3-7cdfa1e0c4f2",
      chip: "esp32s3",
      minCounter: 42,
    });
    expect(r.ok && r.keyIds).toEqual([keys[0]!.keyId, keys[1]!.keyId]);
  });

  it("re-signing the example's body: the Ed25519 signature is reproduced exactly, the ECDSA one (random nonce) verifies", () => {
    const example = JSON.parse(block("manifest")) as SignedManifest;
    const again = signManifest(example.signed, [keys[0]!, keys[1]!]);
    expect(again.signed).toEqual(example.signed);
    expect(again.signatures.map((s) => [s.keyId, s.alg])).toEqual(
      example.signatures.map((s) => [s.keyId, s.alg]),
    );
    expect(again.signatures[1]).toEqual(example.signatures[1]);
    expect(again.signatures[0]!.signature).not.toBe(example.signatures[0]!.signature);
    const r = verifyManifest(JSON.stringify(again), trustPolicyFromKeys(keys, 2), {
      now: new Date("2026-11-20T00:00:00Z"),
      deviceId: "esp32s3-7cdfa1e0c4f2",
      chip: "esp32s3",
      minCounter: 42,
    });
    expect(r.ok).toBe(true);
  });
});

describe("properties", () => {
  const k = fixedKey("ed25519", "prop");
  const policy = trustPolicyFromKeys([k], 1);
  const arbManifest = fc.record({
    releaseId: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/),
    deviceId: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9:_-]{0,20}$/),
    project: fc.stringMatching(/^[ -~]{1,31}$/),
    version: fc.stringMatching(/^[ -~]{1,31}$/),
    secureVersion: fc.nat({ max: 0xffff_ffff }),
    counter: fc.nat(),
    slots: fc.uniqueArray(fc.nat({ max: 15 }), { minLength: 1, maxLength: 4 }),
    size: fc.integer({ min: 1, max: 0x10000 }).map((n) => n * 16),
  });

  it("any valid manifest signs and verifies, and its canonical bytes are stable across a JSON round trip", () => {
    fc.assert(
      fc.property(arbManifest, (a) => {
        const m: ReleaseManifest = {
          ...sample(),
          releaseId: a.releaseId,
          deviceId: a.deviceId,
          project: a.project,
          version: a.version,
          secureVersion: a.secureVersion,
          counter: a.counter,
          variants: a.slots.map((n) => ({
            slot: `ota_${n}`,
            offset: 0x10000 * (n + 1),
            size: a.size,
            sha256: "cd".repeat(32),
            urls: ["https://x.example/a"],
          })),
        };
        const text = JSON.stringify(signManifest(m, [k]));
        const r = verifyManifest(text, policy, { now, minCounter: a.counter });
        return r.ok && JSON.stringify(r.manifest) === JSON.stringify(m);
      }),
      { numRuns: 60 },
    );
  });
});
