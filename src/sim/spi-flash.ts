/**
 * The flash as software on the chip sees it: the raw NOR array plus the flash-encryption block
 * in front of it. With flash encryption on, an encrypted write encrypts with the device key *at
 * that address* before programming (esp_flash_write_encrypted: 16-byte aligned offset and
 * length), a read through the cache decrypts (esp_flash_read_encrypted / mmap), and a raw read
 * returns the ciphertext as it sits in the cells (esp32-facts §4.3).
 */

import { EspOtaError } from "../errors.js";
import type { FlashCipher } from "../esp/flash-encryption.js";
import type { NorFlash } from "./flash.js";

const ALIGN = 16;

export class SpiFlash {
  constructor(
    readonly chip: NorFlash,
    /** Present when flash encryption is enabled in eFuse; the key never leaves it. */
    private readonly cipher: FlashCipher | undefined,
  ) {}

  get encryptionEnabled(): boolean {
    return this.cipher !== undefined;
  }

  readRaw(address: number, length: number): Uint8Array {
    return this.chip.read(address, length);
  }

  writeRaw(address: number, data: Uint8Array): void {
    this.chip.program(address, data);
  }

  erase(address: number, length: number): void {
    this.chip.eraseRange(address, length);
  }

  /** esp_flash_write_encrypted: needs 16-byte alignment; plain write when encryption is off. */
  writeEncrypted(address: number, data: Uint8Array): void {
    if (!this.cipher) {
      this.chip.program(address, data);
      return;
    }
    if (address % ALIGN !== 0 || data.length % ALIGN !== 0) {
      throw new EspOtaError(
        "E_SIM_FLASH_ALIGN",
        `encrypted write 0x${address.toString(16)}+${data.length} is not 16-byte aligned`,
        { address, length: data.length },
      );
    }
    this.chip.program(address, this.cipher.encrypt(address, data));
  }

  /** The cache's view: decrypted when encryption is on, any alignment. */
  readDecrypted(address: number, length: number): Uint8Array {
    if (!this.cipher || length === 0) return this.chip.read(address, length);
    const start = address - (address % ALIGN);
    const end = Math.ceil((address + length) / ALIGN) * ALIGN;
    const plain = this.cipher.decrypt(start, this.chip.read(start, end - start));
    return plain.subarray(address - start, address - start + length);
  }

  /** esp_partition_read semantics: decrypt iff the region is encrypted. */
  read(address: number, length: number, encrypted: boolean): Uint8Array {
    return encrypted ? this.readDecrypted(address, length) : this.readRaw(address, length);
  }

  /** esp_partition_write semantics: encrypt iff the region is encrypted. */
  write(address: number, data: Uint8Array, encrypted: boolean): void {
    if (encrypted) this.writeEncrypted(address, data);
    else this.writeRaw(address, data);
  }
}
