/**
 * The gateway agent's /metrics, /healthz and /readyz and its presence health summary (issue 16
 * "Metrics and health"; docs/metrics.md), through the whole agent in process: the embedded
 * broker, one simulated secure ESP32 on an in-memory UART link (the C firmware behind a paced
 * link), a release built for it and served over loopback HTTP, and Prometheus's view: scrapes
 * over HTTP while the update runs.
 */
import { mkdirSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../agent/agent.js";
import { parseAgentConfig } from "../../agent/config.js";
import { createLogger } from "../../agent/log.js";
import { memoryPorts } from "../../agent/memory-ports.js";
import { isVerificationCode } from "../../agent/metrics.js";
import { type RunningBroker, startBroker } from "../../broker/broker.js";
import { listenProblem, parseListen } from "../../src/metrics/http.js";
import { connectMqtt } from "../../src/mqtt/client.js";
import {
  type DeviceStatus,
  encodeMessage,
  type Presence,
  parseMessage,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import { createStaticServer } from "../../src/release/serve.js";
import { manifestUrl } from "../../src/rollout/plan.js";
import type { Fleet } from "../../src/sim/fleet.js";
import { type MemoryFleet, serveFleetInMemory } from "../../src/sim/fleet-memory.js";
import { encodeFrame, FRAME_GAP_MS } from "../../src/uart/frame.js";
import { HostSession } from "../../src/uart/host.js";
import type { BytePort } from "../../src/uart/port.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { buildFleetRelease, makeTestFleet, removeTestFleet } from "../helpers/fleet.js";

/** The value of one sample of the Prometheus text format, or undefined when it is absent. */
function sample(text: string, name: string, labels = ""): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? "") === (labels ? `{${labels}}` : "")) return Number(m[3]);
  }
  return undefined;
}

/**
 * A 32 KB app: about 0.35 s on the wire at 921600 baud. The update takes about 2 s in all: the
 * device's boot (300 ms) and self-test (500 ms) run in real time.
 */
const APP_SIZE = 32 * 1024;

let fleet: Fleet;
let served: MemoryFleet;
let broker: RunningBroker;
let brokerPort: number;
let web: Server;
let agent: Agent;
let client: MqttClient;
let id: string;
let base: string;
let counter: number;
let imageSize: number;
let releaseId: string;
const statuses: DeviceStatus[] = [];
const presences: Presence[] = [];
const t = topics();
const dir = () => join(fleet.dir, "..");

const scrape = async (): Promise<string> => (await fetch(`${agent.metricsUrl}/metrics`)).text();
const readyz = async () => {
  const r = await fetch(`${agent.metricsUrl}/readyz`);
  return { status: r.status, text: await r.text() };
};

beforeAll(async () => {
  fleet = makeTestFleet(1);
  id = fleet.devices[0]!.deviceId;
  const out = join(dir(), "www");
  mkdirSync(out);
  web = createStaticServer(out);
  await new Promise<void>((ok) => web.listen(0, "127.0.0.1", ok));
  base = `http://127.0.0.1:${(web.address() as AddressInfo).port}/`;
  const built = await buildFleetRelease(fleet, "2.0.0", {
    baseUrl: base,
    outDir: out,
    appSize: APP_SIZE,
  });
  const entry = built.index.devices.find((d) => d.deviceId === id)!;
  counter = entry.counter;
  releaseId = built.releaseId;
  imageSize = entry.variants[0]!.size;

  broker = await startBroker({ port: 0 });
  brokerPort = broker.port;
  served = serveFleetInMemory(fleet.devices, { save: false });
  const parsed = parseAgentConfig(
    `gatewayId: metrics-gw
mqtt:
  url: ${broker.url}
trust:
  policy: ${fleet.trustFile}
serial:
  ports:
    - glob: /nonexistent/tty-*
stateDir: ${join(dir(), "agent-state")}
metrics:
  listen: 127.0.0.1:0
`,
    join(dir(), "gateway.yaml"),
  );
  if (!parsed.config) throw new Error(parsed.problems.map((p) => p.message).join("; "));
  expect(parsed.config.metrics.enabled).toBe(true);
  agent = new Agent({
    config: parsed.config,
    log: createLogger("silent", { pretty: false }),
    ports: memoryPorts(served),
    presenceHealthMs: 100,
  });
  client = await connectMqtt({ url: broker.url, clientId: "metrics-observer", protocolVersion: 4 });
  client.on("message", (topic, payload) => {
    if (topic === t.presence("metrics-gw")) {
      const p = parseMessage("presence", payload);
      if (p.ok) presences.push(p.value);
      else throw new Error(p.reason);
      return;
    }
    const p = parseMessage("status", payload);
    if (p.ok) statuses.push(p.value);
  });
  await client.subscribeAsync([t.status(id), t.presence("metrics-gw")], { qos: 1 });
  await agent.start();
  const by = Date.now() + 20_000;
  while (agent.attached().length < 1 && Date.now() < by)
    await new Promise((r) => setTimeout(r, 20));
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  await client?.endAsync(true);
  served?.close();
  await broker?.close();
  await new Promise<void>((ok) => {
    web?.closeAllConnections();
    web ? web.close(() => ok()) : ok();
  });
  if (fleet) removeTestFleet(fleet);
}, 30_000);

describe("agent /metrics during an update", () => {
  it("the series move as the update does", async () => {
    expect(agent.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${agent.metricsUrl}/healthz`)).status).toBe(200);
    expect(await readyz()).toEqual({ status: 200, text: "ready\n" });
    let m = await scrape();
    expect(sample(m, "esp_ota_agent_ports", 'state="attached"')).toBe(1);
    expect(sample(m, "esp_ota_agent_ports", 'state="updating"')).toBe(0);
    expect(sample(m, "esp_ota_agent_mqtt_connected")).toBe(1);
    expect(sample(m, "esp_ota_agent_updates_started_total")).toBe(0);
    expect(sample(m, "esp_ota_agent_transfer_bytes_total")).toBe(0);
    // prom-client's process metrics are in the agent's own registry, event-loop lag among them.
    expect(sample(m, "esp_ota_agent_nodejs_eventloop_lag_p99_seconds")).toBeGreaterThanOrEqual(0);

    await client.publishAsync(
      t.desired(id),
      Buffer.from(
        encodeMessage("notice", {
          format: 1,
          deviceId: id,
          releaseId,
          counter,
          manifestUrls: [manifestUrl(base, id)],
          issuedAt: new Date().toISOString(),
        }),
      ),
      { qos: 1, retain: true },
    );

    // Scraped as Prometheus would, while the update runs: the port is updating, the image is
    // downloaded before any byte goes to the device, and all of it is acknowledged by the device
    // while the port still updates (the reboot and the self-test follow).
    const during: { updating: number; downloaded: number; bytes: number; staged: number }[] = [];
    const by = Date.now() + 30_000;
    const final = () =>
      statuses.find((s) => s.releaseId === releaseId && s.finishedAt !== undefined);
    while (!final()) {
      if (Date.now() > by) throw new Error(`no final status: ${JSON.stringify(statuses.at(-1))}`);
      m = await scrape();
      during.push({
        updating: sample(m, "esp_ota_agent_ports", 'state="updating"')!,
        downloaded: sample(m, "esp_ota_agent_download_bytes_total")!,
        bytes: sample(m, "esp_ota_agent_transfer_bytes_total")!,
        staged: sample(m, "esp_ota_agent_staging_bytes")!,
      });
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(final()).toMatchObject({ state: "succeeded" });
    const mid = during.filter((d) => d.updating === 1);
    expect(mid.length).toBeGreaterThan(0);
    expect(mid.some((d) => d.downloaded === imageSize && d.bytes < imageSize)).toBe(true);
    expect(mid.some((d) => d.bytes === imageSize)).toBe(true);
    // Counters only go up.
    for (let i = 1; i < during.length; i++) {
      expect(during[i]!.bytes).toBeGreaterThanOrEqual(during[i - 1]!.bytes);
      expect(during[i]!.downloaded).toBeGreaterThanOrEqual(during[i - 1]!.downloaded);
    }
    // The ciphertext (and its resume sidecar) was staged while it went to the device: the file
    // lives from the download to the final status, over a second, longer than the gauge's cache.
    expect(during.some((d) => d.staged >= imageSize)).toBe(true);

    await expect
      .poll(async () => sample(await scrape(), "esp_ota_agent_ports", 'state="updating"'))
      .toBe(0);
    m = await scrape();
    expect(sample(m, "esp_ota_agent_updates_started_total")).toBe(1);
    expect(sample(m, "esp_ota_agent_updates_finished_total", 'outcome="succeeded",code=""')).toBe(
      1,
    );
    expect(sample(m, "esp_ota_agent_download_bytes_total")).toBe(imageSize);
    expect(sample(m, "esp_ota_agent_download_duration_seconds_count", 'result="ok"')).toBe(1);
    expect(sample(m, "esp_ota_agent_transfer_bytes_total")).toBe(imageSize);
    expect(sample(m, "esp_ota_agent_transfer_duration_seconds_count", 'result="ok"')).toBe(1);
    expect(sample(m, "esp_ota_agent_transfer_duration_seconds_sum", 'result="ok"')).toBeGreaterThan(
      0,
    );
    expect(sample(m, "esp_ota_agent_device_reboots_total", 'cause="update"')).toBe(1);
    expect(sample(m, "esp_ota_agent_device_reboots_total", 'cause="unexpected"')).toBe(0);
    expect(sample(m, "esp_ota_agent_device_rollbacks_total")).toBe(0);
    expect(sample(m, "esp_ota_agent_uart_frame_errors_total", 'kind="crc"')).toBe(0);
    expect(sample(m, "esp_ota_agent_resumes_total", 'kind="transfer"')).toBe(0);

    // The retained presence carries the same counts, for gateways nobody can scrape.
    await expect.poll(() => presences.at(-1)?.health?.updates.succeeded, { timeout: 5000 }).toBe(1);
    const h = presences.at(-1)!.health!;
    expect(presences.at(-1)!.state).toBe("online");
    expect(h).toMatchObject({
      ready: true,
      devices: { attached: 1, updating: 0, failed: 0, conflict: 0 },
      updates: { started: 1, succeeded: 1, failed: 0, rolledBack: 0, cancelled: 0 },
      uartFrameErrors: 0,
      mqttReconnects: 0,
    });
    expect(Buffer.byteLength(encodeMessage("presence", presences.at(-1)!))).toBeLessThan(1024);
  }, 40_000);

  it("/readyz flips when the broker goes away and back; reconnects are counted", async () => {
    await broker.close();
    await expect.poll(readyz, { timeout: 5000 }).toEqual({
      status: 503,
      text: "not ready: broker not connected\n",
    });
    expect(sample(await scrape(), "esp_ota_agent_mqtt_connected")).toBe(0);
    // /healthz says the process is alive all the same.
    expect((await fetch(`${agent.metricsUrl}/healthz`)).status).toBe(200);

    broker = await startBroker({ port: brokerPort });
    // mqtt.js retries every second (src/mqtt/client.ts).
    await expect.poll(readyz, { timeout: 8000 }).toEqual({ status: 200, text: "ready\n" });
    const m = await scrape();
    expect(sample(m, "esp_ota_agent_mqtt_connected")).toBe(1);
    expect(sample(m, "esp_ota_agent_mqtt_reconnects_total")).toBe(1);
    // The update's staging was removed when it ended (read here, past the gauge's 1 s cache).
    await expect
      .poll(async () => sample(await scrape(), "esp_ota_agent_staging_bytes"), { timeout: 3000 })
      .toBe(0);
  }, 20_000);
});

describe("agent config: metrics", () => {
  const cfg = (extra: string) =>
    parseAgentConfig(
      `trust:\n  policy: ${fleet.trustFile}\nserial:\n  ports:\n    - glob: /dev/ttyUSB*\n${extra}`,
      join(dir(), "g.yaml"),
    );

  it("off by default, on at the default address with enabled: true, on when listen is given", () => {
    expect(cfg("").config!.metrics).toEqual({
      enabled: false,
      listen: { host: "127.0.0.1", port: 9477 },
    });
    expect(cfg("metrics:\n  enabled: true\n").config!.metrics.enabled).toBe(true);
    expect(cfg("metrics:\n  listen: '[::1]:9100'\n").config!.metrics).toEqual({
      enabled: true,
      listen: { host: "::1", port: 9100 },
    });
    expect(cfg("metrics:\n  enabled: false\n  listen: 127.0.0.1:1\n").config!.metrics.enabled).toBe(
      false,
    );
  });

  it("a bad address is an error at its key; a non-loopback one is warned about", () => {
    const bad = cfg("metrics:\n  listen: 127.0.0.1\n");
    expect(bad.config).toBeUndefined();
    expect(bad.problems).toMatchObject([
      { path: "metrics.listen", severity: "error", message: expect.stringContaining("host:port") },
    ]);
    expect(cfg("metrics:\n  listen: 0.0.0.0:70000\n").problems[0]?.message).toContain("70000");
    const open = cfg("metrics:\n  listen: 0.0.0.0:9477\n");
    expect(open.config?.metrics.enabled).toBe(true);
    expect(open.problems).toMatchObject([{ path: "metrics.listen", severity: "warning" }]);
  });

  it("listen addresses: host:port, IPv6 in brackets, nothing else", () => {
    expect(parseListen("localhost:0")).toEqual({ host: "localhost", port: 0 });
    for (const bad of ["::1:80", "127.0.0.1:", ":80", "a b:80", "127.0.0.1:80/x", ""])
      expect(listenProblem(bad), bad).toBeDefined();
  });

  it("verification failures are the codes of a refused check", () => {
    for (const c of [
      "E_MANIFEST_SIGNATURE_INVALID",
      "E_DOWNLOAD_HASH_MISMATCH",
      "E_UART_HASH_MISMATCH",
    ])
      expect(isVerificationCode(c), c).toBe(true);
    for (const c of ["E_DOWNLOAD_TIMEOUT", "E_UART_TIMEOUT", "E_AGENT_DEVICE_GONE"])
      expect(isVerificationCode(c), c).toBe(false);
  });
});

describe("the UART frame-error counts the agent reads (HostSession.stats)", () => {
  /** A session on a port the test feeds, in virtual time. */
  function session() {
    const sched = new VirtualScheduler();
    let feed: (b: Uint8Array) => void = () => {};
    const port: BytePort = {
      write() {},
      onData: (cb) => {
        feed = cb;
      },
      onClose() {},
      setBaud() {},
      baud: 115200,
      close() {},
    };
    const s = new HostSession({ port, timers: sched, job: { mode: "info", consoleBaud: 115200 } });
    void s.start();
    return { s, sched, feed: (b: Uint8Array) => feed(b) };
  }
  const frame = encodeFrame(
    0x03,
    Uint8Array.from({ length: 200 }, (_, i) => i & 0xff),
  );

  it("gap: a partial frame given up after a silence is counted; one completed late is not", () => {
    const a = session();
    a.feed(frame.subarray(0, 100));
    a.sched.run({ limitMs: FRAME_GAP_MS + 5 });
    expect(a.sched.now()).toBeGreaterThan(FRAME_GAP_MS);
    a.feed(frame.subarray(100));
    expect(a.s.stats.gapResyncs).toBe(0);

    const b = session();
    b.feed(frame.subarray(0, 100));
    b.sched.run({ limitMs: FRAME_GAP_MS + 5 });
    b.feed(encodeFrame(0x01, Uint8Array.of(1, 2, 3)));
    expect(b.s.stats.gapResyncs).toBe(1);
  });

  it("crc: a frame whose CRC fails is counted", () => {
    const a = session();
    const bad = Uint8Array.from(frame);
    bad[10] = bad[10]! ^ 0xff;
    a.feed(bad);
    expect(a.s.stats.crcErrors).toBeGreaterThanOrEqual(1);
  });
});
