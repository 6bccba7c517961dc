import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checksum,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  req,
  responseStatus,
} from "../../src/rom/protocol.js";
import { SLIP_END, SlipDecoder, slipEncode } from "../../src/rom/slip.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const payload = fc.uint8Array({ minLength: 1, maxLength: 300 });

/** Split `b` at the given cut points (any chunking). */
function chunks(b: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...at, b.length]) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  return out;
}

describe("SLIP", () => {
  it("the SYNC frame on the wire is esptool's 46 bytes (test/fixtures/README.md, rom_protocol)", () => {
    expect(hex(slipEncode(req.sync()))).toBe(`c0000824000000000007071220${"55".repeat(32)}c0`);
    expect(slipEncode(req.sync()).length).toBe(46);
  });

  it("escapes C0 and DB", () => {
    expect(hex(slipEncode(Uint8Array.from([0xc0, 0xdb, 1])))).toBe("c0dbdcdbdd01c0");
  });

  it("decode(encode(frames)) == frames, whatever the chunking", () => {
    fc.assert(
      fc.property(
        fc.array(payload, { minLength: 1, maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (frames, cuts) => {
          const wire = Buffer.concat(frames.map(slipEncode));
          const d = new SlipDecoder();
          const got = chunks(wire, cuts).flatMap((c) => d.push(c));
          expect(got.map(hex)).toEqual(frames.map(hex));
        },
      ),
    );
  });

  it("random bytes never crash the decoder, and it resynchronises on the next frame", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 500 }),
        payload,
        fc.array(fc.nat(), { maxLength: 10 }),
        (noise, frame, cuts) => {
          const d = new SlipDecoder({ maxFrame: 1024 });
          const wire = Buffer.concat([noise, Uint8Array.of(SLIP_END), slipEncode(frame)]);
          const got = chunks(wire, cuts).flatMap((c) => d.push(c));
          // Noise can form frames of its own, but the real frame is always the last one out, whole.
          expect(hex(got.at(-1)!)).toBe(hex(frame));
        },
      ),
    );
  });

  it("drops a frame with a bad escape or over maxFrame, counts it, never emits part of it", () => {
    const d = new SlipDecoder({ maxFrame: 8 });
    const out = d.push(
      Uint8Array.from([
        0xc0,
        1,
        2,
        0xdb,
        0x99,
        3,
        0xc0,
        0xc0,
        ...new Array(20).fill(7),
        0xc0,
        0xc0,
        9,
        0xc0,
      ]),
    );
    expect(out.map(hex)).toEqual(["09"]);
    expect(d.stats).toMatchObject({ badEscapes: 1, oversized: 1, frames: 1 });
  });

  it("keeps bytes outside frames as noise (a boot log), bounded", () => {
    const d = new SlipDecoder({ maxNoise: 4 });
    d.push(new TextEncoder().encode("rst:0x1"));
    expect(new TextDecoder().decode(d.takeNoise())).toBe(":0x1");
    expect(d.stats.noiseBytes).toBe(7);
  });
});

describe("packets", () => {
  it("request and response round-trip; malformed frames are values, not throws", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }),
        fc.uint8Array({ maxLength: 64 }),
        fc.nat(),
        (op, data, chk) => {
          const r = decodeRequest(encodeRequest(op, data, chk >>> 0));
          expect(r.ok && [r.value.op, hex(r.value.data), r.value.checksum]).toEqual([
            op,
            hex(data),
            chk >>> 0,
          ]);
          const s = decodeResponse(encodeResponse(op, chk >>> 0, data));
          expect(s.ok && [s.value.op, s.value.value]).toEqual([op, chk >>> 0]);
        },
      ),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (junk) => {
        const a = decodeRequest(junk);
        const b = decodeResponse(junk);
        expect(typeof a.ok).toBe("boolean");
        expect(typeof b.ok).toBe("boolean");
      }),
    );
  });

  it("checksum is 0xEF xor the data; status reads the ROM's 4 status bytes", () => {
    expect(checksum(Uint8Array.of())).toBe(0xef);
    expect(checksum(Uint8Array.of(0xef, 1))).toBe(1);
    const fail = decodeResponse(encodeResponse(0x14, 0, Uint8Array.of(1, 5, 0, 0)));
    expect(fail.ok && responseStatus(fail.value)).toEqual({ ok: false, error: 5 });
  });
});
