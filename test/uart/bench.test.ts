/** The bench's hardest corner as a test: 2 Mbaud with 16 ms turnaround, both receive paths. */
import { describe, expect, it } from "vitest";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { app, otaImage, security } from "../helpers/sim.js";
import { benchPoint, flashBusyMs, limitMs, stopAndWaitMs } from "./bench-core.js";

const image = otaImage("esp32", security("esp32"), app("esp32", "2.0.0", 0x13f000), 0x160000);

describe("bench:uart model", () => {
  it("stop-and-wait reproduces esptool's measured ROM rates within 10 %", () => {
    const flash = flashBusyMs(0x160000, 1 << 20);
    const kbit = (baud: number) => ((1 << 20) * 8) / stopAndWaitMs(baud, 1, 1 << 20, flash);
    expect(kbit(115200) / 84).toBeGreaterThan(0.9);
    expect(kbit(115200) / 84).toBeLessThan(1.1);
    expect(kbit(921600) / 451).toBeGreaterThan(0.9);
    expect(kbit(921600) / 451).toBeLessThan(1.1);
  });

  it("limit: max of wire and flash when reception overlaps, their sum when not", () => {
    expect(limitMs(115200, 11520, 100, true)).toBe(1000);
    expect(limitMs(115200, 11520, 100, false)).toBe(1100);
  });

  for (const [name, rx] of [
    ["iram", RX_CONFIGS.iram],
    ["no-iram", RX_CONFIGS.noIram],
  ] as const)
    it(`1.3 MB at 2 Mbaud, 16 ms latency, ${name}: ≥ 0.95 of the limit, nothing lost`, async () => {
      const p = await benchPoint(2000000, 16, name, rx, image);
      expect(p.ratio).toBeGreaterThanOrEqual(0.95);
      expect(p.lost).toBe(0);
      expect(p.stopAndWaitRatio).toBeLessThan(p.ratio);
    });
});
