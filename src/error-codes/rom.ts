import type { ErrorCodeTable } from "./types.js";

/** The ESP ROM serial loader, host side (`esp-ota rom`, src/rom; docs/rom-protocol.md). */
export const romCodes = {
  E_ROM_NO_ANSWER: {
    meaning:
      "Nothing answered SYNC on the port after every connect attempt: the chip is not in download mode, the port is wrong, or its UART download mode is disabled in eFuse (UART_DOWNLOAD_DIS / DIS_DOWNLOAD_MODE), in which case it never answers again.",
    action:
      "Hold BOOT (GPIO0) low while resetting the board, or wire DTR/RTS for the automatic reset (`--before default-reset`); check the port and baud rate. If the chip's download mode is disabled, only an OTA update over the running app can change it.",
  },
  E_ROM_TIMEOUT: {
    meaning:
      "The ROM loader answered SYNC but then gave no response to a command within its timeout.",
    action:
      "Check the cable and the baud rate (a failed CHANGE_BAUDRATE leaves the sides at different rates); retry at 115200 baud.",
  },
  E_ROM_COMMAND: {
    meaning:
      "The ROM loader answered a command with a failure status; the message names the command and the ROM's error byte (0x05 invalid message or unsupported command, 0x06 failed, 0x07 checksum, 0x0b deflate, 0x64 invalid parameter, …).",
    action:
      "The error byte says why (docs/rom-protocol.md §4). 0x64 on FLASH_BEGIN: the write goes past the flash size the ROM knows; pass `--flash-size`.",
  },
  E_ROM_SECURE_DOWNLOAD: {
    meaning:
      "The chip is in Secure Download Mode (ENABLE_SECURITY_DOWNLOAD burned): it refuses register reads, MD5, reads and compressed writes, so the operation asked for cannot be done.",
    action:
      "Write uncompressed (`--no-compress`) and without read-back (`--no-verify`); success can only be checked by booting the app. The chip id and MAC are not readable in this mode.",
  },
  E_ROM_CHIP_MISMATCH: {
    meaning: "The chip that answered is not the one named with `--chip`.",
    action: "Name the chip that is attached, or leave `--chip` out to detect it.",
  },
  E_ROM_REFUSED: {
    meaning:
      "erase-region refused: flash encryption or secure boot is on, and an erased bootloader, partition table or app can only be replaced with correctly encrypted and signed images (esptool refuses the same).",
    action:
      "Write the replacement instead of erasing; if the region really must be erased, pass `--force` and have the ciphertext for it ready.",
  },
  E_ROM_VERIFY: {
    meaning:
      "After writing, the MD5 the ROM computed over the flash differs from the MD5 of the data sent: the write did not land as sent.",
    action:
      "Retry at a lower baud rate. If it persists, the flash region may be write-protected or failing.",
  },
} as const satisfies ErrorCodeTable;
