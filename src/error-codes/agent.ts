import type { ErrorCodeTable } from "./types.js";

/** The gateway agent (agent/, src/gateway; docs/mqtt-api.md, docs/operations.md). */
export const agentCodes = {
  E_AGENT_SUPERSEDED: {
    meaning:
      "The update was cancelled before activation because a newer desired update replaced it. The device still runs its previous app.",
    action: "Nothing to undo: the newer release is being installed instead.",
  },
  E_AGENT_CLEARED: {
    meaning:
      "The desired update was cleared (empty retained notice, or a rollout abort) before the device was switched. The device still runs its previous app.",
    action: "Publish the notice again to install the release.",
  },
  E_AGENT_CANCELLED: {
    meaning:
      "An operator cancelled the update with the `cancel` command before activation. The device still runs its previous app.",
    action: "Use the `retry` command (or publish the notice again) to install it.",
  },
  E_AGENT_NOTICE_INVALID: {
    meaning:
      "A desired-update notice could not be used: not JSON, not the schema, or for another device than its topic names.",
    action:
      "Fix the publisher; the notice format is in docs/mqtt-api.md and docs/schemas/mqtt-notice.schema.json.",
  },
  E_AGENT_NO_VARIANT: {
    meaning:
      "The manifest has no variant encrypted for the slot the device's otadata selects as next: installing any other would not boot.",
    action:
      "Rebuild the release with a variant per OTA slot (`release build` does this by default), or check the device's partition table matches the registry.",
  },
  E_AGENT_PARTITION_TABLE: {
    meaning:
      "The device reports a partition table (its SHA-256, in INFO) other than the one the release was built for (the manifest's partitionTableSha256): it was reflashed with another layout, or the registry entry is wrong. Nothing was sent to the device.",
    action:
      "Run `esp-ota device info` on the device, correct its registry entry (`esp-ota devices add --replace` with the right partition table), and rebuild the release for it.",
  },
  E_AGENT_SLOT_MISMATCH: {
    meaning:
      "The variant for the next slot does not fit the device: its offset, label or size differs from the device's partition table.",
    action:
      "The registry's partition table differs from the device's: run `esp-ota device info` and correct the registry entry, then rebuild.",
  },
  E_AGENT_DOWNGRADE: {
    meaning:
      "The release is older than the app the device runs, and the policy refuses downgrades.",
    action:
      "Release a newer version, or set policy.allowDowngrade: true in the gateway config if the downgrade is intended.",
  },
  E_AGENT_SECURE_VERSION: {
    meaning:
      "The release's secure_version is below the device's eFuse secure_version: the bootloader's anti-rollback would refuse it.",
    action:
      "Build the app with a secure_version at least the device's (esp-ota device info shows it).",
  },
  E_AGENT_DEVICE_GONE: {
    meaning:
      "The device was unplugged or its port closed before the update could finish. The update resumes when it is plugged back in.",
    action: "Reconnect the device; nothing else is needed.",
  },
  E_AGENT_UNKNOWN_DEVICE: {
    meaning:
      "A command named a device that is not attached to this gateway (only that: a command with nothing to act on on an attached device is E_AGENT_NO_JOB).",
    action: "Check the device id (`esp-ota status` lists devices and their gateways).",
  },
  E_AGENT_BUSY: {
    meaning: "The command cannot run now: the device is in the middle of an update.",
    action: "Wait for the update to end, or cancel it first.",
  },
  E_AGENT_STATE: {
    meaning:
      "The agent's state directory could not be read or written (permissions, disk full, a corrupt file).",
    action:
      "Check stateDir in the config: it must be writable by the agent. A corrupt ledger file is renamed *.corrupt and the device starts afresh.",
  },
  E_AGENT_LEDGER_CORRUPT: {
    meaning:
      "A device's ledger in the state directory was not a valid ledger (not JSON, or a field of the wrong type or shape). It was renamed *.corrupt and the device started afresh, keeping every well-formed high-water mark found in it; the log line says whether one was kept.",
    action:
      "Inspect stateDir/devices/<deviceId>.json.corrupt (hand edits and other programs are the usual cause) and delete it when done. If the log says no high-water mark was kept, the next release installed sets one again; until then only the downgrade policy and the device's eFuse secure_version refuse an older release.",
  },
  E_AGENT_ERASE_BUDGET: {
    meaning:
      "The update would make the device start a transfer afresh (erasing otadata's inactive sector and the slot), and the device already did so as often as the erase budget allows within the hour. Refused to protect its flash from notice churn; nothing was sent to the device.",
    action:
      "Wait until the time the message names and publish the notice again. Frequent supersedes or re-issues of different releases cause this; a notice for the image already partly on the device resumes without erasing and is not refused.",
  },
  E_AGENT_NO_JOB: {
    meaning:
      "A `cancel` or `retry` command had nothing to act on: no update in flight to cancel, or no earlier update to retry. The device is attached.",
    action: "Check the device's status (`esp-ota status`); publish a notice to start an update.",
  },
  E_AGENT_DEVICE_INFO: {
    meaning:
      "A device on a serial port sent an INFO the gateway cannot report: a chip name, slot label or app descriptor field longer than the MQTT schemas allow (docs/mqtt-api.md). That device is not attached; the others are served. The agent tries the port again with a growing delay.",
    action:
      "Check the firmware on that port (`esp-ota device info --port PORT`): the OTA component reports esptool's chip name and the partition table's labels, which are never this long.",
  },
  E_AGENT_DEVICE_CONFLICT: {
    meaning:
      "Two serial ports report the same device id (MAC): the port that served it first keeps it, the other is not attached and is listed under `conflicts` in the inventory. When either port goes away, the other is identified again.",
    action:
      "Find the two ports in the log line or the inventory and unplug the device that should not be there (a cloned MAC, or a board moved to another port before its old port was seen to go, which heals by itself).",
  },
  E_AGENT_TOO_MANY_DEVICES: {
    meaning:
      "The gateway already serves 256 devices, the most its inventory lists (docs/mqtt-api.md); the new one is not attached. The agent tries again with a growing delay.",
    action: "Spread the devices over more gateways.",
  },
  E_AGENT_NO_ROLLBACK_INFO: {
    meaning:
      "After activation the agent restarted and could not tell from the device whether the new app confirmed itself.",
    action: "Run `esp-ota device info` on the device to see which app runs.",
  },
  E_AGENT_RESCUE_DISABLED: {
    meaning:
      "A rescue was asked for on a port whose config does not allow it (serial.rescue.enabled is false, the default). Nothing was written.",
    action:
      "If the device on that port may be rewritten through its ROM loader, set serial.rescue.enabled: true (and resetLines: true when DTR/RTS are wired) for the port (docs/configuration.md), then ask again.",
  },
  E_AGENT_RESCUE_OTADATA: {
    meaning:
      "The otadata given for a rescue is not 0x2000 bytes or does not hash to the SHA-256 the release side published for that device and slot. Nothing was written.",
    action:
      "Use the otadata file `esp-ota release build` wrote next to the slot's ciphertext (`<slot>.otadata.bin`) and the SHA-256 from the release index.",
  },
  E_AGENT_RESCUE_NOT_BOOTED: {
    meaning:
      "The rescue wrote the slot and otadata through the ROM loader, but the booted app does not report the known-good release's version from the rescued slot (under Secure Download Mode nothing could be read back: the app's report is the only check).",
    action:
      "Watch the device's boot log (the gateway forwards it): a wrong flash-encryption key or otadata offset, or a device whose bootloader is broken too, cannot be rescued this way; reflash it with `esp-ota provision` on the bench.",
  },
} satisfies ErrorCodeTable;
