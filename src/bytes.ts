/** Little helpers over Uint8Array shared by every codec. Pure: no I/O. */
import { crc32 as zlibCrc32 } from "node:zlib";

export function u32le(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

export function u16le(b: Uint8Array, off: number): number {
  return b[off]! | (b[off + 1]! << 8);
}

export function putU32le(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}

export function putU16le(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
}

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new TypeError(
      `fromHex: not an even-length hex string: ${JSON.stringify(hex.slice(0, 40))}`,
    );
  }
  return new Uint8Array(Buffer.from(hex, "hex"));
}

/** A byte array filled with `value` (0xFF is erased NOR flash). */
export function filled(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/**
 * IEEE CRC-32 (zlib) with an explicit initial value. `crc32(x)` is zlib.crc32/binascii.crc32;
 * `crc32(x, 0xFFFFFFFF)` is ESP-IDF's `esp_rom_crc32_le(0xFFFFFFFF, ...)`, the otadata rule.
 */
export function crc32(data: Uint8Array, init = 0): number {
  return zlibCrc32(data, init) >>> 0;
}

/** Decode a NUL-terminated, NUL- or 0xFF-padded ASCII field. */
export function cString(b: Uint8Array): string {
  let end = b.indexOf(0);
  if (end < 0) end = b.length;
  let s = "";
  for (let i = 0; i < end; i++) {
    const c = b[i]!;
    if (c === 0xff) break;
    s += String.fromCharCode(c);
  }
  return s;
}

/** Encode ASCII into a fixed-size field, NUL-padded; throws RangeError when it does not fit. */
export function putCString(
  b: Uint8Array,
  off: number,
  size: number,
  s: string,
  field: string,
): void {
  if (s.length > size)
    throw new RangeError(`${field}: "${s}" is ${s.length} bytes, at most ${size} fit`);
  for (let i = 0; i < size; i++) b[off + i] = i < s.length ? s.charCodeAt(i) & 0xff : 0;
}

export function hex32(v: number): string {
  return `0x${(v >>> 0).toString(16).padStart(8, "0")}`;
}

export function hexAddr(v: number): string {
  return `0x${v.toString(16)}`;
}
