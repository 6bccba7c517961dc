/** The rollout's pure edges: option parsing, the plan, the two messages' codecs, the views. */
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { noticeDigest, noticeEcho } from "../../src/mqtt/messages.js";
import { createRollout, transition } from "../../src/rollout/machine.js";
import {
  encodeRolloutControl,
  encodeRolloutState,
  ownerGone,
  ownerLive,
  parseRolloutControl,
  parseRolloutState,
  type RolloutState,
  rolloutJsonSchemas,
} from "../../src/rollout/messages.js";
import {
  baseUrlFromVariant,
  checkIndex,
  defaultRolloutId,
  formatDuration,
  noticeFor,
  parseDurationMs,
  parsePercent,
  parseWaves,
  selectDevices,
} from "../../src/rollout/plan.js";
import { eventLine, renderList, renderLive, renderSummary } from "../../src/rollout/view.js";

const T0 = Date.parse("2025-03-01T12:00:00.000Z");

function sample(): RolloutState {
  let s = createRollout(
    {
      rolloutId: "r7",
      releaseId: "app-2.0.0-0123456789ab",
      version: "2.0.0",
      manifestBaseUrl: "https://updates.example.com/rel/7",
      devices: ["a1", "b2", "c3", "d4"].map((deviceId, i) => ({ deviceId, counter: 5 + i })),
      waves: [25, 100],
      maxFailureRate: 60,
      minSample: 1,
      waveTimeoutMs: 1_800_000,
    },
    T0,
  );
  const st = (
    deviceId: string,
    seq: number,
    state: "succeeded" | "failed" | "downloading",
    code?: string,
  ) => ({
    type: "status" as const,
    now: T0 + seq * 1000,
    status: {
      format: 1 as const,
      deviceId,
      gatewayId: "gw",
      seq,
      state,
      releaseId: "app-2.0.0-0123456789ab",
      updatedAt: new Date(T0).toISOString(),
      ...(code ? { error: { code, message: "x", step: "transfer" } } : {}),
    },
  });
  for (const i of [
    { type: "start" as const, now: T0 },
    st("a1", 1, "succeeded"),
    st("b2", 2, "failed", "E_AGENT_VERIFY_DEVICE"),
    st("c3", 3, "downloading"),
  ])
    s = transition(s, i).state;
  return s;
}

describe("rollout options and plan", () => {
  it("parseWaves: cumulative, increasing, ending at 100%", () => {
    expect(parseWaves("1,10,50,100%")).toEqual([1, 10, 50, 100]);
    expect(parseWaves("5%, 100%")).toEqual([5, 100]);
    expect(parseWaves("100")).toEqual([100]);
    expect(parseWaves("0.5,100")).toEqual([0.5, 100]);
    expect(parseWaves("10,50")).toMatch(/last wave must be 100%/);
    expect(parseWaves("50,40,100")).toMatch(/must increase/);
    expect(parseWaves("0,100")).toMatch(/not in \(0, 100\]/);
    expect(parseWaves("ten")).toMatch(/not a list/);
  });

  it("parsePercent and parseDurationMs", () => {
    expect(parsePercent("5%")).toBe(5);
    expect(parsePercent("0")).toBe(0);
    expect(parsePercent("101%")).toMatch(/above 100/);
    expect(parseDurationMs("30m")).toBe(1_800_000);
    expect(parseDurationMs("500ms")).toBe(500);
    expect(parseDurationMs("0s")).toMatch(/above zero/);
    expect(parseDurationMs("1 hour")).toMatch(/not a duration/);
    expect(formatDuration(1_800_000)).toBe("30m");
    expect(formatDuration(5_430_000)).toBe("1h30m30s");
    expect(formatDuration(250)).toBe("250ms");
  });

  it("the base URL comes back out of a variant URL `release build` made", () => {
    expect(baseUrlFromVariant("https://u.example/rel/42/aabb/ota_0.bin", "aabb/ota_0.bin")).toBe(
      "https://u.example/rel/42",
    );
    expect(
      baseUrlFromVariant("https://u.example/x/aabb/ota_1.bin", "aabb/ota_0.bin"),
    ).toBeUndefined();
    expect(baseUrlFromVariant("file:///aabb/ota_0.bin", "aabb/ota_0.bin")).toBeUndefined();
  });

  it("default ids are one topic level: release id, then the UTC time", () => {
    // Without the dots of the version: NATS refuses topics with `.` (docs/scaling.md).
    expect(defaultRolloutId("app-1.2.0-0123456789ab", new Date(T0))).toBe(
      "app-1-2-0-0123456789ab-20250301T120000Z",
    );
    expect(defaultRolloutId("x".repeat(64), new Date(T0))).toHaveLength(64);
  });

  it("index checks and device selection", () => {
    const index = {
      format: 1,
      releaseId: "r-1",
      version: "1",
      devices: [
        {
          deviceId: "b",
          counter: 2,
          manifest: "b/manifest.json",
          variants: [{ file: "b/ota_0.bin" }],
        },
        { deviceId: "a:1", counter: 1, manifest: "a/manifest.json", variants: [] },
      ],
    };
    const c = checkIndex(index);
    if (!c.ok) throw new Error(c.reason);
    expect(checkIndex({ ...index, devices: "no" })).toMatchObject({
      ok: false,
      code: "E_ROLLOUT_INDEX",
    });
    expect(selectDevices(c.index, ["b", "b"])).toEqual({
      ok: true,
      devices: [{ deviceId: "b", counter: 2 }],
    });
    expect(selectDevices(c.index, [])).toMatchObject({ ok: false, code: "E_ROLLOUT_DEVICES" });
    expect(selectDevices(c.index, ["zz"])).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/no manifest for device zz/),
    });
    expect(selectDevices(c.index, "all")).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/topic level/),
    });
  });

  it("a notice has everything from the state: counter, manifest URL, rollout id", () => {
    const s = sample();
    expect(noticeFor(s, "b2", T0)).toEqual({
      format: 1,
      deviceId: "b2",
      releaseId: "app-2.0.0-0123456789ab",
      counter: 6,
      manifestUrls: ["https://updates.example.com/rel/7/b2/manifest.json"],
      rolloutId: "r7",
      issuedAt: s.perDevice.b2!.notifiedAt,
    });
    expect(() => noticeFor(s, "zz", T0)).toThrow(RangeError);
  });
});

describe("rollout messages", () => {
  it("state and control round-trip", () => {
    const s = {
      ...sample(),
      owner: {
        host: "ops1",
        pid: 42,
        heartbeatAt: new Date(T0).toISOString(),
        heartbeatMs: 10_000,
      },
    };
    expect(parseRolloutState(encodeRolloutState(s))).toEqual({ ok: true, value: s });
    const c = {
      format: 1 as const,
      action: "abort" as const,
      reason: "bad",
      at: new Date(T0).toISOString(),
    };
    expect(parseRolloutControl(encodeRolloutControl(c))).toEqual({ ok: true, value: c });
  });

  it("inconsistent or malformed states are values, not exceptions; encode refuses them", () => {
    const s = sample();
    const { a1: _gone, ...rest } = s.perDevice;
    const broken = { ...s, perDevice: rest };
    expect(parseRolloutState(JSON.stringify(broken))).toMatchObject({
      ok: false,
      code: "E_MQTT_MESSAGE_SCHEMA",
    });
    expect(() => encodeRolloutState(broken)).toThrow(TypeError);
    expect(parseRolloutState(JSON.stringify({ ...s, waves: [25, 90] }))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/100/),
    });
    expect(parseRolloutState("{")).toMatchObject({ ok: false, code: "E_MQTT_MESSAGE_JSON" });
    expect(parseRolloutState(new Uint8Array([0xff, 0xfe]))).toMatchObject({
      ok: false,
      code: "E_MQTT_MESSAGE_JSON",
    });
    expect(
      parseRolloutControl(JSON.stringify({ format: 1, action: "explode", at: s.startedAt })),
    ).toMatchObject({ ok: false, code: "E_MQTT_MESSAGE_SCHEMA" });
  });

  it("random bytes and random JSON never crash the decoders", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (b) => {
        expect(parseRolloutState(b).ok).toBe(false);
        expect(parseRolloutControl(b).ok).toBe(false);
      }),
    );
    fc.assert(
      fc.property(fc.json(), (j) => {
        const r = parseRolloutState(j);
        if (!r.ok) expect(["E_MQTT_MESSAGE_JSON", "E_MQTT_MESSAGE_SCHEMA"]).toContain(r.code);
        parseRolloutControl(j);
      }),
    );
  });

  it("docs/schemas/rollout-*.schema.json are generated from the schemas (npm run docs:schemas)", () => {
    for (const [name, schema] of Object.entries(rolloutJsonSchemas())) {
      const onDisk = readFileSync(
        new URL(`../../docs/schemas/${name}.schema.json`, import.meta.url),
        "utf8",
      );
      expect(onDisk, name).toBe(`${JSON.stringify(schema, null, 2)}\n`);
    }
  });

  it("an owner is live until 3 heartbeats are missed", () => {
    const s = {
      ...sample(),
      owner: { host: "h", pid: 1, heartbeatAt: new Date(T0).toISOString(), heartbeatMs: 10_000 },
    };
    expect(ownerLive(s, T0 + 29_999)).toBe(true);
    expect(ownerLive(s, T0 + 30_000)).toBe(false);
    expect(ownerLive(sample(), T0)).toBe(false);
  });

  it("a probe that finds the owner's process gone ends it at once; one that finds it cannot revive a stale heartbeat", () => {
    const s = {
      ...sample(),
      owner: { host: "h", pid: 7, heartbeatAt: new Date(T0).toISOString(), heartbeatMs: 10_000 },
    };
    expect(ownerGone(s, T0 + 1000, () => false)).toBe("h:7 is not running (pid 7 on this host)");
    expect(ownerGone(s, T0 + 1000, () => undefined)).toBeUndefined();
    expect(ownerGone(s, T0 + 1000, () => true)).toBeUndefined();
    expect(ownerGone(s, T0 + 30_000, () => true)).toMatch(/^h:7 missed 3 heartbeats/);
    expect(ownerGone(sample(), T0)).toBe("no process owns it");
  });

  it("noticeDigest: what the notice says, not when; any other byte changes it", () => {
    const n = {
      format: 1 as const,
      deviceId: "348518123456",
      releaseId: "app-2.0.0-0123456789ab",
      counter: 7,
      manifestUrls: ["https://updates.example.com/rel/42/348518123456/manifest.json"],
      rolloutId: "r-2025-06-01",
      issuedAt: "2025-06-01T12:00:00.000Z",
    };
    // The value docs/mqtt-api.md shows for its example notice.
    const d = "624a26e2107fd10a50dd42bd75463bddd215e6bbcc5b9e563218c99cb4016c7a";
    expect(noticeDigest(n)).toBe(d);
    expect(noticeDigest({ ...n, issuedAt: "2026-01-01T00:00:00Z" })).toBe(d);
    // Canonical JSON: the order of the keys as received does not matter.
    const { issuedAt, ...rest } = n;
    const reordered = JSON.parse(JSON.stringify({ issuedAt, ...rest, format: 1 }));
    expect(noticeDigest(reordered)).toBe(d);
    for (const other of [
      { ...n, manifestUrls: ["https://evil.example/404"] },
      { ...n, counter: 8 },
      { ...n, rolloutId: "r-other" },
      { ...n, deviceId: "348518123457" },
      { ...n, extra: 1 },
    ])
      expect(noticeDigest(other as typeof n)).not.toBe(d);
    expect(noticeEcho(n)).toEqual({
      releaseId: n.releaseId,
      counter: 7,
      rolloutId: "r-2025-06-01",
      noticeDigest: d,
    });
  });
});

describe("rollout views", () => {
  it("live block, change lines, summary table, list", () => {
    const s = sample();
    expect(renderLive(s)).toEqual([
      "rollout r7: app-2.0.0-0123456789ab (2.0.0) running, wave 2/2",
      `  wave 1  25% ${"█".repeat(24)} 1/1 finished`,
      `> wave 2 100% ${"█".repeat(8)}${"░".repeat(16)} 1/3 finished, 1 failed`,
      "notified 1 · updating 1 · succeeded 1 · failed 1",
      "failure rate 1/2 = 50% (abort above 60%)",
      "  b2 failed E_AGENT_VERIFY_DEVICE",
    ]);
    expect(eventLine({ kind: "device", deviceId: "b2", state: "failed", errorCode: "E_X" })).toBe(
      "b2: failed E_X",
    );
    const table = renderSummary(s).join("\n");
    expect(table).toMatch(
      /wave\s+percent\s+devices\s+finished\s+failed\n1\s+25%\s+1\s+1\s+0\n2\s+100%\s+3\s+1\s+1/,
    );
    expect(table).toMatch(/b2\s+failed\s+E_AGENT_VERIFY_DEVICE/);
    expect(renderList([s], T0).join("\n")).toMatch(
      /r7\s+app-2.0.0-0123456789ab\s+2.0.0\s+running\s+2\/2\s+2\/4\s+1\s+-/,
    );
    expect(renderList([], T0)).toEqual(["no rollouts"]);
  });
});
