/**
 * The ESP-IDF partition table: CSV text <-> the 0xC00-byte binary the bootloader reads at
 * CONFIG_PARTITION_TABLE_OFFSET (0x8000 by default).
 *
 * Byte-exact with ESP-IDF v6.0.2 `components/partition_table/gen_esp32part.py` (its __version__
 * 1.5): the CSV syntax, the placement of partitions with an empty offset, the binary layout, the
 * MD5 entry, the binary -> CSV text, and every check of its `verify()`. The oracle vectors in
 * test/fixtures/partitions/ were made by that script. Where this module is stricter (a label that
 * gen_esp32part would silently truncate, values that make its struct.pack crash, entries after
 * the MD5 entry, no end marker within 0xC00 bytes) the rule says so and why.
 *
 * Device-side facts are from ESP-IDF v6.0.2 `components/bootloader_support/include/
 * esp_flash_partitions.h` (layout, magic numbers), `bootloader_support/src/flash_partitions.c`
 * (`esp_partition_table_verify`, what the bootloader accepts) and `esp_partition/partition.c`
 * (`load_partitions`, `is_partition_encrypted`, what the app sees).
 *
 * Pure: bytes and strings in, plain objects out. The only environment access, `$VAR` expansion
 * in CSV lines, reads the `env` map the caller passes.
 */
import { createHash } from "node:crypto";
import { equalBytes, putU32le, toHex, u32le } from "../bytes.js";
import { type ErrorCode, type ErrorContext, EspOtaError } from "../errors.js";

/** Default CONFIG_PARTITION_TABLE_OFFSET. */
export const PARTITION_TABLE_OFFSET = 0x8000;
/** Bytes of table data; the rest of the 4 KB sector is left for a signature (gen_esp32part). */
export const PARTITION_TABLE_MAX_LEN = 0xc00;
/** The table occupies one flash sector; the first free offset is table offset + this. */
export const PARTITION_TABLE_SECTOR_SIZE = 0x1000;
export const PARTITION_ENTRY_SIZE = 32;
/**
 * 0xC00 / 32 = 96 slots, and an end marker must fit in them: 95 partitions, 94 when the MD5
 * entry takes a slot (gen_esp32part `to_binary` refuses a result of 0xC00 bytes or more).
 */
export const PARTITION_MAX_ENTRIES = 95;
/** The label field; esp_partition_t.label is char[17], so all 16 bytes reach the app. */
export const PARTITION_LABEL_MAX_BYTES = 16;
/** otadata holds two 4 KB sectors, one esp_ota_select_entry_t each (gen_esp32part verify). */
export const OTADATA_SIZE = 0x2000;
/** NVS needs at least 3 pages to be writable (gen_esp32part NVS_RW_MIN_PARTITION_SIZE). */
export const NVS_RW_MIN_SIZE = 0x3000;

export const PART_TYPE = {
  app: 0x00,
  data: 0x01,
  bootloader: 0x02,
  partition_table: 0x03,
} as const;

export const APP_SUBTYPE = {
  factory: 0x00,
  ota_0: 0x10,
  ota_1: 0x11,
  ota_2: 0x12,
  ota_3: 0x13,
  ota_4: 0x14,
  ota_5: 0x15,
  ota_6: 0x16,
  ota_7: 0x17,
  ota_8: 0x18,
  ota_9: 0x19,
  ota_10: 0x1a,
  ota_11: 0x1b,
  ota_12: 0x1c,
  ota_13: 0x1d,
  ota_14: 0x1e,
  ota_15: 0x1f,
  test: 0x20,
  tee_0: 0x30,
  tee_1: 0x31,
} as const;

export const DATA_SUBTYPE = {
  ota: 0x00,
  phy: 0x01,
  nvs: 0x02,
  coredump: 0x03,
  nvs_keys: 0x04,
  efuse: 0x05,
  undefined: 0x06,
  esphttpd: 0x80,
  fat: 0x81,
  spiffs: 0x82,
  littlefs: 0x83,
  tee_ota: 0x90,
} as const;

/** Bootloader partitions (type 0x02, ESP-IDF v5.4+). */
export const BOOTLOADER_SUBTYPE = { primary: 0x00, ota: 0x01, recovery: 0x02 } as const;
/** Partition-table partitions (type 0x03, ESP-IDF v5.4+). */
export const PARTITION_TABLE_SUBTYPE = { primary: 0x00, ota: 0x01 } as const;

/** Flag bits of the entry's last word (esp_flash_partitions.h PART_FLAG_*). */
export const PART_FLAG = { encrypted: 1 << 0, readonly: 1 << 1 } as const;

const OTA_SUBTYPE_MIN = APP_SUBTYPE.ota_0;
const OTA_SLOTS = 16;

export interface Partition {
  label: string;
  type: number;
  subtype: number;
  offset: number;
  size: number;
  encrypted: boolean;
  readonly: boolean;
}

export interface PartitionTableOptions {
  /** CONFIG_PARTITION_TABLE_OFFSET; default 0x8000. Partitions start at or after it + 0x1000. */
  tableOffset?: number;
  /** Flash size in bytes; when given, every partition must end within it (--flash-size). */
  flashSize?: number;
  /** Secure Boot V1: app partition sizes must be multiples of 64 KB (--secure v1). Default false. */
  secureBootV1?: boolean;
  /**
   * CONFIG_BOOTLOADER_OFFSET_IN_FLASH, needed only by `bootloader` type partitions
   * (--primary-bootloader-offset). No default: it differs per chip (0x1000 on ESP32, 0x0 later).
   */
  primaryBootloaderOffset?: number;
  /** Address of the recovery bootloader, needed by a bootloader/recovery partition. */
  recoveryBootloaderOffset?: number;
  /**
   * Decoding: recognise the EB EB MD5 entry. Default true; false is --disable-md5sum, under which
   * gen_esp32part reads an MD5 entry as a partition with bad magic.
   */
  md5?: boolean;
  /** Run the table checks (gen_esp32part verify()). Default true; false is --no-verify. */
  verify?: boolean;
  /** Variables for `$NAME` / `${NAME}` in CSV lines (gen_esp32part expands os.environ). Default none. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Receives gen_esp32part's warnings (a label that names another type, unknown flag bits). */
  onWarning?: (message: string) => void;
}

// ---------------------------------------------------------------------------------------------
// Names

const TYPE_NAMES: ReadonlyMap<string, number> = new Map<string, number>(Object.entries(PART_TYPE));
const SUBTYPE_NAMES: ReadonlyMap<number, ReadonlyMap<string, number>> = new Map<
  number,
  ReadonlyMap<string, number>
>([
  [PART_TYPE.app, new Map(Object.entries(APP_SUBTYPE))],
  [PART_TYPE.data, new Map(Object.entries(DATA_SUBTYPE))],
  [PART_TYPE.bootloader, new Map(Object.entries(BOOTLOADER_SUBTYPE))],
  [PART_TYPE.partition_table, new Map(Object.entries(PARTITION_TABLE_SUBTYPE))],
]);
const ALL_SUBTYPE_NAMES: ReadonlySet<string> = new Set(
  [...SUBTYPE_NAMES.values()].flatMap((m) => [...m.keys()]),
);

function nameOf(map: ReadonlyMap<string, number> | undefined, value: number): string {
  if (map) for (const [k, v] of map) if (v === value) return k;
  return String(value);
}

/** The name gen_esp32part prints for a type in CSV: its keyword, else the number in decimal. */
export function typeName(type: number): string {
  return nameOf(TYPE_NAMES, type);
}

/** The name gen_esp32part prints for a subtype of `type`: its keyword, else decimal. */
export function subtypeName(type: number, subtype: number): string {
  return nameOf(SUBTYPE_NAMES.get(type), subtype);
}

// ---------------------------------------------------------------------------------------------
// Queries

/** The first partition of `type` (and `subtype`, when given) in table order (esp_partition_find_first). */
export function findPartition(
  parts: readonly Partition[],
  type: number,
  subtype?: number,
): Partition | undefined {
  return parts.find((p) => p.type === type && (subtype === undefined || p.subtype === subtype));
}

/**
 * The OTA app slots the device counts: ota_0, ota_1, ... up to the first missing one, as
 * esp_ota_get_app_partition_count (esp_ota_ops.c) does. Slot i of the result is ota_i; the
 * bootloader maps otadata's sequence number to slot (seq - 1) % length.
 */
export function otaAppPartitions(parts: readonly Partition[]): Partition[] {
  const slots: Partition[] = [];
  for (let i = 0; i < OTA_SLOTS; i++) {
    const p = findPartition(parts, PART_TYPE.app, OTA_SUBTYPE_MIN + i);
    if (!p) break;
    slots.push(p);
  }
  return slots;
}

/**
 * Whether the partition's contents are encrypted once flash encryption is on. ESP-IDF
 * partition.c `is_partition_encrypted` forces it for app, bootloader and partition_table types
 * and for data/ota, data/tee_ota and data/nvs_keys; any other partition only with the
 * `encrypted` flag (esp32-facts §4.1). (CONFIG_NVS_COMPATIBLE_PRE_V4_3_ENCRYPTION_FLAG, which
 * ignores the flag on NVS, is not modelled.)
 */
export function isEncryptedPartition(p: Partition): boolean {
  if (p.encrypted) return true;
  if (p.type === PART_TYPE.app || p.type === PART_TYPE.bootloader) return true;
  if (p.type === PART_TYPE.partition_table) return true;
  return (
    p.type === PART_TYPE.data &&
    (p.subtype === DATA_SUBTYPE.ota ||
      p.subtype === DATA_SUBTYPE.tee_ota ||
      p.subtype === DATA_SUBTYPE.nvs_keys)
  );
}

// ---------------------------------------------------------------------------------------------
// Binary

const MAGIC = [0xaa, 0x50] as const;
const MD5_MAGIC = [0xeb, 0xeb] as const;
const utf8 = new TextEncoder();
// ignoreBOM: a label may legitimately start with U+FEFF (gen_esp32part's own tests carry one).
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function md5(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("md5").update(data).digest());
}

/**
 * The binary table: one 32-byte entry per partition, then (unless `md5: false`) the MD5 entry
 * `EB EB FF*14 md5(entries)`, then 0xFF up to 0xC00 bytes, so an all-0xFF end marker follows.
 * Throws E_PARTITION_RANGE / E_PARTITION_LABEL for a field that does not fit and
 * E_PARTITION_TOO_MANY past 95 (94 with MD5) entries. It does not run the table rules; use
 * validatePartitions (parsePartitionCsv already has).
 */
export function encodePartitionTable(
  parts: readonly Partition[],
  opts: { md5?: boolean } = {},
): Uint8Array {
  const withMd5 = opts.md5 ?? true;
  checkEncodable(parts);
  const max = withMd5 ? PARTITION_MAX_ENTRIES - 1 : PARTITION_MAX_ENTRIES;
  if (parts.length > max) {
    throw new EspOtaError(
      "E_PARTITION_TOO_MANY",
      `${parts.length} partitions do not fit in the ${hex(PARTITION_TABLE_MAX_LEN)}-byte table: at most ${max}` +
        (withMd5 ? " with the MD5 entry" : "") +
        ", since an end marker must follow",
      { count: parts.length, max },
    );
  }
  const out = new Uint8Array(PARTITION_TABLE_MAX_LEN).fill(0xff);
  parts.forEach((p, i) => {
    const o = i * PARTITION_ENTRY_SIZE;
    out[o] = MAGIC[0];
    out[o + 1] = MAGIC[1];
    out[o + 2] = p.type;
    out[o + 3] = p.subtype;
    putU32le(out, o + 4, p.offset);
    putU32le(out, o + 8, p.size);
    const label = utf8.encode(p.label);
    out.fill(0, o + 12, o + 28);
    out.set(label, o + 12);
    putU32le(
      out,
      o + 28,
      (p.encrypted ? PART_FLAG.encrypted : 0) | (p.readonly ? PART_FLAG.readonly : 0),
    );
  });
  if (withMd5) {
    const o = parts.length * PARTITION_ENTRY_SIZE;
    out[o] = MD5_MAGIC[0];
    out[o + 1] = MD5_MAGIC[1];
    out.set(md5(out.subarray(0, o)), o + 16);
  }
  return out;
}

/**
 * Reads a binary table (0xC00 bytes, or the whole 0x1000 sector, or just up to the end marker)
 * as gen_esp32part does, then runs the table rules unless `verify: false`.
 *
 * Stricter than gen_esp32part, to match what the device accepts: the end marker must lie within
 * the first 0xC00 bytes (the bootloader reads 96 slots), and there may be one MD5 entry and no
 * partition after it (the bootloader rejects a second one; the app's load_partitions stops at
 * it, so a later entry would be seen by the bootloader but not the app).
 *
 * `md5` is "ok" when an MD5 entry matched, "absent" when there was none (a table made with
 * --disable-md5sum; an app built with CONFIG_PARTITION_TABLE_MD5 refuses it).
 */
export function decodePartitionTable(
  bin: Uint8Array,
  opts: PartitionTableOptions = {},
): { partitions: Partition[]; md5: "ok" | "absent" } {
  if (!(bin instanceof Uint8Array))
    throw new TypeError("decodePartitionTable: bin must be a Uint8Array");
  checkOptions(opts);
  const useMd5 = opts.md5 ?? true;
  const partitions: Partition[] = [];
  let md5State: "ok" | "absent" = "absent";
  const limit = Math.min(bin.length, PARTITION_TABLE_MAX_LEN);
  for (let o = 0; o < limit; o += PARTITION_ENTRY_SIZE) {
    const where = { entry: o / PARTITION_ENTRY_SIZE, byteOffset: o };
    const e = bin.subarray(o, o + PARTITION_ENTRY_SIZE);
    if (e.length !== PARTITION_ENTRY_SIZE) {
      throw new EspOtaError(
        "E_PARTITION_BINARY_LENGTH",
        `partition table is ${bin.length} bytes, which ends inside entry ${where.entry} (byte ${hex(o)}): the length must be a multiple of 32 bytes`,
        { ...where, length: bin.length },
      );
    }
    if (e.every((b) => b === 0xff)) {
      finishDecode(partitions, opts);
      return { partitions, md5: md5State };
    }
    if (useMd5 && e[0] === MD5_MAGIC[0] && e[1] === MD5_MAGIC[1]) {
      if (md5State === "ok") {
        throw new EspOtaError(
          "E_PARTITION_MD5",
          `entry ${where.entry} (byte ${hex(o)}) is a second MD5 entry; the bootloader allows only one`,
          where,
        );
      }
      // gen_esp32part compares bytes 16..31 only (bytes 2..15 are 0xFF but unchecked, as in
      // the bootloader's esp_partition_table_verify).
      const computed = md5(bin.subarray(0, o));
      const stored = e.subarray(16, 32);
      if (!equalBytes(computed, stored)) {
        throw new EspOtaError(
          "E_PARTITION_MD5",
          `MD5 checksums don't match: the MD5 entry at byte ${hex(o)} holds ${toHex(stored)}, but the ${partitions.length} entries before it hash to ${toHex(computed)}`,
          { ...where, computed: toHex(computed), stored: toHex(stored) },
        );
      }
      md5State = "ok";
      continue;
    }
    if (md5State === "ok") {
      throw new EspOtaError(
        "E_PARTITION_MD5",
        `entry ${where.entry} (byte ${hex(o)}) follows the MD5 entry: the MD5 entry must be the last before the end marker (the app stops reading the table at it)`,
        where,
      );
    }
    partitions.push(decodeEntry(e, where, opts));
  }
  throw new EspOtaError(
    "E_PARTITION_NO_END",
    bin.length >= PARTITION_TABLE_MAX_LEN
      ? `partition table has no end-of-table marker (32 bytes of 0xFF) within its first ${hex(PARTITION_TABLE_MAX_LEN)} bytes`
      : `partition table is missing an end-of-table marker: its ${bin.length} bytes end after ${partitions.length} entries`,
    { length: bin.length, entries: partitions.length },
  );
}

function decodeEntry(
  e: Uint8Array,
  where: { entry: number; byteOffset: number },
  opts: PartitionTableOptions,
): Partition {
  if (e[0] !== MAGIC[0] || e[1] !== MAGIC[1]) {
    throw new EspOtaError(
      "E_PARTITION_MAGIC",
      `entry ${where.entry} (byte ${hex(where.byteOffset)}) has invalid magic bytes ${toHex(e.subarray(0, 2))} for a partition definition (expected aa50)`,
      { ...where, magic: toHex(e.subarray(0, 2)) },
    );
  }
  const rawLabel = e.subarray(12, 28);
  const nul = rawLabel.indexOf(0);
  let label: string;
  try {
    label = utf8Strict.decode(nul < 0 ? rawLabel : rawLabel.subarray(0, nul));
  } catch {
    throw new EspOtaError(
      "E_PARTITION_LABEL",
      `entry ${where.entry} (byte ${hex(where.byteOffset)}) has a label that is not UTF-8 text: ${toHex(rawLabel)}`,
      { ...where, label: toHex(rawLabel) },
    );
  }
  let flags = u32le(e, 28);
  const p: Partition = {
    label,
    type: e[2]!,
    subtype: e[3]!,
    offset: u32le(e, 4),
    size: u32le(e, 8),
    encrypted: (flags & PART_FLAG.encrypted) !== 0,
    readonly: (flags & PART_FLAG.readonly) !== 0,
  };
  flags = (flags & ~(PART_FLAG.encrypted | PART_FLAG.readonly)) >>> 0;
  if (flags !== 0) {
    // gen_esp32part warns and drops unknown bits; so does this decoder (they do not round-trip).
    opts.onWarning?.(
      `Partition definition "${label}" had unknown flag(s) 0x${flags.toString(16).padStart(8, "0")}. Newer binary format?`,
    );
  }
  // Bytes 12..27 after the NUL are not checked: gen_esp32part ignores them too.
  return p;
}

function finishDecode(parts: Partition[], opts: PartitionTableOptions): void {
  if (opts.verify ?? true) verifyTable(parts, opts);
  if (opts.flashSize !== undefined) checkFlashSize(parts, opts.flashSize);
}

// ---------------------------------------------------------------------------------------------
// CSV

/**
 * Parses gen_esp32part's CSV: `Name, Type, SubType, Offset, Size, Flags` per line; `#` starts a
 * comment line; fields are trimmed; missing trailing fields are empty and extra ones ignored;
 * `$NAME`/`${NAME}` are replaced from `opts.env`. Empty offsets are filled in (after the
 * previous partition, or after the table sector, aligned to 0x10000 for apps and 0x1000
 * otherwise); a negative size means "up to this end address". Then the table rules run
 * (unless `verify: false`) and, when `flashSize` is given, the flash-size check.
 */
export function parsePartitionCsv(text: string, opts: PartitionTableOptions = {}): Partition[] {
  if (typeof text !== "string") throw new TypeError("parsePartitionCsv: text must be a string");
  checkOptions(opts);
  const tableOffset = opts.tableOffset ?? PARTITION_TABLE_OFFSET;
  const rows: Row[] = [];
  pySplitLines(text).forEach((raw, i) => {
    const lineNo = i + 1;
    const line = pyStrip(expandVars(raw, opts.env ?? {}, lineNo));
    if (line.startsWith("#") || line.length === 0) return;
    rows.push(parseRow(line, lineNo, opts, tableOffset));
  });

  // gen_esp32part PartitionTable.from_csv "fix up missing offsets & negative sizes".
  let lastEnd = tableOffset + PARTITION_TABLE_SECTOR_SIZE;
  rows.forEach((r, i) => {
    if (isPrimaryBootloaderOrTable(r)) return; // fixed places, outside the app area
    if (r.offset !== null && r.offset < lastEnd) {
      const rule =
        i === 0
          ? `Partitions overlap. Partition sets offset ${hex(r.offset)}. But partition table occupies the whole sector ${hex(tableOffset)}. Use a free offset ${hex(lastEnd)} or higher.`
          : `Partitions overlap. Partition sets offset ${hex(r.offset)}. Previous partition ends ${hex(lastEnd)}`;
      throw new EspOtaError(
        "E_PARTITION_OVERLAP",
        `CSV Error at line ${r.line} (partition "${r.label}"): ${rule}`,
        {
          line: r.line,
          label: r.label,
          offset: r.offset,
          previousEnd: lastEnd,
        },
      );
    }
    if (r.offset === null) {
      const align = offsetAlignment(r.type);
      if (lastEnd % align !== 0) lastEnd += align - (lastEnd % align);
      r.offset = lastEnd;
    }
    if (r.size < 0) r.size = -r.size - r.offset;
    lastEnd = r.offset + r.size;
  });

  const parts: Partition[] = rows.map((r) => ({
    label: r.label,
    type: r.type,
    subtype: r.subtype,
    offset: r.offset!,
    size: r.size,
    encrypted: r.encrypted,
    readonly: r.readonly,
  }));
  const lines = rows.map((r) => r.line);
  checkEncodable(parts, lines);
  if (opts.verify ?? true) verifyTable(parts, opts, lines);
  if (opts.flashSize !== undefined) checkFlashSize(parts, opts.flashSize);
  return parts;
}

/**
 * gen_esp32part's binary -> CSV text: a two-line header, then `name,type,subtype,offset,size,flags`
 * with names where known (else decimal), the offset in hex, the size as N`M` or N`K` when a
 * whole multiple (else hex), and flags joined by `:`.
 */
export function partitionsToCsv(parts: readonly Partition[]): string {
  checkEncodable(parts);
  const rows = ["# ESP-IDF Partition Table", "# Name, Type, SubType, Offset, Size, Flags"];
  for (const p of parts) {
    const flags = [p.encrypted ? "encrypted" : "", p.readonly ? "readonly" : ""].filter(Boolean);
    rows.push(
      [
        p.label,
        typeName(p.type),
        subtypeName(p.type, p.subtype),
        hex(p.offset),
        csvSize(p.size),
        flags.join(":"),
      ].join(","),
    );
  }
  return `${rows.join("\n")}\n`;
}

function csvSize(n: number): string {
  if (n % 0x100000 === 0) return `${n / 0x100000}M`;
  if (n % 0x400 === 0) return `${n / 0x400}K`;
  return hex(n);
}

/** How gen_esp32part tells its input apart: binary when it starts with the entry magic AA 50. */
export function sniffPartitionTable(data: Uint8Array): "binary" | "csv" {
  if (!(data instanceof Uint8Array))
    throw new TypeError("sniffPartitionTable: data must be a Uint8Array");
  const b0 = data[0];
  const b1 = data[1];
  // Also EB EB (an empty table with its MD5 entry) and FF FF (an empty table without): neither
  // can start text (FF FE is the UTF-16 LE byte order mark, so FF FF is free), and
  // gen_esp32part would fail on them with a Unicode error.
  if (b0 === MAGIC[0] && b1 === MAGIC[1]) return "binary";
  if (b0 === MD5_MAGIC[0] && b1 === MD5_MAGIC[1]) return "binary";
  if (b0 === 0xff && b1 === 0xff) return "binary";
  return "csv";
}

/**
 * CSV file bytes to text as gen_esp32part reads them (get_encoding): a byte order mark selects
 * UTF-8, UTF-16 or UTF-32 and is dropped; otherwise the bytes must be UTF-8.
 */
export function decodeCsvText(data: Uint8Array): string {
  if (!(data instanceof Uint8Array))
    throw new TypeError("decodeCsvText: data must be a Uint8Array");
  const starts = (...bom: number[]) => bom.every((b, i) => data[i] === b);
  try {
    // UTF-32 LE's mark begins with UTF-16 LE's, so it is tested first.
    if (starts(0xff, 0xfe, 0x00, 0x00)) return decodeUtf32(data.subarray(4), true);
    if (starts(0x00, 0x00, 0xfe, 0xff)) return decodeUtf32(data.subarray(4), false);
    if (starts(0xef, 0xbb, 0xbf)) return utf8Strict.decode(data.subarray(3));
    if (starts(0xff, 0xfe))
      return new TextDecoder("utf-16le", { fatal: true }).decode(data.subarray(2));
    if (starts(0xfe, 0xff))
      return new TextDecoder("utf-16be", { fatal: true }).decode(data.subarray(2));
    return utf8Strict.decode(data);
  } catch (e) {
    throw new EspOtaError(
      "E_PARTITION_CSV_ENCODING",
      "the partition CSV is not valid UTF-8 text (nor UTF-16/UTF-32 with a byte order mark)",
      { length: data.length },
      e,
    );
  }
}

function decodeUtf32(b: Uint8Array, littleEndian: boolean): string {
  if (b.length % 4 !== 0) throw new RangeError("UTF-32 text length is not a multiple of 4");
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let s = "";
  for (let i = 0; i < b.length; i += 4) {
    const cp = view.getUint32(i, littleEndian);
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      throw new RangeError(`invalid code point ${cp}`);
    s += String.fromCodePoint(cp);
  }
  return s;
}

/**
 * A partition table file's bytes, binary or CSV (told apart by sniffPartitionTable), as
 * partitions. Both paths run the same checks.
 */
export function loadPartitionTable(
  bytesOrText: Uint8Array,
  opts: PartitionTableOptions = {},
): Partition[] {
  if (!(bytesOrText instanceof Uint8Array)) {
    throw new TypeError("loadPartitionTable: expected the file's bytes as a Uint8Array");
  }
  if (sniffPartitionTable(bytesOrText) === "binary")
    return decodePartitionTable(bytesOrText, opts).partitions;
  return parsePartitionCsv(decodeCsvText(bytesOrText), opts);
}

interface Row {
  line: number;
  label: string;
  type: number;
  subtype: number;
  offset: number | null;
  size: number;
  encrypted: boolean;
  readonly: boolean;
}

/** gen_esp32part PartitionDefinition.from_csv, field by field in its order. */
function parseRow(
  line: string,
  lineNo: number,
  opts: PartitionTableOptions,
  tableOffset: number,
): Row {
  const fields = `${line},,,,`.split(",").map(pyStrip);
  const label = fields[0]!;
  const fail = (rule: string, field: string, value?: string): never => {
    throw new EspOtaError(
      "E_PARTITION_CSV_SYNTAX",
      `CSV line ${lineNo} (partition "${label}"): ${rule}`,
      {
        line: lineNo,
        label,
        field,
        value,
      },
    );
  };
  const rangeCheck = (field: string, v: number) => {
    if (v < 0 || v > 0xff) {
      throw new EspOtaError(
        "E_PARTITION_RANGE",
        `CSV line ${lineNo} (partition "${label}"): ${field} ${v} is outside 0..255 (one byte in the binary entry)`,
        { line: lineNo, label, field, value: v },
      );
    }
  };

  const typeText = fields[1]!;
  if (typeText === "") fail("Field 'type' can't be left empty.", "type");
  const type =
    parseField(typeText, TYPE_NAMES) ??
    fail(keywordRule("type", typeText, TYPE_NAMES), "type", typeText);
  rangeCheck("type", type);

  const subtypeText = fields[2]!;
  let subtype: number;
  if (subtypeText === "") {
    if (type === PART_TYPE.app) fail("App partition cannot have an empty subtype", "subtype");
    subtype = DATA_SUBTYPE.undefined;
  } else {
    const names = SUBTYPE_NAMES.get(type);
    subtype =
      parseField(subtypeText, names) ??
      fail(keywordRule("subtype", subtypeText, names), "subtype", subtypeText);
  }
  rangeCheck("subtype", subtype);

  const needBootloaderOffset = (which: "primary" | "recovery"): number => {
    const v = which === "primary" ? opts.primaryBootloaderOffset : opts.recoveryBootloaderOffset;
    if (v === undefined) {
      throw new EspOtaError(
        "E_PARTITION_BOOTLOADER_OFFSET",
        `CSV line ${lineNo} (partition "${label}"): ${which === "primary" ? "Primary" : "Recovery"} bootloader offset is not defined. Please use --${which}-bootloader-offset`,
        { line: lineNo, label },
      );
    }
    return v;
  };

  // parse_address: the primary bootloader and table, and the recovery bootloader, sit at
  // addresses fixed by configuration; whatever the CSV says ("N/A" by convention) is ignored.
  const offsetText = fields[3]!;
  let offset: number | null;
  if (type === PART_TYPE.bootloader && subtype === BOOTLOADER_SUBTYPE.primary) {
    offset = needBootloaderOffset("primary");
  } else if (type === PART_TYPE.bootloader && subtype === BOOTLOADER_SUBTYPE.recovery) {
    offset = needBootloaderOffset("recovery");
  } else if (type === PART_TYPE.partition_table && subtype === PARTITION_TABLE_SUBTYPE.primary) {
    offset = tableOffset;
  } else if (offsetText === "") {
    offset = null;
  } else {
    offset = parseField(offsetText) ?? fail(numberRule("offset", offsetText), "offset", offsetText);
  }

  // parse_size: every bootloader partition is as big as the space before the table, every
  // partition_table partition one sector.
  const sizeText = fields[4]!;
  let size: number;
  if (type === PART_TYPE.bootloader) {
    size = tableOffset - needBootloaderOffset("primary");
  } else if (type === PART_TYPE.partition_table) {
    size = PARTITION_TABLE_SECTOR_SIZE;
  } else if (sizeText === "") {
    size = fail("Size field can't be empty", "size");
  } else {
    size = parseField(sizeText) ?? fail(numberRule("size", sizeText), "size", sizeText);
  }

  let encrypted = false;
  let readonly = false;
  // Flags are split on ':' and not trimmed again: "encrypted: readonly" is an unknown flag.
  for (const flag of fields[5]!.split(":")) {
    if (flag === "encrypted") encrypted = true;
    else if (flag === "readonly") readonly = true;
    else if (flag.length > 0) {
      fail(
        `CSV flag column contains unknown flag '${flag}' (known: encrypted, readonly)`,
        "flags",
        flag,
      );
    }
  }
  return { line: lineNo, label, type, subtype, offset, size, encrypted, readonly };
}

function keywordRule(
  field: string,
  text: string,
  names: ReadonlyMap<string, number> | undefined,
): string {
  if (!names) return numberRule(field, text);
  return `${field} value '${text}' is not valid. Known keywords: ${[...names.keys()].join(", ")} (or a number)`;
}

function numberRule(field: string, text: string): string {
  return `Invalid field value ${text}: ${field} must be a number (decimal or 0x hex, optionally with a K or M suffix)`;
}

/**
 * gen_esp32part parse_int: a K/M suffix (1024-based, repeatable: "1KK" is 1M) over Python's
 * int(v, 0), else a keyword, case-insensitively. Suffixes apply to numbers only; gen_esp32part
 * also applies them to keywords ("appK" = 0), which no sane table relies on.
 */
function parseField(text: string, names?: ReadonlyMap<string, number>): number | undefined {
  const n = parseSuffixed(text);
  if (n !== undefined) return n;
  return names?.get(text.toLowerCase());
}

function parseSuffixed(text: string): number | undefined {
  const last = text.slice(-1).toLowerCase();
  if (last === "k" || last === "m") {
    const n = parseSuffixed(text.slice(0, -1));
    return n === undefined ? undefined : n * (last === "k" ? 1024 : 1024 * 1024);
  }
  return pyInt(text);
}

// Python int(x, 0): optional sign, 0x/0o/0b prefixes, "_" between digits, no leading zeros on
// a non-zero decimal, surrounding whitespace allowed.
const PY_INT =
  /^([+-]?)(?:0[xX]((?:_?[0-9a-fA-F])+)|0[oO]((?:_?[0-7])+)|0[bB]((?:_?[01])+)|(0(?:_?0)*|[1-9](?:_?[0-9])*))$/;

function pyInt(text: string): number | undefined {
  const m = PY_INT.exec(pyStrip(text));
  if (!m) return undefined;
  const [, sign, hexDigits, octDigits, binDigits, decDigits] = m;
  const [digits, radix] =
    hexDigits !== undefined
      ? [hexDigits, 16]
      : octDigits !== undefined
        ? [octDigits, 8]
        : binDigits !== undefined
          ? [binDigits, 2]
          : [decDigits!, 10];
  const v = Number.parseInt(digits.replaceAll("_", ""), radix);
  return sign === "-" ? -v : v;
}

// Python str.isspace() characters; str.strip() and int() trim these, which JS trim() does not
// exactly match (JS trims U+FEFF, Python trims U+001C..U+001F and U+0085).
const PY_SPACE =
  "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");

function pyStrip(s: string): string {
  return s.replace(PY_STRIP, "");
}

/** Python str.splitlines(): every line boundary Python knows, no empty last line. */
function pySplitLines(s: string): string[] {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: \x1c-\x1e are Python line boundaries.
  const lines = s.split(/\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/);
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/**
 * gen_esp32part expand_vars: os.path.expandvars (`$NAME` or `${NAME}`, NAME of ASCII word
 * characters; unknown names stay as written), then an error if the line still starts with
 * `$NAME`.
 */
function expandVars(
  line: string,
  env: Readonly<Record<string, string | undefined>>,
  lineNo: number,
): string {
  let out = line;
  if (out.includes("$")) {
    const re = /\$(\w+|\{[^}]*\})/g;
    let i = 0;
    for (;;) {
      re.lastIndex = i;
      const m = re.exec(out);
      if (!m) break;
      let name = m[1]!;
      if (name.startsWith("{") && name.endsWith("}")) name = name.slice(1, -1);
      const value = Object.hasOwn(env, name) ? env[name] : undefined;
      if (typeof value !== "string") {
        i = m.index + m[0].length;
        continue;
      }
      const tail = out.slice(m.index + m[0].length);
      out = out.slice(0, m.index) + value;
      i = out.length;
      out += tail;
    }
  }
  const unknown = /^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(out);
  if (unknown) {
    throw new EspOtaError(
      "E_PARTITION_CSV_SYNTAX",
      `CSV line ${lineNo}: unknown variable '${unknown[1]}' (not set in the environment)`,
      { line: lineNo, variable: unknown[1] },
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Rules

function offsetAlignment(type: number): number {
  // gen_esp32part ALIGNMENT: apps sit on 64 KB MMU pages; everything else on 4 KB sectors.
  return type === PART_TYPE.app ? 0x10000 : 0x1000;
}

function isPrimaryBootloaderOrTable(p: { type: number; subtype: number }): boolean {
  return (
    (p.type === PART_TYPE.bootloader && p.subtype === BOOTLOADER_SUBTYPE.primary) ||
    (p.type === PART_TYPE.partition_table && p.subtype === PARTITION_TABLE_SUBTYPE.primary)
  );
}

/**
 * Every check gen_esp32part's verify() makes (plus the field-fit checks of
 * checkEncodable), and the flash-size check when `opts.flashSize` is given. Throws the first
 * failure as a coded EspOtaError naming the partition and the rule.
 */
export function validatePartitions(
  parts: readonly Partition[],
  opts: PartitionTableOptions = {},
): void {
  checkOptions(opts);
  checkEncodable(parts);
  if (parts.length > PARTITION_MAX_ENTRIES) {
    throw new EspOtaError(
      "E_PARTITION_TOO_MANY",
      `${parts.length} partitions do not fit in the table: at most ${PARTITION_MAX_ENTRIES} (94 with the MD5 entry)`,
      { count: parts.length },
    );
  }
  verifyTable(parts, opts);
  if (opts.flashSize !== undefined) checkFlashSize(parts, opts.flashSize);
}

/** Field-fit checks that make encoding possible; run on every path, --no-verify or not. */
function checkEncodable(parts: readonly Partition[], lines?: readonly number[]): void {
  if (!Array.isArray(parts))
    throw new TypeError("partitions must be an array of Partition objects");
  parts.forEach((p, i) => {
    if (typeof p !== "object" || p === null || typeof p.label !== "string") {
      throw new TypeError(`partition ${i}: expected an object with a string label`);
    }
    if (typeof p.encrypted !== "boolean" || typeof p.readonly !== "boolean") {
      throw new TypeError(`partition ${i} ("${p.label}"): encrypted and readonly must be booleans`);
    }
    const ctx = (extra: ErrorContext): ErrorContext => ({
      label: p.label,
      line: lines?.[i],
      ...extra,
    });
    const range = (field: string, v: unknown, max: number) => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
        throw new EspOtaError(
          "E_PARTITION_RANGE",
          `Partition ${p.label} invalid: ${field} ${typeof v === "number" ? hex(v) : String(v)} is outside 0..${hex(max)}${where(lines?.[i])}`,
          ctx({ field, value: typeof v === "number" ? v : String(v) }),
        );
      }
    };
    range("type", p.type, 0xff);
    range("subtype", p.subtype, 0xff);
    range("offset", p.offset, 0xffffffff);
    range("size", p.size, 0xffffffff);
    if (p.offset + p.size > 0x100000000) {
      throw new EspOtaError(
        "E_PARTITION_RANGE",
        `Partition ${p.label} invalid: it ends at ${hex(p.offset + p.size)}, beyond the 32-bit flash address space${where(lines?.[i])}`,
        ctx({ offset: p.offset, size: p.size }),
      );
    }
    const bytes = utf8.encode(p.label).length;
    // gen_esp32part packs the label with struct "16s", which silently truncates longer ones;
    // two labels could then collide on the device, so a long label is an error here.
    if (bytes > PARTITION_LABEL_MAX_BYTES || p.label.includes("\0")) {
      throw new EspOtaError(
        "E_PARTITION_LABEL",
        p.label.includes("\0")
          ? `Partition label ${JSON.stringify(p.label)} contains a NUL character, which would end it early${where(lines?.[i])}`
          : `Partition label "${p.label}" is ${bytes} bytes (UTF-8); the label field holds at most ${PARTITION_LABEL_MAX_BYTES}${where(lines?.[i])}`,
        ctx({ bytes }),
      );
    }
  });
}

function where(line: number | undefined): string {
  return line === undefined ? "" : ` (CSV line ${line})`;
}

/** gen_esp32part PartitionTable.verify(), check for check and in its order. */
function verifyTable(
  parts: readonly Partition[],
  opts: PartitionTableOptions,
  lines?: readonly number[],
): void {
  const tableOffset = opts.tableOffset ?? PARTITION_TABLE_OFFSET;
  const tableEnd = tableOffset + PARTITION_TABLE_SECTOR_SIZE;
  const ctx = (i: number, extra: ErrorContext = {}): ErrorContext => ({
    label: parts[i]!.label,
    line: lines?.[i],
    ...extra,
  });
  const invalid = (i: number, code: ErrorCode, rule: string, extra: ErrorContext = {}) =>
    new EspOtaError(
      code,
      `Partition ${parts[i]!.label} invalid: ${rule}${where(lines?.[i])}`,
      ctx(i, extra),
    );

  // PartitionDefinition.verify() per partition.
  parts.forEach((p, i) => {
    const align = offsetAlignment(p.type);
    if (p.offset % align !== 0) {
      throw invalid(
        i,
        "E_PARTITION_ALIGNMENT",
        `Offset ${hex(p.offset)} is not aligned to ${hex(align)}`,
        {
          offset: p.offset,
          alignment: align,
        },
      );
    }
    if (p.type === PART_TYPE.app) {
      // Secure Boot V1 appends its 68-byte signature at the very end of a 64 KB block; V2 and
      // no secure boot need only whole 4 KB erase sectors (gen_esp32part get_alignment_size_for_type).
      const sizeAlign = opts.secureBootV1 ? 0x10000 : 0x1000;
      if (p.size % sizeAlign !== 0) {
        throw invalid(
          i,
          "E_PARTITION_ALIGNMENT",
          `Size ${hex(p.size)} is not aligned to ${hex(sizeAlign)}${opts.secureBootV1 ? " (Secure Boot V1 app partitions)" : ""}`,
          { size: p.size, alignment: sizeAlign },
        );
      }
    }
    if (TYPE_NAMES.has(p.label) && TYPE_NAMES.get(p.label) !== p.type) {
      opts.onWarning?.(
        `Partition has name '${p.label}' which is a partition type, but does not match this partition's type (0x${p.type.toString(16)}). Mistake in partition table?`,
      );
    }
    if (ALL_SUBTYPE_NAMES.has(p.label) && SUBTYPE_NAMES.get(p.type)?.get(p.label) !== p.subtype) {
      opts.onWarning?.(
        `Partition has name '${p.label}' which is a partition subtype, but this partition has non-matching type 0x${p.type.toString(16)} and subtype 0x${p.subtype.toString(16)}. Mistake in partition table?`,
      );
    }
    if (
      p.type === PART_TYPE.data &&
      (p.subtype === DATA_SUBTYPE.ota || p.subtype === DATA_SUBTYPE.coredump) &&
      p.readonly
    ) {
      throw invalid(
        i,
        "E_PARTITION_READONLY",
        `'${p.label}' partition of type ${p.type} and subtype ${p.subtype} is always read-write and cannot be read-only`,
      );
    }
    if (
      p.type === PART_TYPE.data &&
      p.subtype === DATA_SUBTYPE.nvs &&
      p.size < NVS_RW_MIN_SIZE &&
      !p.readonly
    ) {
      throw invalid(
        i,
        "E_PARTITION_NVS_SIZE",
        `'${p.label}' partition of type ${p.type} and subtype ${p.subtype} of this size (${hex(p.size)}) must be flagged as 'readonly' (the size of read/write NVS has to be at least ${hex(NVS_RW_MIN_SIZE)})`,
        { size: p.size },
      );
    }
  });

  // Duplicate labels, all of them listed.
  const seen = new Map<string, number[]>();
  parts.forEach((p, i) => {
    seen.set(p.label, [...(seen.get(p.label) ?? []), i]);
  });
  const dups = [...seen.entries()].filter(([, idx]) => idx.length > 1);
  if (dups.length > 0) {
    const [label, idx] = dups[0]!;
    throw new EspOtaError(
      "E_PARTITION_DUPLICATE_LABEL",
      `Partition names must be unique: ${dups.map(([l, ix]) => `"${l}" is used ${ix.length} times${lines ? ` (CSV lines ${ix.map((k) => lines[k]).join(", ")})` : ""}`).join("; ")}`,
      { label, count: idx.length },
    );
  }

  // Overlaps, in offset order (a stable sort, as Python's sorted()).
  const order = parts.map((_, i) => i).sort((a, b) => parts[a]!.offset - parts[b]!.offset);
  let last: number | undefined;
  for (const i of order) {
    const p = parts[i]!;
    if (p.offset < tableEnd && !isPrimaryBootloaderOrTable(p)) {
      throw invalid(
        i,
        "E_PARTITION_OVERLAP",
        `Partition offset ${hex(p.offset)} is below ${hex(tableEnd)}, the end of the partition table sector at ${hex(tableOffset)}`,
        { offset: p.offset, tableOffset },
      );
    }
    if (last !== undefined) {
      const q = parts[last]!;
      if (p.offset < q.offset + q.size) {
        throw invalid(
          i,
          "E_PARTITION_OVERLAP",
          `Partition at ${hex(p.offset)} overlaps "${q.label}" at ${hex(q.offset)}-${hex(q.offset + q.size - 1)}`,
          { offset: p.offset, other: q.label },
        );
      }
    }
    last = i;
  }

  // One otadata of 0x2000 bytes, likewise one TEE otadata.
  for (const [subtype, what, name] of [
    [DATA_SUBTYPE.ota, "otadata", "ota"],
    [DATA_SUBTYPE.tee_ota, "TEE otadata", "tee_ota"],
  ] as const) {
    const idx = parts.flatMap((p, i) =>
      p.type === PART_TYPE.data && p.subtype === subtype ? [i] : [],
    );
    if (idx.length > 1) {
      throw new EspOtaError(
        "E_PARTITION_OTADATA",
        `Found multiple ${what} partitions (${idx.map((i) => `"${parts[i]!.label}"`).join(", ")}). Only one partition can be defined with type="data"(1) and subtype="${name}"(${subtype === 0 ? "0" : hex(subtype)}).`,
        { label: parts[idx[1]!]!.label, count: idx.length },
      );
    }
    if (idx.length === 1 && parts[idx[0]!]!.size !== OTADATA_SIZE) {
      const i = idx[0]!;
      throw invalid(
        i,
        "E_PARTITION_OTADATA",
        `${what} partition must have size = 0x2000 (it is ${hex(parts[i]!.size)})`,
        {
          size: parts[i]!.size,
        },
      );
    }
  }
}

function checkFlashSize(parts: readonly Partition[], flashSize: number): void {
  // gen_esp32part takes the end of the partition with the highest offset; after verify() that
  // is the highest end. Taking the highest end directly also holds under verify: false.
  let endIdx = -1;
  let end = 0;
  parts.forEach((p, i) => {
    if (p.offset + p.size > end) {
      end = p.offset + p.size;
      endIdx = i;
    }
  });
  if (end > flashSize) {
    const p = parts[endIdx]!;
    throw new EspOtaError(
      "E_PARTITION_FLASH_SIZE",
      `Partition ${p.label} ends at ${hex(end)} (${(end / 0x100000).toFixed(1)}MB), which does not fit in the flash size ${hex(flashSize)} (${mb(flashSize)})`,
      { label: p.label, end, flashSize },
    );
  }
}

function mb(n: number): string {
  return n % 0x100000 === 0 ? `${n / 0x100000}MB` : `${(n / 0x100000).toFixed(1)}MB`;
}

function checkOptions(opts: PartitionTableOptions): void {
  if (typeof opts !== "object" || opts === null) throw new TypeError("options must be an object");
  const u32 = (name: string, v: number | undefined) => {
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xffffffff)) {
      throw new RangeError(`${name} must be an integer in 0..0xffffffff, got ${v}`);
    }
  };
  u32("tableOffset", opts.tableOffset);
  u32("primaryBootloaderOffset", opts.primaryBootloaderOffset);
  u32("recoveryBootloaderOffset", opts.recoveryBootloaderOffset);
  if (
    opts.flashSize !== undefined &&
    (!Number.isSafeInteger(opts.flashSize) || opts.flashSize <= 0)
  ) {
    throw new RangeError(
      `flashSize must be a positive integer number of bytes, got ${opts.flashSize}`,
    );
  }
  const tableOffset = opts.tableOffset ?? PARTITION_TABLE_OFFSET;
  if (opts.primaryBootloaderOffset !== undefined && opts.primaryBootloaderOffset >= tableOffset) {
    throw new EspOtaError(
      "E_PARTITION_BOOTLOADER_OFFSET",
      `Unsupported configuration. Primary bootloader must be below partition table. Check --primary-bootloader-offset=${hex(opts.primaryBootloaderOffset)} and --offset=${hex(tableOffset)}`,
      { primaryBootloaderOffset: opts.primaryBootloaderOffset, tableOffset },
    );
  }
}

/** Python '0x%x' (negative numbers as -0x..). */
function hex(v: number): string {
  return v < 0 ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`;
}
