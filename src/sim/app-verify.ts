/**
 * esp_image_verify over flash, as the bootloader (on every boot) and esp_ota_set_boot_partition
 * (on update) run it: read the image through the cache (decrypted when flash encryption is on),
 * walk the segment headers to find its end without reading the whole slot, then check magic,
 * chip, segment bounds, checksum, SHA-256 and, with secure boot, the signature (V1: the 68-byte
 * block right after the image, checked with the public key built into the bootloader; V2: the
 * 4 KB sector at the next 4 KB boundary, checked against the eFuse key digests).
 * → ESP-IDF components/bootloader_support/src/esp_image_format.c, secure_boot_v2/*.c
 */

import type { ErrorCode } from "../errors.js";
import type { AppDescriptor } from "../esp/image.js";
import { verifyImage } from "../esp/image.js";
import { parseSigningKey } from "../esp/keys.js";
import { isEncryptedPartition, type Partition } from "../esp/partition-table.js";
import { SBV1_BLOCK_LENGTH, verifyBlockV1 } from "../esp/secure-boot-v1.js";
import { SIG_SECTOR_SIZE, verifySectorV2WithDigests } from "../esp/secure-boot-v2.js";
import type { Efuses } from "./efuse.js";
import type { SpiFlash } from "./spi-flash.js";

export interface AppCheck {
  ok: boolean;
  /** Stable reason code when not ok (E_IMAGE_* or E_SIG_* from the library, or a sim one). */
  code?: ErrorCode;
  /** ESP-IDF-style log lines explaining a failure, tagged as the real components tag them. */
  log: { level: "E" | "W" | "I"; tag: string; message: string }[];
  appDesc?: AppDescriptor;
  /** Bytes of the image including its signature (what an OTA wrote). */
  length?: number;
}

export interface VerifyContext {
  spi: SpiFlash;
  efuses: Efuses;
  /** Secure Boot V1 public key compiled into the bootloader (64 bytes X||Y). */
  sbv1PublicKey?: Uint8Array;
  /** Check the secure boot signature (always when secure boot is on: SECURE_SIGNED_ON_BOOT/UPDATE). */
  checkSignature: boolean;
  /** "bootloader" when the ROM checks the 2nd-stage bootloader (no app descriptor required). */
  kind?: "app" | "bootloader";
}

/**
 * The app check every boot and update runs: signatures whenever secure boot is on in eFuse
 * (SECURE_SIGNED_ON_BOOT/UPDATE), V1 against the key built into the bootloader.
 */
export function appVerifyContext(
  spi: SpiFlash,
  efuses: Efuses,
  sbv1PublicKeyHex: string | undefined,
): VerifyContext {
  return {
    spi,
    efuses,
    checkSignature: efuses.secureBootVersion !== 0,
    ...(sbv1PublicKeyHex
      ? { sbv1PublicKey: new Uint8Array(Buffer.from(sbv1PublicKeyHex, "hex")) }
      : {}),
  };
}

const SEGMENT_HEADER = 8;
const IMAGE_HEADER = 24;
const MAX_SEGMENTS = 16;

export function verifyAppInFlash(ctx: VerifyContext, part: Partition): AppCheck {
  const enc = ctx.spi.encryptionEnabled && isEncryptedPartition(part);
  const read = (off: number, len: number) => ctx.spi.read(part.offset + off, len, enc);
  const fail = (code: ErrorCode, tag: string, message: string): AppCheck => ({
    ok: false,
    code,
    log: [{ level: "E", tag, message }],
  });

  const header = read(0, IMAGE_HEADER);
  if (header[0] !== 0xe9) {
    return fail(
      "E_IMAGE_MAGIC",
      "esp_image",
      `image at 0x${part.offset.toString(16)} has invalid magic byte (nothing flashed here?)`,
    );
  }
  const segments = header[1]!;
  if (segments === 0 || segments > MAX_SEGMENTS) {
    return fail(
      "E_IMAGE_SEGMENT_COUNT",
      "esp_image",
      `image at 0x${part.offset.toString(16)} has invalid segment count ${segments}`,
    );
  }
  // Walk the segment headers (8 bytes each) to find where the image ends.
  let end = IMAGE_HEADER;
  for (let i = 0; i < segments; i++) {
    if (end + SEGMENT_HEADER > part.size) {
      return fail(
        "E_IMAGE_TRUNCATED",
        "esp_image",
        `Segment ${i} header at 0x${(part.offset + end).toString(16)} is past the partition end`,
      );
    }
    const sh = read(end, SEGMENT_HEADER);
    const len = (sh[4]! | (sh[5]! << 8) | (sh[6]! << 16) | (sh[7]! << 24)) >>> 0;
    end += SEGMENT_HEADER + len;
    if (end > part.size) {
      return fail(
        "E_IMAGE_TRUNCATED",
        "esp_image",
        `Segment ${i} 0x${(part.offset + end - len).toString(16)} length 0x${len.toString(16)} extends past the partition end`,
      );
    }
  }
  // Checksum byte closes a 16-byte block; then the optional SHA-256.
  end = (end + 16) & ~15;
  if (header[23] === 1) end += 32;
  if (end > part.size)
    return fail("E_IMAGE_TRUNCATED", "esp_image", "image checksum/hash is past the partition end");

  const bytes = read(0, end);
  const v = verifyImage(bytes, {
    chip: ctx.efuses.chip,
    kind: ctx.kind ?? "app",
    partitionSize: part.size,
  });
  if (!v.ok) {
    return {
      ok: false,
      code: v.problems[0]!.code,
      log: v.problems.map((p) => ({ level: "E" as const, tag: "esp_image", message: p.message })),
    };
  }
  const appDesc = v.image.appDesc;
  let length = end;

  if (ctx.checkSignature) {
    const sb = ctx.efuses.secureBootVersion;
    // esp_image_format.c logs the scheme's own line, then its summary, for either version.
    const sigFail = (code: ErrorCode, tag: string, detail: string, summary: string): AppCheck => ({
      ok: false,
      code,
      log: [
        { level: "E", tag, message: detail },
        { level: "E", tag: "esp_image", message: summary },
      ],
    });
    if (sb === 1) {
      if (!ctx.sbv1PublicKey) {
        return fail(
          "E_SIM_PROVISION",
          "secure_boot_v1",
          "no signature verification key in the bootloader",
        );
      }
      if (end + SBV1_BLOCK_LENGTH > part.size) {
        return fail(
          "E_SIG_TOO_SHORT",
          "esp_image",
          "secure boot signature block is past the partition end",
        );
      }
      const block = read(end, SBV1_BLOCK_LENGTH);
      const r = verifyBlockV1(bytes, block, parseSigningKey(ctx.sbv1PublicKey));
      if (!r.ok) {
        return sigFail(
          r.code,
          "secure_boot_v1",
          `Signature verification failed: ${r.reason}`,
          "Secure boot signature verification failed",
        );
      }
      length = end + SBV1_BLOCK_LENGTH;
    } else if (sb === 2) {
      const padded = Math.ceil(end / SIG_SECTOR_SIZE) * SIG_SECTOR_SIZE;
      if (padded + SIG_SECTOR_SIZE > part.size) {
        return fail(
          "E_SIG_NO_BLOCK",
          "esp_image",
          "secure boot signature sector is past the partition end",
        );
      }
      const r = verifySectorV2WithDigests(
        read(0, padded),
        read(padded, SIG_SECTOR_SIZE),
        ctx.efuses.sbv2Digests,
        ctx.efuses.sbv2Revoked,
      );
      if (!r.ok) {
        return sigFail(
          r.code,
          "secure_boot_v2",
          `Secure Boot V2 verification failed: ${r.reason}`,
          "secure boot verification failed",
        );
      }
      length = padded + SIG_SECTOR_SIZE;
    }
  }
  const ok: AppCheck = { ok: true, log: [], length };
  if (appDesc) ok.appDesc = appDesc;
  return ok;
}
