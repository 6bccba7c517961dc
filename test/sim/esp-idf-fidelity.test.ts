/**
 * Simulator fidelity the shipped device side depends on (issue 14), each row against the ESP-IDF
 * code it models (espressif/esp-idf v5.x):
 *  - components/spi_flash (esp_flash_read_encrypted) and components/esp_partition
 *    (esp_partition_read decrypts an encrypted partition): an erased sector read through
 *    decryption is the decryption of 0xFF.., not 0xFF, so "is it erased" must read raw;
 *  - components/app_update/esp_ota_ops.c esp_ota_set_boot_partition: image_validate first
 *    (ESP_ERR_OTA_VALIDATE_FAILED), then under CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
 *    esp_efuse_check_secure_version(desc.secure_version) false → esp_partition_erase_range of
 *    the whole partition and ESP_ERR_OTA_SMALL_SEC_VER; otadata untouched;
 *  - esp_ota_mark_app_valid_cancel_rollback → esp_ota_current_ota_is_workable(true): rewrite
 *    the active entry VALID, then esp_ota_set_anti_rollback → esp_efuse_update_secure_version
 *    (irreversible), only where anti-rollback is on;
 *  - power: a cut leaves the interrupted erase partly done and the chip off; nothing the
 *    firmware does (esp_restart, a watchdog) brings it back, only power.
 */
import { describe, expect, it } from "vitest";
import { isEspOtaError } from "../../src/errors.js";
import { OTA_STATE, OTADATA_SIZE } from "../../src/esp/otadata.js";
import type { Partition } from "../../src/esp/partition-table.js";
import type { SimDevice } from "../../src/sim/device.js";
import { ESP_ERR } from "../../src/sim/esp-err.js";
import { BLOCK_SIZE, SECTOR_SIZE } from "../../src/sim/flash.js";
import { applyPreEncryptedUpdate } from "../../src/sim/ota-update.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";

const OTA1 = 0x160000;
const OTADATA = 0xd000;

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isEspOtaError(e) ? e.code : `not coded: ${String(e)}`;
  }
  return undefined;
}

function slot1(d: SimDevice): Partition {
  const p = d.partitions.find((x) => x.offset === OTA1);
  if (!p) throw new Error("no ota_1");
  return p;
}

const allFF = (b: Uint8Array) => b.every((x) => x === 0xff);

describe.each(["esp32", "esp32s3"] as const)("erased flash under flash encryption (%s)", (chip) => {
  it("reads as 0xFF raw but as the decryption of 0xFF through esp_partition_read", () => {
    const d = makeDevice(chip, security(chip));
    d.powerOn();
    const ota = d.ota;
    const p = slot1(d);
    expect(ota.esp_partition_erase_range(p, 0, SECTOR_SIZE)).toBe(ESP_ERR.ESP_OK);
    expect(allFF(ota.esp_partition_read_raw(p, 0, SECTOR_SIZE))).toBe(true);
    const seen = ota.esp_partition_read(p, 0, SECTOR_SIZE);
    expect(allFF(seen)).toBe(false);
    // Every 16-byte block decrypts on its own (the tweak is the address): no block is 0xFF.
    for (let o = 0; o < SECTOR_SIZE; o += 16) expect(allFF(seen.subarray(o, o + 16))).toBe(false);
  });

  it("an otadata copy erased by esp_ota_invalidate_inactive_ota_data_slot decrypts to garbage that boots as invalid", () => {
    const sec = security(chip);
    const d = makeDevice(chip, sec);
    d.powerOn();
    // After one update ota_1 runs from copy 1; copy 0 (seq 1, ota_0) is the inactive one.
    expect(applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "2.0.0"), OTA1)).ok).toBe(true);
    expect(d.ota.esp_ota_invalidate_inactive_ota_data_slot()).toBe(ESP_ERR.ESP_OK);
    expect(allFF(d.spi.readRaw(OTADATA, 32))).toBe(true);
    // The bootloader reads otadata through the cache: the erased copy's ota_seq is not
    // 0xFFFFFFFF, only its CRC makes it invalid. The device still boots ota_1.
    expect(allFF(d.spi.read(OTADATA, 4, true))).toBe(false);
    const s = d.reset("SW_RESET");
    expect(s.kind === "running" && s.partition.offset).toBe(OTA1);
  });
});

describe("erased flash without flash encryption", () => {
  it("reads as 0xFF through esp_partition_read too (the contrast)", () => {
    const d = makeDevice("esp32", {});
    d.powerOn();
    const p = slot1(d);
    d.ota.esp_partition_erase_range(p, 0, SECTOR_SIZE);
    expect(allFF(d.ota.esp_partition_read(p, 0, SECTOR_SIZE))).toBe(true);
  });
});

describe("anti-rollback in esp_ota_set_boot_partition", () => {
  const ar = { bootloader: { rollback: true, antiRollback: true } };

  function atSecureVersion2(): SimDevice {
    const d = makeDevice("esp32", {}, { app: app("esp32", "1.0.0", 0x4000, 2), ...ar });
    d.powerOn();
    expect(d.efuses.secureVersion).toBe(2);
    return d;
  }

  function writeSlot(d: SimDevice, img: Uint8Array): Partition {
    const p = slot1(d);
    const ota = d.ota;
    expect(ota.esp_partition_erase_range(p, 0, BLOCK_SIZE)).toBe(ESP_ERR.ESP_OK);
    expect(ota.esp_partition_write_raw(p, 0, img)).toBe(ESP_ERR.ESP_OK);
    return p;
  }

  it("erases the whole slot of an image below the eFuse and leaves otadata alone", () => {
    const d = atSecureVersion2();
    const p = writeSlot(d, app("esp32", "0.9.0", 0x4000, 1));
    const otadataBefore = d.spi.readRaw(OTADATA, OTADATA_SIZE);
    expect(d.ota.esp_ota_set_boot_partition(p)).toBe(ESP_ERR.ESP_ERR_OTA_SMALL_SEC_VER);
    expect(allFF(d.spi.readRaw(p.offset, p.size))).toBe(true);
    expect(d.spi.readRaw(OTADATA, OTADATA_SIZE)).toEqual(otadataBefore);
  });

  it("verifies first: an image that fails verification is refused as VALIDATE_FAILED and not erased", () => {
    const d = atSecureVersion2();
    const img = app("esp32", "0.9.0", 0x4000, 1);
    img[0x3000] = img[0x3000]! ^ 0xff;
    const p = writeSlot(d, img);
    expect(d.ota.esp_ota_set_boot_partition(p)).toBe(ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED);
    expect(d.spi.readRaw(p.offset, 16)).toEqual(img.subarray(0, 16));
  });

  it("accepts an image at the eFuse's secure_version (esp_efuse_check_secure_version is >=)", () => {
    const d = atSecureVersion2();
    const p = writeSlot(d, app("esp32", "1.1.0", 0x4000, 2));
    expect(d.ota.esp_ota_set_boot_partition(p)).toBe(ESP_ERR.ESP_OK);
  });

  it("without anti-rollback a lower secure_version activates", () => {
    const d = makeDevice("esp32", {}, { app: app("esp32", "1.0.0", 0x4000, 2) });
    d.powerOn();
    expect(d.efuses.secureVersion).toBe(0);
    const p = writeSlot(d, app("esp32", "0.9.0", 0x4000, 1));
    expect(d.ota.esp_ota_set_boot_partition(p)).toBe(ESP_ERR.ESP_OK);
  });
});

describe("esp_ota_mark_app_valid_cancel_rollback burns secure_version", () => {
  function pendingV3(antiRollback: boolean): SimDevice {
    const d = makeDevice(
      "esp32",
      {},
      {
        app: app("esp32", "1.0.0", 0x4000, 2),
        bootloader: { rollback: true, antiRollback },
        // The new app never confirms by itself: the test calls the API as its self-test would.
        behaviours: { "3.0.0": "hang" },
      },
    );
    d.powerOn();
    const r = applyPreEncryptedUpdate(d, app("esp32", "3.0.0", 0x4000, 3));
    expect(r.ok).toBe(true);
    const s = d.state;
    expect(s.kind === "running" && s.app?.version).toBe("3.0.0");
    expect(s.kind === "running" && s.bootState).toBe(OTA_STATE.PENDING_VERIFY);
    return d;
  }

  it("not at boot: a PENDING_VERIFY app leaves the eFuse alone, and a reset rolls back", () => {
    const d = pendingV3(true);
    expect(d.efuses.secureVersion).toBe(2);
    const s = d.reset("SW_RESET");
    expect(s.kind === "running" && s.app?.version).toBe("1.0.0");
    expect(d.efuses.secureVersion).toBe(2);
  });

  it("at mark valid, irreversibly: the old app can no longer be activated", () => {
    const d = pendingV3(true);
    expect(d.ota.esp_ota_mark_app_valid_cancel_rollback()).toBe(ESP_ERR.ESP_OK);
    expect(d.efuses.secureVersion).toBe(3);
    // The eFuse is a thermometer: burning a lower value changes nothing.
    d.efuses.burnSecureVersion(1);
    expect(d.efuses.secureVersion).toBe(3);
    // A second call finds the entry VALID already: no write, no burn, ESP_OK.
    expect(d.ota.esp_ota_mark_app_valid_cancel_rollback()).toBe(ESP_ERR.ESP_OK);
    const back = applyPreEncryptedUpdate(d, app("esp32", "2.0.0", 0x4000, 2), {
      slot: d.partitions.find((p) => p.offset === 0x10000)!,
    });
    expect(back).toMatchObject({ ok: false, err: ESP_ERR.ESP_ERR_OTA_SMALL_SEC_VER });
  });

  it("only where anti-rollback is on", () => {
    const d = pendingV3(false);
    expect(d.ota.esp_ota_mark_app_valid_cancel_rollback()).toBe(ESP_ERR.ESP_OK);
    expect(d.efuses.secureVersion).toBe(0);
  });
});

describe.each(["esp32", "esp32s3"] as const)("a power cut (%s)", (chip) => {
  const sec = security(chip);

  it("tears a block erase: the first part erased, the rest still the old ciphertext", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const p = slot1(d);
    const img = otaImage(chip, sec, app(chip, "2.0.0", BLOCK_SIZE), OTA1);
    d.ota.esp_partition_erase_range(p, 0, BLOCK_SIZE);
    d.ota.esp_partition_write_raw(p, 0, img.subarray(0, BLOCK_SIZE));
    const ota = d.ota;
    d.flash.schedulePowerCut(d.flash.operationCount + 1, 0.25);
    expect(codeOf(() => ota.esp_partition_erase_range(p, 0, BLOCK_SIZE))).toBe("E_SIM_POWER_CUT");
    const cells = d.spi.readRaw(OTA1, BLOCK_SIZE);
    expect(allFF(cells.subarray(0, BLOCK_SIZE / 4))).toBe(true);
    expect(cells.subarray(BLOCK_SIZE / 4)).toEqual(img.subarray(BLOCK_SIZE / 4, BLOCK_SIZE));
  });

  it("latches: flash refuses work and esp_restart or a watchdog does not bring the chip back; power does", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const p = slot1(d);
    const ota = d.ota;
    d.flash.schedulePowerCut(d.flash.operationCount + 1, 0.5);
    expect(codeOf(() => ota.esp_partition_erase_range(p, 0, SECTOR_SIZE))).toBe("E_SIM_POWER_CUT");
    expect(d.state.kind).toBe("off");
    expect(codeOf(() => ota.esp_partition_write_raw(p, 0, new Uint8Array(16)))).toBe(
      "E_SIM_POWERED_OFF",
    );
    expect(codeOf(() => d.ota)).toBe("E_SIM_POWERED_OFF");
    for (const cause of [
      "SW_RESET",
      "SW_CPU_RESET",
      "TG1WDT_SYS_RESET",
      "RTCWDT_RTC_RESET",
    ] as const)
      expect(d.reset(cause).kind).toBe("off");
    expect(d.state.kind).toBe("off");
    const s = d.powerOn();
    expect(s.kind === "running" && s.app?.version).toBe("1.0.0");
  });
});
