import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sha256 } from "@noble/hashes/sha2.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { RealClock } from "../../src/sim/clock.js";
import type { SimDevice } from "../../src/sim/device.js";
import { FirmwareEndpoint } from "../../src/sim/firmware-device.js";
import { PacedLink } from "../../src/sim/paced-link.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { realTimers } from "../../src/uart/scheduler.js";
import { SerialBytePort } from "../../src/uart/serial-port.js";
import { openPtyPair, type PtyPair, socatAvailable } from "../../src/uart/socat.js";
import { runCapture } from "../helpers/cli.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";

const haveSocat = socatAvailable();
if (!haveSocat && process.env.CI === "true")
  throw new Error("socat is required in CI for `device` tests (apt-get install socat)");
if (!haveSocat) console.warn("device.test: socat is not installed; not run here");

describe.runIf(haveSocat)("esp-ota device", () => {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-device-"));
  const sec = security("esp32");
  let pair: PtyPair;
  let devPort: SerialBytePort;
  let dev: SimDevice;

  beforeAll(async () => {
    pair = await openPtyPair();
    dev = makeDevice("esp32", sec, { clock: new RealClock(), behaviours: { "3.0.0": "refuses" } });
    devPort = await SerialBytePort.open(pair.device, 115200);
    const ep = new FirmwareEndpoint(dev, new PacedLink(devPort, realTimers), realTimers, {
      rx: RX_CONFIGS.iram,
    });
    ep.powerOn();
    await (dev.clock as RealClock).settle();
  });
  afterAll(() => {
    devPort?.close();
    pair?.close();
  });

  it("info: chip, MAC, security, slots with the next one, otadata", async () => {
    const r = await runCapture(["device", "info", "--port", pair.host], dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("chip:             esp32");
    expect(r.stdout).toContain(`device id (MAC):  ${dev.id}`);
    expect(r.stdout).toContain("secure boot:      v1");
    expect(r.stdout).toMatch(/ota_1 +0x160000 +0x150000 +next/);
    expect(r.stdout).toContain("copy 0:");
  }, 15_000);

  it("flash refuses an offset that is not the next slot", async () => {
    const img = otaImage("esp32", sec, app("esp32", "2.0.0"), 0x10000);
    writeFileSync(join(dir, "wrong.bin"), img);
    const r = await runCapture(
      ["device", "flash", "--port", pair.host, "--offset", "0x10000", "wrong.bin"],
      dir,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("E_UART_SLOT_NOT_NEXT");
  }, 15_000);

  it("flash refuses a file that does not match --sha256", async () => {
    writeFileSync(join(dir, "x.bin"), Uint8Array.of(1, 2, 3));
    const r = await runCapture(
      [
        "device",
        "flash",
        "--port",
        pair.host,
        "--offset",
        "0x160000",
        "--sha256",
        "00".repeat(32),
        "x.bin",
      ],
      dir,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("E_UART_HASH_MISMATCH");
  });

  it("flash: transfer, activate, reboot, confirmed", async () => {
    const img = otaImage("esp32", sec, app("esp32", "2.0.0", 0x10000), 0x160000);
    writeFileSync(join(dir, "v2.bin"), img);
    const r = await runCapture(
      [
        "device",
        "flash",
        "--port",
        pair.host,
        "--offset",
        "0x160000",
        "--sha256",
        toHex(sha256(img)),
        "v2.bin",
      ],
      dir,
    );
    expect(r.stderr).toContain("transfer 100%");
    expect(r.stdout, r.stderr).toContain("confirmed: 2.0.0 runs from 0x160000");
    expect(r.code).toBe(0);
  }, 30_000);

  it("flash: a new app that fails its self-test is reported as a rollback (exit 1)", async () => {
    const img = otaImage("esp32", sec, app("esp32", "3.0.0", 0x8000), 0x10000);
    writeFileSync(join(dir, "v3.bin"), img);
    const r = await runCapture(
      ["device", "flash", "--port", pair.host, "--offset", "0x10000", "v3.bin"],
      dir,
    );
    expect(
      r.stderr
        .split("\n")
        .filter((l) => !l.startsWith("device: "))
        .join("\n"),
    ).toContain("E_UART_ROLLED_BACK");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("rolled back: the device runs 0x160000 again");
  }, 30_000);

  it("flash --json: the outcome as one JSON object, also for a rollback", async () => {
    const img = otaImage("esp32", sec, app("esp32", "3.0.0", 0x8000), 0x10000);
    writeFileSync(join(dir, "v3.bin"), img);
    const r = await runCapture(
      ["device", "flash", "--port", pair.host, "--offset", "0x10000", "--json", "v3.bin"],
      dir,
    );
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      outcome: "rolled-back",
      image: { path: "v3.bin", size: img.length, sha256: toHex(sha256(img)) },
      runningOffset: 0x160000,
      device: { chip: "esp32", running: { offset: 0x160000 } },
    });
  }, 30_000);
});
