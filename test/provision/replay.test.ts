import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { formatReplay, freshDevice, replayScript } from "../../src/provision/replay.js";
import { buildFiles, fixtureKeyPem } from "./fixtures.js";

const NAMES = {
  bootloader: "bootloader.bin",
  partitionTable: "partition-table.bin",
  app: "firmware_compiled.bin",
  otadata: "ota_data_initial.bin",
};

/** The report in issue 15: 16 manual steps, sign after encrypt, bootloader at 0x8000, counter last. */
const REPORT_V5 = `espsecure generate-flash-encryption-key my_flash_encryption_key.bin
espsecure generate-signing-key --version 2 --scheme rsa3072 secure_boot_signing_key.pem
espsecure digest-sbv2-public-key --keyfile secure_boot_signing_key.pem --output digest.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-key flash_encryption my_flash_encryption_key.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse FLASH_CRYPT_CONFIG 0xF
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0x8000 --output bootloader_encrypted.bin bootloader.bin
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0x8000 --output partition_table_encrypted.bin partition-table.bin
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0xd000 --output otadata_encrypted.bin ota_data_initial.bin
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0x10000 --output ota0_encrypted.bin firmware_compiled.bin
espsecure sign-data --version 2 --keyfile secure_boot_signing_key.pem --output bootloader_signed.bin bootloader_encrypted.bin
espsecure sign-data --version 2 --keyfile secure_boot_signing_key.pem --output ota0_signed.bin ota0_encrypted.bin
esptool --port "$PORT" --chip esp32 write-flash 0x1000 bootloader_signed.bin 0x8000 partition_table_encrypted.bin 0xd000 otadata_encrypted.bin 0x10000 ota0_signed.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-key secure_boot_v2 digest.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse ABS_DONE_1 1 DISABLE_DL_ENCRYPT 1 DISABLE_DL_DECRYPT 1 DISABLE_DL_CACHE 1 JTAG_DISABLE 1
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse UART_DOWNLOAD_DIS 1
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse FLASH_CRYPT_CNT 127
`;

/** The same steps put right: sign the plaintext, encrypt each signed file at its own address. */
const FIXED_V5 = `espsecure generate-flash-encryption-key my_flash_encryption_key.bin
espsecure generate-signing-key --version 2 --scheme rsa3072 secure_boot_signing_key.pem
espsecure digest-sbv2-public-key --keyfile secure_boot_signing_key.pem --output digest.bin
espsecure sign-data --version 2 --keyfile secure_boot_signing_key.pem --output bootloader_signed.bin bootloader.bin
espsecure sign-data --version 2 --keyfile secure_boot_signing_key.pem --output ota0_signed.bin firmware_compiled.bin
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0x1000 --output bootloader_encrypted.bin bootloader_signed.bin
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0x8000 --output partition_table_encrypted.bin partition-table.bin
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0xd000 --output otadata_encrypted.bin ota_data_initial.bin
espsecure encrypt-flash-data --keyfile my_flash_encryption_key.bin --address 0x10000 --output ota0_encrypted.bin ota0_signed.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-key flash_encryption my_flash_encryption_key.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse FLASH_CRYPT_CONFIG 0xF
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse FLASH_CRYPT_CNT 127
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse DISABLE_DL_ENCRYPT 1 DISABLE_DL_DECRYPT 1 DISABLE_DL_CACHE 1 JTAG_DISABLE 1
esptool --port "$PORT" --chip esp32 write-flash 0x1000 bootloader_encrypted.bin 0x8000 partition_table_encrypted.bin 0xd000 otadata_encrypted.bin 0x10000 ota0_encrypted.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-key secure_boot_v2 digest.bin
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse ABS_DONE_1 1
espefuse --port "$PORT" --chip esp32 --do-not-confirm write-protect-efuse RD_DIS
espefuse --port "$PORT" --chip esp32 --do-not-confirm burn-efuse UART_DOWNLOAD_DIS 1
`;

/** espsecure/espefuse/esptool v4: `.py` names and snake_case verbs. */
function toV4(script: string): string {
  return script
    .replace(/\bespsecure\b/g, "espsecure.py")
    .replace(/\bespefuse\b/g, "espefuse.py")
    .replace(/\besptool\b/g, "esptool.py")
    .replace(
      / (generate-flash-encryption-key|generate-signing-key|digest-sbv2-public-key|encrypt-flash-data|sign-data|burn-key|burn-efuse|write-flash|write-protect-efuse|do-not-confirm) /g,
      (_m, v: string) => ` ${v.replace(/-/g, "_")} `,
    )
    .replace(/--do_not_confirm/g, "--do-not-confirm");
}

/** A fixed flash-encryption key: with a random one the boot message varied one run in 256. */
const fixedFeKey = (bits: 128 | 256 | 512) =>
  Uint8Array.from({ length: bits / 8 }, (_, i) => (i * 37 + 11) & 0xff);

function replay(script: string) {
  return replayScript(script, {
    device: freshDevice("esp32", 4 << 20),
    files: buildFiles("esp32", NAMES),
    signingKeyPem: fixtureKeyPem,
    flashEncryptionKey: fixedFeKey,
  });
}

describe("sim replay of the issue's report", () => {
  for (const [syntax, script] of [
    ["v5", REPORT_V5],
    ["v4", toV4(REPORT_V5)],
  ] as const) {
    it(`explains every mistake (${syntax} syntax)`, () => {
      const r = replay(script);
      expect(r.booted).toBe(false);
      const by = (code: string) => r.diagnoses.filter((d) => d.code === code);
      expect(by("sign-ciphertext").map((d) => d.line)).toEqual([10, 11]);
      expect(by("sign-ciphertext")[1]!.message).toContain(
        "line 11 signs ota0_encrypted.bin, which is ciphertext (encrypted at line 9): the bootloader verifies the signature over the decrypted image, so sign firmware_compiled.bin first and encrypt the signed file",
      );
      const addr = by("wrong-address");
      expect(addr).toHaveLength(1);
      expect(addr[0]!.line).toBe(12);
      expect(addr[0]!.message).toContain(
        "at 0x1000, but line 6 encrypted it for 0x8000 (the partition table's offset)",
      );
      const refused = by("refused");
      expect(refused.map((d) => d.line)).toEqual([16]);
      expect(refused[0]!.message).toContain("download mode is disabled");
      const noFe = by("ciphertext-no-fe");
      expect(noFe[0]!.message).toContain("line 16, which burns it, was refused");
      expect(r.bootLog.join("\n")).toMatch(/invalid header/);
      // The eFuses show what was burned and nothing more.
      expect(r.device.efuses.flashCryptCnt).toBe(0);
      expect(r.device.efuses.downloadModeDisabled).toBe(true);
      expect(formatReplay(r).join("\n")).toContain("diagnoses:");
    });
  }

  for (const [syntax, script] of [
    ["v5", FIXED_V5],
    ["v4", toV4(FIXED_V5)],
  ] as const) {
    it(`boots the corrected version (${syntax} syntax)`, () => {
      const r = replay(script);
      expect(r.diagnoses.filter((d) => d.severity !== "risk")).toEqual([]);
      expect(r.steps.every((s) => s.result === "ok")).toBe(true);
      expect(r.booted).toBe(true);
      expect(r.device.efuses.secureBootVersion).toBe(2);
      expect(r.device.efuses.flashEncryptionMode).toBe("release");
    });
  }

  it("refuses what espefuse refuses: a key block burned twice, a bit cleared", () => {
    const r = replay(`espsecure generate-flash-encryption-key k.bin
espefuse --chip esp32 burn-key flash_encryption k.bin
espefuse --chip esp32 burn-key flash_encryption k.bin
espefuse --chip esp32 burn-efuse FLASH_CRYPT_CONFIG 0xF
espefuse --chip esp32 burn-efuse FLASH_CRYPT_CONFIG 0x3
`);
    expect(r.steps.map((s) => s.result)).toEqual(["ok", "ok", "refused", "ok", "refused"]);
    expect(r.steps[2]!.note).toContain("BLOCK1 is not empty");
    expect(r.steps[4]!.note).toContain("would clear bits");
  });

  it("flags plaintext written after encryption is on, and FLASH_CRYPT_CONFIG locked at 0", () => {
    const r = replay(`espsecure generate-flash-encryption-key k.bin
espefuse --chip esp32 burn-key flash_encryption k.bin
espefuse --chip esp32 write-protect-efuse FLASH_CRYPT_CONFIG
espefuse --chip esp32 burn-efuse FLASH_CRYPT_CNT 1
esptool --chip esp32 write-flash --force 0x10000 firmware_compiled.bin
`);
    const codes = r.diagnoses.map((d) => `${d.line}:${d.code}`);
    expect(codes).toContain("3:crypt-config-zero");
    expect(codes).toContain("5:plaintext-under-fe");
    expect(r.booted).toBe(false);
  });
});

describe("sim replay: layout, idf.py and the ESP32-S3", () => {
  it("idf.py flash writes the build's files at flasher_args.json's offsets; a bootloader past the table is named", () => {
    const files = buildFiles("esp32", {
      bootloader: "build/bootloader/bootloader.bin",
      partitionTable: "build/partition_table/partition-table.bin",
      app: "build/app.bin",
      otadata: "build/ota_data_initial.bin",
    });
    // A bootloader that grew to 30 KB (secure boot on): at 0x1000 it ends past 0x8000.
    const big = new Uint8Array(30 * 1024).fill(0x11);
    big.set(files.read("build/bootloader/bootloader.bin")!);
    files.write("build/bootloader/bootloader.bin", big);
    files.write(
      "build/flasher_args.json",
      new TextEncoder().encode(
        JSON.stringify({
          flash_files: {
            "0x1000": "bootloader/bootloader.bin",
            "0x8000": "partition_table/partition-table.bin",
            "0xd000": "ota_data_initial.bin",
            "0x10000": "app.bin",
          },
          bootloader: { offset: "0x1000", file: "bootloader/bootloader.bin" },
        }),
      ),
    );
    const r = replayScript(
      "idf.py -p /dev/ttyUSB0 bootloader-flash\nidf.py -p /dev/ttyUSB0 flash\n",
      {
        device: freshDevice("esp32", 4 << 20),
        files,
      },
    );
    expect(r.steps.map((s) => s.result)).toEqual(["ok", "ok"]);
    const d = r.diagnoses.find((x) => x.code === "bootloader-overlaps-table");
    expect(d?.line).toBe(2);
    expect(d?.message).toContain(
      "(30720 bytes) at 0x1000: it runs past the partition table at 0x8000",
    );
  });

  it("ESP32-S3: RD_DIS locked before the XTS key is refused; Secure Download Mode stops espefuse, not raw writes", () => {
    const files = buildFiles("esp32s3", NAMES);
    const r = replayScript(
      [
        "espsecure generate-flash-encryption-key --keylen 512 k.bin",
        "espefuse --chip esp32s3 write-protect-efuse RD_DIS",
        "espefuse --chip esp32s3 burn-key BLOCK_KEY0 k.bin XTS_AES_256_KEY",
        "espefuse --chip esp32s3 burn-efuse ENABLE_SECURITY_DOWNLOAD 1",
        "esptool --chip esp32s3 write-flash 0x10000 firmware_compiled.bin",
        "espefuse --chip esp32s3 burn-efuse SPI_BOOT_CRYPT_CNT 7",
        "esptool --chip esp32s3 write-flash 0x200000 firmware_compiled.bin",
        "esptool --chip esp32s3 write-flash --flash-size 4MB 0x200000 firmware_compiled.bin",
        "",
      ].join("\n"),
      { device: freshDevice("esp32s3", 4 << 20), files },
    );
    expect(r.steps.map((s) => s.result)).toEqual([
      "ok",
      "ok",
      "refused",
      "ok",
      "ok",
      "refused",
      "refused",
      "ok",
    ]);
    expect(r.steps[2]!.note).toContain("RD_DIS is write-protected");
    expect(r.steps[5]!.note).toContain("Secure Download Mode");
    // Past the ROM's 2 MB default without --flash-size (esp-idf#10959).
    expect(r.steps[6]!.note).toMatch(/FLASH_BEGIN at 0x200000/);
    expect(r.device.efuses.secureDownloadMode).toBe(true);
  });
});

describe("sim replay: secure boot keys", () => {
  it("names an app signed with a key whose digest is not burned, and an unsigned bootloader", () => {
    const files = buildFiles("esp32s3", NAMES);
    const other = readFileSync(
      new URL("../fixtures/sbv2/sbv2_rsa3072_other_key.pem", import.meta.url),
    );
    files.write("other.pem", new Uint8Array(other));
    files.write("signing.pem", new TextEncoder().encode(fixtureKeyPem("rsa3072")));
    const r = replayScript(
      [
        "espsecure digest-sbv2-public-key --keyfile signing.pem --output digest.bin",
        "espsecure sign-data --version 2 --keyfile other.pem --output app-signed.bin firmware_compiled.bin",
        "esptool --chip esp32s3 write-flash 0x0 bootloader.bin 0x8000 partition-table.bin 0x10000 app-signed.bin",
        "espefuse --chip esp32s3 burn-key BLOCK_KEY2 digest.bin SECURE_BOOT_DIGEST0",
        "espefuse --chip esp32s3 burn-efuse SECURE_BOOT_EN 1",
        "",
      ].join("\n"),
      { device: freshDevice("esp32s3", 4 << 20), files },
    );
    expect(r.booted).toBe(false);
    const codes = r.diagnoses.map((d) => `${d.line}:${d.code}`);
    expect(codes).toContain("3:signer-not-burned");
    expect(codes).toContain("3:unsigned");
    expect(r.diagnoses.find((d) => d.code === "signer-not-burned")!.message).toContain(
      "signed (line 2) with a key whose digest is not burned",
    );
  });
});
