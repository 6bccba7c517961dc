/**
 * The fleet bench, small (issue 7; test/bench/fleet.ts): 20 simulated ESP32s behind 4 gateway
 * agents in this process (in-memory links at 2 Mbaud), the embedded broker in this process, one
 * rollout in two waves. Every device must end on the new release, and the MQTT traffic must stay
 * within what the protocol allows per device — a bound derived from the agent's steps and rate
 * limits, not from a measurement, so a message storm (a status per frame, progress unthrottled,
 * a state document per status) fails it:
 *
 *   status     ≤ 12 per device, one per step (parseNotice .. report, docs/operations.md), plus
 *              one per second of the update: an update settled after a broken session
 *              republishes awaiting-confirm once a second until the app confirms (agent/update.ts)
 *   progress   ≤ 2 steps (download, transfer) × (first + last + one per 500 ms of the update)
 *   log        ≤ one batch per second of the update, plus one
 *   desired    = 1 per device (the rollout's notice)
 *   inventory  ≤ 2 per device (an update's start and end) + 1 per gateway
 *   rollout-state ≤ 1 per input the runner got (statuses, start, heartbeats): it coalesces
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  type BrokerProcess,
  type FleetRunResult,
  type FleetSetup,
  inProcessBroker,
  runFleet,
  setupFleet,
} from "../bench/fleet.js";

const DEVICES = 20;
const GATEWAYS = 4;
/** The agent's steps (agent/update.ts), each publishing one status. */
const STEPS = 12;
/** agent/agent.ts PROGRESS_EVERY_MS: at most one progress event per device per 500 ms. */
const PROGRESS_PER_S = 2;

let dir: string;
let setup: FleetSetup;
let broker: BrokerProcess;
let r: FleetRunResult;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "fleet-small-"));
  setup = await setupFleet({ dir, devices: DEVICES, appSize: 16384 });
  broker = await inProcessBroker();
  r = await runFleet({
    setup,
    dir,
    broker,
    gateways: GATEWAYS,
    hosts: 0,
    waves: [10, 100],
    logLevel: "silent",
    timeoutMs: 60_000,
    // ESP_OTA_FLEET_VERBOSE=1 prints the waves and the traffic.
    ...(process.env.ESP_OTA_FLEET_VERBOSE ? { log: (l: string) => console.log(l) } : {}),
  });
  if (process.env.ESP_OTA_FLEET_VERBOSE)
    console.log(r.byKind, [...r.perDevice.entries()].slice(0, 3), r.wallS);
}, 60_000);

afterAll(async () => {
  await broker?.close();
  await setup?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it("updates every device of every gateway", () => {
  expect(r.state).toBe("completed");
  expect(r.completed).toBe(DEVICES);
});

it("keeps each device's MQTT traffic within the protocol's bound", () => {
  expect(r.perDevice.size).toBe(DEVICES);
  let statuses = 0;
  for (const [id, d] of r.perDevice) {
    const span = (d.lastStatusAt - d.firstStatusAt) / 1000;
    const why = `${id}: ${JSON.stringify(d)}`;
    expect(d.kinds.status ?? 0, why).toBeLessThanOrEqual(STEPS + Math.ceil(span));
    expect(d.kinds.progress ?? 0, why).toBeLessThanOrEqual(2 * (2 + PROGRESS_PER_S * span));
    expect(d.kinds.log ?? 0, why).toBeLessThanOrEqual(1 + Math.ceil(span));
    expect(d.kinds.desired, why).toBe(1);
    statuses += d.kinds.status ?? 0;
  }
  expect(r.byKind.inventory ?? 0).toBeLessThanOrEqual(2 * DEVICES + GATEWAYS);
  const heartbeats = Math.ceil(r.wallS / 10);
  expect(r.byKind["rollout-state"] ?? 0).toBeLessThanOrEqual(statuses + 1 + heartbeats);
  // Nothing else is published during a rollout (no command traffic, no presence churn).
  const other = Object.entries(r.byKind).filter(
    ([k]) => !["status", "progress", "log", "desired", "inventory", "rollout-state"].includes(k),
  );
  expect(other).toEqual([]);
});
