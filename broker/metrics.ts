/**
 * The embedded broker's metrics (docs/metrics.md, docs/broker.md "Metrics and health"): one
 * prom-client Registry per broker (never the global default one: tests start several brokers
 * in one process), fed by aedes' events and read from aedes and the sockets at scrape time.
 *
 * Counted per delivery, not per PUBLISH received: a status to which the console, a rollout and
 * `esp-ota status` subscribe is one message in and three out. Nothing a client chooses (client
 * id, topic) becomes a label, so the series count is fixed.
 */
import type { Socket } from "node:net";
import type { Aedes, Client } from "aedes";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";

export const BROKER_METRIC_PREFIX = "esp_ota_broker_";

/** Retained messages counted at most (a scrape must not read an unbounded store). */
const RETAINED_COUNT_MAX = 1_000_000;

type Deliver = (packet: { qos?: number }, cb: () => void) => void;

export interface BrokerMetrics {
  registry: Registry;
  /** A socket accepted: its bytes count from now, and after it closes. */
  socket(s: Socket): void;
}

export function brokerMetrics(aedes: Aedes): BrokerMetrics {
  const registry = new Registry();
  const registers = [registry];
  const p = BROKER_METRIC_PREFIX;
  collectDefaultMetrics({ register: registry, prefix: p });

  // Bytes of closed sockets, plus the open ones read at scrape time.
  const open = new Set<Socket>();
  const closed = { read: 0, written: 0 };
  /** QoS 1/2 deliveries written to each connected client and not yet acknowledged. */
  const inflight = new Map<Client, number>();

  new Gauge({
    name: `${p}clients`,
    help: "Connected MQTT clients.",
    registers,
    collect() {
      this.set(aedes.connectedClients);
    },
  });
  new Gauge({
    name: `${p}subscriptions`,
    help: "Subscriptions of the connected clients (a persistent session's, while it is away, are not counted).",
    registers,
    collect() {
      let n = 0;
      const clients = (aedes as unknown as { clients: Record<string, Client> }).clients;
      for (const c of Object.values(clients))
        n += Object.keys((c as unknown as { subscriptions?: object }).subscriptions ?? {}).length;
      this.set(n);
    },
  });
  new Gauge({
    name: `${p}retained_messages`,
    help: "Retained messages the broker holds (every topic but $SYS).",
    registers,
    async collect() {
      let n = 0;
      // aedes' typings leave `persistence` out; every aedes persistence has this stream.
      const persistence = (
        aedes as unknown as {
          persistence: { createRetainedStreamCombi(p: string[]): AsyncIterable<unknown> };
        }
      ).persistence;
      const stream = persistence.createRetainedStreamCombi(["#"]);
      for await (const _ of stream) if (++n >= RETAINED_COUNT_MAX) break;
      this.set(n);
    },
  });
  new Gauge({
    name: `${p}qos1_inflight`,
    help: "QoS 1 deliveries written to connected clients and not yet acknowledged (PUBACK).",
    registers,
    collect() {
      let n = 0;
      for (const v of inflight.values()) n += v;
      this.set(n);
    },
  });
  const received = new Counter({
    name: `${p}messages_received_total`,
    help: "PUBLISH packets received from clients (wills the broker publishes for them included).",
    labelNames: ["qos"],
    registers,
  });
  const sent = new Counter({
    name: `${p}messages_sent_total`,
    help: "Messages delivered to subscribers, by the QoS they were delivered at.",
    labelNames: ["qos"],
    registers,
  });
  new Counter({
    name: `${p}received_bytes_total`,
    help: "Bytes read from client connections (MQTT framing included).",
    registers,
    collect() {
      let n = closed.read;
      for (const s of open) n += s.bytesRead;
      this.reset();
      this.inc(n);
    },
  });
  new Counter({
    name: `${p}sent_bytes_total`,
    help: "Bytes written to client connections (MQTT framing included).",
    registers,
    collect() {
      let n = closed.written;
      for (const s of open) n += s.bytesWritten;
      this.reset();
      this.inc(n);
    },
  });
  const connections = new Counter({
    name: `${p}client_connections_total`,
    help: "Clients that completed CONNECT (reconnects included).",
    registers,
  });
  for (const q of ["0", "1", "2"]) {
    received.inc({ qos: q }, 0);
    sent.inc({ qos: q }, 0);
  }

  aedes.on("client", (c: Client) => {
    connections.inc();
    // aedes delivers through these two per-client functions (lib/client.js), looked up when a
    // subscription is made and for each retained message sent at subscribe: wrapped here,
    // before the client can subscribe, they see every delivery.
    const anyC = c as unknown as { deliver0: Deliver; deliverQoS: Deliver };
    const d0 = anyC.deliver0;
    const dq = anyC.deliverQoS;
    anyC.deliver0 = (packet, cb) => {
      sent.inc({ qos: "0" });
      d0(packet, cb);
    };
    anyC.deliverQoS = (packet, cb) => {
      // deliverQoS hands a QoS 0 packet on to deliver0, which counts it.
      const qos = packet.qos ?? 0;
      if (qos > 0) {
        sent.inc({ qos: String(qos) });
        inflight.set(c, (inflight.get(c) ?? 0) + 1);
      }
      dq(packet, cb);
    };
  });
  aedes.on("ack", (_packet: unknown, c: Client) => {
    const n = inflight.get(c);
    if (n !== undefined) inflight.set(c, Math.max(0, n - 1));
  });
  aedes.on("clientDisconnect", (c: Client) => inflight.delete(c));
  aedes.on("publish", (packet: { qos?: number; topic: string }, c: Client | null) => {
    if (c) received.inc({ qos: String(packet.qos ?? 0) });
  });

  return {
    registry,
    socket(s) {
      open.add(s);
      s.once("close", () => {
        open.delete(s);
        closed.read += s.bytesRead;
        closed.written += s.bytesWritten;
      });
    },
  };
}
