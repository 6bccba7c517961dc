/**
 * The agent's update steps (agent/update.ts runUpdate) against hostile inputs, in process: a
 * real HTTP server on loopback holds the manifests and ciphertexts, the device's INFO comes from
 * a simulated ESP32 over the UART, and the device link records what would be flashed. Each row is
 * one attack from docs/security.md, and each checks the claim that matters on a gateway: the
 * update fails at the right step with the right code, the anti-replay high-water mark moves only
 * for a manifest that verified, and not one byte goes to the device.
 */
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DeviceLink } from "../../agent/link.js";
import { httpNet, runUpdate, type UpdateSettings } from "../../agent/update.js";
import { toHex } from "../../src/bytes.js";
import { deviceIdOf } from "../../src/gateway/device-view.js";
import { type DeviceLedger, newLedger } from "../../src/gateway/ledger.js";
import type { DeviceStatus, UpdateNotice } from "../../src/mqtt/messages.js";
import {
  generateManifestKey,
  type ManifestSigningKey,
  type TrustPolicy,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import { type ReleaseManifest, signManifest } from "../../src/release/manifest.js";
import { createStaticServer } from "../../src/release/serve.js";
import { encryptForAddress, signImage } from "../../src/sim/provision.js";
import type { ImageSource } from "../../src/uart/host.js";
import type { Info } from "../../src/uart/messages.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";
import { rig, runFlash } from "../uart/harness.js";

const OTA0 = 0x10000;
const OTA1 = 0x160000;
const NOW = new Date("2026-01-10T00:00:00Z");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

// 2 of 3 manifest keys; `stranger` is in no policy.
const [k1, k2, k3, stranger] = [0, 1, 2, 3].map(() => generateManifestKey("ed25519")) as [
  ManifestSigningKey,
  ManifestSigningKey,
  ManifestSigningKey,
  ManifestSigningKey,
];
const trust = trustPolicyFromKeys([k1, k2, k3], 2);

let root: string;
let staging: string;
let server: Server;
let base: string;
let info: Info;
let deviceId: string;

const sec = security("esp32");
const images = {
  ota0: otaImage("esp32", sec, app("esp32", "2.0.0"), OTA0),
  ota1: otaImage("esp32", sec, app("esp32", "2.0.0"), OTA1),
  // The same signed app encrypted with another device's key, for the same slot: same size.
  otherDevice: encryptForAddress(
    "esp32",
    { key: sec.flashEncryption.key.map((b) => b ^ 0xa5) },
    OTA1,
    signImage(app("esp32", "2.0.0"), sec.secureBoot),
  ),
};

/** A manifest for this device, as `release build` writes it, with `over` changed. */
function manifest(dir: string, over: Partial<ReleaseManifest> = {}): ReleaseManifest {
  return {
    format: 1,
    releaseId: dir,
    deviceId,
    chip: "esp32",
    partitionTableSha256: toHex(info.partitionTableSha256!),
    project: "sim-test",
    version: "2.0.0",
    secureVersion: 0,
    counter: 8,
    issuedAt: "2026-01-01T00:00:00Z",
    expiresAt: "2026-02-01T00:00:00Z",
    variants: [
      {
        slot: "ota_0",
        offset: OTA0,
        size: images.ota0.length,
        sha256: sha(images.ota0),
        urls: [`${base}${dir}/ota_0.bin`],
      },
      {
        slot: "ota_1",
        offset: OTA1,
        size: images.ota1.length,
        sha256: sha(images.ota1),
        urls: [`${base}${dir}/ota_1.bin`],
      },
    ],
    ...over,
  };
}

/** Publishes a release directory: manifest signed by `signers`, and the given slot files. */
function publish(
  dir: string,
  m: ReleaseManifest,
  signers: ManifestSigningKey[],
  files: Record<string, Uint8Array> = { "ota_0.bin": images.ota0, "ota_1.bin": images.ota1 },
): void {
  mkdirSync(join(root, dir), { recursive: true });
  writeFileSync(join(root, dir, "manifest.json"), JSON.stringify(signManifest(m, signers)));
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(root, dir, name), bytes);
}

interface Run {
  final: DeviceStatus;
  flashed: { offset: number; sha256: string }[];
  ledger: DeviceLedger;
}

/** Runs one update for `notice` on a ledger with the given high-water mark. */
async function run(
  notice: Partial<UpdateNotice> & { releaseId: string },
  ledger: DeviceLedger = newLedger(deviceId),
  policy: TrustPolicy = trust,
  allowedUrls?: string[],
): Promise<Run> {
  const n: UpdateNotice = {
    format: 1,
    deviceId,
    counter: 8,
    manifestUrls: [`${base}${notice.releaseId}/manifest.json`],
    issuedAt: NOW.toISOString(),
    ...notice,
  };
  ledger.job = { notice: n, step: "parseNotice", startedAt: NOW.toISOString() };
  const statuses: DeviceStatus[] = [];
  const flashed: Run["flashed"] = [];
  const link = {
    info,
    readInfo: async () => info,
    // What reaches the device: record the bytes' hash, as the device's END would check it.
    flash: async (img: { offset: number; size: number }, src: ImageSource) => {
      flashed.push({ offset: img.offset, sha256: sha(src.read(0, img.size)) });
      return { kind: "confirmed", info, slotOffset: img.offset, version: "2.0.0", resumedFrom: 0 };
    },
  } as unknown as DeviceLink;
  const settings: UpdateSettings = {
    trust: policy,
    policy: { allowDowngrade: false, confirmTimeoutMs: 1000, maxManifestBytes: 65536 },
    download: {
      retries: 0,
      backoffBaseMs: 1,
      backoffMaxMs: 1,
      totalTimeoutMs: 20_000,
      ...(allowedUrls ? { allowedUrls } : {}),
    },
    stagingDir: staging,
    transferAttempts: 1,
  };
  const r0 = runUpdate({
    deviceId,
    job: ledger.job,
    settings,
    ports: {
      device: () => link,
      ledger: { get: () => ledger, save: async (f) => f(ledger), saveNow: (f) => f(ledger) },
      publish: {
        status: async (state, extra = {}) => {
          statuses.push({
            format: 1,
            deviceId,
            gatewayId: "gw",
            seq: statuses.length + 1,
            state,
            updatedAt: NOW.toISOString(),
            ...extra,
          } as DeviceStatus);
        },
        progress: () => undefined,
      },
      clock: { now: () => NOW, sleep: async () => undefined },
      net: httpNet(settings, (f) => f()),
      log: pino({ level: "silent" }),
    },
    signal: new AbortController().signal,
  });
  const r = await r0;
  expect(r.kind).toBe("final");
  return { final: statuses.at(-1)!, flashed, ledger };
}

const withMark = (counter: number, releaseId: string): DeviceLedger => ({
  ...newLedger(deviceId),
  highWater: { counter, releaseId },
});

beforeAll(async () => {
  const dev = makeDevice("esp32", sec);
  dev.powerOn();
  const r = await runFlash(rig({ dev }), new Uint8Array(16), { mode: "info" });
  if (r.outcome?.kind !== "info") throw new Error("no INFO from the simulated device");
  info = r.outcome.info;
  deviceId = deviceIdOf(info);
  root = mkdtempSync(join(tmpdir(), "esp-ota-security-"));
  staging = join(root, ".staging");
  mkdirSync(staging);
  server = createStaticServer(root);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;

  publish("good", manifest("good"), [k1, k2]);
  publish("older", manifest("older", { counter: 7 }), [k1, k2]);
  // Fast-forward: one stolen key (below the threshold of 2) signs the largest counter there is.
  publish("ff", manifest("ff", { counter: Number.MAX_SAFE_INTEGER }), [k1]);
  publish("stranger", manifest("stranger"), [k1, stranger]);
  publish("expired", manifest("expired", { expiresAt: "2026-01-05T00:00:00Z" }), [k1, k2]);
  publish("for-other-device", manifest("for-other-device", { deviceId: "240ac4ffffff" }), [k1, k2]);
  publish("for-other-chip", manifest("for-other-chip", { chip: "esp32s3" }), [k1, k2]);
  // A mirror that serves another device's ciphertext (same size) at this device's URL.
  publish("swapped", manifest("swapped"), [k1, k2], {
    "ota_0.bin": images.ota0,
    "ota_1.bin": images.otherDevice,
  });
  // Endless data on the manifest URL: more than policy.maxManifestBytes.
  mkdirSync(join(root, "huge"));
  writeFileSync(join(root, "huge", "manifest.json"), `{"pad":"${"x".repeat(200_000)}"}`);
});

afterAll(async () => {
  await new Promise((ok) => server?.close(ok));
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("the genuine release", () => {
  it("reaches the device's next slot with exactly the signed ciphertext, and sets the high-water mark", async () => {
    const r = await run({ releaseId: "good" });
    expect(r.final.state).toBe("succeeded");
    expect(r.flashed).toEqual([{ offset: OTA1, sha256: sha(images.ota1) }]);
    expect(r.ledger.highWater).toMatchObject({ counter: 8, releaseId: "good" });
  });
});

describe("every refusal happens before a byte goes to the device", () => {
  const rows: {
    attack: string;
    notice: Partial<UpdateNotice> & { releaseId: string };
    ledger?: () => DeviceLedger;
    step: string;
    code: string;
    /** A code the E_DOWNLOAD_FAILED message must name (the mirror's own failure). */
    mirrorCode?: string;
    /** download.allowedUrls ("PLACEHOLDER/" is the release server). */
    allowedUrls?: string[];
  }[] = [
    {
      attack: "arbitrary software: signed by one trusted key and one the policy does not list",
      notice: { releaseId: "stranger" },
      step: "verifyManifest",
      code: "E_MANIFEST_KEY_UNTRUSTED",
    },
    {
      attack: "rollback: an older, validly signed, unexpired manifest replayed",
      notice: { releaseId: "older", counter: 9 },
      ledger: () => withMark(8, "good"),
      step: "verifyManifest",
      code: "E_MANIFEST_COUNTER",
    },
    {
      attack: "indefinite freeze: a manifest past its expiry",
      notice: { releaseId: "expired" },
      step: "verifyManifest",
      code: "E_MANIFEST_EXPIRED",
    },
    {
      attack:
        "mix-and-match: the notice names one release, its URL serves another's signed manifest",
      notice: { releaseId: "other-release", manifestUrls: [`PLACEHOLDER/good/manifest.json`] },
      step: "verifyManifest",
      code: "E_AGENT_NOTICE_INVALID",
    },
    {
      attack: "wrong software: another device's signed manifest",
      notice: { releaseId: "for-other-device" },
      step: "verifyManifest",
      code: "E_MANIFEST_DEVICE_MISMATCH",
    },
    {
      attack: "wrong software: a signed manifest for another chip",
      notice: { releaseId: "for-other-chip" },
      step: "verifyManifest",
      code: "E_MANIFEST_CHIP_MISMATCH",
    },
    {
      attack: "malicious mirror: another device's ciphertext at this device's URL",
      notice: { releaseId: "swapped" },
      step: "download",
      code: "E_DOWNLOAD_FAILED",
      mirrorCode: "E_DOWNLOAD_HASH_MISMATCH",
    },
    {
      attack:
        "server-side request forgery: a notice naming a URL outside download.allowedUrls is never requested",
      notice: { releaseId: "good", manifestUrls: ["http://169.254.169.254/latest/meta-data/"] },
      allowedUrls: ["PLACEHOLDER/"],
      step: "fetchManifest",
      code: "E_DOWNLOAD_FAILED",
      mirrorCode: "E_DOWNLOAD_URL_NOT_ALLOWED",
    },
    {
      attack: "endless data: a manifest URL whose body goes past policy.maxManifestBytes",
      notice: { releaseId: "huge" },
      step: "fetchManifest",
      code: "E_DOWNLOAD_FAILED",
      mirrorCode: "E_DOWNLOAD_TOO_LARGE",
    },
  ];
  for (const row of rows)
    it(`${row.attack} → ${row.mirrorCode ?? row.code} at ${row.step}`, async () => {
      const notice = {
        ...row.notice,
        ...(row.notice.manifestUrls
          ? { manifestUrls: row.notice.manifestUrls.map((u) => u.replace("PLACEHOLDER/", base)) }
          : {}),
      };
      const ledger = row.ledger?.() ?? newLedger(deviceId);
      const markBefore = structuredClone(ledger.highWater);
      const allowed = row.allowedUrls?.map((u) => u.replace("PLACEHOLDER/", base));
      const r = await run(notice, ledger, trust, allowed);
      expect(r.final.state).toBe("failed");
      if (row.mirrorCode) {
        // A download that failed on every mirror the same way reports that mirror's code;
        // E_DOWNLOAD_FAILED (naming each mirror's code in its message) when they differ.
        expect(r.final.error?.step).toBe(row.step);
        expect([row.code, row.mirrorCode]).toContain(r.final.error?.code);
        expect(`${r.final.error?.code} ${r.final.error?.message}`).toContain(row.mirrorCode);
      } else expect(r.final.error).toMatchObject({ code: row.code, step: row.step });
      expect(r.flashed).toEqual([]);
      // The mark moves only for a manifest that verified (the mirror row's manifest is genuine).
      expect(r.ledger.highWater).toEqual(
        row.step === "download"
          ? { counter: 8, releaseId: notice.releaseId, keyIds: [k1.keyId, k2.keyId].sort() }
          : markBefore,
      );
      // Nothing of what the mirror sent is kept.
      expect(readdirSync(staging)).toEqual([]);
    });
});

describe("fast-forward", () => {
  it("a huge counter signed below the threshold is refused and leaves the high-water mark; the next genuine release still installs", async () => {
    const ledger = withMark(7, "older");
    const ff = await run({ releaseId: "ff", counter: Number.MAX_SAFE_INTEGER }, ledger);
    expect(ff.final.error).toMatchObject({ code: "E_MANIFEST_THRESHOLD", step: "verifyManifest" });
    expect(ff.flashed).toEqual([]);
    expect(ledger.highWater).toEqual({ counter: 7, releaseId: "older" });
    ledger.job = undefined;
    const good = await run({ releaseId: "good" }, ledger);
    expect(good.final.state).toBe("succeeded");
    expect(ledger.highWater).toEqual({
      counter: 8,
      releaseId: "good",
      keyIds: [k1.keyId, k2.keyId].sort(),
    });
  });

  it("a counter fast-forwarded with k stolen keys freezes the device until the operator revokes those keys; then the genuine mark applies again", async () => {
    // 2 of 4 keys; the operator signs with k1 and k2, the attacker holds k3 and a fourth key.
    const before = trustPolicyFromKeys([k1, k2, k3, stranger], 2);
    const after: TrustPolicy = { ...before, revoked: [k3.keyId, stranger.keyId] };
    publish("ff-stolen", manifest("ff-stolen", { counter: Number.MAX_SAFE_INTEGER }), [
      k3,
      stranger,
    ]);
    publish("next", manifest("next", { counter: 9 }), [k1, k2]);
    const ledger = newLedger(deviceId);
    expect((await run({ releaseId: "good" }, ledger, before)).final.state).toBe("succeeded");
    ledger.job = undefined;
    // The stolen keys meet the threshold: the manifest verifies and its counter becomes the mark.
    expect((await run({ releaseId: "ff-stolen" }, ledger, before)).final.state).toBe("succeeded");
    expect(ledger.highWater?.counter).toBe(Number.MAX_SAFE_INTEGER);
    ledger.job = undefined;
    const frozen = await run({ releaseId: "next", counter: 9 }, ledger, before);
    expect(frozen.final.error).toMatchObject({ code: "E_MANIFEST_COUNTER" });
    expect(frozen.flashed).toEqual([]);
    ledger.job = undefined;
    // Revoked: the mark the stolen keys set no longer counts; the genuine one (8, k1 + k2) does.
    const next = await run({ releaseId: "next", counter: 9 }, ledger, after);
    expect(next.final.state).toBe("succeeded");
    ledger.job = undefined;
    // ... and still stops a replay of the genuine releases below it.
    const replay = await run(
      { releaseId: "good", issuedAt: "2026-01-09T00:00:00Z" },
      ledger,
      after,
    );
    expect(replay.final.error).toMatchObject({ code: "E_MANIFEST_COUNTER" });
  });

  it("a notice's counter hint, which nobody signed, never becomes the high-water mark", async () => {
    const r = await run({ releaseId: "good", counter: Number.MAX_SAFE_INTEGER });
    expect(r.final.state).toBe("succeeded");
    expect(r.ledger.highWater).toMatchObject({ counter: 8, releaseId: "good" });
  });
});
