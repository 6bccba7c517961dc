import type { ErrorCodeTable } from "./types.js";

/**
 * The operator's side of a release (docs/release.md): the device registry, `esp-ota release
 * build` (one code per check of the app against the devices, so a script can tell them apart)
 * and `esp-ota serve`.
 */
export const releaseBuildCodes = {
  E_DEVICE_MAC: {
    meaning: "The MAC address given for a device is not six hex bytes.",
    action:
      "Give the factory MAC as `esptool read-mac` prints it (e.g. 24:0a:c4:12:34:56); the device id is derived from it.",
  },
  E_DEVICE_NO_OTA_SLOT: {
    meaning: "The device's partition table has no OTA app partition (ota_0, ota_1, ...).",
    action:
      "Releases only go to OTA slots; give the partition table the device was flashed with (CSV or binary), with at least ota_0 and ota_1.",
  },
  E_DEVICE_FLASH_KEY: {
    meaning: "The flash-encryption key file has the wrong length for the device's chip.",
    action:
      "ESP32 takes 32 bytes (24 with the 3/4 coding scheme); S2, S3, C5 and P4 64 (XTS-AES-256) or 32; other chips 32. Import the key file that was burnt into this device.",
  },
  E_DEVICE_FLASH_CRYPT_CONF: {
    meaning: "FLASH_CRYPT_CONFIG was given for a chip without it, or is outside 0..15.",
    action:
      "Only ESP32 (classic) has the FLASH_CRYPT_CONFIG eFuse; read it with `espefuse summary` (the ESP-IDF bootloader burns 0xF) or leave the option out.",
  },
  E_DEVICE_EXISTS: {
    meaning: "A device with this id is already in the registry.",
    action:
      "Its flash-encryption key would be lost if it were replaced. Remove it first (`esp-ota devices remove`) if you really mean to re-register it.",
  },
  E_DEVICE_UNKNOWN: {
    meaning: "No device with this id is in the registry (or the id is not 12 hex digits).",
    action: "List the registered devices with `esp-ota devices list --registry DIR`.",
  },
  E_REGISTRY_MISSING: {
    meaning: "The registry directory does not exist or holds no devices/ directory.",
    action: "Check --registry, or register a device with `esp-ota devices add` to create it.",
  },
  E_REGISTRY_CORRUPT: {
    meaning: "A device record in the registry is not valid JSON or lacks a field.",
    action:
      "The message names the file and field. Restore it from your backup of the registry; never edit records by hand (they hold the device's key).",
  },
  E_REGISTRY_PERMISSIONS: {
    meaning:
      "The device registry's devices/ directory or a device record (which holds the device's flash-encryption key) can be read by other users (group or other permission bits set), or belongs to another user.",
    action:
      "Run `chmod 700 DIR DIR/devices && chmod 600 DIR/devices/*.json` as the registry's owner (or run as that user), then consider whether the keys have leaked: a leaked flash-encryption key lets its holder read and forge that device's flash.",
  },
  E_REGISTRY_IMPORT: {
    meaning:
      "A line of a `devices import` file is not `MAC,CHIP,PARTITION_TABLE,KEY_FILE[,FLASH_CRYPT_CONF[,SECURE_VERSION]]`.",
    action: "The message names the line; fix it and import again (devices already added are kept).",
  },
  E_RELEASE_APP_INVALID: {
    meaning:
      "The app given to `release build` is not a valid ESP app image (or its chip is unknown).",
    action:
      "Give the app binary ESP-IDF built (build/<project>.bin), unsigned: the build signs it. `esp-ota image-info` shows what is wrong.",
  },
  E_RELEASE_APP_NO_DESCRIPTOR: {
    meaning: "The app has no esp_app_desc_t, so its version and secure_version cannot be read.",
    action: "Give an ESP-IDF application image, not a bootloader or a raw binary.",
  },
  E_RELEASE_VERSION_MISMATCH: {
    meaning: "--version differs from the version in the app's esp_app_desc_t.",
    action:
      "The device and the gateway read the version from the image; pass the version the app was built with (PROJECT_VER), or rebuild the app.",
  },
  E_RELEASE_CHIP_MISMATCH: {
    meaning: "A device named in --devices is another chip than the app is built for.",
    action:
      "Build one release per chip; `--devices all` picks the devices of the app's chip by itself.",
  },
  E_RELEASE_SECURE_VERSION: {
    meaning:
      "The app's secure_version is below a device's eFuse secure_version: its bootloader would refuse the app (anti-rollback).",
    action: "Raise CONFIG_BOOTLOADER_APP_SECURE_VERSION and rebuild the app.",
  },
  E_RELEASE_SECURE_BOOT_SCHEME: {
    meaning:
      "The keyring's secure boot key is of a scheme a device's chip does not verify (e.g. Secure Boot V1 for an ESP32-S3).",
    action: "Build releases for that chip with a keyring whose secure boot key the chip uses.",
  },
  E_RELEASE_SLOT_TOO_SMALL: {
    meaning: "The signed app does not fit an OTA slot of a device.",
    action:
      "Make the app smaller or the OTA partitions larger (a new partition table needs a serial reflash).",
  },
  E_RELEASE_NO_DEVICES: {
    meaning: "No registered device takes this app.",
    action: "Register the devices (`esp-ota devices add`) or check --devices and the app's chip.",
  },
  E_RELEASE_BASE_URL: {
    meaning: "--base-url is not an http or https URL.",
    action:
      "Give the URL the output directory will be published under, e.g. https://updates.example.com/releases/1.2.0/.",
  },
  E_RELEASE_EXPIRES: {
    meaning: "--expires is not a duration like 30d, 12h, 90m, 3600s or 1.5h.",
    action:
      'Give a positive number followed by its unit: ms, s, m, h or d (docs/cli.md, "Conventions").',
  },
  E_RELEASE_WRITE: {
    meaning: "Writing a ciphertext to the output directory failed.",
    action:
      "Check space and permissions of --out, then run the same command again: finished devices are skipped.",
  },
  E_RELEASE_WORKER: {
    meaning: "A build worker thread stopped unexpectedly.",
    action: "Run again (finished devices are skipped); with --jobs 1 the build runs in one thread.",
  },
  E_SERVE_LISTEN: {
    meaning: "`esp-ota serve` could not listen on the address and port.",
    action: "Pick another --port (0 chooses a free one) or stop what is using it.",
  },
} as const satisfies ErrorCodeTable;
