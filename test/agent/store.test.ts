/** LedgerStore: atomic, asynchronous, one write in flight per device, later saves coalesced. */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { LedgerStore } from "../../agent/store.js";
import { newLedger } from "../../src/gateway/ledger.js";

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
