/**
 * The release build's pure core (docs/release.md): check the app against each device, sign it once,
 * plan one ciphertext per device and OTA slot, cut a slot's ciphertext into chunks, and write the
 * manifest and index bodies. No files, workers or clocks here: build.ts is the adapter that runs
 * the plan, build-worker.ts the per-core part.
 *
 * The order is the one esp32-facts §5.4 requires: sign the plaintext, then encrypt, per device
 * (its own key) and per slot (flash encryption tweaks every block with its physical address,
 * §4.2, so a ciphertext is valid at one offset of one device only).
 */
import { type ChipName, chipByName, type SecureBootScheme } from "../esp/chips.js";
import { type AppDescriptor, verifyImage } from "../esp/image.js";
import type { SigningKey } from "../esp/keys.js";
import { signDataV1 } from "../esp/secure-boot-v1.js";
import { signDataV2 } from "../esp/secure-boot-v2.js";
import type { ReleaseManifest } from "./manifest.js";
import { type DeviceRecord, deviceOtaSlots } from "./registry.js";

import { flashLength } from "./slot-crypt.js";

export { flashLength, slotCiphertext, slotCiphertextInto } from "./slot-crypt.js";

/** Failures the operator can fix; the CLI turns them into EspOtaErrors with these codes. */
export type BuildProblemCode =
  | "E_RELEASE_APP_INVALID"
  | "E_RELEASE_APP_NO_DESCRIPTOR"
  | "E_RELEASE_VERSION_MISMATCH"
  | "E_RELEASE_CHIP_MISMATCH"
  | "E_RELEASE_SECURE_VERSION"
  | "E_RELEASE_SECURE_BOOT_SCHEME"
  | "E_RELEASE_SLOT_TOO_SMALL";

export type Check<T = object> =
  | ({ ok: true } & T)
  | { ok: false; code: BuildProblemCode; reason: string; deviceId?: string };

export interface ReleaseApp {
  chip: ChipName;
  desc: AppDescriptor;
}

/**
 * The app as ESP-IDF built it (unsigned): a valid app image with an esp_app_desc_t whose version
 * is the release's. The descriptor is what the device and the gateway read, so the manifest's
 * version must be the one inside the image, not a label next to it.
 */
export function checkReleaseApp(app: Uint8Array, version: string): Check<{ app: ReleaseApp }> {
  const v = verifyImage(app, { kind: "app" });
  if (!v.ok)
    return {
      ok: false,
      code: "E_RELEASE_APP_INVALID",
      reason: `the app is not a valid ESP app image: ${v.problems.map((p) => p.message).join("; ")}`,
    };
  const chip = v.image.chip;
  if (!chip)
    return { ok: false, code: "E_RELEASE_APP_INVALID", reason: "the app's chip id is unknown" };
  const desc = v.image.appDesc;
  if (!desc)
    return {
      ok: false,
      code: "E_RELEASE_APP_NO_DESCRIPTOR",
      reason:
        "the app has no esp_app_desc_t (magic 0xABCD5432 at offset 0x20): it is not an ESP-IDF app, or not an app",
    };
  if (desc.version !== version)
    return {
      ok: false,
      code: "E_RELEASE_VERSION_MISMATCH",
      reason: `--version is ${JSON.stringify(version)} but the app's descriptor says ${JSON.stringify(desc.version)}`,
    };
  return { ok: true, app: { chip: chip.name, desc } };
}

export interface SecureBootKeys {
  version: 1 | 2;
  keys: readonly SigningKey[];
}

function schemeOf(sb: SecureBootKeys): SecureBootScheme {
  if (sb.version === 1) return "v1";
  return sb.keys[0]?.scheme === "rsa3072" ? "v2-rsa" : "v2-ecdsa";
}

/** Can this device take this app, signed with these keys? One check per rule, in order. */
export function checkDevice(
  app: ReleaseApp,
  signedLength: number,
  sb: SecureBootKeys,
  d: DeviceRecord,
): Check {
  const deviceId = d.deviceId;
  if (d.chip !== app.chip)
    return {
      ok: false,
      code: "E_RELEASE_CHIP_MISMATCH",
      deviceId,
      reason: `device ${deviceId} is an ${d.chip}; the app is built for ${app.chip}`,
    };
  if (app.desc.secureVersion < d.secureVersion)
    return {
      ok: false,
      code: "E_RELEASE_SECURE_VERSION",
      deviceId,
      reason: `the app's secure_version ${app.desc.secureVersion} is below device ${deviceId}'s eFuse secure_version ${d.secureVersion}: its bootloader would refuse it (anti-rollback)`,
    };
  const scheme = schemeOf(sb);
  if (!chipByName(d.chip).secureBoot.includes(scheme))
    return {
      ok: false,
      code: "E_RELEASE_SECURE_BOOT_SCHEME",
      deviceId,
      reason: `${d.chip} does not verify ${scheme} signatures (the keyring's secure boot key)`,
    };
  const need = flashLength(signedLength);
  for (const slot of deviceOtaSlots(d)) {
    if (need > slot.size)
      return {
        ok: false,
        code: "E_RELEASE_SLOT_TOO_SMALL",
        deviceId,
        reason: `the signed app takes ${need} bytes; slot ${slot.label} of device ${deviceId} holds ${slot.size}`,
      };
  }
  return { ok: true };
}

/** Sign the plaintext, once for the whole release (§5.4: before any encryption). */
export function signReleaseApp(app: Uint8Array, sb: SecureBootKeys): Uint8Array {
  if (sb.keys.length === 0) throw new RangeError("signReleaseApp: no secure boot key");
  return sb.version === 1 ? signDataV1(app, sb.keys[0]!) : signDataV2(app, sb.keys);
}

/**
 * A release id names one build of one app: project, version and the first 48 bits of the plain
 * app's SHA-256 (the plain app, because a Secure Boot V2 RSA-PSS signature differs on every
 * signing, and a rerun must find the same id). Reduced to the manifest's `[A-Za-z0-9._-]`.
 */
export function releaseIdFor(desc: AppDescriptor, appSha256Hex: string): string {
  const clean = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "");
  const tail = appSha256Hex.slice(0, 12);
  const head = `${clean(desc.projectName)}-${clean(desc.version)}`.slice(0, 64 - tail.length - 1);
  return `${head.replace(/^-+/, "") || "app"}-${tail}`;
}

export interface SlotJob {
  slot: string;
  offset: number;
  /** Path relative to the output directory: `<deviceId>/<slot>.bin`. */
  file: string;
}

export interface DeviceJob {
  deviceId: string;
  slots: SlotJob[];
}

export function planDevice(d: DeviceRecord): DeviceJob {
  return {
    deviceId: d.deviceId,
    slots: deviceOtaSlots(d).map((p) => ({
      slot: p.label,
      offset: p.offset,
      file: `${d.deviceId}/${p.label}.bin`,
    })),
  };
}

export interface SlotResult {
  slot: string;
  offset: number;
  size: number;
  sha256: string;
}

/** `https://host/path/` + `<device>/<slot>.bin`, one URL per variant. */
export function variantUrl(baseUrl: string, file: string): string {
  return `${baseUrl.replace(/\/+$/, "")}/${file}`;
}

export function isBaseUrl(s: string): boolean {
  return /^https?:\/\/[!-~]+$/.test(s) && URL.canParse(s);
}

export interface ManifestInput {
  releaseId: string;
  device: DeviceRecord;
  app: ReleaseApp;
  counter: number;
  issuedAt: Date;
  expiresAt: Date;
  baseUrl: string;
  slots: readonly (SlotResult & { file: string })[];
}

export function makeManifest(i: ManifestInput): ReleaseManifest {
  return {
    format: 1,
    releaseId: i.releaseId,
    deviceId: i.device.deviceId,
    chip: i.device.chip,
    partitionTableSha256: i.device.partitionTableSha256,
    project: i.app.desc.projectName,
    version: i.app.desc.version,
    secureVersion: i.app.desc.secureVersion,
    counter: i.counter,
    issuedAt: i.issuedAt.toISOString(),
    expiresAt: i.expiresAt.toISOString(),
    variants: i.slots.map((s) => ({
      slot: s.slot,
      offset: s.offset,
      size: s.size,
      sha256: s.sha256,
      urls: [variantUrl(i.baseUrl, s.file)],
    })),
  };
}

/** OUT/index.json: what the release holds, for the publisher and the operator. */
export interface ReleaseIndex {
  format: 1;
  releaseId: string;
  chip: string;
  project: string;
  version: string;
  secureVersion: number;
  devices: {
    deviceId: string;
    counter: number;
    manifest: string;
    variants: { slot: string; offset: number; size: number; sha256: string; file: string }[];
  }[];
}

export function makeIndex(
  releaseId: string,
  app: ReleaseApp,
  manifests: readonly ReleaseManifest[],
): ReleaseIndex {
  return {
    format: 1,
    releaseId,
    chip: app.chip,
    project: app.desc.projectName,
    version: app.desc.version,
    secureVersion: app.desc.secureVersion,
    devices: [...manifests]
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1))
      .map((m) => ({
        deviceId: m.deviceId,
        counter: m.counter,
        manifest: `${m.deviceId}/manifest.json`,
        variants: m.variants.map((v) => ({
          slot: v.slot,
          offset: v.offset,
          size: v.size,
          sha256: v.sha256,
          file: `${m.deviceId}/${v.slot}.bin`,
        })),
      })),
  };
}
