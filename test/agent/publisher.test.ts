/**
 * agent/publisher.ts: the pure decisions (nextStatus, boundedStatus, presenceSeqs) as table rows,
 * and the publisher's promise never to throw or reject on a message that does not encode
 * (issue 12 defect 1: a 4 KiB+ error message made every later attach fail).
 */
import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  boundedStatus,
  nextStatus,
  Publisher,
  presenceSeqs,
  STATUS_PROGRESS_EVERY_MS,
} from "../../agent/publisher.js";
import { newLedger } from "../../src/gateway/ledger.js";
import { type DeviceStatus, encodeMessage, parseMessage } from "../../src/mqtt/messages.js";
import { checkStatus, gatewayIdentity, gatewayTrust } from "../../src/mqtt/status-auth.js";
import { topics } from "../../src/mqtt/topics.js";
import { generateManifestKey } from "../../src/release/keyring.js";

const NOW = new Date("2026-01-01T00:00:00.000Z");
const D = "aabbccddeeff";

const failed = (message: string): DeviceStatus => ({
  format: 1,
  deviceId: D,
  gatewayId: "gw",
  seq: 7,
  state: "failed",
  releaseId: "r-1",
  counter: 3,
  error: { code: "E_DOWNLOAD_FAILED", message, step: "download" },
  startedAt: NOW.toISOString(),
  finishedAt: NOW.toISOString(),
  updatedAt: NOW.toISOString(),
});

describe("boundedStatus (defect 1)", () => {
  it.each([
    { name: "a status that encodes is kept", message: "404 from 8 mirrors", replaced: false },
    { name: "a 17,000-character message is cut", message: "u".repeat(17_000), replaced: true },
    {
      name: "a 60 KB unknown manifest key quoted is cut",
      message: `E_MANIFEST_SCHEMA: unknown key ${"k".repeat(60_000)}`,
      replaced: true,
    },
  ])("$name", ({ message, replaced }) => {
    const b = boundedStatus(failed(message));
    expect(b.replaced).toBe(replaced);
    expect(() => encodeMessage("status", b.status)).not.toThrow();
    // Same code, seq, state and release: a rollout still counts the outcome.
    expect(b.status).toMatchObject({
      seq: 7,
      state: "failed",
      releaseId: "r-1",
      error: { code: "E_DOWNLOAD_FAILED", step: "download" },
    });
  });

  it("a status broken elsewhere keeps only what names it, and its code", () => {
    const st = { ...failed("x"), targetVersion: "v".repeat(100) };
    const b = boundedStatus(st);
    expect(b.replaced).toBe(true);
    expect(b.status.targetVersion).toBeUndefined();
    expect(b.status.error?.code).toBe("E_DOWNLOAD_FAILED");
    expect(() => encodeMessage("status", b.status)).not.toThrow();
  });
});

describe("nextStatus", () => {
  it("seq + 1 with the device's fields when nothing is in flight", () => {
    const l = newLedger(D);
    l.seq = 41;
    const st = nextStatus({
      ledger: l,
      state: "idle",
      gatewayId: "gw",
      now: NOW,
      device: { otadata: [] },
    });
    expect(st).toEqual({
      format: 1,
      deviceId: D,
      gatewayId: "gw",
      seq: 42,
      state: "idle",
      otadata: [],
      updatedAt: NOW.toISOString(),
    });
  });

  it("nothing when it would go backwards within a run", () => {
    const l = newLedger(D);
    l.job = {
      notice: {
        format: 1,
        deviceId: D,
        releaseId: "r-1",
        counter: 3,
        manifestUrls: ["http://x/m"],
        issuedAt: NOW.toISOString(),
      },
      step: "transfer",
      startedAt: NOW.toISOString(),
    };
    l.seq = 7;
    l.lastStatus = { ...failed("x"), state: "transferring", error: undefined } as DeviceStatus;
    delete l.lastStatus.error;
    delete l.lastStatus.finishedAt;
    expect(nextStatus({ ledger: l, state: "downloading", gatewayId: "gw", now: NOW })).toBe(
      undefined,
    );
    const same = nextStatus({
      ledger: l,
      state: "transferring",
      extra: { step: "transfer", progress: { bytes: 4096, total: 8192 } },
      gatewayId: "gw",
      now: NOW,
    });
    // The retained status's progress refresh (defect 16) is a status of the same state.
    expect(same).toMatchObject({ state: "transferring", progress: { bytes: 4096 }, seq: 8 });
  });
});

describe("presenceSeqs (defect 16: the will orders after its online)", () => {
  it.each([
    { name: "first connection", now: 1000, last: 0, expect: { online: 2000, offline: 2001 } },
    {
      name: "a reconnect in the same millisecond stays above the last will",
      now: 1000,
      last: 2001,
      expect: { online: 2002, offline: 2003 },
    },
    {
      name: "a clock that went back still increases",
      now: 10,
      last: 2001,
      expect: { online: 2002, offline: 2003 },
    },
  ])("$name", (r) => {
    expect(presenceSeqs(r.now, r.last)).toEqual(r.expect);
  });
});

describe("Publisher", () => {
  afterEach(() => {
    vi.useRealTimers();
  });
  const key = generateManifestKey("ed25519");
  const published: { topic: string; payload: Buffer }[] = [];
  const client = {
    publishAsync: async (topic: string, payload: Buffer) => {
      published.push({ topic, payload });
    },
  };
  const pub = new Publisher({
    client: () => client as never,
    topics: topics(),
    gatewayId: "gw",
    statusKey: key,
    log: pino({ level: "silent" }),
    now: () => NOW,
    deviceLines: true,
    deviceLinesPerSec: 2,
  });

  it("status(): a too-long status is published bounded, re-signed, never thrown", async () => {
    published.length = 0;
    const out = await pub.status(failed("m".repeat(20_000)));
    expect(published).toHaveLength(1);
    const p = parseMessage("status", published[0]!.payload);
    expect(p.ok).toBe(true);
    expect(out.error?.code).toBe("E_DOWNLOAD_FAILED");
    const trust = gatewayTrust({ format: 1, gateways: [gatewayIdentity("gw", key)] });
    expect(checkStatus(out, trust)).toEqual({ ok: true });
  });

  it("statusProgressDue: at most once per period, never for the step's first or last bytes", () => {
    vi.useFakeTimers();
    vi.setSystemTime(0);
    const due = (b: number) => pub.statusProgressDue("dev", b, 100);
    expect(due(10)).toBe(false); // the step's own status was just published
    vi.setSystemTime(STATUS_PROGRESS_EVERY_MS - 1);
    expect(due(20)).toBe(false);
    vi.setSystemTime(STATUS_PROGRESS_EVERY_MS);
    expect(due(30)).toBe(true);
    vi.setSystemTime(STATUS_PROGRESS_EVERY_MS * 2);
    expect(due(100)).toBe(false); // the step's end: its next status says so
    expect(due(60)).toBe(true);
  });

  it("device lines: rate limited, counted, never longer than the schema allows", () => {
    vi.useFakeTimers();
    vi.setSystemTime(0);
    published.length = 0;
    for (let i = 0; i < 5; i++) pub.deviceLine("dev2", "x".repeat(10_000));
    pub.flushLogs();
    const p = parseMessage("log", published[0]!.payload);
    expect(p.ok && p.value).toMatchObject({ dropped: 3 });
    expect(p.ok && p.value.lines.map((l) => l.length)).toEqual([4096, 4096]);
  });
});
