/**
 * Per-chip facts the ROM loader's two sides share: how a chip is recognised and where its eFuse
 * words are. Each from esptool v5.3.1 `esptool/targets/<chip>.py`:
 *  - ESP32: CHIP_DETECT_MAGIC_VALUE 0x00F01D83 read at 0x40001000 (loader.py
 *    CHIP_DETECT_MAGIC_REG_ADDR); EFUSE_RD_REG_BASE 0x3FF5A000; read_mac = words 2 and 1 packed
 *    big-endian, the first 2 bytes (the MAC CRC and padding) dropped; FLASH_CRYPT_CNT = word 0
 *    bits 20–26; ABS_DONE_0/1 = word 6 bits 4/5; DISABLE_DL_ENCRYPT = word 6 bit 7;
 *    UART_CLKDIV_REG 0x3FF40014; APB_CTL_DATE 0x3FF6607C.
 *  - ESP32-S3: IMAGE_CHIP_ID 9, recognised by GET_SECURITY_INFO's chip id (loader.py
 *    detect_chip); EFUSE_BASE 0x60007000, MAC_EFUSE_REG 0x60007044 (mac0, then mac1 at +4).
 */
import type { SimChip } from "../sim/efuse.js";

export const CHIP_DETECT_MAGIC_REG = 0x40001000;

export interface RomChip {
  name: SimChip;
  /** What esptool prints. */
  description: string;
  /** Value at CHIP_DETECT_MAGIC_REG, for chips recognised that way. */
  magic?: number;
  /** esp_image chip id, reported by GET_SECURITY_INFO on chips that have it. */
  chipId?: number;
  /** The ROM answers GET_SECURITY_INFO (ESP32-S2 and later; not the ESP32). */
  hasSecurityInfo: boolean;
  /** The ROM's FLASH_BEGIN takes the 5th word, the encrypt flag (not the ESP32's). */
  flashBeginEncryptWord: boolean;
  /** Addresses of the two MAC words, in esptool's read order (high word first). */
  macRegs: readonly [number, number];
  /** The ROM has READ_FLASH_SLOW (0x0E). */
  readFlashSlow: boolean;
  /** Bootloader offset (where write-flash would patch the header). */
  bootloaderOffset: number;
}

export const ROM_CHIPS: Record<SimChip, RomChip> = {
  esp32: {
    name: "esp32",
    description: "ESP32",
    magic: 0x00f01d83,
    hasSecurityInfo: false,
    flashBeginEncryptWord: false,
    macRegs: [0x3ff5a008, 0x3ff5a004],
    readFlashSlow: true,
    bootloaderOffset: 0x1000,
  },
  esp32s3: {
    name: "esp32s3",
    description: "ESP32-S3",
    chipId: 9,
    hasSecurityInfo: true,
    flashBeginEncryptWord: true,
    macRegs: [0x60007048, 0x60007044],
    readFlashSlow: false,
    bootloaderOffset: 0x0,
  },
};

export const ESP32_EFUSE_BASE = 0x3ff5a000;
export const ESP32_UART_CLKDIV_REG = 0x3ff40014;
export const ESP32_APB_CTL_DATE = 0x3ff6607c;
export const ESP32S3_EFUSE_BASE = 0x60007000;

/** MAC from the two words in `macRegs` order [esp32.py read_mac: pack(">II", hi, lo)[2:8]]. */
export function macFromWords(hi: number, lo: number): Uint8Array {
  return Uint8Array.from([
    (hi >>> 8) & 0xff,
    hi & 0xff,
    (lo >>> 24) & 0xff,
    (lo >>> 16) & 0xff,
    (lo >>> 8) & 0xff,
    lo & 0xff,
  ]);
}

/** The inverse, as the eFuse block holds it (the CRC byte of word 2 left 0 here). */
export function macToWords(mac: Uint8Array): [hi: number, lo: number] {
  if (mac.length !== 6) throw new RangeError(`a MAC is 6 bytes, got ${mac.length}`);
  const hi = ((mac[0]! << 8) | mac[1]!) >>> 0;
  const lo = ((mac[2]! << 24) | (mac[3]! << 16) | (mac[4]! << 8) | mac[5]!) >>> 0;
  return [hi, lo];
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}
