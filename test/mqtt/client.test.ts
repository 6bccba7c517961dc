/**
 * The MQTT client adapter (src/mqtt/client.ts) over real brokers (STYLE.md §14): aedes in this
 * process for MQTT 3.1.1, Mosquitto for MQTT 5 (aedes 1.2 refuses 5).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EspOtaError } from "../../src/errors.js";
import {
  type CommandRefusal,
  commandResponder,
  connectMqtt,
  type MqttClient,
  readRetained,
  requestCommand,
  serveCommands,
} from "../../src/mqtt/client.js";
import {
  type CommandRequest,
  type CommandResponse,
  encodeMessage,
  parseMessage,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import { mosquittoPath, startMosquitto, type TestBroker } from "../helpers/mosquitto.js";
import { closedPort, type LocalBroker, startLocalBroker } from "./local-broker.js";

const t = topics();
const clients: MqttClient[] = [];

async function client(
  url: string,
  protocolVersion?: 4 | 5,
  clientId?: string,
): Promise<MqttClient> {
  const c = await connectMqtt({
    url,
    connectTimeoutMs: 5000,
    ...(protocolVersion ? { protocolVersion } : {}),
    ...(clientId ? { clientId } : {}),
  });
  clients.push(c);
  return c;
}

async function rejection(p: Promise<unknown>): Promise<EspOtaError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof EspOtaError) return e;
    throw e;
  }
  throw new Error("expected a rejection");
}

/** The gateway side of the tests: answers every command, recording what it was asked. */
function echoGateway(
  c: MqttClient,
  gatewayId: string,
  seen: CommandRequest[],
): () => Promise<void> {
  return serveCommands(c, t.commands(gatewayId), async (req): Promise<CommandResponse> => {
    seen.push(req);
    if (req.command === "reboot") {
      throw new EspOtaError("E_AGENT_BUSY", "the device is updating", { deviceId: req.deviceId });
    }
    if (req.command === "retry") throw new Error("a bug in the handler");
    return {
      format: 1,
      gatewayId,
      command: req.command,
      ok: true,
      result: { deviceId: req.deviceId ?? null, n: seen.length },
    };
  });
}

let aedes: LocalBroker;
beforeAll(async () => {
  aedes = await startLocalBroker();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
  await aedes.close();
});

describe("connectMqtt", () => {
  it("connects with MQTT 3.1.1", async () => {
    const c = await client(aedes.url, 4);
    expect(c.connected).toBe(true);
    expect(c.options.protocolVersion).toBe(4);
  });

  it("without a version asks for MQTT 5 and falls back to 3.1.1 when the broker refuses it", async () => {
    const c = await client(aedes.url);
    expect(c.connected).toBe(true);
    expect(c.options.protocolVersion).toBe(4);
  });

  it("E_MQTT_CONNECT when MQTT 5 is required and refused", async () => {
    const e = await rejection(connectMqtt({ url: aedes.url, protocolVersion: 5 }));
    expect(e.code).toBe("E_MQTT_CONNECT");
    expect(e.message).toMatch(/refused MQTT 5.*protocol version 4/);
  });

  it("E_MQTT_CONNECT on a closed port, with the socket error, after connectTimeoutMs", async () => {
    const port = await closedPort();
    const e = await rejection(
      connectMqtt({
        url: `mqtt://127.0.0.1:${port}`,
        connectTimeoutMs: 300,
        reconnectPeriodMs: 50,
      }),
    );
    expect(e.code).toBe("E_MQTT_CONNECT");
    expect(e.message).toMatch(/within \d+ ms: .*ECONNREFUSED/);
  });

  it("E_MQTT_CONNECT for a URL it cannot use, without printing the password", async () => {
    for (const url of ["not a url", "http://127.0.0.1:1883", "tcp://h"]) {
      const e = await rejection(connectMqtt({ url }));
      expect(e.code, url).toBe("E_MQTT_CONNECT");
    }
    const e = await rejection(connectMqtt({ url: "ftp://user:s3cret@127.0.0.1" }));
    expect(e.message).not.toContain("s3cret");
  });

  it("E_MQTT_CONNECT at once when the broker refuses the credentials", async () => {
    const locked = await startLocalBroker({
      authenticate: (_client, username, password, done) => {
        if (username === "gw" && password?.toString() === "right") return done(null, true);
        const err = Object.assign(new Error("bad credentials"), { returnCode: 4 as const });
        done(err, null);
      },
    });
    try {
      const e = await rejection(
        connectMqtt({
          url: locked.url,
          protocolVersion: 4,
          username: "gw",
          password: "wrong",
          connectTimeoutMs: 60_000,
        }),
      );
      expect(e.code).toBe("E_MQTT_CONNECT");
      expect(e.message).toMatch(/bad user name or password/);
      expect(e.message).not.toContain("wrong");
      const ok = await connectMqtt({
        url: locked.url,
        protocolVersion: 4,
        username: "gw",
        password: "right",
      });
      await ok.endAsync();
    } finally {
      await locked.close();
    }
  });
});

describe("requestCommand / serveCommands over MQTT 3.1.1 (payload replyTo + correlationId)", () => {
  it("round trip; the request carries its reply address in the payload", async () => {
    const gw = await client(aedes.url, 4);
    const tool = await client(aedes.url, 4);
    const seen: CommandRequest[] = [];
    const stop = echoGateway(gw, "gw-a", seen);
    const res = await requestCommand(tool, t.commands("gw-a"), t.replies("tool-1"), {
      format: 1,
      command: "info",
      deviceId: "dev1",
    });
    expect(res).toMatchObject({
      ok: true,
      gatewayId: "gw-a",
      command: "info",
      result: { deviceId: "dev1" },
    });
    expect(seen[0]).toMatchObject({ replyTo: t.replies("tool-1"), deviceId: "dev1" });
    expect(res.correlationId).toBe(seen[0]!.correlationId);
    await stop();
  });

  it("concurrent requests on one reply topic each get their own answer", async () => {
    const gw = await client(aedes.url, 4);
    const tool = await client(aedes.url, 4);
    const stop = echoGateway(gw, "gw-b", []);
    const ids = ["d1", "d2", "d3", "d4"];
    const out = await Promise.all(
      ids.map((deviceId) =>
        requestCommand(tool, t.commands("gw-b"), t.replies("tool-2"), {
          format: 1,
          command: "info",
          deviceId,
        }),
      ),
    );
    expect(out.map((r) => r.result?.deviceId)).toEqual(ids);
    await stop();
  });

  it("handler errors become ok:false responses with their code", async () => {
    const gw = await client(aedes.url, 4);
    const tool = await client(aedes.url, 4);
    const stop = echoGateway(gw, "gw-c", []);
    const busy = await requestCommand(tool, t.commands("gw-c"), t.replies("tool-3"), {
      format: 1,
      command: "reboot",
      deviceId: "d1",
    });
    expect(busy).toMatchObject({ ok: false, error: { code: "E_AGENT_BUSY" } });
    const bug = await requestCommand(tool, t.commands("gw-c"), t.replies("tool-3"), {
      format: 1,
      command: "retry",
      deviceId: "d1",
    });
    expect(bug).toMatchObject({
      ok: false,
      error: { code: "E_MQTT_COMMAND", message: "a bug in the handler" },
    });
    await stop();
  });

  it("a bad request gets E_MQTT_MESSAGE_SCHEMA at its replyTo; a reply into our own tree is refused", async () => {
    const gw = await client(aedes.url, 4);
    const spy = await client(aedes.url, 4);
    const stop = echoGateway(gw, "gw-d", []);
    const got: { topic: string; payload: Buffer }[] = [];
    spy.on("message", (topic, payload) => got.push({ topic, payload }));
    await spy.subscribeAsync([t.replies("spy"), t.status("victim")], { qos: 1 });
    // Not a command; then one asking for its answer on a device's status topic; then a good one.
    await spy.publishAsync(
      t.commands("gw-d"),
      JSON.stringify({
        format: 1,
        command: "format-flash",
        replyTo: t.replies("spy"),
        correlationId: "c1",
      }),
      { qos: 1 },
    );
    await spy.publishAsync(
      t.commands("gw-d"),
      Buffer.from(
        encodeMessage("command", { format: 1, command: "info", replyTo: t.status("victim") }),
      ),
      { qos: 1 },
    );
    const good = await requestCommand(spy, t.commands("gw-d"), t.replies("spy"), {
      format: 1,
      command: "info",
    });
    expect(good.ok).toBe(true);
    expect(got.map((g) => g.topic)).toEqual([t.replies("spy"), t.replies("spy")]);
    const bad = parseMessage("response", got[0]!.payload);
    expect(bad.ok && bad.value).toMatchObject({
      ok: false,
      correlationId: "c1",
      gatewayId: "gw-d",
      error: { code: "E_MQTT_MESSAGE_SCHEMA" },
    });
    await stop();
  });

  it("defect 12: a reply address outside the prefix's reply space is refused and reported (bounded)", async () => {
    const gw = await client(aedes.url, 4);
    const spy = await client(aedes.url, 4);
    const refused: CommandRefusal[] = [];
    const stop = serveCommands(
      gw,
      t.commands("gw-r"),
      async (req) => ({ format: 1, gatewayId: "gw-r", command: req.command, ok: true }),
      { onRefused: (r) => refused.push(r) },
    );
    const got: string[] = [];
    spy.on("message", (topic) => got.push(topic));
    await spy.subscribeAsync(["elsewhere/#", t.replies("spy-r")], { qos: 1 });
    const long = `elsewhere/${"x".repeat(900)}`;
    for (const replyTo of ["elsewhere/inbox", long, t.inventory("gw-r")])
      await spy.publishAsync(
        t.commands("gw-r"),
        Buffer.from(encodeMessage("command", { format: 1, command: "info", replyTo })),
        { qos: 1 },
      );
    // A good request after them: when it is answered, the three before were handled.
    const good = await requestCommand(spy, t.commands("gw-r"), t.replies("spy-r"), {
      format: 1,
      command: "info",
    });
    expect(good.ok).toBe(true);
    expect(got).toEqual([t.replies("spy-r")]);
    expect(refused.map((r) => r.code)).toEqual([
      "E_MQTT_REPLY_REFUSED",
      "E_MQTT_REPLY_REFUSED",
      "E_MQTT_REPLY_REFUSED",
    ]);
    expect(Math.max(...refused.map((r) => r.replyTo!.length))).toBeLessThanOrEqual(201);
    await stop();
  });

  it("defect 16: keepSubscription leaves the session subscribed, so QoS 1 commands queue", async () => {
    const id = `gw-keep-${process.pid}`;
    const gw = await connectMqtt({
      url: aedes.url,
      protocolVersion: 4,
      clientId: id,
      clean: false,
    });
    const handler = async (req: CommandRequest): Promise<CommandResponse> => ({
      format: 1,
      gatewayId: "gw-k",
      command: req.command,
      ok: true,
    });
    const stop = serveCommands(gw, t.commands("gw-k"), handler, { keepSubscription: true });
    await requestCommand(await client(aedes.url, 4), t.commands("gw-k"), t.replies("k0"), {
      format: 1,
      command: "info",
    });
    await stop();
    await gw.endAsync();
    const tool = await client(aedes.url, 4);
    const answer = requestCommand(tool, t.commands("gw-k"), t.replies("k1"), {
      format: 1,
      command: "info",
    });
    await new Promise((r) => setTimeout(r, 50));
    // Back, with the responder installed before the CONNACK (connectMqtt onMessage).
    const respond = commandResponder(t.commands("gw-k"), handler);
    const back = await connectMqtt({
      url: aedes.url,
      protocolVersion: 4,
      clientId: id,
      clean: false,
      onMessage: respond,
    });
    clients.push(back);
    expect((await answer).ok).toBe(true);
  });

  it("E_MQTT_TIMEOUT when no gateway answers", async () => {
    const tool = await client(aedes.url, 4);
    const e = await rejection(
      requestCommand(
        tool,
        t.commands("nobody"),
        t.replies("tool-4"),
        { format: 1, command: "info" },
        200,
      ),
    );
    expect(e.code).toBe("E_MQTT_TIMEOUT");
  });
});

describe("requestCommand / serveCommands over MQTT 5 (response topic + correlation data)", () => {
  let mosquitto: TestBroker | undefined;
  beforeAll(async () => {
    if (mosquittoPath() !== undefined) mosquitto = await startMosquitto();
  });
  afterAll(async () => {
    await mosquitto?.close();
  });
  const it5 = it.skipIf(mosquittoPath() === undefined && !/^(true|1)$/i.test(process.env.CI ?? ""));

  it5("round trip through the MQTT 5 properties", async () => {
    const gw = await client(mosquitto!.url, 5);
    const tool = await client(mosquitto!.url, 5);
    const spy = await client(mosquitto!.url, 5);
    expect(gw.options.protocolVersion).toBe(5);
    const packets: { topic: string; properties: Record<string, unknown> | undefined }[] = [];
    spy.on("message", (topic, _p, packet) =>
      packets.push({ topic, properties: packet.properties }),
    );
    await spy.subscribeAsync([t.commands("gw-5"), t.replies("tool-5")], { qos: 1 });
    const stop = echoGateway(gw, "gw-5", []);
    const res = await requestCommand(tool, t.commands("gw-5"), t.replies("tool-5"), {
      format: 1,
      command: "info",
      deviceId: "d5",
    });
    expect(res).toMatchObject({ ok: true, gatewayId: "gw-5", result: { deviceId: "d5" } });
    const req = packets.find((p) => p.topic === t.commands("gw-5"));
    expect(req?.properties?.responseTopic).toBe(t.replies("tool-5"));
    const corr = req?.properties?.correlationData as Buffer;
    expect(corr.toString()).toBe(res.correlationId);
    // The response carries the correlation data back as a property too (the spy may see it late).
    for (let i = 0; i < 50 && !packets.some((p) => p.topic === t.replies("tool-5")); i++)
      await new Promise((r) => setTimeout(r, 10));
    const reply = packets.find((p) => p.topic === t.replies("tool-5"));
    expect(Buffer.from(reply?.properties?.correlationData as Buffer).equals(corr)).toBe(true);
    await stop();
  });

  it5("an MQTT 5 tool and an MQTT 3.1.1 gateway still talk (payload fallback)", async () => {
    const gw = await client(mosquitto!.url, 4);
    const tool = await client(mosquitto!.url, 5);
    const stop = echoGateway(gw, "gw-45", []);
    const res = await requestCommand(tool, t.commands("gw-45"), t.replies("tool-45"), {
      format: 1,
      command: "info",
    });
    expect(res).toMatchObject({ ok: true, gatewayId: "gw-45" });
    await stop();
  });

  it5(
    "clean: false keeps the session across a reconnect (MQTT 5 needs a session expiry)",
    async () => {
      const o = {
        url: mosquitto!.url,
        protocolVersion: 5 as const,
        clientId: "gw-persistent",
        clean: false,
      };
      const first = await connectMqtt(o);
      await first.subscribeAsync(t.commands("gw-p"), { qos: 1 });
      await first.endAsync();
      const tool = await client(mosquitto!.url, 5);
      await tool.publishAsync(t.commands("gw-p"), "queued while away", { qos: 1 });
      const got = new Promise<string>((resolve) => {
        const again = connectMqtt(o);
        void again.then((c) => {
          clients.push(c);
          c.on("message", (_topic, payload) => resolve(payload.toString()));
        });
      });
      // Bounded, so a regression fails here instead of at the suite's 60 s timeout.
      const never = new Promise<string>((r) =>
        setTimeout(() => r("nothing arrived"), 5000).unref(),
      );
      expect(await Promise.race([got, never])).toBe("queued while away");
    },
  );

  it5("E_MQTT_TIMEOUT over MQTT 5", async () => {
    const tool = await client(mosquitto!.url, 5);
    const e = await rejection(
      requestCommand(
        tool,
        t.commands("nobody"),
        t.replies("tool-6"),
        { format: 1, command: "info" },
        200,
      ),
    );
    expect(e.code).toBe("E_MQTT_TIMEOUT");
  });
});

describe("last will", () => {
  it("the broker publishes the will (retained) when the connection drops", async () => {
    const will = encodeMessage("presence", {
      format: 1,
      gatewayId: "gw-will",
      state: "offline",
      version: "0.1.0",
      at: new Date().toISOString(),
    });
    const gw = await connectMqtt({
      url: aedes.url,
      protocolVersion: 4,
      reconnectPeriodMs: 0,
      will: { topic: t.presence("gw-will"), payload: will, retain: true, qos: 1 },
    });
    const watcher = await client(aedes.url, 4);
    await watcher.subscribeAsync(t.presence("gw-will"), { qos: 1 });
    const published = new Promise<void>((resolve) => watcher.on("message", () => resolve()));
    gw.stream.destroy();
    await published;
    const got = await readRetained(await client(aedes.url, 4), t.presence("gw-will"), 50);
    const p = parseMessage("presence", got.get(t.presence("gw-will"))!);
    expect(p.ok && p.value.state).toBe("offline");
    gw.end(true);
  });
});

describe("last will made per CONNECT", () => {
  it("a will payload function is called again for the reconnect's CONNECT", async () => {
    let n = 0;
    const gw = await connectMqtt({
      url: aedes.url,
      protocolVersion: 4,
      reconnectPeriodMs: 50,
      will: {
        topic: t.presence("gw-will2"),
        payload: () => new TextEncoder().encode(`will-${++n}`),
        retain: false,
        qos: 1,
      },
    });
    clients.push(gw);
    const watcher = await client(aedes.url, 4);
    await watcher.subscribeAsync(t.presence("gw-will2"), { qos: 1 });
    const wills: string[] = [];
    watcher.on("message", (_t, p) => wills.push(p.toString()));
    const poll = async (f: () => boolean, what: string) => {
      const end = Date.now() + 5000;
      while (!f()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const first = gw.stream;
    first.destroy();
    await poll(() => wills.length >= 1, "the first will");
    // Reconnected (a new stream): its CONNECT carried the second will.
    await poll(() => gw.connected && gw.stream !== first, "the reconnect");
    gw.stream.destroy();
    await poll(() => wills.length >= 2, "the second will");
    expect(wills).toEqual(["will-1", "will-2"]);
  });
});

describe("readRetained", () => {
  it("collects the retained messages under a filter and nothing else, then unsubscribes", async () => {
    const pub = await client(aedes.url, 4);
    const status = (deviceId: string, seq: number) =>
      Buffer.from(
        encodeMessage("status", {
          format: 1,
          deviceId,
          gatewayId: "gw",
          seq,
          state: "idle",
          updatedAt: new Date().toISOString(),
        }),
      );
    const prefix = topics("retained-test/v1");
    for (const [i, id] of ["a", "b", "c"].entries()) {
      await pub.publishAsync(prefix.status(id), status(id, i), { qos: 1, retain: true });
    }
    await pub.publishAsync(prefix.status("gone"), status("gone", 9), { qos: 1, retain: true });
    await pub.publishAsync(prefix.status("gone"), Buffer.alloc(0), { qos: 1, retain: true });
    await pub.publishAsync(prefix.desired("a"), "{}", { qos: 1, retain: true });
    await pub.publishAsync(prefix.status("live"), status("live", 1), { qos: 1 });

    const reader = await client(aedes.url, 4);
    const got = await readRetained(reader, prefix.allStatus, 100);
    expect([...got.keys()].sort()).toEqual(["a", "b", "c"].map((id) => prefix.status(id)));
    const b = parseMessage("status", got.get(prefix.status("b"))!);
    expect(b.ok && b.value.seq).toBe(1);
    expect(got.get(prefix.status("a"))).toBeInstanceOf(Uint8Array);

    // Unsubscribed: a new retained status reaches the reader only through a new readRetained.
    const after: string[] = [];
    reader.on("message", (topic) => after.push(topic));
    await pub.publishAsync(prefix.status("d"), status("d", 4), { qos: 1, retain: true });
    const again = await readRetained(reader, prefix.allStatus, 100);
    expect(again.size).toBe(4);
    expect(after.filter((x) => x === prefix.status("d")).length).toBe(1);
  });

  it("an empty filter result is an empty map", async () => {
    const reader = await client(aedes.url, 4);
    expect((await readRetained(reader, topics("empty/v1").allPresence, 50)).size).toBe(0);
  });
});
