/**
 * ESP32 flash encryption, both schemes, byte-exact with espsecure v5 (`encrypt-flash-data`,
 * `decrypt-flash-data`, `generate-flash-encryption-key`; esptool `espsecure/__init__.py`):
 *
 * - `"esp32"`: ESP32 (classic). AES-256 with the key XOR-tweaked per 32-byte block by flash
 *   offset bits 5..23 under the FLASH_CRYPT_CONFIG eFuse (flash-encryption-esp32.ts).
 * - `"xts"`: ESP32-S2 and later. XTS-AES-128/256 over 128-byte units with the unit address as
 *   tweak, each unit byte-reversed (flash-encryption-xts.ts).
 *
 * Ciphertext depends on the physical flash address: an image encrypted for one slot is garbage
 * in another (docs/formats.md, "Flash encryption"). There is no integrity check: a wrong key or
 * address decrypts to noise, which the image checks (magic, checksum, SHA-256, signature) catch.
 *
 * Pure: Uint8Array in, Uint8Array out; the only outside call is randomBytes for new keys.
 */
import { randomBytes } from "node:crypto";
import { EspOtaError } from "../errors.js";
import {
  ESP32_FLASH_ADDRESS_LIMIT,
  Esp32FlashCrypt,
  esp32ExpandKeyFile,
} from "./flash-encryption-esp32.js";
import { XTS_FLASH_ADDRESS_LIMIT, XtsFlashCrypt } from "./flash-encryption-xts.js";

export type FlashCryptScheme = "esp32" | "xts";

export type FlashCryptOptions =
  | {
      scheme: "esp32";
      /** The key file's bytes: 32 (256-bit) or 24 (192-bit, 3/4 coding scheme). */
      key: Uint8Array;
      /** The FLASH_CRYPT_CONFIG eFuse, 0..15. Default 0xF, as burnt by the ESP-IDF bootloader. */
      flashCryptConf?: number;
    }
  | {
      scheme: "xts";
      /** The key file's bytes: 16 (SHA-256-extended), 32 (XTS-AES-128) or 64 (XTS-AES-256). */
      key: Uint8Array;
    };

export interface FlashCipher {
  readonly scheme: FlashCryptScheme;
  /** For people: e.g. "XTS-AES-256 (512-bit key)" or "ESP32 AES-256, FLASH_CRYPT_CONFIG 0xf". */
  readonly description: string;
  /**
   * `address` and `plaintext.length` multiples of 16 (RangeError otherwise); any length. With
   * `out` (at least as long as the data; RangeError otherwise) the result is written to its first
   * bytes and a view of them returned, so a caller that reuses one buffer allocates nothing per
   * call (the release build: fresh memory costs about 12 µs a page on the bench VM,
   * docs/benchmarks.md). `out` may be the input itself, but must not otherwise overlap it.
   */
  encrypt(address: number, plaintext: Uint8Array, out?: Uint8Array): Uint8Array;
  decrypt(address: number, ciphertext: Uint8Array, out?: Uint8Array): Uint8Array;
}

export interface FlashCryptStream {
  /** Returns the output for every whole 16-byte block received so far. */
  push(chunk: Uint8Array): Uint8Array;
  /** Returns the rest (always empty); RangeError if the input was not a multiple of 16. */
  end(): Uint8Array;
}

/** Key file lengths each scheme takes, as espsecure `_load_hardware_key` checks them. */
export const FLASH_KEY_LENGTHS: Readonly<Record<FlashCryptScheme, readonly number[]>> = {
  esp32: [32, 24],
  xts: [16, 32, 64],
};

/** ESP-IDF's bootloader burns FLASH_CRYPT_CONFIG = 0xF (all tweak groups), espsecure's default. */
export const DEFAULT_FLASH_CRYPT_CONF = 0xf;

/** One past the highest flash byte each scheme can address. */
export const FLASH_ADDRESS_LIMITS: Readonly<Record<FlashCryptScheme, number>> = {
  esp32: ESP32_FLASH_ADDRESS_LIMIT,
  xts: XTS_FLASH_ADDRESS_LIMIT,
};

export type FlashRegionCheck =
  | { ok: true }
  | { ok: false; reason: "address-align" | "length-align" | "range"; message: string };

/**
 * The rules every encrypted flash region obeys: address and length multiples of 16 (the AES
 * block; espsecure and ESP-IDF's `esp_flash_write_encrypted` both require it) and the end within
 * the scheme's address space.
 */
export function checkFlashRegion(
  scheme: FlashCryptScheme,
  address: number,
  length: number,
): FlashRegionCheck {
  if (!Number.isSafeInteger(address) || address < 0 || address % 16 !== 0) {
    return {
      ok: false,
      reason: "address-align",
      message: `flash address ${fmt(address)} is not a non-negative multiple of 16`,
    };
  }
  if (!Number.isSafeInteger(length) || length % 16 !== 0) {
    return {
      ok: false,
      reason: "length-align",
      message: `data length ${length} is not a multiple of 16 bytes`,
    };
  }
  const limit = FLASH_ADDRESS_LIMITS[scheme];
  if (address + length > limit) {
    return {
      ok: false,
      reason: "range",
      message: `${length} bytes at ${fmt(address)} end past ${fmt(limit)}, the end of the ${scheme === "esp32" ? "ESP32's 24-bit" : "XTS scheme's 32-bit"} flash address space`,
    };
  }
  return { ok: true };
}

function fmt(n: number): string {
  return Number.isFinite(n) && n >= 0 ? `0x${n.toString(16)}` : String(n);
}

function checkKey(scheme: FlashCryptScheme, key: unknown): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array))
    throw new TypeError("flash encryption key must be a Uint8Array");
  const allowed = FLASH_KEY_LENGTHS[scheme];
  if (!allowed.includes(key.length)) {
    const names =
      scheme === "esp32"
        ? "32 bytes (256-bit) or 24 bytes (192-bit, 3/4 coding scheme)"
        : "16 bytes (128-bit, SHA-256-extended), 32 bytes (XTS-AES-128) or 64 bytes (XTS-AES-256)";
    throw new EspOtaError(
      "E_FLASH_KEY_LENGTH",
      `flash encryption key is ${key.length} bytes; the ${scheme === "esp32" ? "ESP32 (classic)" : "AES-XTS"} scheme takes ${names}`,
      { scheme, keyLength: key.length },
    );
  }
}

/**
 * Makes a cipher for one key (and FLASH_CRYPT_CONFIG). It precomputes what it can: the ESP32
 * scheme's tweak tables, or the XTS scheme's three AES-ECB contexts; reuse it for many calls.
 * A key of the wrong length is an EspOtaError `E_FLASH_KEY_LENGTH` (key files come from users);
 * a non-Uint8Array key is a TypeError, a FLASH_CRYPT_CONFIG outside 0..15 a RangeError.
 */
export function createFlashCipher(opts: FlashCryptOptions): FlashCipher {
  if (typeof opts !== "object" || opts === null)
    throw new TypeError("createFlashCipher: options object required");
  if (opts.scheme === "esp32") {
    checkKey("esp32", opts.key);
    const conf = opts.flashCryptConf ?? DEFAULT_FLASH_CRYPT_CONF;
    if (!Number.isInteger(conf) || conf < 0 || conf > 15) {
      throw new RangeError(`flashCryptConf must be an integer 0..15 (a 4-bit eFuse), got ${conf}`);
    }
    const key32 = esp32ExpandKeyFile(opts.key);
    const impl = new Esp32FlashCrypt(key32, conf);
    key32.fill(0); // the cipher keeps the key as words; drop the spare copy
    const run = (address: number, data: Uint8Array, decrypt: boolean, out?: Uint8Array) => {
      checkCall("esp32", address, data, out);
      return impl.run(address, data, decrypt, out);
    };
    return {
      scheme: "esp32",
      description: `ESP32 AES-256 (${opts.key.length * 8}-bit key), FLASH_CRYPT_CONFIG 0x${conf.toString(16)}`,
      encrypt: (address, plaintext, out) => run(address, plaintext, false, out),
      decrypt: (address, ciphertext, out) => run(address, ciphertext, true, out),
    };
  }
  if (opts.scheme === "xts") {
    checkKey("xts", opts.key);
    return xtsCipher(opts.key, false);
  }
  throw new TypeError(
    `createFlashCipher: scheme must be "esp32" or "xts", got ${JSON.stringify((opts as { scheme: unknown }).scheme)}`,
  );
}

/**
 * An XTS cipher that uses the plain JS whitening kernel even where WebAssembly SIMD exists; the
 * tests run the vectors through both. Same contract as createFlashCipher.
 */
export function createFlashCipherJsKernel(
  opts: FlashCryptOptions & { scheme: "xts" },
): FlashCipher {
  checkKey("xts", opts.key);
  return xtsCipher(opts.key, true);
}

function xtsCipher(key: Uint8Array, preferJs: boolean): FlashCipher {
  const impl = new XtsFlashCrypt(key, preferJs);
  const run = (address: number, data: Uint8Array, decrypt: boolean, out?: Uint8Array) => {
    checkCall("xts", address, data, out);
    return impl.run(address, data, decrypt, out);
  };
  const size = key.length === 16 ? "128-bit key, SHA-256-extended" : `${key.length * 8}-bit key`;
  return {
    scheme: "xts",
    description: `XTS-AES-${impl.aesBits} (${size})`,
    encrypt: (address, plaintext, out) => run(address, plaintext, false, out),
    decrypt: (address, ciphertext, out) => run(address, ciphertext, true, out),
  };
}

function checkCall(
  scheme: FlashCryptScheme,
  address: number,
  data: Uint8Array,
  out: Uint8Array | undefined,
): void {
  if (!(data instanceof Uint8Array)) throw new TypeError("flash data must be a Uint8Array");
  const check = checkFlashRegion(scheme, address, data.length);
  if (!check.ok) throw new RangeError(check.message);
  if (out !== undefined) {
    if (!(out instanceof Uint8Array)) throw new TypeError("out must be a Uint8Array");
    if (out.length < data.length)
      throw new RangeError(`out holds ${out.length} bytes; the result is ${data.length}`);
  }
}

/**
 * Encrypts or decrypts a stream of chunks of any sizes that together sit at flash `address`
 * onwards. Each 16-byte block depends only on its own address (both schemes), so the stream
 * holds back at most 15 bytes and any chunking gives the bytes of one call.
 */
export function createFlashCryptStream(
  cipher: FlashCipher,
  address: number,
  direction: "encrypt" | "decrypt",
): FlashCryptStream {
  if (direction !== "encrypt" && direction !== "decrypt") {
    throw new TypeError(
      `direction must be "encrypt" or "decrypt", got ${JSON.stringify(direction)}`,
    );
  }
  const start = checkFlashRegion(cipher.scheme, address, 0);
  if (!start.ok) throw new RangeError(start.message);
  const op = direction === "encrypt" ? cipher.encrypt : cipher.decrypt;
  let at = address;
  let pending = new Uint8Array(0);
  let ended = false;
  return {
    push(chunk) {
      if (ended) throw new TypeError("flash crypt stream: push() after end()");
      if (!(chunk instanceof Uint8Array))
        throw new TypeError("flash crypt stream: chunk must be a Uint8Array");
      let input = chunk;
      if (pending.length > 0) {
        input = new Uint8Array(pending.length + chunk.length);
        input.set(pending, 0);
        input.set(chunk, pending.length);
      }
      const whole = input.length - (input.length % 16);
      // Copy the remainder: the caller may reuse its chunk buffer.
      pending = input.slice(whole);
      if (whole === 0) return new Uint8Array(0);
      const out = op(at, input.subarray(0, whole));
      at += whole;
      return out;
    },
    end() {
      if (ended) throw new TypeError("flash crypt stream: end() called twice");
      ended = true;
      if (pending.length > 0) {
        throw new RangeError(
          `flash crypt stream: ${at - address + pending.length} bytes is not a multiple of 16 bytes`,
        );
      }
      return new Uint8Array(0);
    },
  };
}

/** Key sizes espsecure `generate-flash-encryption-key --keylen` writes for the chips. */
export type FlashKeyBits = 128 | 192 | 256 | 512;

/**
 * A new random key, written as espsecure writes it (`os.urandom(keylen // 8)`, raw bytes):
 * 256 for ESP32 (classic) or XTS-AES-128, 192 for ESP32 with the 3/4 coding scheme, 512 for
 * XTS-AES-256 (S2, S3, C5, P4), 128 for ESP32-C2 (SHA-256-extended).
 */
export function generateFlashEncryptionKey(keylen: FlashKeyBits): Uint8Array {
  if (keylen !== 128 && keylen !== 192 && keylen !== 256 && keylen !== 512) {
    throw new RangeError(`keylen must be 128, 192, 256 or 512 bits, got ${keylen}`);
  }
  return new Uint8Array(randomBytes(keylen / 8));
}

/** One-off encryption; for repeated calls with one key, keep a createFlashCipher. */
export function flashEncrypt(
  opts: FlashCryptOptions,
  address: number,
  data: Uint8Array,
): Uint8Array {
  return createFlashCipher(opts).encrypt(address, data);
}

/** One-off decryption; for repeated calls with one key, keep a createFlashCipher. */
export function flashDecrypt(
  opts: FlashCryptOptions,
  address: number,
  data: Uint8Array,
): Uint8Array {
  return createFlashCipher(opts).decrypt(address, data);
}
