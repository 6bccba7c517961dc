import {
  createPrivateKey,
  createPublicKey,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { concatBytes, fromHex, toHex } from "../../src/bytes.js";
import {
  checkTrustPolicy,
  encodeManifestPrivateKeyPem,
  encodeTrustPolicy,
  generateManifestKey,
  isValidManifestPublicKey,
  type ManifestKeyAlg,
  type ManifestSigningKey,
  manifestKeyId,
  parseManifestPrivateKeyPem,
  parseTrustPolicy,
  signWithManifestKey,
  trustPolicyFromKeys,
  verifyWithManifestKey,
} from "../../src/release/keyring.js";
import { codeOf } from "../helpers/cli.js";

/** A fixed key from a seed, so ids and vectors are reproducible. */
function fixedKey(alg: ManifestKeyAlg, seed: string): ManifestSigningKey {
  const privateKey = sha256(new TextEncoder().encode(seed));
  const publicKey =
    alg === "ecdsa-p256" ? p256.getPublicKey(privateKey, true) : ed25519.getPublicKey(privateKey);
  return { keyId: manifestKeyId(alg, publicKey), alg, publicKey, privateKey };
}

const msg = new TextEncoder().encode('{"hello":"manifest"}');
const L = ed25519.Point.Fn.ORDER;
const N = p256.Point.Fn.ORDER;

function leBytes(v: bigint, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}
function leBigint(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

describe("manifest key ids", () => {
  it("are SHA-256('esp-ota manifest key' 0 alg 0 publicKey), first 16 bytes, hex", () => {
    const k = fixedKey("ed25519", "id");
    const te = new TextEncoder();
    const want = toHex(
      sha256(concatBytes(te.encode("esp-ota manifest key\0ed25519\0"), k.publicKey)).subarray(
        0,
        16,
      ),
    );
    expect(k.keyId).toBe(want);
    expect(k.keyId).toMatch(/^[0-9a-f]{32}$/);
  });

  it("differ between keys and depend on the algorithm; bad lengths are misuse", () => {
    const a = fixedKey("ecdsa-p256", "a");
    const b = fixedKey("ecdsa-p256", "b");
    expect(a.keyId).not.toBe(b.keyId);
    const pk32 = fixedKey("ed25519", "a").publicKey;
    expect(manifestKeyId("ed25519", pk32)).not.toBe(
      manifestKeyId(
        "ed25519",
        pk32.map((x, i) => (i === 0 ? x ^ 1 : x)),
      ),
    );
    expect(() => manifestKeyId("ecdsa-p256", pk32)).toThrow(RangeError);
    expect(() => manifestKeyId("rsa" as ManifestKeyAlg, pk32)).toThrow(TypeError);
  });
});

describe.each(["ecdsa-p256", "ed25519"] as const)("%s signatures", (alg) => {
  it("generate, sign, verify; any changed message or signature byte fails", () => {
    const k = generateManifestKey(alg);
    expect(k.publicKey.length).toBe(alg === "ecdsa-p256" ? 33 : 32);
    const sig = signWithManifestKey(k, msg);
    expect(sig.length).toBe(64);
    expect(verifyWithManifestKey(k, msg, sig)).toBe(true);
    fc.assert(
      fc.property(fc.nat({ max: 63 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const bad = sig.slice();
        bad[i]! ^= x;
        return !verifyWithManifestKey(k, msg, bad);
      }),
    );
    const changed = msg.slice();
    changed[3]! ^= 1;
    expect(verifyWithManifestKey(k, changed, sig)).toBe(false);
    expect(verifyWithManifestKey(generateManifestKey(alg), msg, sig)).toBe(false);
    expect(verifyWithManifestKey(k, msg, sig.subarray(0, 63))).toBe(false);
  });

  it("PKCS#8 PEM round-trips and interoperates with OpenSSL (node:crypto) both ways", () => {
    const k = fixedKey(alg, "pem");
    const pem = encodeManifestPrivateKeyPem(k);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(parseManifestPrivateKeyPem(pem)).toEqual(k);
    const priv = createPrivateKey(pem);
    const pub = createPublicKey(priv);
    const hash = alg === "ecdsa-p256" ? "sha256" : null;
    const opts = alg === "ecdsa-p256" ? { dsaEncoding: "ieee-p1363" as const } : {};
    // OpenSSL's signature verifies here, ours verifies in OpenSSL.
    const theirs = new Uint8Array(nodeSign(hash, msg, { key: priv, ...opts }));
    expect(verifyWithManifestKey(k, msg, theirs)).toBe(true);
    expect(nodeVerify(hash, msg, { key: pub, ...opts }, signWithManifestKey(k, msg))).toBe(true);
  });
});

describe("ECDSA P-256 low-s rule: sign low-s, accept both (docs/manifest.md)", () => {
  it("our signatures are low-s; the high-s twin (r, n-s) of a valid signature still verifies", () => {
    const k = fixedKey("ecdsa-p256", "lows");
    for (let i = 0; i < 16; i++) {
      const m = new TextEncoder().encode(`message ${i}`);
      const sig = signWithManifestKey(k, m);
      const s = BigInt(`0x${toHex(sig.subarray(32))}`);
      expect(s <= N / 2n).toBe(true);
      const high = concatBytes(
        sig.subarray(0, 32),
        fromHex((N - s).toString(16).padStart(64, "0")),
      );
      expect(verifyWithManifestKey(k, m, high)).toBe(true);
    }
  });
});

describe("Ed25519 is verified strictly (RFC 8032), not ZIP-215", () => {
  const k = fixedKey("ed25519", "strict");
  const a = ed25519.utils.getExtendedPublicKey(k.privateKey).scalar;

  /** A signature with R = the identity point, written as given (s = H(R,A,M)·a makes it valid). */
  function signatureWithR(rBytes: Uint8Array): Uint8Array {
    const h = leBigint(sha512(concatBytes(rBytes, k.publicKey, msg))) % L;
    return concatBytes(rBytes, leBytes((h * a) % L, 32));
  }

  it("a non-canonical encoding of R (y = 1 + p) passes ZIP-215 but not our verifier", () => {
    const canonical = leBytes(1n, 32);
    const nonCanonical = leBytes(2n ** 255n - 19n + 1n, 32);
    expect(verifyWithManifestKey(k, msg, signatureWithR(canonical))).toBe(true);
    const sig = signatureWithR(nonCanonical);
    expect(ed25519.verify(sig, msg, k.publicKey)).toBe(true); // noble's default is ZIP-215
    expect(verifyWithManifestKey(k, msg, sig)).toBe(false);
  });

  it("s + L (unreduced s) is rejected", () => {
    const sig = signWithManifestKey(k, msg);
    const s = leBigint(sig.subarray(32));
    const big = concatBytes(sig.subarray(0, 32), leBytes(s + L, 32));
    expect(verifyWithManifestKey(k, msg, big)).toBe(false);
  });

  it("small-order public keys are refused, though ZIP-215 accepts their signatures", () => {
    const identity = leBytes(1n, 32);
    const sig = concatBytes(identity, new Uint8Array(32)); // R = O, s = 0: valid for A = O under ZIP-215
    expect(ed25519.verify(sig, msg, identity)).toBe(true);
    const key = {
      keyId: manifestKeyId("ed25519", identity),
      alg: "ed25519" as const,
      publicKey: identity,
    };
    expect(isValidManifestPublicKey("ed25519", identity)).toBe(false);
    expect(verifyWithManifestKey(key, msg, sig)).toBe(false);
  });
});

describe("trust policy", () => {
  const k1 = fixedKey("ecdsa-p256", "t1");
  const k2 = fixedKey("ed25519", "t2");
  const k3 = fixedKey("ecdsa-p256", "t3");
  const policy = trustPolicyFromKeys([k1, k2, k3], 2, [k3.keyId]);

  it("round-trips through its file form, which holds no private key", () => {
    const text = encodeTrustPolicy(policy);
    expect(parseTrustPolicy(text)).toEqual(policy);
    const doc = JSON.parse(text);
    expect(doc.format).toBe(1);
    expect(text).not.toContain(toHex(k1.privateKey));
    expect(text).not.toContain(toHex(k2.privateKey));
    expect(checkTrustPolicy(policy).get(k2.keyId)?.publicKey).toEqual(k2.publicKey);
  });

  const doc = () => JSON.parse(encodeTrustPolicy(policy));
  it.each([
    ["not JSON", () => "{"],
    ["not an object", () => "[]"],
    ["wrong format", () => ({ ...doc(), format: 2 })],
    ["unknown field", () => ({ ...doc(), extra: 1 })],
    ["threshold 0", () => ({ ...doc(), threshold: 0 })],
    ["threshold above the non-revoked keys", () => ({ ...doc(), threshold: 3 })],
    ["threshold not an integer", () => ({ ...doc(), threshold: 1.5 })],
    [
      "key id not derived from its key",
      () => {
        const d = doc();
        d.keys[0].keyId = d.keys[1].keyId;
        return d;
      },
    ],
    [
      "key listed twice",
      () => {
        const d = doc();
        d.keys.push(d.keys[0]);
        return d;
      },
    ],
    [
      "public key not on the curve",
      () => {
        const d = doc();
        d.keys[0].publicKey = `02${"00".repeat(31)}07`;
        return d;
      },
    ],
    [
      "uncompressed P-256 key",
      () => {
        const d = doc();
        d.keys[0].publicKey = toHex(p256.getPublicKey(k1.privateKey, false));
        return d;
      },
    ],
    [
      "uppercase hex",
      () => {
        const d = doc();
        d.keys[0].publicKey = d.keys[0].publicKey.toUpperCase();
        return d;
      },
    ],
    [
      "unknown algorithm",
      () => {
        const d = doc();
        d.keys[0].alg = "rsa";
        return d;
      },
    ],
    ["revoked entry not a key id", () => ({ ...doc(), revoked: ["nope"] })],
  ])("refuses %s with E_TRUST_POLICY_INVALID", (_name, make) => {
    const v = make();
    expect(codeOf(() => parseTrustPolicy(typeof v === "string" ? v : JSON.stringify(v)))).toBe(
      "E_TRUST_POLICY_INVALID",
    );
  });

  it("random JSON never crashes the parser: a policy or E_TRUST_POLICY_INVALID", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const code = codeOf(() => parseTrustPolicy(JSON.stringify(v)));
        return code === "E_TRUST_POLICY_INVALID";
      }),
    );
  });
});
