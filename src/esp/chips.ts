/**
 * The ESP32 family as the app image format sees it: the chip id written into every image header,
 * the flash-mapped address windows the bootloader checks, and the tables esptool's `image-info`
 * prints from. Pure data, no I/O.
 *
 * Sources (see docs/formats.md, "App image"):
 * - chip ids: ESP-IDF `components/bootloader_support/include/esp_app_format.h` (`esp_chip_id_t`),
 *   esptool `esptool/targets/*.py` (`IMAGE_CHIP_ID`, `CHIP_NAME`);
 * - flash-mapped windows: ESP-IDF `components/soc/<chip>/include/soc/soc.h` (`SOC_IROM_LOW/HIGH`,
 *   `SOC_DROM_LOW/HIGH`, `SOC_EXTRAM_*` where `SOC_MMU_PER_EXT_MEM_TARGET`), used by
 *   `should_map()` in `esp_image_format.c`;
 * - configurable MMU page sizes: `SOC_MMU_PAGE_SIZE_CONFIGURABLE` in `soc_caps.h` and esptool's
 *   `MMU_PAGE_SIZE_CONF` (`bin_image.py`);
 * - memory maps, flash frequency names: esptool `targets/*.py` (`MEMORY_MAP`, `FLASH_FREQUENCY`);
 * - secure boot / flash encryption: `SOC_SECURE_BOOT_V1`, `SOC_SECURE_BOOT_V2_RSA/ECC`,
 *   `SOC_FLASH_ENCRYPTION_XTS_AES` in each chip's `Kconfig.soc_caps.in` (ESP32 V2 needs rev ≥ 3.0).
 */
import { EspOtaError } from "../errors.js";

export type ChipName =
  | "esp32"
  | "esp32s2"
  | "esp32s3"
  | "esp32c3"
  | "esp32c2"
  | "esp32c6"
  | "esp32h2"
  | "esp32p4"
  | "esp32c61"
  | "esp32c5"
  | "esp32h21"
  | "esp32h4"
  | "esp32s31";

export type SecureBootScheme = "v1" | "v2-rsa" | "v2-ecdsa";

/** One row of esptool's `MEMORY_MAP`: `[start, end)` and the name `image-info` prints. */
export interface MemoryRange {
  readonly start: number;
  readonly end: number;
  readonly type: string;
}

export interface ChipInfo {
  /** esptool's `--chip` spelling. */
  readonly name: ChipName;
  /** `esp_chip_id_t`, header bytes 12..13. */
  readonly id: number;
  /** esptool's `CHIP_NAME`, e.g. "ESP32-S2". */
  readonly displayName: string;
  /** "esp32": the ESP32's own AES-256 scheme; "xts": XTS-AES (IEEE 1619), every later chip. */
  readonly flashEncryption: "esp32" | "xts";
  readonly secureBoot: readonly SecureBootScheme[];
  /** Load address of the builder's first (DROM) segment: its data sits at file offset 0x20. */
  readonly dromAddr: number;
  /** A flash-mapped instruction address the builder uses for the default entry point. */
  readonly iromAddr: number;
  /** Address windows the bootloader maps from flash instead of loading (`should_map()`). */
  readonly flashMapped: readonly { readonly start: number; readonly end: number }[];
  /** MMU page sizes the app descriptor's `mmu_page_size` may select; the first is the default. */
  readonly mmuPageSizes: readonly number[];
  /** esptool's `MEMORY_MAP`, for the "Memory types" column of `image-info`. */
  readonly memoryMap: readonly MemoryRange[];
  /** esptool's `FLASH_FREQUENCY` in its dict order (the first name wins on equal values). */
  readonly flashFrequencies: readonly (readonly [string, number])[];
}

const KB = 1024;

const ESP32_FREQS = [
  ["80m", 0xf],
  ["40m", 0x0],
  ["26m", 0x1],
  ["20m", 0x2],
] as const;
const C5_FREQS = [
  ["80m", 0xf],
  ["40m", 0x0],
  ["20m", 0x2],
] as const;
const H2_FREQS = [
  ["48m", 0xf],
  ["24m", 0x0],
  ["16m", 0x1],
  ["12m", 0x2],
] as const;

function mm(rows: readonly (readonly [number, number, string])[]): MemoryRange[] {
  return rows.map(([start, end, type]) => ({ start, end, type }));
}

const C6_MEMORY_MAP = mm([
  [0x00000000, 0x00010000, "PADDING"],
  [0x42000000, 0x43000000, "DROM"],
  [0x40800000, 0x40880000, "DRAM"],
  [0x40800000, 0x40880000, "BYTE_ACCESSIBLE"],
  [0x4004ac00, 0x40050000, "DROM_MASK"],
  [0x40000000, 0x4004ac00, "IROM_MASK"],
  [0x42000000, 0x43000000, "IROM"],
  [0x40800000, 0x40880000, "IRAM"],
  [0x50000000, 0x50004000, "RTC_IRAM"],
  [0x50000000, 0x50004000, "RTC_DRAM"],
  [0x600fe000, 0x60100000, "MEM_INTERNAL2"],
]);

/** In esptool's `CHIP_DEFS` order, so lookups by id agree with `image-info`. */
export const CHIPS: readonly ChipInfo[] = [
  {
    name: "esp32",
    id: 0,
    displayName: "ESP32",
    flashEncryption: "esp32",
    secureBoot: ["v1", "v2-rsa"],
    dromAddr: 0x3f400020,
    iromAddr: 0x400d0020,
    flashMapped: [
      { start: 0x400d0000, end: 0x40400000 },
      { start: 0x3f400000, end: 0x3f800000 },
    ],
    mmuPageSizes: [64 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x3f400000, 0x3f800000, "DROM"],
      [0x3f800000, 0x3fc00000, "EXTRAM_DATA"],
      [0x3ff80000, 0x3ff82000, "RTC_DRAM"],
      [0x3ff90000, 0x40000000, "BYTE_ACCESSIBLE"],
      [0x3ffae000, 0x40000000, "DRAM"],
      [0x3ffe0000, 0x3ffffffc, "DIRAM_DRAM"],
      [0x40000000, 0x40070000, "IROM"],
      [0x40070000, 0x40078000, "CACHE_PRO"],
      [0x40078000, 0x40080000, "CACHE_APP"],
      [0x40080000, 0x400a0000, "IRAM"],
      [0x400a0000, 0x400bfffc, "DIRAM_IRAM"],
      [0x400c0000, 0x400c2000, "RTC_IRAM"],
      [0x400d0000, 0x40400000, "IROM"],
      [0x50000000, 0x50002000, "RTC_DATA"],
    ]),
    flashFrequencies: ESP32_FREQS,
  },
  {
    name: "esp32s2",
    id: 2,
    displayName: "ESP32-S2",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa"],
    dromAddr: 0x3f000020,
    iromAddr: 0x40080020,
    flashMapped: [
      { start: 0x40080000, end: 0x40800000 },
      { start: 0x3f000000, end: 0x3ff80000 },
    ],
    mmuPageSizes: [64 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x3f000000, 0x3ff80000, "DROM"],
      [0x3f500000, 0x3ff80000, "EXTRAM_DATA"],
      [0x3ff9e000, 0x3ffa0000, "RTC_DRAM"],
      [0x3ff9e000, 0x40000000, "BYTE_ACCESSIBLE"],
      [0x3ff9e000, 0x40072000, "MEM_INTERNAL"],
      [0x3ffb0000, 0x40000000, "DRAM"],
      [0x40000000, 0x4001a100, "IROM_MASK"],
      [0x40020000, 0x40070000, "IRAM"],
      [0x40070000, 0x40072000, "RTC_IRAM"],
      [0x40080000, 0x40800000, "IROM"],
      [0x50000000, 0x50002000, "RTC_DATA"],
    ]),
    flashFrequencies: ESP32_FREQS,
  },
  {
    name: "esp32s3",
    id: 9,
    displayName: "ESP32-S3",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa"],
    dromAddr: 0x3c000020,
    iromAddr: 0x42000020,
    flashMapped: [
      { start: 0x42000000, end: 0x44000000 },
      { start: 0x3c000000, end: 0x3e000000 },
    ],
    mmuPageSizes: [64 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x3c000000, 0x3d000000, "DROM"],
      [0x3d000000, 0x3e000000, "EXTRAM_DATA"],
      [0x600fe000, 0x60100000, "RTC_DRAM"],
      [0x3fc88000, 0x3fd00000, "BYTE_ACCESSIBLE"],
      [0x3fc88000, 0x403e2000, "MEM_INTERNAL"],
      [0x3fc88000, 0x3fd00000, "DRAM"],
      [0x40000000, 0x4001a100, "IROM_MASK"],
      [0x40370000, 0x403e0000, "IRAM"],
      [0x600fe000, 0x60100000, "RTC_IRAM"],
      [0x42000000, 0x42800000, "IROM"],
      [0x50000000, 0x50002000, "RTC_DATA"],
    ]),
    flashFrequencies: ESP32_FREQS,
  },
  {
    name: "esp32c3",
    id: 5,
    displayName: "ESP32-C3",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa"],
    dromAddr: 0x3c000020,
    iromAddr: 0x42000020,
    flashMapped: [
      { start: 0x42000000, end: 0x42800000 },
      { start: 0x3c000000, end: 0x3c800000 },
    ],
    mmuPageSizes: [64 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x3c000000, 0x3c800000, "DROM"],
      [0x3fc80000, 0x3fce0000, "DRAM"],
      [0x3fc88000, 0x3fd00000, "BYTE_ACCESSIBLE"],
      [0x3ff00000, 0x3ff20000, "DROM_MASK"],
      [0x40000000, 0x40060000, "IROM_MASK"],
      [0x42000000, 0x42800000, "IROM"],
      [0x4037c000, 0x403e0000, "IRAM"],
      [0x50000000, 0x50002000, "RTC_IRAM"],
      [0x50000000, 0x50002000, "RTC_DRAM"],
      [0x600fe000, 0x60100000, "MEM_INTERNAL2"],
    ]),
    flashFrequencies: ESP32_FREQS,
  },
  {
    name: "esp32c2",
    id: 12,
    displayName: "ESP32-C2",
    flashEncryption: "xts",
    secureBoot: ["v2-ecdsa"],
    dromAddr: 0x3c000020,
    iromAddr: 0x42000020,
    flashMapped: [
      { start: 0x42000000, end: 0x42400000 },
      { start: 0x3c000000, end: 0x3c400000 },
    ],
    mmuPageSizes: [64 * KB, 32 * KB, 16 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x3c000000, 0x3c400000, "DROM"],
      [0x3fca0000, 0x3fce0000, "DRAM"],
      [0x3fc88000, 0x3fd00000, "BYTE_ACCESSIBLE"],
      [0x3ff00000, 0x3ff50000, "DROM_MASK"],
      [0x40000000, 0x40090000, "IROM_MASK"],
      [0x42000000, 0x42400000, "IROM"],
      [0x4037c000, 0x403c0000, "IRAM"],
    ]),
    flashFrequencies: [
      ["60m", 0xf],
      ["30m", 0x0],
      ["20m", 0x1],
      ["15m", 0x2],
    ],
  },
  {
    name: "esp32c6",
    id: 13,
    displayName: "ESP32-C6",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa", "v2-ecdsa"],
    // Instructions and read-only data share one window (SOC_DROM_LOW == SOC_IROM_LOW); the
    // builder puts data in its upper half, where esptool's DROM_MAP_START (0x42800000) begins.
    dromAddr: 0x42800020,
    iromAddr: 0x42000020,
    flashMapped: [{ start: 0x42000000, end: 0x43000000 }],
    mmuPageSizes: [64 * KB, 32 * KB, 16 * KB, 8 * KB],
    memoryMap: C6_MEMORY_MAP,
    // esptool maps both "80m" and "40m" to 0 (a ROM divider workaround); "80m" comes first.
    flashFrequencies: [
      ["80m", 0x0],
      ["40m", 0x0],
      ["20m", 0x2],
    ],
  },
  {
    name: "esp32c61",
    id: 20,
    displayName: "ESP32-C61",
    flashEncryption: "xts",
    secureBoot: ["v2-ecdsa"],
    dromAddr: 0x43000020,
    iromAddr: 0x42000020,
    flashMapped: [{ start: 0x42000000, end: 0x44000000 }],
    mmuPageSizes: [64 * KB, 32 * KB, 16 * KB, 8 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x42000000, 0x44000000, "DROM"],
      [0x40800000, 0x40860000, "DRAM"],
      [0x40800000, 0x40860000, "BYTE_ACCESSIBLE"],
      [0x4004ac00, 0x40050000, "DROM_MASK"],
      [0x40000000, 0x4004ac00, "IROM_MASK"],
      [0x42000000, 0x44000000, "IROM"],
      [0x40800000, 0x40860000, "IRAM"],
      [0x50000000, 0x50004000, "RTC_IRAM"],
      [0x50000000, 0x50004000, "RTC_DRAM"],
      [0x600fe000, 0x60100000, "MEM_INTERNAL2"],
    ]),
    flashFrequencies: C5_FREQS,
  },
  {
    name: "esp32c5",
    id: 23,
    displayName: "ESP32-C5",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa", "v2-ecdsa"],
    dromAddr: 0x43000020,
    iromAddr: 0x42000020,
    flashMapped: [{ start: 0x42000000, end: 0x44000000 }],
    mmuPageSizes: [64 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x42000000, 0x44000000, "DROM"],
      [0x40800000, 0x40860000, "DRAM"],
      [0x40800000, 0x40860000, "BYTE_ACCESSIBLE"],
      [0x4003a000, 0x40040000, "DROM_MASK"],
      [0x40000000, 0x4003a000, "IROM_MASK"],
      [0x42000000, 0x44000000, "IROM"],
      [0x40800000, 0x40860000, "IRAM"],
      [0x50000000, 0x50004000, "RTC_IRAM"],
      [0x50000000, 0x50004000, "RTC_DRAM"],
      [0x600fe000, 0x60100000, "MEM_INTERNAL2"],
    ]),
    flashFrequencies: C5_FREQS,
  },
  {
    name: "esp32h2",
    id: 16,
    displayName: "ESP32-H2",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa", "v2-ecdsa"],
    dromAddr: 0x42800020,
    iromAddr: 0x42000020,
    flashMapped: [{ start: 0x42000000, end: 0x43000000 }],
    mmuPageSizes: [64 * KB, 32 * KB, 16 * KB, 8 * KB],
    memoryMap: C6_MEMORY_MAP,
    flashFrequencies: H2_FREQS,
  },
  {
    name: "esp32h21",
    id: 25,
    displayName: "ESP32-H21",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa"],
    dromAddr: 0x42800020,
    iromAddr: 0x42000020,
    flashMapped: [{ start: 0x42000000, end: 0x43000000 }],
    mmuPageSizes: [64 * KB, 32 * KB, 16 * KB, 8 * KB],
    memoryMap: C6_MEMORY_MAP,
    flashFrequencies: H2_FREQS,
  },
  {
    name: "esp32p4",
    id: 18,
    displayName: "ESP32-P4",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa", "v2-ecdsa"],
    dromAddr: 0x42000020,
    iromAddr: 0x40000020,
    flashMapped: [
      { start: 0x40000000, end: 0x44000000 },
      { start: 0x48000000, end: 0x4c000000 },
    ],
    mmuPageSizes: [64 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x40000000, 0x4c000000, "DROM"],
      [0x4ff00000, 0x4ffa0000, "DRAM"],
      [0x4ff00000, 0x4ffa0000, "BYTE_ACCESSIBLE"],
      [0x4fc00000, 0x4fc20000, "DROM_MASK"],
      [0x4fc00000, 0x4fc20000, "IROM_MASK"],
      [0x40000000, 0x4c000000, "IROM"],
      [0x4ff00000, 0x4ffa0000, "IRAM"],
      [0x50108000, 0x50110000, "RTC_IRAM"],
      [0x50108000, 0x50110000, "RTC_DRAM"],
      [0x600fe000, 0x60100000, "MEM_INTERNAL2"],
    ]),
    flashFrequencies: ESP32_FREQS,
  },
  {
    name: "esp32h4",
    id: 28,
    displayName: "ESP32-H4",
    flashEncryption: "xts",
    // Kconfig.soc_caps.in: neither SOC_SECURE_BOOT_V2_RSA nor _ECC yet.
    secureBoot: [],
    dromAddr: 0x43000020,
    iromAddr: 0x42000020,
    flashMapped: [{ start: 0x42000000, end: 0x44000000 }],
    mmuPageSizes: [64 * KB, 32 * KB, 16 * KB, 8 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x42000000, 0x44000000, "DROM"],
      [0x40810000, 0x40860000, "DRAM"],
      [0x40810000, 0x40860000, "BYTE_ACCESSIBLE"],
      [0x40000000, 0x40050000, "DROM_MASK"],
      [0x40000000, 0x40050000, "IROM_MASK"],
      [0x42000000, 0x44000000, "IROM"],
      [0x40810000, 0x40860000, "IRAM"],
      [0x50000000, 0x50004000, "RTC_IRAM"],
      [0x50000000, 0x50004000, "RTC_DRAM"],
      [0x60000000, 0x60100000, "MEM_INTERNAL2"],
    ]),
    flashFrequencies: H2_FREQS,
  },
  {
    name: "esp32s31",
    id: 32,
    displayName: "ESP32-S31",
    flashEncryption: "xts",
    secureBoot: ["v2-rsa"],
    dromAddr: 0x42000020,
    iromAddr: 0x40000020,
    flashMapped: [
      { start: 0x40000000, end: 0x44000000 },
      { start: 0x50000000, end: 0x54000000 },
    ],
    mmuPageSizes: [64 * KB, 32 * KB, 128 * KB, 256 * KB],
    memoryMap: mm([
      [0x00000000, 0x00010000, "PADDING"],
      [0x40000000, 0x54000000, "DROM"],
      [0x2f000000, 0x2f080000, "DRAM"],
      [0x2f000000, 0x2f080000, "BYTE_ACCESSIBLE"],
      [0x2f800000, 0x2f850000, "DROM_MASK"],
      [0x2f800000, 0x2f850000, "IROM_MASK"],
      [0x40000000, 0x54000000, "IROM"],
      [0x2f000000, 0x2f080000, "IRAM"],
      [0x2e000000, 0x2e008000, "RTC_IRAM"],
      [0x2e000000, 0x2e008000, "RTC_DRAM"],
    ]),
    flashFrequencies: C5_FREQS,
  },
];

/**
 * Looks a chip up by esptool's name; "ESP32-S3" and "esp32-s3" are accepted too (esptool strips
 * "-" and case the same way). An unknown name is a user error, so it throws a coded error.
 */
export function chipByName(name: string): ChipInfo {
  const key = name.toLowerCase().replace(/[-()]/g, "");
  const chip = CHIPS.find((c) => c.name === key);
  if (!chip) {
    throw new EspOtaError(
      "E_CHIP_UNKNOWN",
      `unknown chip "${name}": expected one of ${CHIPS.map((c) => c.name).join(", ")}`,
      { chip: name },
    );
  }
  return chip;
}

export function chipById(id: number): ChipInfo | undefined {
  return CHIPS.find((c) => c.id === id);
}

/** `should_map()` in esp_image_format.c: the bootloader maps this address from flash. */
export function isFlashMapped(chip: ChipInfo, addr: number): boolean {
  return chip.flashMapped.some((r) => addr >= r.start && addr < r.end);
}

/** esptool's `get_memory_type`: every MEMORY_MAP row whose range holds `addr`, in table order. */
export function memoryTypes(chip: ChipInfo, addr: number): string[] {
  return chip.memoryMap.filter((r) => r.start <= addr && addr < r.end).map((r) => r.type);
}
