import type { ErrorCodeTable } from "./types.js";

/** The device simulator (src/sim): its flash, eFuses, state files and provisioning. */
export const simCodes = {
  E_SIM_POWER_CUT: {
    meaning:
      "The simulated device lost power in the middle of a flash operation (a scheduled power cut). The operation was left partly done, as on hardware.",
    action:
      "Expected in power-cut tests. Power the device on again (`esp-ota sim boot`) and check that it boots the old or the new app.",
  },
  E_SIM_POWERED_OFF: {
    meaning: "A flash or UART operation reached a simulated device that is powered off.",
    action: "Power the device on (boot it) before talking to it.",
  },
  E_SIM_FLASH_RANGE: {
    meaning: "A flash read, write or erase goes past the end of the simulated flash chip.",
    action:
      "Check the address and length against the flash size (`--flash-size`) and the partition table.",
  },
  E_SIM_FLASH_ALIGN: {
    meaning:
      "A flash operation is not aligned as the hardware requires: erases need 4 KB sectors, encrypted writes 16-byte offsets and lengths.",
    action: "Align the address and length; the message names the rule.",
  },
  E_SIM_EFUSE_BURN: {
    meaning:
      "An eFuse burn was refused: the field is write-protected, the key block is already programmed, or the value would need a bit cleared (eFuses only go 0 to 1).",
    action:
      "eFuses are one-way, as on a real chip. Create a new simulated device if you need other values.",
  },
  E_SIM_STATE_FILE: {
    meaning:
      "A simulator state file could not be decoded (wrong magic, truncated, or from another version).",
    action:
      "Recreate the device with `esp-ota sim create`; state files are not meant to be edited by hand.",
  },
  E_SIM_PROVISION: {
    meaning:
      "The device could not be provisioned as asked: a missing key for the chosen security features, an app for another chip, or an app that does not fit its partition.",
    action: "Read the message: it names the missing or inconsistent input.",
  },
  E_SIM_NOT_BOOTABLE: {
    meaning:
      "The simulated device has no bootable app (it loops in reset printing its error) or its app panics on every boot.",
    action:
      "Read the boot log printed with the error: it says which image failed which check. Reprovision or write a good image.",
  },
  E_SIM_UPDATE_REFUSED: {
    meaning:
      "The simulated device's OTA code refused an update: the running app is still unconfirmed, the target is the running slot, the image does not fit, or it did not verify after decryption (wrong key, wrong slot address, bad signature, lower secure_version).",
    action:
      "The message names the step and the ESP-IDF error; check that the image was signed, then encrypted for this device at this slot's address.",
  },
} as const satisfies ErrorCodeTable;
