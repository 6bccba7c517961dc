import type { ErrorCodeTable } from "./types.js";

/**
 * App image format (src/esp/image.ts). The E_IMAGE_* codes are also the `code` of every
 * `ImageProblem` that parseImage/verifyImage report, in the order the ESP-IDF bootloader checks
 * (esp_image_format.c), so the first one is the check a device would fail on.
 */
export const imageCodes = {
  E_CHIP_UNKNOWN: {
    meaning:
      "A chip name given on the command line or to the library is not one of the known ESP32 family members.",
    action:
      "Use esptool's spelling: esp32, esp32s2, esp32s3, esp32c3, esp32c2, esp32c6, esp32h2, esp32p4, esp32c5, esp32c61, esp32h21, esp32h4 or esp32s31.",
  },
  E_IMAGE_MAGIC: {
    meaning:
      'The first byte is not 0xE9, so this is not an ESP32 app or bootloader image (the bootloader logs "image at 0x… has invalid magic byte"). Flash-encrypted ciphertext, a partition table or an ELF file look like this.',
    action:
      "Pass the .bin that `idf.py build` / `esptool elf2image` wrote (not the .elf), and the plaintext image, not one encrypted for flash.",
  },
  E_IMAGE_TRUNCATED: {
    meaning:
      "The file ends before the image does: inside the 24-byte header, a segment, the checksum block or the appended SHA-256 (or it is empty).",
    action:
      "The file was cut short in a download or copy; fetch or build it again and compare its size with the original.",
  },
  E_IMAGE_HEADER_FIELD: {
    meaning:
      "A header field holds a value the tools never write: `hash_appended` (byte 23) is neither 0 nor 1. esptool refuses such an image; the bootloader treats any non-zero value as 1.",
    action:
      "Rebuild the image with esptool elf2image / idf.py; the header was corrupted or hand-made.",
  },
  E_IMAGE_CHIP_UNKNOWN: {
    meaning: "The header's chip id (bytes 12–13) is not the id of any known ESP32 chip.",
    action:
      "Check that the file is an ESP32-family image built by ESP-IDF; an ESP8266 image or a corrupted header reads like this.",
  },
  E_IMAGE_CHIP_MISMATCH: {
    meaning:
      'The image was built for another chip than the one it is meant for: the bootloader logs "mismatch chip ID, expected N, found M" and refuses it.',
    action:
      "Build the firmware for the device's target (`idf.py set-target …`) or send it to the devices it was built for.",
  },
  E_IMAGE_CHIP_REVISION: {
    meaning:
      "The device's chip revision is outside the image's [min_chip_rev_full, max_chip_rev_full] range, so the bootloader refuses the image (\"chip revision check failed\").",
    action:
      "Rebuild with CONFIG_ESP32*_REV_MIN / the max revision set to cover the device's revision.",
  },
  E_IMAGE_EFUSE_BLK_REVISION: {
    meaning:
      "The device's eFuse block revision is outside the app descriptor's [min_efuse_blk_rev_full, max_efuse_blk_rev_full] range (\"Image requires efuse blk rev …\").",
    action: "Rebuild the app for the device's eFuse block revision.",
  },
  E_IMAGE_SEGMENT_COUNT: {
    meaning:
      "The header declares more than 16 segments (ESP_IMAGE_MAX_SEGMENTS); the bootloader refuses the image.",
    action:
      "Usually a linker-script problem: merge sections so that elf2image writes at most 16 segments.",
  },
  E_IMAGE_SEGMENT_LENGTH: {
    meaning:
      'A segment\'s length is not a multiple of 4 or is 16 MB or more ("invalid segment length").',
    action:
      "The header or a segment header is corrupt, or the image was not made by esptool; rebuild it.",
  },
  E_IMAGE_SEGMENT_MAPPING: {
    meaning:
      "A flash-mapped (IROM/DROM) segment's data offset and load address differ modulo the MMU page size, so the cache could not map it (\"Segment N load address 0x…, doesn't match data 0x…\").",
    action:
      "Rebuild with esptool elf2image, which pads flash segments to their page offset; do not splice segments by hand.",
  },
  E_IMAGE_APP_DESC_MISSING: {
    meaning:
      'Segment 0 does not start with a 256-byte esp_app_desc_t (magic 0xABCD5432): it is too short ("too short for app description") or the magic is absent. Bootloaders with a configurable MMU page size refuse such an app, and secure_version / anti-rollback cannot work without it.',
    action:
      "Check that this is an ESP-IDF application (not a bootloader or a RAM-only image); ESP-IDF places the descriptor first in the DROM segment.",
  },
  E_IMAGE_CHECKSUM: {
    meaning:
      'The XOR checksum over the segment data (initial 0xEF) differs from the stored byte: "Checksum failed. Calculated 0x… read 0x…". The image is corrupt.',
    action: "Download or build the image again; do not flash it.",
  },
  E_IMAGE_HASH: {
    meaning:
      'The SHA-256 appended to the image differs from the SHA-256 of the image bytes: "Image hash failed - image is corrupt".',
    action:
      "Download or build the image again; do not flash it. If only the header's flash mode/size was patched, re-run esptool so it updates the hash too.",
  },
  E_IMAGE_TOO_BIG: {
    meaning:
      'The image (through its appended SHA-256) is larger than the partition it is meant for ("Image length … doesn\'t fit in partition length …").',
    action: "Use a larger app partition in the partition table, or make the app smaller.",
  },
} as const satisfies ErrorCodeTable;
