/**
 * The device side of an update with an image pre-encrypted for the target slot, written the way
 * firmware is written against ESP-IDF (esp32-facts §4.3): refuse while the running app is still
 * PENDING_VERIFY, invalidate the inactive otadata copy (v5.5+) so it can't point at a
 * half-written slot, erase the slot, write the ciphertext raw in chunks, then
 * esp_ota_set_boot_partition (which verifies the decrypted image) and restart.
 *
 * The UART OTA device side drives the same calls one frame at a time; this all-at-once form is
 * what the power-cut harness and the simulator CLI use.
 */
import { OTA_STATE } from "../esp/otadata.js";
import type { Partition } from "../esp/partition-table.js";
import type { SimDevice } from "./device.js";
import { ESP_ERR, espErrToName } from "./esp-err.js";
import { SECTOR_SIZE } from "./flash.js";

export type UpdateStep =
  | "check-state"
  | "invalidate-otadata"
  | "erase"
  | "write"
  | "set-boot"
  | "restart";

export type UpdateResult =
  | { ok: true; slot: Partition }
  | { ok: false; step: UpdateStep; err: number; message: string };

export interface UpdateOptions {
  /** Target slot; default esp_ota_get_next_update_partition. */
  slot?: Partition;
  /** Bytes per esp_partition_write_raw call (a UART frame's payload). */
  chunkSize?: number;
  /** Restart after activation (default true). */
  restart?: boolean;
}

export function applyPreEncryptedUpdate(
  dev: SimDevice,
  ciphertext: Uint8Array,
  opts: UpdateOptions = {},
): UpdateResult {
  const ota = dev.ota;
  const fail = (step: UpdateStep, err: number, detail?: string): UpdateResult => ({
    ok: false,
    step,
    err,
    message: `${step}: ${espErrToName(err)}${detail ? ` (${detail})` : ""}`,
  });
  const running = ota.esp_ota_get_running_partition();
  const slot = opts.slot ?? ota.esp_ota_get_next_update_partition();
  if (!slot) return fail("check-state", ESP_ERR.ESP_ERR_NOT_FOUND, "no OTA slot");
  if (slot.offset === running.offset)
    return fail(
      "check-state",
      ESP_ERR.ESP_ERR_OTA_PARTITION_CONFLICT,
      "target is the running slot",
    );
  if (ciphertext.length > slot.size)
    return fail("check-state", ESP_ERR.ESP_ERR_INVALID_SIZE, `${ciphertext.length} > ${slot.size}`);
  if (dev.spec.bootloader.rollback) {
    const st = ota.esp_ota_get_state_partition(running);
    if (st.err === ESP_ERR.ESP_OK && st.state === OTA_STATE.PENDING_VERIFY) {
      return fail(
        "check-state",
        ESP_ERR.ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
        "running app not yet confirmed",
      );
    }
    const e = ota.esp_ota_invalidate_inactive_ota_data_slot();
    if (e !== ESP_ERR.ESP_OK && e !== ESP_ERR.ESP_ERR_NOT_FOUND)
      return fail("invalidate-otadata", e);
  }
  const eraseLen = Math.ceil(ciphertext.length / SECTOR_SIZE) * SECTOR_SIZE;
  let err = ota.esp_partition_erase_range(slot, 0, eraseLen);
  if (err !== ESP_ERR.ESP_OK) return fail("erase", err);
  const chunk = opts.chunkSize ?? 4096;
  for (let o = 0; o < ciphertext.length; o += chunk) {
    err = ota.esp_partition_write_raw(
      slot,
      o,
      ciphertext.subarray(o, Math.min(o + chunk, ciphertext.length)),
    );
    if (err !== ESP_ERR.ESP_OK) return fail("write", err, `offset ${o}`);
  }
  err = ota.esp_ota_set_boot_partition(slot);
  if (err !== ESP_ERR.ESP_OK) {
    const why = ota.lastCheck?.log.map((l) => l.message).join("; ");
    return fail("set-boot", err, why);
  }
  if (opts.restart ?? true) dev.reset("SW_RESET");
  return { ok: true, slot };
}
