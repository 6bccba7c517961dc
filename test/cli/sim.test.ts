import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEMO_PARTITIONS } from "../../src/sim/demo.js";
import { runCapture } from "../helpers/cli.js";
import { fixturePath } from "../helpers/fixtures.js";

async function run(cwd: string, ...argv: string[]) {
  const r = await runCapture(argv, cwd);
  return { code: r.code, out: r.stdout, err: r.stderr };
}

describe("esp-ota sim", () => {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-sim-"));
  writeFileSync(join(dir, "pt.csv"), DEMO_PARTITIONS);
  const sec = [
    "--flash-encryption",
    "--fe-key",
    fixturePath("flash_encryption/fe_esp32_key256.bin"),
    "--secure-boot",
    "v1",
    "--sb-key",
    fixturePath("sbv1/sbv1_key.pem"),
  ];

  it("make-app, create, boot, inspect: a secure device from the command line", async () => {
    expect(
      (
        await run(
          dir,
          "sim",
          "make-app",
          "--project",
          "blink",
          "--version",
          "1.0.0",
          "--size",
          "32K",
          "app.bin",
        )
      ).code,
    ).toBe(0);
    const created = await run(
      dir,
      "sim",
      "create",
      "--state",
      "dev.sim",
      "--chip",
      "esp32",
      "--partition-table",
      "pt.csv",
      "--app",
      "app.bin",
      "--mac",
      "24:0a:c4:00:00:07",
      ...sec,
    );
    expect(created.code).toBe(0);
    expect(created.out).toContain("device id 240ac4000007");
    const boot = await run(dir, "sim", "boot", "--state", "dev.sim");
    expect(boot.code).toBe(0);
    expect(boot.out).toContain("Loaded app from partition at offset 0x10000");
    expect(boot.out).toContain("App version:      1.0.0");
    const inspect = await run(dir, "sim", "inspect", "--state", "dev.sim", "--json");
    expect(inspect.code).toBe(0);
    const report = JSON.parse(inspect.out);
    expect(report.efuses).toMatchObject({ flashEncryption: "development", secureBoot: "V1" });
    expect(report.slots[0]).toMatchObject({
      label: "ota_0",
      verified: true,
      app: { version: "1.0.0" },
    });
    expect(report.slots[1]).toMatchObject({ label: "ota_1", verified: false });
    expect(report.otadata.copies[0]).toMatchObject({ seq: 1, stateName: "VALID" });
    const text = await run(dir, "sim", "inspect", "--state", "dev.sim");
    expect(text.out).toMatch(/ota_0\s+0x010000\s+verified/);
  });

  it("update: the right ciphertext boots; one encrypted for the other slot is refused with a code", async () => {
    await run(
      dir,
      "sim",
      "make-app",
      "--project",
      "blink",
      "--version",
      "2.0.0",
      "--size",
      "32K",
      "v2.bin",
    );
    await run(
      dir,
      "secure",
      "sign-data",
      "--version",
      "1",
      "--keyfile",
      fixturePath("sbv1/sbv1_key.pem"),
      "--output",
      "v2.signed.bin",
      "v2.bin",
    );
    const enc = (addr: string, out: string) =>
      run(
        dir,
        "secure",
        "encrypt-flash-data",
        "--keyfile",
        fixturePath("flash_encryption/fe_esp32_key256.bin"),
        "--address",
        addr,
        "--output",
        out,
        "v2.signed.bin",
      );
    expect((await enc("0x160000", "v2.ota1.bin")).code).toBe(0);
    expect((await enc("0x10000", "v2.ota0.bin")).code).toBe(0);
    const wrong = await run(dir, "sim", "update", "--state", "dev.sim", "--image", "v2.ota0.bin");
    expect(wrong.code).toBe(1);
    expect(wrong.err).toContain("E_SIM_UPDATE_REFUSED");
    expect(wrong.err).toContain("invalid magic byte");
    const right = await run(dir, "sim", "update", "--state", "dev.sim", "--image", "v2.ota1.bin");
    expect(right.code).toBe(0);
    expect(right.out).toContain("now running ota_1: blink 2.0.0");
    const boot = await run(dir, "sim", "boot", "--state", "dev.sim");
    expect(boot.out).toContain("Loaded app from partition at offset 0x160000");
  });

  it("an image encrypted with another device's key is refused with a code", async () => {
    await run(dir, "sim", "make-app", "--project", "x", "--version", "1", "bare.bin");
    await run(
      dir,
      "sim",
      "create",
      "--state",
      "bad.sim",
      "--chip",
      "esp32",
      "--partition-table",
      "pt.csv",
      "--app",
      "bare.bin",
    );
    // bad.sim has no flash encryption: the ciphertext made for dev.sim is garbage to it.
    const r = await run(dir, "sim", "update", "--state", "bad.sim", "--image", "v2.ota1.bin");
    expect(r.code).toBe(1);
    expect(r.err).toContain("E_SIM_UPDATE_REFUSED");
  });

  it("usage errors exit 2; a bad state file is a coded error", async () => {
    expect(
      (
        await run(
          dir,
          "sim",
          "create",
          "--state",
          "x.sim",
          "--chip",
          "esp8266",
          "--partition-table",
          "pt.csv",
          "--app",
          "app.bin",
        )
      ).code,
    ).toBe(2);
    expect(
      (
        await run(
          dir,
          "sim",
          "create",
          "--state",
          "x.sim",
          "--chip",
          "esp32",
          "--partition-table",
          "pt.csv",
          "--app",
          "app.bin",
          "--flash-encryption",
        )
      ).code,
    ).toBe(2);
    writeFileSync(join(dir, "junk.sim"), "not a device");
    const junk = await run(dir, "sim", "boot", "--state", "junk.sim");
    expect(junk.code).toBe(1);
    expect(junk.err).toContain("E_SIM_STATE_FILE");
  });

  it("refuses Secure Boot V2 with ECDSA on an ESP32-S3 (RSA-3072 only)", async () => {
    await run(
      dir,
      "sim",
      "make-app",
      "--chip",
      "esp32s3",
      "--project",
      "x",
      "--version",
      "1",
      "s3.bin",
    );
    const r = await run(
      dir,
      "sim",
      "create",
      "--state",
      "s3.sim",
      "--chip",
      "esp32s3",
      "--partition-table",
      "pt.csv",
      "--app",
      "s3.bin",
      "--secure-boot",
      "v2",
      "--sb-key",
      fixturePath("sbv2/sbv2_ecdsa256_key.pem"),
    );
    expect(r.code).toBe(1);
    expect(r.err).toContain("E_SIM_PROVISION");
    expect(r.err).toContain("RSA-3072");
  });

  it("demo: every scenario as expected", async () => {
    const r = await run(dir, "sim", "demo", "--app-size", "16K");
    expect(r.code).toBe(0);
    expect(r.out).toContain("12 of 12 as expected; devices left unbootable: 0.");
  });
});
