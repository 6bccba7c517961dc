import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type DecodeEvent,
  encodeFrame,
  FrameDecoder,
  MAX_PAYLOAD,
  SOF0,
} from "../../src/uart/frame.js";

const frameArb = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  payload: fc.uint8Array({ maxLength: 300 }),
});
/** Console text as ESP-IDF prints it: printable ASCII lines. */
const lineArb = fc.stringMatching(/^[ -~]{1,80}$/);
const itemArb = fc.oneof(
  frameArb.map((f) => ({ kind: "frame" as const, ...f })),
  lineArb.map((line) => ({ kind: "log" as const, line })),
);

function bytesOf(items: { kind: string; type?: number; payload?: Uint8Array; line?: string }[]) {
  const parts = items.map((i) =>
    i.kind === "frame"
      ? encodeFrame(i.type!, i.payload!)
      : new TextEncoder().encode(`${i.line}\r\n`),
  );
  return Buffer.concat(parts);
}

function simplify(evs: DecodeEvent[]) {
  return evs.map((e) =>
    e.kind === "frame"
      ? { kind: "frame", type: e.frame.type, payload: Array.from(e.frame.payload) }
      : e.kind === "log"
        ? { kind: "log", line: e.line }
        : { kind: "error" },
  );
}

function decodeChunked(bytes: Uint8Array, cuts: number[]): DecodeEvent[] {
  const d = new FrameDecoder();
  const out: DecodeEvent[] = [];
  let prev = 0;
  for (const c of [...cuts.map((x) => x % (bytes.length + 1))].sort((a, b) => a - b)) {
    out.push(...d.push(bytes.subarray(prev, c)));
    prev = c;
  }
  out.push(...d.push(bytes.subarray(prev)));
  out.push(...d.flushLine());
  return out;
}

describe("frame codec", () => {
  it("layout: A5 5A type len CRC-8 payload CRC-32", () => {
    const f = encodeFrame(0x03, Uint8Array.of(1, 2, 3));
    expect(Array.from(f.subarray(0, 5))).toEqual([0xa5, 0x5a, 0x03, 3, 0]);
    expect(f.length).toBe(3 + 10);
  });

  it("round trips frames interleaved with console lines, under any chunking", () => {
    fc.assert(
      fc.property(
        fc.array(itemArb, { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (items, cuts) => {
          const bytes = bytesOf(items);
          const expected = items.map((i) =>
            i.kind === "frame"
              ? { kind: "frame", type: i.type, payload: Array.from(i.payload) }
              : { kind: "log", line: i.line },
          );
          expect(simplify(decodeChunked(bytes, cuts))).toEqual(expected);
        },
      ),
    );
  });

  it("random bytes never crash the decoder and never yield a frame that was not sent", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2000 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        (junk, cuts) => {
          const evs = decodeChunked(junk, cuts);
          for (const e of evs) {
            if (e.kind === "error") expect(e.code).toBe("E_UART_FRAME_CRC");
            // A frame from random bytes needs both CRCs to pass by chance: 2^-40 per candidate.
            expect(e.kind).not.toBe("frame");
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("resynchronises after garbage and after a corrupted frame; CRC catches every single-bit flip", () => {
    fc.assert(
      fc.property(
        frameArb,
        frameArb,
        fc.uint8Array({ maxLength: 40 }),
        fc.nat(),
        (a, b, junk, bit) => {
          const fa = encodeFrame(a.type, a.payload);
          const fb = encodeFrame(b.type, b.payload);
          const bad = Uint8Array.from(fa);
          const k = bit % (bad.length * 8);
          bad[k >> 3]! ^= 1 << (k & 7);
          const d = new FrameDecoder();
          const evs = [...d.push(junk), ...d.push(bad), ...d.push(fb)];
          const frames = evs.filter((e) => e.kind === "frame");
          // The flipped frame is never delivered; the good frame after it always is.
          expect(frames.length).toBe(1);
          const last = frames[0]!;
          expect(last.kind === "frame" && last.frame.type).toBe(b.type);
          expect(last.kind === "frame" && Array.from(last.frame.payload)).toEqual(
            Array.from(b.payload),
          );
        },
      ),
    );
  });

  it("a frame between two halves of a log line splits nothing", () => {
    const d = new FrameDecoder();
    const evs = [
      ...d.push(new TextEncoder().encode("I (300) boot: ESP-IDF v5.5 2nd stage bootloader\r\n")),
      ...d.push(encodeFrame(0x90, Uint8Array.of(9))),
      ...d.push(new TextEncoder().encode("Guru Meditation Error: Core  0 panic'ed\r\n")),
    ];
    expect(simplify(evs)).toEqual([
      { kind: "log", line: "I (300) boot: ESP-IDF v5.5 2nd stage bootloader" },
      { kind: "frame", type: 0x90, payload: [9] },
      { kind: "log", line: "Guru Meditation Error: Core  0 panic'ed" },
    ]);
    expect(d.stats.frames).toBe(1);
  });

  it("counts a damaged frame and skips it whole (no binary garbage as log lines)", () => {
    const f = encodeFrame(0x03, new Uint8Array(100).fill(0x41));
    f[50]! ^= 0xff;
    const d = new FrameDecoder();
    const evs = d.push(f);
    expect(evs).toEqual([{ kind: "error", code: "E_UART_FRAME_CRC", detail: expect.any(String) }]);
    expect(d.stats.crcErrors).toBe(1);
  });

  it("misuse throws", () => {
    expect(() => encodeFrame(256)).toThrow(RangeError);
    expect(() => encodeFrame(1, new Uint8Array(MAX_PAYLOAD + 1))).toThrow(/payload of/);
    expect(SOF0).toBe(0xa5);
  });
});
