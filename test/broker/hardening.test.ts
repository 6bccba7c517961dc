/**
 * Issue 12, defects 7, 10 and 11, against the embedded broker over real TCP on loopback:
 * - 7: a PUBLISH over maxPacketBytes is refused from its fixed header: the client is
 *   disconnected, nothing is retained, and the broker never holds the packet.
 * - 10: with users, a client id is bound to its user: nobody else can CONNECT with a gateway's
 *   client id, kick it and take its persistent session.
 * - 11: a flood of CONNECTs with passwords runs at most MAX_CONCURRENT_CHECKS scrypt checks at
 *   once and refuses the excess at once, so a real login still gets through.
 */
import net from "node:net";
import mqtt, { type IClientOptions } from "mqtt";
import mqttPacket from "mqtt-packet";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type RunningBroker, startBroker } from "../../broker/broker.js";
import {
  clientIdAllowed,
  hashPassword,
  MAX_CONCURRENT_CHECKS,
  PasswordGate,
  parseHash,
  parseUserEntry,
  parseUsersFile,
  setUser,
  type UserEntry,
} from "../../src/auth/users-file.js";
import { connectMqtt } from "../../src/mqtt/client.js";
import { MAX_PACKET_BYTES, PacketSizeGuard } from "../../src/mqtt/packet-size.js";

const BASE: IClientOptions = { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 };
const FAST = { N: 1024, r: 8, p: 1 };

async function connackCode(url: string, o: IClientOptions): Promise<number | string> {
  try {
    const c = await mqtt.connectAsync(url, { ...BASE, ...o });
    await c.endAsync();
    return 0;
  } catch (e) {
    return (e as { code?: number | string }).code ?? String(e);
  }
}

/** A raw TCP client: sends `bytes`, resolves when the broker closes the connection. */
function rawSend(port: number, bytes: Uint8Array[]): Promise<{ closed: true; got: Buffer }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, "127.0.0.1", async () => {
      for (const b of bytes) {
        if (s.destroyed) break;
        if (!s.write(b)) await new Promise((r) => s.once("drain", r));
      }
    });
    s.on("data", (c) => chunks.push(c));
    s.on("error", () => {});
    s.on("close", () => resolve({ closed: true, got: Buffer.concat(chunks) }));
    setTimeout(() => reject(new Error("the broker kept the connection open")), 10_000).unref();
  });
}

const connect = (clientId: string) =>
  mqttPacket.generate({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: 4,
    clean: true,
    clientId,
    keepalive: 30,
  });

describe("PacketSizeGuard (defect 7)", () => {
  const publish = (n: number) =>
    mqttPacket.generate({
      cmd: "publish",
      topic: "t",
      payload: Buffer.alloc(n),
      qos: 0,
      retain: true,
      dup: false,
    });
  it("passes packets up to the limit and names the first one over it, in any chunking", () => {
    const stream = Buffer.concat([connect("c"), publish(100), publish(1000), publish(10)]);
    const over = publish(1000).length;
    for (const size of [1, 2, 7, stream.length]) {
      const g = new PacketSizeGuard(over - 1);
      let verdict: ReturnType<PacketSizeGuard["feed"]> = { ok: true };
      for (let i = 0; i < stream.length && verdict.ok; i += size)
        verdict = g.feed(stream.subarray(i, i + size));
      expect(verdict).toEqual({ ok: false, length: over });
      expect(new PacketSizeGuard(over).feed(stream)).toEqual({ ok: true });
    }
  });

  it("a 256 MB length is refused from its 5 header bytes; a 5-byte length is malformed", () => {
    expect(new PacketSizeGuard().feed(Uint8Array.of(0x31, 0xff, 0xff, 0xff, 0x7f))).toEqual({
      ok: false,
      length: 1 + 4 + 268_435_455,
    });
    expect(new PacketSizeGuard().feed(Uint8Array.of(0x31, 0xff, 0xff, 0xff, 0xff, 1))).toEqual({
      ok: false,
      length: -1,
    });
    expect(() => new PacketSizeGuard(1)).toThrow(RangeError);
  });
});

describe("the embedded broker's packet limit (defect 7)", () => {
  let broker: RunningBroker;
  const log: string[] = [];
  beforeAll(async () => {
    broker = await startBroker({ port: 0, onLog: (l) => log.push(l) });
  });
  afterAll(() => broker.close());

  it("disconnects a client sending an oversized retained PUBLISH; nothing is retained; RSS does not grow by it", async () => {
    const size = 64 * 1024 * 1024;
    // The header says 64 MiB; the body follows in 1 MiB writes until the broker hangs up.
    const header = mqttPacket.generate({
      cmd: "publish",
      topic: "esp-ota/v1/big",
      payload: Buffer.alloc(0),
      qos: 0,
      retain: true,
      dup: false,
    });
    const topicPart = header.subarray(2); // type byte, 1-byte length, then topic
    const len = topicPart.length + size;
    const varint: number[] = [];
    for (let x = len; ; ) {
      const b = x % 128;
      x = Math.floor(x / 128);
      varint.push(x > 0 ? b | 0x80 : b);
      if (x === 0) break;
    }
    const mib = Buffer.alloc(1024 * 1024, 0x61);
    const before = process.memoryUsage().rss;
    const r = await rawSend(broker.port, [
      connect("big-publisher"),
      Buffer.concat([Buffer.of(0x31, ...varint), topicPart]),
      ...Array.from({ length: 64 }, () => mib),
    ]);
    expect(r.closed).toBe(true);
    const grown = process.memoryUsage().rss - before;
    // The broker runs in this process: had it buffered the packet, RSS would have grown by 64 MiB.
    expect(grown).toBeLessThan(size / 2);
    expect(log.some((l) => l.includes("is over maxPacketBytes"))).toBe(true);

    const sub = await mqtt.connectAsync(broker.url, BASE);
    try {
      const got: string[] = [];
      sub.on("message", (t) => got.push(t));
      await sub.subscribeAsync("esp-ota/v1/#");
      // A retained message would arrive right after the SUBACK; a round trip of our own proves
      // the broker has sent everything it had before it.
      await sub.publishAsync("esp-ota/v1/probe", "x", { qos: 1 });
      await vi.waitFor(() => expect(got).toContain("esp-ota/v1/probe"));
      expect(got).not.toContain("esp-ota/v1/big");
    } finally {
      await sub.endAsync();
    }
  });

  it("still takes a packet at the limit's order of size (a 256 KiB message)", async () => {
    const c = await mqtt.connectAsync(broker.url, BASE);
    try {
      const got: number[] = [];
      c.on("message", (_t, p) => got.push(p.length));
      await c.subscribeAsync("esp-ota/v1/ok");
      await c.publishAsync("esp-ota/v1/ok", Buffer.alloc(256 * 1024), { qos: 1 });
      await vi.waitFor(() => expect(got).toEqual([256 * 1024]));
      expect(MAX_PACKET_BYTES).toBeGreaterThan(256 * 1024 + 65_535 + 5);
    } finally {
      await c.endAsync();
    }
  });
});

describe("every client announces the packet limit (defect 7)", () => {
  it("an MQTT 5 CONNECT from connectMqtt carries Maximum Packet Size = MAX_PACKET_BYTES", async () => {
    const seen: mqttPacket.IConnectPacket[] = [];
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => {
      sockets.push(s);
      const parser = mqttPacket.parser({ protocolVersion: 5 });
      parser.on("packet", (p) => {
        if (p.cmd !== "connect") return;
        seen.push(p as mqttPacket.IConnectPacket);
        s.write(
          mqttPacket.generate(
            { cmd: "connack", sessionPresent: false, reasonCode: 0 },
            { protocolVersion: 5 },
          ),
        );
      });
      s.on("data", (d) => parser.parse(d));
      s.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as net.AddressInfo;
    try {
      const c = await connectMqtt({ url: `mqtt://127.0.0.1:${port}`, protocolVersion: 5 });
      c.end(true);
      expect(seen[0]?.properties?.maximumPacketSize).toBe(MAX_PACKET_BYTES);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});

describe("client ids bound to users (defect 10)", () => {
  it("the rules: own ids, tool ids for anyone; no other user's, and anonymous none a user claims", () => {
    const h = parseHash(
      "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    if (!h.ok) throw new Error(h.reason);
    const users: Record<string, UserEntry> = {
      gw1: { hash: h.value },
      ops: { hash: h.value, clientIds: ["console", "dash-*"] },
    };
    const rows: [string | undefined, string, boolean][] = [
      ["gw1", "esp-ota-gw-gw1", true],
      ["gw1", "gw1", true],
      ["gw1", "gw1-status", true],
      ["gw1", "esp-ota-status-host-1-abc", true],
      ["gw1", "gw10", false],
      ["gw1", "esp-ota-gw-gw2", false],
      ["gw1", "console", false],
      ["ops", "console", true],
      ["ops", "dash-7", true],
      ["ops", "ops", false],
      ["ops", "esp-ota-gw-gw1", false],
      ["ops", "esp-ota-rollout-h-2-x", true],
      ["nobody", "nobody", false],
      [undefined, "esp-ota-gw-gw1", false],
      [undefined, "gw1-x", false],
      [undefined, "dash-1", false],
      [undefined, "mqttjs_1234", true],
      [undefined, "esp-ota-status-h-1-a", true],
    ];
    for (const [user, id, ok] of rows)
      expect([user, id, clientIdAllowed(users, user, id)]).toEqual([user, id, ok]);
  });

  it("the users file carries the list; setUser keeps it; a lone * is refused", () => {
    const HASH =
      "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const text = `ops:${HASH}:console,dash-*\n`;
    const r = parseUsersFile(text);
    expect(r.ok && r.value.ops).toBe(`${HASH}:console,dash-*`);
    const e = parseUserEntry(`${HASH}:console,dash-*`);
    expect(e.ok && e.value.clientIds).toEqual(["console", "dash-*"]);
    const other = HASH.replace("AAAAAAAAAAAAAAAAAAAAAA==", "BBBBBBBBBBBBBBBBBBBBBB==");
    expect(setUser(text, "ops", other)).toBe(`ops:${other}:console,dash-*\n`);
    for (const bad of ["*", "a*b", "", "x,,y"]) {
      const p = parseUserEntry(`${HASH}:${bad}`);
      expect([bad, p.ok]).toEqual([bad, false]);
    }
  });

  describe("against the embedded broker", () => {
    let broker: RunningBroker;
    beforeAll(async () => {
      broker = await startBroker({
        port: 0,
        users: {
          gw1: await hashPassword("gw-secret", FAST),
          ops: await hashPassword("op-secret", FAST),
        },
        allowAnonymous: true,
      });
    });
    afterAll(() => broker.close());

    it("another user, or an anonymous client, cannot take the gateway's client id and session", async () => {
      const gw = await mqtt.connectAsync(broker.url, {
        ...BASE,
        username: "gw1",
        password: "gw-secret",
        clientId: "esp-ota-gw-gw1",
        clean: false,
      });
      try {
        await gw.subscribeAsync("esp-ota/v1/devices/+/desired", { qos: 1 });
        let kicked = false;
        gw.on("close", () => {
          kicked = true;
        });
        // CONNACK 2: identifier rejected (MQTT 3.1.1 §3.2.2.3).
        expect(
          await connackCode(broker.url, {
            username: "ops",
            password: "op-secret",
            clientId: "esp-ota-gw-gw1",
            clean: false,
          }),
        ).toBe(2);
        expect(await connackCode(broker.url, { clientId: "esp-ota-gw-gw1", clean: true })).toBe(2);
        // The gateway is still connected, with its session: a notice still reaches it.
        const got: string[] = [];
        gw.on("message", (t) => got.push(t));
        const pub = await mqtt.connectAsync(broker.url, BASE);
        await pub.publishAsync("esp-ota/v1/devices/d1/desired", "{}", { qos: 1 });
        await pub.endAsync();
        await vi.waitFor(() => expect(got).toEqual(["esp-ota/v1/devices/d1/desired"]));
        expect(kicked).toBe(false);
        // The gateway's own user can reconnect with it (a restart).
        expect(
          await connackCode(broker.url, {
            username: "gw1",
            password: "gw-secret",
            clientId: "esp-ota-gw-gw1",
            clean: false,
          }),
        ).toBe(0);
      } finally {
        gw.end(true);
      }
    });
  });
});

describe("concurrent password checks (defect 11)", () => {
  it("PasswordGate runs at most `concurrency`, queues at most `queueLimit`, refuses the rest at once", async () => {
    let running = 0;
    let peak = 0;
    const release: (() => void)[] = [];
    const gate = new PasswordGate(2, 3, async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise<void>((r) => release.push(r));
      running--;
      return true;
    });
    const h = { N: 2, r: 1, p: 1, salt: new Uint8Array(8), key: new Uint8Array(16) };
    const all = Array.from({ length: 20 }, () => gate.verify("pw", h));
    const settled: (boolean | "busy")[] = [];
    for (const p of all) p.then((v) => settled.push(v));
    await new Promise((r) => setImmediate(r));
    // 2 running, 3 waiting, 15 refused without waiting for anything.
    expect(settled.filter((v) => v === "busy")).toHaveLength(15);
    expect(release).toHaveLength(2);
    while (release.length > 0 || settled.length < 20) {
      release.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    expect(peak).toBe(2);
    expect(settled.filter((v) => v === true)).toHaveLength(5);
  });

  it("200 CONNECTs with passwords: the real login still gets in, checks never exceed the cap", async () => {
    // The default scrypt cost (N = 2^14, ~50 ms a check): the flood is about real work.
    const broker = await startBroker({
      port: 0,
      users: { gw1: await hashPassword("gw-secret") },
    });
    try {
      const login = async () => {
        const t0 = performance.now();
        const c = mqtt.connect(broker.url, {
          ...BASE,
          username: "gw1",
          password: "gw-secret",
          clientId: "esp-ota-gw-gw1",
          // A refusal as busy (CONNACK 3) is retried, as the agent's client does.
          reconnectPeriod: 50,
          reconnectOnConnackError: true,
          connectTimeout: 20_000,
        });
        c.on("error", () => {});
        await new Promise((r) => c.once("connect", r));
        const ms = performance.now() - t0;
        await c.endAsync();
        return ms;
      };
      const baseline = await login();
      const flood = Array.from({ length: 200 }, (_, i) =>
        connackCode(broker.url, {
          username: `u${i}`,
          password: "guess",
          clientId: `f${i}`,
          connectTimeout: 20_000,
        }),
      );
      await new Promise((r) => setTimeout(r, 20));
      const during = await login();
      const codes = await Promise.all(flood);
      // Every flood CONNECT was answered: refused as a bad login (4) or as busy (3).
      expect(codes.every((c) => c === 4 || c === 3)).toBe(true);
      // Refused at once rather than queued without end (none were before the cap).
      expect(codes.filter((c) => c === 3).length).toBeGreaterThan(0);
      console.log(
        `login alone ${baseline.toFixed(0)} ms; during a 200-CONNECT flood ${during.toFixed(0)} ms; ${codes.filter((c) => c === 3).length} refused as busy`,
      );
      // The cap held: never more scrypt checks at once than MAX_CONCURRENT_CHECKS.
      expect(broker.loginChecks().peak).toBeLessThanOrEqual(MAX_CONCURRENT_CHECKS);
      expect(broker.loginChecks().refused).toBeGreaterThanOrEqual(
        codes.filter((c) => c === 3).length,
      );
    } finally {
      await broker.close();
    }
  }, 30_000);
});
