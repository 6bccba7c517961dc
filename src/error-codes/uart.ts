import type { ErrorCodeTable } from "./types.js";

/** The UART OTA protocol (src/uart, docs/uart-protocol.md). */
export const uartCodes = {
  E_UART_NO_DEVICE: {
    meaning:
      "No device answered HELLO on the port: nothing attached, the app does not run the UART OTA task, it is stuck in a reset loop, or the baud rate is wrong.",
    action:
      "Check the cable and port, then read the device log lines printed with the error (a boot loop shows there). The console starts at 115200 baud.",
  },
  E_UART_TIMEOUT: {
    meaning:
      "The device stopped answering during an exchange (no RESULT or ACK within the timeout, after the retries).",
    action:
      "Retry: the transfer resumes where the device's progress record says. A noisy cable or an adapter that cannot carry the negotiated baud is the usual cause; try a lower --baud.",
  },
  E_UART_DISCONNECTED: {
    meaning: "The serial port closed during the session (cable pulled, adapter reset).",
    action:
      "Reconnect and run the same command again: the device kept its progress and the transfer resumes.",
  },
  E_UART_CANCELLED: {
    meaning:
      "The session was cancelled (AbortSignal, Ctrl-C). Before ACTIVATE the device was told to ABORT and still runs its old app.",
    action: "Nothing to undo. Run the command again to update.",
  },
  E_UART_PROTOCOL: {
    meaning:
      "The device sent a message the host cannot use (wrong shape, unknown protocol version, an answer to another request).",
    action:
      "Check that the device firmware implements the same protocol version (docs/uart-protocol.md).",
  },
  E_UART_FRAME_CRC: {
    meaning:
      "A frame failed its CRC-32 and was skipped. Counted, not fatal: the protocol retransmits.",
    action: "Many of these mean a noisy cable or too high a baud rate; lower --baud.",
  },
  E_UART_SLOT_REFUSED: {
    meaning:
      "The device refused BEGIN: the offset is the running slot or not an OTA app slot, or the image is larger than the slot.",
    action:
      "Use the slot `esp-ota device info` reports as next, and an image encrypted for that slot's address.",
  },
  E_UART_SLOT_NOT_NEXT: {
    meaning:
      "The host refused to send: --offset is not the slot the device's otadata says is next to update.",
    action:
      "Run `esp-ota device info` and build (encrypt) the image for the slot it names; an image encrypted for another address does not boot.",
  },
  E_UART_PENDING_VERIFY: {
    meaning:
      "The device's running app is still PENDING_VERIFY (it has not confirmed itself), so an update now could be rolled back over.",
    action: "Wait for the app to mark itself valid (or reboot it), then retry.",
  },
  E_UART_HASH_MISMATCH: {
    meaning:
      "The SHA-256 of the bytes in the slot differs from the one BEGIN announced. The slot was not activated; the old app still boots.",
    action: "Retry; if it repeats, check the image file and the --sha256 value.",
  },
  E_UART_IMAGE_INVALID: {
    meaning:
      "The image arrived intact but does not verify on the device once decrypted (wrong flash-encryption key or slot address, bad secure boot signature, secure_version below the eFuse). Nothing was activated.",
    action:
      "Sign first, then encrypt with this device's key for this slot's address; the message carries the device's verification log.",
  },
  E_UART_ACTIVATE_FAILED: {
    meaning: "esp_ota_set_boot_partition failed on the device; otadata was not changed.",
    action: "Read the esp_err_t name in the message; retry the update.",
  },
  E_UART_ROLLED_BACK: {
    meaning:
      "After the reboot the device runs its old slot again: the new app failed its self-test, crashed, or did not boot, and the bootloader rolled back.",
    action:
      "Read the device log printed with the error; the new slot's otadata entry says ABORTED or INVALID.",
  },
  E_UART_FLASH_ERROR: {
    meaning:
      "The device answered FLASH_ERROR: an esp_partition_* call (erase, write, read, otadata invalidation) failed on the device. Its message carries the esp_err_t. Nothing was activated.",
    action:
      "Retry once; if it repeats, the flash may be worn or failing: read the device log, run `esp-ota device info`, and replace the board if the error persists.",
  },
  E_UART_BAD_STATE: {
    meaning:
      "The device answered BAD_STATE: the request is not allowed in the state it is in (docs/uart-protocol.md §6.1), e.g. ACTIVATE before a verified END. The host and the device disagree on where the session is.",
    action:
      "Run the command again: a new session starts from HELLO. If it repeats, check that host and firmware implement the same protocol version.",
  },
  E_UART_RESET_LOOP: {
    meaning:
      "The device reset again and again during one transfer (more times than the session resumes): a brown-out, a watchdog or a crash in the app's OTA task, not a noisy cable.",
    action:
      "Read the device log lines in the error (a panic or brown-out shows there); check the power supply. The transfer resumes from the device's progress record once it stays up.",
  },
  E_UART_CONFIRM_TIMEOUT: {
    meaning:
      "The new app booted but did not confirm itself (mark valid) in time. It stays PENDING_VERIFY; the next reset rolls it back.",
    action:
      "Check the app's self-test; reset the device to roll back, or wait longer (--confirm-timeout).",
  },
  E_UART_PORT: {
    meaning: "The serial port could not be opened or configured.",
    action: "Check the path, permissions (dialout group) and that no other program holds the port.",
  },
  E_UART_VERSION_MISMATCH: {
    meaning:
      "The image the device decrypted and verified at END carries another app version than the signed manifest claims. It was aborted before activation; the device keeps its app.",
    action:
      "Compare the release's app (`esp-ota image-info`) with the manifest's version and rebuild the release with `esp-ota release build`. A genuine build never differs: if the manifest verified, suspect its signing keys (docs/security.md).",
  },
  E_UART_SOCAT_MISSING: {
    meaning:
      "socat, which creates the pseudo-terminals simulated devices are attached to (`sim serve`, `sim fleet serve`, `demo --links pty`), is not installed.",
    action:
      "Install it: apt-get install -y socat (Debian/Ubuntu) or brew install socat. `esp-ota demo` runs without it on in-memory UART links (--links memory, the default when socat is missing).",
  },
} as const satisfies ErrorCodeTable;
