/**
 * `npm run bench:release`: `release build` for 200 devices x 2 OTA slots of a 1.3 MB image, next to
 * raw flash-encryption throughput measured in the same run; figures go in docs/release.md.
 *
 * The fleet is the one the tests use: 100 ESP32 (Secure Boot V1, AES flash encryption) and 100
 * ESP32-S3 (Secure Boot V2 RSA-3072, XTS-AES-256). An app image is for one chip, so that is two
 * releases, built one after the other with every core (`jobs` = availableParallelism()).
 *
 * "Raw" is createFlashCipher(...).encrypt over the whole signed image in one call on one core
 * (median of several, after warm-up): the bare cipher, with no hashing, no files, no workers.
 * The pipeline figure is ciphertext bytes / wall time / cores, so a ratio of 1.0 means every core
 * encrypted flat out all the time. It also pays for SHA-256 of every byte (node:crypto), writing
 * the files, the per-device cipher set-up, and signing and writing 200 manifests.
 *
 * Peak RSS is the process's (worker threads included): process.resourceUsage().maxRSS.
 *
 * The build runs from dist/ (the npm script runs `npm run build` first), as `esp-ota release
 * build` does for an operator: from TypeScript source each worker thread would first load tsx
 * and transpile its imports, about 1.7 s per worker on the reference machine, which is a cost of
 * running from source, not of the pipeline.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { createFlashCipher, generateFlashEncryptionKey } from "../../src/esp/flash-encryption.js";
import { encodePartitionTable, parsePartitionCsv } from "../../src/esp/partition-table.js";
import { flashLength, signReleaseApp } from "../../src/release/build-plan.js";
import { generateManifestKey } from "../../src/release/keyring.js";
import type { Keyring } from "../../src/release/keyring-fs.js";
import { makeDeviceRecord } from "../../src/release/registry.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import { makeSyntheticApp } from "../../src/sim/synthetic-app.js";
import { keys } from "../helpers/sim.js";

const dist = new URL("../../dist/src/release/build.js", import.meta.url);
const { buildRelease } = (await import(dist.href)) as typeof import("../../src/release/build.js");

const DEVICES_PER_CHIP = 100;
const IMAGE_SIZE = 1_300_000;
const cores = availableParallelism();
const root = mkdtempSync(join(tmpdir(), "bench-release-"));
const table = encodePartitionTable(
  parsePartitionCsv(
    [
      "nvs, data, nvs, 0x9000, 0x4000",
      "otadata, data, ota, 0xd000, 0x2000",
      "phy_init, data, phy, 0xf000, 0x1000",
      "ota_0, app, ota_0, 0x10000, 0x180000",
      "ota_1, app, ota_1, 0x190000, 0x180000",
    ].join("\n"),
  ),
);

type Chip = "esp32" | "esp32s3";
const CHIPS: { chip: Chip; scheme: "esp32" | "xts"; keyBits: 256 | 512; macPrefix: string }[] = [
  { chip: "esp32", scheme: "esp32", keyBits: 256, macPrefix: "240ac4" },
  { chip: "esp32s3", scheme: "xts", keyBits: 512, macPrefix: "348518" },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/**
 * Raw single-core throughput of the bare cipher over `data` (MB = 10^6 bytes): per wall second
 * and per CPU second (process.cpuUsage; no worker exists yet, so that is this thread's). The XTS
 * kernel needs a few dozen calls before V8 has optimised it, hence the long warm-up.
 */
function rawMBps(scheme: "esp32" | "xts", data: Uint8Array): { wall: number; cpu: number } {
  const cipher =
    scheme === "esp32"
      ? createFlashCipher({ scheme, key: generateFlashEncryptionKey(256), flashCryptConf: 0xf })
      : createFlashCipher({ scheme, key: generateFlashEncryptionKey(512) });
  const times: number[] = [];
  const cpuTimes: number[] = [];
  const [warmup, rounds] = scheme === "esp32" ? [3, 9] : [60, 61];
  for (let i = 0; i < rounds + warmup; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    cipher.encrypt(0x10000, data);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const c = process.cpuUsage(c0);
    if (i >= warmup) {
      times.push(ms);
      cpuTimes.push((c.user + c.system) / 1000);
    }
  }
  const mb = data.length / 1e6;
  return { wall: mb / (median(times) / 1000), cpu: mb / (median(cpuTimes) / 1000) };
}

const registry = openRegistry(join(root, "registry"), { create: true });
const results: {
  chip: Chip;
  bytes: number;
  wallMs: number;
  cpuMs: number;
  raw: { wall: number; cpu: number };
}[] = [];

for (const c of CHIPS) {
  for (let i = 0; i < DEVICES_PER_CHIP; i++) {
    registry.add(
      makeDeviceRecord({
        mac: `${c.macPrefix}${i.toString(16).padStart(6, "0")}`,
        chip: c.chip,
        partitionTable: table,
        flashEncryptionKey: generateFlashEncryptionKey(c.keyBits),
        now: new Date(),
      }),
    );
  }
  const app = makeSyntheticApp({
    chip: c.chip,
    project: "bench",
    version: "1.0.0",
    size: IMAGE_SIZE,
  });
  const keyring: Keyring = {
    dir: "(in memory)",
    secureBoot:
      c.chip === "esp32" ? { version: 1, keys: [keys.sbv1()] } : { version: 2, keys: [keys.rsa()] },
    manifestKeys: [generateManifestKey("ecdsa-p256")],
    threshold: 1,
    revoked: [],
  };
  // Raw: the same bytes the pipeline encrypts (the signed image, padded to a 16-byte block).
  const signed = signReleaseApp(app, keyring.secureBoot);
  const padded = new Uint8Array(flashLength(signed.length)).fill(0xff);
  padded.set(signed);
  const raw = rawMBps(c.scheme, padded);

  const out = join(root, `out-${c.chip}`);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const summary = await buildRelease({
    keyring,
    registry,
    app,
    version: "1.0.0",
    devices: "all",
    baseUrl: "https://updates.example.com/bench/",
    outDir: out,
    expiresInMs: 86_400_000,
    jobs: cores,
  });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  if (summary.built.length !== DEVICES_PER_CHIP)
    throw new Error("bench: not every device was built");
  results.push({ chip: c.chip, bytes: summary.bytesWritten, wallMs, cpuMs, raw });
  rmSync(out, { recursive: true, force: true });
}
rmSync(root, { recursive: true, force: true });

const rssMB = Math.round(process.resourceUsage().maxRSS / 1024);
console.log(
  `release-bench: ${cores} cores, ${DEVICES_PER_CHIP * CHIPS.length} devices x 2 slots, image ${IMAGE_SIZE} bytes`,
);
console.log(
  "| release | ciphertext MB | wall s | cores busy | pipeline MB/s per core | raw MB/s (1 core) | ratio | pipeline MB per CPU-s | raw MB per CPU-s | ratio per CPU-s |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
let pipelineCoreMs = 0;
let rawMs = 0;
for (const r of results) {
  const perCore = r.bytes / 1e6 / (r.wallMs / 1000) / cores;
  // Per CPU-second actually spent (all threads): what the ratio is when other processes share
  // the cores, as they did during the recorded runs.
  const perCpu = r.bytes / 1e6 / (r.cpuMs / 1000);
  console.log(
    `| ${DEVICES_PER_CHIP} x ${r.chip} | ${(r.bytes / 1e6).toFixed(0)} | ${(r.wallMs / 1000).toFixed(2)} | ${(r.cpuMs / r.wallMs).toFixed(2)} | ${perCore.toFixed(0)} | ${r.raw.wall.toFixed(0)} | ${(perCore / r.raw.wall).toFixed(2)} | ${perCpu.toFixed(0)} | ${r.raw.cpu.toFixed(0)} | ${(perCpu / r.raw.cpu).toFixed(2)} |`,
  );
  pipelineCoreMs += r.wallMs * cores;
  rawMs += (r.bytes / 1e6 / r.raw.wall) * 1000;
}
// Whole fleet: the core-time raw encryption needs for all its bytes over the core-time the
// pipeline took for them.
const ratio = rawMs / pipelineCoreMs;
console.log(`release-bench: ratio to raw = ${ratio.toFixed(2)}, rss = ${rssMB} MB`);
