/**
 * XTS-AES flash encryption of the ESP32-S2, S3, C2, C3, C5, C6, H2, P4..., byte-exact with
 * espsecure v5 `encrypt-flash-data --aes-xts` / `decrypt-flash-data --aes-xts` (esptool
 * `espsecure/__init__.py`: `_load_hardware_key`, `_flash_encryption_operation_aes_xts`; ESP-IDF
 * `docs/en/security/flash-encryption.rst`, "XTS-AES").
 *
 * - Key file: 64 bytes = AES-256-XTS (data key bytes 0..31, tweak key 32..63); 32 bytes =
 *   AES-128-XTS (0..15 / 16..31); 16 bytes = extended with SHA-256 to 32 bytes, then AES-128-XTS
 *   (ESP32-C2's 128-bit key).
 * - Data unit 128 bytes; tweak = LE32(address & ~0x7F) ‖ 12 zero bytes; each unit byte-reversed
 *   before and after standard IEEE 1619 XTS. Sub-blocks are independent (no ciphertext stealing is
 *   ever needed: lengths are multiples of 16), so any 16-aligned slice of a unit encrypts alone to
 *   the same bytes as inside the whole unit: espsecure's zero padding of partial units is
 *   invisible in the output (the `*_slice` vectors).
 *
 * How: AES runs in node:crypto AES-ECB (three contexts made once per cipher and reused: ECB with
 * padding off keeps no state between `update` calls); the reversal and tweak whitening run in
 * flash-encryption-xts-kernel.ts. OpenSSL's own `aes-*-xts` is not used: it needs a new context
 * per 128-byte unit (40–57 MB/s) and rejects keys whose halves are equal, which the hardware accepts.
 */
import {
  type Cipher,
  createCipheriv,
  createDecipheriv,
  createHash,
  type Decipher,
} from "node:crypto";
import {
  XTS_CHUNK_BYTES,
  XTS_DATA_OFFSET,
  XTS_LANES,
  XTS_TWEAK_INPUT_OFFSET,
  XTS_TWEAK_OFFSET,
  type XtsWhitener,
  xtsWhitener,
} from "./flash-encryption-xts-kernel.js";

/** The tweak holds a 32-bit address, so XTS data must end at or below 4 GB. */
export const XTS_FLASH_ADDRESS_LIMIT = 2 ** 32;

/** Key file → the XTS key (data key ‖ tweak key): 16 bytes are SHA-256-extended. */
export function xtsExpandKeyFile(key: Uint8Array): Uint8Array {
  if (key.length === 16) return new Uint8Array(createHash("sha256").update(key).digest());
  return key.slice();
}

function ecb(bits: 128 | 256, key: Uint8Array, decrypt: boolean): Cipher | Decipher {
  const algorithm = bits === 128 ? "aes-128-ecb" : "aes-256-ecb";
  const c = decrypt ? createDecipheriv(algorithm, key, null) : createCipheriv(algorithm, key, null);
  c.setAutoPadding(false);
  return c;
}

export class XtsFlashCrypt {
  /** AES key size: 128 for 16- and 32-byte key files, 256 for 64-byte ones. */
  readonly aesBits: 128 | 256;
  private readonly dataEncrypt: Cipher;
  private readonly dataDecrypt: Decipher;
  private readonly tweakEncrypt: Cipher;
  private readonly kernel: XtsWhitener;
  private readonly kernelView: DataView;

  /** `keyFile`: 16, 32 or 64 bytes (checked by the caller); `preferJs` forces the JS kernel. */
  constructor(keyFile: Uint8Array, preferJs = false) {
    const key = xtsExpandKeyFile(keyFile);
    const half = key.length / 2;
    this.aesBits = half === 16 ? 128 : 256;
    this.dataEncrypt = ecb(this.aesBits, key.subarray(0, half), false) as Cipher;
    this.dataDecrypt = ecb(this.aesBits, key.subarray(0, half), true) as Decipher;
    this.tweakEncrypt = ecb(this.aesBits, key.subarray(half), false) as Cipher;
    key.fill(0);
    this.kernel = xtsWhitener(preferJs);
    this.kernelView = new DataView(this.kernel.mem.buffer, this.kernel.mem.byteOffset);
  }

  get kernelKind(): XtsWhitener["kind"] {
    return this.kernel.kind;
  }

  /**
   * Encrypts or decrypts `data` (length a multiple of 16) stored at flash `address` (a multiple
   * of 16; address + length ≤ 4 GB, checked by the caller), into the start of `into` when given
   * (at least data.length bytes, checked by the caller; `data` itself or not overlapping it:
   * each window is copied into the scratch memory before its result is written).
   */
  run(address: number, data: Uint8Array, decrypt: boolean, into?: Uint8Array): Uint8Array {
    const len = data.length;
    const { mem, pre, post } = this.kernel;
    const view = this.kernelView;
    const dataCipher = decrypt ? this.dataDecrypt : this.dataEncrypt;
    // Without `into`, allocated only when the data spans several windows.
    let out: Uint8Array | undefined = into?.subarray(0, len);
    let pos = 0;
    // Windows of whole units, XTS_CHUNK_BYTES long, aligned to the first unit.
    for (let window = address - (address % 128); pos < len; window += XTS_CHUNK_BYTES) {
      const lead = address + pos - window; // bytes of the first unit before the data
      const n = Math.min(len - pos, XTS_CHUNK_BYTES - lead);
      const units = Math.ceil(Math.ceil((lead + n) / 128) / XTS_LANES) * XTS_LANES;
      const end = XTS_DATA_OFFSET + 128 * units;
      // Tweak plaintexts: LE32(unit address) ‖ 12 zero bytes. Only the first word is written: the
      // other 12 bytes of this area are zero from creation and nothing else writes there (writing
      // them too cost 8% of the whole call). Units past 4 GB only occur as lane padding, and their
      // output is discarded, hence the wrap; `>>> 0` wraps (ToUint32) where `% 2 ** 32`, a
      // floating-point remainder, cost 7 ns a unit, 13% of the call.
      for (let u = 0, o = XTS_TWEAK_INPUT_OFFSET; u < units; u++, o += 16) {
        view.setUint32(o, (window + 128 * u) >>> 0, true);
      }
      const tweakIn = mem.subarray(XTS_TWEAK_INPUT_OFFSET, XTS_TWEAK_INPUT_OFFSET + 16 * units);
      mem.set(this.tweakEncrypt.update(tweakIn), XTS_TWEAK_OFFSET);
      // Blocks outside the data (lead, tail, lane padding) are zeroed rather than left holding a
      // previous call's bytes; each 16-byte block is independent, so they affect nothing else.
      mem.fill(0, XTS_DATA_OFFSET, XTS_DATA_OFFSET + lead);
      mem.set(data.subarray(pos, pos + n), XTS_DATA_OFFSET + lead);
      mem.fill(0, XTS_DATA_OFFSET + lead + n, end);
      pre(units);
      const aes = dataCipher.update(mem.subarray(XTS_DATA_OFFSET, end));
      mem.set(aes, XTS_DATA_OFFSET);
      post(units);
      const result = mem.subarray(XTS_DATA_OFFSET + lead, XTS_DATA_OFFSET + lead + n);
      if (n === len && !out) {
        // One window: node:crypto's fresh output buffer becomes the result, which saves
        // allocating (and page-faulting) another one: 0.52 → 0.46 ms per 1.3 MB. The bytes around
        // the view are zeroed so its .buffer holds nothing else.
        aes.set(result, lead);
        aes.fill(0, 0, lead);
        aes.fill(0, lead + n);
        return new Uint8Array(aes.buffer, aes.byteOffset + lead, n);
      }
      // Every byte of `out` is written, so skip zero-filling it.
      out ??= new Uint8Array(Buffer.allocUnsafeSlow(len).buffer, 0, len);
      out.set(result, pos);
      pos += n;
    }
    return out ?? new Uint8Array(0);
  }
}
