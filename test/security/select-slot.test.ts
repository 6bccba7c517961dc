/**
 * The gateway's selectSlot step against the INFO a real (simulated) device sends over the UART:
 * rollback (downgrades, secure_version) and wrong-slot software are refused before a byte is
 * sent (docs/security.md). The device's own anti-rollback is tested in test/sim/device.test.ts;
 * this is the gateway's check, which also holds for apps the eFuse would still accept.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { PARTITION_TABLE_MAX_LEN } from "../../src/esp/partition-table.js";
import { selectVariant } from "../../src/gateway/select.js";
import type { ManifestVariant, ReleaseManifest } from "../../src/release/manifest.js";
import type { SimDevice } from "../../src/sim/device.js";
import type { Info } from "../../src/uart/messages.js";
import { app, makeDevice, security } from "../helpers/sim.js";
import { rig, runFlash } from "../uart/harness.js";

const OTA0 = 0x10000;
const OTA1 = 0x160000;
const SLOT_SIZE = 0x150000;

/** The device's INFO, read over the simulated UART exactly as the agent's readDevice step does. */
async function infoOf(dev: SimDevice): Promise<Info> {
  const r = await runFlash(rig({ dev }), new Uint8Array(16), { mode: "info" });
  if (r.outcome?.kind !== "info") throw new Error(`no INFO: ${r.error?.code}`);
  return r.outcome.info;
}

/** ESP32, secure boot V1 + flash encryption, running sim-test 1.4.0 (secure_version 2) from ota_0. */
function device(antiRollback: boolean): SimDevice {
  const d = makeDevice("esp32", security("esp32"), {
    app: app("esp32", "1.4.0", 0x4000, 2),
    bootloader: { rollback: true, antiRollback },
  });
  d.powerOn();
  return d;
}

const variant = (slot: string, offset: number, size = 0x4100): ManifestVariant => ({
  slot,
  offset,
  size,
  sha256: "ab".repeat(32),
  urls: [`http://127.0.0.1:1/${slot}.bin`],
});

function manifest(
  version: string,
  secureVersion: number,
  variants?: ManifestVariant[],
): ReleaseManifest {
  return {
    format: 1,
    releaseId: `sim-test-${version}`,
    deviceId: "240ac4000001",
    chip: "esp32",
    partitionTableSha256: TABLE_SHA256,
    project: "sim-test",
    version,
    secureVersion,
    counter: 9,
    issuedAt: "2026-01-01T00:00:00Z",
    expiresAt: "2026-02-01T00:00:00Z",
    variants: variants ?? [variant("ota_0", OTA0), variant("ota_1", OTA1)],
  };
}

/** SHA-256 of the simulated devices' partition table, as their INFO reports it. */
const TABLE_SHA256 = (() => {
  const d = device(false);
  return toHex(sha256(d.spi.read(0x8000, PARTITION_TABLE_MAX_LEN, d.spi.encryptionEnabled)));
})();

const strict = { allowDowngrade: false };
const lax = { allowDowngrade: true };

describe("selectSlot on a device running 1.4.0 (secure_version 2) from ota_0", () => {
  it("the device reports what the policy needs: running version, secure_version, eFuse, next slot", async () => {
    const info = await infoOf(device(true));
    expect(info.runningOffset).toBe(OTA0);
    expect(info.efuseSecureVersion).toBe(2);
    expect(info.slots.map((s) => [s.label, s.offset, s.size])).toEqual([
      ["ota_0", OTA0, SLOT_SIZE],
      ["ota_1", OTA1, SLOT_SIZE],
    ]);
  });

  it("a newer release: the variant encrypted for the next slot (ota_1), never the running one", async () => {
    const sel = selectVariant(manifest("1.5.0", 2), await infoOf(device(true)), strict);
    expect(sel).toMatchObject({
      ok: true,
      alreadyRunning: false,
      variant: { slot: "ota_1", offset: OTA1 },
    });
  });

  it("rollback: an older version is refused (E_AGENT_DOWNGRADE), though validly signed and above the eFuse", async () => {
    const sel = selectVariant(manifest("1.3.9", 2), await infoOf(device(true)), strict);
    expect(sel).toMatchObject({ ok: false, code: "E_AGENT_DOWNGRADE" });
  });

  it("rollback: a lower secure_version than the running app's is refused even when the eFuse would take it", async () => {
    const info = await infoOf(device(false));
    expect(info.efuseSecureVersion).toBe(0); // anti-rollback off: the device alone would boot it
    const sel = selectVariant(manifest("1.5.0", 1), info, strict);
    expect(sel).toMatchObject({ ok: false, code: "E_AGENT_DOWNGRADE" });
  });

  it("rollback below the eFuse secure_version is refused even with policy.allowDowngrade (E_AGENT_SECURE_VERSION)", async () => {
    const info = await infoOf(device(true));
    expect(selectVariant(manifest("1.5.0", 1), info, lax)).toMatchObject({
      ok: false,
      code: "E_AGENT_SECURE_VERSION",
    });
    // allowDowngrade only opens what the eFuse still allows.
    expect(selectVariant(manifest("1.3.9", 2), info, lax)).toMatchObject({ ok: true });
  });

  it("the release already running is reported as done, nothing to send", async () => {
    const sel = selectVariant(manifest("1.4.0", 2), await infoOf(device(true)), strict);
    expect(sel).toMatchObject({ ok: true, alreadyRunning: true, variant: { slot: "ota_0" } });
  });

  it("wrong slot: a manifest with a ciphertext for the running slot only is refused (E_AGENT_NO_VARIANT)", async () => {
    const sel = selectVariant(
      manifest("1.5.0", 2, [variant("ota_0", OTA0)]),
      await infoOf(device(true)),
      strict,
    );
    expect(sel).toMatchObject({ ok: false, code: "E_AGENT_NO_VARIANT" });
  });

  it("wrong layout: a release built for another partition table is refused (E_AGENT_PARTITION_TABLE); a device that does not report its table is checked by slot alone", async () => {
    const info = await infoOf(device(true));
    expect(info.partitionTableSha256 && toHex(info.partitionTableSha256)).toBe(TABLE_SHA256);
    const other = { ...manifest("1.5.0", 2), partitionTableSha256: "11".repeat(32) };
    expect(selectVariant(other, info, strict)).toMatchObject({
      ok: false,
      code: "E_AGENT_PARTITION_TABLE",
    });
    const { partitionTableSha256: _, ...older } = info;
    expect(selectVariant(other, older, strict)).toMatchObject({ ok: true });
  });

  it("wrong slot: a variant at the next slot's offset but for another label or larger than the slot is refused (E_AGENT_SLOT_MISMATCH)", async () => {
    const info = await infoOf(device(true));
    for (const v of [variant("ota_3", OTA1), variant("ota_1", OTA1, SLOT_SIZE + 16)])
      expect(
        selectVariant(manifest("1.5.0", 2, [variant("ota_0", OTA0), v]), info, strict),
      ).toMatchObject({
        ok: false,
        code: "E_AGENT_SLOT_MISMATCH",
      });
  });
});
