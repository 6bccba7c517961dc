/**
 * eFuses: one-way bits. A burn can only set bits; asking for a value that needs a bit cleared,
 * or writing a key block twice, or touching a write-protected field is refused
 * (E_SIM_EFUSE_BURN), as espefuse and the hardware refuse it.
 *
 * Modelled fields (ESP32: TRM ch. 20 "eFuse Controller"; ESP32-S3: TRM "eFuse Controller";
 * esp32-facts §1.5, §4.2, §5): MAC, the flash-encryption key and its counter, FLASH_CRYPT_CONFIG
 * (ESP32), the Secure Boot V1 enable (ABS_DONE_0), the Secure Boot V2 enable and key digests with
 * revocation, the anti-rollback secure_version (a thermometer code: its value is the number of
 * set bits), and the download-mode restrictions that distinguish development from release mode.
 */
import { EspOtaError } from "../errors.js";

export type SimChip = "esp32" | "esp32s3";

interface ChipEfuseLayout {
  /** Bits in FLASH_CRYPT_CNT (ESP32) / SPI_BOOT_CRYPT_CNT (S2 and later). */
  cryptCntBits: number;
  /** Bits of the secure_version thermometer (esp32-facts §1.5). */
  secureVersionBits: number;
  /** Secure Boot V2 key digest slots (ESP32 v3: one, in BLOCK2; S3: three key blocks). */
  sbv2DigestSlots: number;
  flashEncryption: "esp32" | "xts";
  /** Allowed flash-encryption key lengths in bytes. */
  feKeyLengths: readonly number[];
  secureBoot: readonly ("v1" | "v2")[];
}

export const EFUSE_LAYOUT: Record<SimChip, ChipEfuseLayout> = {
  esp32: {
    cryptCntBits: 7,
    secureVersionBits: 32,
    sbv2DigestSlots: 1,
    flashEncryption: "esp32",
    feKeyLengths: [32, 24],
    secureBoot: ["v1", "v2"],
  },
  esp32s3: {
    cryptCntBits: 3,
    secureVersionBits: 16,
    sbv2DigestSlots: 3,
    flashEncryption: "xts",
    feKeyLengths: [32, 64],
    secureBoot: ["v2"],
  },
};

export interface EfuseSnapshot {
  chip: SimChip;
  mac: string;
  flashCryptCnt: number;
  flashCryptConfig: number;
  flashEncryptionKey?: string;
  keyReadProtected: boolean;
  secureBootV1: boolean;
  secureBootV2: boolean;
  sbv2Digests: (string | null)[];
  sbv2Revoked: boolean[];
  secureVersion: number;
  downloadEncryptDisabled: boolean;
  downloadDecryptDisabled: boolean;
  cryptCntWriteProtected: boolean;
  /**
   * ENABLE_SECURITY_DOWNLOAD (S2 and later): the ROM loader runs as Secure Download Mode
   * (esp32-facts §6.3; src/sim/rom-loader.ts). Optional: state files from before it restore as 0.
   */
  secureDownloadMode?: boolean;
  /** UART_DOWNLOAD_DIS (ESP32 v3) / DIS_DOWNLOAD_MODE (S2 and later): no ROM loader at all. */
  downloadModeDisabled?: boolean;
  /**
   * espefuse fields the boot path does not read (JTAG, WR_DIS/RD_DIS, key purposes...), by
   * espefuse name, as src/provision/espefuse.ts burns them. Absent = all 0.
   */
  fields?: Record<string, number>;
}

function popcount(v: number): number {
  let n = 0;
  for (let x = v >>> 0; x; x &= x - 1) n++;
  return n;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));

export class Efuses {
  readonly chip: SimChip;
  readonly layout: ChipEfuseLayout;
  private state: EfuseSnapshot;

  constructor(chip: SimChip, mac: Uint8Array) {
    if (mac.length !== 6) throw new RangeError(`Efuses: MAC must be 6 bytes, got ${mac.length}`);
    this.chip = chip;
    this.layout = EFUSE_LAYOUT[chip];
    this.state = {
      chip,
      mac: hex(mac),
      flashCryptCnt: 0,
      flashCryptConfig: 0,
      keyReadProtected: false,
      secureBootV1: false,
      secureBootV2: false,
      sbv2Digests: Array.from({ length: this.layout.sbv2DigestSlots }, () => null),
      sbv2Revoked: Array.from({ length: this.layout.sbv2DigestSlots }, () => false),
      secureVersion: 0,
      downloadEncryptDisabled: false,
      downloadDecryptDisabled: false,
      cryptCntWriteProtected: false,
    };
  }

  get mac(): Uint8Array {
    return unhex(this.state.mac);
  }

  /** Odd number of set counter bits = flash encryption on (esp32-facts §4.2). */
  get flashEncryptionEnabled(): boolean {
    return popcount(this.state.flashCryptCnt) % 2 === 1;
  }

  get flashCryptCnt(): number {
    return this.state.flashCryptCnt;
  }

  /** Release mode: download-mode encryption disabled and the counter write-protected. */
  get flashEncryptionMode(): "disabled" | "development" | "release" {
    if (!this.flashEncryptionEnabled) return "disabled";
    return this.state.downloadEncryptDisabled && this.state.cryptCntWriteProtected
      ? "release"
      : "development";
  }

  get flashCryptConfig(): number {
    return this.state.flashCryptConfig;
  }

  /** The key as the flash controller uses it; undefined when none was burned. */
  get flashEncryptionKey(): Uint8Array | undefined {
    return this.state.flashEncryptionKey === undefined
      ? undefined
      : unhex(this.state.flashEncryptionKey);
  }

  get keyReadProtected(): boolean {
    return this.state.keyReadProtected;
  }

  get secureBootVersion(): 0 | 1 | 2 {
    return this.state.secureBootV2 ? 2 : this.state.secureBootV1 ? 1 : 0;
  }

  get sbv2Digests(): (Uint8Array | undefined)[] {
    return this.state.sbv2Digests.map((d) => (d === null ? undefined : unhex(d)));
  }

  get sbv2Revoked(): boolean[] {
    return [...this.state.sbv2Revoked];
  }

  /** The anti-rollback secure_version: the number of set thermometer bits. */
  get secureVersion(): number {
    return popcount(this.state.secureVersion);
  }

  get maxSecureVersion(): number {
    return this.layout.secureVersionBits;
  }

  burnFlashEncryptionKey(key: Uint8Array, readProtect = true): void {
    if (this.state.flashEncryptionKey !== undefined)
      this.refuse("the flash-encryption key block is already programmed");
    if (!this.layout.feKeyLengths.includes(key.length)) {
      this.refuse(
        `a ${this.chip} flash-encryption key is ${this.layout.feKeyLengths.join(" or ")} bytes, not ${key.length}`,
      );
    }
    this.state.flashEncryptionKey = hex(key);
    this.state.keyReadProtected = readProtect;
  }

  burnFlashCryptConfig(conf: number): void {
    if (this.chip !== "esp32") this.refuse("FLASH_CRYPT_CONFIG exists on the ESP32 only");
    this.burnBits("flashCryptConfig", conf, 4);
  }

  /** Sets the next counter bit (what the bootloader does when it encrypts the flash). */
  incrementFlashCryptCnt(): void {
    if (this.state.cryptCntWriteProtected)
      this.refuse("FLASH_CRYPT_CNT is write-protected (release mode)");
    const bits = this.state.flashCryptCnt;
    const next = bits | ((bits + 1) & ~bits);
    if (next >= 1 << this.layout.cryptCntBits) this.refuse("FLASH_CRYPT_CNT has no bits left");
    this.state.flashCryptCnt = next;
  }

  /** Release mode (esp32-facts §4.2): no more encrypted writes from download mode, counter locked. */
  enableReleaseMode(): void {
    this.state.downloadEncryptDisabled = true;
    this.state.downloadDecryptDisabled = true;
    this.state.cryptCntWriteProtected = true;
  }

  get secureDownloadMode(): boolean {
    return this.state.secureDownloadMode === true;
  }

  get downloadModeDisabled(): boolean {
    return this.state.downloadModeDisabled === true;
  }

  /** ENABLE_SECURITY_DOWNLOAD: the ESP32 has none (only UART_DOWNLOAD_DIS, esp32-facts §6.3). */
  enableSecureDownloadMode(): void {
    if (this.chip === "esp32") this.refuse("the ESP32 has no Secure Download Mode");
    this.state.secureDownloadMode = true;
  }

  /** UART_DOWNLOAD_DIS / DIS_DOWNLOAD_MODE: the ROM never enters its serial loader again. */
  disableDownloadMode(): void {
    this.state.downloadModeDisabled = true;
  }

  enableSecureBootV1(): void {
    if (!this.layout.secureBoot.includes("v1")) this.refuse(`${this.chip} has no Secure Boot V1`);
    if (this.state.secureBootV2) this.refuse("Secure Boot V2 is already enabled");
    this.state.secureBootV1 = true;
  }

  burnSbv2Digest(slot: number, digest: Uint8Array): void {
    if (digest.length !== 32) throw new RangeError("a Secure Boot V2 key digest is 32 bytes");
    if (slot < 0 || slot >= this.layout.sbv2DigestSlots)
      this.refuse(
        `${this.chip} has ${this.layout.sbv2DigestSlots} key digest slot(s); ${slot} does not exist`,
      );
    if (this.state.sbv2Digests[slot] !== null)
      this.refuse(`key digest slot ${slot} is already programmed`);
    this.state.sbv2Digests[slot] = hex(digest);
  }

  enableSecureBootV2(): void {
    if (!this.layout.secureBoot.includes("v2")) this.refuse(`${this.chip} has no Secure Boot V2`);
    if (this.state.secureBootV1) this.refuse("Secure Boot V1 is already enabled");
    if (this.state.sbv2Digests.every((d) => d === null))
      this.refuse("no Secure Boot V2 key digest is burned");
    this.state.secureBootV2 = true;
  }

  revokeSbv2Key(slot: number): void {
    if (slot < 0 || slot >= this.layout.sbv2DigestSlots)
      this.refuse(`key slot ${slot} does not exist`);
    if (this.chip === "esp32")
      this.refuse("the ESP32 has a single Secure Boot V2 key and cannot revoke it");
    this.state.sbv2Revoked[slot] = true;
  }

  /** Raise secure_version to at least `version` (bootloader/app anti-rollback); never lowers it. */
  burnSecureVersion(version: number): void {
    if (!Number.isInteger(version) || version < 0 || version > this.layout.secureVersionBits) {
      this.refuse(
        `secure_version ${version} does not fit the ${this.layout.secureVersionBits}-bit eFuse field`,
      );
    }
    if (version <= this.secureVersion) return;
    this.state.secureVersion = (this.state.secureVersion | (2 ** version - 1)) >>> 0;
  }

  /** A named field from `fields` (0 when never burned). */
  field(name: string): number {
    return this.state.fields?.[name] ?? 0;
  }

  /** Burn bits of a named field (one-way: the result is the OR of old and new bits). */
  burnField(name: string, value: number, bits: number): void {
    if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits)
      this.refuse(`${name} ${value} does not fit ${bits} bits`);
    const fields = this.state.fields ?? {};
    fields[name] = ((fields[name] ?? 0) | value) >>> 0;
    this.state.fields = fields;
  }

  snapshot(): EfuseSnapshot {
    return structuredClone(this.state);
  }

  static restore(s: EfuseSnapshot): Efuses {
    if (!(s.chip in EFUSE_LAYOUT) || typeof s.mac !== "string" || s.mac.length !== 12) {
      throw new EspOtaError("E_SIM_STATE_FILE", "eFuse section is not valid");
    }
    const e = new Efuses(s.chip, unhex(s.mac));
    e.state = structuredClone(s);
    return e;
  }

  private burnBits(field: "flashCryptConfig", value: number, bits: number): void {
    if (!Number.isInteger(value) || value < 0 || value >= 1 << bits)
      this.refuse(`${field} ${value} does not fit ${bits} bits`);
    const current = this.state[field];
    if ((current & ~value) !== 0) this.refuse(`${field}: ${current} → ${value} would clear a bit`);
    this.state[field] = value;
  }

  private refuse(why: string): never {
    throw new EspOtaError("E_SIM_EFUSE_BURN", `eFuse burn refused: ${why}`, { chip: this.chip });
  }
}
