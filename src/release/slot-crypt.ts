/**
 * One slot's ciphertext, a range at a time: the inner loop of `release build`, pure. Its own
 * module, importing nothing but the cipher, because every build worker loads it (a small import
 * graph is most of a worker's start-up time; test/bench/release.ts).
 *
 * The slot holds the signed image padded with 0xFF to a 16-byte block, as an erased flash tail
 * reads; each 16-byte block's ciphertext depends only on its bytes and its flash address, so any
 * 16-aligned range can be encrypted on its own.
 */
import type { FlashCipher } from "../esp/flash-encryption.js";

/** Bytes a signed image takes on flash: ciphertext is whole 16-byte blocks (§4.3). */
export function flashLength(n: number): number {
  return Math.ceil(n / 16) * 16;
}

/**
 * Bytes [at, at + out.length) of the ciphertext of `signed` at flash `offset`, written into `out`
 * (which it returns): no allocation, so a caller that reuses `out` touches no fresh memory. `at`
 * and `out.length` are multiples of 16 and the range ends within flashLength(signed.length)
 * (RangeError otherwise).
 */
export function slotCiphertextInto(
  cipher: FlashCipher,
  offset: number,
  signed: Uint8Array,
  at: number,
  out: Uint8Array,
): Uint8Array {
  const end = at + out.length;
  if (!Number.isInteger(at) || at < 0 || at % 16 !== 0 || out.length % 16 !== 0)
    throw new RangeError(
      `slot range ${at}+${out.length} is not made of whole 16-byte blocks of the slot`,
    );
  if (end > flashLength(signed.length))
    throw new RangeError(
      `slot range ${at}+${out.length} ends past the slot's ${flashLength(signed.length)} bytes`,
    );
  const whole = signed.length - (signed.length % 16);
  if (end <= whole) return cipher.encrypt(offset + at, signed.subarray(at, end), out);
  // The range ends with the last, padded block.
  const head = whole - at;
  if (head > 0) cipher.encrypt(offset + at, signed.subarray(at, whole), out.subarray(0, head));
  const tail = new Uint8Array(16).fill(0xff);
  tail.set(signed.subarray(whole));
  cipher.encrypt(offset + whole, tail, out.subarray(head));
  return out;
}

/**
 * The ciphertext of `signed` at flash `offset`, in fresh chunks of `chunkSize` bytes (the last
 * one shorter): what a caller that keeps the chunks wants. The build writes through one reused
 * buffer with slotCiphertextInto instead.
 */
export function* slotCiphertext(
  cipher: FlashCipher,
  offset: number,
  signed: Uint8Array,
  chunkSize = 1 << 16,
): Generator<Uint8Array> {
  if (!Number.isInteger(chunkSize) || chunkSize < 16 || chunkSize % 16 !== 0)
    throw new RangeError(`chunkSize must be a positive multiple of 16, got ${chunkSize}`);
  const total = flashLength(signed.length);
  for (let at = 0; at < total; at += chunkSize) {
    const n = Math.min(chunkSize, total - at);
    yield slotCiphertextInto(cipher, offset, signed, at, new Uint8Array(n));
  }
}
