/**
 * The ESP-IDF OTA API as a running app sees it (components/app_update/esp_ota_ops.c and
 * components/esp_partition), with the real semantics and esp_err_t results, so the UART OTA
 * device side is written against it the way firmware is written against ESP-IDF.
 *
 * There is no esp_ota_* call for writing ciphertext (esp32-facts §4.3): a device that receives
 * an image pre-encrypted for its slot erases with esp_partition_erase_range, writes with
 * esp_partition_write_raw, and activates with esp_ota_set_boot_partition, which verifies the
 * image through the decrypting cache — a wrong key or a wrong slot address fails there cleanly.
 */
import {
  checkRollbackIsPossible,
  invalidateInactiveCopy,
  markAppInvalid,
  markAppValid,
  nextUpdateSlot,
  OTADATA_SECTOR,
  OTADATA_SIZE,
  type OtadataWrite,
  runningState,
  setBootPartition,
} from "../esp/otadata.js";
import {
  APP_SUBTYPE,
  DATA_SUBTYPE,
  findPartition,
  isEncryptedPartition,
  otaAppPartitions,
  PART_TYPE,
  type Partition,
} from "../esp/partition-table.js";
import { type AppCheck, appVerifyContext, verifyAppInFlash } from "./app-verify.js";
import { bootConfig, indexToPartition, writeOtadata } from "./bootloader.js";
import type { SimDevice } from "./device.js";
import { ESP_ERR } from "./esp-err.js";
import { SECTOR_SIZE } from "./flash.js";

const { ESP_OK, ESP_FAIL } = ESP_ERR;

export class EspOtaApi {
  constructor(
    private readonly dev: SimDevice,
    private readonly running: Partition,
  ) {}

  /** The last image verification on this device (for logs and the UART protocol's error text). */
  get lastCheck(): AppCheck | undefined {
    return this.dev.lastImageCheck;
  }

  esp_ota_get_running_partition(): Partition {
    return this.running;
  }

  getPartitions(): Partition[] {
    return this.dev.partitions;
  }

  /** esp_ota_get_next_update_partition(NULL): the slot after the running one (ignores otadata). */
  esp_ota_get_next_update_partition(): Partition | undefined {
    const slots = otaAppPartitions(this.dev.partitions);
    if (slots.length === 0) return undefined;
    const runningIdx = slots.findIndex((p) => p.offset === this.running.offset);
    return slots[nextUpdateSlot(runningIdx, slots.length)];
  }

  esp_partition_erase_range(part: Partition, offset: number, size: number): number {
    if (offset % SECTOR_SIZE !== 0 || size % SECTOR_SIZE !== 0) return ESP_ERR.ESP_ERR_INVALID_ARG;
    if (offset + size > part.size) return ESP_ERR.ESP_ERR_INVALID_SIZE;
    if (part.readonly) return ESP_ERR.ESP_ERR_NOT_ALLOWED;
    this.dev.spi.erase(part.offset + offset, size);
    return ESP_OK;
  }

  /** Never encrypts: for data that is already ciphertext for this address. */
  esp_partition_write_raw(part: Partition, offset: number, data: Uint8Array): number {
    if (offset + data.length > part.size) return ESP_ERR.ESP_ERR_INVALID_SIZE;
    if (part.readonly) return ESP_ERR.ESP_ERR_NOT_ALLOWED;
    this.dev.spi.writeRaw(part.offset + offset, data);
    return ESP_OK;
  }

  /** Encrypts iff the partition is encrypted and flash encryption is on (16-byte aligned then). */
  esp_partition_write(part: Partition, offset: number, data: Uint8Array): number {
    if (offset + data.length > part.size) return ESP_ERR.ESP_ERR_INVALID_SIZE;
    const enc = this.encrypted(part);
    if (enc && (offset % 16 !== 0 || data.length % 16 !== 0)) return ESP_ERR.ESP_ERR_INVALID_SIZE;
    this.dev.spi.write(part.offset + offset, data, enc);
    return ESP_OK;
  }

  esp_partition_read(part: Partition, offset: number, length: number): Uint8Array {
    return this.dev.spi.read(part.offset + offset, length, this.encrypted(part));
  }

  esp_partition_read_raw(part: Partition, offset: number, length: number): Uint8Array {
    return this.dev.spi.readRaw(part.offset + offset, length);
  }

  /** esp_image_verify of a slot through the cache, with the signature when secure boot is on. */
  verifyImage(part: Partition): AppCheck {
    const check = verifyAppInFlash(
      appVerifyContext(this.dev.spi, this.dev.efuses, this.dev.spec.bootloader.sbv1PublicKey),
      part,
    );
    this.dev.lastImageCheck = check;
    return check;
  }

  /**
   * esp_ota_set_boot_partition: verify the image, apply anti-rollback (erasing a slot whose
   * secure_version is below the eFuse, ESP_ERR_OTA_SMALL_SEC_VER), then write the other otadata
   * copy with the next seq for that slot and state NEW (rollback on) or UNDEFINED.
   */
  esp_ota_set_boot_partition(part: Partition): number {
    if (part.type !== PART_TYPE.app) return ESP_ERR.ESP_ERR_INVALID_ARG;
    const check = this.verifyImage(part);
    if (!check.ok) return ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED;
    const otadataPart = this.otadataPartition();
    if (part.subtype === APP_SUBTYPE.factory) {
      if (!otadataPart) return ESP_ERR.ESP_ERR_NOT_FOUND;
      // esp_ota_set_boot_partition(factory) erases the whole otadata partition.
      this.dev.spi.erase(otadataPart.offset, OTADATA_SIZE);
      return ESP_OK;
    }
    const slots = otaAppPartitions(this.dev.partitions);
    const slot = slots.findIndex((p) => p.offset === part.offset);
    if (slot < 0 || !otadataPart) return ESP_ERR.ESP_ERR_NOT_FOUND;
    const cfg = this.dev.spec.bootloader;
    if (cfg.antiRollback && (check.appDesc?.secureVersion ?? 0) < this.dev.efuses.secureVersion) {
      this.dev.spi.erase(part.offset, part.size);
      return ESP_ERR.ESP_ERR_OTA_SMALL_SEC_VER;
    }
    const r = setBootPartition(this.readOtadata(otadataPart), slot, slots.length, {
      rollback: cfg.rollback,
    });
    this.writeOtadata(otadataPart, [r.write]);
    return ESP_OK;
  }

  /** esp_ota_get_state_partition. */
  esp_ota_get_state_partition(part: Partition): { err: number; state?: number } {
    const otadataPart = this.otadataPartition();
    const slots = otaAppPartitions(this.dev.partitions);
    const slot = slots.findIndex((p) => p.offset === part.offset);
    if (!otadataPart || slot < 0) return { err: ESP_ERR.ESP_ERR_NOT_SUPPORTED };
    const state = runningState(this.readOtadata(otadataPart), slot, slots.length);
    return state === undefined ? { err: ESP_ERR.ESP_ERR_NOT_FOUND } : { err: ESP_OK, state };
  }

  esp_ota_mark_app_valid_cancel_rollback(): number {
    return this.markAppValidCancelRollback();
  }

  markAppValidCancelRollback(): number {
    const otadataPart = this.otadataPartition();
    if (!otadataPart || this.running.subtype === APP_SUBTYPE.factory) return ESP_FAIL;
    const cfg = this.dev.spec.bootloader;
    const efuses = this.dev.efuses;
    const r = markAppValid(this.readOtadata(otadataPart), {
      otaSlotCount: otaAppPartitions(this.dev.partitions).length,
      ...(cfg.antiRollback
        ? {
            antiRollback: {
              efuseSecureVersion: efuses.secureVersion,
              // The bootloader verified the running app when it booted it; its descriptor is
              // already known, so there is no need to decrypt and hash the slot again.
              runningSecureVersion: this.runningApp()?.secureVersion,
              secureVersionBits: efuses.maxSecureVersion,
            },
          }
        : {}),
    });
    if (!r.ok) return ESP_FAIL;
    if (r.write) this.writeOtadata(otadataPart, [r.write]);
    if (r.burnSecureVersion !== undefined) efuses.burnSecureVersion(r.burnSecureVersion);
    return ESP_OK;
  }

  /** esp_ota_check_rollback_is_possible: the other copy's app verifies, or a factory app does. */
  esp_ota_check_rollback_is_possible(): boolean {
    const otadataPart = this.otadataPartition();
    if (!otadataPart) return false;
    const parts = this.dev.partitions;
    const partOf = indexToPartition(parts);
    const cfg = bootConfig(
      { config: this.dev.spec.bootloader, efuses: this.dev.efuses, spi: this.dev.spi },
      partOf,
    );
    return checkRollbackIsPossible(
      this.readOtadata(otadataPart),
      {
        otaSlotCount: otaAppPartitions(parts).length,
        hasFactory: !!findPartition(parts, PART_TYPE.app, APP_SUBTYPE.factory),
      },
      (index) => {
        const p = partOf(index);
        return p !== undefined && this.verifyImage(p).ok;
      },
      cfg.antiRollback,
    );
  }

  /** esp_ota_mark_app_invalid_rollback_and_reboot: on success the caller must reset the chip. */
  markAppInvalidRollbackAndReboot(): number {
    const otadataPart = this.otadataPartition();
    if (!otadataPart) return ESP_FAIL;
    const r = markAppInvalid(
      this.readOtadata(otadataPart),
      this.esp_ota_check_rollback_is_possible(),
      {
        otaSlotCount: otaAppPartitions(this.dev.partitions).length,
      },
    );
    if (!r.ok)
      return r.code === "E_OTA_ROLLBACK_FAILED" ? ESP_ERR.ESP_ERR_OTA_ROLLBACK_FAILED : ESP_FAIL;
    this.writeOtadata(otadataPart, [r.write]);
    return ESP_OK;
  }

  /** esp_ota_invalidate_inactive_ota_data_slot (ESP-IDF v5.5+, rollback on). */
  esp_ota_invalidate_inactive_ota_data_slot(): number {
    const otadataPart = this.otadataPartition();
    if (!otadataPart) return ESP_ERR.ESP_ERR_NOT_FOUND;
    const slots = otaAppPartitions(this.dev.partitions);
    const r = invalidateInactiveCopy(
      this.readOtadata(otadataPart),
      slots.length,
      slots.findIndex((p) => p.offset === this.running.offset),
    );
    if (r.erasedCopy !== undefined)
      this.dev.spi.erase(otadataPart.offset + r.erasedCopy * OTADATA_SECTOR, OTADATA_SECTOR);
    return ESP_OK;
  }

  private runningApp() {
    const s = this.dev.state;
    return s.kind === "running" ? s.app : undefined;
  }

  private encrypted(part: Partition): boolean {
    return this.dev.spi.encryptionEnabled && isEncryptedPartition(part);
  }

  private otadataPartition(): Partition | undefined {
    return findPartition(this.dev.partitions, PART_TYPE.data, DATA_SUBTYPE.ota);
  }

  private readOtadata(part: Partition): Uint8Array {
    return this.dev.spi.read(part.offset, OTADATA_SIZE, this.encrypted(part));
  }

  private writeOtadata(part: Partition, writes: OtadataWrite[]): void {
    writeOtadata(this.dev.spi, part, this.encrypted(part), writes);
  }
}
