/**
 * Secure Boot V2 signature sector (RSA-3072-PSS and ECDSA P-192/P-256/P-384), byte-compatible
 * with espsecure v5 and checked the way the device checks it.
 *
 * Signed file = image padded with 0xFF to a 4096-byte boundary, then one 4096-byte signature
 * sector: up to 3 blocks of 1216 bytes at sector offsets 0, 1216, 2432, the rest 0xFF.
 *
 * Block (all integers little-endian; bignums and ECDSA coordinates too):
 *
 *   RSA-3072 (version 2)                     ECDSA P-192/P-256 (version 3, sha type 0)
 *      0   1 magic 0xE7                         0   1 magic 0xE7
 *      1   1 version 0x02                       1   1 version 0x03
 *      2   2 zero                               2   1 sha type 0 (SHA-256), 3: zero
 *      4  32 SHA-256 of the padded image        4  32 SHA-256 of the padded image
 *     36 384 n                                 36   1 curve id (1 = P-192, 2 = P-256)
 *    420   4 e                                 37  64 X || Y (P-192: 24 + 24, then 16 zero)
 *    424 384 rinv = 2^6144 mod n               101  64 r || s (P-192: 24 + 24, then 16 zero)
 *    808   4 m' = -n^-1 mod 2^32               165 1031 zero
 *    812 384 RSA-PSS signature
 *   1196   4 CRC-32 (zlib, init 0) of bytes 0..1195, then 16 zero bytes to 1216
 *
 *   ECDSA P-384 (version 3, sha type 1): 4 48 SHA-384 of the image; 52 1 curve id 3;
 *   53 96 X || Y; 149 96 r || s; zero to 1196; CRC as above.
 *
 * The eFuse key digest is SHA-256 of the key fields: RSA bytes 36..811 (n, e, rinv, m'), ECDSA
 * 36..100 (P-384: 52..148). A block is "present" when magic, version (2 or 3) and CRC are right.
 *
 * References: esptool `espsecure/__init__.py` (sign_secure_boot_v2, generate_rsa_signature_block,
 * generate_ecdsa_signature_block, validate_signature_block, verify_signature_v2,
 * signature_info_v2, _digest_sbv2_public_key); ESP-IDF
 * `components/bootloader_support/src/secure_boot_v2/secure_boot_signatures_app.c` and
 * `_bootloader.c` (the device: each present block whose key digest matches a non-revoked eFuse
 * digest, image digest compared, then the signature checked with the block's own key),
 * `docs/en/security/secure-boot-v2.rst` ("Verifying an Image").
 */
import { concatBytes, crc32, equalBytes, filled, putU32le, toHex, u32le } from "../bytes.js";
import { EspOtaError } from "../errors.js";
import {
  bigintToBytes,
  bytesToBigint,
  describeScheme,
  ECDSA_CURVES,
  type EcdsaScheme,
  type EcdsaSigningKey,
  ecdsaSignDigest,
  ecdsaVerifyDigest,
  hashBytes,
  RSA_KEY_BYTES,
  type RsaSigningKey,
  rsaPssSign,
  rsaPssVerify,
  type SigningKey,
} from "./keys.js";
import type { SignatureFailureCode, VerifyResult } from "./secure-boot-v1.js";

export const SIG_SECTOR_SIZE = 4096;
export const SIG_BLOCK_SIZE = 1216;
/** espsecure SIG_BLOCK_MAX_COUNT; the ESP32 (ECO3) and ESP32-C2 ROMs use only block 0. */
export const SIG_BLOCK_MAX_COUNT = 3;
export const SIG_BLOCK_MAGIC = 0xe7;
export const SIG_BLOCK_VERSION_RSA = 0x02;
export const SIG_BLOCK_VERSION_ECDSA = 0x03;
/** Bytes 0..1195 are covered by the CRC (ESP-IDF CRC_SIGN_BLOCK_LEN). */
export const SIG_BLOCK_CRC_OFFSET = 1196;

export type SignatureSchemeV2 = "rsa3072" | "ecdsa256" | "ecdsa384" | "ecdsa192";

export interface SignatureBlockV2 {
  /** Position in the sector, 0..2. */
  index: number;
  scheme: SignatureSchemeV2;
  /** SHA-256 (SHA-384 for P-384) of the image, as stored in the block. */
  imageDigest: Uint8Array;
  /** Always true unless parseSignatureSectorV2 was asked for blocks with a bad CRC too. */
  crcOk: boolean;
  /** SHA-256 of the block's key fields: what the eFuse key digest slot must hold. */
  keyDigest: Uint8Array;
  /** The key the block carries (no private part). */
  publicKey: SigningKey;
  /** The signature in the usual big-endian form: RSA 384 bytes, ECDSA r||s. */
  signature: Uint8Array;
}

/** The 0xFF bytes espsecure appends so the sector starts on a 4096-byte boundary. */
export function paddingV2(dataLength: number): number {
  if (!Number.isSafeInteger(dataLength) || dataLength < 0)
    throw new RangeError(`paddingV2: bad length ${dataLength}`);
  return (SIG_SECTOR_SIZE - (dataLength % SIG_SECTOR_SIZE)) % SIG_SECTOR_SIZE;
}

function bytesArg(v: unknown, fn: string, name: string): asserts v is Uint8Array {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${fn}: ${name} must be a Uint8Array`);
}

function keyArg(key: unknown, fn: string): asserts key is SigningKey {
  if (key === null || typeof key !== "object" || typeof (key as SigningKey).scheme !== "string") {
    throw new TypeError(`${fn}: key must be a SigningKey`);
  }
  if (!["rsa3072", "ecdsa192", "ecdsa256", "ecdsa384"].includes((key as SigningKey).scheme)) {
    throw new TypeError(`${fn}: unknown key scheme ${JSON.stringify((key as SigningKey).scheme)}`);
  }
}

function reversed(b: Uint8Array): Uint8Array {
  return b.slice().reverse();
}

// --- keys in the block -------------------------------------------------------------------------

/** -n^-1 mod 2^32 by Newton iteration (n odd; each step doubles the correct low bits). */
function montgomeryMPrime(n: bigint): number {
  if ((n & 1n) === 0n)
    throw new EspOtaError("E_KEY_PARSE", "RSA modulus is even, so it is not an RSA key");
  const mod = 1n << 32n;
  const n32 = n % mod;
  let x = n32; // correct to 3 bits: n*n = 1 mod 8 for odd n
  for (let i = 0; i < 5; i++) x = (x * (2n - ((n32 * x) % mod) + mod)) % mod;
  return Number((mod - x) % mod);
}

/** The key fields of a block: RSA n, e, rinv, m' (776 bytes); ECDSA curve id + X || Y. */
export function publicKeyBytesV2(key: SigningKey): Uint8Array {
  keyArg(key, "publicKeyBytesV2");
  if (key.scheme === "rsa3072") {
    const out = new Uint8Array(RSA_KEY_BYTES * 2 + 8);
    // espsecure _get_sbv2_rsa_primitives: rinv = (1 << key_size*2) % n, m = -modinv(n, 2^32).
    const rinv = (1n << BigInt(RSA_KEY_BYTES * 16)) % key.n;
    out.set(reversed(bigintToBytes(key.n, RSA_KEY_BYTES)), 0);
    putU32le(out, RSA_KEY_BYTES, key.e);
    out.set(reversed(bigintToBytes(rinv, RSA_KEY_BYTES)), RSA_KEY_BYTES + 4);
    putU32le(out, RSA_KEY_BYTES * 2 + 4, montgomeryMPrime(key.n));
    return out;
  }
  const curve = ECDSA_CURVES[key.scheme];
  if (key.publicKey.length !== 2 * curve.size) {
    throw new RangeError(
      `publicKeyBytesV2: ${curve.label} public key must be ${2 * curve.size} bytes`,
    );
  }
  // espsecure _microecc_format: each coordinate little-endian; P-192 zero-padded to 64 ("64s").
  const out = new Uint8Array(1 + (curve.size === 48 ? 96 : 64));
  out[0] = curve.curveId;
  out.set(reversed(key.publicKey.subarray(0, curve.size)), 1);
  out.set(reversed(key.publicKey.subarray(curve.size)), 1 + curve.size);
  return out;
}

/** The eFuse key digest: espsecure `digest-sbv2-public-key`, `signature-info-v2`'s digests. */
export function publicKeyDigestV2(key: SigningKey): Uint8Array {
  return hashBytes("sha256", publicKeyBytesV2(key));
}

function hashFor(scheme: SignatureSchemeV2): "sha256" | "sha384" {
  return scheme === "rsa3072" ? "sha256" : ECDSA_CURVES[scheme].hash;
}

/** The digest a block of this scheme stores for `paddedData`. */
export function imageDigestV2(paddedData: Uint8Array, scheme: SignatureSchemeV2): Uint8Array {
  bytesArg(paddedData, "imageDigestV2", "paddedData");
  return hashBytes(hashFor(scheme), paddedData);
}

// --- building blocks ---------------------------------------------------------------------------

/**
 * One 1216-byte block from a signature made elsewhere (an HSM, espsecure `--signature`):
 * `signature` is big-endian (RSA: 384 bytes; ECDSA: r || s). The signature is not checked here.
 */
export function encodeSignatureBlockV2(
  imageDigest: Uint8Array,
  key: SigningKey,
  signature: Uint8Array,
): Uint8Array {
  bytesArg(imageDigest, "encodeSignatureBlockV2", "imageDigest");
  bytesArg(signature, "encodeSignatureBlockV2", "signature");
  keyArg(key, "encodeSignatureBlockV2");
  const block = new Uint8Array(SIG_BLOCK_SIZE);
  block[0] = SIG_BLOCK_MAGIC;
  const digestLength = hashFor(key.scheme) === "sha384" ? 48 : 32;
  if (imageDigest.length !== digestLength) {
    throw new RangeError(
      `encodeSignatureBlockV2: ${describeScheme(key.scheme)} needs a ${digestLength}-byte digest`,
    );
  }
  block.set(imageDigest, 4);
  const keyBytes = publicKeyBytesV2(key);
  if (key.scheme === "rsa3072") {
    if (signature.length !== RSA_KEY_BYTES)
      throw new RangeError("encodeSignatureBlockV2: RSA-3072 signature must be 384 bytes");
    block[1] = SIG_BLOCK_VERSION_RSA;
    block.set(keyBytes, 36);
    // The RSA peripheral takes little-endian bignums, hence the reversal (espsecure signature[::-1]).
    block.set(reversed(signature), 812);
  } else {
    const curve = ECDSA_CURVES[key.scheme];
    if (signature.length !== 2 * curve.size) {
      throw new RangeError(
        `encodeSignatureBlockV2: ${curve.label} signature must be ${2 * curve.size} bytes`,
      );
    }
    block[1] = SIG_BLOCK_VERSION_ECDSA;
    block[2] = curve.hash === "sha384" ? 1 : 0; // espsecure ECDSA_SHA_384 / ECDSA_SHA_256
    const keyAt = curve.size === 48 ? 52 : 36;
    block.set(keyBytes, keyAt);
    const rsAt = keyAt + keyBytes.length;
    block.set(reversed(signature.subarray(0, curve.size)), rsAt);
    block.set(reversed(signature.subarray(curve.size)), rsAt + curve.size);
  }
  putU32le(block, SIG_BLOCK_CRC_OFFSET, crc32(block.subarray(0, SIG_BLOCK_CRC_OFFSET)));
  return block;
}

function signBlock(
  paddedData: Uint8Array,
  key: SigningKey,
  digests: Map<string, Uint8Array>,
): Uint8Array {
  const alg = hashFor(key.scheme);
  let digest = digests.get(alg);
  if (!digest) {
    digest = hashBytes(alg, paddedData);
    digests.set(alg, digest);
  }
  const signature =
    key.scheme === "rsa3072"
      ? rsaPssSign(key, paddedData)
      : ecdsaSignDigest(key as EcdsaSigningKey, digest);
  return encodeSignatureBlockV2(digest, key, signature);
}

function keysArg(keys: readonly SigningKey[], fn: string, max = SIG_BLOCK_MAX_COUNT): void {
  if (!Array.isArray(keys)) throw new TypeError(`${fn}: keys must be an array of SigningKey`);
  if (keys.length < 1 || keys.length > max) {
    throw new RangeError(
      `${fn}: ${keys.length} keys given; a signature sector holds 1 to ${max} blocks`,
    );
  }
  for (const k of keys) keyArg(k, fn);
}

/**
 * The 4096-byte sector signing `paddedData` with each key (in order), the rest 0xFF. ECDSA uses
 * RFC 6979 nonces, so ECDSA blocks are reproducible; RSA-PSS has a random salt.
 */
export function signatureSectorV2(paddedData: Uint8Array, keys: readonly SigningKey[]): Uint8Array {
  bytesArg(paddedData, "signatureSectorV2", "paddedData");
  keysArg(keys, "signatureSectorV2");
  const digests = new Map<string, Uint8Array>();
  const sector = filled(SIG_SECTOR_SIZE, 0xff);
  for (const [i, k] of keys.entries())
    sector.set(signBlock(paddedData, k, digests), i * SIG_BLOCK_SIZE);
  return sector;
}

/**
 * espsecure `sign-data --version 2`: pad with 0xFF to 4096 (unless `skipPadding`), append the
 * signature sector.
 */
export function signDataV2(
  data: Uint8Array,
  keys: readonly SigningKey[],
  opts: { skipPadding?: boolean } = {},
): Uint8Array {
  bytesArg(data, "signDataV2", "data");
  keysArg(keys, "signDataV2");
  const padded = opts.skipPadding ? data : concatBytes(data, filled(paddingV2(data.length), 0xff));
  return concatBytes(padded, signatureSectorV2(padded, keys));
}

/**
 * espsecure `sign-data --version 2 --append-signatures` on a sector-aligned file: keeps the
 * present blocks from block 0 up to the first absent one, drops the old sector and adds one block
 * per key. With no present block espsecure signs the whole file afresh (old sector included), and
 * so does this (`keptBlocks` 0). E_SIG_SECTOR_FULL when the blocks would not fit.
 */
export function appendSignaturesV2(
  signedFile: Uint8Array,
  keys: readonly SigningKey[],
): { signed: Uint8Array; keptBlocks: number } {
  bytesArg(signedFile, "appendSignaturesV2", "signedFile");
  keysArg(keys, "appendSignaturesV2");
  if (signedFile.length < SIG_SECTOR_SIZE || signedFile.length % SIG_SECTOR_SIZE !== 0) {
    throw new EspOtaError(
      "E_SIG_FILE_SIZE",
      `cannot append signatures: ${signedFile.length} bytes is not a non-zero multiple of ${SIG_SECTOR_SIZE}`,
      { length: signedFile.length },
    );
  }
  const sector = signedFile.subarray(signedFile.length - SIG_SECTOR_SIZE);
  const kept: Uint8Array[] = [];
  while (kept.length < SIG_BLOCK_MAX_COUNT && blockIsPresent(blockAt(sector, kept.length))) {
    kept.push(blockAt(sector, kept.length));
  }
  if (kept.length === 0)
    return { signed: signDataV2(signedFile, keys, { skipPadding: true }), keptBlocks: 0 };
  if (kept.length + keys.length > SIG_BLOCK_MAX_COUNT) {
    throw new EspOtaError(
      "E_SIG_SECTOR_FULL",
      `${kept.length} signature block(s) present and ${keys.length} key(s) given; a sector holds ${SIG_BLOCK_MAX_COUNT}`,
      { present: kept.length, keys: keys.length },
    );
  }
  const data = signedFile.subarray(0, signedFile.length - SIG_SECTOR_SIZE);
  const digests = new Map<string, Uint8Array>();
  const newSector = filled(SIG_SECTOR_SIZE, 0xff);
  for (const [i, b] of kept.entries()) newSector.set(b, i * SIG_BLOCK_SIZE);
  for (const [i, k] of keys.entries()) {
    newSector.set(signBlock(data, k, digests), (kept.length + i) * SIG_BLOCK_SIZE);
  }
  return { signed: concatBytes(data, newSector), keptBlocks: kept.length };
}

// --- reading blocks ----------------------------------------------------------------------------

function blockAt(sector: Uint8Array, i: number): Uint8Array {
  return sector.subarray(i * SIG_BLOCK_SIZE, (i + 1) * SIG_BLOCK_SIZE);
}

function crcOk(block: Uint8Array): boolean {
  return u32le(block, SIG_BLOCK_CRC_OFFSET) === crc32(block.subarray(0, SIG_BLOCK_CRC_OFFSET));
}

function headerOk(block: Uint8Array): boolean {
  return (
    block[0] === SIG_BLOCK_MAGIC &&
    (block[1] === SIG_BLOCK_VERSION_RSA || block[1] === SIG_BLOCK_VERSION_ECDSA)
  );
}

/** espsecure validate_signature_block: magic 0xE7, version 2 or 3, CRC-32 of bytes 0..1195. */
function blockIsPresent(block: Uint8Array): boolean {
  return headerOk(block) && crcOk(block);
}

/** Decodes a block whose header is right; undefined when its ECDSA curve / sha type is unknown. */
function decodeBlock(block: Uint8Array, index: number): SignatureBlockV2 | undefined {
  const ok = crcOk(block);
  if (block[1] === SIG_BLOCK_VERSION_RSA) {
    const n = bytesToBigint(reversed(block.subarray(36, 420)));
    return {
      index,
      scheme: "rsa3072",
      imageDigest: block.slice(4, 36),
      crcOk: ok,
      keyDigest: hashBytes("sha256", block.subarray(36, 812)),
      publicKey: { scheme: "rsa3072", n, e: u32le(block, 420) },
      signature: reversed(block.subarray(812, 1196)),
    };
  }
  // ECDSA: byte 2 selects the layout (espsecure: 1 = SHA-384 / P-384, else SHA-256).
  const sha384 = block[2] === 1;
  if (block[2] !== 0 && !sha384) return undefined;
  const keyAt = sha384 ? 52 : 36;
  const scheme = (
    { 1: "ecdsa192", 2: "ecdsa256", 3: "ecdsa384" } as Record<number, EcdsaScheme | undefined>
  )[block[keyAt]!];
  if (!scheme || (scheme === "ecdsa384") !== sha384) return undefined;
  const size = ECDSA_CURVES[scheme].size;
  const pointLength = sha384 ? 96 : 64;
  const at = keyAt + 1;
  const rsAt = at + pointLength;
  return {
    index,
    scheme,
    imageDigest: block.slice(4, keyAt),
    crcOk: ok,
    keyDigest: hashBytes("sha256", block.subarray(keyAt, at + pointLength)),
    publicKey: {
      scheme,
      publicKey: concatBytes(
        reversed(block.subarray(at, at + size)),
        reversed(block.subarray(at + size, at + 2 * size)),
      ),
    } as SigningKey,
    signature: concatBytes(
      reversed(block.subarray(rsAt, rsAt + size)),
      reversed(block.subarray(rsAt + size, rsAt + 2 * size)),
    ),
  };
}

function sectorArg(sector: unknown, fn: string): asserts sector is Uint8Array {
  bytesArg(sector, fn, "sector");
  if (sector.length !== SIG_SECTOR_SIZE) {
    throw new RangeError(
      `${fn}: sector is ${sector.length} bytes, a signature sector is ${SIG_SECTOR_SIZE}`,
    );
  }
}

/**
 * The present blocks of a sector (magic, version and CRC right, and a key layout this code knows),
 * in sector order. `includeBadCrc` also returns blocks whose only fault is the CRC (`crcOk` false),
 * for diagnostics; the device and espsecure ignore those.
 */
export function parseSignatureSectorV2(
  sector: Uint8Array,
  opts: { includeBadCrc?: boolean } = {},
): SignatureBlockV2[] {
  sectorArg(sector, "parseSignatureSectorV2");
  const out: SignatureBlockV2[] = [];
  for (let i = 0; i < SIG_BLOCK_MAX_COUNT; i++) {
    const block = blockAt(sector, i);
    if (!headerOk(block)) continue;
    const decoded = decodeBlock(block, i);
    if (decoded && (decoded.crcOk || opts.includeBadCrc)) out.push(decoded);
  }
  return out;
}

// --- verifying ---------------------------------------------------------------------------------

export type BlockOutcomeV2 =
  | "absent" // magic, version or CRC wrong: skipped, as by espsecure and the device
  | "unusable" // present, but an ECDSA curve id / sha type no device knows
  | "wrong-key" // its key is not the expected one (or matches no eFuse digest)
  | "revoked" // its key matches only revoked eFuse digest slots
  | "digest-mismatch" // image digest in the block differs from the image's
  | "invalid-signature" // right key and digest, signature does not verify
  | "verified";

export interface BlockCheckV2 {
  index: number;
  outcome: BlockOutcomeV2;
  scheme?: SignatureSchemeV2;
  /** The eFuse digest slot that matched (verifySectorV2WithDigests only). */
  keySlot?: number;
}

export interface VerifyReportV2 {
  result: VerifyResult;
  blocks: BlockCheckV2[];
}

type Trust = { trusted: true; slot?: number } | { trusted: false; revokedSlot?: number };

// When no block verifies, the most telling failure wins: a changed image, then a forged signature,
// then a revoked key, then a foreign key, then no block at all.
const FAILURE_RANK: readonly BlockOutcomeV2[] = [
  "digest-mismatch",
  "invalid-signature",
  "revoked",
  "wrong-key",
  "unusable",
  "absent",
];
const FAILURE_CODE: Record<Exclude<BlockOutcomeV2, "verified">, SignatureFailureCode> = {
  "digest-mismatch": "E_SIG_DIGEST_MISMATCH",
  "invalid-signature": "E_SIG_INVALID",
  revoked: "E_SIG_KEY_REVOKED",
  "wrong-key": "E_SIG_WRONG_KEY",
  unusable: "E_SIG_WRONG_KEY",
  absent: "E_SIG_NO_BLOCK",
};

/**
 * The device's order (secure-boot-v2.rst "Verifying an Image"; secure_boot_signatures_app.c):
 * for each present block, (1) its key digest must be trusted, (2) its stored image digest must
 * equal the image's, (3) its signature must verify with the block's own key. First success wins.
 */
function checkSector(
  paddedData: Uint8Array,
  sector: Uint8Array,
  trust: (b: SignatureBlockV2) => Trust,
  maxBlocks: number,
  expected: string,
): VerifyReportV2 {
  const blocks: BlockCheckV2[] = [];
  const digests = new Map<string, Uint8Array>();
  const failures: { outcome: Exclude<BlockOutcomeV2, "verified">; reason: string }[] = [];
  let verified: BlockCheckV2 | undefined;
  for (let i = 0; i < maxBlocks; i++) {
    const raw = blockAt(sector, i);
    if (!blockIsPresent(raw)) {
      blocks.push({ index: i, outcome: "absent" });
      continue;
    }
    const block = decodeBlock(raw, i);
    if (!block) {
      blocks.push({ index: i, outcome: "unusable" });
      failures.push({
        outcome: "unusable",
        reason: `block ${i} has an ECDSA curve id or sha type no chip uses`,
      });
      continue;
    }
    const fail = (
      outcome: Exclude<BlockOutcomeV2, "verified">,
      reason: string,
      keySlot?: number,
    ) => {
      blocks.push({ index: i, outcome, scheme: block.scheme, keySlot });
      failures.push({ outcome, reason });
    };
    const t = trust(block);
    if (!t.trusted) {
      if (t.revokedSlot !== undefined) {
        fail(
          "revoked",
          `block ${i}'s key matches eFuse key digest slot ${t.revokedSlot}, which is revoked`,
        );
      } else {
        fail(
          "wrong-key",
          `block ${i} is signed with a ${describeScheme(block.scheme)} key that is not ${expected}`,
        );
      }
      continue;
    }
    const alg = hashFor(block.scheme);
    let digest = digests.get(alg);
    if (!digest) {
      digest = hashBytes(alg, paddedData);
      digests.set(alg, digest);
    }
    if (!equalBytes(digest, block.imageDigest)) {
      fail(
        "digest-mismatch",
        `block ${i} stores image digest ${toHex(block.imageDigest)} but the image's ${alg.toUpperCase()} is ${toHex(digest)}: the image changed after signing`,
        t.slot,
      );
      continue;
    }
    const good =
      block.publicKey.scheme === "rsa3072"
        ? rsaPssVerify(block.publicKey as RsaSigningKey, paddedData, block.signature)
        : ecdsaVerifyDigest(block.publicKey as EcdsaSigningKey, digest, block.signature);
    if (!good) {
      fail(
        "invalid-signature",
        `block ${i} carries ${expected} but its ${describeScheme(block.scheme)} signature does not verify`,
        t.slot,
      );
      continue;
    }
    const ok: BlockCheckV2 = {
      index: i,
      outcome: "verified",
      scheme: block.scheme,
      keySlot: t.slot,
    };
    blocks.push(ok);
    verified ??= ok;
  }
  if (verified) {
    return {
      result: {
        ok: true,
        keyIndex: verified.keySlot ?? verified.index,
        blockIndex: verified.index,
      },
      blocks,
    };
  }
  failures.sort((a, b) => FAILURE_RANK.indexOf(a.outcome) - FAILURE_RANK.indexOf(b.outcome));
  const worst = failures[0];
  const result: VerifyResult = worst
    ? { ok: false, code: FAILURE_CODE[worst.outcome], reason: worst.reason }
    : {
        ok: false,
        code: "E_SIG_NO_BLOCK",
        reason:
          "no signature block with magic 0xE7, version 2 or 3 and a correct CRC-32 (image not signed, or the sector is damaged)",
      };
  return { result, blocks };
}

function byKey(key: SigningKey): (b: SignatureBlockV2) => Trust {
  const digest = publicKeyDigestV2(key);
  return (b) => (equalBytes(b.keyDigest, digest) ? { trusted: true } : { trusted: false });
}

/** Per-block detail of verifySectorV2 (the CLI prints it as espsecure does). */
export function verifySectorV2Report(
  paddedData: Uint8Array,
  sector: Uint8Array,
  key: SigningKey,
): VerifyReportV2 {
  bytesArg(paddedData, "verifySectorV2", "paddedData");
  sectorArg(sector, "verifySectorV2");
  keyArg(key, "verifySectorV2");
  return checkSector(
    paddedData,
    sector,
    byKey(key),
    SIG_BLOCK_MAX_COUNT,
    `the supplied ${describeScheme(key.scheme)} key`,
  );
}

/**
 * Does some block of `sector` carry `key` (same eFuse key digest), store `paddedData`'s digest
 * and verify? Stricter than espsecure, which checks the signature with the supplied key and
 * ignores the key in the block, whereas the device only ever uses the key in the block.
 */
export function verifySectorV2(
  paddedData: Uint8Array,
  sector: Uint8Array,
  key: SigningKey,
): VerifyResult {
  return verifySectorV2Report(paddedData, sector, key).result;
}

function splitSigned(
  signedFile: Uint8Array,
  fn: string,
  skipPadding: boolean,
): { data: Uint8Array; sector: Uint8Array } | VerifyResult {
  bytesArg(signedFile, fn, "signedFile");
  const n = signedFile.length;
  if (n < SIG_SECTOR_SIZE || (!skipPadding && n % SIG_SECTOR_SIZE !== 0)) {
    return {
      ok: false,
      code: "E_SIG_FILE_SIZE",
      reason: `file is ${n} bytes; a Secure Boot V2 signed file is a non-zero multiple of ${SIG_SECTOR_SIZE} bytes`,
    };
  }
  return {
    data: signedFile.subarray(0, n - SIG_SECTOR_SIZE),
    sector: signedFile.subarray(n - SIG_SECTOR_SIZE),
  };
}

/** verifySignedV2 with the per-block detail. */
export function verifySignedV2Report(
  signedFile: Uint8Array,
  key: SigningKey,
  opts: { skipPadding?: boolean } = {},
): VerifyReportV2 {
  keyArg(key, "verifySignedV2");
  const parts = splitSigned(signedFile, "verifySignedV2", opts.skipPadding === true);
  if ("ok" in parts) return { result: parts, blocks: [] };
  return verifySectorV2Report(parts.data, parts.sector, key);
}

/**
 * espsecure `verify-signature --version 2`: the last 4096 bytes are the sector, everything before
 * is the signed image. `skipPadding` (espsecure `--skip-padding`) only requires >= 4096 bytes.
 */
export function verifySignedV2(
  signedFile: Uint8Array,
  key: SigningKey,
  opts: { skipPadding?: boolean } = {},
): VerifyResult {
  return verifySignedV2Report(signedFile, key, opts).result;
}

/**
 * The device's check: some present block (among the first `maxBlocks`, 1 on ESP32 and with
 * SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT) whose key digest equals a non-revoked eFuse digest
 * (`efuseDigests[slot]`, undefined = slot not programmed) stores the image digest and verifies.
 */
export function verifySectorV2WithDigests(
  paddedData: Uint8Array,
  sector: Uint8Array,
  efuseDigests: readonly (Uint8Array | undefined)[],
  revoked: readonly boolean[] = [],
  opts: { maxBlocks?: number } = {},
): VerifyResult {
  return verifySectorV2WithDigestsReport(paddedData, sector, efuseDigests, revoked, opts).result;
}

export function verifySectorV2WithDigestsReport(
  paddedData: Uint8Array,
  sector: Uint8Array,
  efuseDigests: readonly (Uint8Array | undefined)[],
  revoked: readonly boolean[] = [],
  opts: { maxBlocks?: number } = {},
): VerifyReportV2 {
  const fn = "verifySectorV2WithDigests";
  bytesArg(paddedData, fn, "paddedData");
  sectorArg(sector, fn);
  if (!Array.isArray(efuseDigests) || efuseDigests.length > SIG_BLOCK_MAX_COUNT) {
    throw new RangeError(
      `${fn}: efuseDigests must be an array of at most ${SIG_BLOCK_MAX_COUNT} slots`,
    );
  }
  efuseDigests.forEach((d, i) => {
    if (d !== undefined && (!(d instanceof Uint8Array) || d.length !== 32)) {
      throw new RangeError(`${fn}: efuseDigests[${i}] must be 32 bytes or undefined`);
    }
  });
  const maxBlocks = opts.maxBlocks ?? SIG_BLOCK_MAX_COUNT;
  if (!Number.isInteger(maxBlocks) || maxBlocks < 1 || maxBlocks > SIG_BLOCK_MAX_COUNT) {
    throw new RangeError(`${fn}: maxBlocks must be 1..${SIG_BLOCK_MAX_COUNT}`);
  }
  // esp_secure_boot_read_key_digests leaves revoked slots out, so they never match.
  const trust = (b: SignatureBlockV2): Trust => {
    let revokedSlot: number | undefined;
    for (let slot = 0; slot < efuseDigests.length; slot++) {
      const d = efuseDigests[slot];
      if (!d || !equalBytes(d, b.keyDigest)) continue;
      if (!revoked[slot]) return { trusted: true, slot };
      revokedSlot ??= slot;
    }
    return { trusted: false, revokedSlot };
  };
  return checkSector(paddedData, sector, trust, maxBlocks, "a key whose digest is in eFuse");
}

// --- espsecure signature-info-v2 ---------------------------------------------------------------

/**
 * The lines espsecure `signature-info-v2` prints, in order, through `emit`; throws EspOtaError
 * (after emitting the lines before it) where espsecure stops with a fatal error.
 */
export function signatureInfoV2Lines(signedFile: Uint8Array, emit: (line: string) => void): void {
  bytesArg(signedFile, "signatureInfoV2", "signedFile");
  const n = signedFile.length;
  if (n < SIG_SECTOR_SIZE || n % SIG_SECTOR_SIZE !== 0) {
    throw new EspOtaError(
      "E_SIG_FILE_SIZE",
      `Invalid datafile: ${n} bytes; the size should be non-zero and a multiple of ${SIG_SECTOR_SIZE}`,
      { length: n },
    );
  }
  const data = signedFile.subarray(0, n - SIG_SECTOR_SIZE);
  const sector = signedFile.subarray(n - SIG_SECTOR_SIZE);
  for (let i = 0; i < SIG_BLOCK_MAX_COUNT; i++) {
    const block = blockAt(sector, i);
    if (!blockIsPresent(block)) {
      emit(`Signature block ${i} absent/invalid. Skipping checking next blocks...`);
      return;
    }
    const rsa = block[1] === SIG_BLOCK_VERSION_RSA;
    emit(`Signature block ${i} is valid (${rsa ? "RSA" : "ECDSA"}).`);
    // The same byte ranges espsecure reads, whatever the curve id says.
    const sha384 = !rsa && block[2] === 1;
    const stored = block.subarray(4, sha384 ? 52 : 36);
    if (!equalBytes(stored, hashBytes(sha384 ? "sha384" : "sha256", data))) {
      throw new EspOtaError(
        "E_SIG_DIGEST_MISMATCH",
        `Digest in signature block ${i} doesn't match the image digest.`,
        {
          block: i,
        },
      );
    }
    const keyDigest = hashBytes(
      "sha256",
      rsa ? block.subarray(36, 812) : sha384 ? block.subarray(52, 149) : block.subarray(36, 101),
    );
    emit(
      `Public key digest for block ${i}: ${Array.from(keyDigest, (b) => b.toString(16).padStart(2, "0")).join(" ")}`,
    );
  }
}

/** espsecure `signature-info-v2` output, one "\n"-terminated line each (the vectors' .txt files). */
export function formatSignatureInfoV2(signedFile: Uint8Array): string {
  let out = "";
  signatureInfoV2Lines(signedFile, (line) => {
    out += `${line}\n`;
  });
  return out;
}
