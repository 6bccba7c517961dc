/**
 * A real NATS cluster for integration tests (STYLE.md §14; issue 17 "A clustered broker"):
 * Debian's `nats-server` (2.9), N nodes on loopback, each with its own config written here,
 * its own JetStream store and server_name, routes to every other node, and the MQTT listener on.
 * NATS keeps MQTT's state (sessions, retained messages, QoS 1 messages in flight) in JetStream
 * streams replicated over the cluster (docs/scaling.md "NATS"), so a node killed and started
 * again finds it there.
 *
 * Ports are picked free (freePort) per node: client, cluster (routes), MQTT and the monitoring
 * port whose /healthz says when the node's JetStream is current. Everything lives in one temp
 * directory removed by close().
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { freePort } from "./mosquitto.js";

/** `nats-server` on PATH, else Debian's /usr/sbin/nats-server (sbin is often not on PATH). */
export function natsServerPath(): string | undefined {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  for (const p of [...dirs.map((d) => join(d, "nats-server")), "/usr/sbin/nats-server"]) {
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here; try the next
    }
  }
  return undefined;
}

const isCi = /^(true|1)$/i.test(process.env.CI ?? "");
export const NATS_MISSING =
  "nats-server is not installed: apt-get install -y nats-server (or run .ci/run, which installs it)";

/**
 * Whether the cluster tests can run: true with nats-server installed; false (with a warning)
 * without it, except under CI=true, where a missing package must fail, never skip.
 */
export function natsAvailable(): boolean {
  if (natsServerPath() !== undefined) return true;
  if (isCi) throw new Error(`CI=true and ${NATS_MISSING}`);
  console.warn(`skipping the NATS cluster tests: ${NATS_MISSING}`);
  return false;
}

export interface NatsNode {
  /** server_name, "n1".."nN". */
  readonly name: string;
  /** mqtt://127.0.0.1:<mqtt port> */
  readonly url: string;
  readonly mqttPort: number;
  readonly running: boolean;
  /** The last lines nats-server wrote (its log, on stderr). */
  log(): string;
  /** Kills the process (SIGKILL by default: a crash, nothing flushed) and waits for its exit. */
  kill(signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** Starts it again with the same config and store; resolves once it is healthy. */
  start(): Promise<void>;
}

export interface NatsClusterOptions {
  /** Default 3: the smallest cluster whose R3 streams survive the loss of one node. */
  nodes?: number;
  /**
   * The MQTT `max_ack_pending` of every QoS 1 subscription (nats-server default 1024). Each
   * QoS 1 subscription is a JetStream consumer and one session's consumers may hold at most
   * 65,535 in total, so the default allows 63 QoS 1 subscriptions per client (docs/scaling.md).
   */
  maxAckPending?: number;
  /** How long start-up and each restart may take to become healthy; default 20000 ms. */
  readyTimeoutMs?: number;
}

/** Who leads what: the JetStream meta group and each stream's and consumer's raft group. */
export interface NatsLeaders {
  meta: string | undefined;
  /** "<stream>" or "<stream> > <consumer>" -> server_name of its leader. */
  groups: Record<string, string>;
}

export interface NatsCluster {
  readonly nodes: readonly NatsNode[];
  /**
   * Leaders as a running node's /jsz reports them. A node killed while it leads a group stalls
   * that group for nats-server 2.9's raft election timeout (4 to 9 s, fixed in raft.go), so the
   * tests note what the node they kill led.
   */
  leaders(): Promise<NatsLeaders>;
  /** Resolves once every running node's /healthz says its JetStream is current. */
  healthy(timeoutMs?: number): Promise<void>;
  /** Stops every node and removes the temporary directory. Idempotent. */
  close(): Promise<void>;
}

interface NodePorts {
  client: number;
  cluster: number;
  mqtt: number;
  http: number;
}

function nodeConfig(
  name: string,
  dir: string,
  own: NodePorts,
  peers: NodePorts[],
  o: { replicas: number; maxAckPending?: number },
): string {
  return [
    `server_name: ${name}`,
    `listen: 127.0.0.1:${own.client}`,
    `http: 127.0.0.1:${own.http}`,
    // nats-server requires JetStream for MQTT: sessions, retained messages and QoS 1 messages
    // are streams. Small limits: a test stores a few KB.
    "jetstream {",
    `  store_dir: "${join(dir, "jetstream")}"`,
    "  max_memory_store: 64MB",
    "  max_file_store: 256MB",
    "}",
    ...(peers.length > 0
      ? [
          "cluster {",
          "  name: esp-ota-test",
          `  listen: 127.0.0.1:${own.cluster}`,
          `  routes: [${peers.map((p) => `nats-route://127.0.0.1:${p.cluster}`).join(", ")}]`,
          "}",
        ]
      : []),
    "mqtt {",
    `  listen: 127.0.0.1:${own.mqtt}`,
    // Explicit: nats-server derives the replicas from the number of routes (2 here, each node
    // lists its peers only), and R2 streams lose quorum when one node is down.
    `  stream_replicas: ${o.replicas}`,
    ...(o.maxAckPending !== undefined ? [`  max_ack_pending: ${o.maxAckPending}`] : []),
    "}",
    "",
  ].join("\n");
}

/** Starts a cluster of `nodes` nats-server processes and waits until all are healthy. */
export async function startNatsCluster(o: NatsClusterOptions = {}): Promise<NatsCluster> {
  const bin = natsServerPath();
  if (bin === undefined) throw new Error(NATS_MISSING);
  const n = o.nodes ?? 3;
  if (!Number.isInteger(n) || n < 1 || n > 5)
    throw new RangeError(`startNatsCluster: nodes must be 1..5, not ${n}`);
  const readyMs = o.readyTimeoutMs ?? 20_000;
  const root = mkdtempSync(join(tmpdir(), "esp-ota-nats-"));
  const ports: NodePorts[] = [];
  for (let i = 0; i < n; i++)
    ports.push({
      client: await freePort(),
      cluster: await freePort(),
      mqtt: await freePort(),
      http: await freePort(),
    });

  const children = new Set<ChildProcess>();
  // A test runner that dies mid-test must not leave servers behind.
  const killOnExit = () => {
    for (const c of children) c.kill("SIGKILL");
  };
  process.on("exit", killOnExit);

  const nodes = ports.map((own, i) => {
    const name = `n${i + 1}`;
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, "nats.conf");
    writeFileSync(
      conf,
      nodeConfig(
        name,
        dir,
        own,
        ports.filter((_, j) => j !== i),
        {
          replicas: Math.min(n, 3),
          ...(o.maxAckPending !== undefined ? { maxAckPending: o.maxAckPending } : {}),
        },
      ),
    );
    let child: ChildProcess | undefined;
    let exited: Promise<void> = Promise.resolve();
    let log = "";
    const node = {
      name,
      url: `mqtt://127.0.0.1:${own.mqtt}`,
      mqttPort: own.mqtt,
      httpPort: own.http,
      get running() {
        return child !== undefined;
      },
      log: () => log,
      spawn() {
        const proc = spawn(bin, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
        child = proc;
        children.add(proc);
        proc.stderr?.setEncoding("utf8").on("data", (s: string) => {
          log = (log + s).slice(-16_384);
        });
        exited = new Promise<void>((resolve) =>
          proc.once("exit", () => {
            children.delete(proc);
            if (child === proc) child = undefined;
            resolve();
          }),
        );
      },
      async kill(signal: "SIGKILL" | "SIGTERM" = "SIGKILL") {
        const proc = child;
        if (!proc) return;
        proc.kill(signal);
        // SIGTERM lets nats-server shut down JetStream cleanly; a hang is a bug to surface.
        const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      },
      async start() {
        if (child) return;
        node.spawn();
        // Only the server and its meta group: nats-server 2.9's full /healthz stays 503 after
        // a restart ("consumer $MQTT_rmsgs_<hash> is not current") until an MQTT client
        // connects to this node and it recreates its retained-message consumer.
        await waitHealthy([node], readyMs, "?js-server-only=true");
      },
    };
    return node;
  });

  const cluster: NatsCluster = {
    nodes,
    healthy: (timeoutMs = readyMs) =>
      waitHealthy(
        nodes.filter((x) => x.running),
        timeoutMs,
      ),
    async leaders() {
      const live = nodes.find((x) => x.running);
      if (!live) throw new Error("no nats-server is running");
      const res = await fetch(
        `http://127.0.0.1:${live.httpPort}/jsz?accounts=true&streams=true&consumers=true`,
        { signal: AbortSignal.timeout(2000) },
      );
      return leadersOf((await res.json()) as Jsz);
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(nodes.map((x) => x.kill("SIGKILL")));
      process.off("exit", killOnExit);
      rmSync(root, { recursive: true, force: true });
    },
  };
  let closed = false;
  try {
    for (const x of nodes) x.spawn();
    await waitHealthy(nodes, readyMs);
  } catch (e) {
    await cluster.close();
    throw e;
  }
  return cluster;
}

interface Jsz {
  meta_cluster?: { leader?: string };
  account_details?: {
    stream_detail?: {
      name: string;
      cluster?: { leader?: string };
      consumer_detail?: { name: string; cluster?: { leader?: string } }[];
    }[];
  }[];
}

function leadersOf(j: Jsz): NatsLeaders {
  const groups: Record<string, string> = {};
  for (const a of j.account_details ?? [])
    for (const st of a.stream_detail ?? []) {
      if (st.cluster?.leader) groups[st.name] = st.cluster.leader;
      for (const c of st.consumer_detail ?? [])
        if (c.cluster?.leader) groups[`${st.name} > ${c.name}`] = c.cluster.leader;
    }
  return { meta: j.meta_cluster?.leader, groups };
}

/**
 * Polls each node's /healthz every 50 ms until it answers 200: in nats-server 2.9 that means
 * the server is up and, with JetStream clustered, its meta group has a leader and this node is
 * current with it (an MQTT client connecting earlier is refused while the streams are made).
 */
async function waitHealthy(
  nodes: { name: string; httpPort: number; running: boolean; log(): string }[],
  timeoutMs: number,
  query = "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const node of nodes) {
    let last = "no answer";
    for (;;) {
      if (!node.running) throw new Error(`nats-server ${node.name} exited:\n${node.log()}`);
      try {
        const res = await fetch(`http://127.0.0.1:${node.httpPort}/healthz${query}`, {
          signal: AbortSignal.timeout(1000),
        });
        last = `${res.status} ${(await res.text()).slice(0, 200)}`;
        if (res.status === 200) break;
      } catch (e) {
        last = (e as Error).message;
      }
      if (Date.now() > deadline)
        throw new Error(
          `nats-server ${node.name} not healthy within ${timeoutMs} ms (${last}):\n${node.log()}`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
