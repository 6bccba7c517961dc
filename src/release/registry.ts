/**
 * The operator's device registry, pure part: what the release build needs to know about each
 * device (its chip, partition table, flash-encryption key and FLASH_CRYPT_CONFIG, its eFuse
 * secure_version) and the per-device release counter, with the rules for making and changing
 * records. registry-fs.ts stores records, one owner-only file per device.
 *
 * The flash-encryption key is the device's own (esp32-facts §4.2): a release for the device is
 * encrypted with it, so the registry is as secret as the keys. Nothing here prints a key;
 * `describeDevice` is what listings show.
 */
import { createHash } from "node:crypto";
import { fromHex, toHex } from "../bytes.js";
import { EspOtaError } from "../errors.js";
import { type ChipName, chipByName } from "../esp/chips.js";
import {
  DEFAULT_FLASH_CRYPT_CONF,
  FLASH_KEY_LENGTHS,
  type FlashCryptOptions,
} from "../esp/flash-encryption.js";
import {
  encodePartitionTable,
  isEncryptedPartition,
  loadPartitionTable,
  otaAppPartitions,
  type Partition,
} from "../esp/partition-table.js";

/** A device file's format version ("format" in DIR/devices/<id>.json). */
export const DEVICE_RECORD_FORMAT = 1;

export interface DeviceRecord {
  format: typeof DEVICE_RECORD_FORMAT;
  /** The factory MAC as 12 lowercase hex digits: stable, unique, read by `esptool read-mac`. */
  deviceId: string;
  chip: ChipName;
  /** The binary partition table (gen_esp32part output), hex; CSV input is encoded first. */
  partitionTable: string;
  /** SHA-256 of those bytes: the manifest's partitionTableSha256. */
  partitionTableSha256: string;
  flashEncryption: {
    /** The key file's bytes, hex (espsecure generate-flash-encryption-key format). */
    key: string;
    /** ESP32 (classic) only: the FLASH_CRYPT_CONFIG eFuse, 0..15. */
    flashCryptConf?: number;
  };
  /** The device's eFuse secure_version: a release below it would be refused (anti-rollback). */
  secureVersion: number;
  /** The last release counter issued to this device; only grows (0 = none yet). */
  releaseCounter: number;
  /** The release the counter was issued for, so a rerun of one build reuses its counter. */
  lastReleaseId?: string;
  addedAt: string;
}

/** "aa:bb:cc:dd:ee:ff", "AA-BB-...", "aabbccddeeff" -> "aabbccddeeff"; null when not a MAC. */
export function deviceIdFromMac(mac: string): string | null {
  const m = /^\s*([0-9a-fA-F]{2})(?:[:-]?([0-9a-fA-F]{2})){5}\s*$/.test(mac)
    ? mac.replace(/[\s:-]/g, "").toLowerCase()
    : null;
  return m !== null && m.length === 12 ? m : null;
}

/** Device ids are what deviceIdFromMac returns; they are also file names, so nothing else. */
export function isDeviceId(id: string): boolean {
  return /^[0-9a-f]{12}$/.test(id);
}

/** Key sizes a chip's flash encryption takes (esp32-facts §4.2). */
export function flashKeyLengths(chip: ChipName): readonly number[] {
  const info = chipByName(chip);
  if (info.flashEncryption === "esp32") return FLASH_KEY_LENGTHS.esp32;
  // XTS-AES-256 (512-bit keys) exists on S2, S3, C5 and P4 only; C2 also takes a 128-bit key.
  if (["esp32s2", "esp32s3", "esp32c5", "esp32p4"].includes(chip)) return [64, 32];
  if (chip === "esp32c2") return [32, 16];
  return [32];
}

/** The key size `devices add` generates: the strongest the chip takes. */
export function defaultFlashKeyBits(chip: ChipName): 128 | 192 | 256 | 512 {
  return (flashKeyLengths(chip)[0]! * 8) as 256 | 512;
}

export interface NewDevice {
  mac: string;
  chip: string;
  /** Partition table file bytes, CSV or binary. */
  partitionTable: Uint8Array;
  flashEncryptionKey: Uint8Array;
  flashCryptConf?: number;
  secureVersion?: number;
  now: Date;
}

/**
 * Makes a registry record. Bad input from the operator is an EspOtaError with its own code; the
 * partition table must have at least one OTA app slot, since releases only ever go to OTA slots.
 */
export function makeDeviceRecord(d: NewDevice): DeviceRecord {
  const deviceId = deviceIdFromMac(d.mac);
  if (deviceId === null)
    throw new EspOtaError(
      "E_DEVICE_MAC",
      `"${d.mac}" is not a MAC address (six hex bytes, e.g. 24:0a:c4:12:34:56)`,
      { mac: d.mac },
    );
  const chip = chipByName(d.chip).name;
  const parts = loadPartitionTable(d.partitionTable);
  if (otaAppPartitions(parts).length === 0)
    throw new EspOtaError(
      "E_DEVICE_NO_OTA_SLOT",
      `the partition table of device ${deviceId} has no OTA app partition (ota_0, ota_1, ...)`,
      { deviceId },
    );
  const lengths = flashKeyLengths(chip);
  if (!lengths.includes(d.flashEncryptionKey.length))
    throw new EspOtaError(
      "E_DEVICE_FLASH_KEY",
      `a ${chip} flash-encryption key is ${lengths.join(" or ")} bytes, not ${d.flashEncryptionKey.length}`,
      { deviceId, chip, keyLength: d.flashEncryptionKey.length },
    );
  const isEsp32 = chipByName(chip).flashEncryption === "esp32";
  if (d.flashCryptConf !== undefined) {
    if (!isEsp32)
      throw new EspOtaError(
        "E_DEVICE_FLASH_CRYPT_CONF",
        `FLASH_CRYPT_CONFIG exists on ESP32 (classic) only, not on ${chip}`,
        { deviceId, chip },
      );
    if (!Number.isInteger(d.flashCryptConf) || d.flashCryptConf < 0 || d.flashCryptConf > 15)
      throw new EspOtaError(
        "E_DEVICE_FLASH_CRYPT_CONF",
        `FLASH_CRYPT_CONFIG is a 4-bit eFuse (0..15), not ${d.flashCryptConf}`,
        { deviceId },
      );
  }
  const secureVersion = d.secureVersion ?? 0;
  if (!Number.isInteger(secureVersion) || secureVersion < 0)
    throw new RangeError(`secureVersion must be a non-negative integer, got ${secureVersion}`);
  const table = encodePartitionTable(parts);
  return {
    format: DEVICE_RECORD_FORMAT,
    deviceId,
    chip,
    partitionTable: toHex(table),
    partitionTableSha256: createHash("sha256").update(table).digest("hex"),
    flashEncryption: {
      key: toHex(d.flashEncryptionKey),
      ...(isEsp32 ? { flashCryptConf: d.flashCryptConf ?? DEFAULT_FLASH_CRYPT_CONF } : {}),
    },
    secureVersion,
    releaseCounter: 0,
    addedAt: d.now.toISOString(),
  };
}

/** Parses a stored record; a damaged file is E_REGISTRY_CORRUPT naming the field. */
export function parseDeviceRecord(json: string, where: string): DeviceRecord {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch (e) {
    throw new EspOtaError("E_REGISTRY_CORRUPT", `${where} is not JSON`, { path: where }, e);
  }
  const bad = (field: string) =>
    new EspOtaError("E_REGISTRY_CORRUPT", `${where}: field ${field} is missing or invalid`, {
      path: where,
      field,
    });
  const r = v as Partial<DeviceRecord>;
  if (typeof r !== "object" || r === null) throw bad("(root)");
  if (r.format !== DEVICE_RECORD_FORMAT) throw bad("format");
  if (typeof r.deviceId !== "string" || !isDeviceId(r.deviceId)) throw bad("deviceId");
  if (typeof r.chip !== "string") throw bad("chip");
  try {
    chipByName(r.chip);
  } catch {
    throw bad("chip");
  }
  if (typeof r.partitionTable !== "string" || !/^([0-9a-f]{2})+$/.test(r.partitionTable))
    throw bad("partitionTable");
  if (typeof r.partitionTableSha256 !== "string") throw bad("partitionTableSha256");
  const fe = r.flashEncryption;
  if (typeof fe !== "object" || fe === null || typeof fe.key !== "string")
    throw bad("flashEncryption");
  if (!/^([0-9a-f]{2})+$/.test(fe.key)) throw bad("flashEncryption.key");
  if (!Number.isInteger(r.secureVersion) || (r.secureVersion as number) < 0)
    throw bad("secureVersion");
  if (!Number.isInteger(r.releaseCounter) || (r.releaseCounter as number) < 0)
    throw bad("releaseCounter");
  return r as DeviceRecord;
}

export function encodeDeviceRecord(r: DeviceRecord): string {
  return `${JSON.stringify(r, null, 2)}\n`;
}

export function devicePartitions(r: DeviceRecord): Partition[] {
  return loadPartitionTable(fromHex(r.partitionTable));
}

/** The OTA app slots a release targets: every ota_N partition, each encrypted (§4.1). */
export function deviceOtaSlots(r: DeviceRecord): Partition[] {
  return otaAppPartitions(devicePartitions(r)).filter(isEncryptedPartition);
}

/** createFlashCipher options for the device's key. */
export function deviceCipherOptions(r: DeviceRecord): FlashCryptOptions {
  const key = fromHex(r.flashEncryption.key);
  return chipByName(r.chip).flashEncryption === "esp32"
    ? {
        scheme: "esp32",
        key,
        flashCryptConf: r.flashEncryption.flashCryptConf ?? DEFAULT_FLASH_CRYPT_CONF,
      }
    : { scheme: "xts", key };
}

/**
 * The counter a release gets on this device: the stored one again when the release is the one it
 * was issued for (a rerun of the same build), else one more. The caller persists it before
 * publishing the manifest, so no counter is ever issued twice for different releases.
 */
export function nextReleaseCounter(
  r: DeviceRecord,
  releaseId: string,
): { counter: number; record: DeviceRecord } {
  if (r.lastReleaseId === releaseId && r.releaseCounter > 0)
    return { counter: r.releaseCounter, record: r };
  const counter = r.releaseCounter + 1;
  return { counter, record: { ...r, releaseCounter: counter, lastReleaseId: releaseId } };
}

/** One line per device for `devices list`: never the key, only its size and a fingerprint. */
export function describeDevice(r: DeviceRecord): string {
  const slots = deviceOtaSlots(r)
    .map((p) => `${p.label}@0x${p.offset.toString(16)}`)
    .join(",");
  const keyBits = (r.flashEncryption.key.length / 2) * 8;
  const conf =
    r.flashEncryption.flashCryptConf !== undefined
      ? ` conf=0x${r.flashEncryption.flashCryptConf.toString(16)}`
      : "";
  return `${r.deviceId}  ${r.chip}  slots=${slots}  fe-key=${keyBits}-bit${conf}  secure_version=${r.secureVersion}  counter=${r.releaseCounter}`;
}
