/**
 * What the device itself refuses, whatever the gateway does (docs/security.md: arbitrary
 * software, wrong software, a compromised gateway, eavesdropping). Secure boot and flash
 * encryption are the last line: a gateway that skips every check of its own, or hands over the
 * bytes meant for another device, still cannot make a device run them.
 */
import { describe, expect, it } from "vitest";
import { encodeOtaEntry, OTA_STATE, otaEntry } from "../../src/esp/otadata.js";
import type { SimDevice } from "../../src/sim/device.js";
import type { SimChip } from "../../src/sim/efuse.js";
import { ESP_ERR } from "../../src/sim/esp-err.js";
import { applyPreEncryptedUpdate } from "../../src/sim/ota-update.js";
import { encryptForAddress, type SecureBootSetup, signImage } from "../../src/sim/provision.js";
import { app, keys, makeDevice, security } from "../helpers/sim.js";

const OTA1 = 0x160000;
const OTADATA = 0xd000;

const otherSigner = (chip: SimChip): SecureBootSetup =>
  chip === "esp32"
    ? { version: 1, keys: [keys.sbv1Other()] }
    : { version: 2, keys: [keys.rsaOther()] };

/** Another device's key of the same kind (flash-encryption keys are per device). */
const otherDeviceKey = (chip: SimChip) =>
  chip === "esp32"
    ? keys.feEsp32().map((b) => b ^ 0x5a)
    : keys.feXts512().map((b, i) => b ^ (i + 1));

function runningVersion(d: SimDevice): string | undefined {
  if (d.state.kind !== "running") throw new Error(`device is ${d.state.kind}`);
  return d.state.app?.version;
}

/**
 * What a host that bypasses esp_ota_set_boot_partition could do at most: write the bytes raw
 * into ota_1 and point otadata at it (an entry with ota_seq 2, encrypted as otadata is). The
 * bootloader must still refuse the slot and boot ota_0.
 */
function forceBoot(d: SimDevice, ciphertext: Uint8Array): string {
  const spi = d.spi;
  spi.erase(OTA1, Math.ceil(ciphertext.length / 0x1000) * 0x1000);
  spi.writeRaw(OTA1, ciphertext);
  spi.erase(OTADATA + 0x1000, 0x1000);
  spi.write(OTADATA + 0x1000, encodeOtaEntry(otaEntry(2, OTA_STATE.NEW)), true);
  d.reset();
  return d.uart.sinceLastReset().join("\n");
}

describe.each(["esp32", "esp32s3"] as const)("%s with secure boot and flash encryption", (chip) => {
  const sec = security(chip);
  const plain = app(chip, "6.6.6");

  it("an app signed with another secure boot key is refused at activation and at boot", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const forged = encryptForAddress(
      chip,
      sec.flashEncryption,
      OTA1,
      signImage(plain, otherSigner(chip)),
    );
    const r = applyPreEncryptedUpdate(d, forged);
    expect(r).toMatchObject({
      ok: false,
      step: "set-boot",
      err: ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED,
    });
    expect(d.ota.lastCheck?.code).toMatch(/^E_SIG_/);
    expect(runningVersion(d)).toBe("1.0.0");
    const log = forceBoot(d, forged);
    expect(runningVersion(d)).toBe("1.0.0");
    expect(d.state.kind === "running" && d.state.partition.label).toBe("ota_0");
    expect(log).toContain("OTA app partition slot 1 is not bootable");
  });

  it("an unsigned app, encrypted correctly for the slot, is refused at activation and at boot", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const unsigned = encryptForAddress(chip, sec.flashEncryption, OTA1, plain);
    const r = applyPreEncryptedUpdate(d, unsigned);
    expect(r).toMatchObject({
      ok: false,
      step: "set-boot",
      err: ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED,
    });
    const log = forceBoot(d, unsigned);
    expect(runningVersion(d)).toBe("1.0.0");
    expect(log).toContain("OTA app partition slot 1 is not bootable");
  });

  it("another device's ciphertext of a correctly signed app (same slot) does not decrypt to an app here", () => {
    const d = makeDevice(chip, sec);
    d.powerOn();
    const signed = signImage(plain, sec.secureBoot);
    const forOther = encryptForAddress(chip, { key: otherDeviceKey(chip) }, OTA1, signed);
    const r = applyPreEncryptedUpdate(d, forOther);
    expect(r).toMatchObject({
      ok: false,
      step: "set-boot",
      err: ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED,
    });
    expect(r.ok || r.message).toContain("invalid magic byte");
    const log = forceBoot(d, forOther);
    expect(runningVersion(d)).toBe("1.0.0");
    expect(log).toContain("image at 0x160000 has invalid magic byte");
    // Control: the same signed image encrypted with this device's key boots by the same forced
    // path, so the key was the only difference (and forceBoot does reach the bootloader's check).
    forceBoot(d, encryptForAddress(chip, sec.flashEncryption, OTA1, signed));
    expect(runningVersion(d)).toBe("6.6.6");
  });

  it("what crosses the network shows nothing of the app: no header, no descriptor strings, no plaintext block", () => {
    const signed = signImage(plain, sec.secureBoot);
    const wire = encryptForAddress(chip, sec.flashEncryption, OTA1, signed);
    expect(signed[0]).toBe(0xe9); // esp_image_header_t magic, in the plaintext
    expect(wire[0]).not.toBe(0xe9);
    const text = (b: Uint8Array) => Buffer.from(b).toString("latin1");
    expect(text(signed)).toContain("sim-test");
    expect(text(signed)).toContain("6.6.6");
    expect(text(wire)).not.toContain("sim-test");
    expect(text(wire)).not.toContain("6.6.6");
    // No 16-byte block of the signed image appears anywhere in the ciphertext (the synthetic app
    // is mostly repeated filler, so an unkeyed or ECB-like encoding would show it at once).
    const blocks = new Set<string>();
    for (let o = 0; o + 16 <= signed.length; o += 16)
      blocks.add(Buffer.from(signed.subarray(o, o + 16)).toString("hex"));
    let leaked = 0;
    for (let o = 0; o + 16 <= wire.length; o += 16)
      if (blocks.has(Buffer.from(wire.subarray(o, o + 16)).toString("hex"))) leaked++;
    expect(leaked).toBe(0);
  });
});
