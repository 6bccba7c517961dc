/** The embedded broker's own features: users, TLS, coded start-up errors, a clean close(). */
import { mkdtempSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import mqtt, { type IClientOptions } from "mqtt";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type RunningBroker, startBroker } from "../../broker/broker.js";
import { hashPassword } from "../../src/auth/users-file.js";
import { selfSignedCert } from "../helpers/brokers.js";

const BASE: IClientOptions = { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 };
// Cheaper than the default N = 2^14: these tests check the logic, not the work factor.
const FAST = { N: 1024, r: 8, p: 1 };

/** The CONNACK return code a connection attempt got (0 = accepted), or the TLS error's code. */
async function connackCode(url: string, o: IClientOptions): Promise<number | string> {
  try {
    const c = await mqtt.connectAsync(url, { ...BASE, ...o });
    await c.endAsync();
    return 0;
  } catch (e) {
    return (e as { code?: number | string }).code ?? String(e);
  }
}

async function rejection(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error("expected a rejection");
}

describe("users", () => {
  let broker: RunningBroker;
  const log: string[] = [];
  beforeAll(async () => {
    broker = await startBroker({
      port: 0,
      users: {
        gateway: await hashPassword("gw-secret", FAST),
        operator: await hashPassword("op-secret", FAST),
      },
      onLog: (l) => log.push(l),
    });
  });
  afterAll(() => broker.close());

  it("admits a user with the right password", async () => {
    // A user's client ids are bound to it: its name, `<name>-...` (docs/broker.md).
    const as = (username: string, password: string) => ({ username, password, clientId: username });
    expect(await connackCode(broker.url, as("gateway", "gw-secret"))).toBe(0);
    expect(await connackCode(broker.url, as("operator", "op-secret"))).toBe(0);
    // aedes reports a client ready just after writing its CONNACK.
    await vi.waitFor(() =>
      expect(log.some((l) => /connected from 127\.0\.0\.1:\d+ as gateway$/.test(l))).toBe(true),
    );
  });

  it("refuses a wrong password, another user's password and an unknown user with CONNACK 4", async () => {
    expect(await connackCode(broker.url, { username: "gateway", password: "wrong" })).toBe(4);
    expect(await connackCode(broker.url, { username: "gateway", password: "op-secret" })).toBe(4);
    expect(await connackCode(broker.url, { username: "gateway" })).toBe(4);
    expect(await connackCode(broker.url, { username: "nobody", password: "gw-secret" })).toBe(4);
    expect(
      log.some((l) => l.includes("(user gateway)") && l.includes("bad username or password")),
    ).toBe(true);
    // The log names who was refused, never what they tried.
    expect(log.join("\n")).not.toMatch(/wrong|secret/);
  });

  it("refuses anonymous clients with CONNACK 5 (not authorized)", async () => {
    expect(await connackCode(broker.url, {})).toBe(5);
  });

  it("admits anonymous clients with allowAnonymous, and still checks passwords", async () => {
    const open = await startBroker({
      port: 0,
      users: { gateway: await hashPassword("gw-secret", FAST) },
      allowAnonymous: true,
    });
    try {
      expect(await connackCode(open.url, {})).toBe(0);
      expect(await connackCode(open.url, { username: "gateway", password: "x" })).toBe(4);
    } finally {
      await open.close();
    }
  });

  it("refuses a malformed hash at start-up with E_BROKER_USERS", async () => {
    const e = await rejection(startBroker({ port: 0, users: { gateway: "md5$abc" } }));
    expect(e.code).toBe("E_BROKER_USERS");
    expect(e.message).toContain("gateway");
  });
});

const server = selfSignedCert();
const other = selfSignedCert();
if (!server) console.warn("embedded.test: openssl is not installed; the TLS tests are skipped");

describe.skipIf(!server || !other)("TLS", () => {
  const cert = Buffer.from(server?.cert ?? []);
  const key = Buffer.from(server?.key ?? []);
  const otherKey = Buffer.from(other?.key ?? []);

  it("serves mqtts that a client trusting the certificate can use", async () => {
    const broker = await startBroker({ port: 0, tls: { cert, key } });
    try {
      expect(broker.url).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/);
      const c = await mqtt.connectAsync(broker.url, { ...BASE, ca: cert });
      await c.publishAsync("t", "over tls", { qos: 1 });
      await c.endAsync();
      // A client that does not trust it is refused by its own TLS check.
      expect(await connackCode(broker.url, {})).toBe("DEPTH_ZERO_SELF_SIGNED_CERT");
    } finally {
      await broker.close();
    }
  });

  it("requires a client certificate with requestClientCert", async () => {
    // The self-signed certificate is its own CA, so it also serves as a client certificate.
    const broker = await startBroker({
      port: 0,
      tls: { cert, key, ca: cert, requestClientCert: true },
    });
    try {
      expect(await connackCode(broker.url, { ca: cert, cert, key })).toBe(0);
      expect(await connackCode(broker.url, { ca: cert })).toMatch(
        /CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE/,
      );
    } finally {
      await broker.close();
    }
  });

  it("refuses a key that is not the certificate's with E_BROKER_TLS", async () => {
    const e = await rejection(startBroker({ port: 0, tls: { cert, key: otherKey } }));
    expect(e.code).toBe("E_BROKER_TLS");
    const e2 = await rejection(startBroker({ port: 0, tls: { cert: "not pem", key } }));
    expect(e2.code).toBe("E_BROKER_TLS");
  });
});

describe("start-up and close", () => {
  it("reports a port in use as E_BROKER_LISTEN with the address, and releases its data directory", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    const dataDir = mkdtempSync(join(tmpdir(), "esp-ota-broker-"));
    try {
      const e = await rejection(startBroker({ port, dataDir }));
      expect(e.code).toBe("E_BROKER_LISTEN");
      expect(e.message).toContain(`127.0.0.1:${port}`);
      // The failed start closed its LevelDB, so the directory's lock is free again.
      const b = await startBroker({ port: 0, dataDir });
      await b.close();
    } finally {
      blocker.close();
    }
  });

  it("refuses a data directory another broker holds with E_BROKER_DATA", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "esp-ota-broker-"));
    const a = await startBroker({ port: 0, dataDir });
    try {
      const e = await rejection(startBroker({ port: 0, dataDir }));
      expect(e.code).toBe("E_BROKER_DATA");
    } finally {
      await a.close();
    }
  });

  it("refuses MQTT 5 clients with CONNACK 1 and logs what to change", async () => {
    // aedes 1.2 implements MQTT 3.1 and 3.1.1 only (docs/broker.md).
    const log: string[] = [];
    const b = await startBroker({ port: 0, onLog: (l) => log.push(l) });
    try {
      expect(await connackCode(b.url, { protocolVersion: 5 })).toBe(1);
      // The CONNACK is written before aedes reports the refusal, so the line may follow it.
      await vi.waitFor(() =>
        expect(log.join("\n")).toMatch(
          /connection from 127\.0\.0\.1:\d+ closed: unacceptable protocol version .*protocol version 4/,
        ),
      );
    } finally {
      await b.close();
    }
  });

  it("gives a connectable URL when listening on every address", async () => {
    const b = await startBroker({ port: 0, host: "0.0.0.0" });
    try {
      expect(b.host).toBe("0.0.0.0");
      expect(b.url).toBe(`mqtt://127.0.0.1:${b.port}`);
      expect(await connackCode(b.url, {})).toBe(0);
    } finally {
      await b.close();
    }
  });

  it("finishes the will writes of the clients it closes before closing the store", async () => {
    // A stored will left behind is republished by the next broker's sweep minutes later, so a
    // gateway's stale "offline" would overwrite the "online" it published after reconnecting.
    const dataDir = mkdtempSync(join(tmpdir(), "esp-ota-broker-"));
    const b = await startBroker({ port: 0, dataDir });
    const clients = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        mqtt.connectAsync(b.url, {
          ...BASE,
          clientId: `gw-${i}`,
          will: {
            topic: `presence/gw-${i}`,
            payload: Buffer.from("offline"),
            qos: 1,
            retain: true,
          },
        }),
      ),
    );
    await b.close();
    for (const c of clients) c.end(true);

    const db = new ClassicLevel(dataDir);
    const keys: string[] = [];
    for await (const k of db.keys()) keys.push(k);
    await db.close();
    expect(keys.filter((k) => k.startsWith("will:"))).toEqual([]);
    expect(keys.filter((k) => k.startsWith("retained:")).length).toBe(10);
  });

  it("close() is idempotent and frees the port for an immediate restart", async () => {
    const b = await startBroker({ port: 0 });
    await Promise.all([b.close(), b.close()]);
    const again = await startBroker({ port: b.port });
    await again.close();
  });
});
