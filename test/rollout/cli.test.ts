/**
 * `esp-ota rollout ...` in-process against an aedes broker with fake gateway agents
 * (harness.ts), and a hand-written release directory (index.json and manifests: no images are
 * needed, the agents never fetch them).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import mqtt from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ESP_OTA_PLUGINS } from "../../agent/plugins.js";
import { runCli } from "../../src/cli/program.js";
import { topics as makeTopics } from "../../src/mqtt/topics.js";
import { createRollout, transition } from "../../src/rollout/machine.js";
import { encodeRolloutState, type RolloutState } from "../../src/rollout/messages.js";
import { runRollout } from "../../src/rollout/runner.js";
import { runCapture } from "../helpers/cli.js";
import { FakeAgent, type Script, startTestAedes, until } from "./harness.js";

const REL = "blink-3.1.0-00aa11bb22cc";
let broker: { url: string; close(): Promise<void> };
let dir: string;
let prefixN = 0;
const open: { close(): Promise<unknown> }[] = [];

beforeAll(async () => {
  broker = await startTestAedes();
  dir = mkdtempSync(join(tmpdir(), "esp-ota-rollout-"));
});
afterAll(async () => {
  await broker.close();
  rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close().catch(() => {});
});

/** A release directory as `release build` lays it out, with what a rollout reads. */
function release(devices: string[]): string {
  const out = join(dir, `rel-${++prefixN}`);
  mkdirSync(out, { recursive: true });
  const index = {
    format: 1,
    releaseId: REL,
    chip: "esp32",
    project: "blink",
    version: "3.1.0",
    secureVersion: 0,
    devices: devices.map((d, i) => ({
      deviceId: d,
      counter: 40 + i,
      manifest: `${d}/manifest.json`,
      variants: ["ota_0", "ota_1"].map((slot, j) => ({
        slot,
        offset: 0x10000 * (j + 1),
        size: 4096,
        sha256: "0".repeat(64),
        file: `${d}/${slot}.bin`,
      })),
    })),
  };
  writeFileSync(join(out, "index.json"), JSON.stringify(index));
  for (const d of devices) {
    mkdirSync(join(out, d));
    const manifest = {
      signed: {
        releaseId: REL,
        deviceId: d,
        variants: [{ slot: "ota_0", urls: [`http://127.0.0.1:9/rel/42/${d}/ota_0.bin`] }],
      },
      signatures: [],
    };
    writeFileSync(join(out, d, "manifest.json"), JSON.stringify(manifest));
  }
  return out;
}

const devs = (n: number) => Array.from({ length: n }, (_, i) => `esp${i}`);

async function agent(prefix: string, scripts: Record<string, Script>): Promise<FakeAgent> {
  const a = await FakeAgent.start(broker.url, prefix, scripts);
  open.push(a);
  return a;
}

const all = (ids: string[], s: Script) => Object.fromEntries(ids.map((d) => [d, s]));

function brokerArgs(prefix: string): string[] {
  return ["--broker", broker.url, "--mqtt-version", "4", "--prefix", prefix];
}

describe("esp-ota rollout", () => {
  it("start runs the waves to completion (exit 0), derives the manifest URLs, prints the summary as JSON", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const ids = devs(4);
    const fake = await agent(prefix, all(ids, { final: "succeeded" }));
    const rel = release(ids);
    const r = await runCapture([
      "rollout",
      "start",
      "--release",
      rel,
      "--id",
      "r-ok",
      "--waves",
      "25,100%",
      "--json",
      ...brokerArgs(prefix),
    ]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({
      rolloutId: "r-ok",
      releaseId: REL,
      state: "completed",
      counts: { succeeded: 4 },
      waves: [
        { percent: 25, devices: 1, finished: 1 },
        { percent: 100, devices: 3, finished: 3 },
      ],
    });
    // Not a TTY: one line per change on stderr.
    expect(r.stderr).toContain("wave 1 started: 1 device(s) (esp0)");
    expect(r.stderr).toContain("esp3: succeeded");
    expect(r.stderr).toMatch(/completed\n/);
    expect(fake.notices.get("esp2")).toEqual([
      expect.objectContaining({
        counter: 42,
        manifestUrls: ["http://127.0.0.1:9/rel/42/esp2/manifest.json"],
        rolloutId: "r-ok",
      }),
    ]);
  });

  it("a failing canary aborts the rollout: exit 1 E_ROLLOUT_ABORTED, the table names the device and its code", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const ids = devs(4);
    const scripts = all(ids, { final: "succeeded" });
    scripts.esp0 = { final: "rolled-back", code: "E_AGENT_CONFIRM_TIMEOUT" };
    const fake = await agent(prefix, scripts);
    const r = await runCapture([
      "rollout",
      "start",
      "--release",
      release(ids),
      "--id",
      "r-bad",
      "--waves",
      "25,100",
      ...brokerArgs(prefix),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error E_ROLLOUT_ABORTED: rollout r-bad aborted (failure-rate)");
    expect(r.stdout).toMatch(/esp0\s+rolled-back\s+E_AGENT_CONFIRM_TIMEOUT/);
    expect(r.stdout).toMatch(/failure rate 1\/1 = 100% \(abort above 5%\)/);
    expect(fake.noticeCount("esp1")).toBe(0);
  });

  it("--no-wait, status, list, pause applied without an owner, then resume takes over to completion", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const ids = devs(4);
    const scripts = all(ids, { final: "succeeded" });
    scripts.esp0 = { final: "succeeded", hold: "downloading" };
    const fake = await agent(prefix, scripts);
    const args = brokerArgs(prefix);
    const started = await runCapture([
      "rollout",
      "start",
      "--release",
      release(ids),
      "--id",
      "r-nw",
      "--waves",
      "25,100",
      "--no-wait",
      ...args,
    ]);
    expect(started.code).toBe(0);
    expect(started.stderr).toContain("continue with `esp-ota rollout resume r-nw`");
    await until(() => fake.isHeld("esp0"), "esp0 downloading");

    const status = await runCapture(["rollout", "status", "r-nw", "--json", ...args]);
    expect(status.code).toBe(0);
    // Wave numbers are 1-based in JSON as in text: wave 1 of 2 is running.
    expect(JSON.parse(status.stdout)).toMatchObject({
      state: "running",
      currentWave: 1,
      waves: [
        { wave: 1, percent: 25 },
        { wave: 2, percent: 100 },
      ],
      devices: expect.arrayContaining([expect.objectContaining({ deviceId: "esp0", wave: 1 })]),
      counts: { pending: 3 },
    });
    const text = await runCapture(["rollout", "status", "r-nw", ...args]);
    expect(text.stdout).toContain("running, wave 1/2");
    const list = await runCapture(["rollout", "list", "--json", ...args]);
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({
        rolloutId: "r-nw",
        state: "running",
        owner: null,
        ownerLive: false,
      }),
    ]);

    const paused = await runCapture(["rollout", "pause", "r-nw", "--reason", "lunch", ...args]);
    expect(paused.code).toBe(0);
    expect(paused.stderr).toContain("no process runs rollout r-nw: applied here");
    expect(paused.stdout).toContain("r-nw: paused (operator-pause: lunch)");

    fake.release("esp0");
    // Another operator follows it meanwhile: one JSON line per change, until it ends.
    const watching = runCapture(["rollout", "status", "r-nw", "--watch", "--json", ...args]);
    const resumed = await runCapture(["rollout", "resume", "r-nw", "--json", ...args]);
    expect(resumed.code).toBe(0);
    expect(JSON.parse(resumed.stdout)).toMatchObject({
      state: "completed",
      counts: { succeeded: 4 },
    });
    for (const d of ids) expect(fake.noticeCount(d)).toBe(1);
    const watched = await watching;
    expect(watched.code).toBe(0);
    const lines = watched.stdout.trim().split("\n");
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ rolloutId: "r-nw", state: "completed" });

    const again = await runCapture(["rollout", "pause", "r-nw", ...args]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("error E_ROLLOUT_FINISHED");
  });

  it("abort goes to the process that owns the rollout over the control topic", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const ids = devs(2);
    const fake = await agent(prefix, all(ids, { final: "succeeded", hold: "queued" }));
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
    open.push({ close: () => client.endAsync() });
    const state = createRollout(
      {
        rolloutId: "r-live",
        releaseId: REL,
        version: "3.1.0",
        manifestBaseUrl: "http://127.0.0.1:9/rel/42",
        devices: ids.map((deviceId) => ({ deviceId, counter: 1 })),
        waves: [100],
        maxFailureRate: 5,
        minSample: 1,
        waveTimeoutMs: 60_000,
      },
      Date.now(),
    );
    const runner = await runRollout({ client, topics: makeTopics(prefix), state });
    open.push({ close: () => runner.stop() });
    await until(() => fake.isHeld("esp0") && fake.isHeld("esp1"), "both queued");
    const r = await runCapture([
      "rollout",
      "abort",
      "r-live",
      "--reason",
      "bad build",
      ...brokerArgs(prefix),
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain("applied here");
    expect(r.stdout).toContain("r-live: aborted (operator-abort: bad build)");
    expect((await runner.done).state).toBe("aborted");
    await until(() => fake.clears.get("esp0") === 1 && fake.clears.get("esp1") === 1, "withdrawn");
  });

  /** A rollout's retained state as a process that ran it left it (wave 1 of 2 notified). */
  async function retain(prefix: string, id: string, owner?: RolloutState["owner"]) {
    const ids = devs(2);
    let state = createRollout(
      {
        rolloutId: id,
        releaseId: REL,
        version: "3.1.0",
        manifestBaseUrl: "http://127.0.0.1:9/rel/42",
        devices: ids.map((deviceId) => ({ deviceId, counter: 1 })),
        waves: [50, 100],
        maxFailureRate: 5,
        minSample: 1,
        waveTimeoutMs: 60_000,
      },
      Date.now(),
    );
    state = transition(state, { type: "start", now: Date.now() }).state;
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
    await client.publishAsync(
      makeTopics(prefix).rolloutState(id),
      Buffer.from(encodeRolloutState(owner ? { ...state, owner } : state)),
      { qos: 1, retain: true },
    );
    await client.endAsync();
    return ids;
  }

  it("resume takes over at once from an owner whose pid on this host is dead, and says so (issue 13 item 11)", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid!;
    // A heartbeat of a second ago: judged by it alone, the owner is live for 30 s more.
    await retain(prefix, "r-dead", {
      host: hostname(),
      pid: dead,
      heartbeatAt: new Date(Date.now() - 1000).toISOString(),
      heartbeatMs: 10_000,
    });
    const list = await runCapture(["rollout", "list", "--json", ...brokerArgs(prefix)]);
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({ rolloutId: "r-dead", ownerLive: false }),
    ]);
    const r = await runCapture(["rollout", "resume", "r-dead", "--no-wait", ...brokerArgs(prefix)]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain("is running (owned by");
    expect(r.stderr).toContain(
      `rollout r-dead: taking it over (${hostname()}:${dead} is not running (pid ${dead} on this host))`,
    );
    expect(r.stderr).not.toContain("ignored");
  });

  it("resume of a running rollout whose owner went stale takes it over without saying the resume was ignored", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    await retain(prefix, "r-stale", {
      host: "another-host.example",
      pid: 4242,
      heartbeatAt: new Date(Date.now() - 60_000).toISOString(),
      heartbeatMs: 10_000,
    });
    const r = await runCapture([
      "rollout",
      "resume",
      "r-stale",
      "--no-wait",
      ...brokerArgs(prefix),
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(
      "rollout r-stale: taking it over (another-host.example:4242 missed 3 heartbeats",
    );
    expect(r.stderr).not.toContain("resume ignored");
    // A live owner elsewhere is still left alone.
    const live = await retain(prefix, "r-live2", {
      host: "another-host.example",
      pid: 4242,
      heartbeatAt: new Date().toISOString(),
      heartbeatMs: 10_000,
    });
    expect(live).toHaveLength(2);
    const busy = await runCapture([
      "rollout",
      "resume",
      "r-live2",
      "--no-wait",
      ...brokerArgs(prefix),
    ]);
    expect(busy.code).toBe(0);
    expect(busy.stdout).toContain(
      "rollout r-live2 is running (owned by another-host.example:4242)",
    );
  });

  it("status --watch on a pipe prints a line only when what it says changed (issue 13 item 11)", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
    open.push({ close: () => client.endAsync() });
    const t0 = Date.now();
    let seq = 0;
    let state = transition(
      createRollout(
        {
          rolloutId: "r-w",
          releaseId: REL,
          version: "3.1.0",
          manifestBaseUrl: "http://127.0.0.1:9/rel/42",
          devices: ["esp0", "esp1"].map((deviceId) => ({ deviceId, counter: 1 })),
          waves: [50, 100],
          maxFailureRate: 5,
          minSample: 1,
          waveTimeoutMs: 60_000,
        },
        t0,
      ),
      { type: "start", now: t0 },
    ).state;
    const retainState = () =>
      client.publishAsync(
        makeTopics(prefix).rolloutState("r-w"),
        Buffer.from(encodeRolloutState(state)),
        {
          qos: 1,
          retain: true,
        },
      );
    const report = async (deviceId: string, st: "downloading" | "transferring" | "succeeded") => {
      const now = t0 + ++seq * 1000;
      state = transition(state, {
        type: "status",
        status: {
          format: 1,
          deviceId,
          gatewayId: "gw",
          seq,
          state: st,
          releaseId: REL,
          rolloutId: "r-w",
          updatedAt: new Date(now).toISOString(),
        },
        now,
      }).state;
      await retainState();
    };
    await retainState();
    let out = "";
    const watching = runCli(
      ["rollout", "status", "r-w", "--watch", ...brokerArgs(prefix)],
      { write: (x: string) => (out += x), isTTY: false },
      { write: () => {} },
      process.cwd(),
      ESP_OTA_PLUGINS,
    );
    const lines = () => out.split("\n").filter((l) => /^\d{4}-\S+Z /.test(l));
    await until(() => lines().length === 1, "the first line (the state as loaded)");
    await report("esp0", "downloading");
    // Printed (live, or as the retained state on subscribing): the watch is subscribed now.
    await until(() => lines().length === 2, "the downloading line");
    await report("esp0", "transferring"); // a change of state, not of the line
    await report("esp0", "succeeded");
    await report("esp1", "succeeded");
    expect(await watching).toBe(0);
    expect(lines().map((l) => l.replace(/^\S+ /, ""))).toEqual([
      "running wave 1/2: pending 1, notified 1",
      "running wave 1/2: pending 1, updating 1",
      "running wave 2/2: notified 1, succeeded 1",
      "completed wave 2/2: succeeded 2",
    ]);
  });

  it("pause and abort take --json: the summary after the change", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    await retain(prefix, "r-js");
    const args = brokerArgs(prefix);
    const paused = await runCapture(["rollout", "pause", "r-js", "--json", ...args]);
    expect(paused.code).toBe(0);
    expect(JSON.parse(paused.stdout)).toMatchObject({
      rolloutId: "r-js",
      state: "paused",
      currentWave: 1,
      reason: { kind: "operator-pause" },
    });
    const again = await runCapture(["rollout", "pause", "r-js", "--json", ...args]);
    expect(JSON.parse(again.stdout)).toMatchObject({ state: "paused" });
    const aborted = await runCapture(["rollout", "abort", "r-js", "--json", ...args]);
    expect(aborted.code).toBe(0);
    expect(JSON.parse(aborted.stdout)).toMatchObject({
      state: "aborted",
      counts: { withdrawn: 1, pending: 1 },
    });
  });

  it("help shows the failure-rate default as a percentage", async () => {
    const r = await runCapture(["rollout", "start", "--help"]);
    expect(r.stdout).toMatch(/--max-failure-rate <pct>[\s\S]*\(default: 5%\)/);
  });

  it("on a terminal the live view is a block redrawn in place", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const ids = devs(2);
    await agent(prefix, all(ids, { final: "succeeded" }));
    let stderr = "";
    let stdout = "";
    const code = await runCli(
      [
        "rollout",
        "start",
        "--release",
        release(ids),
        "--id",
        "r-tty",
        "--waves",
        "50,100",
        ...brokerArgs(prefix),
      ],
      { write: (x: string) => (stdout += x), isTTY: true },
      { write: (x: string) => (stderr += x), isTTY: true },
      process.cwd(),
      ESP_OTA_PLUGINS,
    );
    expect(code).toBe(0);
    // Cursor up over the previous block and clear, then the block again.
    const ESC = "\u001b";
    expect(stderr).toMatch(new RegExp(`${ESC}\\[\\d+A${ESC}\\[0J`));
    expect(stderr).toContain("> wave 2 100% ████████████████████████ 1/1 finished");
    expect(stdout).toMatch(/state\s+devices\nsucceeded\s+2/);
  });

  it("refuses what cannot work, with its code", async () => {
    const prefix = `c${++prefixN}/esp-ota`;
    const rel = release(devs(2));
    const args = brokerArgs(prefix);
    const bad = await runCapture([
      "rollout",
      "start",
      "--release",
      rel,
      "--waves",
      "50,40",
      ...args,
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("waves are cumulative and must increase");
    const unknown = await runCapture([
      "rollout",
      "start",
      "--release",
      rel,
      "--devices",
      "esp0,nope",
      ...args,
    ]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain(
      "error E_ROLLOUT_DEVICES: release blink-3.1.0-00aa11bb22cc has no manifest for device nope",
    );
    const missing = await runCapture(["rollout", "status", "r-none", ...args]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("error E_ROLLOUT_NOT_FOUND");
    const noIndex = await runCapture(["rollout", "start", "--release", dir, ...args]);
    expect(noIndex.code).toBe(1);
    expect(noIndex.stderr).toContain("error E_ROLLOUT_INDEX");
  });
});
