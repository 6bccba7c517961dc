/**
 * Release manifests (docs/manifest.md): what one device should install, signed by k of the
 * operator's n manifest keys over the RFC 8785 canonical JSON of the `signed` object. The gateway
 * verifies a manifest before it downloads anything, and never sees plaintext or a device key.
 * Pure: no I/O. The JSON Schema in docs/schemas/manifest.schema.json is generated from the TypeBox
 * types below (`npm run docs:schemas`), so the schema and the verifier cannot disagree.
 */
import { type Static, type TSchema, Type } from "@sinclair/typebox";
import canonicalizeModule from "canonicalize";
import { type ErrorCode, EspOtaError } from "../errors.js";
import { CHIPS } from "../esp/chips.js";
import { firstSchemaError } from "../schema.js";
import {
  checkTrustPolicy,
  KEY_ID_PATTERN,
  MANIFEST_KEY_ALGS,
  type ManifestKeyAlg,
  type ManifestSigningKey,
  signWithManifestKey,
  type TrustPolicy,
  verifyWithManifestKey,
} from "./keyring.js";

// canonicalize is CommonJS (`module.exports = serialize`) but its typings declare an ES default
// export, which TypeScript's NodeNext resolution reads as `{ default }`. At run time Node hands the
// function itself to a default import, so this cast states what is really there.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined;

export const MANIFEST_FORMAT = 1;

/** How far in the future issuedAt may be by the verifier's clock (build machine vs gateway NTP drift). */
export const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;

/** At most this many signatures are examined: bounds the verifier's work on a hostile manifest. */
export const MAX_SIGNATURES = 16;

const HEX64 = "^[0-9a-f]{64}$";
const TIMESTAMP = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]{1,3})?Z$";
const U32 = 0xffff_ffff;

const VariantSchema = Type.Object(
  {
    slot: Type.String({
      pattern: "^ota_(?:[0-9]|1[0-5])$",
      description: "Label of the OTA app partition (ota_0 .. ota_15) this ciphertext is for.",
    }),
    offset: Type.Integer({
      minimum: 0,
      maximum: U32,
      multipleOf: 0x10000,
      description:
        "Flash offset of that slot; the ciphertext is encrypted for this address only. App partitions are 64 KB aligned.",
    }),
    size: Type.Integer({
      minimum: 16,
      maximum: U32,
      multipleOf: 16,
      description: "Ciphertext length in bytes (encrypted flash writes are multiples of 16).",
    }),
    sha256: Type.String({
      pattern: HEX64,
      description: "SHA-256 of the ciphertext, lowercase hex.",
    }),
    urls: Type.Array(Type.String({ pattern: "^https?://[!-~]+$", maxLength: 2048 }), {
      minItems: 1,
      maxItems: 8,
      description:
        "Where to fetch the ciphertext, tried in order. http is allowed: the bytes are checked against sha256.",
    }),
  },
  { additionalProperties: false },
);

const ManifestSchema = Type.Object(
  {
    format: Type.Literal(MANIFEST_FORMAT, { description: "Manifest format version." }),
    releaseId: Type.String({
      pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
      description: "The release this manifest belongs to (one release, many devices).",
    }),
    deviceId: Type.String({
      pattern: "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
      description: "The device the ciphertext is encrypted for (the device registry's id).",
    }),
    chip: Type.Union(
      CHIPS.map((c) => Type.Literal(c.name)),
      { description: "esptool chip name of the device." },
    ),
    partitionTableSha256: Type.String({
      pattern: HEX64,
      description: "SHA-256 of the device's binary partition table the slots were taken from.",
    }),
    project: Type.String({
      pattern: "^[ -~]{1,31}$",
      description: "esp_app_desc_t.project_name of the app (printable ASCII, at most 31 bytes).",
    }),
    version: Type.String({
      pattern: "^[ -~]{1,31}$",
      description: "esp_app_desc_t.version of the app (printable ASCII, at most 31 bytes).",
    }),
    secureVersion: Type.Integer({
      minimum: 0,
      maximum: U32,
      description: "esp_app_desc_t.secure_version (anti-rollback) of the app.",
    }),
    counter: Type.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      description:
        "Per-device release counter; only grows. A gateway refuses a manifest below the lowest counter it accepts.",
    }),
    issuedAt: Type.String({ pattern: TIMESTAMP, description: "RFC 3339 UTC time of signing." }),
    expiresAt: Type.String({
      pattern: TIMESTAMP,
      description: "RFC 3339 UTC time after which the manifest is refused; later than issuedAt.",
    }),
    variants: Type.Array(VariantSchema, {
      minItems: 1,
      maxItems: 16,
      description: "One ciphertext per OTA slot; slots and offsets are distinct.",
    }),
  },
  { additionalProperties: false },
);

const SignatureSchema = Type.Object(
  {
    keyId: Type.String({
      pattern: KEY_ID_PATTERN,
      description: "Id of the signing key (docs/manifest.md).",
    }),
    alg: Type.Union(
      MANIFEST_KEY_ALGS.map((a) => Type.Literal(a)),
      { description: "Signature algorithm; must match the trust policy's entry for keyId." },
    ),
    signature: Type.String({
      pattern: "^[A-Za-z0-9+/]*={0,2}$",
      maxLength: 1024,
      description: "Base64 (RFC 4648 §4, padded) signature over the canonical bytes of `signed`.",
    }),
  },
  { additionalProperties: false },
);

const SignedManifestSchema = Type.Object(
  {
    signed: ManifestSchema,
    signatures: Type.Array(SignatureSchema, { maxItems: MAX_SIGNATURES }),
  },
  { additionalProperties: false },
);

export interface ManifestVariant {
  slot: string;
  offset: number;
  size: number;
  /** SHA-256 of the ciphertext, lowercase hex. */
  sha256: string;
  urls: string[];
}
export interface ReleaseManifest {
  format: 1;
  releaseId: string;
  deviceId: string;
  chip: string;
  partitionTableSha256: string;
  project: string;
  version: string;
  secureVersion: number;
  counter: number;
  issuedAt: string;
  expiresAt: string;
  variants: ManifestVariant[];
}
// The interfaces above are what callers write; these lines fail to compile if they and the schema
// (what the verifier and docs/schemas check) drift apart.
type SchemaManifest = Static<typeof ManifestSchema>;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _variantMatches: Same<ManifestVariant, Static<typeof VariantSchema>> = true;
const _manifestMatches: Same<Omit<ReleaseManifest, "chip">, Omit<SchemaManifest, "chip">> = true;
void _variantMatches;
void _manifestMatches;
export interface ManifestSignature {
  keyId: string;
  alg: ManifestKeyAlg;
  signature: string;
}
export interface SignedManifest {
  signed: ReleaseManifest;
  signatures: ManifestSignature[];
}

/** Why verifyManifest ignored a signature (it did not count towards the threshold). */
export interface IgnoredSignature {
  index: number;
  keyId: string;
  code: "E_MANIFEST_SIGNATURE_INVALID" | "E_MANIFEST_KEY_REVOKED" | "E_MANIFEST_KEY_UNTRUSTED";
  reason: string;
}

export type ManifestCheck =
  | { ok: true; manifest: ReleaseManifest; keyIds: string[]; ignored: IgnoredSignature[] }
  | { ok: false; code: ErrorCode; reason: string };

/**
 * The JSON Schema of a signed manifest (draft 2020-12), as written to docs/schemas/. TypeBox
 * types are JSON Schema already; the JSON round trip drops TypeBox's symbol-keyed metadata.
 */
export function manifestJsonSchema(): object {
  const plain = JSON.parse(JSON.stringify(SignedManifestSchema)) as Record<string, unknown>;
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "urn:esp-ota-gateway:schema:signed-manifest:1",
    title: "esp-ota signed release manifest",
    description:
      "A release manifest (`signed`) and its signatures. Signatures are over the RFC 8785 canonical JSON of `signed`. Generated from src/release/manifest.ts by `npm run docs:schemas`; see docs/manifest.md.",
    ...plain,
  };
}

/** The bytes every signature covers: RFC 8785 (JCS) canonical JSON of the manifest, UTF-8. */
export function canonicalManifestBytes(m: ReleaseManifest): Uint8Array {
  const text = canonicalize(m);
  if (text === undefined) throw new TypeError("canonicalManifestBytes: manifest is not JSON");
  return new TextEncoder().encode(text);
}

/**
 * Signs a manifest with each key (one signature per distinct key). The manifest must pass the
 * schema (E_MANIFEST_SCHEMA otherwise), so nothing unverifiable is ever signed.
 */
export function signManifest(
  m: ReleaseManifest,
  keys: readonly ManifestSigningKey[],
): SignedManifest {
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new TypeError("signManifest: keys must be a non-empty array of ManifestSigningKey");
  }
  const problem = manifestProblem(m);
  if (problem) throw new EspOtaError("E_MANIFEST_SCHEMA", `cannot sign: ${problem}`);
  const ids = new Set(keys.map((k) => k.keyId));
  if (ids.size !== keys.length) throw new RangeError("signManifest: the same key is given twice");
  // Sign a copy holding only the schema's fields (the schema forbids others), so what is returned
  // is exactly what was signed.
  const signed = structuredClone(m);
  const bytes = canonicalManifestBytes(signed);
  return {
    signed,
    signatures: keys.map((k) => ({
      keyId: k.keyId,
      alg: k.alg,
      signature: Buffer.from(signWithManifestKey(k, bytes)).toString("base64"),
    })),
  };
}

function describeError(schema: TSchema, value: unknown, root: string): string | undefined {
  const first = firstSchemaError(schema, value);
  if (!first) return undefined;
  const path = first.path === "" ? root : `${root}${first.path.replaceAll("/", ".")}`;
  return `${path}: ${first.message}`;
}

/** Schema and cross-field checks of a manifest body; a description of the first fault, or undefined. */
function manifestProblem(m: unknown): string | undefined {
  const schemaProblem = describeError(ManifestSchema, m, "signed");
  if (schemaProblem) return schemaProblem;
  const manifest = m as ReleaseManifest;
  const issued = parseTimestamp(manifest.issuedAt);
  const expires = parseTimestamp(manifest.expiresAt);
  if (issued === undefined) return `signed.issuedAt: ${manifest.issuedAt} is not a calendar date`;
  if (expires === undefined)
    return `signed.expiresAt: ${manifest.expiresAt} is not a calendar date`;
  if (expires <= issued) return "signed.expiresAt: must be later than issuedAt";
  const slots = new Set<string>();
  const offsets = new Set<number>();
  for (const [i, v] of manifest.variants.entries()) {
    if (slots.has(v.slot)) return `signed.variants.${i}.slot: ${v.slot} appears twice`;
    if (offsets.has(v.offset))
      return `signed.variants.${i}.offset: 0x${v.offset.toString(16)} appears twice`;
    if (v.offset + v.size > U32 + 1) return `signed.variants.${i}: offset + size is beyond 4 GB`;
    slots.add(v.slot);
    offsets.add(v.offset);
  }
  return undefined;
}

/** Milliseconds since the epoch, or undefined for a date that does not exist (2026-02-30). */
function parseTimestamp(s: string): number | undefined {
  const ms = Date.parse(s);
  if (Number.isNaN(ms)) return undefined;
  // Date.parse rolls 02-30 over into March; a real date reads back the same.
  return new Date(ms).toISOString().slice(0, 19) === s.slice(0, 19) ? ms : undefined;
}

function fail(code: ErrorCode, reason: string): ManifestCheck {
  return { ok: false, code, reason };
}

/**
 * The gateway's checks, in this order (docs/manifest.md "Verification"): JSON, schema, then
 * signatures (k of n distinct trusted, non-revoked keys, each over the canonical bytes), then the
 * signed content against the device: device id, chip, issuedAt/expiresAt, release counter.
 * Content is only examined once it is authenticated. `input` is the parsed JSON, or its text /
 * UTF-8 bytes. Every failure is a value with its own code; only a bad `policy` or `ctx` throws.
 */
export function verifyManifest(
  input: unknown,
  policy: TrustPolicy,
  ctx: { now: Date; deviceId?: string; chip?: string; minCounter?: number },
): ManifestCheck {
  if (!(ctx?.now instanceof Date) || Number.isNaN(ctx.now.getTime())) {
    throw new TypeError("verifyManifest: ctx.now must be a valid Date");
  }
  // Up to 2^53, one above the largest counter: what a device whose mark is 2^53 - 1 requires of
  // any other release (none can meet it: E_MANIFEST_COUNTER, the fast-forward freeze).
  if (
    ctx.minCounter !== undefined &&
    !(Number.isInteger(ctx.minCounter) && ctx.minCounter >= 0 && ctx.minCounter <= 2 ** 53)
  ) {
    throw new RangeError("verifyManifest: ctx.minCounter must be an integer in 0..2^53");
  }
  const trusted = checkTrustPolicy(policy);

  let doc = input;
  if (typeof input === "string" || input instanceof Uint8Array) {
    try {
      const text =
        typeof input === "string" ? input : new TextDecoder("utf-8", { fatal: true }).decode(input);
      doc = JSON.parse(text);
    } catch (e) {
      // Not V8's message: it quotes the text, and this reason reaches the device's status, so a
      // notice pointing at some internal page would echo its first bytes (docs/security.md, G6).
      const at = /position (\d+)/.exec((e as Error).message)?.[1];
      const size =
        typeof input === "string" ? `${input.length} characters` : `${input.length} bytes`;
      return fail(
        "E_MANIFEST_JSON",
        e instanceof SyntaxError
          ? `not JSON (${size}${at !== undefined ? `; invalid at position ${at}` : ""})`
          : `not UTF-8 text (${size})`,
      );
    }
  }
  const envelopeProblem = describeError(SignedManifestSchema, doc, "manifest");
  if (envelopeProblem) {
    // Report a fault inside `signed` with the same path the signer's check uses.
    const body = (doc as { signed?: unknown } | null)?.signed;
    return fail(
      "E_MANIFEST_SCHEMA",
      (body !== undefined && manifestProblem(body)) || envelopeProblem,
    );
  }
  const { signed, signatures } = doc as SignedManifest;
  const contentProblem = manifestProblem(signed);
  if (contentProblem) return fail("E_MANIFEST_SCHEMA", contentProblem);

  // Signatures. Only valid signatures by trusted, non-revoked keys count, each key once (TUF's
  // rule): a signature anyone could strip cannot make a manifest worse, and ignoring unknown keys
  // lets an operator add a new key's signature before every gateway trusts it (key rotation).
  if (signatures.length === 0) return fail("E_MANIFEST_UNSIGNED", "the manifest has no signatures");
  const bytes = canonicalManifestBytes(signed);
  const counted = new Set<string>();
  const ignored: IgnoredSignature[] = [];
  const revoked = new Set(policy.revoked);
  for (const [index, s] of signatures.entries()) {
    const key = trusted.get(s.keyId);
    const ignore = (code: IgnoredSignature["code"], reason: string) =>
      ignored.push({ index, keyId: s.keyId, code, reason });
    if (revoked.has(s.keyId)) ignore("E_MANIFEST_KEY_REVOKED", `key ${s.keyId} is revoked`);
    else if (!key) ignore("E_MANIFEST_KEY_UNTRUSTED", `key ${s.keyId} is not in the trust policy`);
    else if (key.alg !== s.alg) {
      ignore(
        "E_MANIFEST_SIGNATURE_INVALID",
        `key ${s.keyId} is ${key.alg}, the signature says ${s.alg}`,
      );
    } else if (!verifyWithManifestKey(key, bytes, decodeBase64(s.signature))) {
      ignore(
        "E_MANIFEST_SIGNATURE_INVALID",
        `signature ${index} by key ${s.keyId} does not verify`,
      );
    } else counted.add(s.keyId);
  }
  if (counted.size < policy.threshold) {
    const summary = `${counted.size} of the ${policy.threshold} required distinct trusted signatures`;
    // The most telling reason first: tampering, then a revoked key, then an unknown one.
    for (const code of [
      "E_MANIFEST_SIGNATURE_INVALID",
      "E_MANIFEST_KEY_REVOKED",
      "E_MANIFEST_KEY_UNTRUSTED",
    ] as const) {
      const hit = ignored.find((g) => g.code === code);
      if (hit) return fail(code, `${hit.reason} (${summary})`);
    }
    const dup = signatures.length > counted.size ? "; a key that signs twice counts once" : "";
    return fail("E_MANIFEST_THRESHOLD", `${summary}${dup}`);
  }

  if (ctx.deviceId !== undefined && signed.deviceId !== ctx.deviceId) {
    return fail(
      "E_MANIFEST_DEVICE_MISMATCH",
      `the manifest is for device ${signed.deviceId}, not ${ctx.deviceId}`,
    );
  }
  if (ctx.chip !== undefined && signed.chip !== ctx.chip) {
    return fail(
      "E_MANIFEST_CHIP_MISMATCH",
      `the manifest is for chip ${signed.chip}, not ${ctx.chip}`,
    );
  }
  const now = ctx.now.getTime();
  if (now >= Date.parse(signed.expiresAt)) {
    return fail(
      "E_MANIFEST_EXPIRED",
      `the manifest expired at ${signed.expiresAt} (now ${ctx.now.toISOString()})`,
    );
  }
  if (Date.parse(signed.issuedAt) > now + MAX_CLOCK_SKEW_MS) {
    return fail(
      "E_MANIFEST_NOT_YET_VALID",
      `the manifest is issued at ${signed.issuedAt}, in the future (now ${ctx.now.toISOString()})`,
    );
  }
  if (ctx.minCounter !== undefined && signed.counter < ctx.minCounter) {
    return fail(
      "E_MANIFEST_COUNTER",
      `release counter ${signed.counter} is below ${ctx.minCounter}, the lowest this device accepts`,
    );
  }
  return { ok: true, manifest: signed, keyIds: [...counted], ignored };
}

/** Strict base64: only the canonical encoding decodes (Buffer.from is lenient); else empty. */
function decodeBase64(s: string): Uint8Array {
  const b = Buffer.from(s, "base64");
  return b.toString("base64") === s ? new Uint8Array(b) : new Uint8Array(0);
}

/** A failed check as a throwable coded error (for CLIs and job steps). */
export function manifestCheckError(check: Extract<ManifestCheck, { ok: false }>): EspOtaError {
  return new EspOtaError(check.code, check.reason);
}
