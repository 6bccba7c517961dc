/**
 * `npm run bench:fleet` (issue 7): one rollout to a fleet of simulated secure ESP32s behind many
 * gateways, on the embedded broker and on Mosquitto, each broker in its own process.
 *
 *   - The fleet: FLEET_DEVICES (default 1000) esp32s made by createFleet (secure boot V1, flash
 *     encryption, one registry), apps of FLEET_APP_SIZE bytes (default 16 KB: the bench is
 *     about the control plane, not the wire). One release, built once, served over loopback HTTP
 *     by createStaticServer from this process.
 *   - The gateways: FLEET_GATEWAYS (default 50) Agent instances (agent/agent.ts), each with its
 *     own config (parseAgentConfig), gateway id, state directory and MQTT connection, spread over
 *     FLEET_HOSTS (default 4) child processes run with tsx; their state directories on tmpfs
 *     (see FleetRunOptions.stateRoot for why). Devices go to gateways round-robin. Each device is
 *     an in-memory link (src/sim/fleet-memory.ts, as `esp-ota demo` without socat): a
 *     memoryPair cable behind a PacedLink (src/sim/paced-link.ts, as every real-time device),
 *     a FirmwareEndpoint (the C firmware on the simulated chip, its UART receive path and flash timing) on the
 *     device end, DeviceLink.over on the host end, handed to the agent through
 *     AgentOptions.ports (agent/memory-ports.ts). The link is paced at 2,000,000 baud (the
 *     highest rate the device side accepts; the agent negotiates it from the 115200 console rate
 *     as on a real board), 1 ms of adapter latency each way and 1 ms slices, so a device costs
 *     what it would on a real wire, only faster. The devices' boot (300 ms) and self-test (500 ms) run in real time too.
 *     The simulated chips live in the gateway processes, so "agents' CPU" includes them.
 *     Per gateway the config is the default one but for transferBaud and `log.level: warn`.
 *   - The rollout: runRollout (src/rollout/runner.ts) in this process, waves FLEET_WAVES
 *     (default 1,10,50,100), abort above 5 %.
 *
 * Measured over the rollout (from its start to its end): wall time, devices succeeded, MQTT
 * messages, the broker's and the gateway processes' CPU seconds (utime + stime from
 * /proc/<pid>/stat), the gateway processes' peak RSS (VmHWM, summed) and their worst
 * event-loop delay (a stalled loop is what breaks UART timing first).
 *
 * Messages are counted by an observer subscribed to `<prefix>/#`: one count per PUBLISH the
 * broker accepted under the prefix — every status, progress, log, inventory and presence message
 * of the gateways, and the rollout's own notices and state documents — not per delivery (the
 * broker's outbound traffic is that times the subscribers of each topic). The observer's own
 * subscription makes the broker deliver everything once more; that is part of the broker CPU.
 *
 * With CONSOLE=1 (issue 16), the operator console watches the rollout as an operator would:
 * `node dist/agent/main.js console --broker <url> --listen 127.0.0.1:0 --token-env ...` in its own
 * process, started after the devices attached and before the rollout, with one live event stream
 * (`GET /api/events`, the page's stream, authenticated by the token as `Authorization: Bearer`)
 * read to the end by this process. Its peak RSS (VmHWM) and CPU over the rollout are reported
 * (`console: rss = N MB, cpu = X s (Y% of a core)`), and its last snapshot must show the rollout
 * as the runner ended it. Off by default: see docs/benchmarks.md "Fleet" for what it costs the
 * fleet's figures on two cores.
 *
 * Env: FLEET_DEVICES, FLEET_GATEWAYS, FLEET_HOSTS, FLEET_APP_SIZE, FLEET_WAVES,
 * FLEET_BROKERS (comma list of aedes, mosquitto; default both), FLEET_BAUD, FLEET_STATE_DIR (the
 * gateways' state on that disk instead of tmpfs), FLEET_LOG_LEVEL (the agents'; default warn),
 * CONSOLE (1: attach the console).
 * Last line: `fleet-bench: devices = N, completed = N, msgs per device = X` (the last broker run).
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import mqtt from "mqtt";
import type { Logger } from "pino";
import { Agent } from "../../agent/agent.js";
import { parseAgentConfig } from "../../agent/config.js";
import { createLogger, type LogLevel } from "../../agent/log.js";
import { memoryPorts } from "../../agent/memory-ports.js";
import { startBroker } from "../../broker/broker.js";
import { connectMqtt } from "../../src/mqtt/client.js";
import { parseTopic, type TopicKind, topics } from "../../src/mqtt/topics.js";
import { buildRelease } from "../../src/release/build.js";
import type { ReleaseIndex } from "../../src/release/build-plan.js";
import { loadKeyring } from "../../src/release/keyring-fs.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import { createStaticServer } from "../../src/release/serve.js";
import { createRollout } from "../../src/rollout/machine.js";
import type { RolloutState } from "../../src/rollout/messages.js";
import { runRollout } from "../../src/rollout/runner.js";
import { createFleet, type Fleet, fleetApp, loadFleet } from "../../src/sim/fleet.js";
import { type MemoryFleet, serveFleetInMemory } from "../../src/sim/fleet-memory.js";
import { freePort, mosquittoPath } from "../helpers/mosquitto.js";

const SELF = fileURLToPath(import.meta.url);
const ROOT = new URL("../..", import.meta.url).pathname;
const TICK_HZ = 100; // Linux USER_HZ: /proc/<pid>/stat times are in these ticks.

/**
 * 2 Mbaud: the highest rate the device side of the protocol accepts (supported_baud in
 * src/firmware/uota_core.c; a CP2102N or FT232H carries it). The agent's config also accepts 2.5 and
 * 3 Mbaud (termios names them), but the device refuses BAUD above 2 Mbaud and the session then
 * falls back to the 115200 console rate: a 16 KB transfer took 1.4 s instead of 0.1 s.
 */
export const FLEET_BAUD = 2_000_000;

// ---- the gateways' side: agents over in-memory links ------------------------------------------

export interface GatewayHostSpec {
  fleetDir: string;
  brokerUrl: string;
  /** Each gateway's state directory is stateRoot/<id>. */
  stateRoot: string;
  gateways: { id: string; deviceIds: string[] }[];
  baud: number;
  logLevel: LogLevel;
}

/** Event-loop delay of a gateway process (perf_hooks.monitorEventLoopDelay), in ms. */
export interface LoopDelay {
  p99Ms: number;
  maxMs: number;
}

/** A set of gateways in one process: this one (the test) or a child (the bench). */
export interface GatewayHost {
  /** The child's pid; undefined in this process. */
  readonly pid?: number;
  /** Devices identified and attached, over all its agents. */
  attached(): Promise<number>;
  /** Restarts the event-loop delay histogram (at the rollout's start). */
  markDelay(): Promise<void>;
  delay(): Promise<LoopDelay>;
  stop(): Promise<void>;
}

/** The gateway's YAML, as an operator writes it; parsed and checked by parseAgentConfig. */
function gatewayYaml(o: {
  id: string;
  brokerUrl: string;
  trustFile: string;
  stateDir: string;
  baud: number;
}): string {
  return `gatewayId: ${o.id}
mqtt:
  url: ${o.brokerUrl}
trust:
  policy: ${o.trustFile}
serial:
  # Not scanned: the devices come through AgentOptions.ports (in-memory links).
  ports:
    - path: /dev/fleet-bench/${o.id}
  transferBaud: ${o.baud}
stateDir: ${o.stateDir}
log:
  level: warn
`;
}

/** Starts one Agent per gateway, each device a FirmwareEndpoint on a real-time in-memory link. */
export async function startGatewayHost(spec: GatewayHostSpec): Promise<GatewayHost> {
  const fleet = loadFleet(spec.fleetDir);
  const byId = new Map(fleet.devices.map((d) => [d.deviceId, d]));
  const log: Logger = createLogger(spec.logLevel, { pretty: false });
  const agents: Agent[] = [];
  const fleets: MemoryFleet[] = [];
  for (const g of spec.gateways) {
    const file = join(spec.stateRoot, g.id, "gateway.yaml");
    mkdirSync(join(spec.stateRoot, g.id), { recursive: true });
    const text = gatewayYaml({
      id: g.id,
      brokerUrl: spec.brokerUrl,
      trustFile: fleet.trustFile,
      stateDir: join(spec.stateRoot, g.id, "state"),
      baud: spec.baud,
    });
    writeFileSync(file, text);
    const { config, problems } = parseAgentConfig(text, file);
    if (!config) throw new Error(`${file}: ${problems.map((p) => p.message).join("; ")}`);
    // The gateway's devices on in-memory links (src/sim/fleet-memory.ts), real time.
    const devices = serveFleetInMemory(
      g.deviceIds.map((id) => {
        const d = byId.get(id);
        if (!d) throw new Error(`device ${id} is not in the fleet at ${spec.fleetDir}`);
        return d;
      }),
      // The bench never reads the chips back from their files.
      { save: false },
    );
    fleets.push(devices);
    const agent = new Agent({
      config,
      log: log.child({ gatewayId: g.id }),
      ports: memoryPorts(devices),
    });
    agents.push(agent);
  }
  await Promise.all(agents.map((a) => a.start()));
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  return {
    attached: async () => agents.reduce((n, a) => n + a.attached().length, 0),
    markDelay: async () => lag.reset(),
    delay: async () => ({ p99Ms: lag.percentile(99) / 1e6, maxMs: lag.max / 1e6 }),
    async stop() {
      lag.disable();
      await Promise.all(agents.map((a) => a.stop()));
      for (const f of fleets) f.close();
    },
  };
}

// ---- one run ------------------------------------------------------------------------------------

export interface BrokerProcess {
  kind: "aedes" | "mosquitto" | "aedes-in-process";
  url: string;
  /** The broker's process, when it has its own. */
  pid?: number;
  close(): Promise<void>;
}

/** The embedded broker as `esp-ota broker --port 0` (dist/), in memory. */
async function aedesProcess(): Promise<BrokerProcess> {
  const child = spawn(
    process.execPath,
    [join(ROOT, "dist/agent/main.js"), "broker", "--port", "0"],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const url = await new Promise<string>((ok, fail) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /^(mqtt:\/\/\S+)$/m.exec(out);
      if (m) ok(m[1]!);
    });
    child.once("exit", (code) => fail(new Error(`esp-ota broker exited (${code}): ${out}`)));
  });
  return { kind: "aedes", url, pid: child.pid!, close: () => stopChild(child) };
}

/**
 * Mosquitto 2.0 with a temporary config: loopback, anonymous, in memory. max_queued_messages is
 * raised from 1000: a rollout's subscriber to 1000 statuses and the observer of `#` can each
 * have more than 1000 QoS 1 messages in flight at a wave's start, and Mosquitto drops beyond
 * its limit (any fleet operator running a rollout client would raise it the same way).
 */
async function mosquittoProcess(dir: string): Promise<BrokerProcess> {
  const bin = mosquittoPath();
  if (!bin) throw new Error("mosquitto is not installed (apt-get install -y mosquitto)");
  const port = await freePort();
  const conf = join(dir, "mosquitto.conf");
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      "allow_anonymous true",
      "persistence false",
      "max_queued_messages 100000",
      "log_dest stderr",
      "log_type error",
      ...(process.getuid?.() === 0 ? [`user ${process.env.USER ?? "root"}`] : []),
      "",
    ].join("\n"),
  );
  const child = spawn(bin, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  const url = `mqtt://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 500 });
      await c.endAsync();
      break;
    } catch (e) {
      if (i > 100 || child.exitCode !== null) throw new Error(`mosquitto did not start: ${e}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { kind: "mosquitto", url, pid: child.pid!, close: () => stopChild(child) };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((ok) => {
    child.once("exit", () => ok());
    child.kill("SIGTERM");
  });
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of stat(5); index 11 and 12 after "(comm) ".
  return (Number(fields[11]) + Number(fields[12])) / TICK_HZ;
}

function peakRssMb(pid: number): number {
  const s = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/^VmHWM:\s+(\d+)/m.exec(s)?.[1] ?? 0) / 1024;
}

// ---- the console watching the rollout (CONSOLE=1) -------------------------------------------------

/** What the console's process cost over the rollout, and what its stream carried. */
export interface ConsoleCost {
  /** VmHWM at the rollout's end: the process's peak, which it reached while showing the rollout. */
  peakRssMb: number;
  /** CPU seconds (utime + stime) from the rollout's start to its end. */
  cpuS: number;
  /** Snapshots and bytes received on the event stream over the same window. */
  snapshots: number;
  streamBytes: number;
  /** The shortest time between two snapshots over the window (the server's DEFAULT_PUSH_MS is 500). */
  minGapMs: number;
  /** The rollout as the console's last snapshot showed it. */
  seen?: { state: string; succeeded: number; devices: number };
}

interface ConsoleProcess {
  pid: number;
  url: string;
  /** Snapshots and bytes so far (from the stream's start). */
  counts(): { snapshots: number; bytes: number };
  /** Restarts the shortest gap between snapshots, and reads it. */
  resetGap(): void;
  minGapMs(): number;
  /** The newest whole snapshot received. */
  last(): unknown;
  /** Resolves with the first snapshot that `ok` accepts (or rejects after `ms`). */
  until(ok: (snap: unknown) => boolean, ms: number): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * `esp-ota console` from dist/ in its own process, token-authenticated, and one event stream
 * to it read by this process as the page reads it (every snapshot parsed, as EventSource and
 * JSON.parse do in the browser; the parsing is this process's CPU, not the console's).
 */
async function startConsole(brokerUrl: string): Promise<ConsoleProcess> {
  const token = randomBytes(24).toString("hex");
  const child = spawn(
    process.execPath,
    [
      join(ROOT, "dist/agent/main.js"),
      "console",
      "--broker",
      brokerUrl,
      "--listen",
      "127.0.0.1:0",
      "--token-env",
      "FLEET_CONSOLE_TOKEN",
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FLEET_CONSOLE_TOKEN: token } },
  );
  let err = "";
  child.stderr!.on("data", (c: Buffer) => {
    err = (err + c.toString()).slice(-4000);
  });
  const url = await new Promise<string>((ok, fail) => {
    let out = "";
    const timer = setTimeout(
      () => fail(new Error(`esp-ota console: no URL in 30 s: ${err}`)),
      30_000,
    );
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /^(http:\/\/\S+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`esp-ota console exited (${code}): ${err}`));
    });
  });
  const abort = new AbortController();
  const res = await fetch(`${url}/api/events`, {
    headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
    signal: abort.signal,
  });
  if (res.status !== 200 || !res.body) throw new Error(`console /api/events: ${res.status}`);
  let snapshots = 0;
  let bytes = 0;
  let last: unknown;
  let lastAt = 0;
  let minGap = Number.POSITIVE_INFINITY;
  let waiter: { ok: (s: unknown) => boolean; done: (s: unknown) => void } | undefined;
  const reading = (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        bytes += chunk.byteLength;
        buf += decoder.decode(chunk, { stream: true });
        // Server-sent events end at a blank line (the server writes "\n\n"; keepalives are comments).
        for (let end = buf.indexOf("\n\n"); end >= 0; end = buf.indexOf("\n\n")) {
          const event = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (!event.startsWith("event: snapshot") && !event.includes("\nevent: snapshot"))
            continue;
          const data = event
            .split("\n")
            .filter((l) => l.startsWith("data: "))
            .map((l) => l.slice(6))
            .join("\n");
          last = JSON.parse(data);
          snapshots++;
          const now = performance.now();
          if (lastAt > 0) minGap = Math.min(minGap, now - lastAt);
          lastAt = now;
          if (waiter?.ok(last)) waiter.done(last);
        }
      }
    } catch (e) {
      if (!abort.signal.aborted) throw e;
    }
  })();
  reading.catch(() => {});
  return {
    pid: child.pid!,
    url,
    counts: () => ({ snapshots, bytes }),
    resetGap: () => {
      minGap = Number.POSITIVE_INFINITY;
    },
    minGapMs: () => minGap,
    last: () => last,
    until: (ok, ms) =>
      last !== undefined && ok(last)
        ? Promise.resolve(last)
        : new Promise((done, fail) => {
            const timer = setTimeout(() => {
              waiter = undefined;
              fail(new Error(`the console's stream did not show it in ${ms} ms`));
            }, ms);
            waiter = {
              ok,
              done: (s) => {
                clearTimeout(timer);
                waiter = undefined;
                done(s);
              },
            };
          }),
    async close() {
      abort.abort();
      await reading.catch(() => undefined);
      await stopChild(child);
    },
  };
}

interface SnapshotRollout {
  rolloutId: string;
  state: string;
  devices: number;
  counts: Record<string, number>;
}
const snapRollout = (snap: unknown, id: string): SnapshotRollout | undefined =>
  (snap as { rollouts?: SnapshotRollout[] } | undefined)?.rollouts?.find((r) => r.rolloutId === id);

/** A gateway host in a child process (this file with `host`), driven over IPC. */
async function forkHost(spec: GatewayHostSpec): Promise<GatewayHost> {
  const child = fork(SELF, ["host"], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  let waiting: ((m: HostMessage) => void) | undefined;
  child.on("message", (m: HostMessage) => waiting?.(m));
  // One request at a time (the parent awaits each).
  const ask = (req: HostRequest) =>
    new Promise<HostMessage>((ok, fail) => {
      const onExit = (code: number | null) => fail(new Error(`gateway host exited (${code})`));
      child.once("exit", onExit);
      waiting = (m) => {
        child.off("exit", onExit);
        waiting = undefined;
        if (m.type === "error") fail(new Error(m.message));
        else ok(m);
      };
      child.send(req);
    });
  await ask({ type: "start", spec });
  return {
    pid: child.pid!,
    attached: async () => {
      const m = await ask({ type: "attached" });
      return m.type === "attached" ? m.attached : 0;
    },
    markDelay: async () => {
      await ask({ type: "mark" });
    },
    delay: async () => {
      const m = await ask({ type: "delay" });
      return m.type === "delay" ? m.delay : { p99Ms: 0, maxMs: 0 };
    },
    stop: async () => {
      const exited = new Promise<void>((ok) => {
        if (child.exitCode !== null) ok();
        else child.once("exit", () => ok());
      });
      await ask({ type: "stop" });
      await exited;
    },
  };
}

type HostRequest =
  | { type: "start"; spec: GatewayHostSpec }
  | { type: "attached" }
  | { type: "mark" }
  | { type: "delay" }
  | { type: "stop" };
type HostMessage =
  | { type: "ok" }
  | { type: "attached"; attached: number }
  | { type: "delay"; delay: LoopDelay }
  | { type: "error"; message: string };

/** The child's side: one GatewayHost, commanded by the parent. */
function serveHost(): void {
  let host: GatewayHost | undefined;
  const send = (m: HostMessage) => process.send?.(m);
  process.on("message", (req: HostRequest) => {
    void (async () => {
      try {
        switch (req.type) {
          case "start":
            host = await startGatewayHost(req.spec);
            send({ type: "ok" });
            break;
          case "attached":
            send({ type: "attached", attached: (await host?.attached()) ?? 0 });
            break;
          case "mark":
            await host?.markDelay();
            send({ type: "ok" });
            break;
          case "delay":
            send({ type: "delay", delay: (await host?.delay()) ?? { p99Ms: 0, maxMs: 0 } });
            break;
          case "stop":
            await host?.stop();
            send({ type: "ok" });
            process.disconnect();
            break;
        }
      } catch (e) {
        send({ type: "error", message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      }
    })();
  });
}

export interface FleetSetup {
  fleet: Fleet;
  index: ReleaseIndex;
  /** The image server's base URL for the release. */
  baseUrl: string;
  imageBytes: number;
  close(): Promise<void>;
}

/** The fleet and its one release, served over loopback HTTP (once for every broker run). */
export async function setupFleet(o: {
  dir: string;
  devices: number;
  appSize: number;
  log?: (l: string) => void;
}): Promise<FleetSetup> {
  const t0 = Date.now();
  const fleet = createFleet({
    dir: join(o.dir, "fleet"),
    devices: Array.from({ length: o.devices }, () => ({ chip: "esp32" as const })),
    appSize: o.appSize,
  });
  o.log?.(`fleet of ${o.devices} made in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  // The server's root is the directory above the release (it must exist before the build).
  const releaseDir = join(o.dir, "www", "2.0.0");
  mkdirSync(join(o.dir, "www"), { recursive: true });
  const server = createStaticServer(join(o.dir, "www"));
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/2.0.0/`;
  const t1 = Date.now();
  await buildRelease({
    keyring: loadKeyring(fleet.keysDir),
    registry: openRegistry(fleet.registryDir),
    app: fleetApp("esp32", "2.0.0", { size: o.appSize }),
    version: "2.0.0",
    devices: "all",
    baseUrl,
    outDir: releaseDir,
    expiresInMs: 86_400_000,
  });
  const index = JSON.parse(readFileSync(join(releaseDir, "index.json"), "utf8")) as ReleaseIndex;
  o.log?.(`release built in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
  return {
    fleet,
    index,
    baseUrl,
    imageBytes: index.devices[0]!.variants[0]!.size,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

export interface FleetRunOptions {
  setup: FleetSetup;
  /** Working directory of this run (the gateways' configs). */
  dir: string;
  /**
   * Where the gateways' state directories go. Default: a new directory on tmpfs (/dev/shm) when
   * there is one, else under `dir`. Why: every status the agent publishes is first saved to the
   * device's ledger with two synchronous fsyncs (agent/store.ts), on the event loop that also
   * runs the UART sessions. A real gateway pays that for its own ~20 devices on its own disk;
   * here 25 gateways share an event loop and 50 share one disk, so on the disk the loop stalled
   * up to 2.8 s (400 devices, one process: 94 s instead of 15 s, and 2 devices lost to
   * E_UART_NO_DEVICE, see docs/benchmarks.md "Fleet"). FLEET_STATE_DIR overrides it.
   */
  stateRoot?: string;
  broker: BrokerProcess;
  gateways: number;
  /** Child processes for the gateways; 0 runs them in this process (the test). */
  hosts: number;
  waves: number[];
  /** Abort above this failure rate, percent; default 5 (the CLI's default). */
  maxFailureRate?: number;
  baud?: number;
  /** The agents' log level (default warn; "silent" in tests). */
  logLevel?: LogLevel;
  /** Give up after this long (default 10 min). */
  timeoutMs?: number;
  /** Attach `esp-ota console` (dist/ must be built) and measure it; default off. */
  console?: boolean;
  log?: (l: string) => void;
}

/** The topic kinds whose id level is a device. */
const DEVICE_KINDS: ReadonlySet<TopicKind> = new Set(["status", "progress", "log", "desired"]);

export interface DeviceTraffic {
  kinds: Partial<Record<TopicKind, number>>;
  /** When the device's first message of the rollout arrived (its notice), and its last status. */
  firstStatusAt: number;
  lastStatusAt: number;
}

export interface FleetRunResult {
  broker: BrokerProcess["kind"];
  devices: number;
  gateways: number;
  completed: number;
  state: RolloutState["state"];
  wallS: number;
  /** Messages under the prefix while the rollout ran, by topic kind. */
  byKind: Partial<Record<TopicKind, number>>;
  messages: number;
  msgsPerDevice: number;
  /** Messages before the rollout: gateways coming up and their devices attaching. */
  attachMessages: number;
  /** Each device's messages (status, progress, log, desired) while the rollout ran. */
  perDevice: Map<string, DeviceTraffic>;
  /** Devices not succeeded, by final state and error code ("pending" ones are not listed). */
  failures: Record<string, number>;
  /** The worst gateway process's event-loop delay during the rollout. */
  loopDelay: LoopDelay;
  /** Statuses per device while the rollout ran (max and mean). */
  statusesPerDevice: { max: number; mean: number };
  brokerCpuS?: number;
  agentsCpuS?: number;
  agentsPeakRssMb?: number;
  /** With FleetRunOptions.console. */
  console?: ConsoleCost;
}

/** One rollout on one broker, with fresh gateway state. */
export async function runFleet(o: FleetRunOptions): Promise<FleetRunResult> {
  const { setup, broker } = o;
  const ids = setup.index.devices.map((d) => d.deviceId);
  const n = ids.length;
  const prefix = "esp-ota/v1";
  const t = topics(prefix);

  // The observer first, so it counts everything from the first gateway's connect.
  const byKind: Partial<Record<TopicKind, number>> = {};
  const attachKinds: Partial<Record<TopicKind, number>> = {};
  const perDevice = new Map<string, DeviceTraffic>();
  let counting: "attach" | "rollout" | "off" = "attach";
  const observer = await mqtt.connectAsync(broker.url, {
    protocolVersion: 4,
    clientId: `fleet-observer-${process.pid}`,
  });
  observer.on("message", (topic) => {
    const ref = parseTopic(prefix, topic);
    if (!ref || counting === "off") return;
    const into = counting === "attach" ? attachKinds : byKind;
    into[ref.kind] = (into[ref.kind] ?? 0) + 1;
    if (counting !== "rollout" || !DEVICE_KINDS.has(ref.kind)) return;
    const now = Date.now();
    let d = perDevice.get(ref.id);
    if (!d) {
      d = { kinds: {}, firstStatusAt: now, lastStatusAt: now };
      perDevice.set(ref.id, d);
    }
    d.kinds[ref.kind] = (d.kinds[ref.kind] ?? 0) + 1;
    if (ref.kind === "status") d.lastStatusAt = now;
  });
  await observer.subscribeAsync(`${prefix}/#`, { qos: 1 });

  // Gateways: round-robin, so every wave spreads over as many gateways as it can.
  const gws = Array.from({ length: o.gateways }, (_, g) => ({
    id: `gw-${String(g).padStart(3, "0")}`,
    deviceIds: ids.filter((_, i) => i % o.gateways === g),
  }));
  const madeState =
    o.stateRoot === undefined && existsSync("/dev/shm")
      ? mkdtempSync(join("/dev/shm", "fleet-bench-state-"))
      : undefined;
  const stateRoot = o.stateRoot ?? madeState ?? join(o.dir, "gateways");
  const spec = (part: typeof gws): GatewayHostSpec => ({
    fleetDir: setup.fleet.dir,
    brokerUrl: broker.url,
    stateRoot,
    gateways: part,
    baud: o.baud ?? FLEET_BAUD,
    logLevel: o.logLevel ?? (process.env.FLEET_LOG_LEVEL as LogLevel | undefined) ?? "warn",
  });
  const t0 = Date.now();
  let hosts: GatewayHost[];
  if (o.hosts === 0) hosts = [await startGatewayHost(spec(gws))];
  else
    hosts = await Promise.all(
      Array.from({ length: o.hosts }, (_, h) =>
        forkHost(spec(gws.filter((_, g) => g % o.hosts === h))),
      ),
    );
  const operator = await connectMqtt({ url: broker.url, protocolVersion: 4 });
  let consoleProc: ConsoleProcess | undefined;
  try {
    // Every device identified and attached before the clock starts.
    for (;;) {
      const counts = await Promise.all(hosts.map((h) => h.attached()));
      if (counts.reduce((a, b) => a + b, 0) >= n) break;
      if (Date.now() - t0 > 300_000) throw new Error(`only ${counts} devices attached in 300 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // Let the attach-time messages (inventory, idle statuses) land before counting the rollout.
    await new Promise((r) => setTimeout(r, 1000));
    o.log?.(
      `${broker.kind}: ${o.gateways} gateways, ${n} devices attached in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );

    if (o.console) {
      const c0 = Date.now();
      consoleProc = await startConsole(broker.url);
      // Ready when its snapshot shows every gateway's retained state (it subscribes on start).
      await consoleProc.until(
        (s) => ((s as { devices?: unknown[] }).devices?.length ?? 0) >= n,
        60_000,
      );
      o.log?.(
        `${broker.kind}: console at ${consoleProc.url} showing ${n} devices after ${((Date.now() - c0) / 1000).toFixed(1)} s`,
      );
    }

    const pids = hosts.flatMap((h) => (h.pid !== undefined ? [h.pid] : []));
    await Promise.all(hosts.map((h) => h.markDelay()));
    const cpu0 = {
      broker: broker.pid !== undefined ? cpuSeconds(broker.pid) : 0,
      agents: pids.reduce((s, p) => s + cpuSeconds(p), 0),
      console: consoleProc ? cpuSeconds(consoleProc.pid) : 0,
      stream: consoleProc?.counts() ?? { snapshots: 0, bytes: 0 },
    };
    consoleProc?.resetGap();
    counting = "rollout";
    const w0 = Date.now();
    const byDevice = new Map(setup.index.devices.map((d) => [d.deviceId, d.counter]));
    const runner = await runRollout({
      client: operator,
      topics: t,
      state: createRollout(
        {
          rolloutId: "fleet-bench",
          releaseId: setup.index.releaseId,
          version: setup.index.version,
          manifestBaseUrl: setup.baseUrl,
          devices: ids.map((deviceId) => ({ deviceId, counter: byDevice.get(deviceId)! })),
          waves: o.waves,
          maxFailureRate: o.maxFailureRate ?? 5,
          minSample: 1,
          waveTimeoutMs: o.timeoutMs ?? 600_000,
        },
        Date.now(),
      ),
      onEvent: (e) => {
        if (e.kind === "wave-started")
          o.log?.(
            `  wave ${e.wave + 1} started at ${((Date.now() - w0) / 1000).toFixed(1)} s: ${e.devices.length} devices`,
          );
        else if (e.kind === "aborted") o.log?.(`  aborted: ${e.reason.message}`);
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const end = await Promise.race([
      runner.done,
      new Promise<never>((_, fail) => {
        timer = setTimeout(
          () => fail(new Error("the rollout did not end in time")),
          o.timeoutMs ?? 600_000,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    const wallS = (Date.now() - w0) / 1000;
    // The rollout's last state document and the last statuses reach the observer just after.
    await new Promise((r) => setTimeout(r, 500));
    counting = "off";
    const cpu1 = {
      broker: broker.pid !== undefined ? cpuSeconds(broker.pid) : 0,
      agents: pids.reduce((s, p) => s + cpuSeconds(p), 0),
    };
    const rss = pids.reduce((s, p) => s + peakRssMb(p), 0);
    let consoleCost: ConsoleCost | undefined;
    if (consoleProc) {
      const cpuS = cpuSeconds(consoleProc.pid) - cpu0.console;
      const peakRss = peakRssMb(consoleProc.pid);
      const stream = consoleProc.counts();
      // The console pushes at most every 0.5 s: its view of the end follows the runner's.
      const seen = snapRollout(
        await consoleProc
          .until((s) => snapRollout(s, "fleet-bench")?.state === end.state, 10_000)
          .catch(() => consoleProc!.last()),
        "fleet-bench",
      );
      consoleCost = {
        peakRssMb: peakRss,
        cpuS,
        snapshots: stream.snapshots - cpu0.stream.snapshots,
        streamBytes: stream.bytes - cpu0.stream.bytes,
        minGapMs: consoleProc.minGapMs(),
        ...(seen
          ? {
              seen: {
                state: seen.state,
                succeeded: seen.counts.succeeded ?? 0,
                devices: seen.devices,
              },
            }
          : {}),
      };
    }
    const delays = await Promise.all(hosts.map((h) => h.delay()));
    const failures: Record<string, number> = {};
    for (const id of ids) {
      const e = end.perDevice[id];
      if (e?.state && e.state !== "succeeded") {
        const k = `${e.state}${e.errorCode ? ` ${e.errorCode}` : ""}`;
        failures[k] = (failures[k] ?? 0) + 1;
      }
    }
    const completed = ids.filter((id) => end.perDevice[id]?.state === "succeeded").length;
    const messages = Object.values(byKind).reduce((a, b) => a + b, 0);
    const counts = [...perDevice.values()].map((d) => d.kinds.status ?? 0);
    return {
      broker: broker.kind,
      devices: n,
      gateways: o.gateways,
      completed,
      state: end.state,
      wallS,
      byKind,
      messages,
      msgsPerDevice: messages / n,
      attachMessages: Object.values(attachKinds).reduce((a, b) => a + b, 0),
      perDevice,
      failures,
      loopDelay: {
        p99Ms: Math.max(0, ...delays.map((d) => d.p99Ms)),
        maxMs: Math.max(0, ...delays.map((d) => d.maxMs)),
      },
      statusesPerDevice: {
        max: Math.max(0, ...counts),
        mean: counts.reduce((a, b) => a + b, 0) / Math.max(1, counts.length),
      },
      ...(broker.pid !== undefined ? { brokerCpuS: cpu1.broker - cpu0.broker } : {}),
      ...(pids.length > 0 ? { agentsCpuS: cpu1.agents - cpu0.agents, agentsPeakRssMb: rss } : {}),
      ...(consoleCost ? { console: consoleCost } : {}),
    };
  } finally {
    await consoleProc?.close();
    await Promise.all(hosts.map((h) => h.stop()));
    await operator.endAsync(true);
    await observer.endAsync(true);
    if (madeState) rmSync(madeState, { recursive: true, force: true });
  }
}

/** The embedded broker in this process (the test: no build needed, nothing to measure). */
export async function inProcessBroker(): Promise<BrokerProcess> {
  const b = await startBroker({ port: 0 });
  return { kind: "aedes-in-process", url: b.url, close: () => b.close() };
}

// ---- the script ----------------------------------------------------------------------------------

function report(r: FleetRunResult, imageBytes: number, baud: number): string[] {
  const kinds = Object.entries(r.byKind)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${(v / r.devices).toFixed(1)}`)
    .join(", ");
  return [
    `${r.broker}: ${r.state}, ${r.completed}/${r.devices} succeeded in ${r.wallS.toFixed(1)} s (${r.gateways} gateways, ${imageBytes} B images at ${baud} baud)`,
    `  MQTT during the rollout: ${r.messages} messages = ${r.msgsPerDevice.toFixed(1)} per device (${kinds}); statuses per device max ${r.statusesPerDevice.max}, mean ${r.statusesPerDevice.mean.toFixed(1)}`,
    `  before it (gateways up, devices attached): ${r.attachMessages} messages`,
    `  gateway processes' event-loop delay: p99 ${r.loopDelay.p99Ms.toFixed(0)} ms, max ${r.loopDelay.maxMs.toFixed(0)} ms${Object.keys(r.failures).length > 0 ? `; not succeeded: ${JSON.stringify(r.failures)}` : ""}`,
    `  broker CPU ${r.brokerCpuS?.toFixed(2) ?? "-"} s = ${r.brokerCpuS !== undefined ? ((r.brokerCpuS / r.wallS) * 100).toFixed(0) : "-"}% of a core; gateway processes CPU ${r.agentsCpuS?.toFixed(2) ?? "-"} s (with the simulated chips), peak RSS ${r.agentsPeakRssMb?.toFixed(0) ?? "-"} MB together`,
    ...(r.console ? consoleReport(r.console, r.wallS) : []),
  ];
}

function consoleReport(c: ConsoleCost, wallS: number): string[] {
  const seen = c.seen
    ? `its last snapshot: ${c.seen.state}, ${c.seen.succeeded}/${c.seen.devices} succeeded`
    : "no snapshot showed the rollout";
  return [
    `console: rss = ${c.peakRssMb.toFixed(0)} MB, cpu = ${c.cpuS.toFixed(2)} s (${((c.cpuS / wallS) * 100).toFixed(1)}% of a core)`,
    `  its event stream: ${c.snapshots} snapshots (${(c.snapshots / wallS).toFixed(1)} a second, ${c.minGapMs.toFixed(0)} ms apart at the least), ${(c.streamBytes / 2 ** 20).toFixed(1)} MiB (${(c.streamBytes / Math.max(1, c.snapshots) / 1024).toFixed(0)} KiB each); ${seen}`,
  ];
}

async function main(): Promise<void> {
  const devices = Number(process.env.FLEET_DEVICES ?? 1000);
  const gateways = Number(process.env.FLEET_GATEWAYS ?? 50);
  const hosts = Number(process.env.FLEET_HOSTS ?? 4);
  const appSize = Number(process.env.FLEET_APP_SIZE ?? 16384);
  const baud = Number(process.env.FLEET_BAUD ?? FLEET_BAUD);
  const waves = (process.env.FLEET_WAVES ?? "1,10,50,100").split(",").map(Number);
  const brokers = (process.env.FLEET_BROKERS ?? "aedes,mosquitto").split(",").map((s) => s.trim());
  const withConsole = process.env.CONSOLE === "1";
  const dir = mkdtempSync(join(tmpdir(), "bench-fleet-"));
  const log = (l: string) => console.log(l);
  let last: FleetRunResult | undefined;
  try {
    const setup = await setupFleet({ dir, devices, appSize, log });
    try {
      for (const b of brokers) {
        const runDir = join(dir, `run-${b}`);
        mkdirSync(runDir, { recursive: true });
        const broker = b === "mosquitto" ? await mosquittoProcess(runDir) : await aedesProcess();
        try {
          last = await runFleet({
            setup,
            dir: runDir,
            broker,
            gateways,
            hosts,
            waves,
            baud,
            log,
            console: withConsole,
            ...(process.env.FLEET_STATE_DIR
              ? { stateRoot: join(process.env.FLEET_STATE_DIR, b) }
              : {}),
          });
        } finally {
          await broker.close();
        }
        for (const l of report(last, setup.imageBytes, baud)) console.log(l);
      }
    } finally {
      await setup.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (last)
    console.log(
      `fleet-bench: devices = ${last.devices}, completed = ${last.completed}, msgs per device = ${last.msgsPerDevice.toFixed(1)}`,
    );
}

if (process.argv[1] === SELF) {
  if (process.argv[2] === "host") serveHost();
  else
    main().catch((e) => {
      console.error(e);
      process.exitCode = 1;
    });
}
