/**
 * esp32-facts §1 on a whole simulated device: every public otadata vector is written into a
 * device's otadata partition and the device is powered on. The slot it boots, and the otadata
 * the bootloader leaves behind, must be what ESP-IDF's own bootloader code chose for that vector
 * (test/fixtures/otadata/expected.json, computed by compiling bootloader_utility.c on the host).
 */
import { describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { installAppInSlot, provisionDevice } from "../../src/sim/provision.js";
import { fixture, fixtureJson } from "../helpers/fixtures.js";
import { app, oracleLayout } from "../helpers/sim.js";

interface Expected {
  boot: string;
  try_order_if_images_fail: string[];
  otadata_writes_during_selection: { offset_in_partition: number; entry_hex: string }[];
  otadata_writes_after_first_image_loads: { offset_in_partition: number; entry_hex: string }[];
}
const vectors = fixtureJson<{
  cases: { file: string; description: string; expected: Record<string, Expected> }[];
}>("otadata/expected.json");

const rows = vectors.cases.flatMap((c) =>
  Object.entries(c.expected).map(([config, expected]) => ({
    file: c.file,
    description: c.description,
    config,
    expected,
  })),
);

function device(config: string) {
  const [layout, rollback] = config.split("/") as [string, string];
  const m = /^(\d)ota_(factory|nofactory)$/.exec(layout)!;
  const slots = Number(m[1]);
  const factory = m[2] === "factory";
  const partitions = oracleLayout(slots, factory);
  const d = provisionDevice({
    chip: "esp32",
    flashSize: 8 << 20,
    partitions,
    app: app("esp32", factory ? "factory" : "ota_0", 0x2000),
    bootloader: { rollback: rollback === "rollback_enabled", antiRollback: false },
    // A hanging app never marks itself valid, so the otadata left is the bootloader's alone.
    defaultBehaviour: "hang",
  });
  for (const p of partitions.filter(
    (q) => q.type === 0 && q.label !== (factory ? "factory" : "ota_0"),
  )) {
    installAppInSlot(d, p, app("esp32", p.label, 0x2000), {});
  }
  return d;
}

function expectedOtadata(
  vector: Uint8Array,
  writes: Expected["otadata_writes_during_selection"],
): string {
  const out = vector.slice();
  for (const w of writes) {
    out.fill(0xff, w.offset_in_partition, w.offset_in_partition + 0x1000);
    out.set(Buffer.from(w.entry_hex, "hex"), w.offset_in_partition);
  }
  return toHex(out);
}

describe("boot selection on a simulated device matches ESP-IDF's bootloader for every otadata vector", () => {
  it.each(rows)("$file [$config]: boots $expected.boot", ({ file, config, expected }) => {
    const d = device(config);
    const vector = fixture(`otadata/${file}`);
    d.flash.eraseRange(0xd000, 0x2000);
    d.flash.program(0xd000, vector);
    const s = d.powerOn();
    expect(s.kind).toBe("running");
    if (s.kind !== "running") return;
    expect(s.partition.label).toBe(expected.boot);
    const after = [
      ...expected.otadata_writes_during_selection,
      ...expected.otadata_writes_after_first_image_loads,
    ];
    expect(toHex(d.flash.read(0xd000, 0x2000))).toBe(expectedOtadata(vector, after));
  });

  it.each(rows.filter((r) => r.expected.try_order_if_images_fail.length > 1))(
    "$file [$config]: with $expected.boot corrupt, falls back to the next in the bootloader's order",
    ({ file, config, expected }) => {
      const d = device(config);
      d.flash.eraseRange(0xd000, 0x2000);
      d.flash.program(0xd000, fixture(`otadata/${file}`));
      const target = oracleLayout(4, true).find((p) => p.label === expected.boot)!;
      d.flash.eraseSector(target.offset); // its header is gone: "invalid magic byte"
      const s = d.powerOn();
      expect(s.kind).toBe("running");
      if (s.kind !== "running") return;
      expect(s.partition.label).toBe(expected.try_order_if_images_fail[1]);
      expect(d.uart.sinceLastReset().join("\n")).toMatch(/invalid magic byte/);
    },
  );
});
