/**
 * The device registry on disk: DIR/devices/<deviceId>.json, one file per device so that a build
 * updating release counters never rewrites other devices' records. Directories are 0700 and files
 * 0600 because each record holds a device's flash-encryption key. Writes go to a temporary file
 * and are renamed into place, so a crash never leaves half a record (and never a lost counter).
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { EspOtaError } from "../errors.js";
import {
  type DeviceRecord,
  encodeDeviceRecord,
  isDeviceId,
  parseDeviceRecord,
} from "./registry.js";

export interface DeviceRegistry {
  readonly dir: string;
  list(): DeviceRecord[];
  /** E_DEVICE_UNKNOWN when there is no such device. */
  get(deviceId: string): DeviceRecord;
  has(deviceId: string): boolean;
  /** E_DEVICE_EXISTS unless `replace`. */
  add(record: DeviceRecord, opts?: { replace?: boolean }): void;
  /** Rewrites an existing record (release counters). */
  update(record: DeviceRecord): void;
  /** E_DEVICE_UNKNOWN when there is no such device. */
  remove(deviceId: string): void;
}

/** Opens (with `create`, makes) a registry directory. */
export function openRegistry(dir: string, opts: { create?: boolean } = {}): DeviceRegistry {
  const devicesDir = join(dir, "devices");
  if (!existsSync(devicesDir)) {
    if (!opts.create)
      throw new EspOtaError(
        "E_REGISTRY_MISSING",
        `${dir} is not a device registry (no devices/ directory); add a device with \`esp-ota devices add --registry ${dir}\` first`,
        { path: dir },
      );
    mkdirSync(devicesDir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    chmodSync(devicesDir, 0o700);
  }
  const file = (id: string) => {
    // Ids become file names: only the MAC-derived form, so no path can escape the directory.
    if (!isDeviceId(id))
      throw new EspOtaError(
        "E_DEVICE_UNKNOWN",
        `"${id}" is not a device id (12 lowercase hex digits, the MAC)`,
        { deviceId: id },
      );
    return join(devicesDir, `${id}.json`);
  };
  const write = (r: DeviceRecord) => {
    const path = file(r.deviceId);
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, encodeDeviceRecord(r), { mode: 0o600 });
    renameSync(tmp, path);
  };
  const existing = (id: string) => {
    const path = file(id);
    if (!existsSync(path))
      throw new EspOtaError("E_DEVICE_UNKNOWN", `no device ${id} in the registry ${dir}`, {
        deviceId: id,
      });
    return path;
  };
  const reg: DeviceRegistry = {
    dir,
    list() {
      return readdirSync(devicesDir)
        .filter((n) => n.endsWith(".json") && isDeviceId(n.slice(0, -5)))
        .sort()
        .map((n) => reg.get(n.slice(0, -5)));
    },
    has(id) {
      return existsSync(file(id));
    },
    get(id) {
      const path = existing(id);
      const r = parseDeviceRecord(readFileSync(path, "utf8"), path);
      if (r.deviceId !== id)
        throw new EspOtaError("E_REGISTRY_CORRUPT", `${path} holds device ${r.deviceId}`, {
          path,
          field: "deviceId",
        });
      return r;
    },
    add(r, o = {}) {
      if (!o.replace && reg.has(r.deviceId))
        throw new EspOtaError(
          "E_DEVICE_EXISTS",
          `device ${r.deviceId} is already in the registry; remove it first (its key would be lost)`,
          { deviceId: r.deviceId },
        );
      write(r);
    },
    update(r) {
      // Only that it exists: `release build` updates every device's counter, and parsing the
      // record it is about to replace cost a third of that.
      existing(r.deviceId);
      write(r);
    },
    remove(id) {
      reg.get(id);
      rmSync(file(id));
    },
  };
  return reg;
}
