/**
 * Refused notices are answered (issue 12 defect 16), through the whole agent in process: the
 * embedded broker, one simulated ESP32 on an in-memory UART link, the agent. Before the fix a
 * notice below the device's high-water mark, or naming another device than its topic, was ignored
 * at debug level with no status, and the rollout that published it waited for its wave timeout.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../agent/agent.js";
import { parseAgentConfig } from "../../agent/config.js";
import { createLogger } from "../../agent/log.js";
import { memoryPorts } from "../../agent/memory-ports.js";
import { startBroker } from "../../broker/broker.js";
import { newLedger } from "../../src/gateway/ledger.js";
import { connectMqtt } from "../../src/mqtt/client.js";
import {
  type DeviceStatus,
  encodeMessage,
  noticeDigest,
  parseMessage,
  type UpdateNotice,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import type { Fleet } from "../../src/sim/fleet.js";
import { type MemoryFleet, serveFleetInMemory } from "../../src/sim/fleet-memory.js";
import { makeTestFleet, removeTestFleet } from "../helpers/fleet.js";

let fleet: Fleet;
let served: MemoryFleet;
let broker: Awaited<ReturnType<typeof startBroker>>;
let agent: Agent;
let client: MqttClient;
let id: string;
const statuses: DeviceStatus[] = [];
const t = topics();

beforeAll(async () => {
  fleet = makeTestFleet(1);
  id = fleet.devices[0]!.deviceId;
  const dir = join(fleet.dir, "..");
  // The device already installed counter 10: a notice hinting at 3 is a replay.
  const state = join(dir, "agent-state");
  mkdirSync(join(state, "devices"), { recursive: true });
  writeFileSync(
    join(state, "devices", `${id}.json`),
    JSON.stringify({ ...newLedger(id), highWater: { counter: 10, releaseId: "r10" } }),
  );
  broker = await startBroker({ port: 0, dataDir: join(dir, "broker") });
  served = serveFleetInMemory(fleet.devices, { save: false });
  const parsed = parseAgentConfig(
    `gatewayId: refuse-gw
mqtt:
  url: ${broker.url}
trust:
  policy: ${fleet.trustFile}
serial:
  ports:
    - glob: /nonexistent/tty-*
stateDir: ${state}
`,
    join(dir, "gateway.yaml"),
  );
  if (!parsed.config) throw new Error(parsed.problems.map((p) => p.message).join("; "));
  agent = new Agent({
    config: parsed.config,
    log: createLogger("silent", { pretty: false }),
    ports: memoryPorts(served),
  });
  client = await connectMqtt({ url: broker.url, clientId: "refuse-observer" });
  client.on("message", (_topic, payload) => {
    const p = parseMessage("status", payload);
    if (p.ok) statuses.push(p.value);
  });
  await client.subscribeAsync(t.status(id), { qos: 1 });
  await agent.start();
  const by = Date.now() + 20_000;
  while (agent.attached().length < 1 && Date.now() < by)
    await new Promise((r) => setTimeout(r, 20));
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  await client?.endAsync();
  served?.close();
  await broker?.close();
  if (fleet) removeTestFleet(fleet);
}, 30_000);

const notice = (
  releaseId: string,
  counter: number,
  extra: Partial<UpdateNotice> = {},
): UpdateNotice => ({
  format: 1,
  deviceId: id,
  releaseId,
  counter,
  manifestUrls: ["http://127.0.0.1:9/never-fetched.json"],
  rolloutId: "wave-1",
  issuedAt: new Date().toISOString(),
  ...extra,
});

async function finalFor(n: UpdateNotice): Promise<DeviceStatus> {
  const by = Date.now() + 10_000;
  for (;;) {
    const s = statuses.find((x) => x.noticeDigest === noticeDigest(n) && x.state === "failed");
    if (s) return s;
    if (Date.now() > by) throw new Error(`no final status for ${n.releaseId}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("refused notices get a final status with their code (issue 12 defect 16)", () => {
  it("a notice below the device's high-water mark: failed, E_MANIFEST_COUNTER, nothing fetched", async () => {
    const n = notice("r3", 3);
    await client.publishAsync(t.desired(id), Buffer.from(encodeMessage("notice", n)), {
      qos: 1,
      retain: true,
    });
    const s = await finalFor(n);
    expect(s).toMatchObject({
      releaseId: "r3",
      rolloutId: "wave-1",
      step: "parseNotice",
      error: { code: "E_MANIFEST_COUNTER", step: "parseNotice" },
    });
    expect(s.sig).toBeDefined();
  }, 20_000);

  it("a notice naming another device than its topic: failed, E_AGENT_NOTICE_INVALID", async () => {
    const n = notice("r11", 11, { deviceId: "240ac4ffffff" });
    await client.publishAsync(t.desired(id), Buffer.from(encodeMessage("notice", n)), {
      qos: 1,
      retain: true,
    });
    const s = await finalFor(n);
    expect(s).toMatchObject({
      deviceId: id,
      releaseId: "r11",
      error: { code: "E_AGENT_NOTICE_INVALID", step: "parseNotice" },
    });
  }, 20_000);
});
