/**
 * espefuse's view of a simulated chip: named fields with their write- and read-protection bits
 * (espefuse efuse_defs/esp32.yaml, esp32s3.yaml: `wr_dis`, `rd_dis`), its commands (burn-efuse,
 * burn-key, write-protect-efuse, read-protect-efuse, summary --format json) and its refusals
 * (write-protected field, key block not empty, bits that cannot be cleared, RD_DIS locked, no
 * connection once download mode is disabled or secure). Fields the boot path reads go to the
 * simulator's Efuses; the rest are kept by name (Efuses.field / burnField).
 */
import type { Efuses, SimChip } from "../sim/efuse.js";

interface FieldDef {
  bits: number;
  wrDis: number | null;
  rdDis?: number;
  key?: boolean;
}

const ESP32_FIELDS: Record<string, FieldDef> = {
  WR_DIS: { bits: 16, wrDis: 1 },
  RD_DIS: { bits: 4, wrDis: 0 },
  FLASH_CRYPT_CNT: { bits: 7, wrDis: 2 },
  UART_DOWNLOAD_DIS: { bits: 1, wrDis: 2 },
  FLASH_CRYPT_CONFIG: { bits: 4, wrDis: 10, rdDis: 3 },
  CODING_SCHEME: { bits: 2, wrDis: 10, rdDis: 3 },
  CONSOLE_DEBUG_DISABLE: { bits: 1, wrDis: 15 },
  ABS_DONE_0: { bits: 1, wrDis: 12 },
  ABS_DONE_1: { bits: 1, wrDis: 13 },
  JTAG_DISABLE: { bits: 1, wrDis: 14 },
  DISABLE_DL_ENCRYPT: { bits: 1, wrDis: 15 },
  DISABLE_DL_DECRYPT: { bits: 1, wrDis: 15 },
  DISABLE_DL_CACHE: { bits: 1, wrDis: 15 },
  BLOCK1: { bits: 256, wrDis: 7, rdDis: 0, key: true },
  BLOCK2: { bits: 256, wrDis: 8, rdDis: 1, key: true },
  BLOCK3: { bits: 256, wrDis: 9, rdDis: 2, key: true },
};

const S3_FIELDS: Record<string, FieldDef> = {
  WR_DIS: { bits: 32, wrDis: null },
  RD_DIS: { bits: 7, wrDis: 0 },
  DIS_DOWNLOAD_ICACHE: { bits: 1, wrDis: 2 },
  DIS_DOWNLOAD_DCACHE: { bits: 1, wrDis: 2 },
  DIS_FORCE_DOWNLOAD: { bits: 1, wrDis: 2 },
  DIS_USB_OTG: { bits: 1, wrDis: 2 },
  SOFT_DIS_JTAG: { bits: 3, wrDis: 31 },
  DIS_PAD_JTAG: { bits: 1, wrDis: 2 },
  DIS_DOWNLOAD_MANUAL_ENCRYPT: { bits: 1, wrDis: 2 },
  SPI_BOOT_CRYPT_CNT: { bits: 3, wrDis: 4 },
  SECURE_BOOT_KEY_REVOKE0: { bits: 1, wrDis: 5 },
  SECURE_BOOT_KEY_REVOKE1: { bits: 1, wrDis: 6 },
  SECURE_BOOT_KEY_REVOKE2: { bits: 1, wrDis: 7 },
  ...Object.fromEntries(
    [0, 1, 2, 3, 4, 5].map((i) => [`KEY_PURPOSE_${i}`, { bits: 4, wrDis: 8 + i }]),
  ),
  SECURE_BOOT_EN: { bits: 1, wrDis: 15 },
  SECURE_BOOT_AGGRESSIVE_REVOKE: { bits: 1, wrDis: 16 },
  DIS_USB_JTAG: { bits: 1, wrDis: 2 },
  DIS_USB_SERIAL_JTAG: { bits: 1, wrDis: 2 },
  STRAP_JTAG_SEL: { bits: 1, wrDis: 2 },
  DIS_DOWNLOAD_MODE: { bits: 1, wrDis: 18 },
  DIS_DIRECT_BOOT: { bits: 1, wrDis: 18 },
  ENABLE_SECURITY_DOWNLOAD: { bits: 1, wrDis: 18 },
  ...Object.fromEntries(
    [0, 1, 2, 3, 4, 5].map((i) => [
      `BLOCK_KEY${i}`,
      { bits: 256, wrDis: 23 + i, rdDis: i, key: true },
    ]),
  ),
};

const ALIASES: Record<string, string> = {
  DISABLE_JTAG: "JTAG_DISABLE",
  ENCRYPT_CONFIG: "FLASH_CRYPT_CONFIG",
  HARD_DIS_JTAG: "DIS_PAD_JTAG",
  DIS_LEGACY_SPI_BOOT: "DIS_DIRECT_BOOT",
  DIS_USB: "DIS_USB_OTG",
  ...Object.fromEntries(
    [0, 1, 2, 3, 4, 5].flatMap((i) => [
      [`KEY${i}`, `BLOCK_KEY${i}`],
      [`KEY${i}_PURPOSE`, `KEY_PURPOSE_${i}`],
    ]),
  ),
};

/** KEY_PURPOSE_n values (ESP32-S3 TRM, espefuse esp32s3/mem_definition.py KEY_PURPOSES). */
export const KEY_PURPOSES = [
  "USER",
  "RESERVED",
  "XTS_AES_256_KEY_1",
  "XTS_AES_256_KEY_2",
  "XTS_AES_128_KEY",
  "HMAC_DOWN_ALL",
  "HMAC_DOWN_JTAG",
  "HMAC_DOWN_DIGITAL_SIGNATURE",
  "HMAC_UP",
  "SECURE_BOOT_DIGEST0",
  "SECURE_BOOT_DIGEST1",
  "SECURE_BOOT_DIGEST2",
] as const;

/** A refusal by the tool (espefuse here, esptool or a gate in replay.ts): the command did nothing. */
export class ToolRefused extends Error {}

export class Espefuse {
  private readonly defs: Record<string, FieldDef>;
  constructor(readonly efuses: Efuses) {
    this.defs = efuses.chip === "esp32" ? ESP32_FIELDS : S3_FIELDS;
  }

  get chip(): SimChip {
    return this.efuses.chip;
  }

  /** espefuse needs READ_REG/WRITE_REG: gone with download mode or in Secure Download Mode. */
  connect(): void {
    if (this.efuses.downloadModeDisabled)
      this.refuse(
        "Failed to connect: download mode is disabled in eFuse (UART_DOWNLOAD_DIS / DIS_DOWNLOAD_MODE)",
      );
    if (this.efuses.secureDownloadMode)
      this.refuse(
        "the chip is in Secure Download Mode: espefuse cannot read or burn eFuses (no READ_REG/WRITE_REG)",
      );
  }

  name(n: string): string {
    const up = n.toUpperCase();
    const real = ALIASES[up] ?? up;
    if (!this.defs[real]) this.refuse(`${n} is not an eFuse field of ${this.chip}`);
    return real;
  }

  value(name: string): number {
    const e = this.efuses;
    switch (name) {
      case "FLASH_CRYPT_CNT":
      case "SPI_BOOT_CRYPT_CNT":
        return e.flashCryptCnt;
      case "FLASH_CRYPT_CONFIG":
        return e.flashCryptConfig;
      default:
        return e.field(name);
    }
  }

  writeable(name: string): boolean {
    const d = this.defs[name]!;
    return d.wrDis === null || (this.efuses.field("WR_DIS") & (2 ** d.wrDis)) === 0;
  }

  readable(name: string): boolean {
    const d = this.defs[name]!;
    return d.rdDis === undefined || (this.efuses.field("RD_DIS") & (1 << d.rdDis)) === 0;
  }

  /** `burn-efuse NAME VALUE [NAME VALUE ...]`: every pair checked before any is burned. */
  burnEfuse(pairs: readonly [string, string][]): void {
    this.connect();
    const checked = pairs.map(([n, v]) => {
      const name = this.name(n);
      const d = this.defs[name]!;
      if (d.key) this.refuse(`${name} is a key block: use burn-key`);
      const value = parseValue(v);
      if (value === undefined || value >= 2 ** d.bits)
        this.refuse(`${name}: ${v} does not fit ${d.bits} bit(s)`);
      if (!this.writeable(name)) this.refuse(`${name} is write-protected`);
      const old = this.value(name);
      if ((old & ~value) !== 0)
        this.refuse(
          `${name}: the new value ${v} would clear bits already burned (${old}); eFuses only go from 0 to 1`,
        );
      return { name, value, bits: d.bits };
    });
    for (const t of checked) this.apply(t.name, t.value, t.bits);
    this.syncReleaseMode();
  }

  /** `burn-key BLOCK KEYFILE [PURPOSE] ...` */
  burnKey(
    items: readonly { block: string; key: Uint8Array; purpose?: string }[],
    opts: { noReadProtect?: boolean; noWriteProtect?: boolean } = {},
  ): void {
    this.connect();
    for (const it of items) {
      if (this.chip === "esp32") this.burnKeyEsp32(it.block, it.key, opts);
      else this.burnKeyXts(it.block, it.key, it.purpose, opts);
    }
    this.syncReleaseMode();
  }

  private burnKeyEsp32(
    block: string,
    key: Uint8Array,
    opts: { noReadProtect?: boolean; noWriteProtect?: boolean },
  ): void {
    const b = block.toLowerCase();
    const name =
      b === "flash_encryption"
        ? "BLOCK1"
        : b === "secure_boot_v1" || b === "secure_boot_v2"
          ? "BLOCK2"
          : this.name(block);
    if (name === "BLOCK3" || !this.defs[name]?.key)
      this.refuse(`${block} is not a key block for burn-key`);
    if (this.efuses.field(name) !== 0)
      this.refuse(`${name} is not empty: a key block is burned once`);
    if (!this.writeable(name)) this.refuse(`${name} is write-protected`);
    if (key.length !== 32)
      this.refuse(`${block} takes a 32-byte key file, not ${key.length} bytes`);
    // secure_boot_v2 holds a public-key digest the ROM must read: never read-protected.
    const readProtect = !opts.noReadProtect && b !== "secure_boot_v2";
    if (readProtect && !this.writeable("RD_DIS"))
      this.refuse(`RD_DIS is write-protected: ${name} cannot be read-protected any more`);
    if (name === "BLOCK1") this.efuses.burnFlashEncryptionKey(key, readProtect);
    else if (b === "secure_boot_v2") this.efuses.burnSbv2Digest(0, key);
    this.efuses.burnField(name, 1, 1);
    if (readProtect) this.efuses.burnField("RD_DIS", 1 << this.defs[name]!.rdDis!, 4);
    if (!opts.noWriteProtect) this.efuses.burnField("WR_DIS", 1 << this.defs[name]!.wrDis!, 16);
  }

  private burnKeyXts(
    block: string,
    key: Uint8Array,
    purposeIn: string | undefined,
    opts: { noReadProtect?: boolean; noWriteProtect?: boolean },
  ): void {
    const name = this.name(block);
    const index = Number(name.slice(-1));
    if (!name.startsWith("BLOCK_KEY")) this.refuse(`${block} is not a BLOCK_KEYn`);
    const purpose = (purposeIn ?? "").toUpperCase();
    if (!purpose) this.refuse(`burn-key ${block} needs a key purpose`);
    const blocks: { i: number; p: string; data: Uint8Array }[] =
      purpose === "XTS_AES_256_KEY"
        ? key.length === 64
          ? [
              { i: index, p: "XTS_AES_256_KEY_1", data: key.subarray(0, 32) },
              { i: index + 1, p: "XTS_AES_256_KEY_2", data: key.subarray(32) },
            ]
          : this.refuse(`XTS_AES_256_KEY takes a 64-byte key file, not ${key.length} bytes`)
        : [{ i: index, p: purpose, data: key }];
    for (const { i, p, data } of blocks) {
      if (i > 5) this.refuse(`BLOCK_KEY${i} does not exist`);
      const pi = KEY_PURPOSES.indexOf(p as never);
      if (pi < 0 || p === "RESERVED") this.refuse(`${p} is not a key purpose of ${this.chip}`);
      if (data.length !== 32) this.refuse(`BLOCK_KEY${i} takes 32 bytes, not ${data.length}`);
      if (this.efuses.field(`BLOCK_KEY${i}`) !== 0)
        this.refuse(`BLOCK_KEY${i} is not empty: a key block is burned once`);
      if (!this.writeable(`BLOCK_KEY${i}`) || !this.writeable(`KEY_PURPOSE_${i}`))
        this.refuse(`BLOCK_KEY${i} or its purpose is write-protected`);
      if (pi !== 0 && [0, 1, 2, 3, 4, 5].some((j) => this.efuses.field(`KEY_PURPOSE_${j}`) === pi))
        this.refuse(
          `another key block already has purpose ${p}: two blocks with one purpose (esp-idf#18878)`,
        );
      if (
        p.startsWith("SECURE_BOOT_DIGEST") &&
        this.efuses.field(`SECURE_BOOT_KEY_REVOKE${p.slice(-1)}`)
      )
        this.refuse(`digest slot ${p.slice(-1)} is revoked`);
      const readProtect = !opts.noReadProtect && (p.startsWith("XTS") || p.startsWith("HMAC"));
      if (readProtect && !this.writeable("RD_DIS"))
        this.refuse(
          `RD_DIS is write-protected: BLOCK_KEY${i} (${p}) cannot be read-protected any more`,
        );
    }
    if (purpose.startsWith("XTS")) this.efuses.burnFlashEncryptionKey(key, !opts.noReadProtect);
    for (const { i, p, data } of blocks) {
      if (p.startsWith("SECURE_BOOT_DIGEST")) this.efuses.burnSbv2Digest(Number(p.slice(-1)), data);
      this.efuses.burnField(`BLOCK_KEY${i}`, 1, 1);
      this.efuses.burnField(`KEY_PURPOSE_${i}`, KEY_PURPOSES.indexOf(p as never), 4);
      const readProtect = !opts.noReadProtect && (p.startsWith("XTS") || p.startsWith("HMAC"));
      if (readProtect) this.efuses.burnField("RD_DIS", 1 << i, 7);
      if (!opts.noWriteProtect)
        this.efuses.burnField("WR_DIS", (2 ** (23 + i) + 2 ** (8 + i)) >>> 0, 32);
    }
  }

  writeProtect(names: readonly string[]): void {
    this.connect();
    const bits = names.map((n) => {
      const name = this.name(n);
      const d = this.defs[name]!;
      if (d.wrDis === null) this.refuse(`${name} cannot be write-protected`);
      return d.wrDis;
    });
    for (const b of bits) this.efuses.burnField("WR_DIS", (2 ** b) >>> 0, this.defs.WR_DIS!.bits);
    this.syncReleaseMode();
  }

  readProtect(names: readonly string[]): void {
    this.connect();
    for (const n of names) {
      const name = this.name(n);
      const d = this.defs[name]!;
      if (d.rdDis === undefined) this.refuse(`${name} cannot be read-protected`);
      if (!this.writeable("RD_DIS")) this.refuse("RD_DIS is write-protected");
      this.efuses.burnField("RD_DIS", 1 << d.rdDis, this.defs.RD_DIS!.bits);
    }
  }

  /** `summary --format json`: espefuse's object per field (value, readable, writeable, ...). */
  summaryJson(): Record<string, unknown> {
    this.connect();
    const out: Record<string, unknown> = {};
    const mac = Buffer.from(this.efuses.mac)
      .toString("hex")
      .replace(/(..)(?!$)/g, "$1:");
    out.MAC = { name: "MAC", value: `${mac} (OK)`, readable: true, writeable: false };
    for (const [name, d] of Object.entries(this.defs)) {
      const readable = this.readable(name);
      let value: unknown;
      if (d.key) {
        const burned = this.efuses.field(name) !== 0;
        value = !readable ? "?? ".repeat(32).trim() : burned ? "burned" : "00 ".repeat(32).trim();
      } else if (name.startsWith("KEY_PURPOSE_"))
        value = KEY_PURPOSES[this.value(name)] ?? this.value(name);
      else if (d.bits === 1) value = this.value(name) === 1;
      else value = this.value(name);
      out[name] = { name, value, readable, writeable: this.writeable(name), bit_len: d.bits };
    }
    return out;
  }

  private apply(name: string, value: number, bits: number): void {
    const e = this.efuses;
    if (name === "FLASH_CRYPT_CNT" || name === "SPI_BOOT_CRYPT_CNT") {
      if (((value + 1) & value) !== 0)
        this.refuse(
          `${name} ${value}: the simulator models the counter as bits set from bit 0 up (1, 3, 7, ...)`,
        );
      while (e.flashCryptCnt !== value) e.incrementFlashCryptCnt();
      return;
    }
    if (name === "FLASH_CRYPT_CONFIG") {
      e.burnFlashCryptConfig(value);
      return;
    }
    e.burnField(name, value, bits);
    if (!value) return;
    if (name === "ABS_DONE_0") e.enableSecureBootV1();
    if ((name === "ABS_DONE_1" || name === "SECURE_BOOT_EN") && e.sbv2Digests.some((d) => d))
      e.enableSecureBootV2();
    if (name === "UART_DOWNLOAD_DIS" || name === "DIS_DOWNLOAD_MODE") e.disableDownloadMode();
    if (name === "ENABLE_SECURITY_DOWNLOAD") e.enableSecureDownloadMode();
    if (name.startsWith("SECURE_BOOT_KEY_REVOKE")) e.revokeSbv2Key(Number(name.slice(-1)));
  }

  /** Release mode as the simulator's Efuses know it: download-mode encryption off, counter locked or full. */
  private syncReleaseMode(): void {
    const e = this.efuses;
    if (e.flashEncryptionMode !== "development") return;
    const counter = e.chip === "esp32" ? "FLASH_CRYPT_CNT" : "SPI_BOOT_CRYPT_CNT";
    const dlEnc = e.chip === "esp32" ? "DISABLE_DL_ENCRYPT" : "DIS_DOWNLOAD_MANUAL_ENCRYPT";
    const full = e.flashCryptCnt === 2 ** e.layout.cryptCntBits - 1;
    if (e.field(dlEnc) && (full || !this.writeable(counter))) e.enableReleaseMode();
  }

  private refuse(why: string): never {
    throw new ToolRefused(why);
  }
}

function parseValue(v: string): number | undefined {
  const s = v.trim();
  if (/^0x[0-9a-f]+$/i.test(s)) return Number.parseInt(s.slice(2), 16);
  if (/^\d+$/.test(s)) return Number(s);
  if (/^0b[01]+$/i.test(s)) return Number.parseInt(s.slice(2), 2);
  return undefined;
}
