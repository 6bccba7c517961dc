import type { ErrorCodeTable } from "./types.js";

/**
 * Partition table codes (src/esp/partition-table.ts). The rules are ESP-IDF's gen_esp32part.py
 * (v6.0.x); where this code is stricter than that tool, docs/formats.md says so and why.
 */
export const partitionCodes = {
  E_PARTITION_CSV_ENCODING: {
    meaning:
      "The partition CSV is not text in a known encoding (UTF-8, or UTF-16/UTF-32 with a byte order mark).",
    action:
      "Save the CSV as UTF-8 text (a leading byte order mark is fine) and run the command again.",
  },
  E_PARTITION_CSV_SYNTAX: {
    meaning:
      "A partition CSV line cannot be read: an empty type or size, an unknown type or subtype name, a field that is not a number, an unknown flag, an app without a subtype, or an undefined $VARIABLE.",
    action:
      "Fix the line named in the message. Columns are `Name, Type, SubType, Offset, Size, Flags`; numbers are decimal or 0x hex with an optional K or M suffix; flags are `encrypted` and `readonly`, joined with `:`.",
  },
  E_PARTITION_RANGE: {
    meaning:
      "A partition field does not fit its binary field: type or subtype outside 0..255, offset or size outside 0..0xFFFFFFFF, or a partition that ends beyond the 32-bit address space.",
    action: "Correct the named field of the named partition.",
  },
  E_PARTITION_LABEL: {
    meaning:
      "A partition label does not fit the 16-byte label field (UTF-8), contains a NUL character, or (in a binary table) is not valid UTF-8.",
    action:
      "Shorten the label to at most 16 bytes (ESP-IDF recommends 15, leaving room for a terminator) and use plain text.",
  },
  E_PARTITION_DUPLICATE_LABEL: {
    meaning: "Two partitions have the same label; labels must be unique.",
    action: "Rename one of the partitions the message lists.",
  },
  E_PARTITION_ALIGNMENT: {
    meaning:
      "A partition is misaligned: offsets must be multiples of 0x1000 (app partitions 0x10000) and app sizes multiples of 0x1000 (0x10000 with Secure Boot V1).",
    action:
      "Move or resize the named partition to the alignment the message gives, or leave its offset empty so it is placed automatically.",
  },
  E_PARTITION_OVERLAP: {
    meaning:
      "A partition overlaps another one, or the partition table sector (table offset .. table offset + 0x1000).",
    action:
      "Change the offsets or sizes so that partitions do not share flash, or leave offsets empty so they are placed one after another.",
  },
  E_PARTITION_OTADATA: {
    meaning:
      "The otadata partition (data/ota) or the TEE otadata partition (data/tee_ota) is defined more than once or is not exactly 0x2000 bytes (two 4 KB copies).",
    action: "Keep one otadata partition of size 0x2000 (8K).",
  },
  E_PARTITION_READONLY: {
    meaning:
      "A partition that must stay writable (data/ota or data/coredump) has the readonly flag.",
    action: "Remove the `readonly` flag from the named partition.",
  },
  E_PARTITION_NVS_SIZE: {
    meaning: "A read/write NVS partition (data/nvs) is smaller than 0x3000 bytes, the NVS minimum.",
    action:
      "Make the NVS partition at least 0x3000 (12K), or flag it `readonly` if it only holds factory data.",
  },
  E_PARTITION_FLASH_SIZE: {
    meaning: "The partitions end beyond the flash size given with --flash-size.",
    action: "Shrink or move partitions, or give the device's real flash size.",
  },
  E_PARTITION_TOO_MANY: {
    meaning:
      "The table has more entries than fit in 0xC00 bytes: at most 95 partitions, 94 when the MD5 entry is included, since an end marker must follow.",
    action: "Remove partitions.",
  },
  E_PARTITION_BOOTLOADER_OFFSET: {
    meaning:
      "A bootloader-type partition needs the bootloader offset (--primary-bootloader-offset, and --recovery-bootloader-offset for the recovery subtype), or that offset is not below the partition table.",
    action:
      "Pass the bootloader offset for the chip (0x1000 on ESP32, 0x0 on most later chips; see the chip's CONFIG_BOOTLOADER_OFFSET_IN_FLASH).",
  },
  E_PARTITION_BINARY_LENGTH: {
    meaning: "A binary partition table ends in the middle of a 32-byte entry.",
    action:
      "Read the whole table: 0xC00 bytes (or the 0x1000-byte sector) from the partition table offset.",
  },
  E_PARTITION_MAGIC: {
    meaning:
      "A binary partition table entry does not start with the magic bytes AA 50 (nor EB EB for the MD5 entry): the data is not a partition table, or it is encrypted or corrupt.",
    action:
      "Check the offset it was read from (default 0x8000). With flash encryption on, flash reads over the serial loader return ciphertext: read the table through the app, or decrypt it first.",
  },
  E_PARTITION_NO_END: {
    meaning:
      "A binary partition table has no end marker (32 bytes of 0xFF) within its first 0xC00 bytes.",
    action:
      "The table is truncated or corrupt: read the whole 0xC00 bytes, or regenerate and reflash it.",
  },
  E_PARTITION_MD5: {
    meaning:
      "The MD5 entry of a binary partition table does not match the entries before it, appears twice, or is followed by another partition entry.",
    action:
      "The table is corrupt or was edited by hand: regenerate it from its CSV. To read a table made with --disable-md5sum by an old tool, pass --disable-md5sum.",
  },
} as const satisfies ErrorCodeTable;
