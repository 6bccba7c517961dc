/**
 * The embedded MQTT broker: aedes on a TCP or TLS listener, with optional LevelDB persistence
 * and a users file (docs/broker.md). One machine can then run the whole system with no setup;
 * a site with its own broker (Mosquitto, EMQX, ...) does not need this at all.
 *
 * aedes 1.2 speaks MQTT 3.1 and 3.1.1 only: a client that asks for MQTT 5 gets CONNACK return
 * code 1 (unacceptable protocol version), so clients of this broker use protocolVersion 4.
 */
import type { EventEmitter } from "node:events";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import net, { type AddressInfo, type Socket } from "node:net";
import tls from "node:tls";
import { Aedes, type AuthenticateError, type Client } from "aedes";
import { ClassicLevel } from "classic-level";
import {
  authenticate,
  clientIdAllowed,
  PasswordGate,
  parseUserEntry,
  type ScryptHash,
  type UserEntry,
} from "../src/auth/users-file.js";
import { EspOtaError } from "../src/errors.js";
import { type ListenAddress, type ProbeServer, startProbeServer } from "../src/metrics/http.js";
import { MAX_PACKET_BYTES, PacketSizeGuard } from "../src/mqtt/packet-size.js";
import { brokerMetrics } from "./metrics.js";

export interface BrokerOptions {
  /** TCP port. Default 1883, MQTT's registered port (8883 is the usual one for mqtts); 0 = a free port. */
  port?: number;
  /** Address to listen on. Default "127.0.0.1", so nothing is exposed by accident; "0.0.0.0" (or "::") to serve a site. */
  host?: string;
  /**
   * Persistence directory (LevelDB): retained messages, persistent sessions (clean=false) with
   * their subscriptions and queued QoS 1/2 messages, and wills survive a broker restart.
   * Default: in memory, lost when the broker stops — gateways then lose the update notices
   * queued for them while they were offline, and every retained status must be republished.
   */
  dataDir?: string;
  /** Serve mqtts (TLS) instead of plain mqtt. PEM contents, not paths. */
  tls?: {
    cert: string | Uint8Array;
    key: string | Uint8Array;
    /** CA bundle that client certificates must chain to (with requestClientCert). */
    ca?: string | Uint8Array;
    /** Require every client to present a certificate signed by `ca` (mutual TLS). Default false. */
    requestClientCert?: boolean;
  };
  /**
   * username -> password hash (`scrypt$N$r$p$salt$key`, from `esp-ota broker passwd`; see
   * src/auth/users-file.ts), optionally followed by `:` and the client ids the user may connect with
   * (`id,prefix*`; default: the username, `<username>-*` and `esp-ota-gw-<username>`). When set,
   * clients must log in, anonymous ones are refused unless allowAnonymous, and a client id is
   * bound to its user (CONNACK 2 otherwise: nobody can take over a gateway's session). Default:
   * no authentication (fine on loopback, not on a network; docs/security.md).
   */
  users?: Record<string, string>;
  /** With `users`: also admit clients that send no username. Default false. */
  allowAnonymous?: boolean;
  /**
   * The largest MQTT packet accepted, fixed header included; a client that sends a larger one is
   * disconnected from the packet's first bytes, before it is buffered (src/mqtt/packet-size.ts).
   * Default 512 KiB: twice the largest message of the MQTT API (docs/broker.md).
   */
  maxPacketBytes?: number;
  /** Client connect/disconnect/refusal lines and errors. Default: discarded. */
  onLog?: (line: string) => void;
  /**
   * Serve /metrics, /healthz and /readyz here (docs/metrics.md; `--metrics-listen`). Default:
   * not served. Loopback is the address to give: nothing there is authenticated.
   */
  metrics?: ListenAddress;
}

export interface RunningBroker {
  /** Where clients connect: mqtt[s]://HOST:PORT (a wildcard host is given as loopback). */
  url: string;
  /** The address the listener is bound to. */
  host: string;
  /** The port it is bound to (the chosen one when port 0 was asked for). */
  port: number;
  /** Closes clients, the listener, aedes and the persistence store; the dataDir can be reopened at once. Idempotent. */
  close(): Promise<void>;
  /** Password checks: the most that ran at once, and CONNECTs refused as busy (src/auth/users-file.ts). */
  loginChecks(): { peak: number; refused: number };
  /** http://HOST:PORT of /metrics, /healthz and /readyz, when `metrics` was given. */
  metricsUrl?: string;
}

interface Persistence {
  setup(broker: Aedes): Promise<void>;
  destroy(): Promise<void>;
}

// aedes-persistence-level is CommonJS without type declarations.
const levelPersistence = createRequire(import.meta.url)("aedes-persistence-level") as (
  db: ClassicLevel<string, Uint8Array>,
) => Persistence;

export async function startBroker(o: BrokerOptions = {}): Promise<RunningBroker> {
  const host = o.host ?? "127.0.0.1";
  const port = o.port ?? 1883;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new RangeError(`port must be an integer 0..65535, got ${port}`);
  const log = o.onLog ?? (() => {});
  const entries = o.users === undefined ? undefined : parseUsers(o.users);
  const users =
    entries === undefined
      ? undefined
      : (Object.fromEntries(Object.entries(entries).map(([n, e]) => [n, e.hash])) as Record<
          string,
          ScryptHash
        >);
  const maxPacketBytes = o.maxPacketBytes ?? MAX_PACKET_BYTES;
  // Checked here so a bad value is a start-up error, not one per connection.
  new PacketSizeGuard(maxPacketBytes);
  // One per broker: CONNECT floods wait in (or are refused by) its bounded queue.
  const gate = new PasswordGate();
  const tlsOptions = o.tls === undefined ? undefined : checkTls(o.tls);

  // Without a dataDir aedes keeps its default in-memory persistence, which nothing outlives.
  const store = o.dataDir === undefined ? undefined : trackPending(await openStore(o.dataDir));
  const usernames = new WeakMap<Client, string>();
  // Read at accept time: once aedes has destroyed a refused socket its address is gone.
  const peers = new WeakMap<object, string>();
  const peer = (c: Client) => peers.get(c.conn) ?? "unknown";
  let aedes: Aedes;
  try {
    aedes = await Aedes.createBroker({
      ...(store ? { persistence: store.persistence } : {}),
      authenticate(client, username, password, done) {
        authenticate(users, o.allowAnonymous ?? false, username, password, gate).then(
          (d) => {
            const who = username === undefined ? "anonymous" : `user ${safe(username)}`;
            // After the password (so a refusal says nothing of which usernames exist), before
            // aedes registers the client, which is when it would disconnect the id's holder.
            if (d.ok && entries !== undefined && !clientIdAllowed(entries, username, client.id)) {
              log(
                `refused client ${safe(client.id)} (${who}) from ${peer(client)}: client id not allowed for this user`,
              );
              done(
                Object.assign(new Error("client id not allowed"), {
                  returnCode: 2,
                }) as AuthenticateError,
                false,
              );
              return;
            }
            if (d.ok) {
              if (username !== undefined) usernames.set(client, username);
              done(null, true);
              return;
            }
            log(`refused client ${safe(client.id)} (${who}) from ${peer(client)}: ${d.reason}`);
            done(
              Object.assign(new Error(d.reason), { returnCode: d.returnCode }) as AuthenticateError,
              false,
            );
          },
          (e: Error) => {
            log(`client ${safe(client.id)}: password check failed: ${e.message}`);
            done(Object.assign(e, { returnCode: 3 }) as AuthenticateError, false);
          },
        );
      },
    });
  } catch (e) {
    await store?.persistence.destroy().catch(() => {});
    throw e;
  }
  // aedes de-duplicates packets by (brokerId, brokerCounter) for clustered brokers and drops a
  // packet that arrives after one with a higher counter — which retained and queued QoS 1
  // deliveries do (aedes issue #994): 4 in 10 ten-device rollouts lost a notice or a status.
  // A lone broker has no peers to de-duplicate against, so each client's table of counters
  // forgets everything. (Clearing the broker id instead breaks the level persistence, which
  // keys queued packets by it: PUBACKs then fail with "no such packet".)
  const forgetful = () =>
    new Proxy(Object.create(null) as Record<string, number>, { get: () => 0, set: () => true });
  aedes.on("client", (c) => {
    (c as unknown as { duplicates: Record<string, number> }).duplicates = forgetful();
  });
  // Only when asked for: prom-client's process metrics keep an event-loop monitor running.
  const metrics = o.metrics ? brokerMetrics(aedes) : undefined;
  aedes.on("clientReady", (c) => {
    const user = usernames.get(c);
    log(`client ${safe(c.id)} connected from ${peer(c)}${user ? ` as ${safe(user)}` : ""}`);
  });
  aedes.on("clientDisconnect", (c) => log(`client ${safe(c.id)} disconnected`));
  aedes.on("clientError", (c, e) => {
    // Refusals were logged by authenticate() with the reason; the rest are socket or protocol errors.
    if ((e as { errorCode?: number }).errorCode === undefined)
      log(`client ${safe(c.id)} error: ${e.message}`);
  });
  aedes.on("connectionError", (c, e) => {
    // CONNACK 1: usually an MQTT 5 client (mqtt.js and the agent default to 5).
    const hint =
      (e as { errorCode?: number }).errorCode === 1
        ? " (this broker speaks MQTT 3.1.1: configure the client for protocol version 4)"
        : "";
    log(`connection from ${peer(c)} closed: ${e.message}${hint}`);
  });
  // aedes emits "error" when a background will sweep fails; unhandled it would kill the process.
  // (Its typings list only the client events, hence the EventEmitter view.)
  (aedes as EventEmitter).on("error", (e: Error) => log(`broker error: ${e.message}`));

  const handle = (socket: Socket) => {
    const who = `${formatHost(socket.remoteAddress ?? "?")}:${socket.remotePort}`;
    peers.set(socket, who);
    metrics?.socket(socket);
    aedes.handle(socket);
    // Added after aedes' 'readable' listener, so it does not switch the socket to flowing mode:
    // it sees each chunk as aedes reads it, and a packet over the limit closes the connection
    // when its fixed header arrives, with at most one read (64 KiB) of it buffered.
    const guard = new PacketSizeGuard(maxPacketBytes);
    socket.on("data", (chunk: Buffer) => {
      const v = guard.feed(chunk);
      if (v.ok || socket.destroyed) return;
      log(
        v.length < 0
          ? `connection from ${who} closed: a malformed packet length`
          : `connection from ${who} closed: a packet of ${v.length} bytes is over maxPacketBytes ${maxPacketBytes}`,
      );
      socket.destroy();
    });
  };
  const server = tlsOptions ? tls.createServer(tlsOptions, handle) : net.createServer(handle);
  // Sockets that have not sent CONNECT yet are not aedes clients; close() ends them itself.
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  server.on("tlsClientError", (e: Error, s: tls.TLSSocket) =>
    log(`TLS handshake from ${s.remoteAddress}:${s.remotePort} failed: ${e.message}`),
  );

  const closeStore = async () => {
    await new Promise<void>((r) => aedes.close(() => r()));
    if (!store) return;
    await store.settled();
    await store.persistence.destroy().catch((e: Error) => log(`closing the store: ${e.message}`));
  };

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    await closeStore();
    throw new EspOtaError(
      "E_BROKER_LISTEN",
      `cannot listen on ${formatHost(host)}:${port}: ${(e as Error).message}`,
      { host, port },
      e,
    );
  }
  server.on("error", (e) => log(`listener error: ${e.message}`));

  let closing: Promise<void> | undefined;
  let probe: ProbeServer | undefined;
  if (metrics && o.metrics) {
    try {
      probe = await startProbeServer({
        ...o.metrics,
        registry: metrics.registry,
        // Ready while the MQTT listener accepts connections (and the store opened, or start failed).
        ready: () =>
          server.listening && closing === undefined
            ? { ok: true }
            : { ok: false, failing: [closing ? "stopping" : "not listening"] },
      });
    } catch (e) {
      await new Promise<void>((r) => server.close(() => r()));
      await closeStore();
      throw e;
    }
  }

  const addr = server.address() as AddressInfo;
  const wildcard = host === "0.0.0.0" || host === "::" || host === "";
  const urlHost = wildcard ? (addr.family === "IPv6" ? "::1" : "127.0.0.1") : host;
  return {
    url: `${tlsOptions ? "mqtts" : "mqtt"}://${formatHost(urlHost)}:${addr.port}`,
    host: addr.address,
    port: addr.port,
    loginChecks: () => ({ peak: gate.peak, refused: gate.refused }),
    ...(probe ? { metricsUrl: probe.url } : {}),
    close() {
      closing ??= (async () => {
        const listenerClosed = new Promise<void>((r) => server.close(() => r()));
        await probe?.close();
        await closeStore();
        for (const s of sockets) s.destroy();
        await listenerClosed;
      })();
      return closing;
    },
  };
}

function parseUsers(users: Record<string, string>): Record<string, UserEntry> {
  const out: Record<string, UserEntry> = Object.create(null);
  for (const [name, encoded] of Object.entries(users)) {
    const h = parseUserEntry(encoded);
    if (!h.ok)
      throw new EspOtaError("E_BROKER_USERS", `user ${safe(name)}: ${h.reason}`, { user: name });
    out[name] = h.value;
  }
  return out;
}

function checkTls(t: NonNullable<BrokerOptions["tls"]>): tls.TlsOptions {
  const pem = (b: string | Uint8Array) => (typeof b === "string" ? b : Buffer.from(b));
  const options: tls.TlsOptions = {
    cert: pem(t.cert),
    key: pem(t.key),
    ...(t.ca === undefined ? {} : { ca: pem(t.ca) }),
    requestCert: t.requestClientCert ?? false,
    rejectUnauthorized: t.requestClientCert ?? false,
  };
  try {
    // Fails here, not at the first handshake, on non-PEM input or a key that is not the cert's.
    tls.createSecureContext(options);
  } catch (e) {
    throw new EspOtaError(
      "E_BROKER_TLS",
      `TLS certificate or key unusable: ${(e as Error).message}`,
      {},
      e,
    );
  }
  return options;
}

async function openStore(dataDir: string): Promise<Persistence> {
  const db = new ClassicLevel<string, Uint8Array>(dataDir);
  try {
    mkdirSync(dataDir, { recursive: true });
    await db.open();
  } catch (e) {
    const cause = (e as { cause?: Error }).cause;
    throw new EspOtaError(
      "E_BROKER_DATA",
      `cannot open the broker data directory ${dataDir}: ${(e as Error).message}${cause ? ` (${cause.message})` : ""}`,
      { path: dataDir },
      e,
    );
  }
  return levelPersistence(db);
}

/**
 * aedes does not wait for every persistence write it starts: closing a client publishes its
 * will (a retained store) and deletes the stored will after close() has already called back.
 * Closing LevelDB under them would lose those writes, so close() waits until no write is in
 * flight for a few event-loop turns (the chain hops through setImmediate between writes).
 */
function trackPending(p: Persistence): { persistence: Persistence; settled(): Promise<void> } {
  const pending = new Set<PromiseLike<unknown>>();
  const wrapped = new Map<PropertyKey, unknown>();
  const persistence = new Proxy(p, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      // aedes insists that setup() is an AsyncFunction, so it passes through unwrapped.
      if (typeof v !== "function" || prop === "setup" || prop === "constructor") return v;
      if (!wrapped.has(prop)) {
        wrapped.set(prop, (...args: unknown[]) => {
          const r: unknown = Reflect.apply(v, target, args);
          if (r !== null && typeof (r as PromiseLike<unknown>)?.then === "function") {
            const t = r as PromiseLike<unknown>;
            pending.add(t);
            t.then(
              () => pending.delete(t),
              () => pending.delete(t),
            );
          }
          return r;
        });
      }
      return wrapped.get(prop);
    },
  });
  return {
    persistence,
    async settled() {
      for (let idle = 0; idle < 3; ) {
        if (pending.size > 0) {
          idle = 0;
          await Promise.allSettled([...pending]);
        } else {
          idle++;
          await new Promise((r) => setImmediate(r));
        }
      }
    },
  };
}

function formatHost(h: string): string {
  return h.includes(":") ? `[${h}]` : h;
}

/** Client ids and usernames come from the network: no control characters into the log. */
function safe(s: string): string {
  return JSON.stringify(s).slice(1, -1);
}
