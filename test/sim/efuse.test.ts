import { describe, expect, it } from "vitest";
import { Efuses } from "../../src/sim/efuse.js";
import { codeOf } from "../helpers/cli.js";

const mac = new Uint8Array([0x24, 0x0a, 0xc4, 1, 2, 3]);

describe("eFuses are one-way", () => {
  it("flash encryption is on for an odd counter, off for even", () => {
    const e = new Efuses("esp32", mac);
    expect(e.flashEncryptionEnabled).toBe(false);
    e.incrementFlashCryptCnt();
    expect(e.flashEncryptionEnabled).toBe(true);
    expect(e.flashEncryptionMode).toBe("development");
    e.incrementFlashCryptCnt();
    expect(e.flashEncryptionEnabled).toBe(false);
    expect(e.flashCryptCnt).toBe(0b11);
  });

  it("the ESP32 counter has 7 bits, the S3's 3", () => {
    const a = new Efuses("esp32", mac);
    for (let i = 0; i < 7; i++) a.incrementFlashCryptCnt();
    expect(codeOf(() => a.incrementFlashCryptCnt())).toBe("E_SIM_EFUSE_BURN");
    const b = new Efuses("esp32s3", mac);
    for (let i = 0; i < 3; i++) b.incrementFlashCryptCnt();
    expect(codeOf(() => b.incrementFlashCryptCnt())).toBe("E_SIM_EFUSE_BURN");
  });

  it("release mode write-protects the counter", () => {
    const e = new Efuses("esp32", mac);
    e.incrementFlashCryptCnt();
    e.enableReleaseMode();
    expect(e.flashEncryptionMode).toBe("release");
    expect(codeOf(() => e.incrementFlashCryptCnt())).toBe("E_SIM_EFUSE_BURN");
  });

  it("a key block is written once, with a length the chip accepts", () => {
    const e = new Efuses("esp32", mac);
    expect(codeOf(() => e.burnFlashEncryptionKey(new Uint8Array(64)))).toBe("E_SIM_EFUSE_BURN");
    e.burnFlashEncryptionKey(new Uint8Array(32).fill(7));
    expect(codeOf(() => e.burnFlashEncryptionKey(new Uint8Array(32)))).toBe("E_SIM_EFUSE_BURN");
  });

  it("FLASH_CRYPT_CONFIG can only gain bits", () => {
    const e = new Efuses("esp32", mac);
    e.burnFlashCryptConfig(0x3);
    e.burnFlashCryptConfig(0xf);
    expect(codeOf(() => e.burnFlashCryptConfig(0x1))).toBe("E_SIM_EFUSE_BURN");
    expect(codeOf(() => new Efuses("esp32s3", mac).burnFlashCryptConfig(0xf))).toBe(
      "E_SIM_EFUSE_BURN",
    );
  });

  it("secure_version is a thermometer that never goes down", () => {
    const e = new Efuses("esp32s3", mac);
    e.burnSecureVersion(3);
    expect(e.secureVersion).toBe(3);
    e.burnSecureVersion(1);
    expect(e.secureVersion).toBe(3);
    e.burnSecureVersion(16);
    expect(e.secureVersion).toBe(16);
    expect(codeOf(() => e.burnSecureVersion(17))).toBe("E_SIM_EFUSE_BURN");
    const esp32 = new Efuses("esp32", mac);
    esp32.burnSecureVersion(32);
    expect(esp32.secureVersion).toBe(32);
  });

  it("secure boot V1 and V2 exclude each other; V2 needs a digest; revocation only with several keys", () => {
    const e = new Efuses("esp32", mac);
    expect(codeOf(() => e.enableSecureBootV2())).toBe("E_SIM_EFUSE_BURN");
    e.enableSecureBootV1();
    expect(e.secureBootVersion).toBe(1);
    e.burnSbv2Digest(0, new Uint8Array(32));
    expect(codeOf(() => e.enableSecureBootV2())).toBe("E_SIM_EFUSE_BURN");
    expect(codeOf(() => e.revokeSbv2Key(0))).toBe("E_SIM_EFUSE_BURN");
    const s3 = new Efuses("esp32s3", mac);
    expect(codeOf(() => s3.enableSecureBootV1())).toBe("E_SIM_EFUSE_BURN");
    s3.burnSbv2Digest(2, new Uint8Array(32).fill(1));
    expect(codeOf(() => s3.burnSbv2Digest(2, new Uint8Array(32)))).toBe("E_SIM_EFUSE_BURN");
    s3.enableSecureBootV2();
    s3.revokeSbv2Key(2);
    expect(s3.sbv2Revoked).toEqual([false, false, true]);
  });

  it("snapshot/restore round-trips", () => {
    const e = new Efuses("esp32s3", mac);
    e.burnFlashEncryptionKey(new Uint8Array(64).fill(9));
    e.incrementFlashCryptCnt();
    e.burnSecureVersion(5);
    const r = Efuses.restore(e.snapshot());
    expect(r.snapshot()).toEqual(e.snapshot());
    expect(r.flashEncryptionKey).toEqual(new Uint8Array(64).fill(9));
    expect(codeOf(() => Efuses.restore({ ...e.snapshot(), mac: "zz" }))).toBe("E_SIM_STATE_FILE");
  });
});
