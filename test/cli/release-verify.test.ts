import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { initKeyring, type Keyring } from "../../src/release/keyring-fs.js";
import { type ReleaseManifest, signManifest } from "../../src/release/manifest.js";
import { runCapture } from "../helpers/cli.js";

let dir: string;
let keyring: Keyring;
const image = randomBytes(300_000 - (300_000 % 16));
const sha = createHash("sha256").update(image).digest("hex");

function manifest(over: Partial<ReleaseManifest> = {}): ReleaseManifest {
  return {
    format: 1,
    releaseId: "blink-1.0.0",
    deviceId: "dev-a",
    chip: "esp32s3",
    partitionTableSha256: "ab".repeat(32),
    project: "blink",
    version: "1.0.0",
    secureVersion: 0,
    counter: 5,
    issuedAt: "2026-11-01T00:00:00Z",
    expiresAt: "2026-12-01T00:00:00Z",
    variants: [
      {
        slot: "ota_0",
        offset: 0x10000,
        size: image.length,
        sha256: "00".repeat(32),
        urls: ["http://h/ota_0.bin"],
      },
      {
        slot: "ota_1",
        offset: 0x110000,
        size: image.length,
        sha256: sha,
        urls: ["http://h/ota_1.bin"],
      },
    ],
    ...over,
  };
}

const NOW = "2026-11-15T00:00:00Z";
async function verify(...argv: string[]) {
  return runCapture(["release", "verify", "--trust", "kr/trust.json", "--now", NOW, ...argv], dir);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "esp-ota-cli-verify-"));
  keyring = initKeyring(join(dir, "kr"), {
    secureBoot: "v1",
    manifestKeys: 2,
    manifestAlg: "ecdsa-p256",
    threshold: 2,
  });
  initKeyring(join(dir, "other"), {
    secureBoot: "v1",
    manifestKeys: 1,
    manifestAlg: "ed25519",
    threshold: 1,
  });
  writeFileSync(
    join(dir, "good.json"),
    JSON.stringify(signManifest(manifest(), keyring.manifestKeys), null, 2),
  );
  writeFileSync(
    join(dir, "one-sig.json"),
    JSON.stringify(signManifest(manifest(), keyring.manifestKeys.slice(0, 1))),
  );
  const wrongSize = manifest();
  wrongSize.variants[1]!.size = image.length + 16;
  writeFileSync(
    join(dir, "wrong-size.json"),
    JSON.stringify(signManifest(wrongSize, keyring.manifestKeys)),
  );
  writeFileSync(join(dir, "image.bin"), image);
  writeFileSync(join(dir, "other.bin"), image.subarray(16));
  writeFileSync(join(dir, "broken.json"), "{ not json");
});

describe("release verify", () => {
  it("a good manifest: exit 0 and a summary of what was checked", async () => {
    const r = await verify(
      "good.json",
      "--device",
      "dev-a",
      "--chip",
      "ESP32-S3",
      "--min-counter",
      "5",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("manifest OK: release blink-1.0.0 for device dev-a (esp32s3)");
    expect(r.stdout).toContain("app: blink 1.0.0, secure_version 0, release counter 5");
    expect(r.stdout).toContain(
      `signatures: 2 valid, 2 required (${keyring.manifestKeys.map((k) => k.keyId).join(", ")})`,
    );
    expect(r.stdout).toContain(`ota_1 at 0x110000: ${image.length} bytes, SHA-256 ${sha}`);
  });

  it("--image finds the variant by SHA-256 and checks its size", async () => {
    const r = await verify("good.json", "--image", "image.bin");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      `image OK: image.bin is the ota_1 variant (0x110000), ${image.length} bytes`,
    );
  });

  it.each([
    ["another file", ["good.json", "--image", "other.bin"], "E_MANIFEST_IMAGE_MISMATCH"],
    [
      "the right hash but another size",
      ["wrong-size.json", "--image", "image.bin"],
      "E_MANIFEST_IMAGE_SIZE",
    ],
    ["a missing image", ["good.json", "--image", "nope.bin"], "E_FILE_READ"],
    ["too few signatures", ["one-sig.json"], "E_MANIFEST_THRESHOLD"],
    ["another device", ["good.json", "--device", "dev-b"], "E_MANIFEST_DEVICE_MISMATCH"],
    ["another chip", ["good.json", "--chip", "esp32"], "E_MANIFEST_CHIP_MISMATCH"],
    ["a counter below the minimum", ["good.json", "--min-counter", "6"], "E_MANIFEST_COUNTER"],
    ["expired", ["good.json", "--now", "2026-12-02T00:00:00Z"], "E_MANIFEST_EXPIRED"],
    ["not JSON", ["broken.json"], "E_MANIFEST_JSON"],
    ["a missing manifest", ["absent.json"], "E_FILE_READ"],
  ])("%s: exit 1 with the failed check's code", async (_n, args, code) => {
    const r = await verify(...args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${code}: `));
    // The manifest may have passed (it says so); the failed check is the one the code names.
    expect(r.stdout).not.toContain("image OK");
  });

  it("a trust policy from another keyring: E_MANIFEST_KEY_UNTRUSTED", async () => {
    const r = await runCapture(
      ["release", "verify", "--trust", "other/trust.json", "--now", NOW, "good.json"],
      dir,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^error E_MANIFEST_KEY_UNTRUSTED: key [0-9a-f]{32} is not in the trust policy \(0 of the 1 required/,
    );
  });

  it("a broken trust file is E_TRUST_POLICY_INVALID; bad --now and unknown --chip are refused", async () => {
    const r = await runCapture(["release", "verify", "--trust", "broken.json", "good.json"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error E_TRUST_POLICY_INVALID/);
    expect((await verify("good.json", "--now", "yesterday")).code).toBe(2);
    expect((await verify("good.json", "--chip", "esp8266")).stderr).toMatch(/E_CHIP_UNKNOWN/);
    expect((await runCapture(["release", "verify", "good.json"], dir)).code).toBe(2);
  });
});
