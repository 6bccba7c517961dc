/**
 * The ESP32 app (and bootloader) image format: parser, bootloader-equivalent validator, builder
 * and esptool's `image-info` text. Pure: Uint8Array in, plain objects out; no I/O.
 *
 * Layout (ESP-IDF `components/bootloader_support/include/esp_app_format.h`, esptool
 * `esptool/bin_image.py` ESP32FirmwareImage; docs/formats.md "App image" has the byte tables):
 *   24-byte `esp_image_header_t`, then `segment_count` × (8-byte `{load_addr, data_len}` + data),
 *   zero padding so that the checksum byte is the last byte of a 16-byte block, the checksum
 *   (0xEF XOR every segment-data byte), then, if `hash_appended`, SHA-256 of bytes 0..checksum.
 *   An ESP-IDF app starts segment 0 (DROM) with the 256-byte `esp_app_desc_t` (file offset 0x20).
 *
 * The checks and their order follow `image_load()` in ESP-IDF
 * `components/bootloader_support/src/esp_image_format.c`: header magic, chip id / revision,
 * segment count, each segment header (length, app-descriptor length, MMU mapping alignment),
 * checksum, partition fit, SHA-256. So the first problem reported is the one a device's
 * bootloader (or `esp_ota_end()`) would log and refuse the image for.
 */
import { createHash } from "node:crypto";
import { putU16le, putU32le, toHex, u16le, u32le } from "../bytes.js";
import type { imageCodes } from "../error-codes/image.js";
import { EspOtaError } from "../errors.js";
import { type ChipInfo, chipById, chipByName, isFlashMapped, memoryTypes } from "./chips.js";

export const IMAGE_MAGIC = 0xe9;
export const APP_DESC_MAGIC = 0xabcd5432;
/** `sizeof(esp_image_header_t)`. */
export const IMAGE_HEADER_LEN = 24;
/** `sizeof(esp_image_segment_header_t)`. */
export const SEGMENT_HEADER_LEN = 8;
/** `sizeof(esp_app_desc_t)` (ESP_STATIC_ASSERT in esp_app_desc.h). */
export const APP_DESC_LEN = 256;
/** Where an ESP-IDF app's descriptor lives: data of segment 0 = 24 + 8. */
export const APP_DESC_OFFSET = IMAGE_HEADER_LEN + SEGMENT_HEADER_LEN;
/** ESP_IMAGE_MAX_SEGMENTS. */
export const MAX_SEGMENTS = 16;
/** ESP_ROM_CHECKSUM_INITIAL / esptool ESP_CHECKSUM_MAGIC. */
export const CHECKSUM_INITIAL = 0xef;
/** verify_segment_header(): `data_len >= ESP_IMAGE_MAX_FLASH_ADDR_SIZE` (16 MB) is invalid. */
export const MAX_SEGMENT_LEN = 0x1000000;
/** esptool WP_PIN_DISABLED: the IDF bootloader configures WP itself, the ROM must skip it. */
export const WP_PIN_DISABLED = 0xee;
const HASH_LEN = 32;
const DEFAULT_MMU_PAGE = 0x10000;

export type ImageProblemCode = Exclude<keyof typeof imageCodes, "E_CHIP_UNKNOWN">;

export interface ImageHeader {
  magic: number;
  segmentCount: number;
  /** 0 QIO, 1 QOUT, 2 DIO, 3 DOUT, 4 FAST_READ, 5 SLOW_READ (`esp_image_spi_mode_t`). */
  spiMode: number;
  /** Low nibble of byte 3: 0 = div2 (40m on ESP32), 1 div3, 2 div4, 0xF div1 (80m). */
  spiSpeed: number;
  /** High nibble of byte 3: 0 = 1 MB, 1 = 2 MB, … 7 = 128 MB. */
  spiSize: number;
  entryAddr: number;
  /** 0xEE = disabled. */
  wpPin: number;
  /** Bytes 9..11 as stored: two 4-bit drive strengths per byte (clk|q, d|cs0, hd|wp). */
  spiPinDrv: number[];
  chipId: number;
  /** Legacy one-byte minimum revision (byte 14). */
  minChipRev: number;
  /** major*100 + minor. */
  minChipRevFull: number;
  /** major*100 + minor; 0 and 0xFFFF mean "not set". */
  maxChipRevFull: number;
  /** Bytes 19..22, zero in every image the tools write. */
  reserved: number[];
  hashAppended: boolean;
}

export interface AppDescriptor {
  secureVersion: number;
  version: string;
  projectName: string;
  time: string;
  date: string;
  idfVer: string;
  appElfSha256: Uint8Array;
  minEfuseBlkRevFull: number;
  maxEfuseBlkRevFull: number;
  /** log2 of the MMU page size the app was linked for (16 = 64 KB); 0 = not recorded (< v5.4). */
  mmuPageSize: number;
  /** `spi_flash_mode` (ESP-IDF v6.1+), CONFIG_ESPTOOLPY_FLASHMODE_VAL; 0 when absent. */
  spiFlashMode?: number;
}

export interface ImageSegment {
  loadAddr: number;
  /** File offset of the segment's data (its 8-byte header is just before). */
  offset: number;
  length: number;
  /** File offset of the segment header: what esptool prints as "File offs". */
  headerOffset: number;
}

export interface ParsedImage {
  header: ImageHeader;
  chip?: ChipInfo;
  segments: ImageSegment[];
  checksumOffset: number;
  storedChecksum: number;
  computedChecksum: number;
  hashOffset?: number;
  /** Shorter than 32 bytes when the file is cut inside the hash. */
  storedHash?: Uint8Array;
  computedHash?: Uint8Array;
  /** Bytes through the appended hash (or the checksum block): where an SBv1 signature starts. */
  imageEnd: number;
  appDesc?: AppDescriptor;
}

export interface ImageProblem {
  code: ImageProblemCode;
  message: string;
  offset?: number;
}

/**
 * Which image the bootloader believes it is checking. "app": segment 0 must hold the app
 * descriptor and the max chip revision applies; "bootloader": neither; "any": only the structural
 * and integrity checks (what esptool `image-info` judges).
 */
export type ImageKind = "app" | "bootloader" | "any";

export interface VerifyImageOptions {
  /** Expected target (esptool name); the header's chip id must match it. */
  chip?: string;
  /** Default "app": the gateway verifies OTA apps. */
  kind?: ImageKind;
  /** The device's chip revision, major*100+minor; checked against the header when given. */
  chipRevision?: number;
  /** The device's eFuse block revision, major*100+minor (apps on chips other than ESP32). */
  efuseBlkRevision?: number;
  /** Size of the partition the image goes into; the image through its SHA-256 must fit. */
  partitionSize?: number;
}

export type VerifyImageResult =
  | { ok: true; image: ParsedImage }
  | { ok: false; problems: ImageProblem[]; image?: ParsedImage };

// ---------------------------------------------------------------------------------------------
// Header

export function decodeImageHeader(b: Uint8Array): ImageHeader {
  if (!(b instanceof Uint8Array)) throw new TypeError("decodeImageHeader: expected a Uint8Array");
  if (b.length < IMAGE_HEADER_LEN) {
    throw new RangeError(`decodeImageHeader: ${b.length} bytes, the header is ${IMAGE_HEADER_LEN}`);
  }
  return {
    magic: b[0]!,
    segmentCount: b[1]!,
    spiMode: b[2]!,
    spiSpeed: b[3]! & 0x0f,
    spiSize: b[3]! >> 4,
    entryAddr: u32le(b, 4),
    wpPin: b[8]!,
    spiPinDrv: [b[9]!, b[10]!, b[11]!],
    chipId: u16le(b, 12),
    minChipRev: b[14]!,
    minChipRevFull: u16le(b, 15),
    maxChipRevFull: u16le(b, 17),
    reserved: [b[19]!, b[20]!, b[21]!, b[22]!],
    // esp_image_format.c tests `if (data->image.hash_appended)`: any non-zero value counts.
    hashAppended: b[23]! !== 0,
  };
}

export function encodeImageHeader(h: ImageHeader): Uint8Array {
  const b = new Uint8Array(IMAGE_HEADER_LEN);
  b[0] = checkUint(h.magic, 0xff, "magic");
  b[1] = checkUint(h.segmentCount, 0xff, "segmentCount");
  b[2] = checkUint(h.spiMode, 0xff, "spiMode");
  b[3] = checkUint(h.spiSpeed, 0xf, "spiSpeed") | (checkUint(h.spiSize, 0xf, "spiSize") << 4);
  putU32le(b, 4, checkUint(h.entryAddr, 0xffffffff, "entryAddr"));
  b[8] = checkUint(h.wpPin, 0xff, "wpPin");
  bytesField(h.spiPinDrv, 3, "spiPinDrv").forEach((v, i) => {
    b[9 + i] = v;
  });
  putU16le(b, 12, checkUint(h.chipId, 0xffff, "chipId"));
  b[14] = checkUint(h.minChipRev, 0xff, "minChipRev");
  putU16le(b, 15, checkUint(h.minChipRevFull, 0xffff, "minChipRevFull"));
  putU16le(b, 17, checkUint(h.maxChipRevFull, 0xffff, "maxChipRevFull"));
  bytesField(h.reserved, 4, "reserved").forEach((v, i) => {
    b[19 + i] = v;
  });
  b[23] = h.hashAppended ? 1 : 0;
  return b;
}

// ---------------------------------------------------------------------------------------------
// App descriptor (esp_app_desc_t, components/esp_app_format/include/esp_app_desc.h)

const DESC = {
  secureVersion: 4,
  version: [16, 32],
  projectName: [48, 32],
  time: [80, 16],
  date: [96, 16],
  idfVer: [112, 32],
  appElfSha256: 144,
  minEfuseBlkRevFull: 176,
  maxEfuseBlkRevFull: 178,
  mmuPageSize: 180,
  spiFlashMode: 181,
} as const;

const utf8 = new TextDecoder("utf-8");
const utf8Enc = new TextEncoder();

/** A `char[N]` field as C reads it: up to the first NUL. */
function cField(b: Uint8Array, off: number, size: number): string {
  const f = b.subarray(off, off + size);
  const end = f.indexOf(0);
  return utf8.decode(end < 0 ? f : f.subarray(0, end));
}

function putCField(b: Uint8Array, off: number, size: number, s: string, field: string): void {
  if (typeof s !== "string") throw new TypeError(`${field}: expected a string`);
  const e = utf8Enc.encode(s);
  // ESP-IDF copies these with strlcpy-like truncation, so the field always ends in NUL.
  if (e.length > size - 1) {
    throw new RangeError(`${field}: "${s}" is ${e.length} bytes in UTF-8, at most ${size - 1} fit`);
  }
  if (e.includes(0)) throw new RangeError(`${field}: contains a NUL character`);
  b.set(e, off);
}

export function encodeAppDesc(d: AppDescriptor): Uint8Array {
  const b = new Uint8Array(APP_DESC_LEN);
  putU32le(b, 0, APP_DESC_MAGIC);
  putU32le(b, DESC.secureVersion, checkUint(d.secureVersion, 0xffffffff, "secureVersion"));
  putCField(b, ...DESC.version, d.version, "version");
  putCField(b, ...DESC.projectName, d.projectName, "projectName");
  putCField(b, ...DESC.time, d.time, "time");
  putCField(b, ...DESC.date, d.date, "date");
  putCField(b, ...DESC.idfVer, d.idfVer, "idfVer");
  if (!(d.appElfSha256 instanceof Uint8Array)) {
    throw new TypeError("appElfSha256: expected a Uint8Array");
  }
  if (d.appElfSha256.length !== 32) {
    throw new RangeError(`appElfSha256: ${d.appElfSha256.length} bytes, expected 32`);
  }
  b.set(d.appElfSha256, DESC.appElfSha256);
  putU16le(
    b,
    DESC.minEfuseBlkRevFull,
    checkUint(d.minEfuseBlkRevFull, 0xffff, "minEfuseBlkRevFull"),
  );
  putU16le(
    b,
    DESC.maxEfuseBlkRevFull,
    checkUint(d.maxEfuseBlkRevFull, 0xffff, "maxEfuseBlkRevFull"),
  );
  b[DESC.mmuPageSize] = checkUint(d.mmuPageSize, 0xff, "mmuPageSize");
  b[DESC.spiFlashMode] = checkUint(d.spiFlashMode ?? 0, 0xff, "spiFlashMode");
  return b;
}

/** Decodes the first 256 bytes of `b`; undefined when they do not start with 0xABCD5432. */
export function decodeAppDesc(b: Uint8Array): AppDescriptor | undefined {
  if (!(b instanceof Uint8Array)) throw new TypeError("decodeAppDesc: expected a Uint8Array");
  if (b.length < APP_DESC_LEN) {
    throw new RangeError(`decodeAppDesc: ${b.length} bytes, esp_app_desc_t is ${APP_DESC_LEN}`);
  }
  if (u32le(b, 0) !== APP_DESC_MAGIC) return undefined;
  return {
    secureVersion: u32le(b, DESC.secureVersion),
    version: cField(b, ...DESC.version),
    projectName: cField(b, ...DESC.projectName),
    time: cField(b, ...DESC.time),
    date: cField(b, ...DESC.date),
    idfVer: cField(b, ...DESC.idfVer),
    appElfSha256: b.slice(DESC.appElfSha256, DESC.appElfSha256 + 32),
    minEfuseBlkRevFull: u16le(b, DESC.minEfuseBlkRevFull),
    maxEfuseBlkRevFull: u16le(b, DESC.maxEfuseBlkRevFull),
    mmuPageSize: b[DESC.mmuPageSize]!,
    spiFlashMode: b[DESC.spiFlashMode]!,
  };
}

// ---------------------------------------------------------------------------------------------
// Parser and validator

/** The 0xEF-seeded XOR the ROM and bootloader use; byte-wise equals the bootloader's word XOR. */
export function imageChecksum(data: Uint8Array, state = CHECKSUM_INITIAL): number {
  let c = state;
  for (let i = 0; i < data.length; i++) c ^= data[i]!;
  return c;
}

/** File offset of the checksum byte for segments ending at `end` (process_checksum()). */
export function checksumOffsetAfter(end: number): number {
  return end + 15 - (end % 16);
}

function sha256(b: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(b).digest());
}

const hx = (v: number) => `0x${(v >>> 0).toString(16)}`;
const hx8 = (v: number) => `0x${(v >>> 0).toString(16).padStart(8, "0")}`;

function revStr(full: number): string {
  return `v${Math.floor(full / 100)}.${full % 100}`;
}

/** `IS_FIELD_SET` in bootloader_common_loader.c: 0 and 0xFFFF mean "no limit". */
function isRevSet(full: number): boolean {
  return full !== 0 && full !== 0xffff;
}

/** The MMU page the bootloader checks mapping alignment with (verify_segment_header()). */
function mmuPage(chip: ChipInfo, desc: AppDescriptor | undefined, kind: ImageKind): number {
  // Only chips with SOC_MMU_PAGE_SIZE_CONFIGURABLE read the app's mmu_page_size; an out-of-range
  // or zero value falls back to the bootloader's own page (64 KB unless configured smaller).
  if (kind !== "bootloader" && desc && chip.mmuPageSizes.length > 1 && desc.mmuPageSize < 32) {
    const size = 2 ** desc.mmuPageSize;
    if (chip.mmuPageSizes.includes(size)) return size;
  }
  return chip.mmuPageSizes[0] ?? DEFAULT_MMU_PAGE;
}

interface InspectOptions {
  expectChip?: ChipInfo;
  kind: ImageKind;
  chipRevision?: number;
  efuseBlkRevision?: number;
  partitionSize?: number;
}

function inspect(
  bytes: Uint8Array,
  o: InspectOptions,
): { image?: ParsedImage; problems: ImageProblem[] } {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("image: expected a Uint8Array");
  const problems: ImageProblem[] = [];
  const len = bytes.length;
  const fail = (code: ImageProblemCode, message: string, offset?: number) => {
    problems.push(offset === undefined ? { code, message } : { code, message, offset });
  };

  if (len === 0) {
    fail("E_IMAGE_TRUNCATED", "image is empty (0 bytes)", 0);
    return { problems };
  }
  if (bytes[0] !== IMAGE_MAGIC) {
    fail(
      "E_IMAGE_MAGIC",
      `image at 0x0 has invalid magic byte ${hx(bytes[0]!)}, expected 0xe9 (nothing flashed here, or encrypted?)`,
      0,
    );
    return { problems };
  }
  if (len < IMAGE_HEADER_LEN) {
    fail("E_IMAGE_TRUNCATED", `file is ${len} bytes, shorter than the 24-byte image header`, len);
    return { problems };
  }
  const header = decodeImageHeader(bytes);
  if (bytes[23]! > 1) {
    fail(
      "E_IMAGE_HEADER_FIELD",
      `hash_appended (byte 23) is ${hx(bytes[23]!)}, not 0 or 1 (esptool refuses this image)`,
      23,
    );
  }

  // verify_image_header(): chip validity comes before the segment count.
  const chip = chipById(header.chipId);
  if (o.expectChip && header.chipId !== o.expectChip.id) {
    fail(
      "E_IMAGE_CHIP_MISMATCH",
      `mismatch chip ID, expected ${o.expectChip.id} (${o.expectChip.displayName}), found ${header.chipId}${chip ? ` (${chip.displayName})` : ""}`,
      12,
    );
  } else if (!chip) {
    fail("E_IMAGE_CHIP_UNKNOWN", `chip ID ${header.chipId} is not a known ESP32 chip`, 12);
  } else if (o.chipRevision !== undefined) {
    const rev = o.chipRevision;
    if (header.minChipRevFull > rev) {
      fail(
        "E_IMAGE_CHIP_REVISION",
        `chip revision check failed. Required >= ${revStr(header.minChipRevFull)}, found ${revStr(rev)}.`,
        15,
      );
    } else if (o.kind === "app" && isRevSet(header.maxChipRevFull) && rev > header.maxChipRevFull) {
      // The bootloader skips the maximum for bootloader images (check_chip_validity()).
      fail(
        "E_IMAGE_CHIP_REVISION",
        `chip revision check failed. Required <= ${revStr(header.maxChipRevFull)}, found ${revStr(rev)}.`,
        17,
      );
    }
  }
  if (header.segmentCount > MAX_SEGMENTS) {
    fail(
      "E_IMAGE_SEGMENT_COUNT",
      `segment count ${header.segmentCount} exceeds max ${MAX_SEGMENTS}`,
      1,
    );
  }

  const mapChip = chip ?? o.expectChip;
  const segments: ImageSegment[] = [];
  let appDesc: AppDescriptor | undefined;
  let pos = IMAGE_HEADER_LEN;
  for (let i = 0; i < header.segmentCount; i++) {
    if (pos + SEGMENT_HEADER_LEN > len) {
      fail(
        "E_IMAGE_TRUNCATED",
        `file ends at ${hx(len)} inside the header of segment ${i} (of ${header.segmentCount}) at ${hx(pos)}`,
        pos,
      );
      return { problems };
    }
    const loadAddr = u32le(bytes, pos);
    const length = u32le(bytes, pos + 4);
    const dataOff = pos + SEGMENT_HEADER_LEN;
    if (length % 4 !== 0 || length >= MAX_SEGMENT_LEN) {
      fail(
        "E_IMAGE_SEGMENT_LENGTH",
        `segment ${i}: invalid segment length ${hx(length)} (must be a multiple of 4 and below 16 MB)`,
        pos + 4,
      );
    }
    if (i === 0 && o.kind === "app" && length < APP_DESC_LEN) {
      fail(
        "E_IMAGE_APP_DESC_MISSING",
        `Segment 0: length ${hx(length)} is too short for app description (${APP_DESC_LEN} bytes)`,
        pos + 4,
      );
    }
    if (dataOff + length > len) {
      fail(
        "E_IMAGE_TRUNCATED",
        `segment ${i} (load ${hx8(loadAddr)}, length ${hx(length)}) runs past the end of the file: it needs bytes up to ${hx(dataOff + length)}, the file has ${hx(len)}`,
        dataOff,
      );
      return { problems };
    }
    if (i === 0 && length >= APP_DESC_LEN) {
      appDesc = decodeAppDesc(bytes.subarray(dataOff, dataOff + APP_DESC_LEN));
      if (!appDesc && o.kind === "app") {
        fail(
          "E_IMAGE_APP_DESC_MISSING",
          `segment 0 does not start with an app description: magic ${hx8(u32le(bytes, dataOff))}, expected ${hx8(APP_DESC_MAGIC)}`,
          dataOff,
        );
      }
      if (
        appDesc &&
        o.kind === "app" &&
        o.efuseBlkRevision !== undefined &&
        mapChip &&
        mapChip.name !== "esp32"
      ) {
        // process_segment_data(): not on the ESP32, which has no eFuse block version bits.
        const rev = o.efuseBlkRevision;
        if (isRevSet(appDesc.minEfuseBlkRevFull) && rev < appDesc.minEfuseBlkRevFull) {
          fail(
            "E_IMAGE_EFUSE_BLK_REVISION",
            `Image requires efuse blk rev >= ${revStr(appDesc.minEfuseBlkRevFull)}, but chip is ${revStr(rev)}`,
            dataOff + DESC.minEfuseBlkRevFull,
          );
        }
        if (isRevSet(appDesc.maxEfuseBlkRevFull) && rev > appDesc.maxEfuseBlkRevFull) {
          fail(
            "E_IMAGE_EFUSE_BLK_REVISION",
            `Image requires efuse blk rev <= ${revStr(appDesc.maxEfuseBlkRevFull)}, but chip is ${revStr(rev)}`,
            dataOff + DESC.maxEfuseBlkRevFull,
          );
        }
      }
    }
    if (mapChip && isFlashMapped(mapChip, loadAddr)) {
      const page = mmuPage(mapChip, appDesc, o.kind);
      if (dataOff % page !== loadAddr % page) {
        fail(
          "E_IMAGE_SEGMENT_MAPPING",
          `Segment ${i} load address ${hx8(loadAddr)}, doesn't match data ${hx8(dataOff)} (they must be equal modulo the ${hx(page)}-byte MMU page)`,
          pos,
        );
      }
    }
    segments.push({ loadAddr, offset: dataOff, length, headerOffset: pos });
    pos = dataOff + length;
  }
  if (o.kind === "app" && header.segmentCount === 0) {
    fail("E_IMAGE_APP_DESC_MISSING", "image has no segments, so no app description", 1);
  }

  const checksumOffset = checksumOffsetAfter(pos);
  if (checksumOffset >= len) {
    fail(
      "E_IMAGE_TRUNCATED",
      `file ends at ${hx(len)} before the checksum byte at ${hx(checksumOffset)}`,
      len,
    );
    return { problems };
  }
  let computedChecksum = CHECKSUM_INITIAL;
  for (const s of segments) {
    computedChecksum = imageChecksum(
      bytes.subarray(s.offset, s.offset + s.length),
      computedChecksum,
    );
  }
  const storedChecksum = bytes[checksumOffset]!;
  if (storedChecksum !== computedChecksum) {
    fail(
      "E_IMAGE_CHECKSUM",
      `Checksum failed. Calculated ${hx(computedChecksum)} read ${hx(storedChecksum)}`,
      checksumOffset,
    );
  }

  const image: ParsedImage = {
    header,
    segments,
    checksumOffset,
    storedChecksum,
    computedChecksum,
    imageEnd: checksumOffset + 1,
  };
  if (chip) image.chip = chip;
  if (appDesc) image.appDesc = appDesc;

  let hashBad = false;
  if (header.hashAppended) {
    const hashOffset = checksumOffset + 1;
    image.hashOffset = hashOffset;
    image.imageEnd = hashOffset + HASH_LEN;
    image.computedHash = sha256(bytes.subarray(0, hashOffset));
    image.storedHash = bytes.slice(hashOffset, hashOffset + HASH_LEN);
    if (image.storedHash.length < HASH_LEN) {
      fail(
        "E_IMAGE_TRUNCATED",
        `file ends at ${hx(len)} inside the appended SHA-256 (${hx(hashOffset)}..${hx(image.imageEnd)})`,
        len,
      );
    } else {
      hashBad = toHex(image.storedHash) !== toHex(image.computedHash);
    }
  }
  // process_appended_hash_and_sig() checks the partition fit before verify_simple_hash() runs.
  if (o.partitionSize !== undefined && image.imageEnd > o.partitionSize) {
    fail(
      "E_IMAGE_TOO_BIG",
      `Image length ${image.imageEnd} doesn't fit in partition length ${o.partitionSize}`,
      o.partitionSize,
    );
  }
  if (hashBad) {
    fail(
      "E_IMAGE_HASH",
      `Image hash failed - image is corrupt: stored ${toHex(image.storedHash!)}, calculated ${toHex(image.computedHash!)}`,
      image.hashOffset,
    );
  }
  return { image, problems };
}

/**
 * Decodes an image and reports every structural and integrity problem it finds (header magic,
 * chip id, segment count and lengths, flash mapping alignment, checksum, SHA-256), in the order
 * the bootloader checks them. Never throws on content; `image` is absent only when the file is not
 * an image at all (bad magic) or ends before the checksum byte.
 */
export function parseImage(bytes: Uint8Array): { image?: ParsedImage; problems: ImageProblem[] } {
  return inspect(bytes, { kind: "any" });
}

/**
 * The bootloader's (and `esp_ota_end()`'s) verdict on an image, `esp_image_verify()` in
 * esp_image_format.c: magic, chip id (and revisions when the device's are given), segment count,
 * segment lengths, app descriptor, MMU mapping alignment, checksum, partition fit, SHA-256.
 * Secure boot signatures are checked elsewhere (src/esp/secure-boot*).
 *
 * Deliberate differences: the SHA-256 is checked for bootloader images too (the bootloader skips
 * it without secure boot because old esptool rewrote headers without updating it); for apps the
 * descriptor's magic is required on every chip (the bootloader requires it only where the MMU page
 * size is configurable, but OTA and anti-rollback read `secure_version` from it). RAM load address
 * overlap with the bootloader's own memory is not checked (it depends on the bootloader build).
 */
export function verifyImage(bytes: Uint8Array, opts: VerifyImageOptions = {}): VerifyImageResult {
  const kind = opts.kind ?? "app";
  if (kind !== "app" && kind !== "bootloader" && kind !== "any") {
    throw new RangeError(
      `verifyImage: kind must be "app", "bootloader" or "any", not ${String(kind)}`,
    );
  }
  const o: InspectOptions = { kind };
  if (opts.chip !== undefined) o.expectChip = chipByName(opts.chip);
  if (opts.chipRevision !== undefined)
    o.chipRevision = checkUint(opts.chipRevision, 0xffff, "chipRevision");
  if (opts.efuseBlkRevision !== undefined) {
    o.efuseBlkRevision = checkUint(opts.efuseBlkRevision, 0xffff, "efuseBlkRevision");
  }
  if (opts.partitionSize !== undefined) {
    o.partitionSize = checkUint(opts.partitionSize, 0xffffffff, "partitionSize");
  }
  const { image, problems } = inspect(bytes, o);
  if (image && problems.length === 0) return { ok: true, image };
  return image ? { ok: false, problems, image } : { ok: false, problems };
}

// ---------------------------------------------------------------------------------------------
// Builder

export interface ImageSegmentData {
  loadAddr: number;
  data: Uint8Array;
}

export interface EncodeImageOptions {
  /** Everything but magic and segmentCount, which come from the constants and `segments`. */
  header: Omit<ImageHeader, "magic" | "segmentCount">;
  /** Written verbatim, in order; each length must be a multiple of 4. */
  segments: readonly ImageSegmentData[];
}

/**
 * Lays out an image exactly as esptool's `ESP32FirmwareImage.save()` writes the segments it is
 * given: header, segments, zero padding, checksum, optional SHA-256. No segment is moved, split
 * or padded here; buildAppImage() does the placement. Re-encoding a parsed image's segments gives
 * back the original bytes up to `imageEnd` (test/esp/image.test.ts shows it for the vectors).
 */
export function encodeImage(opts: EncodeImageOptions): Uint8Array {
  const segs = opts.segments;
  if (segs.length > MAX_SEGMENTS) {
    throw new RangeError(`encodeImage: ${segs.length} segments, at most ${MAX_SEGMENTS}`);
  }
  let body = IMAGE_HEADER_LEN;
  segs.forEach((s, i) => {
    checkUint(s.loadAddr, 0xffffffff, `segments[${i}].loadAddr`);
    if (!(s.data instanceof Uint8Array))
      throw new TypeError(`segments[${i}].data: expected a Uint8Array`);
    if (s.data.length % 4 !== 0 || s.data.length >= MAX_SEGMENT_LEN) {
      throw new RangeError(
        `segments[${i}]: length ${hx(s.data.length)} must be a multiple of 4 and below 16 MB`,
      );
    }
    body += SEGMENT_HEADER_LEN + s.data.length;
  });
  const checksumOffset = checksumOffsetAfter(body);
  const hashAppended = opts.header.hashAppended;
  const out = new Uint8Array(checksumOffset + 1 + (hashAppended ? HASH_LEN : 0));
  out.set(encodeImageHeader({ ...opts.header, magic: IMAGE_MAGIC, segmentCount: segs.length }), 0);
  let pos = IMAGE_HEADER_LEN;
  let checksum = CHECKSUM_INITIAL;
  for (const s of segs) {
    putU32le(out, pos, s.loadAddr);
    putU32le(out, pos + 4, s.data.length);
    out.set(s.data, pos + SEGMENT_HEADER_LEN);
    checksum = imageChecksum(s.data, checksum);
    pos += SEGMENT_HEADER_LEN + s.data.length;
  }
  out[checksumOffset] = checksum;
  if (hashAppended) out.set(sha256(out.subarray(0, checksumOffset + 1)), checksumOffset + 1);
  return out;
}

export interface BuildAppOptions {
  chip: string;
  appDesc: Partial<AppDescriptor> & { version: string; projectName: string };
  /** Further segments after the DROM segment holding the app descriptor, in this order. */
  segments?: { loadAddr: number; data: Uint8Array }[];
  /** Default: the chip's `iromAddr`. */
  entryAddr?: number;
  /** Default 2 (DIO), ESP-IDF's default flash mode. */
  spiMode?: number;
  /** Default 0 (40 MHz on ESP32), ESP-IDF's default. */
  spiSpeed?: number;
  /** Default 1 (2 MB), ESP-IDF's default flash size. */
  spiSize?: number;
  /** Default true, as ESP-IDF builds apps. */
  hashAppended?: boolean;
  /** Default 0. */
  minChipRevFull?: number;
  /** Default 0 ("not set": any later revision boots it). */
  maxChipRevFull?: number;
  /**
   * Pad with a deterministic filler segment so the image is at least this many bytes; the result
   * is then the smallest multiple of 16 at or above it (the checksum block makes every image a
   * multiple of 16).
   */
  minSize?: number;
}

/** The descriptor fields buildAppImage() fills in when they are not given. */
export function defaultAppDesc(
  chip: ChipInfo,
  d: Partial<AppDescriptor> & { version: string; projectName: string },
): AppDescriptor {
  const secureVersion = d.secureVersion ?? 0;
  return {
    secureVersion,
    version: d.version,
    projectName: d.projectName,
    // ESP-IDF writes empty strings when CONFIG_APP_COMPILE_TIME_DATE is off (reproducible builds).
    time: d.time ?? "",
    date: d.date ?? "",
    idfVer: d.idfVer ?? "",
    // A stand-in for the ELF's SHA-256 that differs between synthetic builds, as real ones do.
    appElfSha256:
      d.appElfSha256 ??
      sha256(
        utf8Enc.encode(`esp-ota synthetic app\0${d.projectName}\0${d.version}\0${secureVersion}`),
      ),
    minEfuseBlkRevFull: d.minEfuseBlkRevFull ?? 0,
    maxEfuseBlkRevFull: d.maxEfuseBlkRevFull ?? 0,
    // ESP-IDF ≥ 5.4 records log2 of the MMU page; 16 = 64 KB, every chip's default.
    mmuPageSize: d.mmuPageSize ?? Math.log2(chip.mmuPageSizes[0] ?? DEFAULT_MMU_PAGE),
    spiFlashMode: d.spiFlashMode ?? 0,
  };
}

/**
 * esptool `get_alignment_data_needed()`: bytes of padding-segment data to write at `pos` so that
 * the next segment's data (after the padding's and its own 8-byte header) lands at an offset equal
 * to `addr` modulo the MMU page.
 */
function alignmentPadding(pos: number, addr: number, page: number): number {
  const alignPast = (addr % page) - SEGMENT_HEADER_LEN;
  let pad = page - (pos % page) + alignPast;
  if (pad === 0 || pad === page) return 0;
  pad -= SEGMENT_HEADER_LEN;
  if (pad < 0) pad += page;
  return pad;
}

/** xorshift32 stream: fast, deterministic, and incompressible enough to look like code. */
function fillerBytes(length: number, seed: Uint8Array): Uint8Array {
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  let x = u32le(seed, 0) || 0x9e3779b9;
  for (let i = 0; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    view.setUint32(i, x >>> 0, true);
  }
  return out;
}

/**
 * Builds a valid app image, as `idf.py build` would lay it out: the 256-byte app descriptor first
 * in a DROM segment at the chip's `dromAddr` (file offset 0x20), then the given segments, each
 * flash-mapped one preceded by a zero padding segment (load address 0) where needed to align it to
 * the 64 KB MMU page as esptool does, then an optional filler segment (load address 0, so the
 * bootloader neither loads nor maps it) of pseudo-random bytes seeded by the descriptor, then the
 * checksum block and SHA-256.
 *
 * Segment data shorter than a multiple of 4 is zero-padded (esptool's ImageSegment does the same).
 * Throws RangeError/TypeError on values that do not fit their fields or on more than 16 segments,
 * and EspOtaError E_CHIP_UNKNOWN for an unknown chip.
 */
export function buildAppImage(opts: BuildAppOptions): Uint8Array {
  const chip = chipByName(opts.chip);
  if (!opts.appDesc || typeof opts.appDesc !== "object") {
    throw new TypeError("buildAppImage: appDesc is required");
  }
  const desc = encodeAppDesc(defaultAppDesc(chip, opts.appDesc));
  const hashAppended = opts.hashAppended ?? true;
  const page = chip.mmuPageSizes[0] ?? DEFAULT_MMU_PAGE;

  const input: ImageSegmentData[] = [{ loadAddr: chip.dromAddr, data: desc }];
  (opts.segments ?? []).forEach((s, i) => {
    checkUint(s.loadAddr, 0xffffffff, `segments[${i}].loadAddr`);
    if (!(s.data instanceof Uint8Array))
      throw new TypeError(`segments[${i}].data: expected a Uint8Array`);
    input.push({ loadAddr: s.loadAddr, data: padTo4(s.data) });
  });

  const out: ImageSegmentData[] = [];
  let pos = IMAGE_HEADER_LEN;
  const push = (s: ImageSegmentData) => {
    out.push(s);
    pos += SEGMENT_HEADER_LEN + s.data.length;
  };
  for (const s of input) {
    if (isFlashMapped(chip, s.loadAddr)) {
      const pad = alignmentPadding(pos, s.loadAddr, page);
      if (pad > 0) push({ loadAddr: 0, data: new Uint8Array(pad) });
      let data = s.data;
      if (chip.name === "esp32") {
        // esptool save_flash_segment(): old ESP32 bootloaders did not map the last MMU page when
        // a flash segment ended less than 0x24 bytes into it, so esptool pads such segments.
        const rem = (pos + SEGMENT_HEADER_LEN + data.length) % page;
        if (rem < 0x24) data = concat(data, new Uint8Array(0x24 - rem));
      }
      push({ loadAddr: s.loadAddr, data });
    } else {
      push(s);
    }
  }

  if (opts.minSize !== undefined) {
    const minSize = checkUint(opts.minSize, MAX_SEGMENT_LEN, "minSize");
    const tail = hashAppended ? HASH_LEN : 0;
    const total = (body: number) => checksumOffsetAfter(body) + 1 + tail;
    if (total(pos) < minSize) {
      // total(body) = floor(body/16)*16 + 16 + tail; find the least body ≥ pos + 8 reaching minSize.
      const blocks = Math.ceil((minSize - tail - 16) / 16);
      const length = Math.max(0, blocks * 16 - pos - SEGMENT_HEADER_LEN);
      const filler = fillerBytes(length + ((4 - (length % 4)) % 4), sha256(desc));
      push({ loadAddr: 0, data: filler });
    }
  }
  if (out.length > MAX_SEGMENTS) {
    throw new RangeError(
      `buildAppImage: the layout needs ${out.length} segments (with padding and filler), at most ${MAX_SEGMENTS}`,
    );
  }
  const minChipRevFull = checkUint(opts.minChipRevFull ?? 0, 0xffff, "minChipRevFull");
  return encodeImage({
    header: {
      spiMode: checkUint(opts.spiMode ?? 2, 0xff, "spiMode"),
      spiSpeed: checkUint(opts.spiSpeed ?? 0, 0xf, "spiSpeed"),
      spiSize: checkUint(opts.spiSize ?? 1, 0xf, "spiSize"),
      entryAddr: checkUint(opts.entryAddr ?? chip.iromAddr, 0xffffffff, "entryAddr"),
      wpPin: WP_PIN_DISABLED,
      spiPinDrv: [0, 0, 0],
      chipId: chip.id,
      minChipRev: 0,
      minChipRevFull,
      maxChipRevFull: checkUint(opts.maxChipRevFull ?? 0, 0xffff, "maxChipRevFull"),
      reserved: [0, 0, 0, 0],
      hashAppended,
    },
    segments: out,
  });
}

// ---------------------------------------------------------------------------------------------
// esptool image-info

const FLASH_SIZE_NAMES = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"];
const FLASH_MODE_NAMES = ["QIO", "QOUT", "DIO", "DOUT"];

/** Python's `format(v, "#0Nx")`: 0x prefix, zero-padded to total width N. */
function pyHex0(v: number, width: number): string {
  return `0x${(v >>> 0).toString(16).padStart(width - 2, "0")}`;
}

/** esptool's `sanitize_string`: UTF-8 decode of the whole field with every NUL removed. */
function pyString(b: Uint8Array): string {
  return utf8.decode(b).replaceAll("\0", "");
}

/**
 * The text esptool v5 `image-info FILE` prints, from its "Image size" line on (the first line,
 * "esptool vX.Y.Z", names the tool and is not part of the report). Byte-identical to esptool 5.3.1
 * for the vectors in test/fixtures/images. Throws EspOtaError (E_IMAGE_MAGIC, E_IMAGE_TRUNCATED)
 * where esptool fails with "not a valid image" / "End of file"; integrity failures are reported
 * in the text ("invalid"), as esptool does.
 */
export function formatImageInfo(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("formatImageInfo: expected a Uint8Array");
  if (bytes.length === 0)
    throw new EspOtaError("E_IMAGE_TRUNCATED", "Image is empty.", { offset: 0 });
  if (bytes[0] !== IMAGE_MAGIC) {
    throw new EspOtaError(
      "E_IMAGE_MAGIC",
      `This is not a valid image (invalid magic number: ${hx(bytes[0]!)}).`,
      { offset: 0 },
    );
  }
  const { image, problems } = parseImage(bytes);
  if (!image) {
    const p = problems[0]!;
    throw new EspOtaError(p.code, p.message, { offset: p.offset });
  }
  const h = image.header;
  const chip = image.chip;
  const name = chip?.displayName ?? "ESP";
  const lines: string[] = [];
  const title = (t: string) => lines.push(t, "=".repeat(t.length));

  lines.push(`Image size: ${bytes.length} bytes`);
  lines.push(`Detected image type: ${chip ? chip.displayName : `unknown (chip ID ${h.chipId})`}`);
  lines.push("");
  title(`${name} Image Header`);
  lines.push("Image version: 1");
  const entry = `0x${h.entryAddr.toString(16)}`;
  lines.push(h.entryAddr !== 0 ? `Entry point: ${entry.padStart(8)}` : "Entry point not set");
  lines.push(`Segments: ${image.segments.length}`);
  const size = FLASH_SIZE_NAMES[h.spiSize];
  lines.push(size ? `Flash size: ${size}` : `Warning: Invalid flash size (${hx(h.spiSize << 4)})`);
  const freq = chip?.flashFrequencies.find(([, v]) => v === h.spiSpeed)?.[0];
  lines.push(freq ? `Flash freq: ${freq}` : `Warning: Invalid flash frequency (${hx(h.spiSpeed)})`);
  const mode = FLASH_MODE_NAMES[h.spiMode];
  lines.push(mode ? `Flash mode: ${mode}` : `Warning: Invalid flash mode (${h.spiMode})`);
  lines.push("");

  title(`${name} Extended Image Header`);
  lines.push(`WP pin: ${hx(h.wpPin)}${h.wpPin === WP_PIN_DISABLED ? " (disabled)" : ""}`);
  const [d0, d1, d2] = h.spiPinDrv as [number, number, number];
  lines.push(
    `Flash pins drive settings: clk_drv: ${hx(d0 & 15)}, q_drv: ${hx(d0 >> 4)}, d_drv: ${hx(d1 & 15)}, cs0_drv: ${hx(d1 >> 4)}, hd_drv: ${hx(d2 & 15)}, wp_drv: ${hx(d2 >> 4)}`,
  );
  lines.push(`Chip ID: ${h.chipId} (${chip ? chip.displayName : "Unknown ID"})`);
  lines.push(
    `Minimal chip revision: ${revStr(h.minChipRevFull)}, (legacy min_rev = ${h.minChipRev})`,
  );
  lines.push(`Maximal chip revision: ${revStr(h.maxChipRevFull)}`);
  lines.push("");

  title("Segments Information");
  lines.push("Segment   Length   Load addr   File offs  Memory types");
  lines.push(
    `${"-".repeat(7)}  ${"-".repeat(7)}  ${"-".repeat(10)}  ${"-".repeat(10)}  ${"-".repeat(12)}`,
  );
  // cmds.py _print_image_info(): the descriptor is read from the first DROM-typed segment; a
  // bootloader descriptor from the last DRAM segment of at least 80 bytes.
  let appDescSeg: ImageSegment | undefined;
  let bootDescSeg: ImageSegment | undefined;
  image.segments.forEach((s, i) => {
    const types = chip ? memoryTypes(chip, s.loadAddr) : [];
    if (types.includes("DROM") && !appDescSeg) appDescSeg = s;
    else if (types.includes("DRAM") && s.length >= 80) bootDescSeg = s;
    lines.push(
      `${String(i).padStart(7)}  ${pyHex0(s.length, 7)}  ${pyHex0(s.loadAddr, 10)}  ${pyHex0(s.headerOffset, 10)}  ${types.join(", ")}`,
    );
  });
  lines.push("");

  title(`${name} Image Footer`);
  const ck = image.storedChecksum === image.computedChecksum;
  lines.push(
    `Checksum: ${pyHex0(image.storedChecksum, 4)} (${ck ? "valid" : `invalid - calculated ${pyHex0(image.computedChecksum, 4)}`})`,
  );
  if (h.hashAppended) {
    const valid = toHex(image.storedHash!) === toHex(image.computedHash!);
    lines.push(`Validation hash: ${toHex(image.computedHash!)} (${valid ? "valid" : "invalid"})`);
  }

  if (appDescSeg) {
    const s = appDescSeg;
    if (s.length >= APP_DESC_LEN && u32le(bytes, s.offset) === APP_DESC_MAGIC) {
      const b = bytes.subarray(s.offset, s.offset + APP_DESC_LEN);
      const f = (off: number, n: number) => pyString(b.subarray(off, off + n));
      const rev = (off: number) => {
        const v = u16le(b, off);
        return `${Math.floor(v / 100)}.${v % 100}`;
      };
      lines.push("");
      title("Application Information");
      lines.push(`Project name: ${f(...DESC.projectName)}`);
      lines.push(`App version: ${f(...DESC.version)}`);
      lines.push(`Compile time: ${f(...DESC.date)} ${f(...DESC.time)}`);
      lines.push(
        `ELF file SHA256: ${toHex(b.subarray(DESC.appElfSha256, DESC.appElfSha256 + 32))}`,
      );
      lines.push(`ESP-IDF: ${f(...DESC.idfVer)}`);
      lines.push(`Minimal eFuse block revision: ${rev(DESC.minEfuseBlkRevFull)}`);
      lines.push(`Maximal eFuse block revision: ${rev(DESC.maxEfuseBlkRevFull)}`);
      const mmu = b[DESC.mmuPageSize]!;
      if (mmu !== 0) lines.push(`MMU page size: ${Math.floor(2 ** mmu / 1024)} KB`);
      lines.push(`Secure version: ${u32le(b, DESC.secureVersion)}`);
    }
  } else if (bootDescSeg) {
    // esp_bootloader_desc_t (components/esp_bootloader_format): magic_byte 0x50, reserved[3],
    // version u32, idf_ver[32], date_time[24], reserved2[16] = 80 bytes.
    const b = bytes.subarray(bootDescSeg.offset, bootDescSeg.offset + 80);
    if (b[0] === 0x50) {
      lines.push("");
      title("Bootloader Information");
      lines.push(`Bootloader version: ${u32le(b, 4)}`);
      lines.push(`ESP-IDF: ${pyString(b.subarray(8, 40))}`);
      lines.push(`Compile time: ${pyString(b.subarray(40, 64))}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function checkUint(v: number, max: number, field: string): number {
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new TypeError(`${field}: expected an integer, got ${String(v)}`);
  }
  if (v < 0 || v > max) throw new RangeError(`${field}: ${v} is outside 0..${max}`);
  return v;
}

function bytesField(v: readonly number[], n: number, field: string): number[] {
  if (!Array.isArray(v) || v.length !== n) throw new RangeError(`${field}: expected ${n} bytes`);
  return v.map((x, i) => checkUint(x, 0xff, `${field}[${i}]`));
}

function padTo4(b: Uint8Array): Uint8Array {
  const r = b.length % 4;
  return r === 0 ? b : concat(b, new Uint8Array(4 - r));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
