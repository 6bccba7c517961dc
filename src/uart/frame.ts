/**
 * UART OTA framing (docs/uart-protocol.md §2): a pure encoder and an incremental decoder that
 * shares the line with the ESP-IDF console. Bytes outside frames are console text and come out
 * as log lines (boot banners and panics are how a user learns why a device did not boot,
 * STYLE.md §8); a frame whose header or CRC fails is counted and skipped, never emitted in part.
 *
 * Layout (little-endian):
 *   0  u8   0xA5  start of frame (never in ESP-IDF console text, which is ASCII)
 *   1  u8   0x5A
 *   2  u8   type
 *   3  u16  payload length N (≤ MAX_PAYLOAD)
 *   5  u8   CRC-8 (poly 0x07) of bytes 2..4, so a corrupted length cannot swallow later frames
 *   6  N    payload
 *   6+N u32 CRC-32 (IEEE, as esp_rom_crc32_le) of bytes 2..5+N
 */
import { crc32 } from "../bytes.js";

export const SOF0 = 0xa5;
export const SOF1 = 0x5a;
export const HEADER_LEN = 6;
export const TRAILER_LEN = 4;
/** Bytes a frame adds to its payload. */
export const FRAME_OVERHEAD = HEADER_LEN + TRAILER_LEN;
/** Largest payload: a 4 KB DATA chunk plus its 4-byte offset, rounded up for future fields. */
export const MAX_PAYLOAD = 4096 + 64;
/**
 * Silence after which a partly received frame is given up (§2.3): far longer than any gap
 * inside a frame (a frame is written at once), far shorter than the protocol's timeouts.
 */
export const FRAME_GAP_MS = 50;
/** Longest console line kept; longer ones are split (a device printing binary must not grow us). */
export const MAX_LINE = 512;

export interface Frame {
  type: number;
  payload: Uint8Array;
}

export type DecodeEvent =
  | { kind: "frame"; frame: Frame }
  | { kind: "log"; line: string }
  | { kind: "error"; code: "E_UART_FRAME_CRC"; detail: string };

export interface DecoderStats {
  frames: number;
  /** Frames whose header checked but whose CRC-32 did not: skipped whole. */
  crcErrors: number;
  /** Console bytes that were not printable text (line noise, a half-seen frame header). */
  noiseBytes: number;
  logLines: number;
}

const CRC8_TABLE = (() => {
  const t = new Uint8Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 0x80 ? ((c << 1) ^ 0x07) & 0xff : (c << 1) & 0xff;
    t[i] = c;
  }
  return t;
})();

export function crc8(b: Uint8Array, start = 0, end = b.length): number {
  let c = 0;
  for (let i = start; i < end; i++) c = CRC8_TABLE[(c ^ b[i]!) & 0xff]!;
  return c;
}

export function encodeFrame(type: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (!Number.isInteger(type) || type < 0 || type > 0xff)
    throw new RangeError(`encodeFrame: type ${type} is not a byte`);
  if (payload.length > MAX_PAYLOAD)
    throw new RangeError(`encodeFrame: payload of ${payload.length} bytes > ${MAX_PAYLOAD}`);
  const n = payload.length;
  const out = new Uint8Array(FRAME_OVERHEAD + n);
  out[0] = SOF0;
  out[1] = SOF1;
  out[2] = type;
  out[3] = n & 0xff;
  out[4] = n >>> 8;
  out[5] = crc8(out, 2, 5);
  out.set(payload, HEADER_LEN);
  const c = crc32(out.subarray(2, HEADER_LEN + n));
  const v = new DataView(out.buffer);
  v.setUint32(HEADER_LEN + n, c, true);
  return out;
}

/** Wire bytes of a frame with an N-byte payload. */
export function frameSize(payloadLength: number): number {
  return FRAME_OVERHEAD + payloadLength;
}

/**
 * Incremental decoder. `push` any chunking of the byte stream; the events are the same as for
 * the whole stream (test/uart/frame.test.ts checks that with fast-check). Memory is bounded by
 * one frame plus one line.
 */
export class FrameDecoder {
  private buf = new Uint8Array(2 * (MAX_PAYLOAD + FRAME_OVERHEAD));
  private len = 0;
  private line: number[] = [];
  readonly stats: DecoderStats = { frames: 0, crcErrors: 0, noiseBytes: 0, logLines: 0 };

  push(chunk: Uint8Array): DecodeEvent[] {
    const out: DecodeEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      const room = this.buf.length - this.len;
      const n = Math.min(room, chunk.length - i);
      this.buf.set(chunk.subarray(i, i + n), this.len);
      this.len += n;
      i += n;
      this.drain(out);
    }
    return out;
  }

  /**
   * The line went quiet in the middle of a frame (a reset, a pulled cable, a lost byte in the
   * length): what was waiting for the rest is not a frame. Skip its start byte and decode the
   * rest afresh, so a later frame that was swallowed as "the rest" is found (§2.3).
   */
  expire(): DecodeEvent[] {
    const out: DecodeEvent[] = [];
    if (this.len > 0 && this.buf[0] === SOF0) {
      this.stats.noiseBytes++;
      this.buf.copyWithin(0, 1, this.len);
      this.len--;
      this.drain(out);
    }
    return out;
  }

  /**
   * `push` for bytes that come after a silence of FRAME_GAP_MS while a frame was incomplete, as
   * a reader sees them: if these bytes complete that frame and its CRC-32 holds, it was the same
   * frame read late (a reader starved of CPU on a busy gateway reads the rest of a frame that
   * sat in the kernel's buffer all along), and it is kept; otherwise the frame is given up as
   * `expire` does and the bytes are decoded afresh (§2.3). The CRC-32 decides, so nothing that
   * expire would have refused is accepted; only a frame that was whole is no longer lost.
   */
  pushAfterSilence(chunk: Uint8Array): DecodeEvent[] {
    if (this.completesPending(chunk)) return this.push(chunk);
    return [...this.expire(), ...this.push(chunk)];
  }

  /** Whether the held partial frame plus `chunk` make a whole frame whose CRCs check. */
  completesPending(chunk: Uint8Array): boolean {
    const held = this.len;
    if (held === 0 || this.buf[0] !== SOF0) return false;
    const at = (i: number): number => (i < held ? this.buf[i]! : chunk[i - held]!);
    const avail = held + chunk.length;
    if (avail < HEADER_LEN) return false;
    const head = Uint8Array.of(at(0), at(1), at(2), at(3), at(4), at(5));
    const n = head[3]! | (head[4]! << 8);
    if (head[1] !== SOF1 || crc8(head, 2, 5) !== head[5] || n > MAX_PAYLOAD) return false;
    const total = FRAME_OVERHEAD + n;
    if (avail < total) return false;
    const whole = new Uint8Array(total);
    whole.set(this.buf.subarray(0, Math.min(held, total)));
    if (held < total) whole.set(chunk.subarray(0, total - held), held);
    const want = new DataView(whole.buffer).getUint32(HEADER_LEN + n, true);
    return crc32(whole.subarray(2, HEADER_LEN + n)) === want;
  }

  /** Bytes held while waiting for the rest of a frame. */
  get pending(): number {
    return this.len;
  }

  /** Console text that has no newline yet (shown when a device goes quiet mid-line). */
  flushLine(): DecodeEvent[] {
    const out: DecodeEvent[] = [];
    this.endLine(out);
    return out;
  }

  private drain(out: DecodeEvent[]): void {
    const b = this.buf;
    let p = 0;
    while (p < this.len) {
      if (b[p] !== SOF0) {
        this.text(b[p]!, out);
        p++;
        continue;
      }
      if (this.len - p < HEADER_LEN) break;
      const n = b[p + 3]! | (b[p + 4]! << 8);
      if (b[p + 1] !== SOF1 || crc8(b, p + 2, p + 5) !== b[p + 5] || n > MAX_PAYLOAD) {
        // Not a frame start after all: a noise byte. Resynchronise at the next byte.
        this.stats.noiseBytes++;
        p++;
        continue;
      }
      const total = FRAME_OVERHEAD + n;
      if (this.len - p < total) break;
      const want = new DataView(b.buffer, b.byteOffset + p + HEADER_LEN + n, 4).getUint32(0, true);
      if (crc32(b.subarray(p + 2, p + HEADER_LEN + n)) !== want) {
        // The header checked (CRC-8), so its length is trusted: skip the whole damaged frame.
        this.stats.crcErrors++;
        out.push({
          kind: "error",
          code: "E_UART_FRAME_CRC",
          detail: `frame type 0x${b[p + 2]!.toString(16)} (${n} bytes) failed its CRC-32`,
        });
        p += total;
        continue;
      }
      this.endLine(out);
      this.stats.frames++;
      out.push({
        kind: "frame",
        frame: { type: b[p + 2]!, payload: b.slice(p + HEADER_LEN, p + HEADER_LEN + n) },
      });
      p += total;
    }
    if (p > 0) {
      b.copyWithin(0, p, this.len);
      this.len -= p;
    }
  }

  private text(c: number, out: DecodeEvent[]): void {
    if (c === 0x0a) {
      this.endLine(out);
      return;
    }
    if (c === 0x0d) return;
    // Printable ASCII, tab, and UTF-8 bytes are console text; other controls are line noise.
    if (c === 0x09 || (c >= 0x20 && c !== 0x7f)) {
      this.line.push(c);
      if (this.line.length >= MAX_LINE) this.endLine(out);
    } else {
      this.stats.noiseBytes++;
    }
  }

  private endLine(out: DecodeEvent[]): void {
    if (this.line.length === 0) return;
    const line = Buffer.from(this.line).toString("utf8");
    this.line = [];
    this.stats.logLines++;
    out.push({ kind: "log", line });
  }
}
