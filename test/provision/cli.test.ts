import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../../src/cli/program.js";
import { makeDeviceRecord } from "../../src/release/registry.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import { buildFiles, CSV, fixtureKeyPem } from "./fixtures.js";

async function cli(cwd: string, ...argv: string[]) {
  let out = "";
  let err = "";
  const code = await runCli(
    argv,
    { write: (s: string) => (out += s) },
    { write: (s: string) => (err += s) },
    cwd,
  );
  return { code, out, err };
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "esp-ota-provision-"));
  writeFileSync(join(dir, "pt.csv"), CSV);
  const files = buildFiles("esp32", {
    bootloader: "build/bootloader/bootloader.bin",
    partitionTable: "build/partition_table/partition-table.bin",
    app: "build/app.bin",
    otadata: "build/ota_data_initial.bin",
  });
  for (const [p, data] of files.map) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), data);
  }
  // A signing key already in the keyring: no RSA key generation in the script.
  mkdirSync(join(dir, "keys"), { recursive: true });
  writeFileSync(join(dir, "keys/secure_boot_signing_key.pem"), fixtureKeyPem("rsa3072"));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("esp-ota provision", () => {
  it("plan: prints each step with its reason, S3 with an XTS-AES-256 key and Secure Download Mode", async () => {
    const r = await cli(
      dir,
      "provision",
      "plan",
      "--chip",
      "esp32s3",
      "--partition-table",
      "pt.csv",
      "--secure-boot",
      "v2",
      "--flash-encryption",
      "release",
    );
    expect(r.code).toBe(0);
    expect(r.out).toContain("burn-key BLOCK_KEY0 keys/flash_encryption_key.bin XTS_AES_256_KEY");
    expect(r.out).toContain("encrypt-flash-data --aes-xts");
    expect(r.out).toMatch(/Secure Download Mode \(irreversible\)\n\s+why: Last/);
  });

  it("script from the registry: burns exactly the registered key", async () => {
    const reg = openRegistry(join(dir, "registry"), { create: true });
    const key = new Uint8Array(32).fill(0x5a);
    reg.add(
      makeDeviceRecord({
        mac: "24:0a:c4:00:00:01",
        chip: "esp32",
        partitionTable: new TextEncoder().encode(CSV),
        flashEncryptionKey: key,
        now: new Date(0),
      }),
    );
    const r = await cli(
      dir,
      "provision",
      "script",
      "--registry",
      "registry",
      "--device",
      "240ac4000001",
      "--secure-boot",
      "v2",
      "--flash-encryption",
      "release",
    );
    expect(r.code).toBe(0);
    expect(r.out).toContain("burn-key flash_encryption keys/240ac4000001-flash_encryption_key.bin");
    expect(r.out).not.toContain("generate-flash-encryption-key");
    expect(readFileSync(join(dir, "keys/240ac4000001-flash_encryption_key.bin"))).toEqual(
      Buffer.from(key),
    );
    expect(r.out).toContain(
      "esp-ota provision check-state --receipt receipts/240ac4000001.jsonl --step before-burn-fe-key",
    );
  });

  it("rehearse: the generated script boots a fresh simulated chip", async () => {
    const r = await cli(
      dir,
      "provision",
      "rehearse",
      "--chip",
      "esp32",
      "--partition-table",
      "pt.csv",
      "--secure-boot",
      "v2",
      "--flash-encryption",
      "release",
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("the chip boots.");
    expect(r.out).toMatch(
      /I \(\d+\) boot: chip: esp32, flash encryption: release, secure boot: V2/,
    );
  });

  it("sim replay: names the line that signs ciphertext, exit 1", async () => {
    writeFileSync(
      join(dir, "bad.sh"),
      [
        "espsecure generate-flash-encryption-key k.bin",
        "espsecure encrypt-flash-data --keyfile k.bin --address 0x10000 -o app-enc.bin build/app.bin",
        "espsecure sign-data --version 2 --keyfile keys/secure_boot_signing_key.pem -o app-signed.bin app-enc.bin",
        "",
      ].join("\n"),
    );
    const r = await cli(dir, "sim", "replay", "--state", "s.bin", "--chip", "esp32", "bad.sh");
    expect(r.code).toBe(1);
    expect(r.out).toContain("line 3 signs app-enc.bin, which is ciphertext");
    expect(r.err).toContain("E_PROVISION_NOT_BOOTABLE");
  });

  it("check-state: a mismatch stops with E_PROVISION_STATE_MISMATCH and is in the receipt", async () => {
    writeFileSync(
      join(dir, "summary.json"),
      JSON.stringify({
        FLASH_CRYPT_CNT: { value: 1, readable: true, writeable: true },
        MAC: { value: "24:0a:c4:00:00:01 (OK)" },
      }),
    );
    const ok = await cli(
      dir,
      "provision",
      "check-state",
      "--receipt",
      "r.jsonl",
      "--step",
      "a",
      "--expect",
      "FLASH_CRYPT_CNT=1",
      "summary.json",
    );
    expect(ok.code).toBe(0);
    const bad = await cli(
      dir,
      "provision",
      "check-state",
      "--receipt",
      "r.jsonl",
      "--step",
      "b",
      "--expect",
      "FLASH_CRYPT_CNT=127",
      "--expect",
      "FLASH_CRYPT_CNT:writeable=false",
      "summary.json",
    );
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("E_PROVISION_STATE_MISMATCH");
    const lines = readFileSync(join(dir, "r.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.step, l.ok])).toEqual([
      ["a", true],
      ["b", false],
    ]);
    expect(lines[1].mismatches).toHaveLength(2);
  });
});
