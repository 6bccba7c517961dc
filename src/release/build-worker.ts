/**
 * The per-core part of `release build`: encrypt the signed app for one device's slots and write
 * each ciphertext to its file while hashing it, one chunk at a time. Runs in a worker thread
 * (build.ts starts one per core) or, with one job, in the calling thread; the same functions
 * either way.
 *
 * Files are written to a temporary dot-file and renamed when complete (src/fs/write-atomic.ts), so
 * an interrupted build leaves no file that looks finished; a rerun then redoes that device
 * (build.ts checks hashes).
 */
import { createHash } from "node:crypto";
import { closeSync, mkdirSync, openSync, readSync } from "node:fs";
import { dirname, join } from "node:path";
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import {
  createFlashCipher,
  type FlashCipher,
  type FlashCryptOptions,
} from "../esp/flash-encryption.js";
import { createAtomicFileSync } from "../fs/write-atomic.js";
import type { DeviceJob, SlotResult } from "./build-plan.js";
import { flashLength, slotCiphertextInto } from "./slot-crypt.js";

/**
 * Bytes encrypted per cipher call, and hashed while they are in cache: 128 KiB, the XTS kernel's
 * window (flash-encryption-xts-kernel.ts XTS_CHUNK_BYTES). Slot offsets are 64 KiB-aligned, so
 * each call is exactly one window.
 */
export const WRITE_CHUNK = 1 << 17;

/**
 * Ciphertext gathered before one write: 512 KiB. Writing a new 1.3 MB file on ext4 took
 * 0.61–0.70 ms in 64 KiB writes and 0.43–0.53 ms in 256 KiB and larger ones on the bench machine
 * (docs/benchmarks.md, "Release build"); beyond 512 KiB nothing changed.
 */
export const WRITE_BATCH_BYTES = 1 << 19;

/**
 * The one buffer every slot of this thread is encrypted into and written from (calls are
 * synchronous, so it is never shared between two). A fresh buffer per chunk, as before, made
 * 64 MB of garbage per worker before V8 collected it, and touching fresh memory costs about 12 µs
 * a 4 KiB page on the bench VM: 100 ms per worker (docs/benchmarks.md, "Release build").
 */
let batchBuffer: Uint8Array | undefined;

function batchOf(bytes: number): Uint8Array {
  if (!batchBuffer || batchBuffer.length < bytes) batchBuffer = new Uint8Array(bytes);
  return batchBuffer.subarray(0, bytes);
}

/**
 * Encrypts `signed` for flash `offset`, writes it to `path` (its directory exists) and returns
 * its size and SHA-256.
 * `chunkSize` (a multiple of 16) bytes per cipher call, written in batches of about
 * WRITE_BATCH_BYTES.
 */
export function writeSlotCiphertext(
  cipher: FlashCipher,
  offset: number,
  signed: Uint8Array,
  path: string,
  chunkSize = WRITE_CHUNK,
): { size: number; sha256: string } {
  if (!Number.isInteger(chunkSize) || chunkSize < 16 || chunkSize % 16 !== 0)
    throw new RangeError(`chunkSize must be a positive multiple of 16, got ${chunkSize}`);
  const size = flashLength(signed.length);
  const batch = batchOf(Math.max(chunkSize, WRITE_BATCH_BYTES - (WRITE_BATCH_BYTES % chunkSize)));
  const hash = createHash("sha256");
  // Not durable, like the build's other outputs: a rerun re-hashes and rebuilds (build.ts).
  const file = createAtomicFileSync(path, { mode: 0o644, durable: false });
  try {
    for (let at = 0; at < size; ) {
      let fill = 0;
      while (fill < batch.length && at < size) {
        const n = Math.min(chunkSize, size - at, batch.length - fill);
        hash.update(slotCiphertextInto(cipher, offset, signed, at, batch.subarray(fill, fill + n)));
        fill += n;
        at += n;
      }
      file.write(batch.subarray(0, fill));
    }
    file.commit();
  } catch (e) {
    file.abort();
    throw e;
  }
  return { size, sha256: hash.digest("hex") };
}

/** Size and SHA-256 of a file, read in chunks; null when it cannot be read. */
export function hashFile(
  path: string,
  chunkSize = WRITE_CHUNK,
): { size: number; sha256: string } | null {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return null;
  }
  try {
    const hash = createHash("sha256");
    const buf = new Uint8Array(chunkSize);
    let size = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      size += n;
    }
    return { size, sha256: hash.digest("hex") };
  } finally {
    closeSync(fd);
  }
}

/** One device: every slot of its job, with its key. */
export function runDeviceJob(
  signed: Uint8Array,
  cipherOptions: FlashCryptOptions,
  job: DeviceJob,
  outDir: string,
): SlotResult[] {
  const cipher = createFlashCipher(cipherOptions);
  // Each directory once: a recursive mkdir of an existing directory took 0.4 ms on the bench VM,
  // 2% of an ESP32 slot's encryption.
  for (const dir of new Set(job.slots.map((s) => dirname(join(outDir, s.file)))))
    mkdirSync(dir, { recursive: true });
  return job.slots.map((s) => ({
    slot: s.slot,
    offset: s.offset,
    ...writeSlotCiphertext(cipher, s.offset, signed, join(outDir, s.file)),
  }));
}

/**
 * What build.ts sends a worker: first the signed app (the worker starts before the app is
 * signed, build.ts "startWorkers"), then a job and its key per device.
 */
export type WorkerRequest =
  | { type: "app"; signed: SharedArrayBuffer; length: number }
  | { type: "job"; seq: number; job: DeviceJob; cipher: FlashCryptOptions };

export type WorkerReply =
  | { seq: number; ok: true; slots: SlotResult[] }
  | { seq: number; ok: false; code?: string; message: string };

/** workerData of a build worker. */
export interface BuildWorkerData {
  kind: "esp-ota-release-build";
  outDir: string;
}

if (
  !isMainThread &&
  (workerData as BuildWorkerData | undefined)?.kind === "esp-ota-release-build"
) {
  const data = workerData as BuildWorkerData;
  // The signed app in shared memory: each worker reads it, none copies it.
  let signed: Uint8Array | undefined;
  parentPort?.on("message", (req: WorkerRequest) => {
    if (req.type === "app") {
      signed = new Uint8Array(req.signed, 0, req.length);
      return;
    }
    let reply: WorkerReply;
    try {
      if (!signed) throw new Error("a build job arrived before the signed app");
      reply = {
        seq: req.seq,
        ok: true,
        slots: runDeviceJob(signed, req.cipher, req.job, data.outDir),
      };
    } catch (e) {
      const err = e as { code?: unknown; message?: unknown };
      reply = {
        seq: req.seq,
        ok: false,
        ...(typeof err.code === "string" ? { code: err.code } : {}),
        message: String(err.message ?? e),
      };
    }
    parentPort?.postMessage(reply);
  });
}
