/** `esp-ota devices add|import|list|remove`, in-process against a temporary registry. */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { partitionsToCsv } from "../../src/esp/partition-table.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import { runCapture } from "../helpers/cli.js";
import { fixture, fixturePath } from "../helpers/fixtures.js";
import { twoOtaLayout } from "../helpers/sim.js";

const dir = mkdtempSync(join(tmpdir(), "esp-ota-devices-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, "pt.csv"), partitionsToCsv(twoOtaLayout()));
const run = (...argv: string[]) => runCapture(argv, dir);
const esp32Key = fixture("flash_encryption/fe_esp32_key256.bin");
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("esp-ota devices", () => {
  it("add imports a key file, stores it owner-only, and never prints it", async () => {
    const r = await run(
      "devices",
      "add",
      "--registry",
      "reg",
      "--mac",
      "24:0a:c4:00:00:01",
      "--chip",
      "esp32",
      "--partition-table",
      "pt.csv",
      "--fe-key",
      fixturePath("flash_encryption/fe_esp32_key256.bin"),
      "--flash-crypt-conf",
      "0x3",
      "--secure-version",
      "2",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("added 240ac4000001  esp32  slots=ota_0@0x10000,ota_1@0x160000");
    expect(r.stdout).toContain("conf=0x3");
    expect(r.stdout).toContain("secure_version=2");
    const rec = openRegistry(join(dir, "reg")).get("240ac4000001");
    expect(rec.flashEncryption).toEqual({ key: hex(esp32Key), flashCryptConf: 3 });
    expect(statSync(join(dir, "reg", "devices", "240ac4000001.json")).mode & 0o777).toBe(0o600);
    expect(r.stdout + r.stderr).not.toContain(hex(esp32Key));
  });

  it("add generates the strongest key the chip takes and saves it 0600 only when asked", async () => {
    const r = await run(
      "devices",
      "add",
      "--registry",
      "reg",
      "--mac",
      "34-85-18-00-00-02",
      "--chip",
      "esp32s3",
      "--partition-table",
      "pt.csv",
      "--save-fe-key",
      "keys/s3.bin",
    );
    expect(r.code, r.stderr).toBe(0);
    const saved = readFileSync(join(dir, "keys", "s3.bin"));
    expect(saved.length).toBe(64);
    expect(statSync(join(dir, "keys", "s3.bin")).mode & 0o777).toBe(0o600);
    expect(openRegistry(join(dir, "reg")).get("348518000002").flashEncryption.key).toBe(
      saved.toString("hex"),
    );
    expect(r.stdout).not.toContain(saved.toString("hex"));
    // Adding it again is refused, and does not touch the saved key.
    const again = await run(
      "devices",
      "add",
      "--registry",
      "reg",
      "--mac",
      "348518000002",
      "--chip",
      "esp32s3",
      "--partition-table",
      "pt.csv",
    );
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("error E_DEVICE_EXISTS");
  });

  it("add refuses a key of the wrong size for the chip", async () => {
    const r = await run(
      "devices",
      "add",
      "--registry",
      "reg",
      "--mac",
      "24:0a:c4:00:00:09",
      "--chip",
      "esp32",
      "--partition-table",
      "pt.csv",
      "--fe-key",
      fixturePath("flash_encryption/fe_xts_key512.bin"),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error E_DEVICE_FLASH_KEY");
  });

  it("import adds every line or none", async () => {
    writeFileSync(
      join(dir, "bad.csv"),
      `mac,chip,table,key\n24:0a:c4:00:00:10,esp32,pt.csv,${fixturePath("flash_encryption/fe_esp32_key256.bin")}\n24:0a:c4:00:00:11,esp32,pt.csv\n`,
    );
    const bad = await run("devices", "import", "--registry", "reg", "bad.csv");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("error E_REGISTRY_IMPORT");
    expect(bad.stderr).toContain("line 3");
    expect(openRegistry(join(dir, "reg")).has("240ac4000010")).toBe(false);
    writeFileSync(
      join(dir, "good.csv"),
      [
        "# fleet A",
        `24:0a:c4:00:00:10,esp32,pt.csv,${fixturePath("flash_encryption/fe_esp32_key256.bin")},0xf,1`,
        `34:85:18:00:00:11,esp32s3,pt.csv,${fixturePath("flash_encryption/fe_xts_key512.bin")}`,
      ].join("\n"),
    );
    const good = await run("devices", "import", "--registry", "reg", "good.csv");
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toContain("imported 2 device(s)");
  });

  it("list shows every device without keys; --json too", async () => {
    const r = await run("devices", "list", "--registry", "reg");
    expect(r.code).toBe(0);
    expect(
      r.stdout
        .trim()
        .split("\n")
        .map((l) => l.split(" ")[0]),
    ).toEqual(["240ac4000001", "240ac4000010", "348518000002", "348518000011"]);
    const j = await run("devices", "list", "--registry", "reg", "--json");
    const rows = j.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(rows[0]).toMatchObject({
      deviceId: "240ac4000001",
      flashEncryption: { keyBits: 256, flashCryptConf: 3 },
    });
    expect(rows[0].slots).toEqual([
      { label: "ota_0", offset: 0x10000, size: 0x150000 },
      { label: "ota_1", offset: 0x160000, size: 0x150000 },
    ]);
    expect(j.stdout).not.toContain(hex(esp32Key));
    expect(j.stdout).not.toContain(hex(fixture("flash_encryption/fe_xts_key512.bin")));
  });

  it("remove deletes one device; an unknown id is E_DEVICE_UNKNOWN", async () => {
    expect((await run("devices", "remove", "--registry", "reg", "240ac4000010")).code).toBe(0);
    expect(openRegistry(join(dir, "reg")).has("240ac4000010")).toBe(false);
    const r = await run("devices", "remove", "--registry", "reg", "240ac4000010");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error E_DEVICE_UNKNOWN");
    const missing = await run("devices", "list", "--registry", "nowhere");
    expect(missing.stderr).toContain("error E_REGISTRY_MISSING");
  });
});
