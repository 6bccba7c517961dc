/**
 * The staging file of one image download and its sidecar (`${dest}.json`), the only file I/O of
 * src/download. Bytes are written where they belong as they arrive and hashed on the way, so the
 * SHA-256 is ready when the last byte is; a resumed file's prefix is hashed from disk first, a
 * 64 KiB read at a time (memory does not grow with the image).
 *
 * The sidecar binds the staged bytes to what they are meant to become: {url, etag, size, sha256}.
 * A partial file whose sidecar is missing or names another size or hash is not trusted and is
 * started over; the ETag lets a resume ask `If-Range`, so a file changed on the server since is
 * sent whole instead of spliced onto old bytes. The hash check at the end is what finally decides.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, constants as fsc } from "node:fs";
import { type FileHandle, mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { EspOtaError } from "../errors.js";
import { quote } from "../text.js";
import { strongEtag } from "./policy.js";

export interface Sidecar {
  /** The mirror the bytes came from, redacted (redactUrl); its ETag is only meaningful there. */
  url: string;
  /** The strong ETag of that response, or null when the server sent none. */
  etag: string | null;
  size: number;
  sha256: string;
}

const PREFIX_CHUNK = 64 * 1024;

function stagingError(op: string, path: string, e: unknown): EspOtaError {
  const code = (e as { code?: unknown } | null)?.code;
  return new EspOtaError(
    "E_DOWNLOAD_STAGING",
    `cannot ${op} ${quote(path, 300)}: ${quote(e instanceof Error ? e.message : String(e), 300)}`,
    { path, op, ...(typeof code === "string" ? { errno: code } : {}) },
    e,
  );
}

async function staged<T>(op: string, path: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw stagingError(op, path, e);
  }
}

export class StagingFile {
  /** Bytes staged (and hashed) so far: the next byte's position. */
  offset = 0;
  /**
   * How many sources the staged bytes came from (the disk prefix counts as one, each response
   * that continued it as another). Over 1 means a hash mismatch may come from splicing two
   * versions of the file, which one fresh download can tell apart.
   */
  pieces = 0;
  /** How many times the staged bytes were dropped (reset) since the file was opened. */
  resets = 0;
  private hash: Hash = createHash("sha256");
  private sidecar: Sidecar | null;
  private readonly sidecarPath: string;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly want: { size: number; sha256: string },
    sidecar: Sidecar | null,
  ) {
    this.sidecar = sidecar;
    this.sidecarPath = `${path}.json`;
  }

  /**
   * Opens (creating) the staging file. A file with a sidecar for this size and hash is resumed:
   * its bytes are hashed and `offset` is its length. Anything else is truncated to nothing.
   */
  static async open(path: string, want: { size: number; sha256: string }): Promise<StagingFile> {
    await staged("create the directory of", path, () =>
      mkdir(dirname(path), { recursive: true, mode: 0o700 }),
    );
    const sidecar = await readSidecar(`${path}.json`);
    const fh = await staged("open", path, () => open(path, fsc.O_RDWR | fsc.O_CREAT, 0o600));
    const f = new StagingFile(path, fh, want, null);
    try {
      const { size } = await staged("stat", path, () => fh.stat());
      const trusted =
        sidecar !== null &&
        sidecar.size === want.size &&
        sidecar.sha256 === want.sha256 &&
        size <= want.size;
      if (trusted && size > 0) {
        f.sidecar = sidecar;
        await f.hashPrefix(size);
        f.offset = size;
        f.pieces = 1;
      } else {
        await f.reset();
      }
      return f;
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  /** The ETag to send in If-Range when resuming from `urlKey` (the redacted mirror URL). */
  validatorFor(urlKey: string): string | undefined {
    return this.sidecar !== null && this.sidecar.url === urlKey && this.sidecar.etag !== null
      ? this.sidecar.etag
      : undefined;
  }

  /** The redacted URL the staged bytes came from, if known. */
  get sourceUrl(): string | undefined {
    return this.sidecar?.url;
  }

  /**
   * A response's body is about to be written from `start` (0 = start over, else `offset`).
   * Records where it comes from in the sidecar before its first byte lands, so a restart after a
   * crash knows what the staged bytes are.
   */
  async begin(urlKey: string, etag: string | undefined, start: number): Promise<void> {
    if (start !== 0 && start !== this.offset)
      throw new RangeError("begin: start is not the offset");
    if (start === 0 && this.offset > 0) await this.reset();
    this.pieces++;
    const next: Sidecar = {
      url: urlKey,
      etag: etag ?? null,
      size: this.want.size,
      sha256: this.want.sha256,
    };
    const cur = this.sidecar;
    if (cur && cur.url === next.url && cur.etag === next.etag) return;
    await this.writeSidecar(next);
  }

  /** Writes `chunk` at `offset` and hashes it. The caller keeps `offset + length <= size`. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.offset + chunk.length > this.want.size) throw new RangeError("write past size");
    let done = 0;
    while (done < chunk.length) {
      const at = done;
      const { bytesWritten } = await staged("write", this.path, () =>
        this.fh.write(chunk, at, chunk.length - at, this.offset + at),
      );
      done += bytesWritten;
    }
    this.hash.update(chunk);
    this.offset += chunk.length;
  }

  /** Flushes the file to disk and returns the SHA-256 (lowercase hex) of all `size` bytes. */
  async finish(): Promise<string> {
    if (this.offset !== this.want.size) throw new RangeError("finish before the last byte");
    await staged("sync", this.path, () => this.fh.sync());
    return this.hash.digest("hex");
  }

  /** Drops every staged byte and the sidecar: the next response starts from 0. */
  async reset(): Promise<void> {
    await staged("truncate", this.path, () => this.fh.truncate(0));
    await staged("remove", this.sidecarPath, () => rm(this.sidecarPath, { force: true }));
    this.sidecar = null;
    this.hash = createHash("sha256");
    this.offset = 0;
    this.pieces = 0;
    this.resets++;
  }

  /**
   * Closes the file. `outcome` "done": the image is complete, the sidecar goes (it only serves a
   * resume). "keep": the staged bytes stay for a later resume, unless there are none, in which
   * case both files go.
   */
  async close(outcome: "done" | "keep"): Promise<void> {
    await staged("close", this.path, () => this.fh.close());
    if (outcome === "done" || this.offset === 0)
      await staged("remove", this.sidecarPath, () => rm(this.sidecarPath, { force: true }));
    if (outcome === "keep" && this.offset === 0)
      await staged("remove", this.path, () => rm(this.path, { force: true }));
  }

  private async hashPrefix(length: number): Promise<void> {
    await staged("read", this.path, async () => {
      const s = createReadStream("", {
        fd: this.fh,
        start: 0,
        end: length - 1,
        highWaterMark: PREFIX_CHUNK,
        autoClose: false,
      });
      for await (const chunk of s) this.hash.update(chunk as Buffer);
    });
  }

  /** Atomically: a temporary file, synced, renamed over the old sidecar. */
  private async writeSidecar(s: Sidecar): Promise<void> {
    const tmp = `${this.sidecarPath}.tmp`;
    await staged("write", tmp, async () => {
      const h = await open(tmp, "w", 0o600);
      try {
        await h.writeFile(`${JSON.stringify(s)}\n`);
        await h.sync();
      } finally {
        await h.close();
      }
      await rename(tmp, this.sidecarPath);
    });
    this.sidecar = s;
  }
}

/** The sidecar, or null when it is missing or not one of ours (then the partial is not trusted). */
async function readSidecar(path: string): Promise<Sidecar | null> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as { code?: unknown }).code === "ENOENT") return null;
    throw stagingError("read", path, e);
  }
  try {
    const v = JSON.parse(text) as Partial<Sidecar>;
    if (
      typeof v.url === "string" &&
      // Only an ETag the downloader itself would have kept (strongEtag): it is sent back as
      // If-Range, and a header value with CR LF in it failed every request (a sidecar is a
      // file in the state directory, hostile until checked).
      (v.etag === null || (typeof v.etag === "string" && strongEtag(v.etag) === v.etag)) &&
      typeof v.size === "number" &&
      typeof v.sha256 === "string"
    )
      return { url: v.url, etag: v.etag, size: v.size, sha256: v.sha256 };
  } catch {
    // A torn or foreign sidecar: the partial file is started over.
  }
  return null;
}
