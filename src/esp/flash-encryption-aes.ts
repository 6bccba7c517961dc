/**
 * A table-driven AES-256 for the ESP32 (classic) flash-encryption scheme, whose key changes every
 * 32 bytes of flash (espsecure `_flash_encryption_operation_esp32`). node:crypto cannot serve that
 * shape: a new `createDecipheriv` per 32 bytes ran at 12–16 MB/s on the 2-core bench machine
 * (docs/benchmarks.md), because each call sets up an OpenSSL context. Here the key schedule is a
 * few hundred table lookups into a reused Int32Array, so a fresh key costs less than the two blocks
 * it encrypts: the ESP32 scheme runs at about 70 MB/s encrypting, 108 MB/s decrypting.
 *
 * The state and round keys are FIPS-197 words: byte 0 of a block is the most significant byte of
 * word 0. The classic "T-table" formulation (FIPS-197 §5.1, §5.3.5 for the equivalent inverse
 * cipher) folds SubBytes, ShiftRows and MixColumns into four 256-entry word tables per direction.
 * Correctness is checked against node:crypto's AES-256-ECB for random keys and blocks in
 * test/esp/flash-encryption.test.ts. Pure: no I/O.
 *
 * Table lookups depend on key and data bytes, so this is not constant-time: right for
 * pre-encrypting images and simulating devices on a host that holds the key file anyway; do not
 * expose it as an encryption service others can time.
 */

/** Forward and inverse S-box and the T-tables, computed once at load (about 13 KB). */
const SBOX = new Uint8Array(256);
const INV_SBOX = new Uint8Array(256);
const TE0 = new Int32Array(256);
const TE1 = new Int32Array(256);
const TE2 = new Int32Array(256);
const TE3 = new Int32Array(256);
const TD0 = new Int32Array(256);
const TD1 = new Int32Array(256);
const TD2 = new Int32Array(256);
const TD3 = new Int32Array(256);
/** InvMixColumns of an encryption round-key word, one byte at a time: TDn[SBOX[x]]. */
const TK0 = new Int32Array(256);
const TK1 = new Int32Array(256);
const TK2 = new Int32Array(256);
const TK3 = new Int32Array(256);

/** Round constants for AES-256 key expansion (FIPS-197 §5.2): 7 are used. */
const RCON = new Int32Array([0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40].map((r) => r << 24));

function initTables(): void {
  // Multiplication in GF(2^8) with the AES polynomial x^8+x^4+x^3+x+1, via log tables of the
  // generator 3 (FIPS-197 §4.2).
  const exp = new Uint8Array(256);
  const log = new Uint8Array(256);
  let x = 1;
  for (let i = 0; i < 255; i++) {
    exp[i] = x;
    log[x] = i;
    x ^= (x << 1) ^ (x & 0x80 ? 0x11b : 0);
    x &= 0xff;
  }
  const mul = (a: number, b: number) => (a === 0 || b === 0 ? 0 : exp[(log[a]! + log[b]!) % 255]!);
  for (let i = 0; i < 256; i++) {
    const inv = i === 0 ? 0 : exp[(255 - log[i]!) % 255]!;
    // Affine transform (FIPS-197 §5.1.1): b ^ rotl(b,1) ^ rotl(b,2) ^ rotl(b,3) ^ rotl(b,4) ^ 0x63.
    let s = inv;
    for (let r = 1; r <= 4; r++) s ^= ((inv << r) | (inv >>> (8 - r))) & 0xff;
    s ^= 0x63;
    SBOX[i] = s;
    INV_SBOX[s] = i;
  }
  for (let i = 0; i < 256; i++) {
    const s = SBOX[i]!;
    // MixColumns column (2,1,1,3) for the byte entering row 0 (FIPS-197 §5.1.3).
    const te = (mul(s, 2) << 24) | (s << 16) | (s << 8) | mul(s, 3);
    TE0[i] = te;
    TE1[i] = (te >>> 8) | (te << 24);
    TE2[i] = (te >>> 16) | (te << 16);
    TE3[i] = (te >>> 24) | (te << 8);
    const si = INV_SBOX[i]!;
    // InvMixColumns column (14,9,13,11) (FIPS-197 §5.3.3).
    const td = (mul(si, 14) << 24) | (mul(si, 9) << 16) | (mul(si, 13) << 8) | mul(si, 11);
    TD0[i] = td;
    TD1[i] = (td >>> 8) | (td << 24);
    TD2[i] = (td >>> 16) | (td << 16);
    TD3[i] = (td >>> 24) | (td << 8);
  }
  for (let i = 0; i < 256; i++) {
    const s = SBOX[i]!;
    TK0[i] = TD0[s]!;
    TK1[i] = TD1[s]!;
    TK2[i] = TD2[s]!;
    TK3[i] = TD3[s]!;
  }
}
initTables();

/** Number of round-key words of AES-256: 15 round keys of 4 words. */
export const AES256_SCHEDULE_WORDS = 60;

/**
 * Expands an AES-256 key given as 8 big-endian words into `ek` (60 words, FIPS-197 §5.2).
 * `key` may be longer than 8 words; `koff` selects where the key starts.
 */
export function expandKey256(key: Int32Array, koff: number, ek: Int32Array): void {
  let w0 = key[koff]!;
  let w1 = key[koff + 1]!;
  let w2 = key[koff + 2]!;
  let w3 = key[koff + 3]!;
  let w4 = key[koff + 4]!;
  let w5 = key[koff + 5]!;
  let w6 = key[koff + 6]!;
  let w7 = key[koff + 7]!;
  ek[0] = w0;
  ek[1] = w1;
  ek[2] = w2;
  ek[3] = w3;
  ek[4] = w4;
  ek[5] = w5;
  ek[6] = w6;
  ek[7] = w7;
  for (let i = 8, r = 0; ; i += 8, r++) {
    // SubWord(RotWord(w7)) ^ Rcon
    w0 ^=
      ((SBOX[(w7 >>> 16) & 0xff]! << 24) |
        (SBOX[(w7 >>> 8) & 0xff]! << 16) |
        (SBOX[w7 & 0xff]! << 8) |
        SBOX[w7 >>> 24]!) ^
      RCON[r]!;
    w1 ^= w0;
    w2 ^= w1;
    w3 ^= w2;
    ek[i] = w0;
    ek[i + 1] = w1;
    ek[i + 2] = w2;
    ek[i + 3] = w3;
    if (i === 56) return;
    // SubWord(w3), no rotation: the extra step of 256-bit keys (FIPS-197 §5.2, Nk > 6).
    w4 ^=
      (SBOX[w3 >>> 24]! << 24) |
      (SBOX[(w3 >>> 16) & 0xff]! << 16) |
      (SBOX[(w3 >>> 8) & 0xff]! << 8) |
      SBOX[w3 & 0xff]!;
    w5 ^= w4;
    w6 ^= w5;
    w7 ^= w6;
    ek[i + 4] = w4;
    ek[i + 5] = w5;
    ek[i + 6] = w6;
    ek[i + 7] = w7;
  }
}

/**
 * Turns an encryption schedule into the schedule of the equivalent inverse cipher (FIPS-197
 * §5.3.5): round keys in reverse order, InvMixColumns applied to rounds 1..13.
 */
export function invertSchedule256(ek: Int32Array, dk: Int32Array): void {
  for (let j = 0; j < 4; j++) {
    dk[j] = ek[56 + j]!;
    dk[56 + j] = ek[j]!;
  }
  for (let r = 1; r < 14; r++) {
    const src = (14 - r) * 4;
    const dst = r * 4;
    for (let j = 0; j < 4; j++) {
      const w = ek[src + j]!;
      dk[dst + j] =
        TK0[w >>> 24]! ^ TK1[(w >>> 16) & 0xff]! ^ TK2[(w >>> 8) & 0xff]! ^ TK3[w & 0xff]!;
    }
  }
}

/**
 * Encrypts one block held as 4 big-endian words at `src[si..si+3]` into `dst[di..di+3]` (may be
 * the same place). 14 rounds: AES-256.
 */
export function encryptBlock256(
  ek: Int32Array,
  src: Int32Array,
  si: number,
  dst: Int32Array,
  di: number,
): void {
  let s0 = src[si]! ^ ek[0]!;
  let s1 = src[si + 1]! ^ ek[1]!;
  let s2 = src[si + 2]! ^ ek[2]!;
  let s3 = src[si + 3]! ^ ek[3]!;
  let k = 4;
  for (let r = 1; r < 14; r++, k += 4) {
    const t0 =
      TE0[s0 >>> 24]! ^
      TE1[(s1 >>> 16) & 0xff]! ^
      TE2[(s2 >>> 8) & 0xff]! ^
      TE3[s3 & 0xff]! ^
      ek[k]!;
    const t1 =
      TE0[s1 >>> 24]! ^
      TE1[(s2 >>> 16) & 0xff]! ^
      TE2[(s3 >>> 8) & 0xff]! ^
      TE3[s0 & 0xff]! ^
      ek[k + 1]!;
    const t2 =
      TE0[s2 >>> 24]! ^
      TE1[(s3 >>> 16) & 0xff]! ^
      TE2[(s0 >>> 8) & 0xff]! ^
      TE3[s1 & 0xff]! ^
      ek[k + 2]!;
    const t3 =
      TE0[s3 >>> 24]! ^
      TE1[(s0 >>> 16) & 0xff]! ^
      TE2[(s1 >>> 8) & 0xff]! ^
      TE3[s2 & 0xff]! ^
      ek[k + 3]!;
    s0 = t0;
    s1 = t1;
    s2 = t2;
    s3 = t3;
  }
  dst[di] =
    ((SBOX[s0 >>> 24]! << 24) |
      (SBOX[(s1 >>> 16) & 0xff]! << 16) |
      (SBOX[(s2 >>> 8) & 0xff]! << 8) |
      SBOX[s3 & 0xff]!) ^
    ek[56]!;
  dst[di + 1] =
    ((SBOX[s1 >>> 24]! << 24) |
      (SBOX[(s2 >>> 16) & 0xff]! << 16) |
      (SBOX[(s3 >>> 8) & 0xff]! << 8) |
      SBOX[s0 & 0xff]!) ^
    ek[57]!;
  dst[di + 2] =
    ((SBOX[s2 >>> 24]! << 24) |
      (SBOX[(s3 >>> 16) & 0xff]! << 16) |
      (SBOX[(s0 >>> 8) & 0xff]! << 8) |
      SBOX[s1 & 0xff]!) ^
    ek[58]!;
  dst[di + 3] =
    ((SBOX[s3 >>> 24]! << 24) |
      (SBOX[(s0 >>> 16) & 0xff]! << 16) |
      (SBOX[(s1 >>> 8) & 0xff]! << 8) |
      SBOX[s2 & 0xff]!) ^
    ek[59]!;
}

/** Decrypts one block (4 big-endian words) with a schedule from `invertSchedule256`. */
export function decryptBlock256(
  dk: Int32Array,
  src: Int32Array,
  si: number,
  dst: Int32Array,
  di: number,
): void {
  let s0 = src[si]! ^ dk[0]!;
  let s1 = src[si + 1]! ^ dk[1]!;
  let s2 = src[si + 2]! ^ dk[2]!;
  let s3 = src[si + 3]! ^ dk[3]!;
  let k = 4;
  for (let r = 1; r < 14; r++, k += 4) {
    const t0 =
      TD0[s0 >>> 24]! ^
      TD1[(s3 >>> 16) & 0xff]! ^
      TD2[(s2 >>> 8) & 0xff]! ^
      TD3[s1 & 0xff]! ^
      dk[k]!;
    const t1 =
      TD0[s1 >>> 24]! ^
      TD1[(s0 >>> 16) & 0xff]! ^
      TD2[(s3 >>> 8) & 0xff]! ^
      TD3[s2 & 0xff]! ^
      dk[k + 1]!;
    const t2 =
      TD0[s2 >>> 24]! ^
      TD1[(s1 >>> 16) & 0xff]! ^
      TD2[(s0 >>> 8) & 0xff]! ^
      TD3[s3 & 0xff]! ^
      dk[k + 2]!;
    const t3 =
      TD0[s3 >>> 24]! ^
      TD1[(s2 >>> 16) & 0xff]! ^
      TD2[(s1 >>> 8) & 0xff]! ^
      TD3[s0 & 0xff]! ^
      dk[k + 3]!;
    s0 = t0;
    s1 = t1;
    s2 = t2;
    s3 = t3;
  }
  dst[di] =
    ((INV_SBOX[s0 >>> 24]! << 24) |
      (INV_SBOX[(s3 >>> 16) & 0xff]! << 16) |
      (INV_SBOX[(s2 >>> 8) & 0xff]! << 8) |
      INV_SBOX[s1 & 0xff]!) ^
    dk[56]!;
  dst[di + 1] =
    ((INV_SBOX[s1 >>> 24]! << 24) |
      (INV_SBOX[(s0 >>> 16) & 0xff]! << 16) |
      (INV_SBOX[(s3 >>> 8) & 0xff]! << 8) |
      INV_SBOX[s2 & 0xff]!) ^
    dk[57]!;
  dst[di + 2] =
    ((INV_SBOX[s2 >>> 24]! << 24) |
      (INV_SBOX[(s1 >>> 16) & 0xff]! << 16) |
      (INV_SBOX[(s0 >>> 8) & 0xff]! << 8) |
      INV_SBOX[s3 & 0xff]!) ^
    dk[58]!;
  dst[di + 3] =
    ((INV_SBOX[s3 >>> 24]! << 24) |
      (INV_SBOX[(s2 >>> 16) & 0xff]! << 16) |
      (INV_SBOX[(s1 >>> 8) & 0xff]! << 8) |
      INV_SBOX[s0 & 0xff]!) ^
    dk[59]!;
}
