import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeAck,
  decodeAnnounce,
  decodeBegin,
  decodeData,
  decodeInfo,
  decodeResult,
  encodeAck,
  encodeAnnounce,
  encodeBegin,
  encodeData,
  encodeInfo,
  encodeResult,
  msgName,
  statusName,
} from "../../src/uart/messages.js";

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const short = fc.stringMatching(/^[ -~]{0,40}$/);

describe("message codecs", () => {
  it("round trip", () => {
    fc.assert(
      fc.property(
        u32,
        u32,
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (offset, size, sha256) => {
          expect(decodeBegin(encodeBegin({ offset, size, sha256 }))).toEqual({
            offset,
            size,
            sha256,
          });
        },
      ),
    );
    fc.assert(
      fc.property(u32, fc.uint8Array({ maxLength: 4096 }), (offset, data) => {
        expect(decodeData(encodeData({ offset, data }))).toEqual({ offset, data });
      }),
    );
    fc.assert(
      fc.property(
        fc.record({
          request: fc.integer({ min: 0, max: 255 }),
          status: fc.integer({ min: 0, max: 255 }),
          espErr: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
          value: u32,
          detail: short,
        }),
        (r) => {
          expect(decodeResult(encodeResult(r))).toEqual(r);
        },
      ),
    );
    fc.assert(
      fc.property(
        fc.record({
          received: u32,
          credit: u32,
          written: u32,
          holdAt: u32,
          busyMs: u16,
          flags: fc.integer({ min: 0, max: 255 }),
        }),
        (a) => {
          expect(decodeAck(encodeAck(a))).toEqual(a);
        },
      ),
    );
    fc.assert(
      fc.property(
        fc.record({
          phase: fc.integer({ min: 0, max: 1 }),
          runningOffset: u32,
          runningState: u32,
          version: short,
        }),
        (a) => {
          expect(decodeAnnounce(encodeAnnounce(a))).toEqual(a);
        },
      ),
    );
  });

  it("INFO round trips, with and without a resume record", () => {
    const base = {
      protocol: 1,
      chip: "esp32s3",
      revision: 0,
      mac: Uint8Array.of(1, 2, 3, 4, 5, 6),
      flashSize: 8 << 20,
      flashEncryption: 2,
      secureBootVersion: 2,
      efuseSecureVersion: 3,
      runningOffset: 0x10000,
      runningState: 2,
      maxPayload: 4100,
      rxBuffer: 49280,
      isrInIram: 1,
      slots: [{ label: "ota_0", subtype: 0x10, offset: 0x10000, size: 0x150000 }],
      otadata: new Uint8Array(64).fill(0xff),
      appDesc: new Uint8Array(256),
    };
    expect(decodeInfo(encodeInfo({ ...base, resume: undefined }))).toEqual({
      ...base,
      resume: undefined,
    });
    const resume = {
      offset: 0x160000,
      size: 1000,
      sha256: new Uint8Array(32).fill(7),
      written: 4096,
    };
    expect(decodeInfo(encodeInfo({ ...base, resume }))).toEqual({ ...base, resume });
    // The partition table's SHA-256: optional and last, so INFO without it still decodes.
    const partitionTableSha256 = new Uint8Array(32).fill(9);
    const withTable = { ...base, resume, partitionTableSha256 };
    const bytes = encodeInfo(withTable);
    expect(decodeInfo(bytes)).toEqual(withTable);
    expect(decodeInfo(bytes.subarray(0, bytes.length - 1))).toBeUndefined();
  });

  it("random payloads decode to undefined or a value, never throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (b) => {
        for (const dec of [
          decodeBegin,
          decodeData,
          decodeResult,
          decodeAck,
          decodeAnnounce,
          decodeInfo,
        ])
          expect(() => dec(b)).not.toThrow();
        expect(decodeBegin(b.subarray(0, Math.min(b.length, 39)))).toBeUndefined();
      }),
    );
  });

  it("names", () => {
    expect(msgName(0x03)).toBe("DATA");
    expect(msgName(0x7e)).toBe("0x7e");
    expect(statusName(6)).toBe("HASH_MISMATCH");
  });
});
