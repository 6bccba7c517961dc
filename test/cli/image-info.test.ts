import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { buildAppImage } from "../../src/esp/image.js";
import { runCapture } from "../helpers/cli.js";
import { fixture, fixturePath, fixtureText } from "../helpers/fixtures.js";

async function run(argv: string[], cwd = process.cwd()) {
  const r = await runCapture(argv, cwd);
  return { code: r.code, out: r.stdout, err: r.stderr };
}

function tempFile(name: string, data: Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-image-info-"));
  const path = join(dir, name);
  writeFileSync(path, data);
  return path;
}

/** esptool's report without its banner line ("esptool v5.3.1"). */
function esptoolReport(name: string): string {
  const t = fixtureText(`images/${name}.image_info.txt`);
  return t.slice(t.indexOf("\n") + 1);
}

describe("esp-ota image-info", () => {
  it.each([
    "hello-world-signed",
    "esp_idf_blink_esp32s2",
    "bootloader_esp32_v5_2",
    "helloworld-esp32",
  ])("%s.bin: prints esptool's report byte for byte and exits 0", async (name) => {
    const r = await run(["image-info", fixturePath(`images/${name}.bin`)]);
    expect(r.err).toBe("");
    expect(r.out).toBe(esptoolReport(name));
    expect(r.code).toBe(0);
  });

  it("the corrupt vector: esptool's report, then the failed checks with their codes; exit 1", async () => {
    const r = await run([
      "image-info",
      fixturePath("images/hello-world-signed.corrupt_byte_0x38.bin"),
    ]);
    expect(r.code).toBe(1);
    const report = esptoolReport("hello-world-signed.corrupt_byte_0x38");
    expect(r.out.startsWith(report)).toBe(true);
    expect(r.out).toContain("Checksum: 0x30 (invalid - calculated 0x31)");
    expect(r.out.slice(report.length)).toBe(
      [
        "",
        "Problems",
        "========",
        "E_IMAGE_CHECKSUM: Checksum failed. Calculated 0x31 read 0x30 (at 0x2ff8f)",
        "E_IMAGE_HASH: Image hash failed - image is corrupt: stored 06a1d6eb2c280ca64b44b8c487d2d856dc8e5acf6e08060c61efbf086ad795d2, calculated d6accc49fe9633110dc2dddff5b66d496cf05eb3fbeea8dc8da3ec05a102ddda (at 0x2ff90)",
        "",
      ].join("\n"),
    );
    expect(r.err).toMatch(
      /^error E_IMAGE_CHECKSUM: .*Checksum failed\. Calculated 0x31 read 0x30 \(2 problems: E_IMAGE_CHECKSUM, E_IMAGE_HASH\)\n/,
    );
    expect(r.err).toContain("what to do:");
  });

  it("--json: a machine-readable document for a valid image", async () => {
    const r = await run(["image-info", "--json", fixturePath("images/hello-world-signed.bin")]);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out);
    expect(doc).toMatchObject({
      size: 196608,
      valid: true,
      chip: "esp32",
      header: {
        segmentCount: 7,
        entryAddr: 0x40080c54,
        chipId: 0,
        flashMode: "dio",
        flashSize: "2MB",
        flashFreq: "40m",
      },
      checksum: { offset: 0x2ff8f, stored: 0x30, computed: 0x30, valid: true },
      hash: {
        offset: 0x2ff90,
        valid: true,
        stored: "06a1d6eb2c280ca64b44b8c487d2d856dc8e5acf6e08060c61efbf086ad795d2",
      },
      imageEnd: 0x2ffb0,
      appDesc: {
        projectName: "hello-world",
        version: "v3.3-beta3-21-g0706bd0d1-dirty",
        secureVersion: 0,
        appElfSha256: "f4611958b4281922f26ed2ba71db7ebf581023781965ab72915a1f93fa5c545c",
      },
      problems: [],
    });
    expect(doc.segments).toHaveLength(7);
    expect(doc.segments[5]).toEqual({
      index: 5,
      loadAddr: 0x400d0018,
      offset: 0x10018,
      length: 0x11fe4,
      headerOffset: 0x10010,
      memoryTypes: ["IROM"],
    });
  });

  it("--json on the corrupt vector: valid false, the problems, exit 1", async () => {
    const r = await run([
      "image-info",
      "--json",
      fixturePath("images/hello-world-signed.corrupt_byte_0x38.bin"),
    ]);
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.out);
    expect(doc.valid).toBe(false);
    expect(doc.checksum).toEqual({ offset: 0x2ff8f, stored: 0x30, computed: 0x31, valid: false });
    expect(doc.problems.map((p: { code: string }) => p.code)).toEqual([
      "E_IMAGE_CHECKSUM",
      "E_IMAGE_HASH",
    ]);
    expect(r.err).toContain("error E_IMAGE_CHECKSUM");
  });

  it.each([
    ["empty", new Uint8Array(0), "E_IMAGE_TRUNCATED"],
    [
      "random bytes",
      Uint8Array.from({ length: 512 }, (_, i) => (i * 37 + 11) & 0xff),
      "E_IMAGE_MAGIC",
    ],
    ["a partition table", fixture("partitions/pt_brief.bin"), "E_IMAGE_MAGIC"],
    [
      "truncated",
      fixture("images/esp_idf_blink_esp32s2.bin").subarray(0, 5000),
      "E_IMAGE_TRUNCATED",
    ],
    [
      "flash-encrypted ciphertext",
      fixture("flash_encryption/ct_xts_k256_0x10000.bin"),
      "E_IMAGE_MAGIC",
    ],
  ])("%s: a coded error on stderr, nothing on stdout, exit 1", async (_n, data, code) => {
    const r = await run(["image-info", tempFile("in.bin", data)]);
    expect(r.code).toBe(1);
    expect(r.out).toBe("");
    expect(r.err).toMatch(new RegExp(`^error ${code}: `));
    expect(r.err).not.toContain("E_INTERNAL");
  });

  it("--json on a non-image still prints a document with the problem", async () => {
    const r = await run(["image-info", "--json", tempFile("x.bin", new Uint8Array([1, 2, 3]))]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out)).toMatchObject({
      size: 3,
      valid: false,
      problems: [{ code: "E_IMAGE_MAGIC" }],
    });
  });

  it("a missing file is E_FILE_READ", async () => {
    const r = await run(["image-info", join(tmpdir(), "no-such-image-7f3a.bin")]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error E_FILE_READ: /);
  });

  it("--chip checks the header's chip id as the bootloader does", async () => {
    const file = fixturePath("images/esp_idf_blink_esp32s2.bin");
    expect((await run(["image-info", "--chip", "esp32s2", file])).code).toBe(0);
    const r = await run(["image-info", "--chip", "ESP32-C3", file]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(
      "E_IMAGE_CHIP_MISMATCH: mismatch chip ID, expected 5 (ESP32-C3), found 2 (ESP32-S2)",
    );
    expect(r.err).toMatch(/^error E_IMAGE_CHIP_MISMATCH: /);
  });

  it("--kind app refuses an image without an app descriptor; --kind bootloader accepts the bootloader", async () => {
    const file = fixturePath("images/bootloader_esp32_v5_2.bin");
    const app = await run(["image-info", "--kind", "app", file]);
    expect(app.code).toBe(1);
    expect(app.err).toMatch(/^error E_IMAGE_APP_DESC_MISSING: /);
    expect((await run(["image-info", "--kind", "bootloader", "--chip", "esp32", file])).code).toBe(
      0,
    );
  });

  it("a synthetic app from buildAppImage passes --kind app --chip", async () => {
    const img = buildAppImage({
      chip: "esp32c3",
      appDesc: { projectName: "demo", version: "1.0.0", secureVersion: 2 },
      minSize: 20_000,
    });
    const r = await run([
      "image-info",
      "--kind",
      "app",
      "--chip",
      "esp32c3",
      tempFile("app.bin", img),
    ]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("Detected image type: ESP32-C3");
    expect(r.out).toContain("Project name: demo\nApp version: 1.0.0\n");
    expect(r.out).toContain("Secure version: 2\n");
  });

  it.each([
    [["image-info", "--chip", "esp8266", "x.bin"]],
    [["image-info", "--kind", "ota", "x.bin"]],
    [["image-info"]],
  ])("usage errors exit 2: %j", async (argv) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.err).toContain("E_USAGE");
  });

  it("--help documents every option and its default", async () => {
    const r = await run(["image-info", "--help"]);
    expect(r.code).toBe(0);
    for (const s of ["--json", "--chip <chip>", "--kind <kind>", 'default: "any"', "<file>"]) {
      expect(r.out).toContain(s);
    }
  });
});
