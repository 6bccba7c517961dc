/**
 * The one way this project replaces a file: write a temporary file beside it, then rename it into
 * place, so a reader (or a crash) sees the old content or the new, never half of either.
 *
 * With `durable` (the default) the data is also on disk before the rename, and the rename is on
 * disk before the call returns: fsync of the file, rename, fsync of the directory. Without the
 * first fsync, ext4 and xfs may commit the rename before the data, and a power cut then leaves
 * an empty file under the final name (the 2009 ext4 "zero-length files" reports; ext4's
 * auto_da_alloc papers over it for renames only, xfs and btrfs do not); without the second the
 * rename itself may be lost. Losing a device's registry record or a keyring file loses a
 * flash-encryption or signing key for good, so those writes are durable; files that can be
 * rebuilt (build outputs, simulator state) may pass `durable: false`.
 *
 * The temporary name is unique per call (pid and random bytes), so concurrent writers of one path,
 * in one process or several, never write into each other's temporary file: the last rename wins
 * whole. The temporary file is removed when anything fails. Errors are Node's own (`code` EACCES,
 * ENOSPC, EEXIST, ...): each caller maps them to its own coded error.
 *
 * `exclusive` refuses to replace an existing file (EEXIST), atomically: the finished temporary
 * file is hard-linked to the final name (link(2) fails if it exists), then unlinked. A key is
 * never overwritten, and a crash never leaves a torn key under its final name.
 */
import { randomBytes } from "node:crypto";
import * as nodeFs from "node:fs";
import { basename, dirname, join } from "node:path";

export interface WriteAtomicOptions {
  /** Permission bits of the file, applied exactly (fchmod: the umask does not clear any). Default 0o644. */
  mode?: number;
  /** fsync the file before the rename and the directory after it. Default true. */
  durable?: boolean;
  /** Fail with EEXIST instead of replacing an existing file. Default false. */
  exclusive?: boolean;
}

/** The parts of node:fs the synchronous writer uses (injectable, for tests). */
export type AtomicFsSync = Pick<
  typeof nodeFs,
  | "openSync"
  | "writeSync"
  | "fsyncSync"
  | "fchmodSync"
  | "closeSync"
  | "renameSync"
  | "linkSync"
  | "unlinkSync"
>;

/**
 * The parts of node:fs the asynchronous writer uses: the callback API, which runs on libuv's
 * thread pool; fs/promises' FileHandle cost the main thread 0.8 ms per file in
 * test/bench/release.ts, time taken from the encryption workers.
 */
export type AtomicFs = Pick<
  typeof nodeFs,
  "open" | "write" | "fsync" | "fchmod" | "close" | "rename" | "link" | "unlink"
>;

const DEFAULT_MODE = 0o644;

/**
 * `<dir>/.<name>.<pid>-<12 hex>.tmp`: unique per call; a dot-file, so `release serve`
 * (src/release/range.ts) never serves a half-written file and listings skip it; `*.tmp` is what
 * crash cleanup looks for.
 */
export function tempPathFor(path: string): string {
  return join(
    dirname(path),
    `.${basename(path)}.${process.pid}-${randomBytes(6).toString("hex")}.tmp`,
  );
}

function checkArgs(path: string, o: WriteAtomicOptions): Required<WriteAtomicOptions> {
  if (typeof path !== "string" || path === "")
    throw new TypeError("writeFileAtomic: path must be a non-empty string");
  const mode = o.mode ?? DEFAULT_MODE;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)
    throw new RangeError(`writeFileAtomic: mode must be 0..0o7777, got ${String(o.mode)}`);
  return { mode, durable: o.durable ?? true, exclusive: o.exclusive ?? false };
}

function toBytes(data: string | Uint8Array): Uint8Array {
  if (typeof data === "string") return Buffer.from(data, "utf8");
  if (data instanceof Uint8Array) return data;
  throw new TypeError("writeFileAtomic: data must be a string or a Uint8Array");
}

/**
 * A file being written in place of `path`: `write` chunks, then `commit` (or `abort`). For
 * writers that stream (the build's ciphertexts); writeFileAtomicSync is this with one chunk.
 */
export interface AtomicFileSync {
  readonly tmpPath: string;
  write(chunk: Uint8Array): void;
  /** fsync (if durable), close, rename (or link if exclusive), fsync the directory (if durable). */
  commit(): void;
  /** Closes and removes the temporary file; safe to call after a failed commit or twice. */
  abort(): void;
}

export function createAtomicFileSync(
  path: string,
  opts: WriteAtomicOptions = {},
  fs: AtomicFsSync = nodeFs,
): AtomicFileSync {
  const o = checkArgs(path, opts);
  const tmpPath = tempPathFor(path);
  // "wx": the name is fresh; never follow a symlink someone planted under it.
  let fd: number | undefined = fs.openSync(tmpPath, "wx", o.mode);
  let linked = false;
  let done = false;
  const closeFd = () => {
    if (fd === undefined) return;
    const f = fd;
    fd = undefined;
    fs.closeSync(f);
  };
  const abort = () => {
    if (done) return;
    done = true;
    try {
      closeFd();
    } catch {
      // Already failing: the cleanup below matters more than a close error.
    }
    try {
      if (!linked) fs.unlinkSync(tmpPath);
    } catch {
      // ENOENT: renamed already, or never created.
    }
  };
  return {
    tmpPath,
    write(chunk) {
      if (fd === undefined || done) throw new Error("AtomicFileSync: write after commit or abort");
      try {
        for (let at = 0; at < chunk.length; ) at += fs.writeSync(fd, chunk, at, chunk.length - at);
      } catch (e) {
        abort();
        throw e;
      }
    },
    commit() {
      if (fd === undefined || done) throw new Error("AtomicFileSync: commit after commit or abort");
      try {
        fs.fchmodSync(fd, o.mode);
        if (o.durable) fs.fsyncSync(fd);
        closeFd();
        if (o.exclusive) {
          fs.linkSync(tmpPath, path);
          linked = true;
          try {
            fs.unlinkSync(tmpPath);
          } catch {
            // The file is in place; a leftover link is only a stray *.tmp, not a failed write.
          }
        } else {
          fs.renameSync(tmpPath, path);
        }
        done = true;
      } catch (e) {
        abort();
        throw e;
      }
      if (o.durable) syncDirSync(dirname(path), fs);
    },
    abort,
  };
}

/** Replaces (or, with `exclusive`, creates) `path` with `data`, atomically; see the file comment. */
export function writeFileAtomicSync(
  path: string,
  data: string | Uint8Array,
  opts: WriteAtomicOptions = {},
  fs: AtomicFsSync = nodeFs,
): void {
  const bytes = toBytes(data);
  const f = createAtomicFileSync(path, opts, fs);
  f.write(bytes);
  f.commit();
}

/**
 * Several files at once, each atomically, all durable at the end: every file is written and
 * fsynced, then each is renamed into place, then each directory is fsynced once. For a release
 * build's counters (one registry record per device): 2.7 ms a file instead of 6.9 ms one by one
 * on the bench VM's ext4, where each directory fsync is a journal commit of its own. Each file is
 * old or new after a crash, not all of them together; a failure before the renames leaves every
 * file as it was and no temporary file. `exclusive` is not offered here.
 */
export function writeFilesAtomicSync(
  files: readonly { path: string; data: string | Uint8Array }[],
  opts: Omit<WriteAtomicOptions, "exclusive"> = {},
  fs: AtomicFsSync = nodeFs,
): void {
  if ((opts as WriteAtomicOptions).exclusive)
    throw new RangeError("writeFilesAtomicSync: exclusive is not supported");
  const started: { path: string; tmp: string; fd: number | undefined; renamed: boolean }[] = [];
  let durable = true;
  try {
    for (const f of files) {
      const o = checkArgs(f.path, opts);
      durable = o.durable;
      const bytes = toBytes(f.data);
      const tmp = tempPathFor(f.path);
      const entry = { path: f.path, tmp, fd: fs.openSync(tmp, "wx", o.mode), renamed: false };
      started.push(entry);
      for (let at = 0; at < bytes.length; )
        at += fs.writeSync(entry.fd!, bytes, at, bytes.length - at);
      fs.fchmodSync(entry.fd!, o.mode);
    }
    for (const e of started) {
      if (durable) fs.fsyncSync(e.fd!);
      const fd = e.fd!;
      e.fd = undefined;
      fs.closeSync(fd);
    }
    for (const e of started) {
      fs.renameSync(e.tmp, e.path);
      e.renamed = true;
    }
  } catch (err) {
    for (const e of started) {
      try {
        if (e.fd !== undefined) fs.closeSync(e.fd);
      } catch {
        // Already failing; removing the temporary files matters more.
      }
      try {
        if (!e.renamed) fs.unlinkSync(e.tmp);
      } catch {
        // ENOENT: never created.
      }
    }
    throw err;
  }
  if (durable) for (const dir of new Set(files.map((f) => dirname(f.path)))) syncDirSync(dir, fs);
}

function syncDirSync(dir: string, fs: AtomicFsSync): void {
  // Windows cannot open a directory for fsync (EPERM), and NTFS journals the rename itself.
  if (process.platform === "win32") return;
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The asynchronous writeFileAtomicSync: the same steps, off the event loop. */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: WriteAtomicOptions = {},
  fs: AtomicFs = nodeFs,
): Promise<void> {
  const o = checkArgs(path, opts);
  const bytes = toBytes(data);
  const tmpPath = tempPathFor(path);
  const call = <T>(f: (cb: (e: NodeJS.ErrnoException | null, v?: T) => void) => void) =>
    new Promise<T>((resolve, reject) => f((e, v) => (e ? reject(e) : resolve(v as T))));
  const fd = await call<number>((cb) => fs.open(tmpPath, "wx", o.mode, cb));
  let open = true;
  let created = true;
  try {
    for (let at = 0; at < bytes.length; )
      at += await call<number>((cb) => fs.write(fd, bytes, at, bytes.length - at, null, cb));
    await call<void>((cb) => fs.fchmod(fd, o.mode, cb));
    if (o.durable) await call<void>((cb) => fs.fsync(fd, cb));
    open = false;
    await call<void>((cb) => fs.close(fd, cb));
    if (o.exclusive) {
      await call<void>((cb) => fs.link(tmpPath, path, cb));
      created = false;
      await call<void>((cb) => fs.unlink(tmpPath, cb)).catch(() => {
        // The file is in place; a leftover link is only a stray *.tmp, not a failed write.
      });
    } else {
      await call<void>((cb) => fs.rename(tmpPath, path, cb));
      created = false;
    }
  } catch (e) {
    if (open) await call<void>((cb) => fs.close(fd, cb)).catch(() => {});
    if (created) await call<void>((cb) => fs.unlink(tmpPath, cb)).catch(() => {});
    throw e;
  }
  if (o.durable && process.platform !== "win32") {
    const dfd = await call<number>((cb) => fs.open(dirname(path), "r", cb));
    try {
      await call<void>((cb) => fs.fsync(dfd, cb));
    } finally {
      await call<void>((cb) => fs.close(dfd, cb));
    }
  }
}
