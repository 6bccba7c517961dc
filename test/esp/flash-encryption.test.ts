import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { equalBytes, fromHex, toHex } from "../../src/bytes.js";
import { EspOtaError } from "../../src/errors.js";
import {
  checkFlashRegion,
  createFlashCipher,
  createFlashCipherJsKernel,
  createFlashCryptStream,
  DEFAULT_FLASH_CRYPT_CONF,
  type FlashCipher,
  type FlashCryptOptions,
  flashDecrypt,
  flashEncrypt,
  generateFlashEncryptionKey,
} from "../../src/esp/flash-encryption.js";
import {
  AES256_SCHEDULE_WORDS,
  decryptBlock256,
  encryptBlock256,
  expandKey256,
  invertSchedule256,
} from "../../src/esp/flash-encryption-aes.js";
import { ESP32_TWEAK_PATTERN, esp32KeyTweak } from "../../src/esp/flash-encryption-esp32.js";
import { xtsWhitener } from "../../src/esp/flash-encryption-xts-kernel.js";
import { fixture, fixtureJson } from "../helpers/fixtures.js";

interface Vector {
  mode: string;
  key: string;
  key_hex: string;
  address: string;
  flash_crypt_conf: string | null;
  plaintext: string;
  ciphertext: string;
  ciphertext_sha256: string;
  ciphertext_first32_hex: string;
}

const expected = fixtureJson<{ vectors: Vector[]; relations: Record<string, unknown> }>(
  "flash_encryption/expected.json",
);
const fe = (name: string) => fixture(`flash_encryption/${name}`);
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function optsOf(v: Vector): FlashCryptOptions {
  const key = fe(v.key);
  // expected.json gives FLASH_CRYPT_CONF (a string) for the ESP32 scheme and null for XTS.
  return v.mode.startsWith("ESP32")
    ? { scheme: "esp32", key, flashCryptConf: Number(v.flash_crypt_conf) }
    : { scheme: "xts", key };
}

/** Every XTS cipher is checked with both whitening kernels (WebAssembly SIMD and plain JS). */
function ciphersOf(opts: FlashCryptOptions): { kernel: string; cipher: FlashCipher }[] {
  if (opts.scheme === "esp32") return [{ kernel: "-", cipher: createFlashCipher(opts) }];
  return [
    { kernel: "default", cipher: createFlashCipher(opts) },
    { kernel: "js", cipher: createFlashCipherJsKernel(opts) },
  ];
}

/** How many 16-byte blocks of `a` equal the block at the same place in `b`. */
function equalBlocks(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let o = 0; o + 16 <= Math.min(a.length, b.length); o += 16) {
    if (equalBytes(a.subarray(o, o + 16), b.subarray(o, o + 16))) n++;
  }
  return n;
}

const esp32Key = fe("fe_esp32_key256.bin");
const xtsKey256 = fe("fe_xts_key256.bin");
const xtsKey512 = fe("fe_xts_key512.bin");
const ptApp = fe("pt_app.bin");

describe("espsecure v5.3.1 vectors (test/fixtures/flash_encryption)", () => {
  it("covers every scheme, key size, FLASH_CRYPT_CONF and address the brief lists", () => {
    const v = expected.vectors;
    expect(v).toHaveLength(22);
    const confs = new Set(v.filter((x) => x.flash_crypt_conf).map((x) => x.flash_crypt_conf));
    expect([...confs].sort()).toEqual(["0x0", "0x3", "0xf"]);
    const keys = new Set(v.map((x) => x.key));
    expect(keys.size).toBe(5);
    const addrs = new Set(v.map((x) => x.address));
    for (const a of ["0x1000", "0x8000", "0xd000", "0x10000", "0x160000", "0x10030"]) {
      expect(addrs.has(a), a).toBe(true);
    }
  });

  it.each(expected.vectors.map((v) => [v.ciphertext, v] as const))(
    "%s: encrypts and decrypts byte-exact",
    (_name, v) => {
      const pt = fe(v.plaintext);
      const ct = fe(v.ciphertext);
      // The fixture files are the ones expected.json describes.
      expect(sha256(ct)).toBe(v.ciphertext_sha256);
      expect(toHex(fe(v.key))).toBe(v.key_hex);
      const address = Number(v.address);
      for (const { kernel, cipher } of ciphersOf(optsOf(v))) {
        const enc = cipher.encrypt(address, pt);
        expect(toHex(enc.subarray(0, 32)), kernel).toBe(v.ciphertext_first32_hex);
        expect(equalBytes(enc, ct), kernel).toBe(true);
        expect(equalBytes(cipher.decrypt(address, ct), pt), kernel).toBe(true);
      }
    },
  );

  it("the default FLASH_CRYPT_CONFIG is 0xF", () => {
    expect(DEFAULT_FLASH_CRYPT_CONF).toBe(0xf);
    const ct = createFlashCipher({ scheme: "esp32", key: esp32Key }).encrypt(0x10000, ptApp);
    expect(equalBytes(ct, fe("ct_esp32_k256_conf0xf_0x10000.bin"))).toBe(true);
  });

  it("flashEncrypt / flashDecrypt are the one-off forms", () => {
    const opts = { scheme: "xts", key: xtsKey512 } as const;
    const ct = flashEncrypt(opts, 0xd000, fe("pt_otadata.bin"));
    expect(equalBytes(ct, fe("ct_xts_k512_0xd000.bin"))).toBe(true);
    expect(equalBytes(flashDecrypt(opts, 0xd000, ct), fe("pt_otadata.bin"))).toBe(true);
  });
});

describe("address and key dependence", () => {
  it("FLASH_CRYPT_CONFIG 0 ignores the address; 0xF does not", () => {
    const c0 = createFlashCipher({ scheme: "esp32", key: esp32Key, flashCryptConf: 0 });
    const at = (a: number) => c0.encrypt(a, ptApp);
    expect(
      equalBytes(fe("ct_esp32_k256_conf0x0_0x10000.bin"), fe("ct_esp32_k256_conf0x0_0x160000.bin")),
    ).toBe(true);
    expect(equalBytes(at(0x10000), at(0x3a0000))).toBe(true);
    // Every 32-byte block at conf 0 uses the same key, so equal blocks give equal ciphertext.
    expect(equalBytes(at(0).subarray(0, 16), c0.encrypt(0x20, ptApp.subarray(0, 16)))).toBe(true);

    const a = fe("ct_esp32_k256_conf0xf_0x10000.bin");
    const b = fe("ct_esp32_k256_conf0xf_0x160000.bin");
    expect(equalBlocks(a, b)).toBe(0);
    expect(expected.relations.esp32_conf0xf_differs_between_addresses).toBe(true);
    expect(expected.relations.esp32_conf0x0_identical_between_addresses).toBe(true);
  });

  it.each([
    ["esp32 conf 0xF", { scheme: "esp32", key: esp32Key }, "ct_esp32_k256_conf0xf_0x10000.bin"],
    [
      "esp32 conf 0x3",
      { scheme: "esp32", key: esp32Key, flashCryptConf: 3 },
      "ct_esp32_k256_conf0x3_0x10000.bin",
    ],
    ["xts 256", { scheme: "xts", key: xtsKey256 }, "ct_xts_k256_0x10000.bin"],
    ["xts 512", { scheme: "xts", key: xtsKey512 }, "ct_xts_k512_0x10000.bin"],
  ] as const)("%s: the wrong address or key decrypts to garbage", (_n, opts, ctName) => {
    const ct = fe(ctName);
    const cipher = createFlashCipher(opts);
    // Right address: the plaintext. Another slot, or the right slot shifted by one 32-byte key
    // block (ESP32) or one 128-byte unit (XTS): no 16-byte block comes out right.
    expect(equalBytes(cipher.decrypt(0x10000, ct), ptApp)).toBe(true);
    for (const wrong of [0x160000, 0x10000 + 0x80, 0x20000]) {
      expect(equalBlocks(cipher.decrypt(wrong, ct), ptApp), `0x${wrong.toString(16)}`).toBe(0);
    }
    const badKey = opts.key.slice();
    badKey[5]! ^= 0x01;
    const wrongKey = createFlashCipher({ ...opts, key: badKey } as FlashCryptOptions);
    expect(equalBlocks(wrongKey.decrypt(0x10000, ct), ptApp)).toBe(0);
  });

  it("XTS ciphertext differs between addresses (relations in expected.json)", () => {
    expect(equalBlocks(fe("ct_xts_k256_0x10000.bin"), fe("ct_xts_k256_0x160000.bin"))).toBe(0);
    expect(equalBlocks(fe("ct_xts_k512_0x10000.bin"), fe("ct_xts_k512_0x160000.bin"))).toBe(0);
    expect(expected.relations.xts_unaligned_slice_equals_slice_of_full_encryption).toEqual({
      xts_k256: true,
      xts_k512: true,
    });
  });

  it("the 0x10030 slice vectors are slices of the full-unit encryption", () => {
    for (const [key, full, slice] of [
      [xtsKey256, "ct_xts_k256_0x10000.bin", "ct_xts_k256_0x10030_slice.bin"],
      [xtsKey512, "ct_xts_k512_0x10000.bin", "ct_xts_k512_0x10030_slice.bin"],
    ] as const) {
      const whole = fe(full);
      expect(equalBytes(whole.subarray(0x30, 0x60), fe(slice))).toBe(true);
      const c = createFlashCipher({ scheme: "xts", key });
      expect(
        equalBytes(c.encrypt(0x10030, fe("pt_app_slice.bin")), whole.subarray(0x30, 0x60)),
      ).toBe(true);
    }
    expect(equalBytes(fe("pt_app_slice.bin"), ptApp.subarray(0x30, 0x60))).toBe(true);
  });
});

describe("ESP32 key tweak (FLASH_CRYPT_CONFIG groups)", () => {
  it("the pattern has 256 entries in groups of 67, 65, 63, 61 over offset bits 5..23", () => {
    expect(ESP32_TWEAK_PATTERN).toHaveLength(256);
    expect(Math.min(...ESP32_TWEAK_PATTERN)).toBe(5);
    expect(Math.max(...ESP32_TWEAK_PATTERN)).toBe(23);
    // Group tails (espsecure): 14..5, 12..5, 10..5, 8..5, each ending a group.
    expect(ESP32_TWEAK_PATTERN.slice(57, 67)).toEqual([14, 13, 12, 11, 10, 9, 8, 7, 6, 5]);
    expect(ESP32_TWEAK_PATTERN.slice(124, 132)).toEqual([12, 11, 10, 9, 8, 7, 6, 5]);
    expect(ESP32_TWEAK_PATTERN.slice(189, 195)).toEqual([10, 9, 8, 7, 6, 5]);
    expect(ESP32_TWEAK_PATTERN.slice(252, 256)).toEqual([8, 7, 6, 5]);
  });

  const bitsOf = (t: Int32Array) => {
    const bits: number[] = [];
    for (let n = 0; n < 256; n++) if ((t[n >> 5]! >>> (31 - (n & 31))) & 1) bits.push(n);
    return bits;
  };

  it.each([
    // Offset bit 5 flips, in group 0 (conf bit 0), key bits 18, 37, 56 and 66.
    [1 << 5, 0x1, [18, 37, 56, 66]],
    [1 << 5, 0x2, [67 + 18, 67 + 37, 67 + 56, 67 + 64]],
    [1 << 23, 0x1, [0, 19, 38]],
    [1 << 23, 0x8, [195, 214, 233]],
    // Bits 0..4 (inside a 32-byte block) and 24+ (beyond 16 MB) never tweak.
    [0x1f, 0xf, []],
    [1 << 5, 0x0, []],
  ] as const)("offset %i, conf %i flips key bits %j", (offset, conf, bits) => {
    expect(bitsOf(esp32KeyTweak(offset, conf))).toEqual(bits);
  });

  it("matches a reference built from node:crypto AES-256 and the definitional tweak", () => {
    // Reference: key' = key XOR tweak(offset & ~31); block = rev(AES-256-ECB-decrypt(key', rev(block))).
    const reference = (key: Uint8Array, conf: number, address: number, block: Uint8Array) => {
      const t = esp32KeyTweak(address & ~31, conf);
      const k = key.slice();
      for (let i = 0; i < 32; i++) k[i]! ^= (t[i >> 2]! >>> (24 - 8 * (i & 3))) & 0xff;
      const d = createDecipheriv("aes-256-ecb", k, null).setAutoPadding(false);
      return new Uint8Array(d.update(Buffer.from(block).reverse())).reverse();
    };
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 0xfffff }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        (key, conf, blockIndex, block) => {
          const address = blockIndex * 16;
          const ours = createFlashCipher({ scheme: "esp32", key, flashCryptConf: conf }).encrypt(
            address,
            block,
          );
          expect(toHex(ours)).toBe(toHex(reference(key, conf, address, block)));
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("table-driven AES-256 (flash-encryption-aes.ts)", () => {
  const words = (b: Uint8Array) => {
    const w = new Int32Array(b.length / 4);
    for (let i = 0; i < w.length; i++)
      w[i] = (b[4 * i]! << 24) | (b[4 * i + 1]! << 16) | (b[4 * i + 2]! << 8) | b[4 * i + 3]!;
    return w;
  };
  const bytes = (w: Int32Array) => {
    const b = new Uint8Array(w.length * 4);
    for (let i = 0; i < w.length; i++)
      for (let j = 0; j < 4; j++) b[4 * i + j] = (w[i]! >>> (24 - 8 * j)) & 0xff;
    return b;
  };
  const run = (key: Uint8Array, block: Uint8Array, decrypt: boolean) => {
    const ek = new Int32Array(AES256_SCHEDULE_WORDS);
    const dk = new Int32Array(AES256_SCHEDULE_WORDS);
    expandKey256(words(key), 0, ek);
    invertSchedule256(ek, dk);
    const s = words(block);
    if (decrypt) decryptBlock256(dk, s, 0, s, 0);
    else encryptBlock256(ek, s, 0, s, 0);
    return bytes(s);
  };

  it("FIPS-197 appendix C.3 (AES-256) both ways", () => {
    const key = fromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    const pt = fromHex("00112233445566778899aabbccddeeff");
    const ct = "8ea2b7ca516745bfeafc49904b496089";
    expect(toHex(run(key, pt, false))).toBe(ct);
    expect(toHex(run(key, fromHex(ct), true))).toBe(toHex(pt));
  });

  it("agrees with node:crypto AES-256-ECB on random keys and blocks", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        (key, block) => {
          const enc = createCipheriv("aes-256-ecb", key, null).setAutoPadding(false).update(block);
          const dec = createDecipheriv("aes-256-ecb", key, null)
            .setAutoPadding(false)
            .update(block);
          expect(toHex(run(key, block, false))).toBe(toHex(enc));
          expect(toHex(run(key, block, true))).toBe(toHex(dec));
        },
      ),
      { numRuns: 300 },
    );
  });
});

/**
 * An independent XTS reference: espsecure's algorithm written with node:crypto's own aes-*-xts
 * (one cipher per 128-byte unit: zero-pad to whole units, reverse each unit, XTS, reverse back).
 * OpenSSL rejects keys whose halves are equal, so the generators avoid them.
 */
function xtsReference(
  keyFile: Uint8Array,
  address: number,
  data: Uint8Array,
  decrypt: boolean,
): Uint8Array {
  const key =
    keyFile.length === 16 ? createHash("sha256").update(keyFile).digest() : Buffer.from(keyFile);
  const algorithm = key.length === 32 ? "aes-128-xts" : "aes-256-xts";
  const lead = address % 128;
  const total = Math.ceil((lead + data.length) / 128) * 128;
  const buf = Buffer.alloc(total);
  buf.set(data, lead);
  const out = Buffer.alloc(total);
  for (let o = 0; o < total; o += 128) {
    const tweak = Buffer.alloc(16);
    tweak.writeUInt32LE(address - lead + o);
    const c = decrypt
      ? createDecipheriv(algorithm, key, tweak)
      : createCipheriv(algorithm, key, tweak);
    const unit = Buffer.from(buf.subarray(o, o + 128)).reverse();
    out.set(Buffer.concat([c.update(unit), c.final()]).reverse(), o);
  }
  return new Uint8Array(out.subarray(lead, lead + data.length));
}

const xtsKeyArb = fc
  .constantFrom(16, 32, 64)
  .chain((n) => fc.uint8Array({ minLength: n, maxLength: n }))
  .filter(
    (k) => k.length === 16 || !equalBytes(k.subarray(0, k.length / 2), k.subarray(k.length / 2)),
  );

describe("XTS against node:crypto's aes-xts", () => {
  it("both kernels equal the per-unit reference at random addresses and lengths", () => {
    const kernels = [createFlashCipher, createFlashCipherJsKernel] as const;
    fc.assert(
      fc.property(
        xtsKeyArb,
        fc.integer({ min: 0, max: 0xffffff }),
        fc.integer({ min: 0, max: 80 }),
        fc.boolean(),
        (key, blockIndex, blocks, decrypt) => {
          const address = blockIndex * 16;
          const data = new Uint8Array(randomBytes(blocks * 16));
          const want = toHex(xtsReference(key, address, data, decrypt));
          for (const make of kernels) {
            const c = make({ scheme: "xts", key });
            expect(toHex(decrypt ? c.decrypt(address, data) : c.encrypt(address, data))).toBe(want);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it("runs past one 128 KB kernel window (data not aligned to it)", () => {
    const data = new Uint8Array(randomBytes(300_000 - (300_000 % 16)));
    const key = xtsKey512;
    const want = xtsReference(key, 0x12340, data, false);
    expect(equalBytes(createFlashCipher({ scheme: "xts", key }).encrypt(0x12340, data), want)).toBe(
      true,
    );
    expect(
      equalBytes(createFlashCipherJsKernel({ scheme: "xts", key }).encrypt(0x12340, data), want),
    ).toBe(true);
  });

  it("returns arrays whose .buffer holds nothing but the result", () => {
    // Small calls hand back node:crypto's output buffer; the padding blocks around the view are
    // zeroed, so no bytes derived from another call's data travel with the result.
    const c = createFlashCipher({ scheme: "xts", key: xtsKey256 });
    c.decrypt(0x10000, ptApp.subarray(0, 1024)); // leave other data in the scratch
    const out = c.encrypt(0x10030, ptApp.subarray(0x30, 0x60));
    const all = new Uint8Array(out.buffer);
    const outside = [
      ...all.subarray(0, out.byteOffset),
      ...all.subarray(out.byteOffset + out.length),
    ];
    expect(outside.every((b) => b === 0)).toBe(true);
    expect(toHex(out)).toBe(toHex(fe("ct_xts_k256_0x10030_slice.bin")));
  });

  it("uses the WebAssembly SIMD kernel on this Node", () => {
    expect(xtsWhitener().kind).toBe("wasm-simd");
    expect(xtsWhitener(true).kind).toBe("js");
  });

  it("accepts a key whose halves are equal, as the hardware does (OpenSSL's XTS refuses it)", () => {
    const key = new Uint8Array(32);
    expect(() => createCipheriv("aes-128-xts", key, Buffer.alloc(16))).toThrow();
    const c = createFlashCipher({ scheme: "xts", key });
    const ct = c.encrypt(0x20000, ptApp.subarray(0, 256));
    expect(equalBytes(c.decrypt(0x20000, ct), ptApp.subarray(0, 256))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties over both schemes.

const optsArb: fc.Arbitrary<FlashCryptOptions> = fc.oneof(
  fc
    .tuple(fc.constantFrom(32, 24), fc.integer({ min: 0, max: 15 }))
    .chain(([n, conf]) =>
      fc
        .uint8Array({ minLength: n, maxLength: n })
        .map((key) => ({ scheme: "esp32" as const, key, flashCryptConf: conf })),
    ),
  xtsKeyArb.map((key) => ({ scheme: "xts" as const, key })),
);

/** A 16-aligned address and a whole number of blocks, within the scheme's address space. */
const regionArb = fc.record({
  address: fc.integer({ min: 0, max: 0xf0000 }).map((b) => b * 16),
  blocks: fc.integer({ min: 0, max: 96 }),
});

describe("properties", () => {
  it("decrypt(encrypt(x)) = x at random 16-aligned addresses and lengths", () => {
    fc.assert(
      fc.property(optsArb, regionArb, (opts, { address, blocks }) => {
        const data = new Uint8Array(randomBytes(blocks * 16));
        const c = createFlashCipher(opts);
        const ct = c.encrypt(address, data);
        expect(ct.length).toBe(data.length);
        expect(equalBytes(c.decrypt(address, ct), data)).toBe(true);
      }),
      { numRuns: 150 },
    );
  });

  it("any chunking through the stream gives the bytes of one call (both directions)", () => {
    fc.assert(
      fc.property(
        optsArb,
        regionArb,
        fc.constantFrom("encrypt" as const, "decrypt" as const),
        fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 12 }),
        (opts, { address, blocks }, direction, cuts) => {
          const data = new Uint8Array(randomBytes(blocks * 16));
          const c = createFlashCipher(opts);
          const whole =
            direction === "encrypt" ? c.encrypt(address, data) : c.decrypt(address, data);
          const stream = createFlashCryptStream(c, address, direction);
          const parts: Uint8Array[] = [];
          let pos = 0;
          for (const cut of cuts) {
            const next = Math.min(data.length, pos + cut);
            // Hand over a scratch copy that is then clobbered: the stream must not keep references.
            const scratch = data.slice(pos, next);
            parts.push(stream.push(scratch));
            scratch.fill(0xa5);
            pos = next;
          }
          parts.push(stream.push(data.subarray(pos)), stream.end());
          const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          let o = 0;
          for (const p of parts) {
            joined.set(p, o);
            o += p.length;
          }
          expect(toHex(joined)).toBe(toHex(whole));
        },
      ),
      { numRuns: 150 },
    );
  });

  it("a 16-aligned slice of a whole-unit encryption equals encrypting the slice at its address", () => {
    fc.assert(
      fc.property(
        optsArb,
        fc.integer({ min: 0, max: 0x1fff }),
        fc.integer({ min: 1, max: 4 }),
        fc.nat(),
        fc.nat(),
        (opts, unit, units, a, b) => {
          const base = unit * 128;
          const data = new Uint8Array(randomBytes(units * 128));
          const c = createFlashCipher(opts);
          const full = c.encrypt(base, data);
          const blocks = units * 8;
          const from = a % blocks;
          const to = from + 1 + (b % (blocks - from));
          const slice = c.encrypt(base + 16 * from, data.subarray(16 * from, 16 * to));
          expect(toHex(slice)).toBe(toHex(full.subarray(16 * from, 16 * to)));
        },
      ),
      { numRuns: 150 },
    );
  });

  it("random lengths and addresses give output or a RangeError, never another failure", () => {
    fc.assert(
      fc.property(
        optsArb,
        fc.integer({ min: -64, max: 2 ** 33 }),
        fc.uint8Array({ maxLength: 300 }),
        (opts, address, data) => {
          const c = createFlashCipher(opts);
          try {
            const out = c.decrypt(address, data);
            expect(out.length).toBe(data.length);
            expect(checkFlashRegion(opts.scheme, address, data.length).ok).toBe(true);
          } catch (e) {
            expect(e).toBeInstanceOf(RangeError);
            expect(checkFlashRegion(opts.scheme, address, data.length).ok).toBe(false);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("misuse and bad input", () => {
  it.each([
    ["esp32", 16],
    ["esp32", 64],
    ["esp32", 0],
    ["esp32", 33],
    ["xts", 24],
    ["xts", 48],
    ["xts", 0],
  ] as const)(
    "%s rejects a %i-byte key with E_FLASH_KEY_LENGTH naming the lengths",
    (scheme, n) => {
      let err: unknown;
      try {
        createFlashCipher({ scheme, key: new Uint8Array(n) } as FlashCryptOptions);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(EspOtaError);
      expect((err as EspOtaError).code).toBe("E_FLASH_KEY_LENGTH");
      expect((err as EspOtaError).message).toMatch(
        scheme === "esp32" ? /32 bytes .* 24 bytes/ : /16 bytes .* 32 bytes .* 64 bytes/,
      );
      expect((err as EspOtaError).context).toMatchObject({ scheme, keyLength: n });
    },
  );

  it("throws TypeError for a key that is not bytes or an unknown scheme", () => {
    expect(() =>
      createFlashCipher({ scheme: "esp32", key: "00".repeat(32) as unknown as Uint8Array }),
    ).toThrow(TypeError);
    expect(() =>
      createFlashCipher({ scheme: "aes", key: esp32Key } as unknown as FlashCryptOptions),
    ).toThrow(TypeError);
    expect(() => createFlashCipher(null as unknown as FlashCryptOptions)).toThrow(TypeError);
  });

  it.each([16, -1, 1.5, Number.NaN])("throws RangeError for FLASH_CRYPT_CONFIG %s", (conf) => {
    expect(() =>
      createFlashCipher({ scheme: "esp32", key: esp32Key, flashCryptConf: conf }),
    ).toThrow(RangeError);
  });

  it.each([
    ["esp32", 0x10008, 32, "address-align"],
    ["esp32", -16, 32, "address-align"],
    ["esp32", 0x10000, 20, "length-align"],
    ["esp32", 0xfffff0, 32, "range"],
    ["xts", 0x10004, 16, "address-align"],
    ["xts", 0x10000, 100, "length-align"],
    ["xts", 0xfffffff0, 32, "range"],
  ] as const)(
    "%s at %s, %i bytes: %s (RangeError from the cipher)",
    (scheme, address, len, reason) => {
      expect(checkFlashRegion(scheme, address, len)).toMatchObject({ ok: false, reason });
      const key = scheme === "esp32" ? esp32Key : xtsKey256;
      const c = createFlashCipher({ scheme, key } as FlashCryptOptions);
      expect(() => c.encrypt(address, new Uint8Array(len))).toThrow(RangeError);
      expect(() => c.decrypt(address, new Uint8Array(len))).toThrow(RangeError);
    },
  );

  it("works right up to the end of each address space", () => {
    const esp = createFlashCipher({ scheme: "esp32", key: esp32Key });
    const xts = createFlashCipher({ scheme: "xts", key: xtsKey512 });
    const data = ptApp.subarray(0, 64);
    expect(equalBytes(esp.decrypt(0xffffc0, esp.encrypt(0xffffc0, data)), data)).toBe(true);
    expect(equalBytes(xts.decrypt(0xffffffc0, xts.encrypt(0xffffffc0, data)), data)).toBe(true);
    expect(toHex(xts.encrypt(0xffffffc0, data))).toBe(
      toHex(xtsReference(xtsKey512, 0xffffffc0, data, false)),
    );
  });

  it("encrypts nothing to nothing", () => {
    expect(
      createFlashCipher({ scheme: "xts", key: xtsKey256 }).encrypt(0x1000, new Uint8Array(0)),
    ).toHaveLength(0);
    expect(
      createFlashCipher({ scheme: "esp32", key: esp32Key }).decrypt(0x1000, new Uint8Array(0)),
    ).toHaveLength(0);
  });

  it("the stream rejects a ragged end, use after end and a bad start", () => {
    const c = createFlashCipher({ scheme: "xts", key: xtsKey256 });
    const s = createFlashCryptStream(c, 0x1000, "encrypt");
    expect(s.push(new Uint8Array(20))).toHaveLength(16);
    expect(() => s.end()).toThrow(RangeError);
    expect(() => s.push(new Uint8Array(16))).toThrow(TypeError);
    expect(() => createFlashCryptStream(c, 0x1001, "encrypt")).toThrow(RangeError);
    expect(() => createFlashCryptStream(c, 0x1000, "sideways" as "encrypt")).toThrow(TypeError);
  });
});

describe("generateFlashEncryptionKey", () => {
  it.each([
    [128, 16],
    [192, 24],
    [256, 32],
    [512, 64],
  ] as const)("%i bits → %i random bytes", (bits, n) => {
    const a = generateFlashEncryptionKey(bits);
    const b = generateFlashEncryptionKey(bits);
    expect(a).toBeInstanceOf(Uint8Array);
    expect(a.length).toBe(n);
    expect(equalBytes(a, b)).toBe(false);
  });

  it("every generated key length is taken by at least one scheme", () => {
    for (const bits of [128, 192, 256, 512] as const) {
      const key = generateFlashEncryptionKey(bits);
      const scheme = bits === 192 ? "esp32" : "xts";
      expect(createFlashCipher({ scheme, key } as FlashCryptOptions).scheme).toBe(scheme);
    }
  });

  it("rejects other lengths with RangeError", () => {
    expect(() => generateFlashEncryptionKey(384 as 256)).toThrow(RangeError);
  });
});
