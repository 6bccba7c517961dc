/**
 * The embedded broker's /metrics, /healthz and /readyz (docs/metrics.md, issue 16): a real broker
 * on loopback, real MQTT clients, scraped over HTTP as Prometheus would.
 */
import type { MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { type RunningBroker, startBroker } from "../../broker/broker.js";
import { connectMqtt } from "../../src/mqtt/client.js";

/** The value of one sample of the Prometheus text format, or undefined when it is absent. */
function sample(text: string, name: string, labels = ""): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? "") === (labels ? `{${labels}}` : "")) return Number(m[3]);
  }
  return undefined;
}

const get = async (url: string) => {
  const r = await fetch(url);
  return { status: r.status, text: await r.text(), type: r.headers.get("content-type") ?? "" };
};

const brokers: RunningBroker[] = [];
const clients: MqttClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.endAsync(true);
  for (const b of brokers.splice(0)) await b.close();
});

async function broker(): Promise<RunningBroker & { metricsUrl: string }> {
  const b = await startBroker({ port: 0, metrics: { host: "127.0.0.1", port: 0 } });
  brokers.push(b);
  expect(b.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  return b as RunningBroker & { metricsUrl: string };
}

async function client(url: string, id: string): Promise<MqttClient> {
  const c = await connectMqtt({ url, clientId: id, protocolVersion: 4 });
  clients.push(c);
  return c;
}

describe("embedded broker metrics", () => {
  it("probes answer: /healthz alive, /readyz listening, unknown paths 404, POST 405", async () => {
    const b = await broker();
    expect((await get(`${b.metricsUrl}/healthz`)).status).toBe(200);
    const ready = await get(`${b.metricsUrl}/readyz`);
    expect(ready).toMatchObject({ status: 200, text: "ready\n" });
    expect((await get(`${b.metricsUrl}/nope`)).status).toBe(404);
    expect((await fetch(`${b.metricsUrl}/metrics`, { method: "POST" })).status).toBe(405);
    const m = await get(`${b.metricsUrl}/metrics`);
    expect(m.type).toContain("text/plain");
    expect(sample(m.text, "esp_ota_broker_clients")).toBe(0);
    // prom-client's process metrics, event-loop lag among them.
    expect(
      sample(m.text, "esp_ota_broker_nodejs_eventloop_lag_p99_seconds"),
    ).toBeGreaterThanOrEqual(0);
    await b.close();
    await expect(fetch(`${b.metricsUrl}/healthz`)).rejects.toThrow();
  });

  it("clients, subscriptions, retained messages, messages and bytes move as a client works", async () => {
    const b = await broker();
    const other = await broker();
    const sub = await client(b.url, "metrics-sub");
    const pub = await client(b.url, "metrics-pub");
    await sub.subscribeAsync(["esp-ota/v1/devices/+/status", "esp-ota/v1/gateways/#"], { qos: 1 });
    const got = new Promise<void>((r) => sub.once("message", () => r()));
    await pub.publishAsync("esp-ota/v1/devices/d1/status", "x".repeat(100), {
      qos: 1,
      retain: true,
    });
    await pub.publishAsync("esp-ota/v1/devices/d1/progress", "y", { qos: 0 });
    await got;

    // The subscriber's PUBACK may still be on its way: poll until nothing is in flight.
    let text = "";
    await expect
      .poll(async () => {
        text = (await get(`${b.metricsUrl}/metrics`)).text;
        return sample(text, "esp_ota_broker_qos1_inflight");
      })
      .toBe(0);
    expect(sample(text, "esp_ota_broker_clients")).toBe(2);
    expect(sample(text, "esp_ota_broker_client_connections_total")).toBe(2);
    expect(sample(text, "esp_ota_broker_subscriptions")).toBe(2);
    expect(sample(text, "esp_ota_broker_retained_messages")).toBe(1);
    expect(sample(text, "esp_ota_broker_messages_received_total", 'qos="1"')).toBe(1);
    expect(sample(text, "esp_ota_broker_messages_received_total", 'qos="0"')).toBe(1);
    // The status reached the subscriber at QoS 1; nobody subscribes to progress.
    expect(sample(text, "esp_ota_broker_messages_sent_total", 'qos="1"')).toBe(1);
    expect(sample(text, "esp_ota_broker_messages_sent_total", 'qos="0"')).toBe(0);
    expect(sample(text, "esp_ota_broker_received_bytes_total")).toBeGreaterThan(100);
    expect(sample(text, "esp_ota_broker_sent_bytes_total")).toBeGreaterThan(100);

    // A retained message cleared and a client gone are seen at the next scrape.
    await pub.publishAsync("esp-ota/v1/devices/d1/status", "", { qos: 1, retain: true });
    await sub.endAsync();
    await expect
      .poll(async () => {
        const t = (await get(`${b.metricsUrl}/metrics`)).text;
        return [
          sample(t, "esp_ota_broker_clients"),
          sample(t, "esp_ota_broker_retained_messages"),
          sample(t, "esp_ota_broker_subscriptions"),
        ];
      })
      .toEqual([1, 0, 0]);

    // One registry per broker: the other broker in this process saw none of it.
    const o = (await get(`${other.metricsUrl}/metrics`)).text;
    expect(sample(o, "esp_ota_broker_client_connections_total")).toBe(0);
    expect(sample(o, "esp_ota_broker_messages_received_total", 'qos="1"')).toBe(0);
  });

  it("no metrics listener unless asked for", async () => {
    const b = await startBroker({ port: 0 });
    brokers.push(b);
    expect(b.metricsUrl).toBeUndefined();
  });

  it("a metrics address already taken fails the start with E_METRICS_LISTEN", async () => {
    const b = await broker();
    const port = Number(new URL(b.metricsUrl).port);
    await expect(
      startBroker({ port: 0, metrics: { host: "127.0.0.1", port } }),
    ).rejects.toMatchObject({ code: "E_METRICS_LISTEN" });
  });
});
