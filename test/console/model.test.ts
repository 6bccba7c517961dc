/**
 * The console's model (src/console/model.ts), pure: what it keeps of hostile input and how
 * much, and the rollout card the page draws.
 */
import { describe, expect, it } from "vitest";
import {
  applyToModel,
  EVENT_LOOP_DEGRADED_MS,
  emptyModel,
  gatewayHealth,
  HISTORY_PER_DEVICE,
  LOG_LINE_MAX,
  LOG_LINES_PER_DEVICE,
  rolloutCard,
  snapshot,
} from "../../src/console/model.js";
import type { PresenceHealth } from "../../src/mqtt/messages.js";
import { createRollout, transition } from "../../src/rollout/machine.js";
import { encodeRolloutState } from "../../src/rollout/messages.js";

const P = "esp-ota/v1";
const T0 = Date.parse("2025-03-01T12:00:00.000Z");
const enc = (o: object) => new TextEncoder().encode(JSON.stringify(o));
const status = (seq: number, state: string, o: object = {}) =>
  enc({
    format: 1,
    deviceId: "d1",
    gatewayId: "gw1",
    seq,
    state,
    releaseId: "rel-1",
    updatedAt: new Date(T0 + seq * 1000).toISOString(),
    ...o,
  });

const HEALTH: PresenceHealth = {
  ready: true,
  devices: { attached: 11, updating: 1, identifying: 0, failed: 0, conflict: 0 },
  updates: { started: 12, succeeded: 10, failed: 1, rolledBack: 0, cancelled: 0 },
  lastFailure: { code: "E_UART_TIMEOUT", at: "2025-03-01T11:59:00.000Z" },
  uartFrameErrors: 2,
  mqttReconnects: 0,
  stagingBytes: 1_048_576,
  eventLoopDelayMs: 12,
  uptimeSec: 86_400,
};
const presence = (seq: number, state: "online" | "offline", health?: object) =>
  enc({
    format: 1,
    gatewayId: "gw1",
    state,
    version: "0.1.0",
    at: new Date(T0 + seq * 1000).toISOString(),
    seq,
    ...(health ? { health } : {}),
  });
const gw = (m: ReturnType<typeof emptyModel>) =>
  snapshot(m, T0 + 60_000, true).gateways.find((g) => g.gatewayId === "gw1");

describe("console model", () => {
  it("a gateway's health: read from its online presence, kept (stale) when it goes offline, dropped when cleared", () => {
    const m = emptyModel(P);
    const topic = `${P}/gateways/gw1/presence`;
    expect(applyToModel(m, topic, presence(1, "online", HEALTH), T0).kind).toBe("applied");
    expect(gw(m)?.health).toEqual({
      ...HEALTH,
      badge: "ready",
      problems: [],
      at: new Date(T0 + 1000).toISOString(),
      lastFailureHelp: expect.objectContaining({ action: expect.stringContaining("--baud") }),
    });
    // The last will carries no health: the last summary stays, marked stale.
    applyToModel(m, topic, presence(2, "offline"), T0);
    expect(gw(m)?.health).toMatchObject({
      badge: "stale",
      problems: ["offline: the last summary it sent while online"],
      uptimeSec: 86_400,
    });
    // Back online from an agent without `health`: the old summary is not its.
    applyToModel(m, topic, presence(3, "online"), T0);
    expect(gw(m)?.health).toBeUndefined();
    applyToModel(m, topic, presence(4, "online", HEALTH), T0);
    applyToModel(m, topic, new Uint8Array(), T0);
    expect(m.health.size).toBe(0);
  });

  it("a health summary out of its bounds is refused, counted, and keeps the last good one", () => {
    const m = emptyModel(P);
    const topic = `${P}/gateways/gw1/presence`;
    applyToModel(m, topic, presence(1, "online", HEALTH), T0);
    for (const bad of [
      { ...HEALTH, eventLoopDelayMs: -1 },
      { ...HEALTH, lastFailure: { code: "<img src=x>", at: HEALTH.lastFailure!.at } },
      { ...HEALTH, devices: { ...HEALTH.devices, attached: "11" } },
      { ...HEALTH, ready: "yes" },
    ])
      expect(applyToModel(m, topic, presence(2, "online", bad), T0).kind).toBe("invalid");
    expect(m.invalid).toBe(4);
    expect(gw(m)?.health).toMatchObject({ badge: "ready", eventLoopDelayMs: 12 });
  });

  it("the readiness badge: not ready, degraded by failed or conflicting ports or a slow loop, stale offline", () => {
    const at = new Date(T0).toISOString();
    const rows: [Partial<PresenceHealth>, boolean, string, number][] = [
      [{}, true, "ready", 0],
      [{ ready: false }, true, "not-ready", 1],
      [{ devices: { ...HEALTH.devices, failed: 2 } }, true, "degraded", 1],
      [{ devices: { ...HEALTH.devices, conflict: 1 } }, true, "degraded", 1],
      [{ eventLoopDelayMs: EVENT_LOOP_DEGRADED_MS }, true, "ready", 0],
      [{ eventLoopDelayMs: EVENT_LOOP_DEGRADED_MS + 1 }, true, "degraded", 1],
      [{ ready: false, eventLoopDelayMs: 500 }, true, "not-ready", 2],
      [{ ready: false }, false, "stale", 2],
    ];
    for (const [patch, online, badge, problems] of rows) {
      const h = gatewayHealth({ ...HEALTH, ...patch }, at, online);
      expect([patch, online, h.badge, h.problems.length]).toEqual([patch, online, badge, problems]);
    }
    const { lastFailure: _, ...noFailure } = HEALTH;
    expect(gatewayHealth(noFailure, at, true).lastFailureHelp).toBeUndefined();
  });

  it("keeps at most the last LOG_LINES_PER_DEVICE log lines, each cut at LOG_LINE_MAX", () => {
    const m = emptyModel(P);
    const lines = Array.from(
      { length: 150 },
      (_, i) => `line ${i} ${"x".repeat(i === 149 ? 2000 : 0)}`,
    );
    for (let k = 0; k < 2; k++)
      applyToModel(
        m,
        `${P}/devices/d1/log`,
        enc({ format: 1, deviceId: "d1", lines, dropped: 0, at: new Date(T0).toISOString() }),
        T0,
      );
    const kept = m.logs.get("d1")!;
    expect(kept).toHaveLength(LOG_LINES_PER_DEVICE);
    expect(kept.at(-1)!.text.length).toBeLessThanOrEqual(LOG_LINE_MAX + 32);
    expect(kept.at(-1)!.text).toMatch(/cut, \d+ characters/);
  });

  it("a log message for another device than its topic is refused and counted", () => {
    const m = emptyModel(P);
    const r = applyToModel(
      m,
      `${P}/devices/d1/log`,
      enc({ format: 1, deviceId: "d2", lines: ["x"], dropped: 0, at: new Date(T0).toISOString() }),
      T0,
    );
    expect(r.kind).toBe("invalid");
    expect(m.invalid).toBe(1);
    expect(m.logs.size).toBe(0);
  });

  it("history: one line per final status; the same retained one seen again adds none; bounded", () => {
    const m = emptyModel(P);
    applyToModel(m, `${P}/devices/d1/status`, status(1, "downloading"), T0);
    applyToModel(
      m,
      `${P}/devices/d1/status`,
      status(2, "failed", { error: { code: "E_UART_TIMEOUT", message: "m", step: "transfer" } }),
      T0,
    );
    // A reconnect delivers the retained status again (same seq): ignored by the fleet view.
    applyToModel(
      m,
      `${P}/devices/d1/status`,
      status(2, "failed", { error: { code: "E_UART_TIMEOUT", message: "m", step: "transfer" } }),
      T0,
    );
    expect(m.history.get("d1")).toEqual([
      expect.objectContaining({ state: "failed", errorCode: "E_UART_TIMEOUT", releaseId: "rel-1" }),
    ]);
    for (let s = 3; s < 3 + 2 * HISTORY_PER_DEVICE; s++)
      applyToModel(m, `${P}/devices/d1/status`, status(s, "succeeded"), T0);
    expect(m.history.get("d1")).toHaveLength(HISTORY_PER_DEVICE);
  });

  it("a rollout card: bars per wave, the failing device with docs/errors.md's action, the applicable actions", () => {
    let s = createRollout(
      {
        rolloutId: "r1",
        releaseId: "rel-1",
        version: "1.2.0",
        manifestBaseUrl: "http://x.example/r",
        devices: ["a", "b", "c"].map((deviceId) => ({ deviceId, counter: 1 })),
        waves: [33, 100],
        maxFailureRate: 100,
        minSample: 1,
        waveTimeoutMs: 60_000,
      },
      T0,
    );
    const st = (deviceId: string, seq: number, state: string, code?: string) =>
      transition(s, {
        type: "status",
        now: T0 + seq * 1000,
        status: {
          format: 1,
          deviceId,
          gatewayId: "g",
          seq,
          state: state as "failed",
          releaseId: "rel-1",
          updatedAt: new Date(T0).toISOString(),
          ...(code ? { error: { code, message: "m", step: "s" } } : {}),
        },
      }).state;
    s = transition(s, { type: "start", now: T0 }).state;
    s = st("a", 1, "succeeded");
    s = st("b", 2, "failed", "E_UART_TIMEOUT");
    const m = emptyModel(P);
    applyToModel(m, `${P}/rollouts/r1/state`, encodeRolloutState(s), T0);
    const card = rolloutCard(m.rollouts.get("r1")!, T0 + 10_000);
    expect(
      card.waves.map((w) => [w.devices, w.counts.succeeded, w.counts.failed, w.counts.notified]),
    ).toEqual([
      [1, 1, 0, 0],
      [2, 0, 1, 1],
    ]);
    expect(card.failures).toEqual([
      expect.objectContaining({
        deviceId: "b",
        errorCode: "E_UART_TIMEOUT",
        help: expect.objectContaining({ action: expect.stringContaining("--baud") }),
      }),
    ]);
    expect(Object.keys(card.actions).sort()).toEqual(["next-wave", "resume"]);
    expect(card.timeline.map((t) => t.kind)).toEqual(["started", "wave", "wave", "failure", "now"]);
  });
});
