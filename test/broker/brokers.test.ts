/**
 * What the gateway relies on from any broker (docs/broker.md, docs/mqtt-api.md): retained
 * messages and persistent sessions survive a restart, and a last will is delivered when a
 * client's connection drops. Run against the embedded aedes broker and a real Mosquitto.
 */
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BROKER_KINDS, type TestBroker } from "../helpers/brokers.js";

// MQTT 3.1.1: the version both brokers speak (aedes 1.2 has no MQTT 5).
const BASE: IClientOptions = { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 };

interface Collecting {
  client: MqttClient;
  sessionPresent: boolean;
  messages: { topic: string; payload: string; retain: boolean; qos: number }[];
  /** Resolves once `n` messages arrived; rejects after 5 s (a failure, not a timing check). */
  waitFor(n: number): Promise<void>;
}

/** Connects with the message handler attached before CONNACK, so queued messages are not missed. */
async function connectCollecting(url: string, o: IClientOptions = {}): Promise<Collecting> {
  const client = mqtt.connect(url, { ...BASE, ...o });
  const c: Collecting = {
    client,
    sessionPresent: false,
    messages: [],
    waitFor: (n) =>
      new Promise((resolve, reject) => {
        if (c.messages.length >= n) return resolve();
        const timer = setTimeout(
          () => reject(new Error(`got ${c.messages.length} of ${n} messages`)),
          5000,
        );
        const check = () => {
          if (c.messages.length < n) return;
          clearTimeout(timer);
          client.off("message", check);
          resolve();
        };
        client.on("message", check);
      }),
  };
  client.on("message", (topic, payload, packet) =>
    c.messages.push({ topic, payload: payload.toString(), retain: packet.retain, qos: packet.qos }),
  );
  await new Promise<void>((resolve, reject) => {
    client.once("connect", (connack) => {
      c.sessionPresent = connack.sessionPresent;
      resolve();
    });
    client.once("error", reject);
  });
  return c;
}

describe.each(BROKER_KINDS)("$name broker", (kind) => {
  let broker: TestBroker;
  beforeAll(async () => {
    if (kind.available) broker = await kind.start();
  });
  afterAll(async () => {
    await broker?.close();
  });
  const run = it.skipIf(!kind.available);

  run("keeps a retained message across a restart", async () => {
    const pub = await mqtt.connectAsync(broker.url, BASE);
    await pub.publishAsync("esp-ota/v1/devices/d1/desired", "notice-1", { qos: 1, retain: true });
    await pub.endAsync();

    await broker.restart();

    const sub = await connectCollecting(broker.url);
    await sub.client.subscribeAsync("esp-ota/v1/devices/+/desired", { qos: 1 });
    await sub.waitFor(1);
    expect(sub.messages).toEqual([
      { topic: "esp-ota/v1/devices/d1/desired", payload: "notice-1", retain: true, qos: 1 },
    ]);
    await sub.client.endAsync();
  });

  run("queues QoS 1 messages for a persistent session while it is offline", async () => {
    const session = { clientId: `gw-offline-${kind.name}`, clean: false };
    const first = await connectCollecting(broker.url, session);
    await first.client.subscribeAsync("esp-ota/v1/gateways/gw1/commands", { qos: 1 });
    await first.client.endAsync();

    const pub = await mqtt.connectAsync(broker.url, BASE);
    await pub.publishAsync("esp-ota/v1/gateways/gw1/commands", "while-away", { qos: 1 });
    await pub.endAsync();

    const back = await connectCollecting(broker.url, session);
    expect(back.sessionPresent).toBe(true);
    await back.waitFor(1);
    expect(back.messages.map((m) => [m.payload, m.qos])).toEqual([["while-away", 1]]);
    await back.client.endAsync();
  });

  run("keeps a persistent session, its subscription and its queue across a restart", async () => {
    const session = { clientId: `gw-restart-${kind.name}`, clean: false };
    const first = await connectCollecting(broker.url, session);
    await first.client.subscribeAsync("esp-ota/v1/devices/d2/desired", { qos: 1 });
    await first.client.endAsync();

    const before = await mqtt.connectAsync(broker.url, BASE);
    await before.publishAsync("esp-ota/v1/devices/d2/desired", "before-restart", { qos: 1 });
    await before.endAsync();

    await broker.restart();

    // Published after the restart: proves the subscription itself was restored, not just the queue.
    const after = await mqtt.connectAsync(broker.url, BASE);
    await after.publishAsync("esp-ota/v1/devices/d2/desired", "after-restart", { qos: 1 });
    await after.endAsync();

    const back = await connectCollecting(broker.url, session);
    expect(back.sessionPresent).toBe(true);
    await back.waitFor(2);
    // aedes' LevelDB store keys its queue by broker id, which changes on restart, so the two may
    // arrive in either order there; Mosquitto keeps publish order.
    expect(back.messages.map((m) => m.payload).sort()).toEqual(["after-restart", "before-restart"]);
    expect(back.messages.every((m) => m.qos === 1)).toBe(true);
    await back.client.endAsync();
  });

  run("delivers the last will when a client's connection drops", async () => {
    const watcher = await connectCollecting(broker.url);
    await watcher.client.subscribeAsync("esp-ota/v1/gateways/gw-will/presence", { qos: 1 });

    const gw = await mqtt.connectAsync(broker.url, {
      ...BASE,
      clientId: `gw-will-${kind.name}`,
      will: {
        topic: "esp-ota/v1/gateways/gw-will/presence",
        payload: Buffer.from("offline"),
        qos: 1,
        retain: true,
      },
    });
    // A pulled cable, as the broker sees it: the socket closes without DISCONNECT.
    gw.stream.destroy();

    await watcher.waitFor(1);
    expect(watcher.messages[0]).toMatchObject({
      topic: "esp-ota/v1/gateways/gw-will/presence",
      payload: "offline",
    });
    gw.end(true);
    await watcher.client.endAsync();

    // A retained will is also what a late subscriber sees.
    const late = await connectCollecting(broker.url);
    await late.client.subscribeAsync("esp-ota/v1/gateways/+/presence", { qos: 1 });
    await late.waitFor(1);
    expect(late.messages[0]).toMatchObject({ payload: "offline", retain: true });
    await late.client.endAsync();
  });

  run("publishes the retained will of a client still connected when it shuts down", async () => {
    // Both brokers treat their own shutdown as the connection dropping: a gateway's presence reads
    // "offline" until it reconnects, instead of a stale "online".
    const gw = await mqtt.connectAsync(broker.url, {
      ...BASE,
      clientId: `gw-shutdown-${kind.name}`,
      will: {
        topic: "esp-ota/v1/gateways/gw-shutdown/presence",
        payload: Buffer.from("offline"),
        qos: 1,
        retain: true,
      },
    });
    await broker.restart();
    gw.end(true);

    const late = await connectCollecting(broker.url);
    await late.client.subscribeAsync("esp-ota/v1/gateways/gw-shutdown/presence", { qos: 1 });
    await late.waitFor(1);
    expect(late.messages[0]).toMatchObject({ payload: "offline", retain: true });
    await late.client.endAsync();
  });
});
