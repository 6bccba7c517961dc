/**
 * SLIP framing as the ESP ROM loader and esptool use it (RFC 1055 with a leading END): a frame is
 * `C0`, the payload with `DB` → `DB DD` and `C0` → `DB DC`, then `C0` [esptool
 * `esptool/loader.py` ESPLoader.write and slip_reader; docs/rom-protocol.md §1].
 *
 * The decoder is a push parser (STYLE.md §8): it takes bytes in any chunking, emits only whole
 * frames, and resynchronises at the next `C0` after noise (the ROM banner, an app's log), a bad
 * escape or an oversized frame, counting each. Bytes outside frames are kept, bounded, for
 * diagnostics: a board that prints a boot log instead of answering is in the wrong mode.
 */

export const SLIP_END = 0xc0;
export const SLIP_ESC = 0xdb;
export const SLIP_ESC_END = 0xdc;
export const SLIP_ESC_ESC = 0xdd;

/** One frame, escaped and wrapped in END bytes. */
export function slipEncode(payload: Uint8Array): Uint8Array {
  let extra = 0;
  for (const b of payload) if (b === SLIP_END || b === SLIP_ESC) extra++;
  const out = new Uint8Array(payload.length + extra + 2);
  let o = 0;
  out[o++] = SLIP_END;
  for (const b of payload) {
    if (b === SLIP_END) {
      out[o++] = SLIP_ESC;
      out[o++] = SLIP_ESC_END;
    } else if (b === SLIP_ESC) {
      out[o++] = SLIP_ESC;
      out[o++] = SLIP_ESC_ESC;
    } else out[o++] = b;
  }
  out[o] = SLIP_END;
  return out;
}

export interface SlipStats {
  frames: number;
  /** Frames dropped for a bad escape sequence. */
  badEscapes: number;
  /** Frames dropped for exceeding `maxFrame`. */
  oversized: number;
  /** Bytes seen outside any frame (noise, boot log). */
  noiseBytes: number;
}

export interface SlipDecoderOptions {
  /**
   * Largest payload accepted (bytes). Default 0x4400: a 16 KB stub FLASH_DATA block plus its
   * header, the largest packet esptool sends; the ROM's own blocks are 1 KB.
   */
  maxFrame?: number;
  /** Noise bytes kept for `noise()` (default 4096; older ones are dropped). */
  maxNoise?: number;
}

export class SlipDecoder {
  readonly stats: SlipStats = { frames: 0, badEscapes: 0, oversized: 0, noiseBytes: 0 };
  private readonly maxFrame: number;
  private readonly maxNoise: number;
  private buf: Uint8Array;
  private len = 0;
  /** idle: outside a frame; in: inside; esc: after DB; skip: dropping to the next END. */
  private mode: "idle" | "in" | "esc" | "skip" = "idle";
  private noiseBuf: number[] = [];

  constructor(opts: SlipDecoderOptions = {}) {
    this.maxFrame = opts.maxFrame ?? 0x4400;
    this.maxNoise = opts.maxNoise ?? 4096;
    if (!(Number.isInteger(this.maxFrame) && this.maxFrame > 0))
      throw new RangeError(`SlipDecoder: maxFrame ${this.maxFrame} is not a positive integer`);
    this.buf = new Uint8Array(Math.min(this.maxFrame, 2048));
  }

  /** Feed bytes; returns the frames they complete, in order (each a fresh copy). */
  push(bytes: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const b of bytes) {
      switch (this.mode) {
        case "idle":
          if (b === SLIP_END) {
            this.mode = "in";
            this.len = 0;
          } else this.noise(b);
          break;
        case "skip":
          // An END after a broken frame may be that frame's end or the next one's start: take it
          // as a start; an empty frame (END END) is ignored below, so either way we are in step.
          if (b === SLIP_END) {
            this.mode = "in";
            this.len = 0;
          }
          break;
        case "in":
          if (b === SLIP_END) {
            // END END: the first was the previous frame's end or stray; stay in a frame.
            if (this.len === 0) break;
            out.push(this.buf.slice(0, this.len));
            this.stats.frames++;
            this.len = 0;
            this.mode = "idle";
          } else if (b === SLIP_ESC) this.mode = "esc";
          else this.append(b);
          break;
        case "esc":
          if (b === SLIP_ESC_END) {
            this.mode = "in";
            this.append(SLIP_END);
          } else if (b === SLIP_ESC_ESC) {
            this.mode = "in";
            this.append(SLIP_ESC);
          } else {
            this.stats.badEscapes++;
            this.len = 0;
            this.mode = b === SLIP_END ? "in" : "skip";
          }
          break;
      }
    }
    return out;
  }

  /** Bytes seen outside frames since the last call (the tail of them, at most `maxNoise`). */
  takeNoise(): Uint8Array {
    const n = Uint8Array.from(this.noiseBuf);
    this.noiseBuf = [];
    return n;
  }

  /** Forget any partial frame (a reset, a baud change). */
  reset(): void {
    this.mode = "idle";
    this.len = 0;
  }

  private append(b: number): void {
    if (this.mode === "skip") return;
    if (this.len >= this.maxFrame) {
      this.stats.oversized++;
      this.len = 0;
      this.mode = "skip";
      return;
    }
    if (this.len === this.buf.length) {
      const bigger = new Uint8Array(Math.min(this.maxFrame, this.buf.length * 2));
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.len++] = b;
  }

  private noise(b: number): void {
    this.stats.noiseBytes++;
    this.noiseBuf.push(b);
    if (this.noiseBuf.length > this.maxNoise) this.noiseBuf.shift();
  }
}
