import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { partitionCodes } from "../../src/error-codes/partition.js";
import { EspOtaError } from "../../src/errors.js";
import {
  APP_SUBTYPE,
  DATA_SUBTYPE,
  decodeCsvText,
  decodePartitionTable,
  encodePartitionTable,
  findPartition,
  isEncryptedPartition,
  loadPartitionTable,
  otaAppPartitions,
  PART_TYPE,
  PARTITION_TABLE_MAX_LEN,
  PARTITION_TABLE_OFFSET,
  type Partition,
  type PartitionTableOptions,
  parsePartitionCsv,
  partitionsToCsv,
  sniffPartitionTable,
  subtypeName,
  typeName,
  validatePartitions,
} from "../../src/esp/partition-table.js";
import { fixture, fixtureJson, fixtureText } from "../helpers/fixtures.js";

// ---------------------------------------------------------------------------------------------
// Helpers

const MB = 1024 * 1024;
const PART_CODES = new Set(Object.keys(partitionCodes));

function part(
  label: string,
  type: number,
  subtype: number,
  offset: number,
  size: number,
  flags = "",
): Partition {
  return {
    label,
    type,
    subtype,
    offset,
    size,
    encrypted: flags.includes("encrypted"),
    readonly: flags.includes("readonly"),
  };
}

/** The coded error `fn` throws (fails the test when it returns or throws anything else). */
function codedError(fn: () => unknown): EspOtaError {
  try {
    fn();
  } catch (e) {
    if (e instanceof EspOtaError) return e;
    throw new Error(`expected an EspOtaError, got ${String(e)}`);
  }
  throw new Error("expected an EspOtaError, but it returned");
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

/** A valid table to mutate. */
const BRIEF = fixture("partitions/pt_brief.bin");

// ---------------------------------------------------------------------------------------------
// Oracle vectors (gen_esp32part.py, ESP-IDF v6.0.2; test/fixtures/partitions/commands.txt)

interface RawEntry {
  entry_offset: number;
  magic_hex: string;
  type: number;
  subtype: string;
  offset: string;
  size: string;
  label: string;
  label_raw_hex: string;
  flags: string;
}
interface VectorTable {
  csv: string;
  bin: string;
  options?: string;
  bin_sha256: string;
  csv_from_bin?: string;
  csv_from_bin_reencodes_to_identical_bin?: boolean;
  parsed: {
    length: number;
    entries: RawEntry[];
    md5_entry: null | {
      offset: number;
      md5_hex: string;
      computed_over_bytes: [number, number];
      matches: boolean;
    };
    end_marker_offset: number;
    bytes_after_entries_all_ff: boolean;
  };
}
const expected = fixtureJson<{
  tables: VectorTable[];
  negative: { csv: string; exit_code: number; stderr_last_line: string }[];
}>("partitions/expected.json");

describe("gen_esp32part vectors", () => {
  for (const t of expected.tables) {
    const md5On = t.options !== "--disable-md5sum";
    describe(`${t.csv} -> ${t.bin}`, () => {
      const bin = fixture(`partitions/${t.bin}`);
      const csv = fixtureText(`partitions/${t.csv}`);

      it("CSV -> binary is byte-exact", () => {
        // The oracle ran with --flash-size 4MB for the md5 tables; the check must pass too.
        const parts = parsePartitionCsv(csv, md5On ? { flashSize: 4 * MB } : {});
        const out = encodePartitionTable(parts, { md5: md5On });
        expect(out.length).toBe(PARTITION_TABLE_MAX_LEN);
        expect(toHex(out)).toBe(toHex(bin));
        expect(sha256(out)).toBe(t.bin_sha256);
      });

      it("binary decodes to the entries the oracle parsed", () => {
        const { partitions, md5: state } = decodePartitionTable(bin, { flashSize: 4 * MB });
        expect(state).toBe(t.parsed.md5_entry ? "ok" : "absent");
        expect(partitions).toEqual(
          t.parsed.entries.map((e) => ({
            label: e.label,
            type: e.type,
            subtype: Number(e.subtype),
            offset: Number(e.offset),
            size: Number(e.size),
            encrypted: (Number(e.flags) & 1) !== 0,
            readonly: (Number(e.flags) & 2) !== 0,
          })),
        );
        // And the raw layout: magic, label bytes, MD5 entry, end marker, 0xFF fill.
        for (const e of t.parsed.entries) {
          expect(toHex(bin.subarray(e.entry_offset, e.entry_offset + 2))).toBe(e.magic_hex);
          expect(toHex(bin.subarray(e.entry_offset + 12, e.entry_offset + 28))).toBe(
            e.label_raw_hex,
          );
        }
        const m = t.parsed.md5_entry;
        if (m) {
          expect(toHex(bin.subarray(m.offset, m.offset + 16))).toBe(`ebeb${"ff".repeat(14)}`);
          expect(toHex(bin.subarray(m.offset + 16, m.offset + 32))).toBe(m.md5_hex);
          expect(md5(bin.subarray(...m.computed_over_bytes))).toBe(m.md5_hex);
        }
        expect(bin.subarray(t.parsed.end_marker_offset).every((b) => b === 0xff)).toBe(true);
      });

      if (t.csv_from_bin) {
        const roundtrip = fixtureText(`partitions/${t.csv_from_bin}`);
        it("binary -> CSV is gen_esp32part's text, byte for byte", () => {
          expect(partitionsToCsv(decodePartitionTable(bin).partitions)).toBe(roundtrip);
        });
        it("its CSV re-encodes to the identical binary", () => {
          expect(t.csv_from_bin_reencodes_to_identical_bin).toBe(true);
          expect(toHex(encodePartitionTable(parsePartitionCsv(roundtrip)))).toBe(toHex(bin));
        });
      }

      it("loadPartitionTable gives the same partitions from the CSV and the binary", () => {
        const fromCsv = loadPartitionTable(new TextEncoder().encode(csv));
        expect(loadPartitionTable(bin)).toEqual(fromCsv);
      });
    });
  }

  it("--disable-md5sum reading: an MD5 entry is then a bad-magic partition, as in gen_esp32part", () => {
    expect(decodePartitionTable(fixture("partitions/pt_brief.nomd5.bin"), { md5: false }).md5).toBe(
      "absent",
    );
    expect(codedError(() => decodePartitionTable(BRIEF, { md5: false })).code).toBe(
      "E_PARTITION_MAGIC",
    );
  });

  it("the same table bytes in the other fixture sets decode too (flash_encryption/, rom_protocol/)", () => {
    for (const f of ["flash_encryption/pt_partition_table.bin", "rom_protocol/pt_brief.bin"]) {
      expect(decodePartitionTable(fixture(f)).partitions).toEqual(
        decodePartitionTable(BRIEF).partitions,
      );
    }
  });

  const codeFor: Record<string, string> = {
    "pt_bad_overlap.csv": "E_PARTITION_OVERLAP",
    "pt_bad_otadata_size.csv": "E_PARTITION_OTADATA",
  };
  for (const n of expected.negative) {
    it(`${n.csv} fails with gen_esp32part's rule: ${n.stderr_last_line}`, () => {
      expect(n.exit_code).toBe(2);
      const e = codedError(() => parsePartitionCsv(fixtureText(`partitions/${n.csv}`)));
      expect(e.code).toBe(codeFor[n.csv]);
      // Our message carries gen_esp32part's wording (minus its "CSV Error at line N: " prefix,
      // which ours keeps but with the partition named), and names the partition.
      expect(e.message).toContain(n.stderr_last_line.replace(/^CSV Error at line \d+: /, ""));
      expect(e.message).toContain("otadata");
    });
  }
});

// ---------------------------------------------------------------------------------------------
// CSV syntax

interface Ok {
  name: string;
  csv: string;
  opts?: PartitionTableOptions;
  /** [label, type, subtype, offset, size, flags?] */
  want: [string, number, number, number, number, string?][];
}

const NVS = "nvs, data, nvs, 0x9000, 0x4000\n";
const okRows: Ok[] = [
  {
    name: "comments, blank lines, surrounding spaces and tabs, missing trailing fields",
    csv: "# Name, Type\n\n   \n\tnvs ,\tdata , nvs,0x9000 , 0x4000\n  # indented comment\nf,app,factory,0x10000,1M",
    want: [
      ["nvs", 1, 2, 0x9000, 0x4000],
      ["f", 0, 0, 0x10000, MB],
    ],
  },
  {
    name: "fields after Flags are ignored",
    csv: "nvs,data,nvs,0x9000,0x4000,,whatever,else",
    want: [["nvs", 1, 2, 0x9000, 0x4000]],
  },
  {
    name: "numbers: K/M (either case), hex, decimal, octal, binary, '_' separators, + sign, inner space",
    csv: [
      "a,data,nvs,36K,16k",
      "b,data,0x99,0XD000,8192",
      "c,data,spiffs,0o200000,0b1_0000_0000_0000",
      "d,data,fat,0x4_1000,+0x1000",
      "e,data,fat,0x42000,1 K",
      "f,data,fat,0x43000,1KK",
    ].join("\n"),
    want: [
      ["a", 1, 2, 0x9000, 0x4000],
      ["b", 1, 0x99, 0xd000, 0x2000],
      ["c", 1, 0x82, 0x10000, 0x1000],
      ["d", 1, 0x81, 0x41000, 0x1000],
      ["e", 1, 0x81, 0x42000, 0x400],
      ["f", 1, 0x81, 0x43000, MB],
    ],
  },
  {
    name: "type and subtype names in any case; numbers work as well",
    csv: "nvs,DATA,NVS,0x9000,0x4000\no,App,OTA_15,0x10000,64K\nx,0x40,0x99,0x20000,4K\ny,64,7,0x21000,4K",
    want: [
      ["nvs", 1, 2, 0x9000, 0x4000],
      ["o", 0, 0x1f, 0x10000, 0x10000],
      ["x", 0x40, 0x99, 0x20000, 0x1000],
      ["y", 0x40, 7, 0x21000, 0x1000],
    ],
  },
  {
    name: "an empty subtype is data/undefined (0x06), for data and custom types",
    csv: "s,data,,0x9000,4K\nt,0x40,,0xa000,4K",
    want: [
      ["s", 1, 6, 0x9000, 0x1000],
      ["t", 0x40, 6, 0xa000, 0x1000],
    ],
  },
  {
    // ESP-IDF's own test_default_offsets (components/partition_table/test_gen_esp32part_host).
    name: "empty offsets follow the previous partition, apps aligned to 64 KB",
    csv: "first, app, factory,, 1M\nsecond, data, 0x15,, 1M\nminidata, data, 0x40,, 32K\notherapp, app, factory,, 1M",
    want: [
      ["first", 0, 0, 0x10000, MB],
      ["second", 1, 0x15, 0x110000, MB],
      ["minidata", 1, 0x40, 0x210000, 0x8000],
      ["otherapp", 0, 0, 0x220000, MB],
    ],
  },
  {
    name: "the first free offset is table offset + 0x1000",
    csv: "nvs,data,nvs,,0x4000\nf,app,factory,,1M",
    opts: { tableOffset: 0x10000 },
    want: [
      ["nvs", 1, 2, 0x11000, 0x4000],
      ["f", 0, 0, 0x20000, MB],
    ],
  },
  {
    // ESP-IDF test_negative_size_to_offset.
    name: "a negative size is the end address",
    csv: "first, app, factory, 0x10000, -2M\nsecond, data, 0x15, , 1M",
    want: [
      ["first", 0, 0, 0x10000, 0x200000 - 0x10000],
      ["second", 1, 0x15, 0x200000, MB],
    ],
  },
  {
    name: "flags: encrypted, readonly, both (in any order, repeated), trailing colon",
    csv: [
      "a,data,nvs_keys,0x9000,4K,encrypted",
      "b,data,nvs,0xa000,4K,readonly",
      "c,data,fat,0xb000,4K,readonly:encrypted:readonly",
      "d,data,fat,0xc000,4K,encrypted:",
    ].join("\n"),
    want: [
      ["a", 1, 4, 0x9000, 0x1000, "encrypted"],
      ["b", 1, 2, 0xa000, 0x1000, "readonly"],
      ["c", 1, 0x81, 0xb000, 0x1000, "encrypted readonly"],
      ["d", 1, 0x81, 0xc000, 0x1000, "encrypted"],
    ],
  },
  {
    name: "$VAR and $" + "{VAR} expand from env; unknown ones inside a line stay as written",
    // The braces are CSV text for gen_esp32part's expandvars, not a template literal.
    csv: "n$X,data,nvs,$OFF,$" + "{SIZE}\nm,data,fat,,4K",
    opts: { env: { OFF: "0x9000", SIZE: "16K" } },
    want: [
      ["n$X", 1, 2, 0x9000, 0x4000],
      ["m", 1, 0x81, 0xd000, 0x1000],
    ],
  },
  {
    name: "CRLF, CR and Python's other line breaks (\\x1c, \\x85, U+2028) split lines",
    csv: "a,data,fat,0x9000,4K\r\nb,data,fat,,4K\rc,data,fat,,4K\x1cd,data,fat,,4K\x85e,data,fat,,4K\u2028f,data,fat,,4K\r\n",
    want: ["a", "b", "c", "d", "e", "f"].map((l, i) => [l, 1, 0x81, 0x9000 + i * 0x1000, 0x1000]),
  },
  {
    name: "labels: 16 bytes fit with no NUL, UTF-8 counts bytes, an empty label is allowed",
    csv: "0123456789abcdef,data,fat,0x9000,4K\nphy_инит_,data,phy,,4K\n,data,fat,,4K",
    want: [
      ["0123456789abcdef", 1, 0x81, 0x9000, 0x1000],
      ["phy_инит_", 1, 1, 0xa000, 0x1000],
      ["", 1, 0x81, 0xb000, 0x1000],
    ],
  },
  {
    name: "bootloader and partition_table rows: fixed places from the options, N/A ignored",
    csv: [
      "bootloader, bootloader, primary, N/A, N/A",
      "partition_table, partition_table, primary, N/A, N/A",
      "nvs, data, nvs, , 0x4000",
      "factory, app, factory, , 1M",
      "bl_ota, bootloader, ota, , N/A",
      "pt_ota, partition_table, ota, , N/A",
      "recovery, bootloader, recovery, N/A, N/A",
    ].join("\n"),
    opts: { primaryBootloaderOffset: 0x1000, recoveryBootloaderOffset: 0x300000 },
    // Offsets and the binary checked against gen_esp32part.py v6.0.2 with
    // --primary-bootloader-offset 0x1000 --recovery-bootloader-offset 0x300000.
    want: [
      ["bootloader", 2, 0, 0x1000, 0x7000],
      ["partition_table", 3, 0, 0x8000, 0x1000],
      ["nvs", 1, 2, 0x9000, 0x4000],
      ["factory", 0, 0, 0x10000, MB],
      ["bl_ota", 2, 1, 0x110000, 0x7000],
      ["pt_ota", 3, 1, 0x117000, 0x1000],
      ["recovery", 2, 2, 0x300000, 0x7000],
    ],
  },
];

describe("parsePartitionCsv: syntax", () => {
  it.each(okRows)("$name", ({ csv, opts, want }) => {
    expect(parsePartitionCsv(csv, opts)).toEqual(
      want.map(([l, t, s, o, z, f]) => part(l, t, s, o, z, f)),
    );
  });

  it("bootloader partitions print back with their names", () => {
    const parts = parsePartitionCsv(okRows.at(-1)!.csv, okRows.at(-1)!.opts);
    expect(partitionsToCsv(parts).split("\n").slice(2, 4)).toEqual([
      "bootloader,bootloader,primary,0x1000,28K,",
      "partition_table,partition_table,primary,0x8000,4K,",
    ]);
  });
});

interface Bad {
  name: string;
  csv: string;
  opts?: PartitionTableOptions;
  code: string;
  /** Text the message must contain (the rule, and the partition or line). */
  has: string[];
}

const badRows: Bad[] = [
  // Syntax
  {
    name: "empty type",
    csv: "x,,nvs,0x9000,0x4000",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["line 1", '"x"', "type"],
  },
  { name: "a label alone", csv: "ihavenotype,", code: "E_PARTITION_CSV_SYNTAX", has: ["type"] },
  {
    name: "unknown type name",
    csv: "x,dta,nvs,0x9000,0x4000",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["'dta'", "app"],
  },
  {
    name: "unknown subtype name",
    csv: "x,data,nvss,0x9000,0x4000",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["'nvss'", "spiffs"],
  },
  {
    name: "subtype name of another type",
    csv: "x,app,nvs,,1M",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["'nvs'"],
  },
  {
    name: "subtype name on a custom type",
    csv: "x,0x40,nvs,0x9000,4K",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["nvs", "number"],
  },
  {
    name: "app without subtype",
    csv: "x,app,,,1M",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["App partition cannot have an empty subtype"],
  },
  {
    name: "empty size",
    csv: "x,data,nvs,0x9000,",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["Size field can't be empty"],
  },
  {
    name: "size not a number",
    csv: "x,data,nvs,0x9000,1e4",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["1e4", "size"],
  },
  {
    name: "offset not a number",
    csv: "x,data,nvs,0x9G00,4K",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["0x9G00", "offset"],
  },
  {
    name: "decimal with a leading zero (Python int(x, 0))",
    csv: "x,data,nvs,09000,4K",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["09000"],
  },
  {
    name: "keyword with a K suffix",
    csv: "x,appk,factory,,1M",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["'appk'"],
  },
  {
    name: "unknown flag",
    csv: "x,data,nvs,0x9000,0x4000,secret",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["unknown flag 'secret'"],
  },
  {
    name: "flags are case-sensitive",
    csv: "x,data,nvs,0x9000,0x4000,Encrypted",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["'Encrypted'"],
  },
  {
    name: "a space after ':' is part of the flag",
    csv: "x,data,nvs,0x9000,0x4000,encrypted: readonly",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["' readonly'"],
  },
  {
    name: "a line starting with an unknown variable",
    csv: "$NOPE,data,nvs,0x9000,0x4000",
    code: "E_PARTITION_CSV_SYNTAX",
    has: ["unknown variable 'NOPE'", "line 1"],
  },
  // Bootloader offsets
  {
    name: "bootloader partition without --primary-bootloader-offset",
    csv: "bl,bootloader,primary,N/A,N/A",
    code: "E_PARTITION_BOOTLOADER_OFFSET",
    has: ["Primary bootloader offset is not defined", '"bl"'],
  },
  {
    name: "recovery bootloader without its offset",
    csv: "r,bootloader,recovery,N/A,N/A",
    opts: { primaryBootloaderOffset: 0x1000 },
    code: "E_PARTITION_BOOTLOADER_OFFSET",
    has: ["Recovery bootloader offset"],
  },
  {
    name: "bootloader offset not below the table",
    csv: NVS,
    opts: { primaryBootloaderOffset: 0x8000 },
    code: "E_PARTITION_BOOTLOADER_OFFSET",
    has: ["must be below partition table"],
  },
  // Field ranges
  {
    name: "type above 255",
    csv: "x,256,0,0x9000,4K",
    code: "E_PARTITION_RANGE",
    has: ["type 256", "0..255"],
  },
  {
    name: "negative subtype",
    csv: "x,data,-1,0x9000,4K",
    code: "E_PARTITION_RANGE",
    has: ["subtype -1"],
  },
  {
    name: "size above 32 bits",
    csv: "x,data,fat,0x9000,0x100000000",
    code: "E_PARTITION_RANGE",
    has: ["Partition x", "size 0x100000000"],
  },
  {
    name: "end beyond 4 GB",
    csv: "x,data,fat,0x10000,0xffffffff",
    code: "E_PARTITION_RANGE",
    has: ["Partition x", "ends at 0x10000ffff"],
  },
  {
    name: "negative size before the offset",
    csv: "x,data,fat,0x200000,-0x100000",
    code: "E_PARTITION_RANGE",
    has: ["Partition x", "size -0x100000"],
  },
  // Labels
  {
    name: "label of 17 bytes",
    csv: "0123456789abcdefg,data,fat,0x9000,4K",
    code: "E_PARTITION_LABEL",
    has: ['"0123456789abcdefg" is 17 bytes', "16"],
  },
  {
    name: "label of 9 characters but 18 UTF-8 bytes",
    csv: "ééééééééé,data,fat,0x9000,4K",
    code: "E_PARTITION_LABEL",
    has: ["18 bytes"],
  },
  // Alignment
  {
    name: "data offset not on 4 KB",
    csv: "nvs,data,nvs,0x9420,0x6000",
    code: "E_PARTITION_ALIGNMENT",
    has: ["Partition nvs invalid", "Offset 0x9420 is not aligned to 0x1000"],
  },
  {
    name: "app offset not on 64 KB",
    csv: "app0,app,factory,0x18000,1M",
    code: "E_PARTITION_ALIGNMENT",
    has: ["Partition app0 invalid", "Offset 0x18000 is not aligned to 0x10000"],
  },
  {
    name: "app size not whole 4 KB",
    csv: "ota_0,app,ota_0,,0x100800",
    code: "E_PARTITION_ALIGNMENT",
    has: ["Partition ota_0 invalid", "Size 0x100800 is not aligned to 0x1000"],
  },
  {
    name: "Secure Boot V1: app size not whole 64 KB",
    csv: "ota_0,app,ota_0,,0x101000",
    opts: { secureBootV1: true },
    code: "E_PARTITION_ALIGNMENT",
    has: ["Size 0x101000 is not aligned to 0x10000", "Secure Boot V1"],
  },
  // Overlaps
  {
    name: "first partition inside the table sector",
    csv: "nvs,data,nvs,0x0000,0x6000\nphy,data,phy,,4K",
    code: "E_PARTITION_OVERLAP",
    has: [
      "line 1",
      '"nvs"',
      "But partition table occupies the whole sector 0x8000. Use a free offset 0x9000 or higher.",
    ],
  },
  {
    name: "a later partition before the previous one's end",
    csv: "nvs,data,nvs,0x9000,0x6000\notadata,data,ota,0xd000,0x2000",
    code: "E_PARTITION_OVERLAP",
    has: ["line 2", '"otadata"', "Previous partition ends 0xf000"],
  },
  {
    name: "a table moved onto fixed offsets",
    csv: NVS,
    opts: { tableOffset: 0x9000 },
    code: "E_PARTITION_OVERLAP",
    has: ["0x9000", "0xa000"],
  },
  // otadata
  {
    name: "otadata not 0x2000",
    csv: "otadata,data,ota,0x9000,0x3000",
    code: "E_PARTITION_OTADATA",
    has: ["Partition otadata invalid", "otadata partition must have size = 0x2000", "0x3000"],
  },
  {
    name: "two otadata",
    csv: "od1,data,ota,,0x2000\nod2,data,ota,,0x2000",
    code: "E_PARTITION_OTADATA",
    has: ["Found multiple otadata partitions", '"od1", "od2"'],
  },
  {
    name: "TEE otadata not 0x2000",
    csv: "t,data,tee_ota,,0x1000",
    code: "E_PARTITION_OTADATA",
    has: ["Partition t invalid", "TEE otadata partition must have size = 0x2000"],
  },
  {
    name: "two TEE otadata",
    csv: "t1,data,tee_ota,,0x2000\nt2,data,tee_ota,,0x2000",
    code: "E_PARTITION_OTADATA",
    has: ["Found multiple TEE otadata partitions"],
  },
  // readonly, NVS
  {
    name: "readonly otadata",
    csv: "otadata,data,ota,,0x2000,readonly",
    code: "E_PARTITION_READONLY",
    has: ["Partition otadata invalid", "cannot be read-only"],
  },
  {
    name: "readonly coredump",
    csv: "cd,data,coredump,,64K,readonly",
    code: "E_PARTITION_READONLY",
    has: ["Partition cd invalid", "always read-write"],
  },
  {
    name: "read/write NVS below 0x3000",
    csv: "nvs,data,nvs,,0x2000",
    code: "E_PARTITION_NVS_SIZE",
    has: ["Partition nvs invalid", "(0x2000) must be flagged as 'readonly'", "at least 0x3000"],
  },
  // Labels unique
  {
    name: "duplicate labels",
    csv: "first, app, factory, 0x100000, 1M\nfirst, app, ota_0, 0x200000, 1M",
    code: "E_PARTITION_DUPLICATE_LABEL",
    has: ["Partition names must be unique", '"first" is used 2 times', "lines 1, 2"],
  },
  // Flash size
  {
    name: "partitions beyond --flash-size",
    csv: "factory, app, factory, 0x10000, 20M",
    opts: { flashSize: 16 * MB },
    code: "E_PARTITION_FLASH_SIZE",
    has: ["Partition factory", "0x1410000", "16MB"],
  },
];

describe("parsePartitionCsv: every rule fails with its code, naming the partition", () => {
  it.each(badRows)("$name -> $code", ({ csv, opts, code, has }) => {
    const e = codedError(() => parsePartitionCsv(csv, opts));
    expect(e.code).toBe(code);
    for (const h of has) expect(e.message).toContain(h);
  });

  it("the rules that pass right at their limits", () => {
    const ok = (csv: string, opts?: PartitionTableOptions) =>
      expect(() => parsePartitionCsv(csv, opts)).not.toThrow();
    ok("nvs,data,nvs,,0x3000"); // r/w NVS minimum
    ok("nvs,data,nvs,,0x1000,readonly"); // read-only NVS may be one sector
    ok("f,app,factory,,0x150000", { secureBootV1: true }); // 64 KB multiple
    ok("f,app,factory,,0x101000"); // 4 KB multiple without SB V1
    ok("f,app,factory,,0x3f0000", { flashSize: 4 * MB }); // ends exactly at 4 MB
    ok("nvs,data,nvs,0x9000,0x4000", { tableOffset: 0x8000 }); // right after the table sector
  });

  it("verify: false skips the table rules, not syntax, ranges or --flash-size", () => {
    const noVerify = { verify: false };
    expect(parsePartitionCsv("nvs,data,nvs,0x9400,0x1000", noVerify)[0]!.offset).toBe(0x9400);
    expect(codedError(() => parsePartitionCsv("x,dta,nvs,0x9000,4K", noVerify)).code).toBe(
      "E_PARTITION_CSV_SYNTAX",
    );
    expect(codedError(() => parsePartitionCsv("x,256,0,0x9000,4K", noVerify)).code).toBe(
      "E_PARTITION_RANGE",
    );
    // The placement pass still refuses an offset below the previous end (it runs in from_csv).
    expect(
      codedError(() => parsePartitionCsv("a,data,fat,0x9000,8K\nb,data,fat,0xa000,4K", noVerify))
        .code,
    ).toBe("E_PARTITION_OVERLAP");
    expect(
      codedError(() =>
        parsePartitionCsv("f,app,factory,0x10000,4M", { ...noVerify, flashSize: 4 * MB }),
      ).code,
    ).toBe("E_PARTITION_FLASH_SIZE");
  });

  it("warns, as gen_esp32part does, when a label names another type or subtype", () => {
    const warnings: string[] = [];
    parsePartitionCsv("app, 1, 2, 36K, 1M\nota_0, app, ota_1, , 1M\nnvs, data, nvs, , 16K", {
      onWarning: (m) => warnings.push(m),
    });
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain("'app' which is a partition type");
    expect(warnings[1]).toContain("'ota_0' which is a partition subtype");
  });
});

// ---------------------------------------------------------------------------------------------
// validatePartitions on objects (the checks that a CSV's placement pass would catch first)

describe("validatePartitions", () => {
  const good = decodePartitionTable(BRIEF).partitions;

  it("accepts the vector table", () => {
    expect(() => validatePartitions(good, { flashSize: 4 * MB })).not.toThrow();
  });

  it.each([
    {
      name: "overlap found in offset order, whatever the table order",
      parts: [part("b", 0, 0x10, 0x20000, 0x10000), part("a", 0, 0, 0x10000, 0x20000)],
      code: "E_PARTITION_OVERLAP",
      has: ["Partition b invalid", 'overlaps "a" at 0x10000-0x2ffff'],
    },
    {
      name: "a partition below the table sector",
      parts: [part("nvs", 1, 2, 0x4000, 0x4000)],
      code: "E_PARTITION_OVERLAP",
      has: ["Partition nvs invalid", "0x4000 is below 0x9000"],
    },
    {
      name: "a label with a NUL",
      parts: [part("a\0b", 1, 0x81, 0x9000, 0x1000)],
      code: "E_PARTITION_LABEL",
      has: ["NUL"],
    },
    {
      name: "a non-integer size",
      parts: [part("a", 1, 0x81, 0x9000, 1.5)],
      code: "E_PARTITION_RANGE",
      has: ["Partition a", "size"],
    },
    {
      name: "96 partitions",
      parts: Array.from({ length: 96 }, (_, i) =>
        part(`p${i}`, 1, 0x81, 0x9000 + i * 0x1000, 0x1000),
      ),
      code: "E_PARTITION_TOO_MANY",
      has: ["96 partitions", "95"],
    },
  ])("$name -> $code", ({ parts, code, has }) => {
    const e = codedError(() => validatePartitions(parts));
    expect(e.code).toBe(code);
    for (const h of has) expect(e.message).toContain(h);
  });

  it("the primary bootloader and table may sit below the table end", () => {
    expect(() =>
      validatePartitions([
        part("bl", 2, 0, 0x1000, 0x7000),
        part("pt", 3, 0, 0x8000, 0x1000),
        part("n", 1, 2, 0x9000, 0x4000),
      ]),
    ).not.toThrow();
  });

  it("misuse throws TypeError/RangeError, not a coded error", () => {
    expect(() => validatePartitions("nope" as unknown as Partition[])).toThrow(TypeError);
    expect(() => validatePartitions([{ label: 1 } as unknown as Partition])).toThrow(TypeError);
    expect(() => validatePartitions(good, { tableOffset: -1 })).toThrow(RangeError);
    expect(() => validatePartitions(good, { flashSize: 0 })).toThrow(RangeError);
    expect(() => decodePartitionTable([1, 2] as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => parsePartitionCsv(42 as unknown as string)).toThrow(TypeError);
  });
});

// ---------------------------------------------------------------------------------------------
// Binary

describe("encodePartitionTable", () => {
  const rows = (n: number) =>
    Array.from({ length: n }, (_, i) => part(`p${i}`, 1, 0x81, 0x9000 + i * 0x1000, 0x1000));

  it("fits 94 partitions with the MD5 entry, 95 without; one more is refused", () => {
    expect(encodePartitionTable(rows(94)).length).toBe(0xc00);
    expect(encodePartitionTable(rows(95), { md5: false }).length).toBe(0xc00);
    const e = codedError(() => encodePartitionTable(rows(95)));
    expect(e.code).toBe("E_PARTITION_TOO_MANY");
    expect(e.message).toContain("at most 94 with the MD5 entry");
    expect(codedError(() => encodePartitionTable(rows(96), { md5: false })).code).toBe(
      "E_PARTITION_TOO_MANY",
    );
  });

  it("a full table still ends with an end marker, and decodes", () => {
    for (const [n, withMd5] of [
      [94, true],
      [95, false],
    ] as const) {
      const bin = encodePartitionTable(rows(n), { md5: withMd5 });
      expect(bin.subarray(0xc00 - 32).every((b) => b === 0xff)).toBe(true);
      expect(decodePartitionTable(bin, { verify: false }).partitions).toHaveLength(n);
    }
  });

  it("lays out an entry as esp_partition_info_t (magic, type, subtype, offset, size, label, flags)", () => {
    // ESP-IDF's test_binary_entry: type 0x30, subtype 0xEE, 0x100400 / 0x300000 (MD5 as it asserts).
    const bin = encodePartitionTable([part("first", 0x30, 0xee, 0x100400, 0x300000)]);
    expect(toHex(bin.subarray(0, 32))).toBe(
      `aa5030ee${"00041000"}${"00003000"}${toHex(new TextEncoder().encode("first"))}${"00".repeat(11)}00000000`,
    );
    expect(toHex(bin.subarray(32, 64))).toBe(
      `ebeb${"ff".repeat(14)}43033f334087575169839b4061b12726`,
    );
  });

  it("writes the flag bits: encrypted = bit 0, readonly = bit 1", () => {
    const bin = encodePartitionTable([part("a", 1, 0x81, 0x9000, 0x1000, "encrypted readonly")]);
    expect(toHex(bin.subarray(28, 32))).toBe("03000000");
  });
});

/** A table's bytes with `edit` applied to a copy. */
function edited(base: Uint8Array, edit: (b: Uint8Array) => void): Uint8Array {
  const b = new Uint8Array(base);
  edit(b);
  return b;
}

describe("decodePartitionTable: failures and edge cases", () => {
  it.each([
    {
      name: "bad magic",
      bin: edited(BRIEF, (b) => (b[32] = 0xab)),
      code: "E_PARTITION_MAGIC",
      has: ["entry 1", "0x20", "ab50"],
    },
    {
      name: "length not a multiple of 32",
      bin: BRIEF.subarray(0, 100),
      code: "E_PARTITION_BINARY_LENGTH",
      has: ["100 bytes", "multiple of 32"],
    },
    {
      name: "no end marker before the data ends",
      bin: BRIEF.subarray(0, 96),
      code: "E_PARTITION_NO_END",
      has: ["end-of-table marker", "3 entries"],
    },
    {
      name: "no end marker within 0xC00 bytes",
      bin: edited(new Uint8Array(0x1000).fill(0xff), (b) => {
        const full = encodePartitionTable(
          Array.from({ length: 95 }, (_, i) => part(`p${i}`, 1, 0x81, 0x9000 + i * 0x1000, 0x1000)),
          { md5: false },
        );
        b.set(full);
        b.set(full.subarray(0, 32), 0xbe0); // a 96th entry where the end marker was
      }),
      code: "E_PARTITION_NO_END",
      has: ["within its first 0xc00 bytes"],
    },
    {
      name: "MD5 mismatch",
      bin: edited(BRIEF, (b) => (b[4] ^= 1)),
      code: "E_PARTITION_MD5",
      has: ["MD5 checksums don't match", "ef5566deed2add2939ceacd2a8e8a2c6"],
    },
    {
      name: "a second MD5 entry",
      bin: edited(BRIEF, (b) => b.set(BRIEF.subarray(160, 192), 192)),
      code: "E_PARTITION_MD5",
      has: ["second MD5 entry"],
    },
    {
      name: "an entry after the MD5 entry",
      bin: edited(BRIEF, (b) => b.set(BRIEF.subarray(0, 32), 192)),
      code: "E_PARTITION_MD5",
      has: ["entry 6", "follows the MD5 entry"],
    },
    {
      name: "a label that is not UTF-8",
      bin: encodePartitionTable([part("ab", 1, 0x81, 0x9000, 0x1000)], { md5: false }).map(
        (x, i) => (i === 13 ? 0xff : x),
      ),
      code: "E_PARTITION_LABEL",
      has: ["not UTF-8", "entry 0"],
    },
    {
      name: "an overlapping table (verify runs on binaries too)",
      bin: encodePartitionTable([
        part("a", 1, 0x81, 0x9000, 0x2000),
        part("b", 1, 0x81, 0xa000, 0x1000),
      ]),
      code: "E_PARTITION_OVERLAP",
      has: ["Partition b invalid"],
    },
    {
      name: "flash size",
      bin: BRIEF,
      opts: { flashSize: 2 * MB },
      code: "E_PARTITION_FLASH_SIZE",
      has: ["Partition ota_1", "0x2b0000"],
    },
  ] as {
    name: string;
    bin: Uint8Array;
    opts?: PartitionTableOptions;
    code: string;
    has: string[];
  }[])("$name -> $code", ({ bin, opts, code, has }) => {
    const e = codedError(() => decodePartitionTable(bin, opts));
    expect(e.code).toBe(code);
    for (const h of has) expect(e.message).toContain(h);
  });

  it("an empty table (end marker first) decodes to no partitions, with or without MD5", () => {
    expect(decodePartitionTable(encodePartitionTable([]))).toEqual({ partitions: [], md5: "ok" });
    expect(decodePartitionTable(new Uint8Array(0xc00).fill(0xff))).toEqual({
      partitions: [],
      md5: "absent",
    });
  });

  it("reads a whole 0x1000 sector and a table cut right after its end marker", () => {
    const sector = new Uint8Array(0x1000).fill(0xff);
    sector.set(BRIEF);
    expect(decodePartitionTable(sector).partitions).toHaveLength(5);
    expect(decodePartitionTable(BRIEF.subarray(0, 224)).partitions).toHaveLength(5);
  });

  it("unknown flag bits: a warning, and they are dropped (as gen_esp32part does)", () => {
    const bin = encodePartitionTable([part("a", 1, 0x81, 0x9000, 0x1000, "readonly")], {
      md5: false,
    });
    bin[30] = 0x01; // flags 0x00010002
    const warnings: string[] = [];
    const { partitions } = decodePartitionTable(bin, { onWarning: (m) => warnings.push(m) });
    expect(partitions[0]).toMatchObject({ readonly: true, encrypted: false });
    expect(warnings).toEqual([expect.stringContaining("unknown flag(s) 0x00010000")]);
  });

  it("keeps a label's leading U+FEFF and a 16-byte label without NUL", () => {
    const parts = [
      part("\ufeffnvs", 1, 2, 0x9000, 0x4000),
      part("0123456789abcdef", 1, 0x81, 0xd000, 0x1000),
    ];
    const bin = encodePartitionTable(parts);
    expect(toHex(bin.subarray(32 + 12, 32 + 28))).toBe(
      toHex(new TextEncoder().encode("0123456789abcdef")),
    );
    expect(decodePartitionTable(bin).partitions).toEqual(parts);
  });

  it("verify: false returns a table that breaks the rules", () => {
    const bin = encodePartitionTable([part("nvs", 1, 2, 0x9000, 0x1000)]);
    expect(codedError(() => decodePartitionTable(bin)).code).toBe("E_PARTITION_NVS_SIZE");
    expect(decodePartitionTable(bin, { verify: false }).partitions[0]!.size).toBe(0x1000);
  });
});

// ---------------------------------------------------------------------------------------------
// Text and sniffing

describe("input detection and text decoding", () => {
  it.each([
    { bytes: [0xaa, 0x50, 0x01], want: "binary" },
    { bytes: [0xeb, 0xeb, 0xff], want: "binary" },
    { bytes: [0xff, 0xff, 0xff], want: "binary" },
    { bytes: [0xff, 0xfe, 0x6e, 0x00], want: "csv" },
    { bytes: [0xef, 0xbb, 0xbf, 0x6e], want: "csv" },
    { bytes: [0x6e, 0x76, 0x73], want: "csv" },
    { bytes: [], want: "csv" },
  ])("$bytes -> $want", ({ bytes, want }) => {
    expect(sniffPartitionTable(new Uint8Array(bytes))).toBe(want);
  });

  const text = "nvs,data,nvs,0x9000,0x4000\n";
  const utf16 = (le: boolean) => {
    const b = new Uint8Array(2 + text.length * 2);
    b.set(le ? [0xff, 0xfe] : [0xfe, 0xff]);
    for (let i = 0; i < text.length; i++) b[2 + i * 2 + (le ? 0 : 1)] = text.charCodeAt(i);
    return b;
  };
  const utf32 = (le: boolean) => {
    const b = new Uint8Array(4 + text.length * 4);
    b.set(le ? [0xff, 0xfe, 0, 0] : [0, 0, 0xfe, 0xff]);
    for (let i = 0; i < text.length; i++) b[4 + i * 4 + (le ? 0 : 3)] = text.charCodeAt(i);
    return b;
  };
  it.each([
    { name: "UTF-8", bytes: new TextEncoder().encode(text) },
    {
      name: "UTF-8 with BOM (dropped)",
      bytes: new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(text)]),
    },
    { name: "UTF-16 LE", bytes: utf16(true) },
    { name: "UTF-16 BE", bytes: utf16(false) },
    { name: "UTF-32 LE", bytes: utf32(true) },
    { name: "UTF-32 BE", bytes: utf32(false) },
  ])("$name", ({ bytes }) => {
    expect(decodeCsvText(bytes)).toBe(text);
    expect(loadPartitionTable(bytes)).toEqual([part("nvs", 1, 2, 0x9000, 0x4000)]);
  });

  it("bytes that are not UTF-8 -> E_PARTITION_CSV_ENCODING", () => {
    expect(codedError(() => decodeCsvText(new Uint8Array([0x6e, 0xc3, 0x28]))).code).toBe(
      "E_PARTITION_CSV_ENCODING",
    );
    expect(codedError(() => loadPartitionTable(new Uint8Array([0xff, 0xfe, 0, 0, 1]))).code).toBe(
      "E_PARTITION_CSV_ENCODING",
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Queries

describe("queries", () => {
  const two = decodePartitionTable(fixture("partitions/pt_idf_two_ota.bin")).partitions;

  it("otaAppPartitions counts from ota_0 to the first gap (esp_ota_get_app_partition_count)", () => {
    expect(otaAppPartitions(two).map((p) => p.label)).toEqual(["ota_0", "ota_1"]);
    const gap = [
      part("a", 0, 0x10, 0x10000, MB),
      part("c", 0, 0x12, 0x110000, MB),
      part("b", 0, 0x11, 0x210000, MB),
    ];
    expect(otaAppPartitions(gap).map((p) => p.label)).toEqual(["a", "b", "c"]);
    expect(otaAppPartitions([gap[1]!, gap[2]!])).toEqual([]);
    expect(otaAppPartitions([part("f", 0, 0, 0x10000, MB)])).toEqual([]);
  });

  it("findPartition returns the first match in table order; subtype optional", () => {
    expect(findPartition(two, PART_TYPE.app)?.label).toBe("factory");
    expect(findPartition(two, PART_TYPE.data, DATA_SUBTYPE.ota)?.label).toBe("otadata");
    expect(findPartition(two, PART_TYPE.app, APP_SUBTYPE.test)).toBeUndefined();
    const dup = [part("x", 0, 0x10, 0x10000, MB), part("y", 0, 0x10, 0x110000, MB)];
    expect(findPartition(dup, 0, 0x10)?.label).toBe("x");
  });

  it.each([
    { p: part("a", 0, 0x10, 0, 0), want: true },
    { p: part("f", 0, 0, 0, 0), want: true },
    { p: part("bl", 2, 0, 0, 0), want: true },
    { p: part("pt", 3, 0, 0, 0), want: true },
    { p: part("otadata", 1, 0, 0, 0), want: true },
    { p: part("tee_ota", 1, 0x90, 0, 0), want: true },
    { p: part("nvs_keys", 1, 4, 0, 0), want: true },
    { p: part("nvs", 1, 2, 0, 0), want: false },
    { p: part("phy", 1, 1, 0, 0), want: false },
    { p: part("spiffs", 1, 0x82, 0, 0), want: false },
    { p: part("spiffs", 1, 0x82, 0, 0, "encrypted"), want: true },
    { p: part("custom", 0x40, 0, 0, 0), want: false },
  ])("isEncryptedPartition($p.label type $p.type/$p.subtype) = $want", ({ p, want }) => {
    expect(isEncryptedPartition(p)).toBe(want);
  });

  it("typeName / subtypeName: keyword, else decimal (as the CSV prints them)", () => {
    expect([typeName(0), typeName(1), typeName(2), typeName(3), typeName(0x40)]).toEqual([
      "app",
      "data",
      "bootloader",
      "partition_table",
      "64",
    ]);
    expect(subtypeName(0, 0x1f)).toBe("ota_15");
    expect(subtypeName(0, 0x31)).toBe("tee_1");
    expect(subtypeName(1, 0x90)).toBe("tee_ota");
    expect(subtypeName(1, 0x06)).toBe("undefined");
    expect(subtypeName(2, 2)).toBe("recovery");
    expect(subtypeName(0, 0x05)).toBe("5");
    expect(subtypeName(0x40, 0x99)).toBe("153");
  });

  it("constants", () => {
    expect(PARTITION_TABLE_OFFSET).toBe(0x8000);
    expect(PARTITION_TABLE_MAX_LEN).toBe(0xc00);
    expect(Object.keys(APP_SUBTYPE)).toHaveLength(20);
    expect(APP_SUBTYPE.ota_15).toBe(0x1f);
  });

  it("CSV output: sizes as M, K or hex; custom types and subtypes in decimal", () => {
    const csv = partitionsToCsv([
      part("a", 0x40, 0x99, 0x9000, 0x1000, "readonly"),
      part("b", 1, 0x81, 0xa000, 0x1234, "encrypted readonly"),
      part("c", 1, 0x81, 0xc000, 0),
      part("d", 1, 0x81, 0xd000, 0x2400),
      part("e", 1, 0x81, 0xf000, 0x300000),
    ]);
    expect(csv).toBe(
      "# ESP-IDF Partition Table\n# Name, Type, SubType, Offset, Size, Flags\n" +
        "a,64,153,0x9000,4K,readonly\nb,data,fat,0xa000,0x1234,encrypted:readonly\nc,data,fat,0xc000,0M,\n" +
        "d,data,fat,0xd000,9K,\ne,data,fat,0xf000,3M,\n",
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const labelChar = fc.constantFrom(
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. :é∑и",
);
const labelArb = fc
  .array(labelChar, { minLength: 1, maxLength: 16 })
  .map((cs) => cs.join(""))
  .filter((s) => new TextEncoder().encode(s).length <= 16 && s.trim() === s && s.length > 0);

const kinds = [
  [0, 0x00],
  [0, 0x10],
  [0, 0x11],
  [0, 0x1f],
  [0, 0x20],
  [1, 0x00],
  [1, 0x01],
  [1, 0x02],
  [1, 0x03],
  [1, 0x04],
  [1, 0x06],
  [1, 0x81],
  [1, 0x82],
  [1, 0x90],
  [0x40, 0x00],
  [0xfe, 0x99],
] as const;

/** Random tables that satisfy every rule, laid out in increasing offsets with gaps. */
const tableArb = fc
  .uniqueArray(
    fc.record({
      label: labelArb,
      kind: fc.constantFrom(...kinds),
      sectors: fc.integer({ min: 1, max: 64 }),
      // Data sizes need no alignment: exercise the K and hex forms of the CSV output.
      trim: fc.constantFrom(0, 0, 0x400, 0xc00, 0x10, 1),
      gapSectors: fc.integer({ min: 0, max: 3 }),
      encrypted: fc.boolean(),
      readonly: fc.boolean(),
    }),
    { selector: (r) => r.label, maxLength: 20 },
  )
  .map((specs) => {
    let at = PARTITION_TABLE_OFFSET + 0x1000;
    const seen = new Set<string>();
    return specs.map((s): Partition => {
      let [type, subtype]: [number, number] = [s.kind[0], s.kind[1]];
      const otaLike = type === 1 && (subtype === 0x00 || subtype === 0x90);
      if (otaLike && seen.has(`${subtype}`)) subtype = 0x06; // one otadata, one TEE otadata
      if (otaLike) seen.add(`${subtype}`);
      let size = s.sectors * 0x1000 - (type === 0 ? 0 : s.trim);
      let readonly = s.readonly;
      if (type === 1 && (subtype === 0x00 || subtype === 0x90)) size = 0x2000;
      if (type === 1 && (subtype === 0x00 || subtype === 0x03)) readonly = false;
      if (type === 1 && subtype === 0x02 && size < 0x3000) readonly = true;
      const align = type === 0 ? 0x10000 : 0x1000;
      at += s.gapSectors * 0x1000;
      at = Math.ceil(at / align) * align;
      const p = {
        label: s.label,
        type,
        subtype,
        offset: at,
        size,
        encrypted: s.encrypted,
        readonly,
      };
      at += size;
      return p;
    });
  });

function isPartitionCode(e: unknown): boolean {
  return e instanceof EspOtaError && PART_CODES.has(e.code);
}

describe("properties", () => {
  it("encode -> decode gives the table back, and validates", () => {
    fc.assert(
      fc.property(tableArb, fc.boolean(), (parts, withMd5) => {
        validatePartitions(parts);
        const bin = encodePartitionTable(parts, { md5: withMd5 });
        expect(bin.length).toBe(PARTITION_TABLE_MAX_LEN);
        expect(decodePartitionTable(bin)).toEqual({
          partitions: parts,
          md5: withMd5 ? "ok" : "absent",
        });
      }),
      { numRuns: 300 },
    );
  });

  it("CSV -> binary -> CSV -> binary is stable, and the CSV parses back to the table", () => {
    fc.assert(
      fc.property(tableArb, (parts) => {
        const csv = partitionsToCsv(parts);
        expect(parsePartitionCsv(csv)).toEqual(parts);
        const bin = encodePartitionTable(parsePartitionCsv(csv));
        const csv2 = partitionsToCsv(decodePartitionTable(bin).partitions);
        expect(csv2).toBe(csv);
        expect(toHex(encodePartitionTable(parsePartitionCsv(csv2)))).toBe(toHex(bin));
      }),
      { numRuns: 300 },
    );
  });

  it("random bytes never crash the decoder: a result or a partition-table error", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 0xc40 }), fc.boolean(), (bytes, startsWithMagic) => {
        if (startsWithMagic && bytes.length >= 2) bytes.set([0xaa, 0x50]);
        try {
          decodePartitionTable(bytes);
        } catch (e) {
          expect(isPartitionCode(e), String(e)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("edited and truncated valid tables never crash the decoder", () => {
    fc.assert(
      fc.property(
        tableArb,
        fc.array(fc.tuple(fc.nat(0xbff), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.nat(0xc00),
        (parts, edits, cut) => {
          const bin = encodePartitionTable(parts);
          for (const [at, v] of edits) bin[at] = v;
          for (const b of [bin, bin.subarray(0, cut)]) {
            try {
              const { partitions } = decodePartitionTable(b);
              expect(Array.isArray(partitions)).toBe(true);
            } catch (e) {
              expect(isPartitionCode(e), String(e)).toBe(true);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  const field = fc.oneof(
    fc.constantFrom(
      "",
      "app",
      "data",
      "nvs",
      "ota",
      "ota_0",
      "factory",
      "0x9000",
      "0x10000",
      "1M",
      "4K",
      "-1",
      "0x",
    ),
    fc.constantFrom(
      "encrypted",
      "readonly",
      "encrypted:readonly",
      "N/A",
      "bootloader",
      "partition_table",
      "$X",
      "#",
    ),
    fc.string({ maxLength: 8 }),
    fc.integer({ min: -0x10000, max: 0x1000000 }).map((n) => `0x${n.toString(16)}`),
  );
  it("random CSV never crashes the parser: partitions or a partition-table error", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.array(field, { maxLength: 7 }).map((f) => f.join(",")),
          { maxLength: 6 },
        ),
        fc.constantFrom("\n", "\r\n", "\r"),
        (lines, eol) => {
          try {
            const parts = parsePartitionCsv(lines.join(eol), { primaryBootloaderOffset: 0x1000 });
            // Whatever parses must encode.
            encodePartitionTable(parts);
          } catch (e) {
            expect(isPartitionCode(e), String(e)).toBe(true);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
