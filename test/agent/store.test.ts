/** LedgerStore: atomic, asynchronous, one write in flight per device, later saves coalesced. */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { LedgerStore } from "../../agent/store.js";
import { type DeviceLedger, decideNotice, newLedger } from "../../src/gateway/ledger.js";
import type { UpdateNotice } from "../../src/mqtt/messages.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function store(): LedgerStore {
  const d = mkdtempSync(join(tmpdir(), "ledger-store-"));
  dirs.push(d);
  return new LedgerStore(d);
}

describe("LedgerStore", () => {
  it("a save resolves once its snapshot is on disk; load reads it back", async () => {
    const s = store();
    const l = newLedger("240ac4fe0001");
    l.seq = 7;
    await s.save(l);
    expect(s.load("240ac4fe0001")).toEqual(l);
    // Only the ledger: no temporary file is left behind.
    expect(existsSync(join(s.dir, `240ac4fe0001.json.${process.pid}.tmp`))).toBe(false);
  });

  it("saves made while one is in flight all resolve, and the file ends as the last snapshot", async () => {
    const s = store();
    const l = newLedger("240ac4fe0002");
    const saves: Promise<void>[] = [];
    for (let i = 1; i <= 50; i++) {
      l.seq = i;
      saves.push(s.save(l));
    }
    await Promise.all(saves);
    expect(JSON.parse(readFileSync(join(s.dir, "240ac4fe0002.json"), "utf8")).seq).toBe(50);
    // A save resolves only when a snapshot at least as new as its own is written: the first
    // save's promise, awaited alone, already sees a file that holds its change.
    l.seq = 51;
    const first = s.save(l);
    l.seq = 52;
    const second = s.save(l);
    await first;
    expect(
      JSON.parse(readFileSync(join(s.dir, "240ac4fe0002.json"), "utf8")).seq,
    ).toBeGreaterThanOrEqual(51);
    await second;
    expect(s.load("240ac4fe0002").seq).toBe(52);
  });

  it("flush waits for every pending write of every device", async () => {
    const s = store();
    const ids = ["240ac4fe0003", "240ac4fe0004", "240ac4fe0005"];
    for (const id of ids) {
      const l = newLedger(id);
      l.seq = 3;
      void s.save(l);
    }
    await s.flush();
    for (const id of ids) expect(s.load(id).seq).toBe(3);
  });

  it("saveNow is on disk when it returns, and a background write of an older snapshot never lands over it", async () => {
    const s = store();
    const l = newLedger("240ac4fe0007");
    l.seq = 1;
    const older = s.save(l); // in flight: its file is being written on the thread pool
    l.seq = 2;
    s.saveNow(l);
    expect(s.load("240ac4fe0007").seq).toBe(2);
    await older;
    await s.flush();
    expect(s.load("240ac4fe0007").seq).toBe(2);
    l.seq = 3;
    await s.save(l);
    expect(s.load("240ac4fe0007").seq).toBe(3);
  });

  it("a write that fails rejects with E_AGENT_STATE; the next one, once possible, succeeds", async () => {
    const s = store();
    const l = newLedger("240ac4fe0006");
    // The devices directory replaced by a file: every open below it fails (ENOTDIR).
    rmSync(s.dir, { recursive: true });
    writeFileSync(s.dir, "not a directory");
    await expect(s.save(l)).rejects.toMatchObject({ code: "E_AGENT_STATE" });
    rmSync(s.dir);
    const again = new LedgerStore(join(s.dir, ".."));
    l.seq = 9;
    await again.save(l);
    expect(again.load("240ac4fe0006").seq).toBe(9);
  });
});

describe("a ledger that is valid JSON of the wrong shape (issue 12 defect 9)", () => {
  const ID = "240ac4fe00a0";
  const notice: UpdateNotice = {
    format: 1,
    deviceId: ID,
    releaseId: "r9",
    counter: 9,
    manifestUrls: ["http://127.0.0.1/m.json"],
    issuedAt: "2026-11-23T10:00:00.000Z",
  };
  const good = { counter: 7, releaseId: "r7", keyIds: ["0".repeat(32)] };
  const base = { format: 1, deviceId: ID, seq: 12 };
  const rows: { name: string; file: string; mark?: number }[] = [
    {
      name: "marks is a number",
      file: JSON.stringify({ ...base, marks: 5, highWater: good }),
      mark: 7,
    },
    {
      name: "a job without a notice",
      file: JSON.stringify({
        ...base,
        marks: [good],
        job: { notice: 3, step: "download", startedAt: "x" },
      }),
      mark: 7,
    },
    {
      name: "seq is a string",
      file: JSON.stringify({ ...base, seq: "12", highWater: good }),
      mark: 7,
    },
    {
      name: "an unknown step",
      file: JSON.stringify({
        ...base,
        highWater: good,
        job: { notice, step: "flying", startedAt: "x" },
      }),
      mark: 7,
    },
    {
      name: "a last status that is no status",
      file: JSON.stringify({ ...base, highWater: good, lastStatus: { state: 5 } }),
      mark: 7,
    },
    {
      name: "a high-water mark of the wrong type",
      file: JSON.stringify({ ...base, highWater: { counter: "9" } }),
    },
    {
      name: "another device's ledger",
      file: JSON.stringify({ ...base, deviceId: "240ac4fe00ff" }),
    },
    { name: "an array", file: "[]" },
    { name: "not JSON", file: "{ format: 1" },
  ];
  for (const r of rows)
    it(`${r.name}: moved to *.corrupt with a coded log line, the device starts afresh ${r.mark ? "keeping its mark" : "(no mark to keep, said so)"}`, () => {
      const d = mkdtempSync(join(tmpdir(), "ledger-store-"));
      dirs.push(d);
      const lines: { obj: Record<string, unknown>; msg: string }[] = [];
      const log = {
        info() {},
        warn() {},
        error: (obj: object, msg: string) =>
          void lines.push({ obj: obj as Record<string, unknown>, msg }),
      };
      const s = new LedgerStore(d, { log });
      const f = join(s.dir, `${ID}.json`);
      writeFileSync(f, r.file);
      const l = s.load(ID);
      expect(readFileSync(`${f}.corrupt`, "utf8")).toBe(r.file);
      expect(l.deviceId).toBe(ID);
      expect(l.seq).toBeGreaterThan(12);
      expect(l.highWater?.counter).toBe(r.mark);
      expect(lines).toHaveLength(1);
      expect(lines[0]!.obj.code).toBe("E_AGENT_LEDGER_CORRUPT");
      expect(lines[0]!.msg).toContain(r.mark ? "is kept" : "no readable high-water mark");
      // The next notice is decided, not crashed on; below the salvaged mark it is refused.
      const next = decideNotice(l, notice);
      expect(next.action).toBe("start");
      if (r.mark) expect(decideNotice(l, { ...notice, counter: 3 }).action).toBe("refuse");
      // The fresh ledger, marks included, is already on disk.
      expect(new LedgerStore(d).load(ID)).toEqual(l);
    });

  it("a well-formed ledger with every field loads as it is", async () => {
    const s = store();
    const l: DeviceLedger = {
      ...newLedger(ID),
      seq: 5,
      highWater: good,
      marks: [good],
      lastFinal: { releaseId: "r7", state: "succeeded", at: "2026-11-23T09:00:00.000Z" },
      job: {
        notice,
        step: "transfer",
        startedAt: "2026-11-23T10:00:00.000Z",
        manifestText: "{}",
        variant: {
          slot: "ota_1",
          offset: 0x160000,
          size: 100,
          sha256: "a".repeat(64),
          urls: ["http://x/y"],
        },
        targetVersion: "2.0.0",
        previous: {
          project: "p",
          version: "1.0.0",
          secureVersion: 0,
          slot: "ota_0",
          offset: 0x10000,
          state: "VALID",
        },
        staging: "/tmp/x.bin",
      },
      lastNotice: notice,
      lastStatus: {
        format: 1,
        deviceId: ID,
        gatewayId: "gw",
        seq: 5,
        state: "transferring",
        releaseId: "r9",
        updatedAt: "2026-11-23T10:00:01.000Z",
      },
      erases: ["2026-11-23T10:00:00.000Z"],
    };
    await s.save(l);
    expect(s.load(ID)).toEqual(l);
    expect(existsSync(join(s.dir, `${ID}.json.corrupt`))).toBe(false);
  });
});

describe("bounded state (issue 12 defect 14)", () => {
  it("temporary files left by a crashed writer are removed at start", () => {
    const d = mkdtempSync(join(tmpdir(), "ledger-store-"));
    dirs.push(d);
    mkdirSync(join(d, "devices"));
    const left = [`.240ac4fe0001.json.4242-0123456789ab.tmp`, `240ac4fe0001.json.4242.tmp`];
    for (const n of left) writeFileSync(join(d, "devices", n), "{");
    writeFileSync(
      join(d, "devices", "240ac4fe0001.json"),
      JSON.stringify(newLedger("240ac4fe0001")),
    );
    const s = new LedgerStore(d);
    expect(readdirSync(s.dir)).toEqual(["240ac4fe0001.json"]);
  });

  it("beyond maxLedgers the least recently written ledgers of devices not in use are pruned, and reported", async () => {
    const d = mkdtempSync(join(tmpdir(), "ledger-store-"));
    dirs.push(d);
    const ids = ["240ac4fe0b01", "240ac4fe0b02", "240ac4fe0b03", "240ac4fe0b04"];
    const seed = new LedgerStore(d);
    for (const id of ids) await seed.save(newLedger(id));
    // b01 oldest ... b04 newest; b01 is attached now.
    ids.forEach((id, i) => {
      const t = new Date(Date.UTC(2026, 0, 1 + i));
      utimesSync(join(seed.dir, `${id}.json`), t, t);
    });
    writeFileSync(join(seed.dir, `${ids[1]}.json.corrupt`), "x");
    const pruned: string[][] = [];
    const s = new LedgerStore(d, {
      maxLedgers: 4,
      inUse: () => [ids[0]!],
      onPruned: (p) => void pruned.push(p),
    });
    // A new device's first save goes over the cap: the oldest detached ledger goes.
    await s.save(newLedger("240ac4fe0b05"));
    expect(pruned).toEqual([[ids[1]]]);
    expect(readdirSync(s.dir).sort()).toEqual(
      [ids[0], ids[2], ids[3], "240ac4fe0b05"].map((id) => `${id}.json`),
    );
    expect(s.prune()).toEqual([]);
  });
});
