/**
 * The power-cut harness, small: a 12 KB app so every cut point runs in seconds. The full 1.3 MB
 * sweep is `npm run sweep:power-cut` (figures in docs/simulator.md).
 */
import { describe, expect, it } from "vitest";
import { otaAppPartitions } from "../../src/esp/partition-table.js";
import { countUpdateOperations, runPowerCutSweep } from "../../src/sim/power-cut.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";

describe.each(["esp32", "esp32s3"] as const)("power cuts during an OTA on %s", (chip) => {
  const sec = security(chip);
  const base = makeDevice(chip, sec, { app: app(chip, "1.0.0", 0x3000) });
  base.powerOn();
  const slot = otaAppPartitions(base.partitions)[1]!;
  const opts = {
    base,
    ciphertext: otaImage(chip, sec, app(chip, "2.0.0", 0x3000), slot.offset),
    slot,
    oldVersion: "1.0.0",
    newVersion: "2.0.0",
  };

  it("a cut halfway through any operation leaves a bootable device that takes the retried update", () => {
    const report = runPowerCutSweep({ ...opts, doubleCutEvery: 7 });
    expect(report.failures).toEqual([]);
    expect(report.unbootable).toBe(0);
    expect(report.operations).toBe(countUpdateOperations(opts));
    expect(report.tried).toBe(report.operations + report.doubleCuts);
    expect(report.doubleCuts).toBeGreaterThan(0);
    // With rollback on, the new app only counts once it has confirmed itself: the last flash
    // operation of the update is that confirmation, so every half-done operation ends on the old app.
    expect(report.bootedOld).toBe(report.tried);
  });

  it("a cut just after any operation completes also leaves a bootable device", () => {
    const report = runPowerCutSweep({ ...opts, fraction: 1 });
    expect(report.failures).toEqual([]);
    // Cuts after the confirming write boot the new app; all earlier ones the old one.
    expect(report.bootedNew).toBeGreaterThan(0);
    expect(report.bootedOld).toBeGreaterThan(0);
    expect(report.bootedNew + report.bootedOld).toBe(report.tried);
  });

  it("refuses to sweep an update that fails even without a cut", () => {
    // Targeting the running slot is refused by the device; a sweep over it would prove nothing.
    const lone = makeDevice(chip, sec, { app: app(chip, "1.0.0", 0x3000) });
    lone.powerOn();
    const ota0 = otaAppPartitions(lone.partitions)[0]!;
    const wipe = {
      ...opts,
      base: lone,
      slot: ota0,
      ciphertext: otaImage(chip, sec, app(chip, "2.0.0", 0x3000), ota0.offset),
    };
    expect(() => runPowerCutSweep(wipe)).toThrow(/running slot|PARTITION_CONFLICT/);
  });
});
