import type { ErrorCodeTable } from "./types.js";

/**
 * otadata (data/ota partition) and the OTA boot-selection state machine: src/esp/otadata.ts and
 * `esp-ota otadata`. The ESP-IDF error each one mirrors is named in its meaning.
 */
export const otadataCodes = {
  E_OTADATA_SIZE: {
    meaning:
      "An otadata image is not 0x2000 bytes. The data/ota partition is exactly two 4 KB sectors, each starting with one 32-byte `esp_ota_select_entry_t` (gen_esp32part.py requires 0x2000; the bootloader refuses a smaller one).",
    action:
      "Read the whole otadata partition, e.g. `esptool read-flash 0xd000 0x2000 otadata.bin` with the offset from your partition table, and pass that file.",
  },
  E_OTADATA_ENTRY_SIZE: {
    meaning: "An otadata entry (`esp_ota_select_entry_t`) is not 32 bytes.",
    action: "Pass exactly the 32 bytes at offset 0x0 or 0x1000 of the otadata partition.",
  },
  E_OTADATA_NO_ACTIVE_ENTRY: {
    meaning:
      'Neither otadata copy is valid (or the table has no OTA app slots), so the running app counts as the factory app and there is no entry to mark valid or invalid. ESP-IDF\'s `esp_ota_mark_app_valid_cancel_rollback` / `esp_ota_mark_app_invalid_rollback` return ESP_FAIL ("Running firmware is factory").',
    action:
      "Nothing to confirm: select an OTA slot with `esp_ota_set_boot_partition` first, or check that otadata is not blank, corrupt or still encrypted.",
  },
  E_OTA_ROLLBACK_FAILED: {
    meaning:
      "Marking the running app invalid was refused because no other app could boot: the other otadata copy is not valid or its image does not verify, and there is no verifiable factory app (ESP_ERR_OTA_ROLLBACK_FAILED, 0x1505). otadata is unchanged.",
    action:
      "Keep the running app (mark it valid, or fix it and update again); a rollback needs a previous app that still verifies.",
  },
  E_OTADATA_SEQ_EXHAUSTED: {
    meaning:
      "No ota_seq fits below 2^32 for the requested slot: the current ota_seq is so close to 0xFFFFFFFF that otatool.py would fail to pack it and ESP-IDF's `compute_ota_seq_for_target_slot` would loop forever.",
    action:
      "Erase otadata (`esp_ota_set_boot_partition` on the factory app, or erase the partition) and select the slot again; this happens only with hand-made or corrupt sequence numbers.",
  },
  E_OTADATA_LAYOUT: {
    meaning:
      "The partition table's OTA app slots cannot be modelled: they must be ota_0..ota_{N-1} without gaps (ESP-IDF's app side counts slots from ota_0 up to the first missing one, the bootloader counts all of them, so with a gap the two disagree).",
    action: "Renumber the app partitions ota_0, ota_1, ... without gaps, or pass --ota-slots N.",
  },
} as const satisfies ErrorCodeTable;
