import { describe, expect, it } from "vitest";
import { parsePartitionCsv } from "../../src/esp/partition-table.js";
import { Espefuse } from "../../src/provision/espefuse.js";
import { planProvisioning } from "../../src/provision/plan.js";
import { rehearse } from "../../src/provision/rehearse.js";
import { freshDevice, replayScript } from "../../src/provision/replay.js";
import { renderScript } from "../../src/provision/script.js";
import { buildFiles, CSV, fixtureKeyPem } from "./fixtures.js";

const FILES = {
  bootloader: "build/bootloader/bootloader.bin",
  partitionTable: "build/partition_table/partition-table.bin",
  app: "build/app.bin",
  otadata: "build/ota_data_initial.bin",
};

const cases = [
  { chip: "esp32", secureBoot: "v1" },
  { chip: "esp32", secureBoot: "v2" },
  { chip: "esp32s3", secureBoot: "v2" },
] as const;

describe("provision rehearse", () => {
  for (const c of cases) {
    it(`a generated ${c.chip} Secure Boot ${c.secureBoot} plan boots, every gate passing`, () => {
      const plan = planProvisioning({
        chip: c.chip,
        partitions: parsePartitionCsv(CSV),
        secureBoot: c.secureBoot,
        flashEncryption: "release",
      });
      const { report, gates } = rehearse(plan, {
        files: buildFiles(c.chip, FILES),
        signingKeyPem: fixtureKeyPem,
      });
      const bad = report.steps.filter((s) => s.result !== "ok");
      expect(bad).toEqual([]);
      // One gate before each irreversible step.
      expect(gates).toBe(plan.steps.filter((s) => s.irreversible).length);
      expect(report.diagnoses.filter((d) => d.severity !== "risk")).toEqual([]);
      expect(report.booted).toBe(true);
      const e = report.device.efuses;
      expect(e.flashEncryptionMode).toBe("release");
      expect(e.secureBootVersion).toBe(c.secureBoot === "v1" ? 1 : 2);
      expect(e.keyReadProtected).toBe(true);
      if (c.chip === "esp32s3") {
        expect(e.flashEncryptionKey?.length).toBe(64); // XTS-AES-256
        expect(e.sbv2Revoked).toEqual([false, true, true]);
        expect(e.secureDownloadMode).toBe(true);
      } else {
        expect(e.flashCryptConfig).toBe(0xf);
        expect(e.downloadModeDisabled).toBe(true);
      }
    });
  }

  for (const chip of ["esp32", "esp32s3"] as const)
    it(`a ${chip} development-mode plan boots, its final gate passing, download mode kept`, () => {
      const plan = planProvisioning({
        chip,
        partitions: parsePartitionCsv(CSV),
        secureBoot: "v2",
        flashEncryption: "development",
      });
      const { report } = rehearse(plan, {
        files: buildFiles(chip, FILES),
        signingKeyPem: fixtureKeyPem,
      });
      expect(report.steps.filter((s) => s.result !== "ok")).toEqual([]);
      expect(report.steps.some((s) => s.text.includes("--step final"))).toBe(true);
      expect(report.booted).toBe(true);
      expect(report.device.efuses.flashEncryptionMode).toBe("development");
      expect(report.device.efuses.flashCryptCnt).toBe(1);
      expect(
        report.device.efuses.downloadModeDisabled || report.device.efuses.secureDownloadMode,
      ).toBe(false);
    });

  it("a gate stops the script when the chip is not in the expected state", () => {
    const plan = planProvisioning({
      chip: "esp32",
      partitions: parsePartitionCsv(CSV),
      secureBoot: "v2",
      flashEncryption: "release",
    });
    const files = buildFiles("esp32", FILES);
    const { report } = rehearse(plan, { files, signingKeyPem: fixtureKeyPem });
    // Rehearse again on a chip someone already burned a key into: the first gate refuses.
    expect(report.booted).toBe(true);
    const dev = freshDevice("esp32", 4 << 20);
    new Espefuse(dev.efuses).burnKey([
      { block: "flash_encryption", key: new Uint8Array(32).fill(7) },
    ]);
    const again = replayScript(renderScript(plan), {
      device: dev,
      files,
      signingKeyPem: fixtureKeyPem,
    });
    const refused = again.steps.find((s) => s.result === "refused");
    expect(refused?.note).toMatch(/gate before-burn-fe-key failed: .*BLOCK1/);
    expect(again.steps.filter((s) => s.result === "skipped").length).toBeGreaterThan(5);
  });
});
