/**
 * The release build end to end against the simulator (issue 5 "Must show"): a release for several
 * devices (ESP32 classic with Secure Boot V1 + AES flash encryption, ESP32-S3 with Secure Boot V2
 * RSA + XTS-AES-256; keys from test/fixtures), every device's ciphertext for each slot written at
 * that slot boots the new version; written at the other slot it is refused and the device keeps
 * the old app. Also: manifests verify, counters only grow, reruns skip finished work, and the
 * worker-thread path writes the same bytes as the single-thread path.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodePartitionTable } from "../../src/esp/partition-table.js";
import { type BuildOptions, buildRelease } from "../../src/release/build.js";
import { generateManifestKey } from "../../src/release/keyring.js";
import { type Keyring, keyringTrustPolicy } from "../../src/release/keyring-fs.js";
import { type SignedManifest, verifyManifest } from "../../src/release/manifest.js";
import { deviceOtaSlots, makeDeviceRecord } from "../../src/release/registry.js";
import { type DeviceRegistry, openRegistry } from "../../src/release/registry-fs.js";
import type { SimChip } from "../../src/sim/efuse.js";
import { applyPreEncryptedUpdate } from "../../src/sim/ota-update.js";
import { provisionDevice } from "../../src/sim/provision.js";
import { makeSyntheticApp } from "../../src/sim/synthetic-app.js";
import { keys, oracleLayout } from "../helpers/sim.js";

// factory at 0x10000, ota_0 at 0x110000, ota_1 at 0x210000: the device runs the factory app, so
// both OTA slots can be written and each ciphertext tried at its own slot and at the other one.
const layout = oracleLayout(2, true);
const tableBin = encodePartitionTable(layout);

const DEVICES: { mac: string; chip: SimChip; key: () => Uint8Array; conf?: number }[] = [
  { mac: "24:0a:c4:00:00:01", chip: "esp32", key: keys.feEsp32 },
  // Same key, other FLASH_CRYPT_CONFIG: a different cipher, so the registry's conf must be used.
  { mac: "24:0a:c4:00:00:02", chip: "esp32", key: keys.feEsp32, conf: 0x3 },
  { mac: "34:85:18:00:00:03", chip: "esp32s3", key: keys.feXts512 },
];
const sbFor = (chip: SimChip) =>
  chip === "esp32"
    ? { version: 1 as const, keys: [keys.sbv1()] }
    : { version: 2 as const, keys: [keys.rsa()] };

function keyringFor(chip: SimChip): Keyring {
  return {
    dir: "(in memory)",
    secureBoot: sbFor(chip),
    manifestKeys: [generateManifestKey("ecdsa-p256"), generateManifestKey("ed25519")],
    threshold: 2,
    revoked: [],
  };
}

const appOf = (chip: SimChip, version: string, secureVersion = 1) =>
  makeSyntheticApp({ chip, project: "fleet", version, secureVersion, size: 0x6000 });

let root: string;
let registry: DeviceRegistry;
const keyrings = { esp32: keyringFor("esp32"), esp32s3: keyringFor("esp32s3") };
const NOW = new Date("2026-11-23T12:00:00Z");

function opts(chip: SimChip, out: string, extra: Partial<BuildOptions> = {}): BuildOptions {
  return {
    keyring: keyrings[chip],
    registry,
    app: appOf(chip, "2.0.0"),
    version: "2.0.0",
    devices: "all",
    baseUrl: "https://updates.example.com/r/2.0.0/",
    outDir: join(root, out),
    expiresInMs: 30 * 86_400_000,
    jobs: 1,
    now: () => NOW,
    ...extra,
  };
}

function manifestOf(out: string, id: string): SignedManifest {
  return JSON.parse(readFileSync(join(root, out, id, "manifest.json"), "utf8")) as SignedManifest;
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "release-build-"));
  registry = openRegistry(join(root, "registry"), { create: true });
  for (const d of DEVICES)
    registry.add(
      makeDeviceRecord({
        mac: d.mac,
        chip: d.chip,
        partitionTable: tableBin,
        flashEncryptionKey: d.key(),
        ...(d.conf !== undefined ? { flashCryptConf: d.conf } : {}),
        secureVersion: 1,
        now: NOW,
      }),
    );
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("release build", () => {
  it("builds per device and slot; each ciphertext boots at its slot and is refused at the other", async () => {
    const s32 = await buildRelease(opts("esp32", "out32"));
    const s3 = await buildRelease(opts("esp32s3", "out-s3", { jobs: 2 }));
    expect(s32.built).toEqual(["240ac4000001", "240ac4000002"]);
    expect(s32.excluded).toEqual([{ deviceId: "348518000003", chip: "esp32s3" }]);
    expect(s3.built).toEqual(["348518000003"]);

    for (const d of DEVICES) {
      const id = d.mac.replaceAll(":", "");
      const out = d.chip === "esp32" ? "out32" : "out-s3";
      const m = manifestOf(out, id);
      expect(m.signed.variants.map((v) => v.slot)).toEqual(["ota_0", "ota_1"]);
      const slots = deviceOtaSlots(registry.get(id));
      for (const v of m.signed.variants) {
        const ct = new Uint8Array(readFileSync(join(root, out, id, `${v.slot}.bin`)));
        expect(ct.length).toBe(v.size);
        expect(v.urls).toEqual([`https://updates.example.com/r/2.0.0/${id}/${v.slot}.bin`]);
        const here = slots.find((p) => p.label === v.slot)!;
        const other = slots.find((p) => p.label !== v.slot)!;
        expect(here.offset).toBe(v.offset);

        const provision = () => {
          const dev = provisionDevice({
            chip: d.chip,
            flashSize: 8 << 20,
            partitions: layout,
            app: appOf(d.chip, "1.0.0"),
            flashEncryption: {
              key: d.key(),
              ...(d.conf !== undefined ? { flashCryptConf: d.conf } : {}),
            },
            secureBoot: sbFor(d.chip),
            secureVersion: 1,
          });
          dev.powerOn();
          return dev;
        };
        const good = provision();
        expect(applyPreEncryptedUpdate(good, ct, { slot: here })).toMatchObject({ ok: true });
        expect(good.state).toMatchObject({
          kind: "running",
          partition: { label: v.slot },
          app: { version: "2.0.0" },
        });

        const wrong = provision();
        const r = applyPreEncryptedUpdate(wrong, ct, { slot: other });
        expect(r).toMatchObject({ ok: false, step: "set-boot" });
        expect(wrong.state).toMatchObject({
          kind: "running",
          partition: { label: "factory" },
          app: { version: "1.0.0" },
        });
      }
    }
  });

  it("signs manifests the gateway's policy accepts, with the registry's counter", () => {
    for (const [chip, out, id] of [
      ["esp32", "out32", "240ac4000001"],
      ["esp32s3", "out-s3", "348518000003"],
    ] as const) {
      const m = manifestOf(out, id);
      const check = verifyManifest(m, keyringTrustPolicy(keyrings[chip]), {
        now: NOW,
        deviceId: id,
        chip,
        minCounter: 1,
      });
      expect(check).toMatchObject({ ok: true });
      expect(m.signed).toMatchObject({
        project: "fleet",
        version: "2.0.0",
        secureVersion: 1,
        counter: 1,
        partitionTableSha256: registry.get(id).partitionTableSha256,
        expiresAt: "2026-12-23T12:00:00.000Z",
      });
      expect(registry.get(id).releaseCounter).toBe(1);
    }
    const index = JSON.parse(readFileSync(join(root, "out32", "index.json"), "utf8"));
    expect(index.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual([
      "240ac4000001",
      "240ac4000002",
    ]);
  });

  it("worker threads write the same bytes as one thread (V1 signatures are deterministic)", async () => {
    await buildRelease(opts("esp32", "out32-workers", { jobs: 2 }));
    for (const id of ["240ac4000001", "240ac4000002"])
      for (const slot of ["ota_0", "ota_1"])
        expect(readFileSync(join(root, "out32-workers", id, `${slot}.bin`))).toEqual(
          readFileSync(join(root, "out32", id, `${slot}.bin`)),
        );
  });

  it("a rerun skips finished devices, rebuilds a damaged one, and keeps the counter", async () => {
    const again = await buildRelease(opts("esp32", "out32"));
    expect(again.built).toEqual([]);
    expect(again.skipped).toEqual(["240ac4000001", "240ac4000002"]);

    const victim = join(root, "out32", "240ac4000002", "ota_1.bin");
    const bytes = readFileSync(victim);
    bytes[100] = (bytes[100] ?? 0) ^ 1;
    writeFileSync(victim, bytes);
    const repaired = await buildRelease(opts("esp32", "out32"));
    expect(repaired.built).toEqual(["240ac4000002"]);
    expect(repaired.skipped).toEqual(["240ac4000001"]);
    expect(manifestOf("out32", "240ac4000002").signed.counter).toBe(1);
    expect(registry.get("240ac4000002").releaseCounter).toBe(1);
  });

  it("a new release gets the next counter, persisted in the registry", async () => {
    const o = opts("esp32", "out32-201", { app: appOf("esp32", "2.0.1"), version: "2.0.1" });
    await buildRelease(o);
    expect(manifestOf("out32-201", "240ac4000001").signed.counter).toBe(2);
    expect(registry.get("240ac4000001").releaseCounter).toBe(2);
    // The older release rebuilt later does not lower it.
    rmSync(join(root, "out32"), { recursive: true });
    await buildRelease(opts("esp32", "out32"));
    expect(manifestOf("out32", "240ac4000001").signed.counter).toBe(3);
  });

  it("refuses apps that a device would refuse, each with its own code", async () => {
    const fail = (o: BuildOptions) =>
      buildRelease(o).then(
        () => "built",
        (e) => e.code,
      );
    expect(await fail(opts("esp32", "x", { version: "9.9.9" }))).toBe("E_RELEASE_VERSION_MISMATCH");
    expect(await fail(opts("esp32", "x", { app: appOf("esp32", "2.0.0", 0) }))).toBe(
      "E_RELEASE_SECURE_VERSION",
    );
    expect(await fail(opts("esp32", "x", { devices: ["348518000003"] }))).toBe(
      "E_RELEASE_CHIP_MISMATCH",
    );
    expect(await fail(opts("esp32s3", "x", { keyring: keyrings.esp32 }))).toBe(
      "E_RELEASE_SECURE_BOOT_SCHEME",
    );
    expect(await fail(opts("esp32", "x", { app: new Uint8Array(64) }))).toBe(
      "E_RELEASE_APP_INVALID",
    );
    expect(await fail(opts("esp32", "x", { baseUrl: "ftp://x/" }))).toBe("E_RELEASE_BASE_URL");
    expect(
      await fail(
        opts("esp32", "x", {
          app: makeSyntheticApp({
            chip: "esp32",
            project: "fleet",
            version: "2.0.0",
            secureVersion: 1,
            size: 0x110000,
          }),
        }),
      ),
    ).toBe("E_RELEASE_SLOT_TOO_SMALL");
  });

  it("a device whose files cannot be written is E_RELEASE_WRITE, in one thread and in workers", async () => {
    for (const jobs of [1, 2]) {
      const out = join(root, `blocked-${jobs}`);
      mkdirSync(out, { recursive: true });
      // A file where the device's directory should be.
      writeFileSync(join(out, "240ac4000002"), "not a directory");
      const code = await buildRelease(opts("esp32", `blocked-${jobs}`, { jobs })).then(
        () => "built",
        (e) => e.code,
      );
      expect(code, `jobs ${jobs}`).toBe("E_RELEASE_WRITE");
    }
  });
});
