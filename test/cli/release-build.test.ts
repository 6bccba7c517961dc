/**
 * `esp-ota release build` from the command line: a keyring from `keys init`, devices from
 * `devices add`, an app from `sim make-app`; the output boots in the simulator and its manifests
 * verify against the keyring's trust.json.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { partitionsToCsv } from "../../src/esp/partition-table.js";
import { loadKeyring, readTrustPolicy } from "../../src/release/keyring-fs.js";
import { verifyManifest } from "../../src/release/manifest.js";
import { applyPreEncryptedUpdate } from "../../src/sim/ota-update.js";
import { provisionDevice } from "../../src/sim/provision.js";
import { makeSyntheticApp } from "../../src/sim/synthetic-app.js";
import { runCapture } from "../helpers/cli.js";
import { fixture, fixturePath } from "../helpers/fixtures.js";
import { oracleLayout } from "../helpers/sim.js";

const dir = mkdtempSync(join(tmpdir(), "esp-ota-release-build-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const layout = oracleLayout(2, true);
writeFileSync(join(dir, "pt.csv"), partitionsToCsv(layout));
const run = (...argv: string[]) => runCapture(argv, dir);

describe("esp-ota release build", () => {
  it("builds a release whose manifests verify and whose ciphertexts boot", async () => {
    expect((await run("keys", "init", "keys", "--secure-boot", "v1")).code).toBe(0);
    for (const mac of ["24:0a:c4:00:00:01", "24:0a:c4:00:00:02"]) {
      const r = await run(
        "devices",
        "add",
        "--registry",
        "reg",
        "--mac",
        mac,
        "--chip",
        "esp32",
        "--partition-table",
        "pt.csv",
        "--fe-key",
        fixturePath("flash_encryption/fe_esp32_key256.bin"),
      );
      expect(r.code, r.stderr).toBe(0);
    }
    writeFileSync(
      join(dir, "app.bin"),
      makeSyntheticApp({ chip: "esp32", project: "blink", version: "2.0.0", size: 0x5000 }),
    );
    const args = [
      "release",
      "build",
      "--keys",
      "keys",
      "--registry",
      "reg",
      "--app",
      "app.bin",
      "--version",
      "2.0.0",
      "--base-url",
      "http://127.0.0.1:8080/",
      "--out",
      "out",
      "--jobs",
      "1",
    ];
    const r = await run(...args);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /^release blink-2\.0\.0-[0-9a-f]{12}: 2 device\(s\) built, 0 already done/,
    );
    // Not a TTY: one plain progress line per device.
    // Devices finish in any order (workers); each is reported once, counted 1/2 then 2/2.
    expect(r.stderr).toMatch(/\[[12]\/2\] 240ac4000001 built/);
    expect(r.stderr).toMatch(/\[[12]\/2\] 240ac4000002 built/);
    expect(r.stderr).toContain("[2/2] ");

    const policy = readTrustPolicy(join(dir, "keys", "trust.json"));
    const sb = loadKeyring(join(dir, "keys")).secureBoot;
    const manifest = JSON.parse(
      readFileSync(join(dir, "out", "240ac4000002", "manifest.json"), "utf8"),
    );
    expect(
      verifyManifest(manifest, policy, {
        now: new Date(),
        deviceId: "240ac4000002",
        chip: "esp32",
      }),
    ).toMatchObject({ ok: true });
    const ota1 = layout.find((p) => p.label === "ota_1")!;
    const dev = provisionDevice({
      chip: "esp32",
      flashSize: 8 << 20,
      partitions: layout,
      app: makeSyntheticApp({ chip: "esp32", project: "blink", version: "1.0.0", size: 0x5000 }),
      flashEncryption: { key: fixture("flash_encryption/fe_esp32_key256.bin") },
      secureBoot: sb,
    });
    dev.powerOn();
    const ct = new Uint8Array(readFileSync(join(dir, "out", "240ac4000002", "ota_1.bin")));
    expect(applyPreEncryptedUpdate(dev, ct, { slot: ota1 })).toMatchObject({ ok: true });
    expect(dev.state).toMatchObject({
      kind: "running",
      partition: { label: "ota_1" },
      app: { version: "2.0.0" },
    });

    // Rerun: nothing to do.
    const again = await run(...args);
    expect(again.stdout).toContain("0 device(s) built, 2 already done");
    expect(again.stderr).toMatch(/\[[12]\/2\] 240ac4000002 already done/);

    // --json: the summary as one object on stdout, progress still on stderr (issue 13 item 8).
    const json = await run(...args, "--json");
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({
      releaseId: expect.stringMatching(/^blink-2\.0\.0-[0-9a-f]{12}$/),
      built: [],
      skipped: ["240ac4000001", "240ac4000002"],
      excluded: [],
      bytesWritten: 0,
      index: "out/index.json",
      manifests: 2,
    });
  });

  it("reports bad options with their codes", async () => {
    const base = [
      "release",
      "build",
      "--keys",
      "keys",
      "--registry",
      "reg",
      "--app",
      "app.bin",
      "--base-url",
      "http://127.0.0.1:8080/",
      "--out",
      "out2",
    ];
    const expires = await run(...base, "--version", "2.0.0", "--expires", "soon");
    expect(expires.code).toBe(1);
    expect(expires.stderr).toContain("error E_RELEASE_EXPIRES");
    // The shared duration parser: a bare number is refused, asking for a unit.
    const bare = await run(...base, "--version", "2.0.0", "--expires", "3600");
    expect([bare.code, bare.stderr]).toEqual([
      1,
      expect.stringContaining('E_RELEASE_EXPIRES: --expires "3600" has no unit'),
    ]);
    const version = await run(...base, "--version", "3.0.0");
    expect(version.stderr).toContain("error E_RELEASE_VERSION_MISMATCH");
    const unknown = await run(...base, "--version", "2.0.0", "--devices", "240ac4000099");
    expect(unknown.stderr).toContain("error E_DEVICE_UNKNOWN");
  });
});
