import { describe, expect, it } from "vitest";
import { crc32 } from "../../src/bytes.js";
import {
  decodeOtadata,
  encodeOtadata,
  encodeOtaEntry,
  OTA_STATE,
  OTADATA_SIZE,
  otaEntry,
} from "../../src/esp/otadata.js";
import { type DeviceState, SimDevice } from "../../src/sim/device.js";
import { ESP_ERR } from "../../src/sim/esp-err.js";
import { applyPreEncryptedUpdate } from "../../src/sim/ota-update.js";
import { encryptForAddress, signImage } from "../../src/sim/provision.js";
import { app, keys, makeDevice, otaImage, security } from "../helpers/sim.js";

const OTA0 = 0x10000;
const OTA1 = 0x160000;

function running(d: SimDevice | DeviceState) {
  const s = "kind" in d ? d : d.state;
  if (s.kind !== "running") throw new Error(`device is ${s.kind}`);
  return s;
}

function otadataOf(d: SimDevice) {
  const spi = d.spi;
  return decodeOtadata(spi.read(0xd000, OTADATA_SIZE, spi.encryptionEnabled));
}

describe.each(["esp32", "esp32s3"] as const)("%s with secure boot and flash encryption", (chip) => {
  const sec = security(chip);

  it("boots the provisioned app from ota_0 and writes the initial otadata entry", () => {
    const d = makeDevice(chip, sec);
    const s = running(d.powerOn());
    expect(s.partition.label).toBe("ota_0");
    expect(s.app?.version).toBe("1.0.0");
    expect(d.uart.lines).toContain(
      d.uart.lines.find((l) => l.includes("Loaded app from partition at offset 0x10000")),
    );
    expect(d.uart.lines.some((l) => l.includes("Set actual ota_seq=1 in otadata[0]"))).toBe(true);
    const [c0] = otadataOf(d);
    expect(c0.seq).toBe(1);
    expect(c0.state).toBe(OTA_STATE.VALID);
  });

  it("keeps only ciphertext in the cells; the cache view is the signed plaintext", () => {
    const d = makeDevice(chip, sec);
    // (RSA-PSS signatures are randomized, so compare the image the signature covers.)
    const plain = app(chip, "1.0.0");
    expect(d.spi.readDecrypted(OTA0, plain.length)).toEqual(plain);
    expect(d.spi.readRaw(OTA0, 64)).not.toEqual(plain.subarray(0, 64));
  });

  it("an update signed then encrypted for ota_1 boots, then confirms itself VALID", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const r = applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "2.0.0"), OTA1));
    expect(r).toMatchObject({ ok: true });
    const s = running(d);
    expect(s.partition.label).toBe("ota_1");
    expect(s.app?.version).toBe("2.0.0");
    expect(s.bootState).toBe(OTA_STATE.PENDING_VERIFY);
    const [, c1] = otadataOf(d);
    expect(c1.seq).toBe(2);
    expect(c1.state).toBe(OTA_STATE.VALID);
  });

  it("classic mistake: an image encrypted for 0x10000 written at 0x160000 is refused, and never boots", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const wrong = otaImage(chip, sec, app(chip, "2.0.0"), OTA0);
    const r = applyPreEncryptedUpdate(d, wrong);
    expect(r).toMatchObject({
      ok: false,
      step: "set-boot",
      err: ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED,
    });
    expect(r.ok || r.message).toContain("invalid magic byte");
    expect(running(d).app?.version).toBe("1.0.0");
    // A host that bypasses the check and points otadata at the slot anyway: the bootloader
    // refuses the image with a log line that says why, and falls back to ota_0.
    const spi = d.spi;
    spi.erase(0xd000 + 0x1000, 0x1000);
    spi.write(0xd000 + 0x1000, encodeOtaEntry(otaEntry(2, OTA_STATE.NEW)), true);
    const s = running(d.reset());
    expect(s.partition.label).toBe("ota_0");
    const log = d.uart.sinceLastReset().join("\n");
    expect(log).toContain("image at 0x160000 has invalid magic byte");
    expect(log).toContain("OTA app partition slot 1 is not bootable");
  });

  it("classic mistake: an image signed after it was encrypted fails secure boot", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const encrypted = encryptForAddress(chip, sec.flashEncryption, OTA1, app(chip, "2.0.0"));
    const signedCiphertext = signImage(encrypted, sec.secureBoot);
    const r = applyPreEncryptedUpdate(d, signedCiphertext);
    expect(r).toMatchObject({
      ok: false,
      step: "set-boot",
      err: ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED,
    });
    expect(d.ota.lastCheck?.code).toMatch(/^E_SIG_/);
    expect(running(d).app?.version).toBe("1.0.0");
  });

  it("a crash-looping new app rolls back: PENDING_VERIFY becomes ABORTED, the old app runs", () => {
    const d = makeDevice(chip, sec, { behaviours: { "2.0.0": "crash-loop" } });
    d.powerOn();
    const r = applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "2.0.0"), OTA1));
    expect(r.ok).toBe(true);
    const s = running(d);
    expect(s.app?.version).toBe("1.0.0");
    expect(d.bootCount).toBe(2);
    expect(otadataOf(d)[1].state).toBe(OTA_STATE.ABORTED);
    expect(d.uart.lines.some((l) => l.startsWith("Guru Meditation Error"))).toBe(true);
  });

  it("an app that refuses its self-test marks itself INVALID and the old app runs", () => {
    const d = makeDevice(chip, sec, { behaviours: { "2.0.0": "refuses" } });
    d.powerOn();
    expect(applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "2.0.0"), OTA1)).ok).toBe(true);
    expect(running(d).app?.version).toBe("1.0.0");
    expect(otadataOf(d)[1].state).toBe(OTA_STATE.INVALID);
  });

  it("a hanging app stays PENDING_VERIFY; the next reset rolls back", () => {
    const d = makeDevice(chip, sec, { behaviours: { "2.0.0": "hang" } });
    d.powerOn();
    applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "2.0.0"), OTA1));
    expect(running(d).app?.version).toBe("2.0.0");
    expect(otadataOf(d)[1].state).toBe(OTA_STATE.PENDING_VERIFY);
    // A second update is refused while the running app is unconfirmed.
    const again = applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "3.0.0"), OTA0));
    expect(again).toMatchObject({ ok: false, err: ESP_ERR.ESP_ERR_OTA_ROLLBACK_INVALID_STATE });
    expect(running(d.reset("RTCWDT_RTC_RESET")).app?.version).toBe("1.0.0");
    expect(otadataOf(d)[1].state).toBe(OTA_STATE.ABORTED);
  });

  it("refuses to write the running slot", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const ota0 = d.partitions.find((p) => p.label === "ota_0")!;
    const r = applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "2.0.0"), OTA0), {
      slot: ota0,
    });
    expect(r).toMatchObject({ ok: false, err: ESP_ERR.ESP_ERR_OTA_PARTITION_CONFLICT });
  });

  it("survives a state file round trip", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    applyPreEncryptedUpdate(d, otaImage(chip, sec, app(chip, "2.0.0"), OTA1));
    const e = SimDevice.deserialize(d.serialize());
    expect(e.state.kind).toBe("off");
    expect(running(e.powerOn()).app?.version).toBe("2.0.0");
    expect(e.efuses.snapshot()).toEqual(d.efuses.snapshot());
  });
});

describe("rules that hold without security features too", () => {
  it("an otadata entry with a plain CRC-32 is ignored (the classic otadata mistake)", () => {
    const d = makeDevice("esp32", {});
    d.powerOn();
    // Put a valid app in ota_1 and point copy 1 at it with a plain zlib CRC-32 of the seq.
    const r = applyPreEncryptedUpdate(d, app("esp32", "2.0.0"), { restart: false });
    expect(r.ok).toBe(true);
    const seq = new Uint8Array([2, 0, 0, 0]);
    const bad = otaEntry(2, OTA_STATE.VALID);
    const spi = d.spi;
    spi.erase(0xd000 + 0x1000, 0x1000);
    const entry = encodeOtadata([
      otaEntry(0xffffffff, 0xffffffff),
      { ...bad, crc: crc32(seq) },
    ]).subarray(0x1000, 0x1020);
    spi.writeRaw(0xd000 + 0x1000, entry);
    const s = running(d.reset());
    // Copy 1 (seq 2 → ota_1, a good image) carries a plain CRC-32, so the bootloader ignores it
    // and copy 0 (seq 1 → ota_0) wins.
    expect(s.partition.label).toBe("ota_0");
    const [, c1] = otadataOf(d);
    expect(c1.crc).toBe(crc32(seq));
  });

  it("anti-rollback: a lower secure_version is refused and its slot erased", () => {
    const d = makeDevice(
      "esp32",
      {},
      { app: app("esp32", "1.0.0", 0x4000, 2), bootloader: { rollback: true, antiRollback: true } },
    );
    running(d.powerOn());
    expect(d.efuses.secureVersion).toBe(2);
    const r = applyPreEncryptedUpdate(d, app("esp32", "0.9.0", 0x4000, 1));
    expect(r).toMatchObject({
      ok: false,
      step: "set-boot",
      err: ESP_ERR.ESP_ERR_OTA_SMALL_SEC_VER,
    });
    expect(d.spi.readRaw(OTA1, 16)).toEqual(new Uint8Array(16).fill(0xff));
    const ok = applyPreEncryptedUpdate(d, app("esp32", "3.0.0", 0x4000, 3));
    expect(ok.ok).toBe(true);
    expect(running(d).app?.version).toBe("3.0.0");
    expect(d.efuses.secureVersion).toBe(3);
  });

  it("without rollback a crash-looping app loops forever", () => {
    const d = makeDevice(
      "esp32",
      {},
      {
        behaviours: { "2.0.0": "crash-loop" },
        bootloader: { rollback: false, antiRollback: false },
      },
    );
    d.powerOn();
    applyPreEncryptedUpdate(d, app("esp32", "2.0.0"));
    expect(d.state.kind).toBe("crash-loop");
  });

  it("a device with nothing bootable loops in reset printing its error", () => {
    const d = makeDevice("esp32", {});
    d.flash.eraseRange(OTA0, 0x10000);
    const s = d.powerOn();
    expect(s).toMatchObject({ kind: "no-app" });
    expect(d.uart.lines).toContain(
      d.uart.lines.find((l) => l.endsWith("No bootable app partitions in the partition table")),
    );
  });

  it("wrong signing key: secure boot V1 refuses the update", () => {
    const sec = security("esp32");
    const d = makeDevice("esp32", sec);
    d.powerOn();
    const other = { ...sec, secureBoot: { version: 1 as const, keys: [keys.sbv1Other()] } };
    const r = applyPreEncryptedUpdate(d, otaImage("esp32", other, app("esp32", "2.0.0"), OTA1));
    expect(r).toMatchObject({ ok: false, step: "set-boot" });
    expect(running(d).app?.version).toBe("1.0.0");
  });
});
