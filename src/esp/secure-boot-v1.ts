/**
 * Secure Boot V1 signature block (ESP32; also the "ECDSA" signed-apps-without-secure-boot scheme).
 *
 *   offset  size  field
 *        0     4  version, u32 little-endian, always 0
 *        4    32  r, big-endian
 *       36    32  s, big-endian
 *
 * 68 bytes appended directly after the data, no padding. The signature is ECDSA P-256 over
 * SHA-256 of every byte before the block, with an RFC 6979 nonce, so signing is deterministic and
 * byte-identical with espsecure (test/fixtures/sbv1). References: esptool
 * `espsecure/__init__.py` sign_secure_boot_v1 / verify_signature_v1 / digest_private_key; ESP-IDF
 * `components/bootloader_support/include/esp_secure_boot.h` (esp_secure_boot_sig_block_t) and
 * `src/secure_boot_v1/secure_boot_signatures_app.c` (the device rejects version != 0).
 */
import { concatBytes, putU32le, u32le } from "../bytes.js";
import { EspOtaError } from "../errors.js";
import {
  describeScheme,
  type EcdsaSigningKey,
  ecdsaSignDigest,
  ecdsaVerifyDigest,
  hashBytes,
  type SigningKey,
} from "./keys.js";

export const SBV1_BLOCK_LENGTH = 68;
/** The only version espsecure writes and the bootloader accepts (ESP_SECURE_BOOT_SCHEME for V1). */
export const SBV1_VERSION = 0;

/** Codes a verifier returns in `{ ok: false }`; each is in docs/errors.md. */
export const SIGNATURE_FAILURE_CODES = [
  "E_SIG_TOO_SHORT",
  "E_SIG_V1_VERSION",
  "E_SIG_MISMATCH",
  "E_SIG_FILE_SIZE",
  "E_SIG_NO_BLOCK",
  "E_SIG_DIGEST_MISMATCH",
  "E_SIG_WRONG_KEY",
  "E_SIG_KEY_REVOKED",
  "E_SIG_INVALID",
] as const;
export type SignatureFailureCode = (typeof SIGNATURE_FAILURE_CODES)[number];

/**
 * A verification outcome. On success, V2 verifiers say which signature block verified
 * (`blockIndex`) and `keyIndex`: the eFuse key digest slot that matched for
 * verifySectorV2WithDigests, the block index otherwise. V1 has a single key and sets neither.
 */
export type VerifyResult =
  | { ok: true; keyIndex?: number; blockIndex?: number }
  | { ok: false; code: SignatureFailureCode; reason: string };

function bytesArg(v: unknown, fn: string, name: string): asserts v is Uint8Array {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${fn}: ${name} must be a Uint8Array`);
}

/** V1 takes only P-256 keys; anything else is the caller's wrong key file, a coded error. */
function v1Key(key: SigningKey, fn: string): EcdsaSigningKey & { scheme: "ecdsa256" } {
  if (key === null || typeof key !== "object")
    throw new TypeError(`${fn}: key must be a SigningKey`);
  if (key.scheme !== "ecdsa256") {
    throw new EspOtaError(
      "E_KEY_SCHEME",
      `Secure Boot V1 uses ECDSA P-256 keys only; this is a ${describeScheme(key.scheme)} key`,
      { scheme: key.scheme },
    );
  }
  return key;
}

/** The 68-byte block espsecure `sign-data --version 1` appends to `data`. */
export function signatureBlockV1(data: Uint8Array, key: SigningKey): Uint8Array {
  bytesArg(data, "signatureBlockV1", "data");
  const k = v1Key(key, "signatureBlockV1");
  const rs = ecdsaSignDigest(k, hashBytes("sha256", data));
  const block = new Uint8Array(SBV1_BLOCK_LENGTH);
  putU32le(block, 0, SBV1_VERSION);
  block.set(rs, 4);
  return block;
}

/** data || block: the output of espsecure `sign-data --version 1`. */
export function signDataV1(data: Uint8Array, key: SigningKey): Uint8Array {
  return concatBytes(data, signatureBlockV1(data, key));
}

/** Checks a 68-byte block against `data` and a P-256 key (public or private). */
export function verifyBlockV1(data: Uint8Array, block: Uint8Array, key: SigningKey): VerifyResult {
  bytesArg(data, "verifyBlockV1", "data");
  bytesArg(block, "verifyBlockV1", "block");
  if (block.length !== SBV1_BLOCK_LENGTH) {
    throw new RangeError(
      `verifyBlockV1: block is ${block.length} bytes, a V1 signature block is ${SBV1_BLOCK_LENGTH}`,
    );
  }
  const k = v1Key(key, "verifyBlockV1");
  const version = u32le(block, 0);
  if (version !== SBV1_VERSION) {
    return {
      ok: false,
      code: "E_SIG_V1_VERSION",
      reason: `signature block has version ${version}; Secure Boot V1 blocks have version 0 (is the image signed?)`,
    };
  }
  if (!ecdsaVerifyDigest(k, hashBytes("sha256", data), block.subarray(4))) {
    return {
      ok: false,
      code: "E_SIG_MISMATCH",
      reason: `the ECDSA P-256 signature over ${data.length} bytes does not verify with this key`,
    };
  }
  return { ok: true };
}

/** espsecure `verify-signature --version 1`: the block is the file's last 68 bytes. */
export function verifySignedV1(signedFile: Uint8Array, key: SigningKey): VerifyResult {
  bytesArg(signedFile, "verifySignedV1", "signedFile");
  v1Key(key, "verifySignedV1");
  if (signedFile.length < SBV1_BLOCK_LENGTH) {
    return {
      ok: false,
      code: "E_SIG_TOO_SHORT",
      reason: `file is ${signedFile.length} bytes, shorter than the ${SBV1_BLOCK_LENGTH}-byte signature block`,
    };
  }
  const split = signedFile.length - SBV1_BLOCK_LENGTH;
  return verifyBlockV1(signedFile.subarray(0, split), signedFile.subarray(split), key);
}

/** espsecure `extract-public-key --version 1`: raw X||Y, 32 bytes each, big-endian. */
export function extractPublicKeyV1(key: SigningKey): Uint8Array {
  return v1Key(key, "extractPublicKeyV1").publicKey.slice();
}

/**
 * espsecure `digest-private-key`: SHA-256 of the 32-byte big-endian private scalar, the
 * "reflashable" V1 secure bootloader key. `keyLengthBits` 192 keeps the first 24 bytes (3/4 Coding
 * Scheme eFuse, espsecure `--keylen 192`).
 */
export function digestPrivateKeyV1(key: SigningKey, keyLengthBits: 256 | 192 = 256): Uint8Array {
  const k = v1Key(key, "digestPrivateKeyV1");
  if (keyLengthBits !== 256 && keyLengthBits !== 192) {
    throw new RangeError(
      `digestPrivateKeyV1: keyLengthBits must be 256 or 192, not ${keyLengthBits}`,
    );
  }
  if (!k.privateKey)
    throw new EspOtaError(
      "E_KEY_NO_PRIVATE",
      "digest-private-key needs the private key, not a public key",
    );
  const digest = hashBytes("sha256", k.privateKey);
  return keyLengthBits === 192 ? digest.slice(0, 24) : digest;
}
