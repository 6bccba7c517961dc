/**
 * Provisioning: make a device the right way, in the order that boots (esp32-facts §5.4, IDF
 * security-features-enablement-workflows.rst, host-side pre-encryption):
 *   1. check the app is an image for this chip and fits its slot;
 *   2. sign the *plaintext* app (and, for Secure Boot V2, the bootloader);
 *   3. encrypt every region with the device key *at its own flash address* (bootloader,
 *      partition table, app slot) — never one ciphertext reused at another address;
 *   4. burn the eFuses last: key, FLASH_CRYPT_CONFIG, counter (odd = on), secure boot.
 * Steps people get wrong on the way (signing ciphertext, encrypting for 0x10000 and writing at
 * 0x160000, a plain CRC-32 in otadata) are reproduced by tests in test/sim/classic-mistakes.
 */

import { EspOtaError } from "../errors.js";
import { createFlashCipher } from "../esp/flash-encryption.js";
import { buildAppImage, verifyImage } from "../esp/image.js";
import { hasPrivateKey, type SigningKey } from "../esp/keys.js";
import {
  APP_SUBTYPE,
  DATA_SUBTYPE,
  encodePartitionTable,
  findPartition,
  isEncryptedPartition,
  otaAppPartitions,
  PART_TYPE,
  PARTITION_TABLE_OFFSET,
  type Partition,
} from "../esp/partition-table.js";
import { extractPublicKeyV1, signDataV1 } from "../esp/secure-boot-v1.js";
import { publicKeyDigestV2, signDataV2 } from "../esp/secure-boot-v2.js";
import { BOOTLOADER_OFFSET, type BootloaderConfig } from "./bootloader.js";
import type { SimClock } from "./clock.js";
import { type AppBehaviour, DEFAULT_SPEC, type DeviceSpec, SimDevice } from "./device.js";
import { EFUSE_LAYOUT, Efuses, type SimChip } from "./efuse.js";
import { type FlashTiming, NorFlash } from "./flash.js";

export interface SecureBootSetup {
  version: 1 | 2;
  /** Signing keys with their private parts (V1: one ECDSA P-256 key; V2: 1–3 keys). */
  keys: readonly SigningKey[];
}

export interface FlashEncryptionSetup {
  /** The key file's bytes (espsecure generate-flash-encryption-key). */
  key: Uint8Array;
  /** ESP32 FLASH_CRYPT_CONFIG (default 0xF, as the bootloader burns it). */
  flashCryptConf?: number;
  /** Release mode: download-mode encryption off and the counter write-protected. */
  release?: boolean;
}

export interface ProvisionOptions {
  chip: SimChip;
  flashSize: number;
  partitions: Partition[];
  /** The plain, unsigned app image to install. */
  app: Uint8Array;
  flashEncryption?: FlashEncryptionSetup;
  secureBoot?: SecureBootSetup;
  bootloader?: Partial<BootloaderConfig>;
  mac?: Uint8Array;
  clock?: SimClock;
  timing?: Partial<FlashTiming>;
  behaviours?: Record<string, AppBehaviour>;
  defaultBehaviour?: AppBehaviour;
  /** Anti-rollback: eFuse secure_version to start from. */
  secureVersion?: number;
}

export function provisionDevice(opts: ProvisionOptions): SimDevice {
  const layout = EFUSE_LAYOUT[opts.chip];
  const bad = (why: string) => new EspOtaError("E_SIM_PROVISION", why, { chip: opts.chip });

  // 1. The app: an image for this chip, and a slot for it (factory if there is one, else ota_0).
  const v = verifyImage(opts.app, { chip: opts.chip });
  if (!v.ok)
    throw bad(
      `the app is not a valid ${opts.chip} image: ${v.problems.map((p) => p.message).join("; ")}`,
    );
  const slot =
    findPartition(opts.partitions, PART_TYPE.app, APP_SUBTYPE.factory) ??
    otaAppPartitions(opts.partitions)[0];
  if (!slot) throw bad("the partition table has no factory or ota_0 app partition");
  if (opts.secureBoot && !layout.secureBoot.includes(opts.secureBoot.version === 1 ? "v1" : "v2")) {
    throw bad(`${opts.chip} does not support Secure Boot V${opts.secureBoot.version}`);
  }
  if (opts.secureBoot) checkSigningKeys(opts.chip, opts.secureBoot, bad);
  if (opts.flashEncryption && !layout.feKeyLengths.includes(opts.flashEncryption.key.length)) {
    throw bad(
      `a ${opts.chip} flash-encryption key is ${layout.feKeyLengths.join(" or ")} bytes, not ${opts.flashEncryption.key.length}`,
    );
  }

  // 2. Sign the plaintext.
  const app = opts.secureBoot ? signImage(opts.app, opts.secureBoot) : opts.app;
  if (app.length > slot.size)
    throw bad(`the signed app is ${app.length} bytes; partition ${slot.label} holds ${slot.size}`);
  let bootloader = buildAppImage({
    chip: opts.chip,
    appDesc: { projectName: "bootloader", version: "v5.5" },
    entryAddr: 0x40080400,
  });
  if (opts.secureBoot?.version === 2) bootloader = signDataV2(bootloader, opts.secureBoot.keys);
  const blOffset = BOOTLOADER_OFFSET[opts.chip];
  if (blOffset + bootloader.length > PARTITION_TABLE_OFFSET)
    throw bad("the bootloader does not fit below the partition table");

  // 3. Encrypt each region at its own address, then write it.
  const mac = opts.mac ?? defaultMac(opts.chip);
  const clock = opts.clock;
  const flash = new NorFlash({
    size: opts.flashSize,
    ...(clock ? { clock } : {}),
    ...(opts.timing ? { timing: opts.timing } : {}),
  });
  const fe = opts.flashEncryption;
  const place = (address: number, data: Uint8Array, encrypted: boolean) => {
    const bytes = fe && encrypted ? encryptForAddress(opts.chip, fe, address, data) : data;
    flash.eraseRange(address, Math.ceil(bytes.length / 0x1000) * 0x1000);
    flash.program(address, bytes);
  };
  place(blOffset, bootloader, true);
  place(PARTITION_TABLE_OFFSET, encodePartitionTable(opts.partitions), true);
  place(slot.offset, app, isEncryptedPartition(slot));
  // otadata: ESP-IDF's ota_data_initial.bin (0x2000 bytes of 0xFF), encrypted at its address like
  // every other region. Left merely erased, it would read through the decrypting cache as
  // pseudo-random entries with bad CRCs ("ota data partition invalid", esp32-facts §4.1b) and the
  // bootloader would never write its initial entry.
  const otadata = findPartition(opts.partitions, PART_TYPE.data, DATA_SUBTYPE.ota);
  if (otadata)
    place(otadata.offset, new Uint8Array(otadata.size).fill(0xff), isEncryptedPartition(otadata));

  // 4. eFuses last.
  const efuses = new Efuses(opts.chip, mac);
  if (fe) {
    efuses.burnFlashEncryptionKey(fe.key);
    if (opts.chip === "esp32") efuses.burnFlashCryptConfig(fe.flashCryptConf ?? 0xf);
    efuses.incrementFlashCryptCnt();
    if (fe.release) efuses.enableReleaseMode();
  }
  const bootloaderConfig: BootloaderConfig = { ...DEFAULT_SPEC.bootloader, ...opts.bootloader };
  if (opts.secureBoot?.version === 1) {
    efuses.enableSecureBootV1();
    bootloaderConfig.sbv1PublicKey = Buffer.from(
      extractPublicKeyV1(opts.secureBoot.keys[0]!),
    ).toString("hex");
  } else if (opts.secureBoot?.version === 2) {
    opts.secureBoot.keys.forEach((k, i) => {
      efuses.burnSbv2Digest(i, publicKeyDigestV2(k));
    });
    efuses.enableSecureBootV2();
  }
  if (opts.secureVersion) efuses.burnSecureVersion(opts.secureVersion);
  if (bootloaderConfig.antiRollback && !bootloaderConfig.rollback)
    throw bad(
      "anti-rollback requires rollback (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK depends on ROLLBACK_ENABLE)",
    );

  const spec: DeviceSpec = {
    ...DEFAULT_SPEC,
    chip: opts.chip,
    flashSize: opts.flashSize,
    bootloader: bootloaderConfig,
    behaviours: { ...opts.behaviours },
    defaultBehaviour: opts.defaultBehaviour ?? DEFAULT_SPEC.defaultBehaviour,
  };
  return new SimDevice(spec, efuses, flash);
}

/**
 * Encrypt data with a device's flash-encryption key for one flash address (padded with 0xFF to
 * 16 bytes, as an erased tail would read). The result is valid at that address only.
 */
export function encryptForAddress(
  chip: SimChip,
  fe: FlashEncryptionSetup,
  address: number,
  data: Uint8Array,
): Uint8Array {
  const cipher =
    EFUSE_LAYOUT[chip].flashEncryption === "esp32"
      ? createFlashCipher({
          scheme: "esp32",
          key: fe.key,
          flashCryptConf: fe.flashCryptConf ?? 0xf,
        })
      : createFlashCipher({ scheme: "xts", key: fe.key });
  return cipher.encrypt(address, padTo(data, 16));
}

/**
 * Install an app into a slot the way a factory programmer does: sign the plaintext, encrypt it
 * for that slot's address, erase and write raw. otadata is not touched.
 */
export function installAppInSlot(
  device: SimDevice,
  slot: Partition,
  plainImage: Uint8Array,
  security: { secureBoot?: SecureBootSetup; flashEncryption?: FlashEncryptionSetup },
): void {
  const signed = security.secureBoot ? signImage(plainImage, security.secureBoot) : plainImage;
  if (signed.length > slot.size)
    throw new EspOtaError(
      "E_SIM_PROVISION",
      `${signed.length} bytes do not fit ${slot.label} (${slot.size})`,
    );
  const fe = security.flashEncryption;
  const bytes =
    fe && isEncryptedPartition(slot)
      ? encryptForAddress(device.spec.chip, fe, slot.offset, signed)
      : signed;
  const wasOn = device.flash.isPowered;
  device.flash.powerOn();
  device.flash.eraseRange(slot.offset, Math.ceil(bytes.length / 0x1000) * 0x1000);
  device.flash.program(slot.offset, bytes);
  if (!wasOn) device.flash.powerOff();
}

/** Sign a plain app image for the device's secure boot scheme (the release pipeline does the same). */
export function signImage(image: Uint8Array, sb: SecureBootSetup): Uint8Array {
  return sb.version === 1 ? signDataV1(image, sb.keys[0]!) : signDataV2(image, sb.keys);
}

function checkSigningKeys(
  chip: SimChip,
  sb: SecureBootSetup,
  bad: (why: string) => EspOtaError,
): void {
  const max = sb.version === 1 ? 1 : EFUSE_LAYOUT[chip].sbv2DigestSlots;
  if (sb.keys.length < 1 || sb.keys.length > max)
    throw bad(
      `Secure Boot V${sb.version} on ${chip} takes 1 to ${max} signing key(s), got ${sb.keys.length}`,
    );
  for (const k of sb.keys) {
    if (!hasPrivateKey(k))
      throw bad("a signing key has no private part: provisioning signs the app");
    if (sb.version === 1 && k.scheme !== "ecdsa256")
      throw bad("Secure Boot V1 signs with ECDSA P-256");
    // ESP32 (v3.0) and ESP32-S3 verify Secure Boot V2 with RSA-3072 only (esp32-facts §5.2).
    if (sb.version === 2 && k.scheme !== "rsa3072")
      throw bad(`${chip} Secure Boot V2 supports RSA-3072 keys only`);
  }
}

function padTo(data: Uint8Array, align: number): Uint8Array {
  if (data.length % align === 0) return data;
  const out = new Uint8Array(Math.ceil(data.length / align) * align).fill(0xff);
  out.set(data);
  return out;
}

/** Espressif's OUI (24:0A:C4) plus a fixed tail; callers making fleets pass their own. */
function defaultMac(chip: SimChip): Uint8Array {
  return new Uint8Array([0x24, 0x0a, 0xc4, chip === "esp32" ? 0x00 : 0x53, 0x00, 0x01]);
}
