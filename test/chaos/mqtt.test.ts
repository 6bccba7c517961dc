/**
 * An MQTT client (MQTT.js) through the chaos proxy to an in-process aedes broker: the path
 * between the gateway agent and its broker that the proxy exists to disturb.
 */
import { type AddressInfo, createServer, type Socket } from "node:net";
import { Aedes } from "aedes";
import mqtt, { type MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { startChaosProxy } from "../../src/chaos/proxy.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function broker(): Promise<number> {
  const b = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    b.handle(s);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((ok) => server.close(() => ok()));
    await new Promise<void>((ok) => b.close(() => ok()));
  });
  return (server.address() as AddressInfo).port;
}

/** Resolves once `payload` has arrived on `topic` (now or earlier). */
function received(c: MqttClient, topic: string) {
  const seen: string[] = [];
  const waiting = new Map<string, () => void>();
  c.on("message", (t: string, p: Buffer) => {
    if (t !== topic) return;
    seen.push(p.toString());
    waiting.get(p.toString())?.();
  });
  return {
    seen,
    message: (payload: string) =>
      new Promise<void>((ok) => {
        if (seen.includes(payload)) ok();
        else waiting.set(payload, ok);
      }),
  };
}

describe("MQTT through the chaos proxy", () => {
  it("publishes and receives, then reconnects after reset_peer and works again", async () => {
    const proxy = await startChaosProxy({
      listen: { host: "127.0.0.1", port: 0 },
      upstream: { host: "127.0.0.1", port: await broker() },
    });
    cleanups.push(() => proxy.close());
    const c = mqtt.connect(`mqtt://127.0.0.1:${proxy.address.port}`, {
      clientId: "gw-chaos",
      clean: false,
      reconnectPeriod: 50,
      connectTimeout: 2000,
    });
    cleanups.push(() => new Promise<void>((ok) => c.end(true, {}, () => ok())));
    const errors: string[] = [];
    c.on("error", (e) => errors.push((e as NodeJS.ErrnoException).code ?? e.message));
    await new Promise<void>((ok) => c.once("connect", () => ok()));
    await c.subscribeAsync("ota/notice", { qos: 1 });
    const inbox = received(c, "ota/notice");

    await c.publishAsync("ota/notice", "v1", { qos: 1 });
    await inbox.message("v1");

    // The next packet from the broker (v2 coming back, or its PUBACK) triggers the reset.
    proxy.addToxic("reset_peer:downstream");
    const closed = new Promise<void>((ok) => c.once("close", () => ok()));
    c.publish("ota/notice", "v2", { qos: 1 });
    await closed;
    expect(inbox.seen).not.toContain("v2");
    expect(errors).toContain("ECONNRESET");
    // Remove it before MQTT.js reconnects (50 ms later) so the new session gets through.
    proxy.removeToxic("reset_peer_downstream");
    await new Promise<void>((ok) => c.once("connect", () => ok()));
    expect(proxy.stats.connections).toBeGreaterThanOrEqual(2);

    // QoS 1 and a persistent session: v2, lost in the reset, arrives after the reconnect.
    await inbox.message("v2");
    await c.publishAsync("ota/notice", "v3", { qos: 1 });
    await inbox.message("v3");
  });
});
