/**
 * ESP32 (classic) flash encryption, byte-exact with espsecure v5 `encrypt-flash-data` /
 * `decrypt-flash-data` without `--aes-xts` (esptool `espsecure/__init__.py`:
 * `_flash_encryption_tweak_range_bits`, `_flash_encryption_tweak_key`,
 * `_flash_encryption_operation_esp32`; ESP-IDF `docs/en/security/flash-encryption.rst`).
 *
 * - The key is AES-256. For each 32-byte block of flash the key is XOR-"tweaked" with bits 5..23 of
 *   the block's flash offset. Reading the 32-byte key as a 256-bit big-endian number, key bit n
 *   (n = 0 is the most significant bit of byte 0) flips when bit PATTERN[n] of the offset is set and
 *   the FLASH_CRYPT_CONFIG eFuse enables n's group.
 * - Each 16-byte block is byte-reversed, run through AES-256 and reversed back. The hardware uses
 *   AES inverted: encrypting flash is the AES *decrypt* operation, decrypting is AES *encrypt*.
 *
 * Pure: Uint8Array in, Uint8Array out.
 */
import {
  AES256_SCHEDULE_WORDS,
  decryptBlock256,
  encryptBlock256,
  expandKey256,
  invertSchedule256,
} from "./flash-encryption-aes.js";

/** The ESP32's flash address space is 24 bits (16 MB): the tweak only sees offset bits 5..23. */
export const ESP32_FLASH_ADDRESS_LIMIT = 0x100_0000;

/**
 * Offset bit used by each of the 256 key bits, in four groups (one per FLASH_CRYPT_CONFIG bit):
 * bits 23..5 three times, then a tail 14..5, 12..5, 10..5 and 8..5. Group sizes 67, 65, 63, 61.
 * Source: espsecure `_FLASH_ENCRYPTION_TWEAK_PATTERN`. Checked against espsecure's own tweak
 * function for random offsets below 16 MB (they agree); at 16 MB and above espsecure's
 * multiply-based shortcut spills carries into other bits, which no ESP32 can address, so this
 * module refuses those addresses instead of imitating the artefact.
 */
export const ESP32_TWEAK_PATTERN: readonly number[] = (() => {
  const p: number[] = [];
  for (const tailTop of [14, 12, 10, 8]) {
    for (let rep = 0; rep < 3; rep++) for (let b = 23; b >= 5; b--) p.push(b);
    for (let b = tailTop; b >= 5; b--) p.push(b);
  }
  return p;
})();

/** FLASH_CRYPT_CONFIG bit governing key bit n: groups of 67, 65, 63 and 61 bits. */
function groupOf(n: number): number {
  return n < 67 ? 0 : n < 132 ? 1 : n < 195 ? 2 : 3;
}

/**
 * The tweak (8 big-endian key words) for one 32-byte block, straight from the definition: slow,
 * used to build the lookup tables and by the tests as the reference.
 */
export function esp32KeyTweak(offset: number, flashCryptConf: number): Int32Array {
  const t = new Int32Array(8);
  for (let n = 0; n < 256; n++) {
    if (!((flashCryptConf >> groupOf(n)) & 1)) continue;
    if ((offset >>> ESP32_TWEAK_PATTERN[n]!) & 1) t[n >> 5]! |= 1 << (31 - (n & 31));
  }
  return t;
}

/**
 * The tweak is XOR-linear in the offset bits, so it splits into three tables indexed by offset
 * bits 5..12, 13..20 and 21..23 (256 + 256 + 8 entries of 8 words, 16.6 KB): the tweak of any
 * block is three lookups and 24 XORs instead of a 256-bit loop.
 */
interface TweakTables {
  readonly lo: Int32Array;
  readonly mid: Int32Array;
  readonly hi: Int32Array;
}

const tweakTableCache = new Map<number, TweakTables>();

function tweakTables(flashCryptConf: number): TweakTables {
  const cached = tweakTableCache.get(flashCryptConf);
  if (cached) return cached;
  const bitMask: Int32Array[] = [];
  for (let b = 0; b < 24; b++) bitMask.push(esp32KeyTweak(1 << b, flashCryptConf));
  const build = (firstBit: number, bits: number): Int32Array => {
    const table = new Int32Array((1 << bits) * 8);
    for (let i = 1; i < 1 << bits; i++) {
      const low = i & -i; // lowest set bit: entry i = entry (i - low) ^ mask of that bit
      const prev = (i - low) * 8;
      const mask = bitMask[firstBit + Math.log2(low)]!;
      for (let w = 0; w < 8; w++) table[i * 8 + w] = table[prev + w]! ^ mask[w]!;
    }
    return table;
  };
  const tables = { lo: build(5, 8), mid: build(13, 8), hi: build(21, 3) };
  tweakTableCache.set(flashCryptConf, tables);
  return tables;
}

/** Big-endian 32-bit word of `b` at `off` (the key file's byte order, FIPS-197 word form). */
function be32(b: Uint8Array, off: number): number {
  return (b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!;
}

/**
 * Expands a key file as espsecure `_load_hardware_key` does for the ESP32 scheme: 32 bytes as is,
 * 24 bytes (3/4 coding scheme) as `key ‖ key[8:16]`. The caller has checked the length.
 */
export function esp32ExpandKeyFile(key: Uint8Array): Uint8Array {
  if (key.length === 32) return key.slice();
  const out = new Uint8Array(32);
  out.set(key, 0);
  out.set(key.subarray(8, 16), 24);
  return out;
}

export class Esp32FlashCrypt {
  private readonly baseKey = new Int32Array(8);
  private readonly tables: TweakTables;
  // Scratch reused by every call: one key, its schedule, its inverse schedule, one block.
  private readonly blockKey = new Int32Array(8);
  private readonly ek = new Int32Array(AES256_SCHEDULE_WORDS);
  private readonly dk = new Int32Array(AES256_SCHEDULE_WORDS);
  private readonly blk = new Int32Array(4);

  /** `key32`: the 32-byte (already expanded) key; `flashCryptConf`: 0..15. */
  constructor(key32: Uint8Array, flashCryptConf: number) {
    for (let w = 0; w < 8; w++) this.baseKey[w] = be32(key32, w * 4);
    this.tables = tweakTables(flashCryptConf);
  }

  /**
   * Encrypts (`decrypt` false) or decrypts 16-aligned `data` found at flash `address`, into the
   * start of `into` when given (at least data.length bytes; `data` itself or not overlapping it:
   * each block is read whole before it is written). The caller has checked alignment, the 16 MB
   * limit and `into`.
   */
  run(address: number, data: Uint8Array, decrypt: boolean, into?: Uint8Array): Uint8Array {
    const len = data.length;
    let out: Uint8Array;
    if (into) out = into.subarray(0, len);
    else {
      const backing = Buffer.allocUnsafeSlow(len); // every byte is written below
      out = new Uint8Array(backing.buffer, backing.byteOffset, len);
    }
    const src = new DataView(data.buffer, data.byteOffset, len);
    const dst = new DataView(out.buffer, out.byteOffset, len);
    const { lo, mid, hi } = this.tables;
    const { baseKey, blockKey, ek, dk, blk } = this;
    let keyFor = -1;
    for (let o = 0; o < len; o += 16) {
      const keyAddr = (address + o) & ~31;
      if (keyAddr !== keyFor) {
        keyFor = keyAddr;
        const l = ((keyAddr >>> 5) & 0xff) * 8;
        const m = ((keyAddr >>> 13) & 0xff) * 8;
        const h = ((keyAddr >>> 21) & 0x7) * 8;
        for (let w = 0; w < 8; w++)
          blockKey[w] = baseKey[w]! ^ lo[l + w]! ^ mid[m + w]! ^ hi[h + w]!;
        expandKey256(blockKey, 0, ek);
        if (!decrypt) invertSchedule256(ek, dk);
      }
      // The byte-reversed block read as big-endian words is the block's little-endian words in
      // reverse order: the reversal costs nothing.
      blk[0] = src.getInt32(o + 12, true);
      blk[1] = src.getInt32(o + 8, true);
      blk[2] = src.getInt32(o + 4, true);
      blk[3] = src.getInt32(o, true);
      // Inverted use of AES (espsecure: "AES is used inverted for flash encryption").
      if (decrypt) encryptBlock256(ek, blk, 0, blk, 0);
      else decryptBlock256(dk, blk, 0, blk, 0);
      dst.setInt32(o + 12, blk[0]!, true);
      dst.setInt32(o + 8, blk[1]!, true);
      dst.setInt32(o + 4, blk[2]!, true);
      dst.setInt32(o, blk[3]!, true);
    }
    return out;
  }
}
