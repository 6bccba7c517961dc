import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { VirtualClock } from "../../src/sim/clock.js";
import { NorFlash, PAGE_SIZE, SECTOR_SIZE } from "../../src/sim/flash.js";
import { codeOf } from "../helpers/cli.js";

const MB4 = 4 << 20;

describe("NorFlash", () => {
  it("starts erased and costs nothing until written", () => {
    const f = new NorFlash({ size: MB4 });
    expect(f.read(0x3ff000, 16)).toEqual(new Uint8Array(16).fill(0xff));
    expect(f.usedSectors).toBe(0);
  });

  it("programming only clears bits (AND), erase sets 0xFF", () => {
    const f = new NorFlash({ size: MB4 });
    f.program(0x1000, new Uint8Array([0xf0, 0x0f, 0xaa]));
    f.program(0x1000, new Uint8Array([0x3c, 0xff, 0x55]));
    expect([...f.read(0x1000, 3)]).toEqual([0x30, 0x0f, 0x00]);
    f.eraseSector(0x1000);
    expect([...f.read(0x1000, 3)]).toEqual([0xff, 0xff, 0xff]);
    expect(f.usedSectors).toBe(0);
  });

  it("numbers every erase and page program, and charges datasheet time", () => {
    const clock = new VirtualClock();
    const f = new NorFlash({ size: MB4, clock });
    f.eraseRange(0x10000, 0x11000); // one 64 KB block + one sector
    f.program(0x10080, new Uint8Array(0x200)); // spans 3 pages
    expect(f.operationCount).toBe(2 + 3);
    expect(clock.now()).toBeCloseTo(150 + 45 + 3 * 0.7, 6);
  });

  it("refuses misaligned erases and out-of-range access with codes", () => {
    const f = new NorFlash({ size: MB4 });
    expect(codeOf(() => f.eraseSector(0x1001))).toBe("E_SIM_FLASH_ALIGN");
    expect(codeOf(() => f.eraseRange(0, 0x800))).toBe("E_SIM_FLASH_ALIGN");
    expect(codeOf(() => f.read(MB4 - 4, 8))).toBe("E_SIM_FLASH_RANGE");
    expect(codeOf(() => f.program(-1, new Uint8Array(1)))).toBe("E_SIM_FLASH_RANGE");
  });

  it("a power cut leaves a page half programmed and the chip off", () => {
    const f = new NorFlash({ size: MB4 });
    f.schedulePowerCut(1, 0.5);
    expect(codeOf(() => f.program(0, new Uint8Array(PAGE_SIZE)))).toBe("E_SIM_POWER_CUT");
    const data = f.read(0, PAGE_SIZE);
    expect(data.subarray(0, 128).every((b) => b === 0)).toBe(true);
    expect(data.subarray(128).every((b) => b === 0xff)).toBe(true);
    expect(f.isPowered).toBe(false);
    expect(codeOf(() => f.eraseSector(0))).toBe("E_SIM_POWERED_OFF");
    f.powerOn();
    f.eraseSector(0);
    expect(f.read(0, 4)).toEqual(new Uint8Array(4).fill(0xff));
  });

  it("a power cut leaves a sector half erased: neither old nor new", () => {
    const f = new NorFlash({ size: MB4 });
    f.program(0x2000, new Uint8Array(SECTOR_SIZE));
    f.schedulePowerCut(f.operationCount + 1, 0.25);
    expect(codeOf(() => f.eraseSector(0x2000))).toBe("E_SIM_POWER_CUT");
    const s = f.read(0x2000, SECTOR_SIZE);
    expect(s.subarray(0, 1024).every((b) => b === 0xff)).toBe(true);
    expect(s.subarray(1024).every((b) => b === 0)).toBe(true);
  });

  it("rejects a cut scheduled in the past", () => {
    const f = new NorFlash({ size: MB4 });
    f.eraseSector(0);
    expect(() => f.schedulePowerCut(1)).toThrow(RangeError);
  });

  it("serialize/deserialize and snapshot are exact and independent", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            addr: fc.integer({ min: 0, max: MB4 - 300 }),
            data: fc.uint8Array({ minLength: 1, maxLength: 300 }),
          }),
          { maxLength: 20 },
        ),
        (writes) => {
          const f = new NorFlash({ size: MB4 });
          for (const w of writes) f.program(w.addr, w.data);
          const g = NorFlash.deserialize(f.serialize());
          const s = f.snapshot();
          for (const w of writes) {
            expect(g.read(w.addr, w.data.length)).toEqual(f.read(w.addr, w.data.length));
            expect(s.read(w.addr, w.data.length)).toEqual(f.read(w.addr, w.data.length));
          }
          const before = f.serialize();
          s.eraseRange(0, MB4);
          expect(s.usedSectors).toBe(0);
          expect(f.serialize()).toEqual(before);
        },
      ),
      { numRuns: 50 },
    );
  });

  it("garbage state files give a coded error", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        expect(codeOf(() => NorFlash.deserialize(bytes))).toBe("E_SIM_STATE_FILE");
      }),
    );
    const good = new NorFlash({ size: MB4 });
    good.program(0, new Uint8Array([1]));
    const bytes = good.serialize();
    expect(codeOf(() => NorFlash.deserialize(bytes.subarray(0, bytes.length - 1)))).toBe(
      "E_SIM_STATE_FILE",
    );
  });
});
