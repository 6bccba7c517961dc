import type { ErrorCodeTable } from "./types.js";

/** Provisioning: the plan, the generated script's gates, and replays on a simulated chip. */
export const provisionCodes = {
  E_PROVISION_PLAN: {
    meaning:
      "No provisioning plan can be made from these inputs: the chip has no such secure boot version or scheme, the key size does not fit the chip, or the partition table has no app partition.",
    action:
      "Read the message; pick a combination the chip supports (docs/provisioning.md lists them per chip).",
  },
  E_PROVISION_LAYOUT: {
    meaning:
      "The layout would brick the board at the first secure boot: the signed bootloader runs past the partition table offset, or a partition lies where flash encryption cannot reach.",
    action:
      "Move the partition table (CONFIG_PARTITION_TABLE_OFFSET, e.g. 0xA000 or 0xD000) and every partition after it, rebuild, and plan again. It cannot be moved after the chip is secured.",
  },
  E_PROVISION_STATE_MISMATCH: {
    meaning:
      "A gate in the provisioning script found the chip's eFuses (espefuse summary --format json) different from what the previous steps must have left. The script stopped before the next irreversible step.",
    action:
      "Do not continue on this chip blindly. Compare the listed fields with docs/provisioning.md; a chip that was provisioned before, or a step that failed, is the usual cause. The receipt records what was seen.",
  },
  E_PROVISION_SUMMARY: {
    meaning:
      "The eFuse summary given to check-state is not espefuse's JSON summary (or is too large).",
    action: "Make it with `espefuse --chip CHIP summary --format json --file FILE`.",
  },
  E_PROVISION_SCRIPT: {
    meaning:
      "A replayed provisioning script has a line the replay cannot run: an unknown tool or verb, a missing argument, or shell syntax it does not model.",
    action:
      "The message names the line. The replay runs espsecure, espefuse, esptool, idf.py (bootloader-)flash and esp-ota provision commands, one per line.",
  },
  E_PROVISION_NOT_BOOTABLE: {
    meaning:
      "The rehearsal or replay left the simulated chip unbootable or insecure; the report names each line that caused it.",
    action:
      "Fix the lines the report names (it says how) and replay again before touching a real chip.",
  },
} satisfies ErrorCodeTable;
