/**
 * One slot's ciphertext as a stream of chunks: the inner loop of `release build`, pure. Its own
 * module, importing nothing but the cipher, because every build worker loads it (a small import
 * graph is most of a worker's start-up time; test/bench/release.ts).
 */
import { createFlashCryptStream, type FlashCipher } from "../esp/flash-encryption.js";

/**
 * The ciphertext of `signed` at flash `offset`, in chunks of `chunkSize` bytes (the last one
 * shorter): what a writer hashes and writes one chunk at a time, so memory per slot is one chunk
 * however large the image. The tail is padded with 0xFF to a 16-byte block, as an erased flash
 * tail reads; createFlashCryptStream gives the same bytes whatever the chunking.
 */
export function* slotCiphertext(
  cipher: FlashCipher,
  offset: number,
  signed: Uint8Array,
  chunkSize = 1 << 16,
): Generator<Uint8Array> {
  if (!Number.isInteger(chunkSize) || chunkSize < 16 || chunkSize % 16 !== 0)
    throw new RangeError(`chunkSize must be a positive multiple of 16, got ${chunkSize}`);
  const stream = createFlashCryptStream(cipher, offset, "encrypt");
  const whole = signed.length - (signed.length % 16);
  for (let at = 0; at < whole; at += chunkSize) {
    yield stream.push(signed.subarray(at, Math.min(at + chunkSize, whole)));
  }
  if (whole < signed.length) {
    const tail = new Uint8Array(16).fill(0xff);
    tail.set(signed.subarray(whole));
    yield stream.push(tail);
  }
  stream.end();
}
