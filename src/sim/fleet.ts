/**
 * Simulated fleets: N secure ESP32s made to match an operator's keyring and device registry, so
 * that what `esp-ota release build` writes for them boots on them (docs/simulator.md "Fleets").
 * The agent's end-to-end tests, its benchmark, the fleet bench and the demo start from one.
 *
 *   DIR/fleet.json          what the fleet holds (written last: no fleet.json = unfinished)
 *   DIR/keys/               the operator keyring (initKeyring; private, 0700)
 *   DIR/registry/           the device registry (openRegistry; one record per device, 0600)
 *   DIR/trust.json          the gateway's trust policy, as `esp-ota keys export` writes it
 *   DIR/devices/<id>.sim    each device's simulator state file (ESPSIMD1, SimDevice.serialize)
 *
 * Every device is made as a factory would make it for this operator (provision.ts): the initial
 * app signed with the keyring's secure boot key and installed in ota_0, flash encryption in
 * release mode with a key of its own (kept in its registry record, which is what `release build`
 * encrypts with), the bootloader built with rollback and anti-rollback, and one first boot, after
 * which ota_0 runs VALID (the bootloader records it in otadata, esp32-facts §1.3).
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { EspOtaError } from "../errors.js";
import { chipByName, type SecureBootScheme } from "../esp/chips.js";
import { generateFlashEncryptionKey } from "../esp/flash-encryption.js";
import {
  encodePartitionTable,
  loadPartitionTable,
  type Partition,
} from "../esp/partition-table.js";
import { writeFileAtomicSync } from "../fs/write-atomic.js";
import { encodeTrustPolicy, type ManifestKeyAlg } from "../release/keyring.js";
import {
  addManifestKey,
  initKeyring,
  type Keyring,
  keyringTrustPolicy,
  SECURE_BOOT_CHOICES,
  type SecureBootChoice,
} from "../release/keyring-fs.js";
import { defaultFlashKeyBits, deviceIdFromMac, makeDeviceRecord } from "../release/registry.js";
import { openRegistry } from "../release/registry-fs.js";
import { APP_BEHAVIOURS, type AppBehaviour, SimDevice } from "./device.js";
import type { SimChip } from "./efuse.js";
import { FLASH_SIZES } from "./flash.js";
import { provisionDevice } from "./provision.js";
import { makeSyntheticApp } from "./synthetic-app.js";

export interface FleetDeviceSpec {
  chip: SimChip;
  /** Default: fleetMac(index), 24:0a:c4:fe:xx:yy. */
  mac?: string;
  /** Behaviour per app version, e.g. {"2.0.0": "refuses"}; versions not listed are healthy. */
  behaviours?: Record<string, AppBehaviour>;
}

export interface CreateFleetOptions {
  /** Must not exist or be empty (E_FLEET_EXISTS). */
  dir: string;
  devices: FleetDeviceSpec[];
  /** The app every device starts with (project "fleet-demo"); default "1.0.0". */
  appVersion?: string;
  /** Size of the synthetic apps; default 0x10000: fleets are big and tests want speed. */
  appSize?: number;
  /** Default: defaultFleetSecureBoot(chips) — see there for why. */
  secureBoot?: SecureBootChoice;
  /** Manifest signing keys: default one ecdsa-p256 and one ed25519, both needed (threshold 2). */
  manifestKeys?: { algs: ManifestKeyAlg[]; threshold: number };
  /** Default FLEET_PARTITIONS_CSV. Needs at least two OTA slots: releases go to the other one. */
  partitionsCsv?: string;
  /** eFuse and initial-app secure_version; default DEFAULT_FLEET_SECURE_VERSION (1). */
  secureVersion?: number;
  /** Registry records' addedAt; default now. */
  now?: Date;
}

export interface FleetDevice {
  deviceId: string;
  chip: SimChip;
  /** Absolute path of the device's state file. */
  stateFile: string;
}

export interface Fleet {
  dir: string;
  keysDir: string;
  registryDir: string;
  /** The public trust policy a gateway needs (what `esp-ota keys export` writes). */
  trustFile: string;
  devices: FleetDevice[];
  /** The eFuse secure_version the devices were made with; fleetApp's default matches it. */
  secureVersion: number;
  secureBoot: SecureBootChoice;
}

/** Project name in every fleet app's esp_app_desc_t. */
export const FLEET_PROJECT = "fleet-demo";
export const FLEET_FILE = "fleet.json";
export const DEFAULT_FLEET_APP_SIZE = 0x10000;
/**
 * 1, not 0: the bootloader's anti-rollback is on in every fleet device, and with the eFuse at 1 a
 * release with secure_version 0 is a downgrade that `release build` refuses
 * (E_RELEASE_SECURE_VERSION), while one with 2 raises the eFuse when a device confirms it, after
 * which an app with 1 is refused by the device itself (ESP_ERR_OTA_SMALL_SEC_VER). Both kinds of
 * downgrade test are possible from the first release.
 */
export const DEFAULT_FLEET_SECURE_VERSION = 1;

/**
 * ESP-IDF's two-OTA layout without a factory app (an OTA-only product), with slots of 960 KB:
 * plenty for the small synthetic apps, and the whole table fits a 2 MB flash (flash is sparse in
 * the simulator, so the size costs nothing; it is what `device info` reports).
 */
export const FLEET_PARTITIONS_CSV = `# Name,   Type, SubType, Offset,   Size
nvs,      data, nvs,     0x9000,   0x4000
otadata,  data, ota,     0xd000,   0x2000
phy_init, data, phy,     0xf000,   0x1000
ota_0,    app,  ota_0,   0x10000,  0xf0000
ota_1,    app,  ota_1,   0x100000, 0xf0000
`;

const FLEET_FORMAT = 1;

interface FleetDoc {
  format: 1;
  project: string;
  appVersion: string;
  secureVersion: number;
  secureBoot: SecureBootChoice;
  createdAt: string;
  devices: { deviceId: string; chip: SimChip; stateFile: string }[];
}

/** Device i's MAC: Espressif's OUI 24:0a:c4, then fe, then i as 16 bits (i < 65536). */
export function fleetMac(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index > 0xffff)
    throw new RangeError(`fleetMac: index ${index} is not 0..65535`);
  const b = (n: number) => n.toString(16).padStart(2, "0");
  return `24:0a:c4:fe:${b(index >> 8)}:${b(index & 0xff)}`;
}

const SCHEME_OF: Readonly<Record<SecureBootChoice, SecureBootScheme>> = {
  v1: "v1",
  "v2-rsa3072": "v2-rsa",
  "v2-ecdsa256": "v2-ecdsa",
};

/** Whether every chip verifies this secure boot scheme (the release build's own table, chips.ts). */
export function secureBootFits(choice: SecureBootChoice, chips: readonly SimChip[]): boolean {
  return chips.every((c) => chipByName(c).secureBoot.includes(SCHEME_OF[choice]));
}

/**
 * The secure boot scheme a fleet gets unless told: one key signs for every device, so it must be
 * one every chip verifies. In order of preference:
 *  - v2-ecdsa256: fast keys and V2; but neither simulated chip has it (ESP32 v3 and ESP32-S3
 *    verify Secure Boot V2 with RSA-3072 only, esp32-facts §5.2), so it is never picked today;
 *  - v1 (ECDSA P-256): all-ESP32 fleets. Key generation takes a millisecond;
 *  - v2-rsa3072: any fleet with an ESP32-S3. Its key generation takes 0.2–0.8 s on this
 *    machine's cores (measured), once per fleet.
 */
export function defaultFleetSecureBoot(chips: readonly SimChip[]): SecureBootChoice {
  const order: SecureBootChoice[] = ["v2-ecdsa256", "v1", "v2-rsa3072"];
  const fit = order.find((c) => secureBootFits(c, chips));
  if (!fit)
    throw new EspOtaError(
      "E_SIM_PROVISION",
      `no secure boot scheme is verified by every chip of the fleet (${[...new Set(chips)].join(", ")})`,
    );
  return fit;
}

/** A synthetic app to release to the fleet (unsigned, as ESP-IDF builds it). */
export function fleetApp(
  chip: SimChip,
  version: string,
  o: { size?: number; secureVersion?: number } = {},
): Uint8Array {
  return makeSyntheticApp({
    chip,
    project: FLEET_PROJECT,
    version,
    secureVersion: o.secureVersion ?? DEFAULT_FLEET_SECURE_VERSION,
    size: o.size ?? DEFAULT_FLEET_APP_SIZE,
  });
}

/** Smallest simulated flash chip the partition table fits in. */
function flashSizeFor(parts: readonly Partition[]): number {
  const end = Math.max(...parts.map((p) => p.offset + p.size));
  const size = Object.values(FLASH_SIZES).find((s) => s >= end);
  if (size === undefined)
    throw new EspOtaError(
      "E_SIM_PROVISION",
      `the partition table ends at 0x${end.toString(16)}, beyond a 16 MB flash`,
    );
  return size;
}

/**
 * Creates a fleet in `o.dir` as named steps: checkOptions, makeKeyring, exportTrust, then per
 * device provision (sign, encrypt, burn eFuses), firstBoot, register, saveState; fleet.json last.
 */
export function createFleet(o: CreateFleetOptions): Fleet {
  // checkOptions
  if (!Array.isArray(o.devices) || o.devices.length === 0)
    throw new RangeError("createFleet: devices must list at least one device");
  if (o.devices.length > 0x10000)
    throw new RangeError("createFleet: at most 65536 devices (the MAC sequence has 16 bits)");
  const chips = o.devices.map((d) => d.chip);
  for (const c of chips)
    if (c !== "esp32" && c !== "esp32s3")
      throw new RangeError(`createFleet: chip ${String(c)} is not esp32 or esp32s3`);
  const macs = o.devices.map((d, i) => d.mac ?? fleetMac(i));
  const ids = macs.map((m) => {
    const id = deviceIdFromMac(m);
    if (id === null)
      throw new EspOtaError("E_DEVICE_MAC", `"${m}" is not a MAC address`, { mac: m });
    return id;
  });
  const dup = ids.find((id, i) => ids.indexOf(id) !== i);
  if (dup) throw new RangeError(`createFleet: two devices have the MAC of ${dup}`);
  for (const d of o.devices)
    for (const [v, b] of Object.entries(d.behaviours ?? {}))
      if (!APP_BEHAVIOURS.includes(b))
        throw new RangeError(
          `createFleet: behaviour ${String(b)} for ${v} is not one of ${APP_BEHAVIOURS.join(", ")}`,
        );
  const secureBoot = o.secureBoot ?? defaultFleetSecureBoot(chips);
  if (!SECURE_BOOT_CHOICES.includes(secureBoot))
    throw new RangeError(
      `createFleet: secureBoot must be one of ${SECURE_BOOT_CHOICES.join(", ")}`,
    );
  if (!secureBootFits(secureBoot, chips))
    throw new EspOtaError(
      "E_SIM_PROVISION",
      `secure boot ${secureBoot} is not verified by every chip of the fleet (${[...new Set(chips)].join(", ")}); ESP32 and ESP32-S3 verify V2 with RSA-3072 only`,
      { secureBoot },
    );
  const secureVersion = o.secureVersion ?? DEFAULT_FLEET_SECURE_VERSION;
  if (!Number.isInteger(secureVersion) || secureVersion < 0)
    throw new RangeError(`createFleet: secureVersion ${secureVersion} is not a whole number`);
  const appVersion = o.appVersion ?? "1.0.0";
  const csv = new TextEncoder().encode(o.partitionsCsv ?? FLEET_PARTITIONS_CSV);
  const partitions = loadPartitionTable(csv);
  const flashSize = flashSizeFor(partitions);
  const now = o.now ?? new Date();

  const dir = resolve(o.dir);
  if (existsSync(dir) && (!statSync(dir).isDirectory() || readdirSync(dir).length > 0))
    throw new EspOtaError("E_FLEET_EXISTS", `${dir} already exists and is not empty`, { dir });
  mkdirSync(dir, { recursive: true });

  // makeKeyring
  const keysDir = join(dir, "keys");
  const keyring = makeKeyring(keysDir, secureBoot, o.manifestKeys);

  // exportTrust: outside keys/ so a gateway never needs to read the private directory.
  const trustFile = join(dir, "trust.json");
  writeAtomic(trustFile, encodeTrustPolicy(keyringTrustPolicy(keyring)), 0o644);

  const registryDir = join(dir, "registry");
  const registry = openRegistry(registryDir, { create: true });
  const devicesDir = join(dir, "devices");
  mkdirSync(devicesDir, { recursive: true, mode: 0o700 });
  chmodSync(devicesDir, 0o700);
  const tableBin = encodePartitionTable(partitions);
  // Same app for every device of a chip: built once per chip.
  const apps = new Map<SimChip, Uint8Array>();
  const appFor = (chip: SimChip) => {
    let a = apps.get(chip);
    if (!a) {
      a = fleetApp(chip, appVersion, { size: o.appSize ?? DEFAULT_FLEET_APP_SIZE, secureVersion });
      apps.set(chip, a);
    }
    return a;
  };

  const devices: FleetDevice[] = o.devices.map((spec, i) => {
    const deviceId = ids[i]!;
    const key = generateFlashEncryptionKey(defaultFlashKeyBits(spec.chip));
    // provision
    const device = provisionDevice({
      chip: spec.chip,
      flashSize,
      partitions,
      app: appFor(spec.chip),
      flashEncryption: { key, release: true },
      secureBoot: keyring.secureBoot,
      bootloader: { rollback: true, antiRollback: true },
      mac: new Uint8Array(Buffer.from(deviceId, "hex")),
      behaviours: { ...spec.behaviours },
      secureVersion,
    });
    // firstBoot: the bootloader records ota_0 in otadata (ota_seq 1, VALID).
    const state = device.powerOn();
    if (state.kind !== "running")
      throw new EspOtaError(
        "E_SIM_NOT_BOOTABLE",
        `fleet device ${deviceId} does not boot after provisioning (${state.kind}): ${device.uart.sinceLastReset().join(" | ")}`,
        { deviceId },
      );
    // register: the key the release build encrypts with, FLASH_CRYPT_CONFIG as provisioned.
    registry.add(
      makeDeviceRecord({
        mac: deviceId,
        chip: spec.chip,
        partitionTable: tableBin,
        flashEncryptionKey: key,
        ...(spec.chip === "esp32" ? { flashCryptConf: device.efuses.flashCryptConfig } : {}),
        secureVersion,
        now,
      }),
    );
    // saveState: the eFuses hold the flash-encryption key, so the file is owner-only.
    const stateFile = join(devicesDir, `${deviceId}.sim`);
    writeAtomic(stateFile, device.serialize(), 0o600);
    return { deviceId, chip: spec.chip, stateFile };
  });

  const doc: FleetDoc = {
    format: FLEET_FORMAT,
    project: FLEET_PROJECT,
    appVersion,
    secureVersion,
    secureBoot,
    createdAt: now.toISOString(),
    devices: devices.map((d) => ({
      deviceId: d.deviceId,
      chip: d.chip,
      stateFile: `devices/${d.deviceId}.sim`,
    })),
  };
  writeAtomic(join(dir, FLEET_FILE), `${JSON.stringify(doc, null, 2)}\n`, 0o644);
  return { dir, keysDir, registryDir, trustFile, devices, secureVersion, secureBoot };
}

/**
 * A keyring with manifest keys of the given algorithms. initKeyring makes keys of one algorithm;
 * the others are added as a rotation would add them, the threshold set with the last one.
 */
function makeKeyring(
  dir: string,
  secureBoot: SecureBootChoice,
  mk: CreateFleetOptions["manifestKeys"],
): Keyring {
  const algs = mk?.algs ?? (["ecdsa-p256", "ed25519"] as ManifestKeyAlg[]);
  const threshold = mk?.threshold ?? 2;
  if (algs.length === 0) throw new RangeError("createFleet: manifestKeys.algs is empty");
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > algs.length)
    throw new RangeError(`createFleet: manifestKeys.threshold must be 1..${algs.length}`);
  if (algs.every((a) => a === algs[0]))
    return initKeyring(dir, {
      secureBoot,
      manifestKeys: algs.length,
      manifestAlg: algs[0]!,
      threshold,
    });
  let keyring = initKeyring(dir, {
    secureBoot,
    manifestKeys: 1,
    manifestAlg: algs[0]!,
    threshold: 1,
  });
  algs.slice(1).forEach((alg, i) => {
    keyring = addManifestKey(dir, alg, i === algs.length - 2 ? threshold : undefined).keyring;
  });
  return keyring;
}

/** Reads DIR/fleet.json (E_FLEET_MISSING, E_FLEET_INVALID). Paths in the result are absolute. */
export function loadFleet(dirIn: string): Fleet {
  const dir = resolve(dirIn);
  const path = join(dir, FLEET_FILE);
  if (!existsSync(path))
    throw new EspOtaError("E_FLEET_MISSING", `${dir} is not a simulated fleet (no ${FLEET_FILE})`, {
      dir,
    });
  const bad = (why: string) => new EspOtaError("E_FLEET_INVALID", `${path}: ${why}`, { path });
  let doc: FleetDoc;
  try {
    doc = JSON.parse(readFileSync(path, "utf8")) as FleetDoc;
  } catch {
    throw bad("not JSON");
  }
  if (typeof doc !== "object" || doc === null || doc.format !== FLEET_FORMAT)
    throw bad(`format must be ${FLEET_FORMAT}`);
  if (!Number.isInteger(doc.secureVersion) || doc.secureVersion < 0) throw bad("secureVersion");
  if (!SECURE_BOOT_CHOICES.includes(doc.secureBoot)) throw bad("secureBoot");
  if (!Array.isArray(doc.devices) || doc.devices.length === 0) throw bad("devices");
  const devices = doc.devices.map((d) => {
    if (
      typeof d !== "object" ||
      d === null ||
      deviceIdFromMac(String(d.deviceId)) !== d.deviceId ||
      (d.chip !== "esp32" && d.chip !== "esp32s3") ||
      d.stateFile !== `devices/${d.deviceId}.sim`
    )
      throw bad(`device entry ${JSON.stringify(d)}`);
    return { deviceId: d.deviceId, chip: d.chip, stateFile: join(dir, d.stateFile) };
  });
  return {
    dir,
    keysDir: join(dir, "keys"),
    registryDir: join(dir, "registry"),
    trustFile: join(dir, "trust.json"),
    devices,
    secureVersion: doc.secureVersion,
    secureBoot: doc.secureBoot,
  };
}

/** The fleet device a CLI argument names: its 0-based index, its id, or its MAC. */
export function findFleetDevice(fleet: Fleet, ref: string): FleetDevice {
  const byIndex = /^\d+$/.test(ref) && ref.length < 6 ? fleet.devices[Number(ref)] : undefined;
  const id = deviceIdFromMac(ref);
  const d = byIndex ?? fleet.devices.find((x) => x.deviceId === id);
  if (!d)
    throw new EspOtaError(
      "E_FLEET_DEVICE_UNKNOWN",
      `"${ref}" is neither an index (0..${fleet.devices.length - 1}) nor a device id of the fleet in ${fleet.dir}`,
      { ref },
    );
  return d;
}

/** Loads a fleet device's state (E_FLEET_INVALID when the file holds another device). */
export function loadFleetDevice(d: FleetDevice): SimDevice {
  const dev = SimDevice.deserialize(new Uint8Array(readFileSync(d.stateFile)));
  if (dev.id !== d.deviceId)
    throw new EspOtaError(
      "E_FLEET_INVALID",
      `${d.stateFile} holds device ${dev.id}, not ${d.deviceId}`,
      { deviceId: d.deviceId },
    );
  return dev;
}

/** Writes a device's state file (whole, by rename: a crash never leaves half a device). */
export function saveFleetDevice(stateFile: string, dev: SimDevice): void {
  writeAtomic(stateFile, dev.serialize(), 0o600);
}

/**
 * Sets how a device's app behaves when it runs `version` (its state file's spec). Not for a
 * device being served: serveFleet holds its own copy and saves it on close.
 */
export function setFleetBehaviour(
  fleet: Fleet,
  ref: string,
  version: string,
  behaviour: AppBehaviour,
): void {
  if (!APP_BEHAVIOURS.includes(behaviour))
    throw new RangeError(`setFleetBehaviour: ${String(behaviour)} is not a behaviour`);
  const d = findFleetDevice(fleet, ref);
  const dev = loadFleetDevice(d);
  dev.spec.behaviours[version] = behaviour;
  saveFleetDevice(d.stateFile, dev);
}

/**
 * Atomic, not durable: a simulated fleet is test state that can be made again, and an fsync per
 * device would slow `sim fleet create` of a thousand devices for nothing (src/fs/write-atomic.ts).
 */
function writeAtomic(path: string, data: string | Uint8Array, mode: number): void {
  try {
    writeFileAtomicSync(path, data, { mode, durable: false });
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_WRITE",
      `cannot write ${path}: ${(e as Error).message}`,
      { path },
      e,
    );
  }
}
