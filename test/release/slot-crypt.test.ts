/**
 * The allocation-free path of the release build: a cipher writing into a caller's buffer
 * (FlashCipher `out`), slotCiphertextInto over any 16-aligned range, and writeSlotCiphertext's
 * reused batch buffer, each against the allocating path (which the espsecure vectors pin in
 * test/esp/flash-encryption.test.ts and test/release/build-vectors.test.ts). Also the worker's
 * argv filter.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { createFlashCipher, type FlashCipher } from "../../src/esp/flash-encryption.js";
import { withoutLoaderFlags } from "../../src/release/build.js";
import { writeSlotCiphertext } from "../../src/release/build-worker.js";
import { flashLength, slotCiphertext, slotCiphertextInto } from "../../src/release/slot-crypt.js";
import { keys } from "../helpers/sim.js";

const dir = mkdtempSync(join(tmpdir(), "slot-crypt-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CIPHERS: [string, FlashCipher][] = [
  ["esp32", createFlashCipher({ scheme: "esp32", key: keys.feEsp32() })],
  ["xts", createFlashCipher({ scheme: "xts", key: keys.feXts512() })],
];

/** Deterministic filler: a slot's worth of distinct-looking bytes. */
function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

describe.each(CIPHERS)("%s cipher with an out buffer", (_name, cipher) => {
  it("writes the same bytes as the allocating call, into the start of out", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0x1000 }),
        fc.integer({ min: 0, max: 300 }),
        fc.integer({ min: 0, max: 64 }),
        fc.boolean(),
        (block, blocks, spare, decrypt) => {
          const address = 0x10000 + 16 * block;
          const data = bytes(16 * blocks, block + 1);
          const out = new Uint8Array(data.length + spare).fill(0xa5);
          const want = decrypt ? cipher.decrypt(address, data) : cipher.encrypt(address, data);
          const got = decrypt
            ? cipher.decrypt(address, data, out)
            : cipher.encrypt(address, data, out);
          expect(got.buffer).toBe(out.buffer);
          expect(Buffer.compare(got, want)).toBe(0);
          // Nothing past the result is touched.
          expect(out.subarray(data.length).every((b) => b === 0xa5)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  });

  it("works in place (out = the input)", () => {
    // More than one XTS window (128 KiB), from an address inside a unit.
    const data = bytes(0x30000, 7);
    const want = cipher.encrypt(0x20010, data);
    const inPlace = data.slice();
    cipher.encrypt(0x20010, inPlace, inPlace);
    expect(Buffer.compare(inPlace, want)).toBe(0);
  });

  it("refuses an out buffer shorter than the data", () => {
    expect(() => cipher.encrypt(0x1000, new Uint8Array(32), new Uint8Array(16))).toThrow(
      RangeError,
    );
    expect(() => cipher.encrypt(0x1000, new Uint8Array(32), [] as unknown as Uint8Array)).toThrow(
      TypeError,
    );
  });
});

describe.each(CIPHERS)("%s slot ranges", (_name, cipher) => {
  // Not a multiple of 16: the last block is padded with 0xFF.
  const signed = bytes(5000 + 7, 3);
  const whole = Buffer.concat([...slotCiphertext(cipher, 0x190000, signed, 16)]);

  it("any 16-aligned range equals that slice of the whole slot", () => {
    const blocks = flashLength(signed.length) / 16;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: blocks }),
        fc.integer({ min: 0, max: blocks }),
        (a, b) => {
          const [from, to] = a <= b ? [a, b] : [b, a];
          const out = new Uint8Array(16 * (to - from));
          slotCiphertextInto(cipher, 0x190000, signed, 16 * from, out);
          expect(Buffer.compare(out, whole.subarray(16 * from, 16 * to))).toBe(0);
        },
      ),
      { numRuns: 80 },
    );
  });

  it("refuses ranges that are not whole blocks of the slot", () => {
    const end = flashLength(signed.length);
    expect(() => slotCiphertextInto(cipher, 0x190000, signed, 8, new Uint8Array(16))).toThrow(
      RangeError,
    );
    expect(() => slotCiphertextInto(cipher, 0x190000, signed, 0, new Uint8Array(24))).toThrow(
      RangeError,
    );
    expect(() =>
      slotCiphertextInto(cipher, 0x190000, signed, end - 16, new Uint8Array(32)),
    ).toThrow(RangeError);
  });

  it("writeSlotCiphertext writes and hashes the same bytes whatever the chunk size", () => {
    for (const chunk of [16, 4096, 1 << 17]) {
      const path = join(dir, `${_name}-${chunk}.bin`);
      const r = writeSlotCiphertext(cipher, 0x190000, signed, path, chunk);
      expect(Buffer.compare(readFileSync(path), whole)).toBe(0);
      expect(r).toEqual({
        size: whole.length,
        sha256: createHash("sha256").update(whole).digest("hex"),
      });
    }
  });
});

describe("withoutLoaderFlags (the compiled build worker's execArgv)", () => {
  it("drops module loaders and preloads with their values, keeps everything else", () => {
    expect(
      withoutLoaderFlags([
        "--require",
        "/x/preflight.cjs",
        "--import",
        "file:///x/loader.mjs",
        "--max-old-space-size=512",
        "-r",
        "a.cjs",
        "--import=b.mjs",
        "--loader=c.mjs",
        "--experimental-loader",
        "d.mjs",
        "--enable-source-maps",
      ]),
    ).toEqual(["--max-old-space-size=512", "--enable-source-maps"]);
    expect(withoutLoaderFlags([])).toEqual([]);
  });
});
