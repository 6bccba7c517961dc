/**
 * The rollout runner against real brokers (aedes in-process; Mosquitto when installed) and fake
 * gateway agents (harness.ts): completion, the failure-rate abort with withdrawn notices, an operator
 * process restart, pause/resume over the control topic, and an offline device.
 */
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, afterEach, it as base, beforeAll, describe, expect } from "vitest";
import { type GatewayTrust, gatewayIdentity, gatewayTrust } from "../../src/mqtt/status-auth.js";
import { topics as makeTopics, type Topics } from "../../src/mqtt/topics.js";
import { generateManifestKey, type ManifestSigningKey } from "../../src/release/keyring.js";
import { createRollout, type RolloutPlan } from "../../src/rollout/machine.js";
import {
  applyUnowned,
  loadRollout,
  type RolloutRunner,
  runRollout,
  sendControl,
} from "../../src/rollout/runner.js";
import { mosquittoPath, startMosquitto } from "../helpers/mosquitto.js";
import { FakeAgent, type Script, startTestAedes, until } from "./harness.js";

const REL = "app-2.0.0-0123456789ab";
const OLD = "app-1.0.0-ba9876543210";
const ids = (n: number) => Array.from({ length: n }, (_, i) => `dev${String(i).padStart(2, "0")}`);

const BROKERS = [
  { name: "aedes", available: true, start: startTestAedes },
  // The real Mosquitto where it is installed (CI installs it; test/helpers/brokers.ts).
  { name: "mosquitto", available: mosquittoPath() !== undefined, start: () => startMosquitto() },
];

let broker: { url: string; close(): Promise<void> };
let prefixN = 0;
const open: { close(): Promise<unknown> }[] = [];

afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close().catch(() => {});
});

/** Each test under its own prefix, so retained messages of one never reach another. */
function fresh(): { prefix: string; topics: Topics } {
  const prefix = `t${++prefixN}/esp-ota`;
  return { prefix, topics: makeTopics(prefix) };
}

async function operator(): Promise<MqttClient> {
  // aedes 1.2 speaks MQTT 3.1.1 only; Mosquitto both.
  const c = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
  open.push({ close: () => c.endAsync() });
  return c;
}

async function agent(
  prefix: string,
  scripts: Record<string, Script>,
  signWith?: ManifestSigningKey,
): Promise<FakeAgent> {
  const a = await FakeAgent.start(broker.url, prefix, scripts, {
    oldRelease: OLD,
    ...(signWith ? { signWith } : {}),
  });
  open.push(a);
  return a;
}

function plan(devices: string[], over: Partial<RolloutPlan> = {}): RolloutPlan {
  return {
    rolloutId: "r1",
    releaseId: REL,
    version: "2.0.0",
    manifestBaseUrl: "http://127.0.0.1:9/rel",
    devices: devices.map((deviceId, i) => ({ deviceId, counter: 10 + i })),
    waves: [10, 50, 100],
    maxFailureRate: 20,
    minSample: 1,
    waveTimeoutMs: 60_000,
    ...over,
  };
}

async function run(
  client: MqttClient,
  topics: Topics,
  p: RolloutPlan,
  o: { heartbeatMs?: number; gateways?: GatewayTrust; onWarning?: (w: string) => void } = {},
): Promise<RolloutRunner> {
  const r = await runRollout({ client, topics, state: createRollout(p, Date.now()), ...o });
  open.push({ close: () => r.stop() });
  return r;
}

/** Retained payloads on `filter`, read by a new client (what a device connecting now would get). */
async function retained(filter: string): Promise<Map<string, string>> {
  const c = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
  const got = new Map<string, string>();
  c.on("message", (t, p) => got.set(t, p.toString("utf8")));
  await c.subscribeAsync(filter, { qos: 1 });
  // Retained messages are sent right after SUBACK; a round trip of our own marks their end.
  const marker = `${filter.split("/")[0]}/marker/${Math.random()}`;
  await c.subscribeAsync(marker, { qos: 1 });
  await c.publishAsync(marker, "x", { qos: 1 });
  await until(() => got.has(marker), "marker");
  got.delete(marker);
  await c.endAsync();
  return got;
}

describe.each(BROKERS)("rollout runner ($name)", (kind) => {
  beforeAll(async () => {
    if (kind.available) broker = await kind.start();
  });
  afterAll(async () => {
    if (kind.available) await broker.close();
  });
  const it = kind.available ? base : base.skip;

  it("a 10-device rollout in waves 10,50,100% completes; each wave starts after the previous finished", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(10);
    const fake = await agent(
      prefix,
      Object.fromEntries(devs.map((d) => [d, { final: "succeeded" }])),
    );
    const r = await run(await operator(), topics, plan(devs));
    const end = await r.done;
    expect(end.state).toBe("completed");
    for (const d of devs) expect(fake.noticeCount(d), d).toBe(1);
    // The notice carries the index's counter and the derived manifest URL.
    expect(fake.notices.get("dev03")![0]).toMatchObject({
      releaseId: REL,
      counter: 13,
      manifestUrls: ["http://127.0.0.1:9/rel/dev03/manifest.json"],
      rolloutId: "r1",
    });
    const at = (kind: string, d: string, state?: string) =>
      fake.log.findIndex(
        (e) => e.kind === kind && e.deviceId === d && (!state || e.state === state),
      );
    const finalAt = (ds: string[]) => Math.max(...ds.map((d) => at("status", d, "succeeded")));
    for (const d of devs.slice(1, 5)) expect(at("notice", d)).toBeGreaterThan(finalAt(["dev00"]));
    for (const d of devs.slice(5))
      expect(at("notice", d)).toBeGreaterThan(finalAt(devs.slice(1, 5)));
    const saved = await loadRollout(await operator(), topics, "r1", 50);
    expect(saved).toMatchObject({ state: "completed", currentWave: 2 });
    expect(saved!.owner).toBeUndefined();
  });

  it("3 failures in wave 2 with max-failure-rate 20% abort; the not-started device's notice is withdrawn, later waves never notified", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(10);
    const scripts: Record<string, Script> = Object.fromEntries(
      devs.map((d) => [d, { final: "succeeded" } as Script]),
    );
    for (const d of ["dev01", "dev02", "dev03"])
      scripts[d] = { final: "failed", code: "E_AGENT_VERIFY_DEVICE", hold: "downloading" };
    scripts.dev04 = { final: "succeeded", hold: "queued" };
    const fake = await agent(prefix, scripts);
    // minSample 4: judged once dev00 and the three failures are in (3/4 = 75%).
    const r = await run(await operator(), topics, plan(devs, { minSample: 4 }));
    await until(
      () =>
        ["dev01", "dev02", "dev03"].every((d) => r.state().perDevice[d]!.state === "downloading") &&
        r.state().perDevice.dev04!.state === "queued",
      "wave 2 under way",
    );
    for (const d of ["dev01", "dev02", "dev03"]) fake.release(d);
    const end = await r.done;
    expect(end.state).toBe("aborted");
    expect(end.reason?.kind).toBe("failure-rate");
    expect(end.reason?.message).toContain("3/4 = 75.0% exceeds 20%");
    expect(end.perDevice.dev04!.clearedAt).toBeDefined();
    for (const d of ["dev01", "dev02", "dev03"])
      expect(end.perDevice[d]).toMatchObject({
        state: "failed",
        errorCode: "E_AGENT_VERIFY_DEVICE",
      });
    await until(() => fake.clears.get("dev04") === 1, "the withdrawal reaches dev04");
    // Retained empty: a device connecting now gets no notice for dev04, nor for wave 3.
    const desired = await retained(`${prefix}/devices/+/desired`);
    expect([...desired.keys()].sort()).toEqual(
      ["dev00", "dev01", "dev02", "dev03"].map((d) => `${prefix}/devices/${d}/desired`),
    );
    for (const d of devs.slice(5)) expect(fake.noticeCount(d)).toBe(0);
    expect(fake.clears.get("dev01")).toBeUndefined(); // mid-update: left to finish
  });

  it("the operator process restarting mid-rollout continues from the retained state, without republishing notices", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(10);
    const scripts: Record<string, Script> = Object.fromEntries(
      devs.map((d) => [d, { final: "succeeded" } as Script]),
    );
    for (const d of devs.slice(1, 5)) scripts[d] = { final: "succeeded", hold: "downloading" };
    const fake = await agent(prefix, scripts);
    const first = await run(await operator(), topics, plan(devs));
    await until(() => devs.slice(1, 5).every((d) => fake.isHeld(d)), "wave 2 held");
    const stopped = await first.stop();
    expect(stopped).toMatchObject({ state: "running", currentWave: 1 });

    const client = await operator();
    const loaded = await loadRollout(client, topics, "r1", 50);
    expect(loaded!.owner).toBeUndefined(); // let go on stop
    expect(loaded!.currentWave).toBe(1);
    // Meanwhile two devices finish: their statuses are retained, the new process picks them up.
    fake.release("dev01");
    fake.release("dev02");
    const second = await runRollout({ client, topics, state: loaded!, resume: true });
    open.push({ close: () => second.stop() });
    fake.release("dev03");
    fake.release("dev04");
    const end = await second.done;
    expect(end.state).toBe("completed");
    for (const d of devs) expect(fake.noticeCount(d), d).toBe(1);
  });

  it("pause and resume over the control topic: a paused rollout does not start the next wave", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(4);
    const fake = await agent(prefix, {
      dev00: { final: "succeeded", hold: "queued" },
      dev01: { final: "succeeded" },
      dev02: { final: "succeeded" },
      dev03: { final: "succeeded" },
    });
    const r = await run(await operator(), topics, plan(devs, { waves: [25, 100] }));
    const ctl = await operator();
    await until(() => fake.isHeld("dev00"), "dev00 queued");
    await sendControl(ctl, topics, "r1", {
      format: 1,
      action: "pause",
      reason: "look first",
      at: new Date().toISOString(),
    });
    await until(() => r.state().state === "paused", "paused");
    expect(r.state().reason).toMatchObject({ kind: "operator-pause", message: "look first" });
    fake.release("dev00");
    await until(() => r.state().perDevice.dev00!.state === "succeeded", "dev00 finished");
    expect(r.state()).toMatchObject({ state: "paused", currentWave: 0 });
    for (const d of devs.slice(1)) expect(fake.noticeCount(d)).toBe(0);
    await sendControl(ctl, topics, "r1", {
      format: 1,
      action: "resume",
      at: new Date().toISOString(),
    });
    expect((await r.done).state).toBe("completed");
    for (const d of devs) expect(fake.noticeCount(d)).toBe(1);
  });

  it("an offline device holds its wave until the timeout pauses it; its retained notice reaches it when it connects", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(3);
    const online = await agent(prefix, {
      dev00: { final: "succeeded" },
      dev01: { final: "succeeded" },
    });
    const r = await run(await operator(), topics, plan(devs, { waves: [100], waveTimeoutMs: 300 }));
    await until(() => r.state().state === "paused", "wave timeout");
    expect(r.state().reason?.kind).toBe("wave-timeout");
    // Usually only dev02 is open; on a loaded machine dev00/dev01 may not have finished either.
    expect(r.state().reason?.message).toMatch(/not finished: .*dev02/);
    expect(online.noticeCount("dev00")).toBe(1);

    const late = await agent(prefix, { dev02: { final: "succeeded" } });
    await until(() => r.state().perDevice.dev02!.state === "succeeded", "dev02 updated");
    expect(late.noticeCount("dev02")).toBe(1);
    expect(r.state().state).toBe("paused"); // finished while paused: waits for the operator
    await sendControl(await operator(), topics, "r1", {
      format: 1,
      action: "resume",
      at: new Date().toISOString(),
    });
    expect((await r.done).state).toBe("completed");
  });

  it("with --gateways, a forged final status neither fails a device nor aborts the rollout; signed ones count", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(3);
    const key = generateManifestKey("ed25519");
    const gateways = gatewayTrust({ format: 1, gateways: [gatewayIdentity("gw-test", key)] });
    await agent(prefix, { dev00: { final: "succeeded" }, dev01: { final: "succeeded" } }, key);
    // A forger, unsigned, claims dev02 failed: without authentication that is 1 of 3 failed,
    // above the 20% this plan allows, and the rollout would abort.
    await agent(prefix, { dev02: { final: "failed" } });
    const warnings: string[] = [];
    const r = await run(
      await operator(),
      topics,
      plan(devs, { waves: [100], waveTimeoutMs: 1500, maxFailureRate: 20, minSample: 1 }),
      { gateways, onWarning: (w) => warnings.push(w) },
    );
    await until(() => r.state().state === "paused", "wave timeout");
    expect(r.state().perDevice.dev00!.state).toBe("succeeded");
    expect(r.state().perDevice.dev01!.state).toBe("succeeded");
    expect(r.state().perDevice.dev02!.state).not.toBe("failed");
    expect(warnings.some((w) => w.includes("E_MQTT_STATUS_UNSIGNED"))).toBe(true);
  });

  it("a notice its gateway refuses (one final status with the code) aborts at once, not at the wave timeout", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(2);
    const key = generateManifestKey("ed25519");
    const gateways = gatewayTrust({ format: 1, gateways: [gatewayIdentity("gw-test", key)] });
    await agent(
      prefix,
      {
        dev00: { final: "succeeded", refuse: "E_MANIFEST_COUNTER" },
        dev01: { final: "succeeded" },
      },
      key,
    );
    const r = await run(
      await operator(),
      topics,
      // A wave timeout far beyond the test's own: only the refusal can end this rollout.
      plan(devs, { waves: [50, 100], waveTimeoutMs: 3_600_000, maxFailureRate: 0 }),
      { gateways },
    );
    const end = await r.done;
    expect(end.state).toBe("aborted");
    expect(end.perDevice.dev00).toMatchObject({
      state: "failed",
      errorCode: "E_MANIFEST_COUNTER",
    });
    expect(end.perDevice.dev01!.notifiedAt).toBeUndefined();
  });

  it("with --gateways, a signed status that does not name its notice (an agent before noticeDigest) is ignored with a warning", async () => {
    const { prefix, topics } = fresh();
    const key = generateManifestKey("ed25519");
    const gateways = gatewayTrust({ format: 1, gateways: [gatewayIdentity("gw-test", key)] });
    // Such an agent echoes whatever rolloutId a publisher wrote: its failure could be anyone's.
    await agent(prefix, { dev00: { final: "failed", legacy: true } }, key);
    const warnings: string[] = [];
    const r = await run(
      await operator(),
      topics,
      plan(ids(1), { waves: [100], waveTimeoutMs: 1500, maxFailureRate: 0 }),
      { gateways, onWarning: (w) => warnings.push(w) },
    );
    await until(() => r.state().state === "paused", "wave timeout");
    expect(r.state().perDevice.dev00!.state).toBeUndefined();
    expect(warnings.some((w) => w.includes("does not name the notice it answers"))).toBe(true);
  });

  it("with no live owner, an abort is applied directly: the notices not started are withdrawn", async () => {
    const { prefix, topics } = fresh();
    const devs = ids(2);
    const fake = await agent(prefix, {
      dev00: { final: "succeeded", hold: "queued" },
      dev01: { final: "succeeded", hold: "queued" },
    });
    const client = await operator();
    const r = await runRollout({
      client,
      topics,
      state: createRollout(plan(devs, { waves: [100] }), Date.now()),
      detach: true,
    });
    const detached = await r.done;
    expect(detached.owner).toBeUndefined();
    await until(() => fake.isHeld("dev00") && fake.isHeld("dev01"), "both queued");
    const loaded = await loadRollout(client, topics, "r1", 50);
    const out = await applyUnowned(client, topics, loaded!, {
      type: "abort",
      reason: "wrong build",
      now: Date.now(),
    });
    expect(out.state).toMatchObject({
      state: "aborted",
      reason: { kind: "operator-abort", message: "wrong build" },
    });
    await until(
      () => fake.clears.get("dev00") === 1 && fake.clears.get("dev01") === 1,
      "withdrawn",
    );
    expect(await loadRollout(client, topics, "r1", 50)).toMatchObject({ state: "aborted" });
  });
});
