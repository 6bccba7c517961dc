/**
 * The console's model (src/console/model.ts), pure: what it keeps of hostile input and how
 * much, and the rollout card the page draws.
 */
import { describe, expect, it } from "vitest";
import {
  applyToModel,
  emptyModel,
  HISTORY_PER_DEVICE,
  LOG_LINE_MAX,
  LOG_LINES_PER_DEVICE,
  rolloutCard,
} from "../../src/console/model.js";
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

describe("console model", () => {
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
