/**
 * The gateway's rescue path (agent/rescue.ts, docs/operations.md "Rescue"), in process over a
 * virtual UART link: a simulated ESP32 (Secure Boot V1, flash encryption) whose app crash-loops
 * and so never answers our protocol is in ROM download mode; the agent verifies a known-good
 * release's signed manifest, image and otadata, writes them raw through the ROM loader, and the
 * chip boots the C firmware's app, which reports the release's version over our protocol.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseAgentConfig } from "../../agent/config.js";
import { DeviceLink } from "../../agent/link.js";
import {
  type PortRescueSettings,
  RESCUE_DEFAULTS,
  type RescueOutcome,
  type RescueRequest,
  rescueSettingsOf,
  runRescue,
} from "../../agent/rescue.js";
import { toHex } from "../../src/bytes.js";
import { createFlashCipher } from "../../src/esp/flash-encryption.js";
import { decodeOtadata, OTA_STATE } from "../../src/esp/otadata.js";
import { encodePartitionTable } from "../../src/esp/partition-table.js";
import { rescueOtadata } from "../../src/release/build.js";
import {
  encodeTrustPolicy,
  generateManifestKey,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import { signManifest } from "../../src/release/manifest.js";
import { DEVICE_RECORD_FORMAT, type DeviceRecord } from "../../src/release/registry.js";
import type { ModemLines } from "../../src/rom/reset.js";
import { FirmwareEndpoint } from "../../src/sim/firmware-device.js";
import { attachRomLoader } from "../../src/sim/rom-loader.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { VirtualLink } from "../../src/sim/virtual-link.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { app, keys, makeDevice, otaImage, security, twoOtaLayout } from "../helpers/sim.js";
import { drive } from "../rom/helpers.js";

const OTA1 = 0x160000;
const OTA1_SIZE = 0x150000;
const OTADATA = 0xd000;
const DEVICE = "dev-rescue";
const NOW = new Date("2026-01-10T00:00:00Z");
const key = generateManifestKey("ed25519");
const trust = trustPolicyFromKeys([key], 1);
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const ON: PortRescueSettings = { enabled: true, resetLines: false };

/** The release side's output for ota_1, made once (signing and encrypting are the slow part). */
const release = (() => {
  let made: ReturnType<typeof makeRelease> | undefined;
  return () => {
    made ??= makeRelease();
    return made;
  };
})();

function makeRelease() {
  const sec = security("esp32");
  const image = otaImage("esp32", sec, app("esp32", "2.0.0", 0x8000), OTA1);
  const table = encodePartitionTable(twoOtaLayout());
  const record: DeviceRecord = {
    format: DEVICE_RECORD_FORMAT,
    deviceId: DEVICE,
    chip: "esp32",
    partitionTable: toHex(table),
    partitionTableSha256: sha(table),
    flashEncryption: { key: toHex(keys.feEsp32()) },
    secureVersion: 0,
    releaseCounter: 0,
    addedAt: "2026-01-01T00:00:00Z",
  };
  // What `esp-ota release build` writes as ota_1.otadata.bin: encrypted for 0xd000.
  const otadata = rescueOtadata(record).find((o) => o.slot === "ota_1")!.bytes;
  const manifest = (deviceId: string) =>
    JSON.stringify(
      signManifest(
        {
          format: 1,
          releaseId: "good-2",
          deviceId,
          chip: "esp32",
          partitionTableSha256: "0".repeat(64),
          project: "sim-test",
          version: "2.0.0",
          secureVersion: 0,
          counter: 3,
          issuedAt: "2026-01-01T00:00:00Z",
          expiresAt: "2026-02-01T00:00:00Z",
          variants: [
            {
              slot: "ota_1",
              offset: OTA1,
              size: image.length,
              sha256: sha(image),
              urls: ["http://mirror.invalid/ota_1.bin"],
            },
          ],
        },
        [key],
      ),
    );
  // 1.0.0 panics at every boot before it can answer a HELLO: the device is unreachable.
  const dev = () => makeDevice("esp32", sec, { behaviours: { "1.0.0": "crash-loop" } });
  const req: RescueRequest = {
    deviceId: DEVICE,
    chip: "esp32",
    manifestText: manifest(DEVICE),
    slot: "ota_1",
    image,
    otadata,
    otadataSha256: sha(otadata),
    otadataOffset: OTADATA,
    slotSize: OTA1_SIZE,
  };
  return { dev, req, manifest, image, record };
}

/**
 * `wired`: DTR drives GPIO0 and RTS drives EN (the lines the gateway's adapter has when
 * `resetLines: true`): EN rising with GPIO0 low enters the ROM, with GPIO0 high boots the app.
 * Otherwise the chip was strapped into download mode by hand and waits in the ROM.
 */
function setup(dev = release().dev(), wired = false) {
  const { req, manifest, image } = release();
  if (dev.state.kind === "off") dev.powerOn();
  expect(dev.state.kind).toBe("crash-loop");
  const sched = new VirtualScheduler();
  const link = new VirtualLink(sched);
  let booted: FirmwareEndpoint | undefined;
  let rom: ReturnType<typeof attachRomLoader> | undefined;
  const bootApp = () => {
    rom?.detach();
    booted = new FirmwareEndpoint(dev, link.device, sched, { rx: RX_CONFIGS.iram });
    booted.powerOn();
  };
  // FLASH_END "run user code": the chip leaves the ROM and boots what is in flash now.
  const enterRom = () => {
    rom = attachRomLoader(dev, link.device, { onExit: bootApp });
  };
  if (!wired) enterRom();
  let lines: ModemLines = { dtr: false, rts: false };
  const setSignals = async (l: ModemLines) => {
    if (lines.rts && !l.rts) (l.dtr ? enterRom : bootApp)();
    lines = l;
  };
  // The flash where a rescue writes, to show a refused one wrote nothing.
  const snapshot = () => [dev.flash.read(OTADATA, 0x2000), dev.flash.read(OTA1, image.length)];
  const before = snapshot();
  const deviceLink = DeviceLink.over("memory:rescue", link.host, {
    consoleBaud: 115200,
    transferBaud: 921600,
    timers: sched,
  });
  const run = (r: RescueRequest, s: PortRescueSettings) =>
    drive(
      sched,
      runRescue(r, s, trust, {
        rom: { port: link.host, ...(wired ? { setSignals } : {}) },
        timers: sched,
        now: () => NOW,
        readInfo: () => deviceLink.readInfo(),
      }),
      400_000,
    );
  return { dev, req, run, manifest, before, snapshot, booted: () => booted };
}

describe("rescue through the ROM loader", () => {
  it("rewrites a crash-looping device to a known-good slot; it boots and reports the version", async () => {
    const t = setup();
    const out = await t.run(t.req, ON);
    expect(out).toMatchObject({
      ok: true,
      version: "2.0.0",
      verified: true,
      running: { slot: "ota_1", offset: OTA1 },
      steps: [
        "checkPort",
        "verifyManifest",
        "selectSlot",
        "verifyImage",
        "verifyOtadata",
        "romWrite",
        "awaitBoot",
        "report",
      ],
    });
    expect(t.booted()?.up).toBe(true);
    expect(t.dev.state.kind === "running" && t.dev.state.app?.version).toBe("2.0.0");
  });

  it("with the reset lines wired, enters download mode and resets the chip itself (DTR/RTS)", async () => {
    const t = setup(release().dev(), true);
    const out = await t.run(t.req, { enabled: true, resetLines: true });
    expect(out).toMatchObject({ ok: true, version: "2.0.0", running: { slot: "ota_1" } });
    expect(t.dev.state.kind === "running" && t.dev.state.app?.version).toBe("2.0.0");
  });

  it("with the lines not wired, a chip that was not strapped into download mode is not reached", async () => {
    // resetLines: false on a board that is not in the ROM: nothing answers SYNC (the crash-looping
    // app prints nothing we could take for the ROM), so nothing is written.
    const t = setup(release().dev(), true);
    const out = await t.run(t.req, ON);
    expect(out).toMatchObject({ ok: false, step: "romWrite", code: "E_ROM_NO_ANSWER" });
    expect(t.snapshot()).toEqual(t.before);
  });

  const refusals: {
    name: string;
    change: (r: RescueRequest, m: (id: string) => string) => RescueRequest;
    settings?: PortRescueSettings;
    expect: Partial<Extract<RescueOutcome, { ok: false }>>;
  }[] = [
    {
      name: "off by default",
      change: (r) => r,
      settings: RESCUE_DEFAULTS,
      expect: { step: "checkPort", code: "E_AGENT_RESCUE_DISABLED" },
    },
    {
      name: "a manifest whose signature does not verify",
      change: (r) => ({ ...r, manifestText: r.manifestText.replace('"2.0.0"', '"2.0.1"') }),
      expect: { step: "verifyManifest", code: "E_MANIFEST_SIGNATURE_INVALID" },
    },
    {
      name: "a manifest for another device",
      change: (r, m) => ({ ...r, manifestText: m("someone-else") }),
      expect: { step: "verifyManifest", code: "E_MANIFEST_DEVICE_MISMATCH" },
    },
    {
      name: "a slot the manifest has no variant for",
      change: (r) => ({ ...r, slot: "ota_0" }),
      expect: { step: "selectSlot", code: "E_AGENT_SLOT_MISMATCH" },
    },
    {
      name: "an image that is not the manifest's",
      change: (r) => {
        const image = r.image.slice();
        image[100]! ^= 1;
        return { ...r, image };
      },
      expect: { step: "verifyImage", code: "E_DOWNLOAD_HASH_MISMATCH" },
    },
    {
      name: "otadata that is not the release side's",
      change: (r) => {
        const otadata = r.otadata.slice();
        otadata[0]! ^= 1;
        return { ...r, otadata };
      },
      expect: { step: "verifyOtadata", code: "E_AGENT_RESCUE_OTADATA" },
    },
  ];

  // The refusals write nothing, so they can share one device (each checks its flash is unchanged).
  let shared: ReturnType<typeof release>["dev"] extends () => infer D ? D : never;
  for (const row of refusals)
    it(`refuses ${row.name} before writing anything`, async () => {
      shared ??= release().dev();
      const t = setup(shared);
      const out = await t.run(row.change(t.req, t.manifest), row.settings ?? ON);
      expect(out).toMatchObject({ ok: false, ...row.expect });
      expect(t.snapshot()).toEqual(t.before);
      expect(t.dev.state.kind).toBe("crash-loop");
    });
});

describe("the release side's rescue otadata (src/release/build.ts rescueOtadata)", () => {
  it("per slot: the whole partition, one entry selecting that slot, encrypted for 0xd000", () => {
    const { record } = release();
    const made = rescueOtadata(record);
    expect(made.map((m) => [m.slot, m.file, m.bytes.length])).toEqual([
      ["ota_0", "ota_0.otadata.bin", 0x2000],
      ["ota_1", "ota_1.otadata.bin", 0x2000],
    ]);
    const cipher = createFlashCipher({ scheme: "esp32", key: keys.feEsp32(), flashCryptConf: 0xf });
    made.forEach((m, i) => {
      const [a, b] = decodeOtadata(cipher.decrypt(0xd000, m.bytes));
      expect([a.seq, a.state, b.seq]).toEqual([i + 1, OTA_STATE.NEW, 0xffffffff]);
      // Ciphertext for its address only: decrypted at another address it is not otadata.
      expect(decodeOtadata(cipher.decrypt(0xe000, m.bytes))[0].seq).not.toBe(i + 1);
    });
  });
});

describe("rescue configuration (serial.ports[].rescue)", () => {
  const parse = (ports: string) =>
    parseAgentConfig(`trust:\n  policy: trust.json\nserial:\n  ports:\n${ports}`, "/etc/g.yaml", {
      readFile: () => encodeTrustPolicy(trust),
      isFile: () => true,
      env: {},
      hostname: "gw-test",
    });

  it("is off, with no reset lines, unless a port's selector turns it on", () => {
    const r = parse(
      "    - path: /dev/ttyUSB0\n    - path: /dev/ttyUSB1\n      rescue:\n        enabled: true\n        resetLines: true\n    - path: /dev/ttyUSB2\n      rescue:\n        enabled: true\n",
    );
    expect(r.problems.filter((p) => p.severity === "error")).toEqual([]);
    expect(r.config!.serial.ports.map(rescueSettingsOf)).toEqual([
      RESCUE_DEFAULTS,
      { enabled: true, resetLines: true },
      { enabled: true, resetLines: false },
    ]);
  });

  it("refuses an unknown key or a non-boolean under rescue", () => {
    const bad = parse("    - path: /dev/ttyUSB0\n      rescue:\n        enable: yes\n");
    expect(bad.config).toBeUndefined();
    const notBool = parse("    - path: /dev/ttyUSB0\n      rescue:\n        enabled: 1\n");
    expect(notBool.config).toBeUndefined();
  });
});
