/**
 * Simulated fleets (src/sim/fleet.ts, src/sim/fleet-serve.ts): devices made to match a keyring
 * and registry take what `release build` writes for them; served on real ptys they answer
 * `esp-ota device info`, survive unplug/plug, and a power cut in the middle of an update.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { OTA_STATE } from "../../src/esp/otadata.js";
import { keyringTrustPolicy, loadKeyring, readTrustPolicy } from "../../src/release/keyring-fs.js";
import { type SignedManifest, verifyManifest } from "../../src/release/manifest.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import type { SimDevice } from "../../src/sim/device.js";
import { createFleet, type Fleet, loadFleet, loadFleetDevice } from "../../src/sim/fleet.js";
import { type FleetServer, POWER_CUT_OFF_MS, serveFleet } from "../../src/sim/fleet-serve.js";
import { applyPreEncryptedUpdate } from "../../src/sim/ota-update.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { codeOf, runCapture } from "../helpers/cli.js";
import { buildFleetRelease, makeTestFleet, removeTestFleet } from "../helpers/fleet.js";

const NOW = new Date("2026-11-23T12:00:00Z");
const BASE = "https://updates.example.com/fleet/";

function manifestOf(out: string, id: string): SignedManifest {
  return JSON.parse(readFileSync(join(out, id, "manifest.json"), "utf8")) as SignedManifest;
}

/** What a device runs: "VERSION on SLOT", or its state. */
function running(dev: SimDevice): string {
  const s = dev.state;
  return s.kind === "running" ? `${s.app?.version} on ${s.partition.label}` : s.kind;
}

describe("createFleet: 2 ESP32 + 1 ESP32-S3", () => {
  let fleet: Fleet;
  beforeAll(() => {
    fleet = makeTestFleet(3, {
      devices: [{}, { behaviours: { "2.0.0": "refuses" } }, { chip: "esp32s3" }],
      now: NOW,
    });
  });
  afterAll(() => removeTestFleet(fleet));

  it("makes devices that match the keyring, the registry and the trust policy", () => {
    // One key signs for every chip: the S3 verifies Secure Boot V2 with RSA-3072 only.
    expect(fleet.secureBoot).toBe("v2-rsa3072");
    expect(loadFleet(fleet.dir)).toEqual(fleet);
    expect(fleet.devices.map((d) => `${d.deviceId} ${d.chip}`)).toEqual([
      "240ac4fe0000 esp32",
      "240ac4fe0001 esp32",
      "240ac4fe0002 esp32s3",
    ]);
    const keyring = loadKeyring(fleet.keysDir);
    const trust = readTrustPolicy(fleet.trustFile);
    expect(trust).toEqual(keyringTrustPolicy(keyring));
    expect(trust.threshold).toBe(2);
    expect(trust.keys.map((k) => k.alg).sort()).toEqual(["ecdsa-p256", "ed25519"]);
    expect(statSync(fleet.trustFile).mode & 0o777).toBe(0o644);

    const registry = openRegistry(fleet.registryDir);
    expect(registry.list().map((r) => r.deviceId)).toEqual(fleet.devices.map((d) => d.deviceId));
    for (const d of fleet.devices) {
      const record = registry.get(d.deviceId);
      const dev = loadFleetDevice(d);
      expect(statSync(d.stateFile).mode & 0o777).toBe(0o600);
      // The registry holds the very key the device burned: `release build` encrypts with it.
      expect(record.flashEncryption.key).toBe(toHex(dev.efuses.flashEncryptionKey!));
      expect(record.secureVersion).toBe(1);
      expect(dev.efuses.flashEncryptionMode).toBe("release");
      expect(dev.efuses.secureBootVersion).toBe(2);
      expect(dev.efuses.secureVersion).toBe(1);
      expect(dev.spec.bootloader).toMatchObject({ rollback: true, antiRollback: true });
      dev.powerOn();
      expect(running(dev)).toBe("1.0.0 on ota_0");
      const part = dev.ota.esp_ota_get_running_partition();
      expect(dev.ota.esp_ota_get_state_partition(part).state).toBe(OTA_STATE.VALID);
    }
  });

  it("takes a release built from its registry; devices whose app fails roll back", async () => {
    const s3 = fleet.devices[2]!.deviceId;
    const out = { esp32: join(fleet.dir, "rel-esp32"), esp32s3: join(fleet.dir, "rel-s3") };
    const b32 = await buildFleetRelease(fleet, "2.0.0", {
      chip: "esp32",
      baseUrl: BASE,
      outDir: out.esp32,
      now: NOW,
    });
    expect(b32.built).toEqual(["240ac4fe0000", "240ac4fe0001"]);
    // The helper writes a behaviour for this version into the device's state file.
    const bs3 = await buildFleetRelease(fleet, "2.0.0", {
      chip: "esp32s3",
      baseUrl: BASE,
      outDir: out.esp32s3,
      behaviours: { [s3]: "crash-loop" },
      now: NOW,
    });
    expect(bs3.built).toEqual([s3]);

    const policy = readTrustPolicy(fleet.trustFile);
    const outcome: string[] = [];
    for (const d of fleet.devices) {
      const dir = out[d.chip];
      const m = manifestOf(dir, d.deviceId);
      expect(
        verifyManifest(m, policy, { now: NOW, deviceId: d.deviceId, chip: d.chip, minCounter: 1 }),
      ).toMatchObject({ ok: true });
      const dev = loadFleetDevice(d);
      dev.powerOn();
      const next = dev.ota.esp_ota_get_next_update_partition()!;
      const v = m.signed.variants.find((x) => x.slot === next.label)!;
      const ct = new Uint8Array(readFileSync(join(dir, d.deviceId, `${v.slot}.bin`)));
      expect(applyPreEncryptedUpdate(dev, ct)).toMatchObject({ ok: true });
      outcome.push(running(dev));
    }
    expect(outcome).toEqual(["2.0.0 on ota_1", "1.0.0 on ota_0", "1.0.0 on ota_0"]);
  });

  it("has anti-rollback on: a release below the eFuse secure_version is refused at build", async () => {
    const err = await buildFleetRelease(fleet, "0.9.0", {
      chip: "esp32",
      secureVersion: 0,
      baseUrl: BASE,
      outDir: join(fleet.dir, "rel-downgrade"),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "E_RELEASE_SECURE_VERSION" });
    // A release is for one chip: a mixed selection must name it.
    expect(() =>
      buildFleetRelease(fleet, "2.0.1", { baseUrl: BASE, outDir: join(fleet.dir, "x") }),
    ).toThrow(RangeError);
  });

  it("refuses to create over anything, and schemes a chip cannot verify", () => {
    expect(codeOf(() => createFleet({ dir: fleet.dir, devices: [{ chip: "esp32" }] }))).toBe(
      "E_FLEET_EXISTS",
    );
    const empty = join(fleet.dir, "..", "empty");
    mkdirSync(empty);
    expect(codeOf(() => loadFleet(empty))).toBe("E_FLEET_MISSING");
    expect(
      codeOf(() => createFleet({ dir: empty, devices: [{ chip: "esp32s3" }], secureBoot: "v1" })),
    ).toBe("E_SIM_PROVISION");
  });
});

const haveSocat = socatAvailable();
if (!haveSocat && process.env.CI === "true")
  throw new Error("socat is required in CI for fleet serving tests (apt-get install socat)");

describe.runIf(haveSocat)("serveFleet", () => {
  let fleet: Fleet;
  let server: FleetServer;
  const boots = new Map<string, number>();
  const info = async (path: string) => {
    const r = await runCapture(["device", "info", "--port", path, "--json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as { mac: string; secureBootVersion: number }) : r;
  };
  const until = async (cond: () => boolean) => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(cond()).toBe(true);
  };

  beforeAll(async () => {
    fleet = makeTestFleet(2, { appSize: 0x8000 });
    // Built before serving: the server holds the devices; the build touches only the registry.
    await buildFleetRelease(fleet, "2.0.0", {
      baseUrl: BASE,
      outDir: join(fleet.dir, "rel"),
      appSize: 0x8000,
    });
    server = await serveFleet(fleet.devices, {
      linkDir: join(fleet.dir, "links"),
      onLog: (id, line) => {
        if (line.includes("(POWERON_RESET)")) boots.set(id, (boots.get(id) ?? 0) + 1);
      },
    });
  });
  afterAll(async () => {
    await server?.close();
    removeTestFleet(fleet);
  });

  it("puts each device on its own pty link that `device info` talks to", async () => {
    expect(fleet.secureBoot).toBe("v1");
    for (const d of server.devices) {
      expect(d.path).toBe(join(fleet.dir, "links", `tty-${d.deviceId}`));
      expect(lstatSync(d.path).isSymbolicLink()).toBe(true);
      expect(await info(d.path)).toMatchObject({ mac: d.deviceId, secureBootVersion: 1 });
    }
  }, 10_000);

  it("unplug removes the link and powers the chip off; plug brings both back", async () => {
    const [a, b] = server.devices as [FleetServer["devices"][0], FleetServer["devices"][0]];
    await server.unplug(a.deviceId);
    expect(existsSync(a.path)).toBe(false);
    expect([a.plugged, a.powered, a.device.state.kind]).toEqual([false, false, "off"]);
    expect(await info(a.path)).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("E_UART_PORT"),
    });
    expect(b.powered).toBe(true);

    await server.plug(a.deviceId);
    expect(lstatSync(a.path).isSymbolicLink()).toBe(true);
    expect(await info(a.path)).toMatchObject({ mac: a.deviceId });
    expect(boots.get(a.deviceId)).toBe(2);
  }, 10_000);

  it("a power cut mid-update: the chip reboots, the host resumes, the new app runs", async () => {
    const d = server.devices[1]!;
    const before = boots.get(d.deviceId) ?? 0;
    server.powerCut(d.deviceId);
    expect(d.powered).toBe(false);
    await until(() => d.powered);
    expect(POWER_CUT_OFF_MS).toBeGreaterThan(0);

    // Half way through the 40th flash operation from now: inside the transfer's erases/writes.
    server.powerCut(d.deviceId, 40);
    const r = await runCapture([
      "device",
      "flash",
      "--port",
      d.path,
      "--offset",
      "0x100000",
      join(fleet.dir, "rel", d.deviceId, "ota_1.bin"),
    ]);
    expect(r.code).toBe(0);
    expect(boots.get(d.deviceId)).toBe(before + 2);
    expect(running(d.device)).toBe("2.0.0 on ota_1");

    await server.close();
    expect(existsSync(d.path)).toBe(false);
    const saved = loadFleetDevice(fleet.devices[1]!);
    saved.powerOn();
    expect(running(saved)).toBe("2.0.0 on ota_1");
  }, 20_000);
});
