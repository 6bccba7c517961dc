/** The device registry: records (pure) and the owner-only directory adapter. */
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { encodePartitionTable, partitionsToCsv } from "../../src/esp/partition-table.js";
import {
  defaultFlashKeyBits,
  describeDevice,
  deviceCipherOptions,
  deviceIdFromMac,
  deviceOtaSlots,
  makeDeviceRecord,
  type NewDevice,
  nextReleaseCounter,
} from "../../src/release/registry.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import { keys, twoOtaLayout } from "../helpers/sim.js";

const root = mkdtempSync(join(tmpdir(), "registry-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const csv = new TextEncoder().encode(partitionsToCsv(twoOtaLayout()));
const base: NewDevice = {
  mac: "24:0A:C4:12:34:56",
  chip: "esp32",
  partitionTable: csv,
  flashEncryptionKey: keys.feEsp32(),
  now: new Date("2026-01-01T00:00:00Z"),
};
const code = (f: () => unknown) => {
  try {
    f();
    return "none";
  } catch (e) {
    return (e as { code?: string }).code;
  }
};

describe("device records", () => {
  it("derives the id from the MAC in any usual spelling, and nothing else", () => {
    for (const m of [
      "24:0a:c4:12:34:56",
      "24-0A-C4-12-34-56",
      "240ac4123456",
      " 24:0a:c4:12:34:56 ",
    ])
      expect(deviceIdFromMac(m)).toBe("240ac4123456");
    for (const m of [
      "24:0a:c4:12:34",
      "24:0a:c4:12:34:56:78",
      "zz:0a:c4:12:34:56",
      "../../etc",
      "",
    ])
      expect(deviceIdFromMac(m)).toBeNull();
    fc.assert(
      fc.property(fc.string(), (s) => {
        const id = deviceIdFromMac(s);
        return id === null || /^[0-9a-f]{12}$/.test(id);
      }),
    );
  });

  it("stores the binary table, its hash, the key and FLASH_CRYPT_CONFIG (0xF by default)", () => {
    const r = makeDeviceRecord(base);
    expect(r.deviceId).toBe("240ac4123456");
    expect(Buffer.from(r.partitionTable, "hex")).toEqual(
      Buffer.from(encodePartitionTable(twoOtaLayout())),
    );
    // CSV and binary input give the same record.
    expect(
      makeDeviceRecord({ ...base, partitionTable: encodePartitionTable(twoOtaLayout()) }),
    ).toEqual(r);
    expect(r.flashEncryption.flashCryptConf).toBe(0xf);
    expect(deviceOtaSlots(r).map((p) => [p.label, p.offset])).toEqual([
      ["ota_0", 0x10000],
      ["ota_1", 0x160000],
    ]);
    expect(deviceCipherOptions(r)).toMatchObject({ scheme: "esp32", flashCryptConf: 0xf });
    const s3 = makeDeviceRecord({ ...base, chip: "esp32s3", flashEncryptionKey: keys.feXts512() });
    expect(s3.flashEncryption.flashCryptConf).toBeUndefined();
    expect(deviceCipherOptions(s3)).toMatchObject({ scheme: "xts" });
    expect(defaultFlashKeyBits("esp32s3")).toBe(512);
    expect(defaultFlashKeyBits("esp32")).toBe(256);
    expect(defaultFlashKeyBits("esp32c3")).toBe(256);
  });

  it("refuses bad input with its own code", () => {
    expect(code(() => makeDeviceRecord({ ...base, mac: "nope" }))).toBe("E_DEVICE_MAC");
    expect(code(() => makeDeviceRecord({ ...base, chip: "esp99" }))).toBe("E_CHIP_UNKNOWN");
    expect(code(() => makeDeviceRecord({ ...base, flashEncryptionKey: keys.feXts512() }))).toBe(
      "E_DEVICE_FLASH_KEY",
    );
    expect(code(() => makeDeviceRecord({ ...base, flashCryptConf: 16 }))).toBe(
      "E_DEVICE_FLASH_CRYPT_CONF",
    );
    expect(
      code(() =>
        makeDeviceRecord({
          ...base,
          chip: "esp32s3",
          flashEncryptionKey: keys.feXts512(),
          flashCryptConf: 3,
        }),
      ),
    ).toBe("E_DEVICE_FLASH_CRYPT_CONF");
    const noOta = new TextEncoder().encode(
      "nvs, data, nvs, 0x9000, 0x6000\nfactory, app, factory, 0x10000, 1M\n",
    );
    expect(code(() => makeDeviceRecord({ ...base, partitionTable: noOta }))).toBe(
      "E_DEVICE_NO_OTA_SLOT",
    );
  });

  it("issues counters that only grow, reusing one for a rerun of the same release", () => {
    const r0 = makeDeviceRecord(base);
    const a = nextReleaseCounter(r0, "app-1.0.0-aaaaaaaaaaaa");
    expect(a.counter).toBe(1);
    expect(nextReleaseCounter(a.record, "app-1.0.0-aaaaaaaaaaaa")).toEqual({
      counter: 1,
      record: a.record,
    });
    const b = nextReleaseCounter(a.record, "app-1.0.1-bbbbbbbbbbbb");
    expect(b.counter).toBe(2);
    // Going back to an older release is a new issue: never a lower counter.
    expect(nextReleaseCounter(b.record, "app-1.0.0-aaaaaaaaaaaa").counter).toBe(3);
  });

  it("never shows the key in a listing", () => {
    const r = makeDeviceRecord(base);
    const line = describeDevice(r);
    expect(line).toContain("240ac4123456");
    expect(line).toContain("fe-key=256-bit");
    expect(line).not.toContain(r.flashEncryption.key);
  });
});

describe("registry directory", () => {
  it("is owner-only, one file per device, and refuses to overwrite a device", () => {
    const dir = join(root, "reg");
    const reg = openRegistry(dir, { create: true });
    const r = makeDeviceRecord(base);
    reg.add(r);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "devices")).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "devices", "240ac4123456.json")).mode & 0o777).toBe(0o600);
    expect(code(() => reg.add(r))).toBe("E_DEVICE_EXISTS");
    expect(reg.get("240ac4123456")).toEqual(r);
    reg.update({ ...r, releaseCounter: 5 });
    expect(openRegistry(dir).get("240ac4123456").releaseCounter).toBe(5);
    expect(reg.list().map((d) => d.deviceId)).toEqual(["240ac4123456"]);
    reg.remove("240ac4123456");
    expect(reg.list()).toEqual([]);
    expect(code(() => reg.remove("240ac4123456"))).toBe("E_DEVICE_UNKNOWN");
    expect(code(() => reg.get("../../etc/passwd"))).toBe("E_DEVICE_UNKNOWN");
  });

  it("reports a missing registry and damaged records with their codes", () => {
    expect(code(() => openRegistry(join(root, "nothing-here")))).toBe("E_REGISTRY_MISSING");
    const dir = join(root, "reg2");
    const reg = openRegistry(dir, { create: true });
    reg.add(makeDeviceRecord(base));
    const path = join(dir, "devices", "240ac4123456.json");
    const rec = JSON.parse(readFileSync(path, "utf8"));
    writeFileSync(path, JSON.stringify({ ...rec, releaseCounter: -1 }));
    expect(code(() => reg.get("240ac4123456"))).toBe("E_REGISTRY_CORRUPT");
    writeFileSync(path, "{");
    expect(code(() => reg.list())).toBe("E_REGISTRY_CORRUPT");
  });

  it("refuses a record or a devices/ directory other users can read, as the keyring does", () => {
    const dir = join(root, "reg3");
    const reg = openRegistry(dir, { create: true });
    reg.add(makeDeviceRecord(base));
    const path = join(dir, "devices", "240ac4123456.json");
    for (const mode of [0o644, 0o640, 0o604]) {
      chmodSync(path, mode);
      let err: unknown;
      try {
        reg.get("240ac4123456");
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: "E_REGISTRY_PERMISSIONS" });
      expect((err as Error).message).toContain(`chmod 600 ${path}`);
      expect(code(() => reg.list())).toBe("E_REGISTRY_PERMISSIONS");
    }
    chmodSync(path, 0o600);
    expect(reg.get("240ac4123456").deviceId).toBe("240ac4123456");
    chmodSync(join(dir, "devices"), 0o755);
    expect(code(() => openRegistry(dir))).toBe("E_REGISTRY_PERMISSIONS");
    chmodSync(join(dir, "devices"), 0o700);
    expect(code(() => openRegistry(dir))).toBe("none");
  });

  it("writes records durably, at 0600 whatever the umask, leaving no temporary file", () => {
    const old = process.umask(0);
    try {
      const dir = join(root, "reg4");
      const reg = openRegistry(dir, { create: true });
      reg.add(makeDeviceRecord(base));
      reg.update({ ...reg.get("240ac4123456"), releaseCounter: 9 });
      expect(statSync(join(dir, "devices", "240ac4123456.json")).mode & 0o777).toBe(0o600);
      expect(readdirSync(join(dir, "devices"))).toEqual(["240ac4123456.json"]);
      const other = makeDeviceRecord({ ...base, mac: "24:0A:C4:00:00:01" });
      reg.add(other);
      reg.updateMany([
        { ...reg.get("240ac4123456"), releaseCounter: 10 },
        { ...other, releaseCounter: 3 },
      ]);
      expect(reg.list().map((d) => d.releaseCounter)).toEqual([3, 10]);
      expect(readdirSync(join(dir, "devices")).sort()).toEqual([
        "240ac4000001.json",
        "240ac4123456.json",
      ]);
      // Only records that exist: a typo must not register a device without its key.
      expect(code(() => reg.updateMany([{ ...other, deviceId: "240ac4999999" }]))).toBe(
        "E_DEVICE_UNKNOWN",
      );
    } finally {
      process.umask(old);
    }
  });
});
