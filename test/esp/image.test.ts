import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromHex, putU16le, putU32le, toHex } from "../../src/bytes.js";
import { EspOtaError, isEspOtaError } from "../../src/errors.js";
import { CHIPS, chipById, chipByName, isFlashMapped, memoryTypes } from "../../src/esp/chips.js";
import {
  APP_DESC_MAGIC,
  type AppDescriptor,
  buildAppImage,
  checksumOffsetAfter,
  decodeAppDesc,
  decodeImageHeader,
  encodeAppDesc,
  encodeImage,
  encodeImageHeader,
  formatImageInfo,
  IMAGE_MAGIC,
  type ImageProblem,
  type ParsedImage,
  parseImage,
  verifyImage,
} from "../../src/esp/image.js";
import { fixture, fixtureJson, fixtureText } from "../helpers/fixtures.js";

interface VectorSegment {
  load_addr: string;
  length: string;
  file_offset_of_data: string;
  memory_types: string[];
}
interface Vector {
  file: string;
  size: number;
  sha256: string;
  image_info_output: string;
  parsed_by_esptool_LoadFirmwareImage: {
    chip: string;
    image_chip_id: number;
    entry_point: string;
    segment_count: number;
    segments: VectorSegment[];
    flash_mode_byte: number;
    flash_size_freq_byte: string;
    checksum_stored: string;
    checksum_calculated: string;
    checksum_valid: boolean;
    append_digest: boolean;
    data_length_incl_checksum_and_digest: number;
    sha256_stored: string;
    sha256_calculated: string;
    sha256_valid: boolean;
    app_desc?: Record<string, string | number | null>;
    bootloader_desc?: Record<string, string | number>;
  };
}

const vectors = fixtureJson<{ images: Vector[] }>("images/expected.json").images;
const num = (s: string) => Number.parseInt(s, 16);
const codes = (ps: readonly ImageProblem[]) => ps.map((p) => p.code);

function mustParse(bytes: Uint8Array): ParsedImage {
  const r = parseImage(bytes);
  expect(r.image).toBeDefined();
  return r.image!;
}

describe("image vectors (esptool 5.3.1 LoadFirmwareImage / image-info)", () => {
  it("covers every image in images/expected.json", () => {
    expect(vectors.map((v) => v.file).sort()).toEqual([
      "bootloader_esp32_v5_2.bin",
      "esp_idf_blink_esp32s2.bin",
      "hello-world-signed.bin",
      "hello-world-signed.corrupt_byte_0x38.bin",
      "helloworld-esp32.bin",
    ]);
  });

  describe.each(vectors)("$file", (v) => {
    const bytes = fixture(`images/${v.file}`);
    const e = v.parsed_by_esptool_LoadFirmwareImage;

    it("is the fixture the README describes", () => {
      expect(bytes.length).toBe(v.size);
    });

    it("decodes the header fields", () => {
      const h = mustParse(bytes).header;
      expect(h.magic).toBe(IMAGE_MAGIC);
      expect(h.segmentCount).toBe(e.segment_count);
      expect(h.entryAddr).toBe(num(e.entry_point));
      expect(h.spiMode).toBe(e.flash_mode_byte);
      expect((h.spiSize << 4) | h.spiSpeed).toBe(num(e.flash_size_freq_byte));
      expect(h.chipId).toBe(e.image_chip_id);
      expect(h.hashAppended).toBe(e.append_digest);
      expect(h.wpPin).toBe(0xee);
      // The header re-encodes to the same 24 bytes.
      expect(toHex(encodeImageHeader(h))).toBe(toHex(bytes.subarray(0, 24)));
    });

    it("names the chip as esptool does", () => {
      const img = mustParse(bytes);
      expect(img.chip?.displayName).toBe(e.chip);
      expect(img.chip?.id).toBe(e.image_chip_id);
    });

    it("finds the segments esptool finds", () => {
      const img = mustParse(bytes);
      expect(img.segments).toHaveLength(e.segments.length);
      img.segments.forEach((s, i) => {
        const x = e.segments[i]!;
        expect(s.loadAddr).toBe(num(x.load_addr));
        expect(s.length).toBe(num(x.length));
        // esptool's file_offs is where the 8-byte segment header starts; the data follows it.
        expect(s.headerOffset).toBe(num(x.file_offset_of_data));
        expect(s.offset).toBe(s.headerOffset + 8);
        expect(memoryTypes(img.chip!, s.loadAddr)).toEqual(x.memory_types);
      });
    });

    it("computes checksum and SHA-256 as esptool does", () => {
      const img = mustParse(bytes);
      expect(img.storedChecksum).toBe(num(e.checksum_stored));
      expect(img.computedChecksum).toBe(num(e.checksum_calculated));
      // esptool's data_length is the length it hashed: everything through the checksum byte.
      expect(img.hashOffset).toBe(e.data_length_incl_checksum_and_digest);
      expect(img.checksumOffset).toBe(e.data_length_incl_checksum_and_digest - 1);
      expect(toHex(img.storedHash!)).toBe(e.sha256_stored);
      expect(toHex(img.computedHash!)).toBe(e.sha256_calculated);
      expect(img.imageEnd).toBe(img.hashOffset! + 32);
    });

    it("prints esptool's image-info text byte for byte", () => {
      const expected = fixtureText(`images/${v.image_info_output}`);
      // The first line is esptool's banner ("esptool v5.3.1"), not part of the report.
      expect(expected.startsWith("esptool v")).toBe(true);
      expect(formatImageInfo(bytes)).toBe(expected.slice(expected.indexOf("\n") + 1));
    });

    if (e.app_desc) {
      const ad = e.app_desc;
      it("decodes esp_app_desc_t", () => {
        const d = mustParse(bytes).appDesc!;
        expect(d).toBeDefined();
        expect(ad.magic_word).toBe(APP_DESC_MAGIC);
        expect(d.secureVersion).toBe(ad.secure_version);
        expect(d.version).toBe(ad.version);
        expect(d.projectName).toBe(ad.project_name);
        expect(d.time).toBe(ad.time);
        expect(d.date).toBe(ad.date);
        expect(d.idfVer).toBe(ad.idf_ver);
        expect(toHex(d.appElfSha256)).toBe(ad.app_elf_sha256);
        const rev = (x: number) => `${Math.floor(x / 100)}.${x % 100}`;
        expect(rev(d.minEfuseBlkRevFull)).toBe(ad.min_efuse_blk_rev_full);
        expect(rev(d.maxEfuseBlkRevFull)).toBe(ad.max_efuse_blk_rev_full);
        expect(ad.mmu_page_size).toBeNull();
        expect(d.mmuPageSize).toBe(0);
        // The descriptor sits at file offset 0x20 and re-encodes to the same 256 bytes (its
        // reserved bytes are zero in these builds).
        expect(toHex(encodeAppDesc(d))).toBe(toHex(bytes.subarray(0x20, 0x120)));
      });
    } else {
      it("has no app descriptor", () => {
        expect(mustParse(bytes).appDesc).toBeUndefined();
      });
    }
  });

  it("hello-world-signed.bin: image + hash end at 0x2FFB0, 0x50 bytes of signature area follow", () => {
    const bytes = fixture("images/hello-world-signed.bin");
    const img = mustParse(bytes);
    expect(img.imageEnd).toBe(0x2ffb0);
    expect(bytes.length - img.imageEnd).toBe(0x50);
    expect(verifyImage(bytes, { chip: "esp32" }).ok).toBe(true);
  });

  it("esp_idf_blink_esp32s2.bin verifies as an ESP32-S2 app and not as an ESP32 one", () => {
    const bytes = fixture("images/esp_idf_blink_esp32s2.bin");
    expect(verifyImage(bytes, { chip: "esp32s2" }).ok).toBe(true);
    const r = verifyImage(bytes, { chip: "esp32" });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems).toEqual([
      {
        code: "E_IMAGE_CHIP_MISMATCH",
        message: "mismatch chip ID, expected 0 (ESP32), found 2 (ESP32-S2)",
        offset: 12,
      },
    ]);
  });

  it("the bootloader verifies as a bootloader; as an app it lacks the app descriptor", () => {
    const bytes = fixture("images/bootloader_esp32_v5_2.bin");
    expect(verifyImage(bytes, { kind: "bootloader", chip: "esp32" }).ok).toBe(true);
    const r = verifyImage(bytes);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(codes(r.problems)).toEqual(["E_IMAGE_APP_DESC_MISSING"]);
  });

  it("the RAM-only hello world is structurally valid but too short to be an app", () => {
    const bytes = fixture("images/helloworld-esp32.bin");
    expect(parseImage(bytes).problems).toEqual([]);
    expect(verifyImage(bytes, { kind: "any" }).ok).toBe(true);
    const r = verifyImage(bytes, { kind: "app" });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems[0]).toEqual({
      code: "E_IMAGE_APP_DESC_MISSING",
      message: "Segment 0: length 0x10 is too short for app description (256 bytes)",
      offset: 0x1c,
    });
  });

  it("the corrupt vector fails the checksum first, then the SHA-256, as the bootloader logs", () => {
    const bytes = fixture("images/hello-world-signed.corrupt_byte_0x38.bin");
    const r = verifyImage(bytes, { chip: "esp32" });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems).toEqual([
      {
        code: "E_IMAGE_CHECKSUM",
        message: "Checksum failed. Calculated 0x31 read 0x30",
        offset: 0x2ff8f,
      },
      {
        code: "E_IMAGE_HASH",
        message:
          "Image hash failed - image is corrupt: stored 06a1d6eb2c280ca64b44b8c487d2d856dc8e5acf6e08060c61efbf086ad795d2, calculated d6accc49fe9633110dc2dddff5b66d496cf05eb3fbeea8dc8da3ec05a102ddda",
        offset: 0x2ff90,
      },
    ]);
    // The flipped byte is inside the descriptor's version string ("beta" -> "bet`").
    expect(r.image?.appDesc?.version).toBe("v3.3-bet`3-21-g0706bd0d1-dirty");
  });

  it.each(vectors.filter((v) => !v.file.includes("corrupt")).map((v) => v.file))(
    "%s: re-encoding its parsed segments gives the original bytes through imageEnd",
    (file) => {
      const bytes = fixture(`images/${file}`);
      const img = mustParse(bytes);
      const { magic: _m, segmentCount: _c, ...header } = img.header;
      const again = encodeImage({
        header,
        segments: img.segments.map((s) => ({
          loadAddr: s.loadAddr,
          data: bytes.subarray(s.offset, s.offset + s.length),
        })),
      });
      expect(again.length).toBe(img.imageEnd);
      expect(toHex(again)).toBe(toHex(bytes.subarray(0, img.imageEnd)));
    },
  );
});

describe("chips", () => {
  it("has the chip ids of esp_chip_id_t / esptool IMAGE_CHIP_ID", () => {
    const ids = Object.fromEntries(CHIPS.map((c) => [c.name, c.id]));
    expect(ids).toEqual({
      esp32: 0,
      esp32s2: 2,
      esp32c3: 5,
      esp32s3: 9,
      esp32c2: 12,
      esp32c6: 13,
      esp32h2: 16,
      esp32p4: 18,
      esp32c61: 20,
      esp32c5: 23,
      esp32h21: 25,
      esp32h4: 28,
      esp32s31: 32,
    });
    expect(new Set(CHIPS.map((c) => c.id)).size).toBe(CHIPS.length);
  });

  it.each([
    ["esp32", "ESP32"],
    ["ESP32-S3", "ESP32-S3"],
    ["esp32-c3", "ESP32-C3"],
    ["Esp32C6", "ESP32-C6"],
  ])("chipByName(%s) is %s", (name, display) => {
    expect(chipByName(name).displayName).toBe(display);
  });

  it("chipByName throws E_CHIP_UNKNOWN for other names; chipById returns undefined", () => {
    expect(() => chipByName("esp8266")).toThrow(EspOtaError);
    try {
      chipByName("esp32x");
    } catch (e) {
      expect(isEspOtaError(e) && e.code).toBe("E_CHIP_UNKNOWN");
    }
    expect(chipById(1)).toBeUndefined();
    expect(chipById(0)?.name).toBe("esp32");
  });

  it.each(CHIPS.map((c) => [c.name, c] as const))(
    "%s: builder addresses are flash-mapped, DROM-typed for esptool, and 0x20 into a 64 KB page",
    (_n, c) => {
      expect(isFlashMapped(c, c.dromAddr)).toBe(true);
      expect(isFlashMapped(c, c.iromAddr)).toBe(true);
      expect(memoryTypes(c, c.dromAddr)).toContain("DROM");
      expect(memoryTypes(c, c.iromAddr)).toContain("IROM");
      expect(c.dromAddr % 0x10000).toBe(0x20);
      expect(c.mmuPageSizes[0]).toBe(0x10000);
      expect(c.flashEncryption).toBe(c.name === "esp32" ? "esp32" : "xts");
    },
  );
});

describe("esp_app_desc_t", () => {
  const base: AppDescriptor = {
    secureVersion: 7,
    version: "1.2.3",
    projectName: "demo",
    time: "12:00:00",
    date: "Nov 23 2026",
    idfVer: "v5.5.1",
    appElfSha256: new Uint8Array(32).fill(0xab),
    minEfuseBlkRevFull: 1,
    maxEfuseBlkRevFull: 199,
    mmuPageSize: 16,
    spiFlashMode: 2,
  };

  it("lays the fields out at the offsets of esp_app_desc.h", () => {
    const b = encodeAppDesc(base);
    expect(b.length).toBe(256);
    expect(toHex(b.subarray(0, 8))).toBe("3254cdab07000000");
    expect(new TextDecoder().decode(b.subarray(16, 21))).toBe("1.2.3");
    expect(new TextDecoder().decode(b.subarray(48, 52))).toBe("demo");
    expect(b[144]).toBe(0xab);
    expect(toHex(b.subarray(176, 182))).toBe("0100c7001002");
    expect(b.subarray(182).every((x) => x === 0)).toBe(true);
  });

  it("decodeAppDesc returns undefined without the magic and RangeError on short input", () => {
    expect(decodeAppDesc(new Uint8Array(256))).toBeUndefined();
    expect(() => decodeAppDesc(new Uint8Array(255))).toThrow(RangeError);
  });

  it.each([
    [{ version: "x".repeat(32) }, RangeError],
    [{ projectName: "y".repeat(40) }, RangeError],
    [{ time: "a\0b" }, RangeError],
    [{ secureVersion: -1 }, RangeError],
    [{ secureVersion: 1.5 }, TypeError],
    [{ appElfSha256: new Uint8Array(31) }, RangeError],
    [{ mmuPageSize: 256 }, RangeError],
  ] as const)("encodeAppDesc(%o) throws", (patch, err) => {
    expect(() => encodeAppDesc({ ...base, ...patch } as AppDescriptor)).toThrow(err);
  });

  it("round-trips (fast-check)", () => {
    const str = (max: number) =>
      fc
        .string({ maxLength: max, unit: fc.constantFrom(..."abcXYZ019.-_ :äé") })
        .filter((s) => new TextEncoder().encode(s).length <= max);
    fc.assert(
      fc.property(
        fc.record({
          secureVersion: fc.nat({ max: 0xffffffff }),
          version: str(31),
          projectName: str(31),
          time: str(15),
          date: str(15),
          idfVer: str(31),
          appElfSha256: fc.uint8Array({ minLength: 32, maxLength: 32 }),
          minEfuseBlkRevFull: fc.nat({ max: 0xffff }),
          maxEfuseBlkRevFull: fc.nat({ max: 0xffff }),
          mmuPageSize: fc.nat({ max: 255 }),
          spiFlashMode: fc.nat({ max: 255 }),
        }),
        (d) => {
          expect(decodeAppDesc(encodeAppDesc(d))).toEqual(d);
        },
      ),
    );
  });
});

/** Writes header + segments + checksum (+ hash) without any of encodeImage's checks. */
function rawImage(opts: {
  chipId?: number;
  count?: number;
  hashByte?: number;
  segments: { loadAddr: number; data: Uint8Array; declaredLength?: number }[];
  checksum?: number;
}): Uint8Array {
  const parts: number[] = [];
  const h = new Uint8Array(24);
  h[0] = 0xe9;
  h[1] = opts.count ?? opts.segments.length;
  h[2] = 2;
  h[8] = 0xee;
  putU16le(h, 12, opts.chipId ?? 0);
  h[23] = opts.hashByte ?? 0;
  parts.push(...h);
  let ck = 0xef;
  for (const s of opts.segments) {
    const sh = new Uint8Array(8);
    putU32le(sh, 0, s.loadAddr);
    putU32le(sh, 4, s.declaredLength ?? s.data.length);
    parts.push(...sh, ...s.data);
    for (const x of s.data) ck ^= x;
  }
  const end = checksumOffsetAfter(parts.length);
  while (parts.length < end) parts.push(0);
  parts.push(opts.checksum ?? ck);
  return new Uint8Array(parts);
}

const DRAM = 0x3ffb0000;

describe("parseImage / verifyImage problems", () => {
  it("not an image: bad magic, no parsed image", () => {
    const r = parseImage(fromHex("e8000000"));
    expect(r.image).toBeUndefined();
    expect(r.problems).toEqual([
      {
        code: "E_IMAGE_MAGIC",
        message:
          "image at 0x0 has invalid magic byte 0xe8, expected 0xe9 (nothing flashed here, or encrypted?)",
        offset: 0,
      },
    ]);
  });

  it.each([
    ["empty", new Uint8Array(0)],
    ["shorter than the header", fromHex("e90100")],
    [
      "cut inside a segment header",
      rawImage({ segments: [{ loadAddr: DRAM, data: new Uint8Array(4) }] }).subarray(0, 28),
    ],
    [
      "cut inside segment data",
      rawImage({ segments: [{ loadAddr: DRAM, data: new Uint8Array(16) }] }).subarray(0, 40),
    ],
    [
      "cut before the checksum",
      rawImage({ segments: [{ loadAddr: DRAM, data: new Uint8Array(4) }] }).subarray(0, 47),
    ],
  ])("%s: E_IMAGE_TRUNCATED and no image", (_n, bytes) => {
    const r = parseImage(bytes);
    expect(r.image).toBeUndefined();
    expect(codes(r.problems)).toEqual(["E_IMAGE_TRUNCATED"]);
  });

  it("cut inside the appended hash: the image parses, E_IMAGE_TRUNCATED is reported", () => {
    const full = buildAppImage({ chip: "esp32", appDesc: { projectName: "p", version: "1" } });
    const r = parseImage(full.subarray(0, full.length - 5));
    expect(codes(r.problems)).toEqual(["E_IMAGE_TRUNCATED"]);
    expect(r.image?.storedHash?.length).toBe(27);
  });

  it("more than 16 segments: E_IMAGE_SEGMENT_COUNT, every segment still read", () => {
    const segs = Array.from({ length: 17 }, () => ({ loadAddr: DRAM, data: new Uint8Array(4) }));
    const r = parseImage(rawImage({ segments: segs }));
    expect(codes(r.problems)).toEqual(["E_IMAGE_SEGMENT_COUNT"]);
    expect(r.image?.segments).toHaveLength(17);
    expect(r.problems[0]!.message).toBe("segment count 17 exceeds max 16");
  });

  it("segment length not a multiple of 4: E_IMAGE_SEGMENT_LENGTH", () => {
    const r = parseImage(rawImage({ segments: [{ loadAddr: DRAM, data: new Uint8Array(6) }] }));
    expect(codes(r.problems)).toEqual(["E_IMAGE_SEGMENT_LENGTH"]);
    expect(r.problems[0]!.message).toBe(
      "segment 0: invalid segment length 0x6 (must be a multiple of 4 and below 16 MB)",
    );
  });

  it("a huge declared length is reported, then the truncation", () => {
    const r = parseImage(
      rawImage({
        segments: [{ loadAddr: DRAM, data: new Uint8Array(4), declaredLength: 0xfffffffc }],
      }),
    );
    expect(codes(r.problems)).toEqual(["E_IMAGE_SEGMENT_LENGTH", "E_IMAGE_TRUNCATED"]);
  });

  it("unknown chip id: E_IMAGE_CHIP_UNKNOWN (and no mapping check)", () => {
    const r = parseImage(
      rawImage({ chipId: 0x1234, segments: [{ loadAddr: DRAM, data: new Uint8Array(4) }] }),
    );
    expect(r.problems).toEqual([
      {
        code: "E_IMAGE_CHIP_UNKNOWN",
        message: "chip ID 4660 is not a known ESP32 chip",
        offset: 12,
      },
    ]);
    expect(r.image?.chip).toBeUndefined();
    expect(formatImageInfo(rawImage({ chipId: 0x1234, segments: [] }))).toContain(
      "Chip ID: 4660 (Unknown ID)",
    );
  });

  it("hash_appended byte 2: E_IMAGE_HEADER_FIELD, and it still counts as appended", () => {
    const img = buildAppImage({ chip: "esp32", appDesc: { projectName: "p", version: "1" } });
    img[23] = 2;
    const r = parseImage(img);
    // Byte 23 is hashed, so the SHA-256 no longer matches either.
    expect(codes(r.problems)).toEqual(["E_IMAGE_HEADER_FIELD", "E_IMAGE_HASH"]);
    expect(r.image?.header.hashAppended).toBe(true);
  });

  it("a flash segment whose data is not at its page offset: E_IMAGE_SEGMENT_MAPPING", () => {
    const desc = encodeAppDesc({
      secureVersion: 0,
      version: "1",
      projectName: "p",
      time: "",
      date: "",
      idfVer: "",
      appElfSha256: new Uint8Array(32),
      minEfuseBlkRevFull: 0,
      maxEfuseBlkRevFull: 0,
      mmuPageSize: 0,
    });
    const bytes = encodeImage({
      header: decodeImageHeader(
        buildAppImage({ chip: "esp32", appDesc: { projectName: "p", version: "1" } }),
      ),
      segments: [
        { loadAddr: 0x3f400020, data: desc },
        { loadAddr: 0x400d0020, data: new Uint8Array(64) },
      ],
    });
    const r = verifyImage(bytes, { chip: "esp32" });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems).toEqual([
      {
        code: "E_IMAGE_SEGMENT_MAPPING",
        message:
          "Segment 1 load address 0x400d0020, doesn't match data 0x00000128 (they must be equal modulo the 0x10000-byte MMU page)",
        offset: 0x120,
      },
    ]);
  });

  it("the MMU page comes from the app descriptor on chips where it is configurable", () => {
    // Data at file offset 0x8000 may map 0x42010000 with 32 KB pages, not with 64 KB pages.
    const c6 = chipByName("esp32c6");
    const build = (mmuPageSize: number) => {
      const desc = encodeAppDesc({
        secureVersion: 0,
        version: "1",
        projectName: "p",
        time: "",
        date: "",
        idfVer: "",
        appElfSha256: new Uint8Array(32),
        minEfuseBlkRevFull: 0,
        maxEfuseBlkRevFull: 0,
        mmuPageSize,
      });
      const first = new Uint8Array(0x8000 - 0x20 - 8);
      first.set(desc);
      return encodeImage({
        header: {
          ...decodeImageHeader(
            buildAppImage({ chip: "esp32c6", appDesc: { projectName: "p", version: "1" } }),
          ),
        },
        segments: [
          { loadAddr: c6.dromAddr, data: first },
          { loadAddr: 0x42010000, data: new Uint8Array(16) },
        ],
      });
    };
    expect(verifyImage(build(15), { chip: "esp32c6" }).ok).toBe(true);
    const r = verifyImage(build(16), { chip: "esp32c6" });
    expect(!r.ok && codes(r.problems)).toEqual(["E_IMAGE_SEGMENT_MAPPING"]);
  });

  it("reports problems in the bootloader's order: chip before segments before checksum", () => {
    const bytes = rawImage({
      chipId: 5,
      count: 17,
      segments: Array.from({ length: 17 }, () => ({ loadAddr: DRAM, data: new Uint8Array(4) })),
      checksum: 0,
    });
    const r = verifyImage(bytes, { chip: "esp32", kind: "any" });
    expect(!r.ok && codes(r.problems)).toEqual([
      "E_IMAGE_CHIP_MISMATCH",
      "E_IMAGE_SEGMENT_COUNT",
      "E_IMAGE_CHECKSUM",
    ]);
  });

  it("chip revision: min always, max for apps only (check_chip_validity)", () => {
    const img = buildAppImage({
      chip: "esp32",
      appDesc: { projectName: "p", version: "1" },
      minChipRevFull: 100,
      maxChipRevFull: 199,
    });
    expect(verifyImage(img, { chipRevision: 100 }).ok).toBe(true);
    expect(verifyImage(img, { chipRevision: 199 }).ok).toBe(true);
    const low = verifyImage(img, { chipRevision: 3 });
    expect(!low.ok && low.problems[0]).toEqual({
      code: "E_IMAGE_CHIP_REVISION",
      message: "chip revision check failed. Required >= v1.0, found v0.3.",
      offset: 15,
    });
    const high = verifyImage(img, { chipRevision: 300 });
    expect(!high.ok && high.problems[0]?.message).toBe(
      "chip revision check failed. Required <= v1.99, found v3.0.",
    );
    expect(verifyImage(img, { chipRevision: 300, kind: "bootloader" }).ok).toBe(true);
    // max_chip_rev_full 0 means "not set".
    const open = buildAppImage({ chip: "esp32", appDesc: { projectName: "p", version: "1" } });
    expect(verifyImage(open, { chipRevision: 9999 }).ok).toBe(true);
  });

  it("eFuse block revision is checked for apps on chips other than the ESP32", () => {
    const appDesc = {
      projectName: "p",
      version: "1",
      minEfuseBlkRevFull: 1,
      maxEfuseBlkRevFull: 99,
    };
    const c3 = buildAppImage({ chip: "esp32c3", appDesc });
    expect(verifyImage(c3, { efuseBlkRevision: 1 }).ok).toBe(true);
    const r0 = verifyImage(c3, { efuseBlkRevision: 0 });
    expect(!r0.ok && r0.problems[0]?.message).toBe(
      "Image requires efuse blk rev >= v0.1, but chip is v0.0",
    );
    const r1 = verifyImage(c3, { efuseBlkRevision: 100 });
    expect(!r1.ok && codes(r1.problems)).toEqual(["E_IMAGE_EFUSE_BLK_REVISION"]);
    const esp32 = buildAppImage({ chip: "esp32", appDesc });
    expect(verifyImage(esp32, { efuseBlkRevision: 0 }).ok).toBe(true);
  });

  it("partition fit: the image through its SHA-256 must fit (process_appended_hash_and_sig)", () => {
    const img = buildAppImage({ chip: "esp32", appDesc: { projectName: "p", version: "1" } });
    expect(verifyImage(img, { partitionSize: img.length }).ok).toBe(true);
    const r = verifyImage(img, { partitionSize: img.length - 1 });
    expect(!r.ok && r.problems).toEqual([
      {
        code: "E_IMAGE_TOO_BIG",
        message: `Image length ${img.length} doesn't fit in partition length ${img.length - 1}`,
        offset: img.length - 1,
      },
    ]);
  });

  it("an image with no segments is no app", () => {
    const img = encodeImage({
      header: decodeImageHeader(
        buildAppImage({ chip: "esp32", appDesc: { projectName: "p", version: "1" } }),
      ),
      segments: [],
    });
    expect(parseImage(img).problems).toEqual([]);
    const r = verifyImage(img);
    expect(!r.ok && codes(r.problems)).toEqual(["E_IMAGE_APP_DESC_MISSING"]);
  });

  it("misuse throws: wrong types and option values", () => {
    expect(() => parseImage("e9" as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => verifyImage(new Uint8Array(1), { kind: "ota" as "app" })).toThrow(RangeError);
    expect(() => verifyImage(new Uint8Array(1), { chipRevision: -1 })).toThrow(RangeError);
    expect(() => verifyImage(new Uint8Array(1), { chip: "esp31" })).toThrow(EspOtaError);
  });
});

describe("buildAppImage", () => {
  const appDesc = { projectName: "thermostat", version: "2.4.0", secureVersion: 3 };

  it("writes the app descriptor first in the DROM segment at file offset 0x20", () => {
    const img = buildAppImage({ chip: "esp32", appDesc });
    const p = mustParse(img);
    expect(p.segments[0]).toEqual({
      loadAddr: 0x3f400020,
      offset: 0x20,
      length: 256,
      headerOffset: 0x18,
    });
    expect(p.appDesc).toMatchObject({
      ...appDesc,
      time: "",
      date: "",
      idfVer: "",
      mmuPageSize: 16,
    });
    expect(p.header).toMatchObject({
      spiMode: 2,
      spiSpeed: 0,
      spiSize: 1,
      entryAddr: 0x400d0020,
      chipId: 0,
      hashAppended: true,
      wpPin: 0xee,
    });
    expect(img.length).toBe(p.imageEnd);
    expect(verifyImage(img, { chip: "esp32" }).ok).toBe(true);
    const text = formatImageInfo(img);
    expect(text).toContain("Project name: thermostat\nApp version: 2.4.0\n");
    expect(text).toContain("MMU page size: 64 KB\nSecure version: 3\n");
    expect(text).toContain("Checksum: ");
    expect(text).not.toContain("invalid");
  });

  it("is deterministic, and the stand-in ELF SHA-256 differs between versions", () => {
    const a = buildAppImage({ chip: "esp32c3", appDesc, minSize: 5000 });
    expect(toHex(buildAppImage({ chip: "esp32c3", appDesc, minSize: 5000 }))).toBe(toHex(a));
    const b = buildAppImage({
      chip: "esp32c3",
      appDesc: { ...appDesc, version: "2.4.1" },
      minSize: 5000,
    });
    expect(toHex(mustParse(a).appDesc!.appElfSha256)).not.toBe(
      toHex(mustParse(b).appDesc!.appElfSha256),
    );
    // The filler differs too, as two real builds would.
    expect(toHex(a.subarray(0x200, 0x300))).not.toBe(toHex(b.subarray(0x200, 0x300)));
  });

  it.each([0, 1, 300, 333, 4096, 65536, 100_001, 1_500_000])(
    "minSize %i: the image is the smallest multiple of 16 at or above it",
    (minSize) => {
      const img = buildAppImage({ chip: "esp32", appDesc, minSize });
      const natural = buildAppImage({ chip: "esp32", appDesc }).length;
      expect(img.length).toBe(Math.max(natural, Math.ceil(minSize / 16) * 16));
      expect(verifyImage(img, { chip: "esp32" }).ok).toBe(true);
    },
  );

  it("minSize without the SHA-256 also lands on the next multiple of 16", () => {
    const img = buildAppImage({ chip: "esp32s3", appDesc, minSize: 70_000, hashAppended: false });
    expect(img.length).toBe(70_000);
    expect(mustParse(img).hashOffset).toBeUndefined();
    expect(verifyImage(img, { chip: "esp32s3" }).ok).toBe(true);
  });

  it.each(CHIPS.map((c) => c.name))(
    "%s: code and data segments are placed so the bootloader can map them",
    (name) => {
      const chip = chipByName(name);
      const ram = chip.memoryMap.find((r) => r.type === "DRAM")!.start;
      const img = buildAppImage({
        chip: name,
        appDesc,
        segments: [
          { loadAddr: ram, data: new Uint8Array(1000).fill(1) },
          { loadAddr: chip.iromAddr, data: new Uint8Array(3000).fill(2) },
        ],
        minSize: 0x30000,
      });
      const r = verifyImage(img, { chip: name });
      expect(r.ok).toBe(true);
      const p = mustParse(img);
      const irom = p.segments.find((s) => s.loadAddr === chip.iromAddr)!;
      expect(irom.offset % 0x10000).toBe(chip.iromAddr % 0x10000);
      expect(formatImageInfo(img)).toContain(`Chip ID: ${chip.id} (${chip.displayName})`);
      expect(formatImageInfo(img)).toContain("Project name: thermostat");
    },
  );

  it("reproduces esptool's ESP32 layout of hello-world-signed's code segments", () => {
    // Give the builder the DRAM, IRAM and IROM segments of the real app; the IROM segment must
    // land at the same page offset as in the esptool-built file (data at 0x...0018).
    const real = fixture("images/hello-world-signed.bin");
    const p = mustParse(real);
    const data = (i: number) =>
      real.subarray(p.segments[i]!.offset, p.segments[i]!.offset + p.segments[i]!.length);
    const img = buildAppImage({
      chip: "esp32",
      appDesc,
      segments: [1, 2, 3, 5].map((i) => ({ loadAddr: p.segments[i]!.loadAddr, data: data(i) })),
    });
    const q = mustParse(img);
    const irom = q.segments.find((s) => s.loadAddr === 0x400d0018)!;
    expect(irom.offset).toBe(0x10018);
    expect(q.segments.map((s) => s.loadAddr)).toEqual([
      0x3f400020, 0x3ffb0000, 0x40080000, 0x40080400, 0, 0x400d0018,
    ]);
    expect(verifyImage(img, { chip: "esp32" }).ok).toBe(true);
  });

  it("pads ESP32 flash segments ending < 0x24 bytes into a page (esptool save_flash_segment)", () => {
    // Data at 0x10020 + 0xffe0 - 8 ends 0x18 bytes into the next page: esptool adds 0x0c.
    const img = buildAppImage({
      chip: "esp32",
      appDesc,
      segments: [{ loadAddr: 0x400d0020, data: new Uint8Array(0x10000 - 8) }],
    });
    const s = mustParse(img).segments.find((x) => x.loadAddr === 0x400d0020)!;
    expect((s.offset + s.length) % 0x10000).toBe(0x24);
  });

  it("zero-pads segment data to a multiple of 4", () => {
    const img = buildAppImage({
      chip: "esp32",
      appDesc,
      segments: [{ loadAddr: DRAM, data: fromHex("010203") }],
    });
    const s = mustParse(img).segments[1]!;
    expect(toHex(img.subarray(s.offset, s.offset + s.length))).toBe("01020300");
  });

  it.each([
    ["unknown chip", { chip: "esp32x", appDesc }, EspOtaError],
    [
      "version too long",
      { chip: "esp32", appDesc: { ...appDesc, version: "v".repeat(32) } },
      RangeError,
    ],
    [
      "load address out of range",
      { chip: "esp32", appDesc, segments: [{ loadAddr: 2 ** 32, data: new Uint8Array(4) }] },
      RangeError,
    ],
    [
      "data not bytes",
      {
        chip: "esp32",
        appDesc,
        segments: [{ loadAddr: DRAM, data: [1, 2] as unknown as Uint8Array }],
      },
      TypeError,
    ],
    [
      "too many segments",
      {
        chip: "esp32",
        appDesc,
        segments: Array.from({ length: 16 }, () => ({ loadAddr: DRAM, data: new Uint8Array(4) })),
      },
      RangeError,
    ],
    ["spiSpeed above a nibble", { chip: "esp32", appDesc, spiSpeed: 16 }, RangeError],
  ] as const)("%s throws", (_n, opts, err) => {
    expect(() => buildAppImage(opts as Parameters<typeof buildAppImage>[0])).toThrow(err);
  });
});

describe("properties (fast-check)", () => {
  const ascii = (max: number) =>
    fc.string({ maxLength: max, unit: fc.constantFrom(..."abz09.-_ ") });
  const chipArb = fc.constantFrom(...CHIPS);
  const descArb = fc.record(
    {
      projectName: ascii(31),
      version: ascii(31),
      secureVersion: fc.nat({ max: 0xffffffff }),
      time: ascii(15),
      date: ascii(15),
      idfVer: ascii(31),
      minEfuseBlkRevFull: fc.nat({ max: 0xffff }),
      maxEfuseBlkRevFull: fc.nat({ max: 0xffff }),
    },
    { requiredKeys: ["projectName", "version"] },
  );
  // Segment load addresses: chip RAM (loaded) or the chip's code window (mapped), never 0.
  const buildArb = chipArb.chain((chip) =>
    fc.record({
      chip: fc.constant(chip),
      appDesc: descArb,
      segments: fc.array(
        fc.record({
          loadAddr: fc.oneof(
            fc.constant(chip.memoryMap.find((r) => r.type === "DRAM")!.start),
            fc.constant(chip.iromAddr + 0x100000),
          ),
          data: fc.uint8Array({ maxLength: 600 }),
        }),
        { maxLength: 5 },
      ),
      minSize: fc.option(fc.nat({ max: 40_000 }), { nil: undefined }),
      hashAppended: fc.boolean(),
    }),
  );

  it("build -> parse gives back every field, and verify is ok", () => {
    fc.assert(
      fc.property(buildArb, (b) => {
        const img = buildAppImage({
          chip: b.chip.name,
          appDesc: b.appDesc,
          segments: b.segments,
          hashAppended: b.hashAppended,
          ...(b.minSize === undefined ? {} : { minSize: b.minSize }),
        });
        const { image, problems } = parseImage(img);
        expect(problems).toEqual([]);
        expect(image!.chip).toBe(b.chip);
        expect(image!.header.hashAppended).toBe(b.hashAppended);
        expect(image!.imageEnd).toBe(img.length);
        expect(image!.appDesc).toMatchObject(b.appDesc);
        const real = image!.segments.filter((s) => s.loadAddr !== 0);
        expect(real.map((s) => s.loadAddr)).toEqual([
          b.chip.dromAddr,
          ...b.segments.map((s) => s.loadAddr),
        ]);
        b.segments.forEach((s, i) => {
          const got = real[i + 1]!;
          const padded = Math.ceil(s.data.length / 4) * 4;
          expect(got.length).toBeGreaterThanOrEqual(padded);
          expect(toHex(img.subarray(got.offset, got.offset + s.data.length))).toBe(toHex(s.data));
          expect(
            img.subarray(got.offset + s.data.length, got.offset + got.length).every((x) => x === 0),
          ).toBe(true);
        });
        if (b.minSize !== undefined) expect(img.length).toBeGreaterThanOrEqual(b.minSize);
        expect(verifyImage(img, { chip: b.chip.name }).ok).toBe(true);
      }),
      { numRuns: 150 },
    );
  });

  it("any single flipped byte makes verify fail or changes a decoded field", () => {
    const fingerprint = (img: Uint8Array) => {
      const { image } = parseImage(img);
      return image
        ? JSON.stringify({
            h: image.header,
            s: image.segments,
            d: image.appDesc && {
              ...image.appDesc,
              appElfSha256: toHex(image.appDesc.appElfSha256),
            },
            e: image.imageEnd,
          })
        : "none";
    };
    const img = buildAppImage({
      chip: "esp32",
      appDesc: { projectName: "p", version: "1" },
      segments: [{ loadAddr: DRAM, data: new Uint8Array(40).fill(7) }],
    });
    const before = fingerprint(img);
    // Exhaustive over every byte with one bit pattern, then random positions and masks.
    const check = (pos: number, mask: number) => {
      const m = img.slice();
      m[pos]! ^= mask;
      const ok = verifyImage(m, { chip: "esp32" }).ok;
      expect(!ok || fingerprint(m) !== before, `byte ${pos} ^ ${mask}`).toBe(true);
    };
    for (let pos = 0; pos < img.length; pos++) check(pos, 0x01);
    fc.assert(
      fc.property(fc.nat({ max: img.length - 1 }), fc.integer({ min: 1, max: 255 }), check),
      { numRuns: 500 },
    );
  });

  it("without the SHA-256, a flip in the checksum padding goes unnoticed (as on a device)", () => {
    const img = buildAppImage({
      chip: "esp32",
      appDesc: { projectName: "p", version: "1" },
      hashAppended: false,
    });
    const p = mustParse(img);
    const padStart = p.segments.at(-1)!.offset + p.segments.at(-1)!.length;
    expect(p.checksumOffset).toBeGreaterThan(padStart);
    const m = img.slice();
    m[padStart] = 0x55;
    expect(verifyImage(m, { chip: "esp32" }).ok).toBe(true);
  });

  const noCrash = (bytes: Uint8Array) => {
    const r = parseImage(bytes);
    expect(Array.isArray(r.problems)).toBe(true);
    if (!r.image) expect(r.problems.length).toBeGreaterThan(0);
    for (const p of r.problems) expect(p.code).toMatch(/^E_IMAGE_/);
    const v = verifyImage(bytes, { chip: "esp32" });
    expect(typeof v.ok).toBe("boolean");
    try {
      expect(typeof formatImageInfo(bytes)).toBe("string");
    } catch (e) {
      expect(isEspOtaError(e), String(e)).toBe(true);
    }
  };

  it("random bytes never crash the parser, the verifier or image-info", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), noCrash), { numRuns: 500 });
    // The same with a valid magic and plausible header, so the segment walk is exercised.
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 24, maxLength: 400 }), fc.nat({ max: 20 }), (b, n) => {
        b[0] = 0xe9;
        b[1] = n;
        noCrash(b);
      }),
      { numRuns: 500 },
    );
  });

  it("every truncation of a valid image is reported as E_IMAGE_TRUNCATED, never a crash", () => {
    const img = buildAppImage({
      chip: "esp32s2",
      appDesc: { projectName: "p", version: "1" },
      segments: [{ loadAddr: 0x3ffb0000, data: new Uint8Array(20).fill(3) }],
    });
    for (let n = 0; n < img.length; n++) {
      const cut = img.subarray(0, n);
      noCrash(cut);
      expect(codes(parseImage(cut).problems)).toContain("E_IMAGE_TRUNCATED");
    }
  });

  it("random byte edits of a real image never crash", () => {
    const real = fixture("images/esp_idf_blink_esp32s2.bin").subarray(0, 0x400);
    const head = buildAppImage({
      chip: "esp32s2",
      appDesc: { projectName: "p", version: "1" },
      minSize: 2000,
    });
    fc.assert(
      fc.property(
        fc.constantFrom(real, head),
        fc.array(fc.tuple(fc.nat({ max: 0x3ff }), fc.nat({ max: 255 })), { maxLength: 6 }),
        (src, edits) => {
          const b = src.slice();
          for (const [pos, v] of edits) if (pos < b.length) b[pos] = v;
          noCrash(b);
        },
      ),
      { numRuns: 300 },
    );
  });
});
