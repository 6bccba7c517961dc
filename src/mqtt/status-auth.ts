/**
 * Signed device statuses (docs/mqtt-api.md "Signed statuses", docs/security.md G1): each gateway
 * signs the statuses it publishes with its own Ed25519 key, and whoever acts on statuses (a
 * rollout, `esp-ota status`) can require a valid signature from the gateway a status names,
 * using a gateways file the operator keeps. Pure: the key files and the gateways file's I/O are
 * the callers'.
 *
 * The signature covers the RFC 8785 canonical JSON of the status without its `sig` (the same
 * canonicalization and primitives as release manifests: src/release/keyring.ts), so any change to
 * any field, `seq` and `gatewayId` included, invalidates it.
 */

import { Type } from "@sinclair/typebox";
import canonicalizeModule from "canonicalize";
import { EspOtaError } from "../errors.js";
import {
  isValidManifestPublicKey,
  type ManifestPublicKey,
  type ManifestSigningKey,
  manifestKeyId,
  signWithManifestKey,
  verifyWithManifestKey,
} from "../release/keyring.js";
import { firstSchemaError } from "../schema.js";
import type { DeviceStatus } from "./messages.js";

// canonicalize is CommonJS (`module.exports = serialize`); see src/release/manifest.ts.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined;

/** The bytes a status signature covers: the canonical JSON of the status without `sig`. */
export function statusSigningBytes(st: DeviceStatus): Uint8Array {
  const { sig: _, ...body } = st;
  const text = canonicalize(body);
  if (text === undefined) throw new TypeError("statusSigningBytes: status is not JSON");
  return new TextEncoder().encode(text);
}

/** `st` with its signature by `key` (the gateway's). */
export function signStatus(st: DeviceStatus, key: ManifestSigningKey): DeviceStatus {
  const signature = Buffer.from(signWithManifestKey(key, statusSigningBytes(st))).toString(
    "base64",
  );
  return { ...st, sig: { keyId: key.keyId, signature } };
}

/** One gateway the operator trusts: its id and its status-signing public key. */
export interface GatewayIdentity {
  gatewayId: string;
  alg: ManifestPublicKey["alg"];
  keyId: string;
  /** Hex of the public key (RFC 8032 encoding for Ed25519, SEC1 compressed for P-256). */
  publicKey: string;
}

/** The gateways file: `{ "format": 1, "gateways": [GatewayIdentity, ...] }`. */
export interface GatewaysFile {
  format: 1;
  gateways: GatewayIdentity[];
}

/** The gateways trusted to sign statuses, by gateway id. */
export type GatewayTrust = ReadonlyMap<string, ManifestPublicKey>;

const IdentitySchema = Type.Object(
  {
    gatewayId: Type.String({ pattern: "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$" }),
    alg: Type.Union([Type.Literal("ed25519"), Type.Literal("ecdsa-p256")]),
    keyId: Type.String({ pattern: "^[0-9a-f]{32}$" }),
    publicKey: Type.String({ pattern: "^([0-9a-f]{2})+$" }),
  },
  { additionalProperties: false },
);
const GatewaysFileSchema = Type.Object(
  { format: Type.Literal(1), gateways: Type.Array(IdentitySchema) },
  { additionalProperties: false },
);

/** Checks one identity (schema, key valid, key id matches the key); a reason, or undefined. */
export function identityProblem(v: unknown): string | undefined {
  const e = firstSchemaError(IdentitySchema, v);
  if (e) return `${e.path || "/"}: ${e.message}`;
  const id = v as GatewayIdentity;
  const key = new Uint8Array(Buffer.from(id.publicKey, "hex"));
  if (!isValidManifestPublicKey(id.alg, key)) return `publicKey is not a valid ${id.alg} key`;
  if (manifestKeyId(id.alg, key) !== id.keyId) return "keyId does not belong to publicKey";
  return undefined;
}

/** Parses a gateways file (E_MQTT_GATEWAYS_FILE, naming the fault). */
export function parseGatewaysFile(text: string): GatewaysFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new EspOtaError("E_MQTT_GATEWAYS_FILE", "the gateways file is not JSON");
  }
  const e = firstSchemaError(GatewaysFileSchema, doc);
  if (e)
    throw new EspOtaError("E_MQTT_GATEWAYS_FILE", `${e.path || "/"}: ${e.message}`, {
      path: e.path,
    });
  const file = doc as GatewaysFile;
  const seen = new Set<string>();
  file.gateways.forEach((g, i) => {
    const problem = identityProblem(g);
    if (problem)
      throw new EspOtaError("E_MQTT_GATEWAYS_FILE", `/gateways/${i}: ${problem}`, {
        gatewayId: g.gatewayId,
      });
    if (seen.has(g.gatewayId))
      throw new EspOtaError("E_MQTT_GATEWAYS_FILE", `gateway ${g.gatewayId} is listed twice`, {
        gatewayId: g.gatewayId,
      });
    seen.add(g.gatewayId);
  });
  return file;
}

export function encodeGatewaysFile(file: GatewaysFile): string {
  const gateways = [...file.gateways].sort((a, b) => a.gatewayId.localeCompare(b.gatewayId));
  return `${JSON.stringify({ format: 1, gateways }, null, 2)}\n`;
}

export function gatewayTrust(file: GatewaysFile): GatewayTrust {
  return new Map(
    file.gateways.map((g) => [
      g.gatewayId,
      { keyId: g.keyId, alg: g.alg, publicKey: new Uint8Array(Buffer.from(g.publicKey, "hex")) },
    ]),
  );
}

/** A gateway's public identity, as `esp-ota agent key` prints it. */
export function gatewayIdentity(gatewayId: string, key: ManifestPublicKey): GatewayIdentity {
  return {
    gatewayId,
    alg: key.alg,
    keyId: key.keyId,
    publicKey: Buffer.from(key.publicKey).toString("hex"),
  };
}

export type StatusCheck = { ok: true } | { ok: false; code: string; reason: string };

/**
 * Whether `st` is signed by the gateway it names, under `trust`: E_MQTT_STATUS_GATEWAY_UNKNOWN
 * (not in the gateways file), E_MQTT_STATUS_UNSIGNED, E_MQTT_STATUS_SIGNATURE (another key, or
 * any byte changed).
 */
export function checkStatus(st: DeviceStatus, trust: GatewayTrust): StatusCheck {
  const key = trust.get(st.gatewayId);
  if (!key)
    return {
      ok: false,
      code: "E_MQTT_STATUS_GATEWAY_UNKNOWN",
      reason: `gateway ${st.gatewayId} is not in the gateways file`,
    };
  if (!st.sig)
    return {
      ok: false,
      code: "E_MQTT_STATUS_UNSIGNED",
      reason: `the status from ${st.gatewayId} is not signed`,
    };
  if (st.sig.keyId !== key.keyId)
    return {
      ok: false,
      code: "E_MQTT_STATUS_SIGNATURE",
      reason: `signed by key ${st.sig.keyId}, not ${st.gatewayId}'s ${key.keyId}`,
    };
  const signature = new Uint8Array(Buffer.from(st.sig.signature, "base64"));
  if (!verifyWithManifestKey(key, statusSigningBytes(st), signature))
    return {
      ok: false,
      code: "E_MQTT_STATUS_SIGNATURE",
      reason: `the signature of ${st.gatewayId}'s status does not verify`,
    };
  return { ok: true };
}
