/**
 * The agent's port lifecycle and MQTT side, in this process over a real broker with fake device
 * links (test/helpers/agent-in-process.ts): issue 12 defects 1 (attach failure), 3 (a lying
 * device), 5 (an impostor), 12 and 16 (commands), and issue 13 item 6 (a stop that never ends).
 * Each test fails before its fix; they take well under a second each.
 */
import { mkdirSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { connectMqtt, requestCommand } from "../../src/mqtt/client.js";
import { type Inventory, type Presence, parseMessage } from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import {
  fakeInfo,
  fakePorts,
  type InProcessAgent,
  inProcessAgent,
  until,
} from "../helpers/agent-in-process.js";
import { BROKER_KINDS, startAedesForTest, type TestBroker } from "../helpers/brokers.js";

const t = topics();
const GW = "ip-gw";
const MAC_A = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01];
const MAC_B = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02];
const ID_A = "aabbccddee01";
const ID_B = "aabbccddee02";

let broker: TestBroker;
let agents: InProcessAgent[] = [];
let clients: MqttClient[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown) => unhandled.push(e);

beforeEach(async () => {
  broker = await startAedesForTest();
  process.on("unhandledRejection", onUnhandled);
});
afterEach(async () => {
  for (const a of agents) await a.close();
  agents = [];
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
  clients = [];
  await broker.close();
  process.off("unhandledRejection", onUnhandled);
  expect(unhandled).toEqual([]);
  unhandled.length = 0;
});

/** The retained inventory as the observer last saw it. */
async function observer(url: string): Promise<{ inventory(): Inventory | undefined }> {
  const c = await mqtt.connectAsync(url, { protocolVersion: 4 });
  clients.push(c);
  let last: Inventory | undefined;
  c.on("message", (topic, payload) => {
    if (topic !== t.inventory(GW)) return;
    const p = parseMessage("inventory", payload);
    if (p.ok) last = p.value;
  });
  await c.subscribeAsync(t.inventory(GW), { qos: 1 });
  return { inventory: () => last };
}

function start(ports: ReturnType<typeof fakePorts>, o: Parameters<typeof inProcessAgent>[2] = {}) {
  const a = inProcessAgent(broker.url, ports.ports, o);
  agents.push(a);
  return a;
}

const ids = (a: InProcessAgent) =>
  a.agent
    .attached()
    .map((d) => `${d.deviceId}@${d.path}`)
    .sort();

describe("defect 3: a lying device is refused, the others are served", () => {
  it("a chip name over 32 characters: that device alone is refused with a coded log line", async () => {
    const ports = fakePorts();
    ports.add("/dev/liar", fakeInfo({ mac: MAC_A, chip: "x".repeat(60) }));
    const obs = await observer(broker.url);
    const a = start(ports);
    await a.agent.start();
    await a.waitLog((l) => l.code === "E_AGENT_DEVICE_INFO" && l.port === "/dev/liar");
    // A device attached afterwards is served and listed (before: every later inventory failed).
    ports.add("/dev/good", fakeInfo({ mac: MAC_B }));
    await until(() => ids(a).length === 1, "the good device");
    expect(ids(a)).toEqual([`${ID_B}@/dev/good`]);
    await until(() => obs.inventory()?.devices.length === 1, "an inventory with it");
    expect(obs.inventory()!.devices.map((d) => d.deviceId)).toEqual([ID_B]);
  });

  it("a slot label over 16 characters is refused the same way", async () => {
    const ports = fakePorts();
    ports.add("/dev/liar", fakeInfo({ mac: MAC_A, label: "l".repeat(40) }));
    const a = start(ports);
    await a.agent.start();
    await a.waitLog((l) => l.code === "E_AGENT_DEVICE_INFO");
    expect(a.agent.attached()).toEqual([]);
  });
});

describe("defect 3: an attached device that starts lying", () => {
  it("a fresh INFO over the schema (the info command) is refused; the last one stays listed", async () => {
    const ports = fakePorts();
    ports.add(
      "/dev/a",
      fakeInfo({ mac: MAC_A }),
      fakeInfo({ mac: MAC_A }),
      fakeInfo({ mac: MAC_A, chip: "y".repeat(33) }),
    );
    const obs = await observer(broker.url);
    const a = start(ports);
    await a.agent.start();
    await until(() => obs.inventory()?.devices.length === 1, "the device listed");
    const ops = await connectMqtt({ url: broker.url, clientId: "ops-lie", protocolVersion: 4 });
    clients.push(ops);
    const ask = () =>
      requestCommand(ops, t.commands(GW), t.replies("ops-lie"), {
        format: 1,
        command: "info",
        deviceId: ID_A,
      });
    expect((await ask()).ok).toBe(true);
    const res = await ask();
    expect(res).toMatchObject({ ok: false, error: { code: "E_AGENT_DEVICE_INFO" } });
    // Before: the long chip name went into the inventory, which then never encoded again.
    ports.add("/dev/b", fakeInfo({ mac: MAC_B }));
    await until(() => obs.inventory()?.devices.length === 2, "both listed");
    expect(obs.inventory()!.devices.map((d) => d.chip)).toEqual(["esp32", "esp32"]);
  });
});

describe("defect 1: every failure to attach leaves the device detached and retried", () => {
  it("a ledger that cannot be read: not listed, retried with backoff, attached once it can", async () => {
    const ports = fakePorts();
    const a = start(ports);
    // A directory where the device's ledger file goes: reading it fails (E_AGENT_STATE).
    const ledgerPath = join(a.stateDir, "devices", `${ID_A}.json`);
    mkdirSync(ledgerPath, { recursive: true });
    ports.add("/dev/a", fakeInfo({ mac: MAC_A }));
    await a.agent.start();
    await a.waitLog((l) => l.code === "E_AGENT_STATE" && l.port === "/dev/a");
    // Before: listed with a closed link, and never tried again.
    expect(a.agent.attached()).toEqual([]);
    rmdirSync(ledgerPath);
    await until(() => ids(a).length === 1, "the retried attach");
    expect(ids(a)).toEqual([`${ID_A}@/dev/a`]);
    expect(ports.get("/dev/a")!.opened).toBeGreaterThanOrEqual(2);
  });
});

describe("defect 5: two ports claiming one MAC are a conflict", () => {
  it("the genuine port keeps the device; the impostor is reported, and re-identified when the genuine one leaves", async () => {
    const ports = fakePorts();
    ports.add("/dev/genuine", fakeInfo({ mac: MAC_A }));
    const obs = await observer(broker.url);
    const a = start(ports);
    await a.agent.start();
    await until(() => ids(a).length === 1, "the genuine device");
    ports.add("/dev/impostor", fakeInfo({ mac: MAC_A }));
    await a.waitLog((l) => l.code === "E_AGENT_DEVICE_CONFLICT" && l.port === "/dev/impostor");
    // Before: the genuine port was detached ("moved") and the impostor served the device.
    expect(ids(a)).toEqual([`${ID_A}@/dev/genuine`]);
    await until(() => (obs.inventory()?.conflicts ?? []).length === 1, "the conflict listed");
    expect(obs.inventory()!.conflicts).toEqual([
      {
        deviceId: ID_A,
        port: "/dev/impostor",
        heldBy: "/dev/genuine",
        code: "E_AGENT_DEVICE_CONFLICT",
      },
    ]);
    // The impostor goes: the genuine one is still served, the conflict cleared.
    ports.remove("/dev/impostor");
    await until(() => obs.inventory()?.conflicts === undefined, "the conflict cleared");
    expect(ids(a)).toEqual([`${ID_A}@/dev/genuine`]);
    // Both again; then the genuine one goes: the other port is identified again and attached
    // (a device moved to another port before its old port was seen to go heals this way).
    ports.add("/dev/other", fakeInfo({ mac: MAC_A }));
    await until(() => obs.inventory()?.conflicts?.length === 1, "the second conflict");
    ports.remove("/dev/genuine");
    await until(() => ids(a)[0] === `${ID_A}@/dev/other`, "the other port attached");
  });
});

describe("issue 13 item 6: stop() ends when the broker is gone", () => {
  it("the offline presence and DISCONNECT are given up after a bound", async () => {
    const ports = fakePorts();
    const a = start(ports);
    await a.agent.start();
    await broker.close();
    const t0 = Date.now();
    await a.agent.stop();
    // Before: the QoS 1 offline presence waited for a reconnect forever.
    expect(Date.now() - t0).toBeLessThan(8000);
  }, 15_000);
});

describe.each(BROKER_KINDS)("commands on $name", (kind) => {
  let b: TestBroker | undefined;
  afterEach(async () => {
    // The agents first: one whose broker is gone takes its stop bound to end.
    for (const a of agents) await a.close();
    agents = [];
    if (b !== broker) await b?.close();
    b = undefined;
  });
  const run = it.skipIf(!kind.available);

  run.each(["a clean stop", "a crash"])(
    "defect 16: a QoS 1 command sent while the gateway is away (%s) is answered when it returns",
    async (how) => {
      b = kind.name === "aedes" ? broker : await kind.start();
      const ports = fakePorts();
      const first = inProcessAgent(b.url, ports.ports, {});
      await first.agent.start();
      if (how === "a crash") {
        // The connection drops without DISCONNECT and nothing runs after it (no stop()).
        const c = (first.agent as unknown as { client: MqttClient }).client;
        c.options.reconnectPeriod = 0;
        c.stream.destroy();
        c.end(true);
        await first.close().catch(() => undefined);
      } else await first.close();
      const ops = await connectMqtt({ url: b.url, clientId: "ops-away", protocolVersion: 4 });
      clients.push(ops);
      // Sent while no gateway is connected: only the gateway's session can keep it.
      const answer = requestCommand(
        ops,
        t.commands(GW),
        t.replies("ops-away"),
        { format: 1, command: "info" },
        10_000,
      );
      await new Promise((r) => setTimeout(r, 100));
      const second = inProcessAgent(b.url, ports.ports, {});
      agents.push(second);
      await second.agent.start();
      const res = await answer;
      expect(res).toMatchObject({ ok: true, command: "info", gatewayId: GW });
    },
    20_000,
  );

  run(
    "defect 12 and issue 13 item 15: a reply address outside the reply space is refused and logged",
    async () => {
      b = kind.name === "aedes" ? broker : await kind.start();
      const ports = fakePorts();
      const a = inProcessAgent(b.url, ports.ports, {});
      agents.push(a);
      await a.agent.start();
      const spy = await mqtt.connectAsync(b.url, { protocolVersion: 4 });
      clients.push(spy);
      const got: string[] = [];
      spy.on("message", (topic) => got.push(topic));
      await spy.subscribeAsync(["other/app/#", t.replies("spy")], { qos: 1 });
      const send = (o: object | string) =>
        spy.publishAsync(
          t.commands(GW),
          typeof o === "string" ? o : Buffer.from(JSON.stringify(o)),
          { qos: 1 },
        );
      // Outside the prefix: before, the gateway published its answer there.
      await send({ format: 1, command: "info", replyTo: "other/app/inbox", correlationId: "c1" });
      await a.waitLog((l) => l.code === "E_MQTT_REPLY_REFUSED" && l.replyTo === "other/app/inbox");
      // Malformed, with no usable reply address: logged (before: silently dropped).
      await send("not json {");
      await a.waitLog((l) => l.code === "E_MQTT_MESSAGE_JSON");
      // A good one is answered at its reply topic; nothing ever reached other/app/.
      const res = await requestCommand(spy, t.commands(GW), t.replies("spy"), {
        format: 1,
        command: "info",
      });
      expect(res.ok).toBe(true);
      expect(got.filter((x) => x.startsWith("other/"))).toEqual([]);
      const line = a.logs.find((l) => l.code === "E_MQTT_MESSAGE_JSON")!;
      expect(String(line.msg).length).toBeLessThan(400);
    },
  );
});

describe("defect 16: presence order", () => {
  it("the last will orders after the online of its connection (presence seq)", async () => {
    const ports = fakePorts();
    const seen: Presence[] = [];
    const obs = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    clients.push(obs);
    obs.on("message", (_t, payload) => {
      const p = parseMessage("presence", payload);
      if (p.ok) seen.push(p.value);
    });
    await obs.subscribeAsync(t.presence(GW), { qos: 1 });
    const a = start(ports);
    await a.agent.start();
    await until(() => seen.some((p) => p.state === "online"), "online");
    // A crash: the connection drops without DISCONNECT and the broker publishes the will.
    const client = (a.agent as unknown as { client: MqttClient }).client;
    client.stream.destroy();
    await until(() => seen.some((p) => p.state === "offline"), "the will");
    const online = seen.find((p) => p.state === "online")!;
    const will = seen.find((p) => p.state === "offline")!;
    expect(will.seq).toBeGreaterThan(online.seq!);
    // The reconnect's online is above the will it follows, and its will above that.
    await until(() => seen.filter((p) => p.state === "online").length >= 2, "the reconnect");
    const again = seen.filter((p) => p.state === "online")[1]!;
    expect(again.seq).toBeGreaterThan(will.seq!);
  });
});
