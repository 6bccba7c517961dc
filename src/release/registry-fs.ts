/**
 * The device registry on disk: DIR/devices/<deviceId>.json, one file per device so that a build
 * updating release counters never rewrites other devices' records. Directories are 0700 and files
 * 0600 because each record holds a device's flash-encryption key, and reading refuses a record or
 * directory that other users could read, as the keyring does (E_REGISTRY_PERMISSIONS). Writes are
 * atomic and durable (src/fs/write-atomic.ts): a crash or power cut never leaves half a record, a
 * lost counter, or a lost key, which would leave the device un-updatable for good.
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  type Stats,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { EspOtaError } from "../errors.js";
import { writeFileAtomicSync, writeFilesAtomicSync } from "../fs/write-atomic.js";
import {
  type DeviceRecord,
  encodeDeviceRecord,
  isDeviceId,
  parseDeviceRecord,
} from "./registry.js";

/**
 * E_REGISTRY_PERMISSIONS unless `st` is owner-only and owned by this process's user: what the
 * keyring (keyring-fs.ts) and ssh require of private key files. POSIX bits say nothing about
 * Windows ACLs, so there the check would refuse every file.
 */
function checkOwnerOnly(st: Stats, path: string, what: string): void {
  if (process.platform === "win32") return;
  const mode = `0${(st.mode & 0o777).toString(8)}`;
  if ((st.mode & 0o077) !== 0)
    throw new EspOtaError(
      "E_REGISTRY_PERMISSIONS",
      `${what} ${path} has mode ${mode}; other users may read the flash-encryption keys (owner-only is required: chmod ${st.isDirectory() ? "700" : "600"} ${path})`,
      { path, mode },
    );
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid)
    throw new EspOtaError(
      "E_REGISTRY_PERMISSIONS",
      `${what} ${path} belongs to uid ${st.uid}, not to you (${uid})`,
      { path, uid: st.uid },
    );
}

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
  /** update() for many records, durable together (writeFilesAtomicSync): a build's counters. */
  updateMany(records: readonly DeviceRecord[]): void;
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
  checkOwnerOnly(statSync(devicesDir), devicesDir, "the registry directory");
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
    try {
      writeFileAtomicSync(path, encodeDeviceRecord(r), { mode: 0o600, durable: true });
    } catch (e) {
      throw new EspOtaError(
        "E_FILE_WRITE",
        `cannot write ${path}: ${(e as Error).message}`,
        { path },
        e,
      );
    }
  };
  /** The record's text, checked owner-only on the open file (no window between check and read). */
  const readRecord = (path: string): string => {
    const fd = openSync(path, "r");
    try {
      checkOwnerOnly(fstatSync(fd), path, "device record");
      return readFileSync(fd, "utf8");
    } finally {
      closeSync(fd);
    }
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
      const r = parseDeviceRecord(readRecord(path), path);
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
    updateMany(rs) {
      for (const r of rs) existing(r.deviceId);
      const files = rs.map((r) => ({ path: file(r.deviceId), data: encodeDeviceRecord(r) }));
      try {
        writeFilesAtomicSync(files, { mode: 0o600, durable: true });
      } catch (e) {
        throw new EspOtaError(
          "E_FILE_WRITE",
          `cannot write the registry's records in ${devicesDir}: ${(e as Error).message}`,
          { path: devicesDir },
          e,
        );
      }
    },
    remove(id) {
      reg.get(id);
      rmSync(file(id));
    },
  };
  return reg;
}
