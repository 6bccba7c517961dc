/** The operator's views of a rollout (src/rollout/view.ts), as pure functions of the state. */
import { describe, expect, it } from "vitest";
import type { DeviceState, DeviceStatus } from "../../src/mqtt/messages.js";
import { createRollout, transition } from "../../src/rollout/machine.js";
import type { RolloutState } from "../../src/rollout/messages.js";
import { renderLive, watchLinePrinter } from "../../src/rollout/view.js";

const T0 = Date.parse("2025-03-01T12:00:00.000Z");
const REL = "app-1.2.0-0123456789ab";

function rollout(): RolloutState {
  const s = createRollout(
    {
      rolloutId: "r1",
      releaseId: REL,
      version: "1.2.0",
      manifestBaseUrl: "http://rel.example/app",
      devices: ["d0", "d1"].map((deviceId) => ({ deviceId, counter: 1 })),
      waves: [50, 100],
      maxFailureRate: 5,
      minSample: 1,
      waveTimeoutMs: 60_000,
    },
    T0,
  );
  return transition(s, { type: "start", now: T0 }).state;
}

let seq = 0;
const report = (s: RolloutState, deviceId: string, state: DeviceState, at: number) => {
  const st: DeviceStatus = {
    format: 1,
    deviceId,
    gatewayId: "gw1",
    seq: ++seq,
    state,
    releaseId: REL,
    rolloutId: "r1",
    updatedAt: new Date(at).toISOString(),
  };
  return transition(s, { type: "status", status: st, now: at }).state;
};

describe("rollout views", () => {
  it("status --watch on a pipe prints a line only when what it says changes (issue 13 item 11)", () => {
    const print = watchLinePrinter();
    const s0 = rollout();
    const s1 = report(s0, "d0", "downloading", T0 + 1000);
    // Each of these is a retained change with a new updatedAt; the line stays the same.
    const s2 = report(s1, "d0", "transferring", T0 + 2000);
    const s3 = report(s2, "d0", "activating", T0 + 3000);
    const s4 = report(s3, "d0", "succeeded", T0 + 4000);
    expect(new Set([s1, s2, s3].map((s) => s.updatedAt)).size).toBe(3);
    const lines = [s0, s1, s2, s3, s4].map(print);
    expect(lines).toEqual([
      `${s0.updatedAt} running wave 1/2: pending 1, notified 1`,
      `${s1.updatedAt} running wave 1/2: pending 1, updating 1`,
      undefined,
      undefined,
      `${s4.updatedAt} running wave 2/2: notified 1, succeeded 1`,
    ]);
    // The same state again (a heartbeat republish) prints nothing either.
    expect(print(s4)).toBeUndefined();
  });

  it("the live view numbers waves from 1, as --json does", () => {
    const lines = renderLive(rollout());
    expect(lines[0]).toBe("rollout r1: app-1.2.0-0123456789ab (1.2.0) running, wave 1/2");
    expect(lines[1]).toMatch(/^> wave 1 {2}50% /);
    expect(lines[2]).toMatch(/^ {2}wave 2 100% /);
  });
});
