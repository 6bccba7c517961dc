/**
 * Tamper tests (issue 5 "Must show"): every way a manifest can be wrong is rejected, each kind
 * with its own code, and no input crashes the verifier.
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { releaseCodes } from "../../src/error-codes/release.js";
import {
  type ManifestKeyAlg,
  type ManifestSigningKey,
  manifestKeyId,
  type TrustPolicy,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import {
  MAX_SIGNATURES,
  type ManifestCheck,
  type ReleaseManifest,
  type SignedManifest,
  signManifest,
  verifyManifest,
} from "../../src/release/manifest.js";

function fixedKey(alg: ManifestKeyAlg, seed: string): ManifestSigningKey {
  const privateKey = sha256(new TextEncoder().encode(seed));
  const publicKey =
    alg === "ecdsa-p256" ? p256.getPublicKey(privateKey, true) : ed25519.getPublicKey(privateKey);
  return { keyId: manifestKeyId(alg, publicKey), alg, publicKey, privateKey };
}

const k1 = fixedKey("ecdsa-p256", "tamper-1");
const k2 = fixedKey("ed25519", "tamper-2");
const k3 = fixedKey("ecdsa-p256", "tamper-3");
const stranger = fixedKey("ed25519", "stranger");

function sample(): ReleaseManifest {
  return {
    format: 1,
    releaseId: "r-2026-11-15",
    deviceId: "esp32s3-7cdfa1e0c4f2",
    chip: "esp32s3",
    partitionTableSha256: "5e".repeat(32),
    project: "thermostat",
    version: "2.4.1",
    secureVersion: 3,
    counter: 42,
    issuedAt: "2026-11-15T08:00:00Z",
    expiresAt: "2026-12-15T08:00:00Z",
    variants: [
      {
        slot: "ota_0",
        offset: 0x20000,
        size: 0x13_0000,
        sha256: "0a".repeat(32),
        urls: ["https://cdn.example/a0.bin"],
      },
      {
        slot: "ota_1",
        offset: 0x1a0000,
        size: 0x13_0000,
        sha256: "0b".repeat(32),
        urls: ["https://cdn.example/a1.bin"],
      },
    ],
  };
}

const now = new Date("2026-11-20T00:00:00Z");
const ctx = { now, deviceId: "esp32s3-7cdfa1e0c4f2", chip: "esp32s3", minCounter: 42 };
/** 2 of 3: k1 (P-256) and k2 (Ed25519) sign; k3 is the spare. */
const policy = trustPolicyFromKeys([k1, k2, k3], 2);
const good = (): SignedManifest => structuredClone(signManifest(sample(), [k1, k2]));
const codeOf = (r: ManifestCheck) => (r.ok ? "ok" : r.code);

it("the untampered manifest verifies (every test below changes one thing)", () => {
  expect(codeOf(verifyManifest(good(), policy, ctx))).toBe("ok");
});

describe("each signed field changed after signing → E_MANIFEST_SIGNATURE_INVALID", () => {
  const edits: [string, (m: ReleaseManifest) => void][] = [
    [
      "releaseId",
      (m) => {
        m.releaseId = "r-2026-11-16";
      },
    ],
    [
      "deviceId",
      (m) => {
        m.deviceId = "esp32s3-7cdfa1e0c4f3";
      },
    ],
    [
      "chip",
      (m) => {
        m.chip = "esp32s2";
      },
    ],
    [
      "partitionTableSha256",
      (m) => {
        m.partitionTableSha256 = "5f".repeat(32);
      },
    ],
    [
      "project",
      (m) => {
        m.project = "thermostaT";
      },
    ],
    [
      "version",
      (m) => {
        m.version = "2.4.2";
      },
    ],
    [
      "secureVersion",
      (m) => {
        m.secureVersion = 2;
      },
    ],
    [
      "counter",
      (m) => {
        m.counter = 43;
      },
    ],
    [
      "issuedAt",
      (m) => {
        m.issuedAt = "2026-11-15T08:00:01Z";
      },
    ],
    [
      "expiresAt",
      (m) => {
        m.expiresAt = "2027-12-15T08:00:00Z";
      },
    ],
    [
      "variants[0].slot",
      (m) => {
        m.variants[0]!.slot = "ota_2";
      },
    ],
    [
      "variants[0].offset",
      (m) => {
        m.variants[0]!.offset = 0x30000;
      },
    ],
    [
      "variants[1].size",
      (m) => {
        m.variants[1]!.size += 16;
      },
    ],
    [
      "variants[1].sha256",
      (m) => {
        m.variants[1]!.sha256 = `0c${"0b".repeat(31)}`;
      },
    ],
    [
      "variants[0].urls[0]",
      (m) => {
        m.variants[0]!.urls[0] = "https://evil.example/a0.bin";
      },
    ],
    [
      "variants[0].urls added",
      (m) => {
        m.variants[0]!.urls.push("https://evil.example/a0.bin");
      },
    ],
    [
      "variants removed",
      (m) => {
        m.variants.pop();
      },
    ],
    [
      "variants reordered",
      (m) => {
        m.variants.reverse();
      },
    ],
    [
      "slot and sha256 of two variants swapped",
      (m) => {
        const [a, b] = m.variants as [
          ReleaseManifest["variants"][0],
          ReleaseManifest["variants"][0],
        ];
        [a.sha256, b.sha256] = [b.sha256, a.sha256];
      },
    ],
  ];
  it.each(edits)("%s", (_field, edit) => {
    const s = good();
    edit(s.signed);
    // Check every signature is refused, not just the first one the threshold needs.
    for (const p of [policy, trustPolicyFromKeys([k1], 1), trustPolicyFromKeys([k2], 1)]) {
      const r = verifyManifest(s, p, { now });
      expect(codeOf(r)).toBe("E_MANIFEST_SIGNATURE_INVALID");
    }
  });
});

describe("signatures", () => {
  it("a signature removed (2 of 2 → 1) → E_MANIFEST_THRESHOLD", () => {
    const s = good();
    s.signatures.pop();
    expect(codeOf(verifyManifest(s, policy, ctx))).toBe("E_MANIFEST_THRESHOLD");
  });

  it("every signature removed → E_MANIFEST_UNSIGNED", () => {
    const s = good();
    s.signatures = [];
    expect(codeOf(verifyManifest(s, policy, ctx))).toBe("E_MANIFEST_UNSIGNED");
  });

  it("too few signatures: one key of a 2-of-3 policy → E_MANIFEST_THRESHOLD", () => {
    const s = signManifest(sample(), [k3]);
    const r = verifyManifest(s, policy, ctx);
    expect(r).toEqual({
      ok: false,
      code: "E_MANIFEST_THRESHOLD",
      reason: expect.stringMatching(/1 of the 2/),
    });
  });

  it("the same key's signature twice counts once → E_MANIFEST_THRESHOLD", () => {
    const s = good();
    s.signatures[1] = structuredClone(s.signatures[0]!);
    const r = verifyManifest(s, policy, ctx);
    expect(r).toEqual({
      ok: false,
      code: "E_MANIFEST_THRESHOLD",
      reason: expect.stringMatching(/counts once/),
    });
  });

  it("a revoked key → E_MANIFEST_KEY_REVOKED, even though the key is still listed", () => {
    const revoking: TrustPolicy = { ...policy, revoked: [k2.keyId] };
    expect(codeOf(verifyManifest(good(), revoking, ctx))).toBe("E_MANIFEST_KEY_REVOKED");
    // With k3 signing instead, the revoked signature is ignored and the manifest passes.
    const withK3 = signManifest(sample(), [k1, k2, k3]);
    const r = verifyManifest(withK3, revoking, ctx);
    expect(r.ok && r.keyIds).toEqual([k1.keyId, k3.keyId]);
    expect(r.ok && r.ignored.map((g) => g.code)).toEqual(["E_MANIFEST_KEY_REVOKED"]);
  });

  it("an untrusted key → E_MANIFEST_KEY_UNTRUSTED", () => {
    const s = signManifest(sample(), [k1, stranger]);
    expect(codeOf(verifyManifest(s, policy, ctx))).toBe("E_MANIFEST_KEY_UNTRUSTED");
  });

  it("an untrusted key claiming a trusted key's id → E_MANIFEST_SIGNATURE_INVALID", () => {
    const s = signManifest(sample(), [k1, stranger]);
    s.signatures[1]!.keyId = k2.keyId;
    expect(codeOf(verifyManifest(s, policy, ctx))).toBe("E_MANIFEST_SIGNATURE_INVALID");
  });

  it("a signature whose alg differs from the trusted key's, or that is not canonical base64 → E_MANIFEST_SIGNATURE_INVALID", () => {
    const s = good();
    s.signatures[1]!.alg = "ecdsa-p256";
    expect(codeOf(verifyManifest(s, policy, ctx))).toBe("E_MANIFEST_SIGNATURE_INVALID");
    const t = good();
    t.signatures[0]!.signature = t.signatures[0]!.signature.replace(/==$/, "=");
    expect(codeOf(verifyManifest(t, policy, ctx))).toBe("E_MANIFEST_SIGNATURE_INVALID");
    const u = good();
    u.signatures[0]!.signature = "";
    expect(codeOf(verifyManifest(u, policy, ctx))).toBe("E_MANIFEST_SIGNATURE_INVALID");
  });
});

describe("content checked against the device and the clock", () => {
  it("expired → E_MANIFEST_EXPIRED (at expiresAt exactly, too)", () => {
    expect(
      codeOf(verifyManifest(good(), policy, { ...ctx, now: new Date("2026-12-15T08:00:00Z") })),
    ).toBe("E_MANIFEST_EXPIRED");
    expect(
      codeOf(verifyManifest(good(), policy, { ...ctx, now: new Date("2026-12-15T07:59:59Z") })),
    ).toBe("ok");
  });

  it("issued more than 5 minutes in the future → E_MANIFEST_NOT_YET_VALID", () => {
    expect(
      codeOf(verifyManifest(good(), policy, { ...ctx, now: new Date("2026-11-15T07:54:59Z") })),
    ).toBe("E_MANIFEST_NOT_YET_VALID");
    expect(
      codeOf(verifyManifest(good(), policy, { ...ctx, now: new Date("2026-11-15T07:55:00Z") })),
    ).toBe("ok");
  });

  it("a lower release counter → E_MANIFEST_COUNTER; equal to the minimum passes", () => {
    expect(codeOf(verifyManifest(good(), policy, { ...ctx, minCounter: 43 }))).toBe(
      "E_MANIFEST_COUNTER",
    );
    expect(codeOf(verifyManifest(good(), policy, { ...ctx, minCounter: 42 }))).toBe("ok");
  });

  it("wrong device → E_MANIFEST_DEVICE_MISMATCH", () => {
    expect(
      codeOf(verifyManifest(good(), policy, { ...ctx, deviceId: "esp32s3-000000000000" })),
    ).toBe("E_MANIFEST_DEVICE_MISMATCH");
  });

  it("wrong chip → E_MANIFEST_CHIP_MISMATCH", () => {
    expect(codeOf(verifyManifest(good(), policy, { ...ctx, chip: "esp32" }))).toBe(
      "E_MANIFEST_CHIP_MISMATCH",
    );
  });
});

describe("malformed input", () => {
  it.each([
    ["empty", ""],
    ["truncated", JSON.stringify(good()).slice(0, 100)],
    ["trailing garbage", `${JSON.stringify(good())}x`],
    ["not UTF-8", new Uint8Array([0x7b, 0xff, 0x7d])],
  ])("%s → E_MANIFEST_JSON", (_n, input) => {
    expect(codeOf(verifyManifest(input, policy, ctx))).toBe("E_MANIFEST_JSON");
  });

  const cases: [string, (s: SignedManifest & Record<string, unknown>) => unknown][] = [
    ["null", () => null],
    ["an array", () => []],
    ["no signatures field", (s) => ({ signed: s.signed })],
    ["an extra top-level field", (s) => ({ ...s, note: "x" })],
    ["an extra signed field", (s) => ({ ...s, signed: { ...s.signed, channel: "beta" } })],
    [
      "an extra variant field",
      (s) => {
        (s.signed.variants[0] as unknown as Record<string, unknown>).encrypted = false;
        return s;
      },
    ],
    [
      "a missing signed field",
      (s) => {
        delete (s.signed as Partial<ReleaseManifest>).counter;
        return s;
      },
    ],
    ["format 2", (s) => ({ ...s, signed: { ...s.signed, format: 2 } })],
    ["counter as a string", (s) => ({ ...s, signed: { ...s.signed, counter: "42" } })],
    ["counter negative", (s) => ({ ...s, signed: { ...s.signed, counter: -1 } })],
    ["counter fractional", (s) => ({ ...s, signed: { ...s.signed, counter: 1.5 } })],
    ["counter beyond 2^53", (s) => ({ ...s, signed: { ...s.signed, counter: 2 ** 53 } })],
    ["unknown chip", (s) => ({ ...s, signed: { ...s.signed, chip: "esp8266" } })],
    [
      "uppercase hex digest",
      (s) => ({ ...s, signed: { ...s.signed, partitionTableSha256: "5E".repeat(32) } }),
    ],
    [
      "short digest",
      (s) => ({ ...s, signed: { ...s.signed, partitionTableSha256: "5e".repeat(31) } }),
    ],
    ["a non-ASCII version", (s) => ({ ...s, signed: { ...s.signed, version: "2.4.1\u00e9" } })],
    ["a 32-byte project name", (s) => ({ ...s, signed: { ...s.signed, project: "p".repeat(32) } })],
    [
      "a date that does not exist",
      (s) => ({ ...s, signed: { ...s.signed, issuedAt: "2026-02-30T00:00:00Z" } }),
    ],
    [
      "a date with an offset",
      (s) => ({ ...s, signed: { ...s.signed, issuedAt: "2026-11-15T08:00:00+01:00" } }),
    ],
    [
      "expiresAt before issuedAt",
      (s) => ({ ...s, signed: { ...s.signed, expiresAt: "2026-11-15T07:00:00Z" } }),
    ],
    ["no variants", (s) => ({ ...s, signed: { ...s.signed, variants: [] } })],
    [
      "slot factory",
      (s) => {
        s.signed.variants[0]!.slot = "factory";
        return s;
      },
    ],
    [
      "slot ota_16",
      (s) => {
        s.signed.variants[0]!.slot = "ota_16";
        return s;
      },
    ],
    [
      "two variants for one slot",
      (s) => {
        s.signed.variants[1]!.slot = "ota_0";
        return s;
      },
    ],
    [
      "two variants at one offset",
      (s) => {
        s.signed.variants[1]!.offset = 0x20000;
        return s;
      },
    ],
    [
      "an offset not 64 KB aligned",
      (s) => {
        s.signed.variants[0]!.offset = 0x21000;
        return s;
      },
    ],
    [
      "a size not a multiple of 16",
      (s) => {
        s.signed.variants[0]!.size = 0x13_0001;
        return s;
      },
    ],
    [
      "no URLs",
      (s) => {
        s.signed.variants[0]!.urls = [];
        return s;
      },
    ],
    [
      "an ftp URL",
      (s) => {
        s.signed.variants[0]!.urls = ["ftp://x/a.bin"];
        return s;
      },
    ],
    [
      "a URL with a space",
      (s) => {
        s.signed.variants[0]!.urls = ["https://x/a b.bin"];
        return s;
      },
    ],
    [
      "a signature with a bad key id",
      (s) => {
        s.signatures[0]!.keyId = "k1";
        return s;
      },
    ],
    [
      "an unknown signature algorithm",
      (s) => {
        (s.signatures[0] as { alg: string }).alg = "rsa-pss";
        return s;
      },
    ],
    [
      "a signature that is not base64",
      (s) => {
        s.signatures[0]!.signature = "not base64!";
        return s;
      },
    ],
    [
      "more signatures than the verifier examines",
      (s) => ({
        ...s,
        signatures: Array.from({ length: MAX_SIGNATURES + 1 }, () => s.signatures[0]),
      }),
    ],
  ];
  it.each(cases)("%s → E_MANIFEST_SCHEMA", (_n, make) => {
    const r = verifyManifest(make(good() as SignedManifest & Record<string, unknown>), policy, ctx);
    expect(codeOf(r)).toBe("E_MANIFEST_SCHEMA");
    expect(r.ok ? "" : r.reason).toMatch(/^(signed|manifest)/);
  });
});

describe("properties", () => {
  const releaseCodeSet = new Set(Object.keys(releaseCodes));

  it("random JSON never crashes the verifier: always a coded rejection", () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.json(), fc.string(), fc.uint8Array()), (input) => {
        const r = verifyManifest(input, policy, ctx);
        return !r.ok && releaseCodeSet.has(r.code);
      }),
      { numRuns: 500 },
    );
  });

  /** Every path to a leaf of the signed manifest, and a random replacement value for it. */
  function leafPaths(v: unknown, path: (string | number)[] = []): (string | number)[][] {
    if (Array.isArray(v)) return v.flatMap((x, i) => leafPaths(x, [...path, i]));
    if (v !== null && typeof v === "object")
      return Object.entries(v).flatMap(([k, x]) => leafPaths(x, [...path, k]));
    return [path];
  }
  const paths = leafPaths(good());

  it("replacing any value anywhere in a signed manifest with random JSON is never accepted", () => {
    fc.assert(
      fc.property(fc.constantFrom(...paths), fc.jsonValue(), (path, value) => {
        const s = good() as unknown as Record<string | number, unknown>;
        let at = s;
        for (const p of path.slice(0, -1)) at = at[p] as Record<string | number, unknown>;
        const last = path[path.length - 1]!;
        if (JSON.stringify(at[last]) === JSON.stringify(value)) return true;
        at[last] = value;
        const r = verifyManifest(JSON.stringify(s), policy, ctx);
        return !r.ok && releaseCodeSet.has(r.code);
      }),
      { numRuns: 400 },
    );
  });

  it("the tamper kinds above have distinct codes", () => {
    const kinds = [
      "E_MANIFEST_JSON",
      "E_MANIFEST_SCHEMA",
      "E_MANIFEST_SIGNATURE_INVALID",
      "E_MANIFEST_UNSIGNED",
      "E_MANIFEST_THRESHOLD",
      "E_MANIFEST_KEY_REVOKED",
      "E_MANIFEST_KEY_UNTRUSTED",
      "E_MANIFEST_EXPIRED",
      "E_MANIFEST_NOT_YET_VALID",
      "E_MANIFEST_COUNTER",
      "E_MANIFEST_DEVICE_MISMATCH",
      "E_MANIFEST_CHIP_MISMATCH",
    ];
    for (const k of kinds) expect(releaseCodeSet.has(k), k).toBe(true);
    expect(new Set(kinds).size).toBe(kinds.length);
  });
});
