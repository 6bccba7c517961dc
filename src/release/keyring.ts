/**
 * Release-manifest signing keys and the gateway's trust policy: key ids, key generation, the
 * signature primitives, PEM files and the trust policy's JSON form. Pure: no I/O
 * (keyring-fs.ts is the directory adapter). docs/manifest.md describes the formats.
 *
 * Algorithms (docs/manifest.md "Signing"):
 *  - ecdsa-p256: ECDSA over P-256 with SHA-256 of the message; signature r||s, 64 bytes
 *    big-endian. We sign with OpenSSL (node:crypto) and normalise to low-s. The verifier accepts high-s too, because
 *    FIPS 186-5 has no low-s rule and OpenSSL, HSMs and cloud KMSs emit high-s half the time; the
 *    malleability this allows is harmless here, since the k-of-n count is over distinct key ids
 *    and no signature is ever used as an identifier. test/release/keyring.test.ts shows both.
 *  - ed25519: RFC 8032 pure Ed25519, verified strictly (RFC 8032 / FIPS 186-5 point decoding,
 *    not ZIP-215): non-canonical encodings of R or A, s >= L and small-order public keys are
 *    rejected. @noble/curves' ed25519 defaults to ZIP-215, so every verify passes zip215: false.
 */
import { createPrivateKey, type KeyObject, sign as nodeSign } from "node:crypto";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, fromHex, toHex } from "../bytes.js";
import { EspOtaError } from "../errors.js";

export type ManifestKeyAlg = "ecdsa-p256" | "ed25519";
export const MANIFEST_KEY_ALGS: readonly ManifestKeyAlg[] = ["ecdsa-p256", "ed25519"];

/**
 * A manifest verification key. `publicKey` is the SEC1 compressed point (33 bytes) for
 * ecdsa-p256 and the RFC 8032 encoding (32 bytes) for ed25519: one encoding per key, so the key id
 * derived from it is stable.
 */
export interface ManifestPublicKey {
  keyId: string;
  alg: ManifestKeyAlg;
  publicKey: Uint8Array;
}

/** A manifest signing key; `privateKey` is the 32-byte scalar (P-256) or seed (Ed25519). */
export interface ManifestSigningKey extends ManifestPublicKey {
  privateKey: Uint8Array;
}

/** Trust policy: the keys a gateway trusts, the ids it revokes, and how many must sign (k of n). */
export interface TrustPolicy {
  keys: { keyId: string; alg: ManifestKeyAlg; publicKey: string /* hex */ }[];
  revoked: string[];
  threshold: number;
}

/** The trust policy file's format version (trust.json `"format"`). */
export const TRUST_POLICY_FORMAT = 1;

const PUBLIC_KEY_LENGTH: Readonly<Record<ManifestKeyAlg, number>> = {
  "ecdsa-p256": 33,
  ed25519: 32,
};
export const SIGNATURE_LENGTH: Readonly<Record<ManifestKeyAlg, number>> = {
  "ecdsa-p256": 64,
  ed25519: 64,
};
/** Key ids are 32 lowercase hex digits (128 bits of SHA-256). */
export const KEY_ID_PATTERN = "^[0-9a-f]{32}$";

function requireAlg(alg: unknown, fn: string): asserts alg is ManifestKeyAlg {
  if (!MANIFEST_KEY_ALGS.includes(alg as ManifestKeyAlg)) {
    throw new TypeError(`${fn}: alg must be one of ${MANIFEST_KEY_ALGS.join(", ")}`);
  }
}

function requireBytes(b: unknown, name: string, fn: string): asserts b is Uint8Array {
  if (!(b instanceof Uint8Array)) throw new TypeError(`${fn}: ${name} must be a Uint8Array`);
}

/**
 * The key id: the first 16 bytes of SHA-256("esp-ota manifest key" || 0 || alg || 0 || publicKey),
 * hex. Binding the algorithm in means one public key cannot be listed under two algorithms;
 * 128 bits is plenty for an id the verifier recomputes from the key (it never trusts an id alone).
 */
export function manifestKeyId(alg: ManifestKeyAlg, publicKey: Uint8Array): string {
  requireAlg(alg, "manifestKeyId");
  requireBytes(publicKey, "publicKey", "manifestKeyId");
  if (publicKey.length !== PUBLIC_KEY_LENGTH[alg]) {
    throw new RangeError(
      `manifestKeyId: a ${alg} public key is ${PUBLIC_KEY_LENGTH[alg]} bytes, got ${publicKey.length}`,
    );
  }
  const te = new TextEncoder();
  const digest = sha256(
    concatBytes(
      te.encode("esp-ota manifest key"),
      Uint8Array.of(0),
      te.encode(alg),
      Uint8Array.of(0),
      publicKey,
    ),
  );
  return toHex(digest.subarray(0, 16));
}

/** True when `publicKey` is a valid key of `alg` in its one accepted encoding. */
export function isValidManifestPublicKey(alg: ManifestKeyAlg, publicKey: Uint8Array): boolean {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== PUBLIC_KEY_LENGTH[alg])
    return false;
  try {
    if (alg === "ecdsa-p256") {
      return publicKey[0] !== 0x04 && p256.utils.isValidPublicKey(publicKey, true);
    }
    // Strict decoding (y < p, canonical sign bit) and no small-order keys, as the verifier.
    return !ed25519.Point.fromBytes(publicKey, false).isSmallOrder();
  } catch {
    return false;
  }
}

function publicKeyOf(alg: ManifestKeyAlg, privateKey: Uint8Array): Uint8Array {
  return alg === "ecdsa-p256"
    ? p256.getPublicKey(privateKey, true)
    : ed25519.getPublicKey(privateKey);
}

/** A new signing key from the platform CSPRNG (noble's randomSecretKey uses crypto.getRandomValues). */
export function generateManifestKey(alg: ManifestKeyAlg): ManifestSigningKey {
  requireAlg(alg, "generateManifestKey");
  const privateKey =
    alg === "ecdsa-p256" ? p256.utils.randomSecretKey() : ed25519.utils.randomSecretKey();
  const publicKey = publicKeyOf(alg, privateKey);
  return { keyId: manifestKeyId(alg, publicKey), alg, publicKey, privateKey };
}

/** The P-256 group order n. */
const P256_N = p256.Point.CURVE().n;

/**
 * Signs `message` (the manifest's canonical bytes) with OpenSSL (node:crypto): 0.031 ms a
 * signature on the bench machine against 0.49 ms warm (0.97 ms over a release's first 200) for
 * @noble/curves, and `release build` signs one manifest per device on its main thread, which
 * competes with the encryption workers for the cores (docs/benchmarks.md, "Release build").
 * Ed25519 is deterministic, so its signatures are the same either way. OpenSSL's ECDSA nonce
 * mixes the private key and the digest with fresh random bytes, so ECDSA signatures are not
 * reproducible (RFC 6979 ones were); s is then normalised to low-s (docs/manifest.md).
 */
export function signWithManifestKey(key: ManifestSigningKey, message: Uint8Array): Uint8Array {
  requireAlg(key?.alg, "signWithManifestKey");
  requireBytes(message, "message", "signWithManifestKey");
  const keyObject = privateKeyObject(key);
  if (key.alg === "ed25519") return new Uint8Array(nodeSign(null, message, keyObject));
  const sig = new Uint8Array(
    nodeSign("sha256", message, { key: keyObject, dsaEncoding: "ieee-p1363" }),
  );
  const s = BigInt(`0x${toHex(sig.subarray(32))}`);
  if (s > P256_N >> 1n) sig.set(fromHex((P256_N - s).toString(16).padStart(64, "0")), 32);
  return sig;
}

/**
 * Verifies a signature by `key` over `message`; false for any malformed input, never throws
 * (STYLE.md §7: a bad signature is an expected failure).
 */
export function verifyWithManifestKey(
  key: ManifestPublicKey,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length !== SIGNATURE_LENGTH[key.alg]) return false;
  if (!isValidManifestPublicKey(key.alg, key.publicKey)) return false;
  try {
    if (key.alg === "ecdsa-p256") {
      return p256.verify(signature, message, key.publicKey, { prehash: true, lowS: false });
    }
    return ed25519.verify(signature, message, key.publicKey, { zip215: false });
  } catch {
    return false;
  }
}

/** Only the public part (what a trust policy and a log line may hold). */
export function toPublicKey(key: ManifestPublicKey): ManifestPublicKey {
  return { keyId: key.keyId, alg: key.alg, publicKey: key.publicKey.slice() };
}

function b64u(b: Uint8Array): string {
  return Buffer.from(b).toString("base64url");
}

/**
 * PKCS#8 PEM ("PRIVATE KEY"), the form `openssl pkey` reads, so an operator can move a manifest key
 * into an HSM or check it with standard tools.
 */
export function encodeManifestPrivateKeyPem(key: ManifestSigningKey): string {
  requireAlg(key?.alg, "encodeManifestPrivateKeyPem");
  return privateKeyObject(key).export({ type: "pkcs8", format: "pem" }) as string;
}

/**
 * The key as an OpenSSL key object, made once per key (signing a release's manifests reuses it
 * for every device).
 */
const keyObjects = new WeakMap<ManifestSigningKey, KeyObject>();

function privateKeyObject(key: ManifestSigningKey): KeyObject {
  let k = keyObjects.get(key);
  if (!k) {
    const jwk =
      key.alg === "ecdsa-p256"
        ? (() => {
            const point = p256.Point.fromBytes(key.publicKey).toBytes(false);
            return {
              kty: "EC",
              crv: "P-256",
              d: b64u(key.privateKey),
              x: b64u(point.subarray(1, 33)),
              y: b64u(point.subarray(33, 65)),
            };
          })()
        : { kty: "OKP", crv: "Ed25519", d: b64u(key.privateKey), x: b64u(key.publicKey) };
    k = createPrivateKey({ key: jwk, format: "jwk" });
    keyObjects.set(key, k);
  }
  return k;
}

/** Reads a PKCS#8 (or SEC1) PEM P-256 or Ed25519 private key. Throws E_KEY_PARSE / E_KEY_UNSUPPORTED. */
export function parseManifestPrivateKeyPem(pem: string): ManifestSigningKey {
  if (typeof pem !== "string")
    throw new TypeError("parseManifestPrivateKeyPem: pem must be a string");
  let jwk: { kty?: string; crv?: string; d?: string };
  try {
    jwk = createPrivateKey(pem).export({ format: "jwk" }) as typeof jwk;
  } catch (e) {
    throw new EspOtaError(
      "E_KEY_PARSE",
      `cannot decode the PEM private key: ${(e as Error).message}`,
      {},
      e,
    );
  }
  let alg: ManifestKeyAlg;
  if (jwk.kty === "EC" && jwk.crv === "P-256") alg = "ecdsa-p256";
  else if (jwk.kty === "OKP" && jwk.crv === "Ed25519") alg = "ed25519";
  else {
    throw new EspOtaError(
      "E_KEY_UNSUPPORTED",
      `a ${jwk.kty} ${jwk.crv ?? ""} key cannot sign manifests (ECDSA P-256 or Ed25519 only)`,
      { kty: jwk.kty, crv: jwk.crv },
    );
  }
  const raw = new Uint8Array(Buffer.from(jwk.d ?? "", "base64url"));
  const privateKey = new Uint8Array(32);
  privateKey.set(raw, 32 - raw.length);
  const publicKey = publicKeyOf(alg, privateKey);
  return { keyId: manifestKeyId(alg, publicKey), alg, publicKey, privateKey };
}

/** A trust policy listing `keys` (public parts only). */
export function trustPolicyFromKeys(
  keys: readonly ManifestPublicKey[],
  threshold: number,
  revoked: readonly string[] = [],
): TrustPolicy {
  const policy: TrustPolicy = {
    keys: keys.map((k) => ({ keyId: k.keyId, alg: k.alg, publicKey: toHex(k.publicKey) })),
    revoked: [...revoked],
    threshold,
  };
  checkTrustPolicy(policy);
  return policy;
}

/** The trust file (trust.json): the policy with its format version, two-space JSON. */
export function encodeTrustPolicy(policy: TrustPolicy): string {
  checkTrustPolicy(policy);
  const { keys, revoked, threshold } = policy;
  return `${JSON.stringify({ format: TRUST_POLICY_FORMAT, threshold, keys, revoked }, null, 2)}\n`;
}

function invalid(message: string, context: Record<string, string | number> = {}): never {
  throw new EspOtaError("E_TRUST_POLICY_INVALID", message, context);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function onlyKeys(o: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) invalid(`${where}: unknown field "${k}"`);
}

/** Parses a trust file's text (or its parsed JSON). Throws E_TRUST_POLICY_INVALID naming the fault. */
export function parseTrustPolicy(input: string | unknown): TrustPolicy {
  let doc: unknown = input;
  if (typeof input === "string") {
    try {
      doc = JSON.parse(input);
    } catch (e) {
      throw new EspOtaError(
        "E_TRUST_POLICY_INVALID",
        `trust policy is not JSON: ${(e as Error).message}`,
        {},
        e,
      );
    }
  }
  if (!isRecord(doc)) invalid("trust policy is not a JSON object");
  onlyKeys(doc, ["format", "threshold", "keys", "revoked"], "trust policy");
  if (doc.format !== TRUST_POLICY_FORMAT)
    invalid(`trust policy format must be ${TRUST_POLICY_FORMAT}`);
  const policy = { keys: doc.keys, revoked: doc.revoked, threshold: doc.threshold } as TrustPolicy;
  checkTrustPolicy(policy);
  return {
    keys: policy.keys.map((k) => ({ keyId: k.keyId, alg: k.alg, publicKey: k.publicKey })),
    revoked: [...policy.revoked],
    threshold: policy.threshold,
  };
}

/**
 * Checks a policy and returns its keys decoded, by id. Throws E_TRUST_POLICY_INVALID: every key id
 * must be the one derived from its key, keys valid and listed once, and the threshold between 1 and
 * the number of non-revoked keys (a policy no manifest can satisfy is a mistake, and threshold 0
 * would accept unsigned manifests).
 */
export function checkTrustPolicy(policy: TrustPolicy): Map<string, ManifestPublicKey> {
  if (!isRecord(policy)) invalid("trust policy is not an object");
  if (!Array.isArray(policy.keys)) invalid("trust policy: keys must be an array");
  if (!Array.isArray(policy.revoked)) invalid("trust policy: revoked must be an array");
  const keys = new Map<string, ManifestPublicKey>();
  policy.keys.forEach((k: unknown, i: number) => {
    const where = `trust policy keys[${i}]`;
    if (!isRecord(k)) invalid(`${where} is not an object`);
    onlyKeys(k, ["keyId", "alg", "publicKey"], where);
    if (!MANIFEST_KEY_ALGS.includes(k.alg as ManifestKeyAlg)) {
      invalid(`${where}: alg must be one of ${MANIFEST_KEY_ALGS.join(", ")}`);
    }
    const alg = k.alg as ManifestKeyAlg;
    if (typeof k.publicKey !== "string" || !/^(?:[0-9a-f]{2})+$/.test(k.publicKey)) {
      invalid(`${where}: publicKey must be lowercase hex`);
    }
    const publicKey = fromHex(k.publicKey);
    if (!isValidManifestPublicKey(alg, publicKey)) {
      invalid(
        `${where}: publicKey is not a valid ${alg} public key in its ${PUBLIC_KEY_LENGTH[alg]}-byte encoding`,
      );
    }
    const keyId = manifestKeyId(alg, publicKey);
    if (k.keyId !== keyId)
      invalid(`${where}: keyId ${String(k.keyId)} does not match its key (${keyId})`, { keyId });
    if (keys.has(keyId)) invalid(`${where}: key ${keyId} is listed twice`, { keyId });
    keys.set(keyId, { keyId, alg, publicKey });
  });
  const idPattern = new RegExp(KEY_ID_PATTERN);
  for (const id of policy.revoked) {
    if (typeof id !== "string" || !idPattern.test(id))
      invalid(`trust policy: revoked entry ${JSON.stringify(id)} is not a key id`);
  }
  const live = [...keys.keys()].filter((id) => !policy.revoked.includes(id)).length;
  const t = policy.threshold;
  if (!Number.isSafeInteger(t) || t < 1 || t > live) {
    invalid(
      `trust policy: threshold ${String(t)} must be an integer from 1 to the ${live} non-revoked key(s)`,
      {
        threshold: String(t),
      },
    );
  }
  return keys;
}
