/**
 * `esp-ota release build`: the adapter that runs the pure plan (build-plan.ts) against files and
 * cores, as named steps: checkApp, selectDevices, checkDevices, sign, encrypt (per device, in
 * worker threads), sign manifests, write the index. docs/release.md describes the output.
 *
 * Safe to rerun: a device whose manifest is for this release and whose ciphertexts still hash to
 * the manifest's values is skipped; anything else about it is rebuilt. The per-device release
 * counter is persisted in the registry before the manifest that carries it is written, and a
 * rerun of the same release reuses it, so counters only grow and are never issued twice.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { EspOtaError } from "../errors.js";
import { createFlashCipher } from "../esp/flash-encryption.js";
import {
  encodeOtadata,
  OTA_SEQ_EMPTY,
  OTA_SEQ_LABEL_SIZE,
  OTA_STATE,
  otaEntry,
} from "../esp/otadata.js";
import {
  DATA_SUBTYPE,
  findPartition,
  otaAppPartitions,
  PART_TYPE,
} from "../esp/partition-table.js";
import { writeFileAtomic, writeFileAtomicSync } from "../fs/write-atomic.js";
import {
  type Check,
  checkDevice,
  checkReleaseApp,
  type DeviceJob,
  isBaseUrl,
  makeIndex,
  makeManifest,
  planDevice,
  type ReleaseApp,
  type ReleaseIndex,
  releaseIdFor,
  type SlotResult,
  signReleaseApp,
  variantUrl,
} from "./build-plan.js";
import {
  type BuildWorkerData,
  hashFile,
  runDeviceJob,
  type WorkerReply,
  type WorkerRequest,
} from "./build-worker.js";
import type { Keyring } from "./keyring-fs.js";
import { type ReleaseManifest, type SignedManifest, signManifest } from "./manifest.js";
import {
  type DeviceRecord,
  deviceCipherOptions,
  devicePartitions,
  nextReleaseCounter,
} from "./registry.js";
import type { DeviceRegistry } from "./registry-fs.js";

export type BuildStep =
  | "checkApp"
  | "selectDevices"
  | "checkDevices"
  | "sign"
  | "encrypt"
  | "signManifests"
  | "writeIndex";

export interface BuildOptions {
  keyring: Keyring;
  registry: DeviceRegistry;
  /** The app as ESP-IDF built it, unsigned. */
  app: Uint8Array;
  version: string;
  /** "all": every registered device of the app's chip. */
  devices: "all" | readonly string[];
  baseUrl: string;
  outDir: string;
  /** Manifest lifetime. */
  expiresInMs: number;
  /** Worker threads; default one per core (availableParallelism). 1 runs in this thread. */
  jobs?: number;
  now?: () => Date;
  onProgress?: (e: BuildProgress) => void;
}

export interface BuildProgress {
  deviceId: string;
  /** Devices finished (built or skipped) so far, of `total`. */
  done: number;
  total: number;
  skipped: boolean;
}

export interface BuildSummary {
  releaseId: string;
  built: string[];
  skipped: string[];
  /** Registered devices left out of `--devices all` because they are another chip. */
  excluded: { deviceId: string; chip: string }[];
  /** Ciphertext bytes written by this run. */
  bytesWritten: number;
  index: ReleaseIndex;
}

function fail(step: BuildStep, c: Extract<Check, { ok: false }>): never {
  throw new EspOtaError(c.code, c.reason, { step, deviceId: c.deviceId });
}

export async function buildRelease(o: BuildOptions): Promise<BuildSummary> {
  if (!isBaseUrl(o.baseUrl))
    throw new EspOtaError(
      "E_RELEASE_BASE_URL",
      `--base-url ${JSON.stringify(o.baseUrl)} is not an http(s) URL`,
      { step: "checkApp" },
    );

  // checkApp
  const appCheck = checkReleaseApp(o.app, o.version);
  if (!appCheck.ok) fail("checkApp", appCheck);
  const app = appCheck.app;
  const appSha = createHash("sha256").update(o.app).digest("hex");
  const releaseId = releaseIdFor(app.desc, appSha);

  // selectDevices
  const excluded: BuildSummary["excluded"] = [];
  let devices: DeviceRecord[];
  if (o.devices === "all") {
    devices = [];
    for (const d of o.registry.list()) {
      if (d.chip === app.chip) devices.push(d);
      else excluded.push({ deviceId: d.deviceId, chip: d.chip });
    }
  } else {
    devices = [...new Set(o.devices)].map((id) => o.registry.get(id));
  }
  if (devices.length === 0)
    throw new EspOtaError(
      "E_RELEASE_NO_DEVICES",
      `no device in the registry takes an ${app.chip} app${excluded.length ? ` (${excluded.length} other-chip device(s) left out)` : ""}`,
      { step: "selectDevices", chip: app.chip },
    );

  // The encryption workers start now, before the app is signed and the devices are checked: a
  // worker needs 45 ms to start on the bench machine, and 110–150 ms before it is encrypting when
  // two start together (test/bench/release.ts), time the main thread spends on the steps below
  // meanwhile (up to 60 ms with an RSA-3072 secure boot key).
  const threads = Math.max(1, Math.min(o.jobs ?? availableParallelism(), devices.length));
  const pool = threads > 1 ? startWorkers(threads, o.outDir) : undefined;
  try {
    return await buildWith(o, { app, releaseId, devices, excluded, pool });
  } finally {
    await pool?.close();
  }
}

async function buildWith(
  o: BuildOptions,
  r: {
    app: ReleaseApp;
    releaseId: string;
    devices: DeviceRecord[];
    excluded: BuildSummary["excluded"];
    pool: WorkerPool | undefined;
  },
): Promise<BuildSummary> {
  const { app, releaseId, devices, excluded, pool } = r;
  const now = o.now ?? (() => new Date());
  // sign: once, the plaintext, before any encryption (esp32-facts §5.4).
  const signed = signReleaseApp(o.app, o.keyring.secureBoot);

  // checkDevices
  for (const d of devices) {
    const c = checkDevice(app, signed.length, o.keyring.secureBoot, d);
    if (!c.ok) fail("checkDevices", c);
  }

  mkdirSync(o.outDir, { recursive: true });
  const jobs = devices.map((d) => ({ device: d, job: planDevice(d) }));
  const manifests = new Map<string, ReleaseManifest>();
  const skipped: string[] = [];
  const pending: typeof jobs = [];
  let done = 0;
  for (const j of jobs) {
    const existing = finishedManifest(o.outDir, releaseId, j.device, j.job, o.baseUrl);
    if (existing) {
      manifests.set(j.device.deviceId, existing);
      skipped.push(j.device.deviceId);
      o.onProgress?.({
        deviceId: j.device.deviceId,
        done: ++done,
        total: jobs.length,
        skipped: true,
      });
    } else pending.push(j);
  }

  // encrypt + signManifests: each device's manifest as soon as its ciphertexts are written.
  let bytesWritten = 0;
  const issuedAt = now();
  const expiresAt = new Date(issuedAt.getTime() + o.expiresInMs);
  // Every device's counter is persisted before any manifest is written, all at once: with
  // workers, while they start (the main thread is otherwise idle then, and afterwards it is the
  // build's bottleneck for XTS: docs/benchmarks.md, "Release build").
  const counters = new Map<string, number>();
  const reserveCounters = () => {
    const changed: DeviceRecord[] = [];
    for (const { device } of pending) {
      const { counter, record } = reserveCounter(o.registry, device.deviceId, releaseId);
      counters.set(device.deviceId, counter);
      if (record) changed.push(record);
    }
    // Durable, in one batch (a lost counter could be issued twice): registry-fs.ts.
    o.registry.updateMany(changed);
  };
  // Manifest files are written by libuv's thread pool, off the main thread, which signs the next
  // manifest meanwhile: creating a file took about 1 ms of the main thread's 5.7 ms per device in
  // the XTS release of test/bench/release.ts. The first failure stops the build.
  const manifestWrites: Promise<void>[] = [];
  let manifestWriteError: unknown;
  const finish = (device: DeviceRecord, job: DeviceJob, slots: SlotResult[]) => {
    if (manifestWriteError !== undefined) throw manifestWriteError;
    bytesWritten += slots.reduce((n, s) => n + s.size, 0);
    const counter = counters.get(device.deviceId)!;
    const m = signDeviceManifest(
      o,
      releaseId,
      app,
      device,
      job,
      slots,
      counter,
      issuedAt,
      expiresAt,
    );
    manifests.set(device.deviceId, m.signed);
    for (const r of rescueOtadata(device))
      manifestWrites.push(
        writeFileAtomic(join(o.outDir, device.deviceId, r.file), r.bytes, {
          mode: 0o644,
          durable: false,
        }).catch((e: unknown) => {
          manifestWriteError ??= writeError(device.deviceId, (e as Error).message, e, "encrypt");
        }),
      );
    manifestWrites.push(
      writeAtomicallyAsync(
        join(o.outDir, device.deviceId, "manifest.json"),
        `${JSON.stringify(m, null, 2)}\n`,
      ).then(
        () => {
          o.onProgress?.({
            deviceId: device.deviceId,
            done: ++done,
            total: jobs.length,
            skipped: false,
          });
        },
        (e: unknown) => {
          manifestWriteError ??= writeError(
            device.deviceId,
            (e as Error).message,
            e,
            "signManifests",
          );
        },
      ),
    );
  };
  if (pending.length > 0) {
    if (!pool) {
      reserveCounters();
      for (const { device, job } of pending) {
        let slots: SlotResult[];
        try {
          slots = runDeviceJob(signed, deviceCipherOptions(device), job, o.outDir);
        } catch (e) {
          throw writeError(device.deviceId, e instanceof Error ? e.message : String(e), e);
        }
        finish(device, job, slots);
        // Let a progress bar repaint between devices.
        await new Promise((r) => setImmediate(r));
      }
    } else {
      await runInWorkers(pool, signed, pending, finish, reserveCounters);
    }
    await Promise.all(manifestWrites);
    if (manifestWriteError !== undefined) throw manifestWriteError;
  }

  // writeIndex
  const index = makeIndex(releaseId, app, [...manifests.values()]);
  writeAtomically(join(o.outDir, "index.json"), `${JSON.stringify(index, null, 2)}\n`);
  return {
    releaseId,
    built: pending.map((t) => t.device.deviceId),
    skipped,
    excluded,
    bytesWritten,
    index,
  };
}

/**
 * The device's counter for this release, and its record to persist (undefined when it already
 * holds this counter) before the counter is used.
 */
function reserveCounter(
  registry: DeviceRegistry,
  deviceId: string,
  releaseId: string,
): { counter: number; record: DeviceRecord | undefined } {
  // Re-read the record: it is the persisted counter that must only grow.
  const current = registry.get(deviceId);
  const { counter, record } = nextReleaseCounter(current, releaseId);
  return { counter, record: record !== current ? record : undefined };
}

function signDeviceManifest(
  o: BuildOptions,
  releaseId: string,
  app: ReleaseApp,
  device: DeviceRecord,
  job: DeviceJob,
  slots: SlotResult[],
  counter: number,
  issuedAt: Date,
  expiresAt: Date,
): SignedManifest {
  const files = new Map(job.slots.map((s) => [s.slot, s.file]));
  const manifest = makeManifest({
    releaseId,
    device,
    app,
    counter,
    issuedAt,
    expiresAt,
    baseUrl: o.baseUrl,
    slots: slots.map((s) => ({ ...s, file: files.get(s.slot)! })),
  });
  // Revoked keys no longer sign: a gateway would not count their signatures anyway.
  const signers = o.keyring.manifestKeys.filter((k) => !o.keyring.revoked.includes(k.keyId));
  return signManifest(manifest, signers);
}

/**
 * The device's manifest from an earlier run of this release, when everything it names is still
 * there: same release, same partition table, same slots and URLs, and every ciphertext file of
 * the size and SHA-256 the manifest signs. Otherwise undefined, and the device is rebuilt.
 */
function finishedManifest(
  outDir: string,
  releaseId: string,
  device: DeviceRecord,
  job: DeviceJob,
  baseUrl: string,
): ReleaseManifest | undefined {
  const path = join(outDir, device.deviceId, "manifest.json");
  if (!existsSync(path)) return undefined;
  let m: ReleaseManifest;
  try {
    m = (JSON.parse(readFileSync(path, "utf8")) as SignedManifest).signed;
  } catch {
    return undefined;
  }
  if (
    m?.releaseId !== releaseId ||
    m.deviceId !== device.deviceId ||
    m.partitionTableSha256 !== device.partitionTableSha256 ||
    !Array.isArray(m.variants) ||
    m.variants.length !== job.slots.length
  )
    return undefined;
  for (const [i, s] of job.slots.entries()) {
    const v = m.variants[i]!;
    if (v.slot !== s.slot || v.offset !== s.offset) return undefined;
    if (v.urls?.[0] !== variantUrl(baseUrl, s.file)) return undefined;
    const h = hashFile(join(outDir, s.file));
    if (!h || h.size !== v.size || h.sha256 !== v.sha256) return undefined;
  }
  return m;
}

/** A device's ciphertexts or manifest could not be written (disk full, permissions, ...). */
function writeError(
  deviceId: string,
  message: string,
  cause?: unknown,
  step: BuildStep = "encrypt",
): EspOtaError {
  return new EspOtaError(
    "E_RELEASE_WRITE",
    `device ${deviceId}: ${message}`,
    { step, deviceId },
    cause,
  );
}

/**
 * Not durable: a build's outputs can be rebuilt, and a rerun checks every ciphertext against its
 * manifest's hash (the file comment); the registry's counters, which cannot be, are written
 * durably before the manifest that carries them (registry-fs.ts).
 */
function writeAtomically(path: string, text: string): void {
  writeFileAtomicSync(path, text, { mode: 0o644, durable: false });
}

/** Through fs's callback API, off the main thread (see writeFileAtomic). */
/**
 * The rescue path's otadata (issue 15; docs/operations.md "Rescue"): per OTA slot, the whole
 * otadata partition selecting that slot, encrypted for the partition's address with the device's
 * key, as it must lie in flash when the gateway writes it raw through the ROM loader (the ROM
 * cannot encrypt: docs/rom-protocol.md §11). `<slot>.otadata.bin` beside the slot's ciphertext.
 *
 * One entry, seq = slot index + 1 (the bootloader maps seq to slot (seq - 1) % slots), state NEW:
 * with rollback on, the bootloader boots it as PENDING_VERIFY and the app's own confirmation is
 * what the gateway then reads back; the other copy erased, so no older entry outranks it. It
 * depends only on the device (key, table), not on the release, and is rewritten with each build.
 * A table without otadata gets none.
 */
export function rescueOtadata(
  device: DeviceRecord,
): { slot: string; file: string; bytes: Uint8Array }[] {
  const parts = devicePartitions(device);
  const otadata = findPartition(parts, PART_TYPE.data, DATA_SUBTYPE.ota);
  if (!otadata) return [];
  const cipher = createFlashCipher(deviceCipherOptions(device));
  const empty = {
    seq: OTA_SEQ_EMPTY,
    label: new Uint8Array(OTA_SEQ_LABEL_SIZE).fill(0xff),
    state: 0xffffffff,
    crc: 0xffffffff,
  };
  return otaAppPartitions(parts).map((p, i) => ({
    slot: p.label,
    file: `${p.label}.otadata.bin`,
    bytes: cipher.encrypt(otadata.offset, encodeOtadata([otaEntry(i + 1, OTA_STATE.NEW), empty])),
  }));
}

function writeAtomicallyAsync(path: string, text: string): Promise<void> {
  return writeFileAtomic(path, text, { mode: 0o644, durable: false });
}

/**
 * How to start a worker: the compiled build-worker.js next to this file, or, when this file runs
 * as TypeScript source (tsx, vitest), a bootstrap that registers tsx's loader in the worker first:
 * a worker does not inherit the parent's loader, and Node 20 ignores `--import` in a worker's
 * execArgv ("Unknown file extension .ts").
 *
 * The compiled worker starts without the parent's module-loader flags: it needs none, and a
 * worker otherwise inherits them (e.g. tsx's `--require`/`--import` when a script under tsx calls
 * buildRelease) and runs them at start-up: 215–240 ms to its first reply instead of 88–100 ms for
 * two workers started together (test/bench/release.ts, docs/benchmarks.md "Release build").
 */
function workerEntry(): { script: string | URL; eval: boolean; execArgv?: string[] } {
  if (!import.meta.url.endsWith(".ts"))
    return {
      script: new URL("./build-worker.js", import.meta.url),
      eval: false,
      execArgv: withoutLoaderFlags(process.execArgv),
    };
  const src = JSON.stringify(new URL("./build-worker.ts", import.meta.url).href);
  return {
    script: `import("tsx/esm/api").then((t) => { t.register(); return import(${src}); });`,
    eval: true,
  };
}

/** Node options that preload code or install loaders; each takes a value (`--x v` or `--x=v`). */
const LOADER_FLAGS = new Set(["--import", "--require", "-r", "--loader", "--experimental-loader"]);

/** `argv` without LOADER_FLAGS and their values; every other option is kept. */
export function withoutLoaderFlags(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    if (LOADER_FLAGS.has(eq < 0 ? a : a.slice(0, eq))) {
      if (eq < 0) i++; // the value is the next argument
      continue;
    }
    out.push(a);
  }
  return out;
}

/**
 * Jobs queued at each worker: with two, a worker starts its next device while the main thread
 * signs and writes the manifest of the one it just finished. With one, each worker sat idle for
 * that long after every device: 15% of its time in the XTS release of test/bench/release.ts (when
 * signing took 1–2.5 ms with @noble/curves).
 */
const JOBS_IN_FLIGHT = 2;

/** Build workers started ahead of their jobs; `close` ends them. */
interface WorkerPool {
  readonly workers: readonly Worker[];
  /** The first failure of any worker so far (it crashed, or exited on its own). */
  failure(): EspOtaError | undefined;
  /** Calls `f` on the first failure, at once when there already is one. */
  onFailure(f: (e: EspOtaError) => void): void;
  close(): Promise<void>;
}

function startWorkers(threads: number, outDir: string): WorkerPool {
  const data: BuildWorkerData = { kind: "esp-ota-release-build", outDir };
  const entry = workerEntry();
  let failure: EspOtaError | undefined;
  let closing = false;
  const listeners: ((e: EspOtaError) => void)[] = [];
  const failed = (e: EspOtaError) => {
    if (failure || closing) return;
    failure = e;
    for (const f of listeners) f(e);
  };
  const workers = Array.from({ length: threads }, () => {
    const w = new Worker(entry.script, {
      workerData: data,
      eval: entry.eval,
      ...(entry.execArgv ? { execArgv: entry.execArgv } : {}),
    });
    w.on("error", (e) =>
      failed(
        new EspOtaError(
          "E_RELEASE_WORKER",
          `a build worker failed: ${e.message}`,
          { step: "encrypt" },
          e,
        ),
      ),
    );
    w.on("exit", (code) =>
      failed(
        new EspOtaError("E_RELEASE_WORKER", `a build worker exited (code ${code})`, {
          step: "encrypt",
        }),
      ),
    );
    return w;
  });
  return {
    workers,
    failure: () => failure,
    onFailure(f) {
      if (failure) f(failure);
      else listeners.push(f);
    },
    async close() {
      closing = true;
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

async function runInWorkers(
  pool: WorkerPool,
  signed: Uint8Array,
  pending: readonly { device: DeviceRecord; job: DeviceJob }[],
  finish: (device: DeviceRecord, job: DeviceJob, slots: SlotResult[]) => void,
  /** Runs once the first jobs are queued, while the workers start. */
  whileStarting: () => void,
): Promise<void> {
  // The signed app in shared memory: each worker reads it, none copies it.
  const shared = new SharedArrayBuffer(signed.length);
  new Uint8Array(shared).set(signed);
  const app: WorkerRequest = { type: "app", signed: shared, length: signed.length };
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    let active = 0;
    let failed = false;
    const fail = (e: unknown) => {
      failed = true;
      reject(e);
    };
    const dispatch = (w: Worker) => {
      if (failed || next >= pending.length) return;
      const seq = next++;
      const t = pending[seq]!;
      active++;
      const req: WorkerRequest = {
        type: "job",
        seq,
        job: t.job,
        cipher: deviceCipherOptions(t.device),
      };
      w.postMessage(req);
    };
    for (const w of pool.workers) {
      w.on("message", (r: WorkerReply) => {
        if (failed) return;
        active--;
        const t = pending[r.seq]!;
        if (!r.ok) {
          fail(writeError(t.device.deviceId, r.message));
          return;
        }
        // Refill the worker's queue before the manifest work, so it never waits for it.
        dispatch(w);
        try {
          finish(t.device, t.job, r.slots);
        } catch (e) {
          fail(e);
          return;
        }
        if (active === 0 && next >= pending.length) resolve();
      });
      w.postMessage(app);
      for (let i = 0; i < JOBS_IN_FLIGHT; i++) dispatch(w);
    }
    pool.onFailure(fail);
    try {
      whileStarting();
    } catch (e) {
      fail(e);
    }
  });
}
