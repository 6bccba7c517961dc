import type { ErrorCodeTable } from "./types.js";

/**
 * Flash encryption (`esp-ota secure encrypt-flash-data` / `decrypt-flash-data` /
 * `generate-flash-encryption-key`, and the library's `createFlashCipher`). The rules follow
 * espsecure v5 (`espsecure/__init__.py`, `_load_hardware_key` and the two
 * `_flash_encryption_operation_*` functions).
 */
export const flashEncryptionCodes = {
  E_FLASH_KEY_LENGTH: {
    meaning:
      "The flash encryption key file has a length the scheme does not take. ESP32 (classic): 32 bytes (256-bit) or 24 bytes (192-bit, 3/4 coding scheme). AES-XTS (`--aes-xts`, ESP32-S2 and later): 16, 32 or 64 bytes.",
    action:
      "Check that the key file is the raw key (not hex or base64) and that `--aes-xts` is given exactly when the chip uses XTS-AES; make a new key with `esp-ota secure generate-flash-encryption-key --keylen N`.",
  },
  E_FLASH_ADDRESS_ALIGN: {
    meaning: "The flash address is not a multiple of 16, the size of an encrypted flash block.",
    action:
      "Give the address the data is (or will be) stored at in flash; partitions and images start on 16-byte (in practice 4 KB) boundaries.",
  },
  E_FLASH_ADDRESS_RANGE: {
    meaning:
      "The data would extend past the end of the flash address space: 16 MB (24-bit addresses) for the ESP32 scheme, 4 GB for AES-XTS.",
    action: "Check the `--address` value and that the file is the one meant for this flash offset.",
  },
  E_FLASH_DATA_LENGTH: {
    meaning:
      "The data is not a whole number of 16-byte blocks (decrypting, or encrypting with AES-XTS), or is empty (AES-XTS). Flash ciphertext always comes in 16-byte blocks.",
    action:
      "Decrypt exactly the bytes read from flash (a multiple of 16). For AES-XTS, pad the plaintext to a multiple of 16 first, as the build system does.",
  },
} as const satisfies ErrorCodeTable;
