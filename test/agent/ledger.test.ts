/**
 * The gateway's notice decisions and status rules as tables (STYLE.md §12;
 * docs/mqtt-api.md "Notice semantics"), and the slot selection policy.
 */
import { describe, expect, it } from "vitest";
import {
  compareVersions,
  type DeviceLedger,
  decideNotice,
  effectiveMark,
  eraseBudgetLeft,
  MAX_SIGNER_SETS,
  minCounterFor,
  newLedger,
  recordErase,
  recordMark,
  recordRefusal,
  refusalStatus,
  type StepName,
  statusMayFollow,
} from "../../src/gateway/ledger.js";
import {
  type DeviceStatus,
  noticeDigest,
  parseMessage,
  type UpdateNotice,
} from "../../src/mqtt/messages.js";

const ID = "240ac4fe0001";
const notice = (
  releaseId: string,
  counter: number,
  extra: Partial<UpdateNotice> = {},
): UpdateNotice => ({
  format: 1,
  deviceId: ID,
  releaseId,
  counter,
  manifestUrls: ["http://127.0.0.1/m.json"],
  issuedAt: "2026-11-23T10:00:00.000Z",
  ...extra,
});
const withJob = (
  releaseId: string,
  step: StepName,
  l: Partial<DeviceLedger> = {},
): DeviceLedger => ({
  ...newLedger(ID),
  ...l,
  job: { notice: notice(releaseId, 5), step, startedAt: "2026-11-23T10:00:00.000Z" },
});

describe("decideNotice", () => {
  const rows: {
    name: string;
    ledger: DeviceLedger;
    input: UpdateNotice | null;
    expect: string;
    code?: string;
  }[] = [
    { name: "first notice starts", ledger: newLedger(ID), input: notice("r1", 1), expect: "start" },
    { name: "clear with nothing in flight", ledger: newLedger(ID), input: null, expect: "ignore" },
    // Issue 12 defect 16: these two were ignored at debug level, with no status, and the
    // rollout that published them waited for its wave timeout.
    {
      name: "a notice naming another device than its topic: refused with a code",
      ledger: newLedger(ID),
      input: notice("r1", 1, { deviceId: "240ac4fe0002" }),
      expect: "refuse",
      code: "E_AGENT_NOTICE_INVALID",
    },
    {
      name: "a notice naming another device, for the release in flight: ignored (no status for the job's release)",
      ledger: withJob("r1", "download"),
      input: notice("r1", 1, { deviceId: "240ac4fe0002" }),
      expect: "ignore",
    },
    {
      name: "a refused notice seen again (a reconnect's retained copy): not answered twice",
      ledger: {
        ...newLedger(ID),
        highWater: { counter: 7, releaseId: "r7" },
        refused: {
          releaseId: "r3",
          issuedAt: "2026-11-23T10:00:00.000Z",
          code: "E_MANIFEST_COUNTER",
        },
      },
      input: notice("r3", 3),
      expect: "ignore",
    },
    {
      name: "the refused release issued again (another issuedAt): refused again",
      ledger: {
        ...newLedger(ID),
        highWater: { counter: 7, releaseId: "r7" },
        refused: {
          releaseId: "r3",
          issuedAt: "2026-11-23T10:00:00.000Z",
          code: "E_MANIFEST_COUNTER",
        },
      },
      input: notice("r3", 3, { issuedAt: "2026-11-23T11:00:00.000Z" }),
      expect: "refuse",
      code: "E_MANIFEST_COUNTER",
    },
    {
      name: "duplicate of the job in flight",
      ledger: withJob("r1", "download"),
      input: notice("r1", 5),
      expect: "ignore",
    },
    {
      name: "replay below the high-water mark: refused with a code",
      ledger: { ...newLedger(ID), highWater: { counter: 7, releaseId: "r7" } },
      input: notice("r3", 3),
      expect: "refuse",
      code: "E_MANIFEST_COUNTER",
    },
    {
      name: "a release that succeeded is not run again",
      ledger: {
        ...newLedger(ID),
        lastFinal: { releaseId: "r1", state: "succeeded", at: "x" },
        lastNotice: notice("r1", 1),
      },
      input: notice("r1", 1, { issuedAt: "2026-11-24T00:00:00.000Z" }),
      expect: "ignore",
    },
    {
      name: "a replayed notice of a failed release is ignored",
      ledger: {
        ...newLedger(ID),
        lastFinal: { releaseId: "r1", state: "failed", at: "x" },
        lastNotice: notice("r1", 1),
      },
      input: notice("r1", 1),
      expect: "ignore",
    },
    {
      name: "a re-issued notice of a cancelled release runs again",
      ledger: {
        ...newLedger(ID),
        lastFinal: { releaseId: "r1", state: "cancelled", at: "x" },
        lastNotice: notice("r1", 1, { rolloutId: "a" }),
      },
      input: notice("r1", 1, { rolloutId: "b" }),
      expect: "start",
    },
    {
      name: "replacement before activation cancels",
      ledger: withJob("r1", "transfer"),
      input: notice("r2", 6),
      expect: "cancel",
      code: "E_AGENT_SUPERSEDED",
    },
    {
      name: "clear before activation cancels",
      ledger: withJob("r1", "download"),
      input: null,
      expect: "cancel",
      code: "E_AGENT_CLEARED",
    },
    {
      name: "replacement after activation waits",
      ledger: withJob("r1", "activate"),
      input: notice("r2", 6),
      expect: "defer",
    },
    {
      name: "clear while awaiting confirmation waits",
      ledger: withJob("r1", "awaitConfirm"),
      input: null,
      expect: "defer",
    },
  ];
  for (const r of rows)
    it(r.name, () => {
      const d = decideNotice(r.ledger, r.input);
      expect(d.action).toBe(r.expect);
      if (r.code) expect((d.action === "cancel" || d.action === "refuse") && d.code).toBe(r.code);
    });
});

describe("counters and statuses", () => {
  it("accepts the same counter only for the release that set the high-water mark", () => {
    const l = { ...newLedger(ID), highWater: { counter: 4, releaseId: "r4" } };
    expect(minCounterFor(l, "r4")).toBe(4);
    expect(minCounterFor(l, "r5")).toBe(5);
    expect(minCounterFor(newLedger(ID), "r1")).toBe(0);
  });

  it("keeps the highest mark per signer set; the mark in force is the highest still backed by the trust policy", () => {
    const policy = (revoked: string[] = []) => ({
      keys: ["a", "b", "c", "d"].map((keyId) => ({
        keyId,
        alg: "ed25519" as const,
        publicKey: "",
      })),
      revoked,
      threshold: 2,
    });
    const l = newLedger(ID);
    recordMark(l, { counter: 5, releaseId: "r5", keyIds: ["b", "a"] });
    recordMark(l, { counter: 4, releaseId: "r4", keyIds: ["a", "b"] });
    recordMark(l, { counter: 2 ** 53 - 1, releaseId: "ff", keyIds: ["c", "d"] });
    expect(l.marks).toEqual([
      { counter: 2 ** 53 - 1, releaseId: "ff", keyIds: ["c", "d"] },
      { counter: 5, releaseId: "r5", keyIds: ["a", "b"] },
    ]);
    expect(l.highWater?.releaseId).toBe("ff");
    expect(effectiveMark(l)?.releaseId).toBe("ff");
    expect(minCounterFor(l, "r6", policy())).toBe(2 ** 53);
    // c and d revoked: their mark no longer counts, the one a and b set does.
    expect(effectiveMark(l, policy(["c", "d"]))?.releaseId).toBe("r5");
    expect(minCounterFor(l, "r6", policy(["c", "d"]))).toBe(6);
    expect(decideNotice(l, notice("r6", 6), policy(["c", "d"])).action).toBe("start");
    expect(decideNotice(l, notice("r6", 6), policy()).action).toBe("refuse");
    // One of c and d revoked: one signer left, below the threshold of 2.
    expect(effectiveMark(l, policy(["d"]))?.releaseId).toBe("r5");
    // Every signer revoked: no mark in force.
    expect(effectiveMark(l, policy(["a", "c"]))).toBeUndefined();
  });

  it("a ledger from before signers were recorded: its mark counts whatever the policy, and is kept", () => {
    const l: DeviceLedger = { ...newLedger(ID), highWater: { counter: 7, releaseId: "r7" } };
    expect(effectiveMark(l, { keys: [], revoked: [], threshold: 1 })?.counter).toBe(7);
    recordMark(l, { counter: 8, releaseId: "r8", keyIds: ["a"] });
    expect(l.marks?.map((m) => m.counter)).toEqual([8, 7]);
  });

  it("keeps at most MAX_SIGNER_SETS signer sets, the highest marks", () => {
    const l = newLedger(ID);
    for (let i = 0; i < MAX_SIGNER_SETS + 5; i++)
      recordMark(l, { counter: i, releaseId: `r${i}`, keyIds: [`k${i}`] });
    expect(l.marks).toHaveLength(MAX_SIGNER_SETS);
    expect(l.marks?.at(-1)?.counter).toBe(5);
  });

  const st = (state: DeviceStatus["state"], releaseId = "r1"): DeviceStatus => ({
    format: 1,
    deviceId: ID,
    gatewayId: "gw",
    seq: 1,
    state,
    releaseId,
    updatedAt: "x",
  });
  const rows: [DeviceStatus["state"], DeviceStatus["state"], boolean][] = [
    ["downloading", "transferring", true],
    ["transferring", "downloading", false],
    ["transferring", "transferring", true],
    ["succeeded", "transferring", false],
    ["failed", "succeeded", false],
    ["awaiting-confirm", "rolled-back", true],
  ];
  for (const [a, b, ok] of rows)
    it(`${a} -> ${b}: ${ok ? "allowed" : "refused"}`, () => {
      expect(statusMayFollow(st(a), st(b))).toBe(ok);
    });
  it("a new run of the same release (retry: another startedAt) starts afresh", () => {
    expect(
      statusMayFollow(
        { ...st("succeeded"), startedAt: "2026-11-23T10:00:00.000Z" },
        { ...st("queued"), startedAt: "2026-11-23T11:00:00.000Z" },
      ),
    ).toBe(true);
  });
  it("a new release starts afresh", () => {
    expect(statusMayFollow(st("succeeded", "r1"), st("queued", "r2"))).toBe(true);
  });
});

describe("compareVersions", () => {
  const rows: [string, string, number | undefined][] = [
    ["2.0.0", "1.9.9", 1],
    ["v1.2.10", "1.2.9", 1],
    ["1.0", "1.0.0", 0],
    ["1.0.0-rc1", "1.0.1", -1],
    ["main-abc", "1.0.0", undefined],
  ];
  for (const [a, b, r] of rows) it(`${a} vs ${b}`, () => expect(compareVersions(a, b)).toBe(r));
});

describe("refused notices (issue 12 defect 16)", () => {
  it("get a final failed status naming the notice, with the code; the job in flight is untouched", () => {
    const l = withJob("r9", "transfer", { seq: 41, highWater: { counter: 7, releaseId: "r7" } });
    const n = notice("r3", 3, { rolloutId: "wave-a" });
    const d = decideNotice(l, n);
    if (d.action !== "refuse") throw new Error(`expected a refusal, got ${d.action}`);
    const st = refusalStatus(l, d, "gw", new Date("2026-11-23T12:00:00.000Z"));
    // A valid status message (what encodeMessage would publish), signed later by the agent.
    expect(parseMessage("status", JSON.stringify(st)).ok).toBe(true);
    expect(st).toMatchObject({
      seq: 42,
      state: "failed",
      releaseId: "r3",
      rolloutId: "wave-a",
      noticeDigest: noticeDigest(n),
      error: { code: "E_MANIFEST_COUNTER", step: "parseNotice" },
    });
    recordRefusal(l, d, st);
    expect(l.seq).toBe(42);
    expect(l.job?.notice.releaseId).toBe("r9");
    expect(l.lastFinal).toBeUndefined();
    expect(decideNotice(l, n).action).toBe("ignore");
  });
});

describe("erase budget (issue 12 defect 6)", () => {
  const b = { cycles: 3, windowMs: 60_000 };
  const at = (s: number) => new Date(Date.UTC(2026, 10, 23, 10, 0, s));
  it("allows `cycles` fresh transfers per window, then refuses until the oldest leaves it", () => {
    const l = newLedger(ID);
    for (const s of [0, 10, 20]) {
      expect(eraseBudgetLeft(l, b, at(s)).ok).toBe(true);
      recordErase(l, b, at(s));
    }
    expect(eraseBudgetLeft(l, b, at(30))).toEqual({ ok: false, until: at(60) });
    expect(eraseBudgetLeft(l, b, at(60))).toEqual({ ok: true, left: 1 });
    recordErase(l, b, at(61));
    // Only what still counts is kept: the ledger stays bounded by `cycles`.
    expect(l.erases).toHaveLength(3);
  });
  it("a clock set back does not reset the budget (erases ahead of the clock count too)", () => {
    const l = newLedger(ID);
    for (const s of [0, 1, 2]) recordErase(l, b, at(s));
    expect(eraseBudgetLeft(l, b, at(-30)).ok).toBe(false);
  });
});
