import * as nodeFs from "node:fs";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type AtomicFs,
  type AtomicFsSync,
  createAtomicFileSync,
  writeFileAtomic,
  writeFileAtomicSync,
  writeFilesAtomicSync,
} from "../../src/fs/write-atomic.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "write-atomic-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** node:fs with every call recorded as "name:what" (fd numbers mapped to the path they opened). */
function recordingSyncFs(fail?: { op: string; error: string }): {
  fs: AtomicFsSync;
  calls: string[];
} {
  const calls: string[] = [];
  const fdPath = new Map<number, string>();
  const maybeFail = (op: string) => {
    if (fail?.op === op)
      throw Object.assign(new Error(`injected ${fail.error}`), { code: fail.error });
  };
  const fs: AtomicFsSync = {
    openSync: ((p: string, flags: string, mode?: number) => {
      const fd = nodeFs.openSync(p, flags, mode);
      fdPath.set(fd, p);
      calls.push(`open:${p === dir ? "DIR" : "file"}`);
      return fd;
    }) as AtomicFsSync["openSync"],
    writeSync: ((fd: number, b: Uint8Array, off: number, len: number) => {
      calls.push("write");
      maybeFail("write");
      return nodeFs.writeSync(fd, b, off, len);
    }) as AtomicFsSync["writeSync"],
    fsyncSync: (fd) => {
      calls.push(`fsync:${fdPath.get(fd as number) === dir ? "DIR" : "file"}`);
      maybeFail("fsync");
      nodeFs.fsyncSync(fd);
    },
    fchmodSync: (fd, mode) => {
      calls.push("fchmod");
      nodeFs.fchmodSync(fd, mode);
    },
    closeSync: (fd) => {
      calls.push("close");
      nodeFs.closeSync(fd);
    },
    renameSync: (a, b) => {
      calls.push("rename");
      maybeFail("rename");
      nodeFs.renameSync(a, b);
    },
    linkSync: (a, b) => {
      calls.push("link");
      nodeFs.linkSync(a, b);
    },
    unlinkSync: (p) => {
      calls.push("unlink");
      nodeFs.unlinkSync(p);
    },
  };
  return { fs, calls };
}

const leftovers = () => readdirSync(dir).filter((n) => n.endsWith(".tmp"));

describe("writeFileAtomicSync", () => {
  it("durable: fsyncs the file before the rename and the directory after it", () => {
    const { fs, calls } = recordingSyncFs();
    const p = join(dir, "record.json");
    writeFileAtomicSync(p, "hello\n", { mode: 0o600, durable: true }, fs);
    expect(readFileSync(p, "utf8")).toBe("hello\n");
    expect(calls).toEqual([
      "open:file",
      "write",
      "fchmod",
      "fsync:file",
      "close",
      "rename",
      "open:DIR",
      "fsync:DIR",
      "close",
    ]);
  });

  it("is durable by default; durable: false does no fsync", () => {
    const a = recordingSyncFs();
    writeFileAtomicSync(join(dir, "a"), "x", {}, a.fs);
    expect(a.calls.filter((c) => c.startsWith("fsync"))).toEqual(["fsync:file", "fsync:DIR"]);
    const b = recordingSyncFs();
    writeFileAtomicSync(join(dir, "b"), "x", { durable: false }, b.fs);
    expect(b.calls.filter((c) => c.startsWith("fsync"))).toEqual([]);
  });

  it("applies the mode exactly, whatever the umask", () => {
    const old = process.umask(0o077);
    try {
      const p = join(dir, "public.json");
      writeFileAtomicSync(p, "{}", { mode: 0o644 });
      expect(statSync(p).mode & 0o777).toBe(0o644);
      writeFileAtomicSync(p, "{}", { mode: 0o600 });
      expect(statSync(p).mode & 0o777).toBe(0o600);
    } finally {
      process.umask(old);
    }
  });

  for (const op of ["write", "fsync", "rename"]) {
    it(`removes the temporary file and keeps the old content when ${op} fails`, () => {
      const p = join(dir, "keep.json");
      writeFileSync(p, "old");
      const { fs } = recordingSyncFs({ op, error: "ENOSPC" });
      expect(() => writeFileAtomicSync(p, "new", {}, fs)).toThrow(/ENOSPC/);
      expect(readFileSync(p, "utf8")).toBe("old");
      expect(leftovers()).toEqual([]);
    });
  }

  it("exclusive: creates a new file, refuses an existing one (EEXIST) and leaves no temporary file", () => {
    const p = join(dir, "key.pem");
    writeFileAtomicSync(p, "first", { mode: 0o600, exclusive: true });
    expect(() => writeFileAtomicSync(p, "second", { mode: 0o600, exclusive: true })).toThrow(
      expect.objectContaining({ code: "EEXIST" }),
    );
    expect(readFileSync(p, "utf8")).toBe("first");
    expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(statSync(p).nlink).toBe(1);
    expect(leftovers()).toEqual([]);
  });

  it("streams chunks through createAtomicFileSync; abort leaves nothing", () => {
    const p = join(dir, "image.bin");
    const f = createAtomicFileSync(p, { durable: false });
    f.write(new Uint8Array([1, 2]));
    f.write(new Uint8Array([3]));
    f.commit();
    expect([...readFileSync(p)]).toEqual([1, 2, 3]);
    const g = createAtomicFileSync(join(dir, "other.bin"));
    g.write(new Uint8Array([9]));
    g.abort();
    expect(readdirSync(dir)).toEqual(["image.bin"]);
    expect(() => g.write(new Uint8Array(1))).toThrow(/after commit or abort/);
  });

  it("two writers of one path use different temporary files", () => {
    const p = join(dir, "same.json");
    const a = createAtomicFileSync(p);
    const b = createAtomicFileSync(p);
    expect(a.tmpPath).not.toBe(b.tmpPath);
    a.write(Buffer.from("A".repeat(1000)));
    b.write(Buffer.from("B".repeat(1000)));
    a.commit();
    b.commit();
    expect(readFileSync(p, "utf8")).toBe("B".repeat(1000));
    expect(leftovers()).toEqual([]);
  });

  it("refuses misuse with exact messages", () => {
    expect(() => writeFileAtomicSync("", "x")).toThrow(TypeError);
    expect(() => writeFileAtomicSync(join(dir, "m"), "x", { mode: 0o10000 })).toThrow(
      /mode must be 0\.\.0o7777/,
    );
    expect(() => writeFileAtomicSync(join(dir, "m"), 42 as unknown as string)).toThrow(TypeError);
  });
});

describe("writeFilesAtomicSync", () => {
  it("fsyncs every file, then renames them all, then fsyncs the directory once", () => {
    const { fs, calls } = recordingSyncFs();
    const files = ["a", "b", "c"].map((n) => ({ path: join(dir, `${n}.json`), data: n }));
    writeFilesAtomicSync(files, { mode: 0o600 }, fs);
    for (const f of files) {
      expect(readFileSync(f.path, "utf8")).toBe(f.data);
      expect(statSync(f.path).mode & 0o777).toBe(0o600);
    }
    const firstRename = calls.indexOf("rename");
    expect(calls.slice(0, firstRename).filter((c) => c === "fsync:file")).toHaveLength(3);
    expect(calls.filter((c) => c === "fsync:DIR")).toHaveLength(1);
    expect(calls.lastIndexOf("fsync:file")).toBeLessThan(firstRename);
    expect(leftovers()).toEqual([]);
  });

  it("a failure before the renames leaves every file as it was and no temporary file", () => {
    const a = join(dir, "a.json");
    writeFileSync(a, "old");
    const { fs } = recordingSyncFs({ op: "fsync", error: "EIO" });
    expect(() =>
      writeFilesAtomicSync(
        [
          { path: a, data: "new" },
          { path: join(dir, "b.json"), data: "new" },
        ],
        {},
        fs,
      ),
    ).toThrow(/EIO/);
    expect(readFileSync(a, "utf8")).toBe("old");
    expect(readdirSync(dir)).toEqual(["a.json"]);
    expect(() => writeFilesAtomicSync([], { exclusive: true } as never)).toThrow(RangeError);
  });
});

describe("writeFileAtomic (async)", () => {
  it("durable: fsyncs the file, then renames, then fsyncs the directory", async () => {
    const calls: string[] = [];
    const real: Record<string, (...a: unknown[]) => void> = {
      write: nodeFs.write as never,
      fsync: nodeFs.fsync as never,
      fchmod: nodeFs.fchmod as never,
      close: nodeFs.close as never,
      rename: nodeFs.rename as never,
      link: nodeFs.link as never,
      unlink: nodeFs.unlink as never,
    };
    const wrap =
      (name: string, tag?: (args: unknown[]) => string) =>
      (...args: unknown[]) => {
        calls.push(tag ? tag(args) : name);
        return real[name]!(...args);
      };
    const dirFds = new Set<number>();
    const fs = {
      open: (...args: unknown[]) => {
        const cb = args[args.length - 1] as (e: unknown, fd?: number) => void;
        const isDir = args[0] === dir;
        calls.push(isDir ? "open:DIR" : "open:file");
        (nodeFs.open as (...a: unknown[]) => void)(
          ...args.slice(0, -1),
          (e: unknown, fd: number) => {
            if (isDir && fd !== undefined) dirFds.add(fd);
            cb(e, fd);
          },
        );
      },
      write: wrap("write"),
      fsync: wrap("fsync", (a) => (dirFds.has(a[0] as number) ? "fsync:DIR" : "fsync:file")),
      fchmod: wrap("fchmod"),
      close: wrap("close"),
      rename: wrap("rename"),
      link: wrap("link"),
      unlink: wrap("unlink"),
    } as unknown as AtomicFs;
    const p = join(dir, "ledger.json");
    await writeFileAtomic(p, "{}\n", { mode: 0o600 }, fs);
    expect(readFileSync(p, "utf8")).toBe("{}\n");
    expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(calls).toEqual([
      "open:file",
      "write",
      "fchmod",
      "fsync:file",
      "close",
      "rename",
      "open:DIR",
      "fsync:DIR",
      "close",
    ]);
  });

  it("removes the temporary file when the rename fails", async () => {
    const fs = {
      ...nodeFs,
      rename: (_a: string, _b: string, cb: (e: Error) => void) =>
        cb(Object.assign(new Error("injected EXDEV"), { code: "EXDEV" })),
    } as unknown as AtomicFs;
    await expect(writeFileAtomic(join(dir, "x.json"), "x", {}, fs)).rejects.toThrow(/EXDEV/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("concurrent writers of one path never clobber each other's temporary file", async () => {
    const p = join(dir, "shared.json");
    // 64 KiB each, so writes of one writer interleave with the others' on the thread pool.
    const bodies = Array.from({ length: 8 }, (_, i) => String(i).repeat(65536));
    await Promise.all(bodies.map((b) => writeFileAtomic(p, b, { durable: false })));
    expect(bodies).toContain(readFileSync(p, "utf8"));
    expect(leftovers()).toEqual([]);
  });

  it("exclusive: EEXIST for an existing file, which keeps its content", async () => {
    const p = join(dir, "k.pem");
    await writeFileAtomic(p, "one", { exclusive: true });
    await expect(writeFileAtomic(p, "two", { exclusive: true })).rejects.toMatchObject({
      code: "EEXIST",
    });
    expect(readFileSync(p, "utf8")).toBe("one");
    expect(leftovers()).toEqual([]);
  });
});
