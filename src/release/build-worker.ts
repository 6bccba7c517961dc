/**
 * The per-core part of `release build`: encrypt the signed app for one device's slots and write
 * each ciphertext to its file while hashing it, one chunk at a time. Runs in a worker thread
 * (build.ts starts one per core) or, with one job, in the calling thread; the same functions
 * either way.
 *
 * Files are written to `<file>.partial` and renamed when complete, so an interrupted build leaves
 * no file that looks finished; a rerun then redoes that device (build.ts checks hashes).
 */
import { createHash } from "node:crypto";
import { closeSync, mkdirSync, openSync, readSync, renameSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import {
  createFlashCipher,
  type FlashCipher,
  type FlashCryptOptions,
} from "../esp/flash-encryption.js";
import type { DeviceJob, SlotResult } from "./build-plan.js";
import { slotCiphertext } from "./slot-crypt.js";

/**
 * 64 KiB: large enough that per-call overhead is noise (a 1 MiB chunk was no faster in
 * test/bench/release.ts), and below V8's large-object threshold (128 KiB), so each chunk's
 * ciphertext is a young-generation allocation that a scavenge frees at once. 256 KiB chunks went
 * to large-object space, lived until a full GC, and pushed peak RSS towards 300 MB.
 */
export const WRITE_CHUNK = 1 << 16;

/** Encrypts `signed` for flash `offset`, writes it to `path` and returns its size and SHA-256. */
export function writeSlotCiphertext(
  cipher: FlashCipher,
  offset: number,
  signed: Uint8Array,
  path: string,
  chunkSize = WRITE_CHUNK,
): { size: number; sha256: string } {
  mkdirSync(dirname(path), { recursive: true });
  const partial = `${path}.partial`;
  const hash = createHash("sha256");
  const fd = openSync(partial, "w", 0o644);
  let size = 0;
  try {
    for (const chunk of slotCiphertext(cipher, offset, signed, chunkSize)) {
      hash.update(chunk);
      let done = 0;
      while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
      size += chunk.length;
    }
  } finally {
    closeSync(fd);
  }
  renameSync(partial, path);
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
  return job.slots.map((s) => ({
    slot: s.slot,
    offset: s.offset,
    ...writeSlotCiphertext(cipher, s.offset, signed, join(outDir, s.file)),
  }));
}

/** What build.ts sends a worker: the job and the key, per device. */
export interface WorkerRequest {
  seq: number;
  job: DeviceJob;
  cipher: FlashCryptOptions;
}

export type WorkerReply =
  | { seq: number; ok: true; slots: SlotResult[] }
  | { seq: number; ok: false; code?: string; message: string };

/** workerData of a build worker: the signed app, shared (not copied) between the workers. */
export interface BuildWorkerData {
  kind: "esp-ota-release-build";
  signed: SharedArrayBuffer;
  length: number;
  outDir: string;
}

if (
  !isMainThread &&
  (workerData as BuildWorkerData | undefined)?.kind === "esp-ota-release-build"
) {
  const data = workerData as BuildWorkerData;
  const signed = new Uint8Array(data.signed, 0, data.length);
  parentPort?.on("message", (req: WorkerRequest) => {
    let reply: WorkerReply;
    try {
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
