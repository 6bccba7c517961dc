/**
 * The `selectSlot` step, pure: given a verified manifest and what the device reported over the
 * UART, pick the variant encrypted for the slot the device's otadata makes next, and apply the
 * update policy (downgrades, anti-rollback). A ciphertext encrypted for another address would
 * decrypt to garbage there and not boot (esp32-facts: flash encryption is address-tweaked).
 */
import { toHex } from "../bytes.js";
import type { ErrorCode } from "../errors.js";
import type { ManifestVariant, ReleaseManifest } from "../release/manifest.js";
import type { Info } from "../uart/messages.js";
import { nextSlotOf, runningAppOf } from "./device-view.js";
import { compareVersions } from "./ledger.js";

export interface UpdatePolicy {
  /** Install a release older than the running app (default false: TUF "rollback attack"). */
  allowDowngrade: boolean;
}

export type Selection =
  | { ok: true; variant: ManifestVariant; alreadyRunning: boolean }
  | { ok: false; code: ErrorCode; reason: string };

export function selectVariant(m: ReleaseManifest, info: Info, policy: UpdatePolicy): Selection {
  // The release was encrypted for the partition table in the registry; a device reflashed with
  // another table (other offsets: the ciphertext would decrypt to noise) is refused here.
  // Devices whose INFO does not carry the hash are checked by slot offset, label and size below.
  if (info.partitionTableSha256) {
    const device = toHex(info.partitionTableSha256);
    if (device !== m.partitionTableSha256)
      return {
        ok: false,
        code: "E_AGENT_PARTITION_TABLE",
        reason: `the device's partition table (SHA-256 ${device.slice(0, 16)}…) is not the one the release was built for (${m.partitionTableSha256.slice(0, 16)}…)`,
      };
  }
  if (m.secureVersion < info.efuseSecureVersion)
    return {
      ok: false,
      code: "E_AGENT_SECURE_VERSION",
      reason: `release secure_version ${m.secureVersion} is below the device's eFuse secure_version ${info.efuseSecureVersion}`,
    };
  const running = runningAppOf(info);
  if (running && running.project === m.project && running.version === m.version) {
    const v = m.variants.find((x) => x.offset === running.offset);
    if (v && running.state !== "PENDING_VERIFY")
      return { ok: true, variant: v, alreadyRunning: true };
  }
  if (running && !policy.allowDowngrade) {
    const cmp = compareVersions(m.version, running.version);
    if (cmp !== undefined && cmp < 0)
      return {
        ok: false,
        code: "E_AGENT_DOWNGRADE",
        reason: `release ${m.version} is older than the running ${running.version} (policy.allowDowngrade is false)`,
      };
    if (m.secureVersion < running.secureVersion)
      return {
        ok: false,
        code: "E_AGENT_DOWNGRADE",
        reason: `release secure_version ${m.secureVersion} is below the running app's ${running.secureVersion}`,
      };
  }
  const next = nextSlotOf(info);
  if (!next)
    return { ok: false, code: "E_AGENT_NO_VARIANT", reason: "the device has no OTA app slot" };
  const v = m.variants.find((x) => x.offset === next.offset);
  if (!v)
    return {
      ok: false,
      code: "E_AGENT_NO_VARIANT",
      reason: `no variant is encrypted for the next slot ${next.label} at 0x${next.offset.toString(16)} (variants: ${m.variants.map((x) => `${x.slot}@0x${x.offset.toString(16)}`).join(", ")})`,
    };
  if (v.slot !== next.label || v.size > next.size)
    return {
      ok: false,
      code: "E_AGENT_SLOT_MISMATCH",
      reason: `variant ${v.slot} (${v.size} bytes) does not fit the device's ${next.label} (${next.size} bytes at 0x${next.offset.toString(16)})`,
    };
  return { ok: true, variant: v, alreadyRunning: false };
}
