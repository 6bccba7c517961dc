/**
 * A world for the end-to-end chaos suite (issue 7; docs/chaos.md "Chaos suite"), all real parts
 * (STYLE.md §14): a broker (the embedded aedes one or a real Mosquitto, restartable), the image
 * server on loopback HTTP behind a chaos proxy (src/chaos/proxy.ts) whose toxics the test changes
 * while updates run, several gateways — each its own `esp-ota agent` process with its own config,
 * gateway id and state directory, and its own simulated secure ESP32s on socat pty pairs
 * (serveFleet, optionally with UART faults) — and an operator MQTT client for runRollout.
 *
 * The pattern is test/helpers/gateway.ts's (one gateway), widened to several; the fleet is one
 * (one keyring, one registry, one release for every device), split between the gateways.
 *
 * An observer subscribed to every device's status records them all and runs the test's
 * triggers (`when`): a fault fires at a point of the rollout (a device transferring, a
 * wave starting), not after a guessed delay. Every fault is written to `timeline` with the time,
 * and failure messages carry the timeline and the agents' log tails.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { type ChaosProxy, startChaosProxy } from "../../src/chaos/proxy.js";
import { connectMqtt } from "../../src/mqtt/client.js";
import { type DeviceStatus, isFinalState, parseMessage } from "../../src/mqtt/messages.js";
import { parseTopic, type Topics, topics } from "../../src/mqtt/topics.js";
import type { ReleaseIndex } from "../../src/release/build-plan.js";
import { createStaticServer } from "../../src/release/serve.js";
import type { AppBehaviour } from "../../src/sim/device.js";
import { createFleet, type Fleet } from "../../src/sim/fleet.js";
import { type FaultOptions, type FleetServer, serveFleet } from "../../src/sim/fleet-serve.js";
import { prng } from "../../src/sim/virtual-link.js";
import type { BrokerKind, TestBroker } from "./brokers.js";
import { buildFleetRelease } from "./fleet.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const MAIN = join(ROOT, "agent/main.ts");

export interface GatewaySpec {
  /** gatewayId, also the name of its directory. */
  id: string;
  devices: number;
  /** UART faults on every link of this gateway (serveFleet `faults`). Default none. */
  faults?: FaultOptions;
  /** YAML appended to this gateway's config (top-level keys only, e.g. a `policy:` block). */
  configExtra?: string;
}

export interface ChaosWorldOptions {
  gateways: GatewaySpec[];
  /** Behaviours by device index in the whole fleet (gateways take indexes in order). */
  behaviours?: Record<number, Record<string, AppBehaviour>>;
  /** Synthetic app size; default the fleet's (64 KB). */
  appSize?: number;
  /** HTTP toxics from the start (specs as `esp-ota chaos proxy --toxic` takes them). */
  toxics?: string[];
  /** Random source of the HTTP proxy (toxicity rolls, jitter); default a seeded PRNG. */
  random?: () => number;
}

export interface ChaosGateway {
  readonly id: string;
  readonly deviceIds: string[];
  /** The devices on their ptys (power cuts, unplugs, each SimDevice). */
  readonly server: FleetServer;
  readonly configFile: string;
  /** The agent's output lines (JSON log), the last 3000. */
  readonly log: string[];
  readonly running: boolean;
  /** Spawns `esp-ota agent --config` and waits for "agent started". */
  start(): Promise<void>;
  /** SIGTERM (graceful) or SIGKILL (a crash); resolves with the exit code once it exited. */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<number | null>;
}

export interface Release {
  dir: string;
  index: ReleaseIndex;
  /** The base URL the release was built for: the chaos proxy's, so every fetch crosses it. */
  baseUrl: string;
}

export interface ChaosWorld {
  fleet: Fleet;
  broker: TestBroker;
  /** The chaos proxy in front of the image server. */
  http: ChaosProxy;
  gateways: ChaosGateway[];
  prefix: string;
  t: Topics;
  /** The operator's connection (src/mqtt/client.ts), for runRollout. */
  operator: MqttClient;
  /** Every status seen per device, in arrival order (the observer's copy). */
  statuses: Map<string, DeviceStatus[]>;
  /** Every fault injected and every milestone, with ms since the world started. */
  timeline: string[];
  release(version: string): Promise<Release>;
  gatewayOf(deviceId: string): ChaosGateway;
  /** What the simulated chip runs now: its app's version, or its state kind when not running. */
  runningVersion(deviceId: string): string;
  /** Runs `act` once, on the first status for which `pred` holds (checked on every status). */
  when(pred: (s: DeviceStatus) => boolean, what: string, act: () => unknown): Promise<void>;
  waitFor(
    deviceId: string,
    pred: (s: DeviceStatus) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<DeviceStatus>;
  /** The last final status of `releaseId` for the device, if any. */
  finalOf(deviceId: string, releaseId: string): DeviceStatus | undefined;
  /** The retained desired payloads under the prefix now (a cleared notice is absent). */
  retainedDesired(): Promise<Map<string, Uint8Array>>;
  note(line: string): void;
  /** The timeline and each agent's last log lines, for failure messages. */
  diagnostics(lines?: number): string;
  close(): Promise<void>;
}

function gatewayConfig(o: {
  id: string;
  brokerUrl: string;
  trustFile: string;
  linkDir: string;
  stateDir: string;
  extra?: string;
}): string {
  // Times are shortened so a fault costs seconds, not the production minutes; each value says
  // what it shortens. Nothing else differs from a gateway's config.
  return `gatewayId: ${o.id}
mqtt:
  url: ${o.brokerUrl}
  # The last will goes out 1.5 x this after a SIGKILL (production: 30).
  keepaliveSec: 5
trust:
  policy: ${o.trustFile}
serial:
  ports:
    - glob: ${o.linkDir}/tty-*
  rescanMs: 300
stateDir: ${o.stateDir}
download:
  connectTimeoutMs: 2000
  idleTimeoutMs: 2000
  # A collapsed link is given up on after 1 s instead of 20 s, then retried (E_DOWNLOAD_SLOW).
  minRateWindowMs: 1000
  retries: 10
  backoffBaseMs: 50
  backoffMaxMs: 400
policy:
  confirmTimeoutMs: 15000
log:
  level: info
${o.extra ?? ""}`;
}

export async function makeChaosWorld(kind: BrokerKind, o: ChaosWorldOptions): Promise<ChaosWorld> {
  const t0 = Date.now();
  const timeline: string[] = [];
  const note = (line: string) => timeline.push(`${((Date.now() - t0) / 1000).toFixed(2)}s ${line}`);
  const root = mkdtempSync(join(tmpdir(), "esp-ota-chaos-"));
  const cleanups: (() => Promise<unknown> | unknown)[] = [
    () => rmSync(root, { recursive: true, force: true }),
  ];
  const cleanup = async () => {
    for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => {});
  };
  try {
    const total = o.gateways.reduce((n, g) => n + g.devices, 0);
    const fleet = createFleet({
      dir: join(root, "fleet"),
      devices: Array.from({ length: total }, (_, i) => ({
        chip: "esp32" as const,
        ...(o.behaviours?.[i] ? { behaviours: o.behaviours[i] } : {}),
      })),
      ...(o.appSize !== undefined ? { appSize: o.appSize } : {}),
    });
    const releasesDir = join(root, "releases");
    mkdirSync(releasesDir, { recursive: true });

    const broker = await kind.start({ dataDir: join(root, "broker") });
    cleanups.push(() => broker.close());

    const server = createStaticServer(releasesDir);
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    cleanups.push(
      () =>
        new Promise<void>((ok) => {
          server.closeAllConnections();
          server.close(() => ok());
        }),
    );
    const http = await startChaosProxy({
      listen: { host: "127.0.0.1", port: 0 },
      upstream: { host: "127.0.0.1", port: (server.address() as AddressInfo).port },
      toxics: o.toxics ?? [],
      // Seeded: the toxicity rolls and jitter are the same every run.
      random: o.random ?? prng(7),
    });
    cleanups.push(() => http.close());
    const httpBase = `http://127.0.0.1:${http.address.port}/`;

    const prefix = "esp-ota/v1";
    const t = topics(prefix);
    const statuses = new Map<string, DeviceStatus[]>();
    const triggers = new Set<(s: DeviceStatus) => void>();
    // The observer sees what any operator tool would: everything under the prefix.
    const observer = await mqtt.connectAsync(broker.url, {
      clientId: `chaos-observer-${process.pid}-${Date.now()}`,
      protocolVersion: 4,
      reconnectPeriod: 200,
    });
    cleanups.push(() => observer.endAsync(true));
    observer.on("message", (topic, payload) => {
      const ref = parseTopic(prefix, topic);
      if (ref?.kind !== "status" || payload.length === 0) return;
      const p = parseMessage("status", payload);
      if (!p.ok) return;
      const list = statuses.get(ref.id) ?? [];
      // A retained status redelivered after a reconnect is the same report: keep one copy.
      if (list.some((s) => s.seq === p.value.seq && s.gatewayId === p.value.gatewayId)) return;
      list.push(p.value);
      statuses.set(ref.id, list);
      for (const trig of [...triggers]) trig(p.value);
    });
    await observer.subscribeAsync(t.allStatus, { qos: 1 });

    // The operator: MQTT 3.1.1 (aedes 1.2 refuses 5), reconnecting fast after a broker restart.
    const operator = await connectMqtt({
      url: broker.url,
      clientId: `chaos-operator-${process.pid}-${Date.now()}`,
      protocolVersion: 4,
      reconnectPeriodMs: 200,
    });
    cleanups.push(() => operator.endAsync(true));

    let index = 0;
    const gateways: ChaosGateway[] = [];
    for (const spec of o.gateways) {
      const dir = join(root, spec.id);
      const devices = fleet.devices.slice(index, index + spec.devices);
      index += spec.devices;
      const linkDir = join(dir, "links");
      const fleetServer = await serveFleet(devices, {
        linkDir,
        ...(spec.faults ? { faults: spec.faults } : {}),
      });
      cleanups.push(() => fleetServer.close());
      const configFile = join(dir, "gateway.yaml");
      writeFileSync(
        configFile,
        gatewayConfig({
          id: spec.id,
          brokerUrl: broker.url,
          trustFile: fleet.trustFile,
          linkDir,
          stateDir: join(dir, "state"),
          ...(spec.configExtra ? { extra: spec.configExtra } : {}),
        }),
      );
      const gw = agentProcess(
        spec.id,
        configFile,
        fleetServer,
        devices.map((d) => d.deviceId),
        note,
      );
      cleanups.push(() => gw.stop("SIGKILL"));
      gateways.push(gw);
    }

    const byDevice = new Map<string, ChaosGateway>();
    for (const g of gateways) for (const id of g.deviceIds) byDevice.set(id, g);

    const world: ChaosWorld = {
      fleet,
      broker,
      http,
      gateways,
      prefix,
      t,
      operator,
      statuses,
      timeline,
      note,
      async release(version) {
        const dir = join(releasesDir, version);
        const baseUrl = `${httpBase}${version}/`;
        await buildFleetRelease(fleet, version, {
          baseUrl,
          outDir: dir,
          ...(o.appSize !== undefined ? { appSize: o.appSize } : {}),
        });
        const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as ReleaseIndex;
        return { dir, index, baseUrl };
      },
      gatewayOf(id) {
        const g = byDevice.get(id);
        if (!g) throw new Error(`no gateway serves ${id}`);
        return g;
      },
      runningVersion(id) {
        const d = world.gatewayOf(id).server.devices.find((x) => x.deviceId === id)!.device;
        const s = d.state;
        return s.kind === "running" ? (s.app?.version ?? "no-descriptor") : s.kind;
      },
      when(pred, what, act) {
        return new Promise<void>((done, fail) => {
          let fired = false;
          const trig = (s: DeviceStatus) => {
            if (fired || !pred(s)) return;
            fired = true;
            triggers.delete(trig);
            note(`${what} (on ${s.deviceId} ${s.state})`);
            Promise.resolve()
              .then(act)
              .then(() => done(), fail);
          };
          triggers.add(trig);
          for (const list of statuses.values()) for (const s of list) trig(s);
        });
      },
      waitFor(id, pred, what, timeoutMs = 60_000) {
        return new Promise((ok, fail) => {
          const check = () => {
            const hit = (statuses.get(id) ?? []).findLast(pred);
            if (!hit) return;
            triggers.delete(onStatus);
            clearTimeout(timer);
            ok(hit);
          };
          const onStatus = (s: DeviceStatus) => {
            if (s.deviceId === id) check();
          };
          const timer = setTimeout(() => {
            triggers.delete(onStatus);
            const seen = (statuses.get(id) ?? []).map(
              (s) => `${s.state}${s.error ? `(${s.error.code})` : ""}`,
            );
            fail(
              new Error(
                `timed out waiting for ${id}: ${what}; statuses: ${seen.join(" ")}\n${world.diagnostics()}`,
              ),
            );
          }, timeoutMs);
          triggers.add(onStatus);
          check();
        });
      },
      finalOf(id, releaseId) {
        return (statuses.get(id) ?? []).findLast(
          (s) => s.releaseId === releaseId && isFinalState(s.state),
        );
      },
      async retainedDesired() {
        const got = new Map<string, Uint8Array>();
        const c = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0 });
        try {
          c.on("message", (topic, payload, packet) => {
            const ref = parseTopic(prefix, topic);
            if (packet.retain && ref?.kind === "desired" && payload.length > 0)
              got.set(ref.id, new Uint8Array(payload));
          });
          await c.subscribeAsync(t.allDesired, { qos: 1 });
          // Retained messages come right after the SUBACK; a quiet 300 ms means all are in.
          await new Promise((r) => setTimeout(r, 300));
        } finally {
          await c.endAsync(true);
        }
        return got;
      },
      diagnostics(lines = 25) {
        return [
          "timeline:",
          ...timeline,
          ...gateways.flatMap((g) => [`${g.id} log tail:`, ...g.log.slice(-lines)]),
        ].join("\n");
      },
      close: cleanup,
    };
    note("world ready");
    return world;
  } catch (e) {
    await cleanup();
    throw e;
  }
}

function agentProcess(
  id: string,
  configFile: string,
  server: FleetServer,
  deviceIds: string[],
  note: (l: string) => void,
): ChaosGateway {
  let child: ChildProcess | undefined;
  let exited: Promise<number | null> | undefined;
  const log: string[] = [];
  const gw: ChaosGateway = {
    id,
    deviceIds,
    server,
    configFile,
    log,
    get running() {
      return child !== undefined;
    },
    async start() {
      if (child) return;
      const proc = spawn(
        process.execPath,
        ["--import", "tsx", MAIN, "agent", "--config", configFile],
        {
          cwd: ROOT,
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      child = proc;
      let partial = "";
      const onData = (c: Buffer) => {
        const lines = (partial + c.toString()).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) if (line) log.push(line);
        if (log.length > 3000) log.splice(0, log.length - 3000);
      };
      proc.stdout!.on("data", onData);
      proc.stderr!.on("data", onData);
      exited = new Promise((ok) => proc.once("exit", (code) => ok(code)));
      const from = log.length;
      await new Promise<void>((ok, fail) => {
        const timer = setTimeout(
          () => fail(new Error(`${id}: agent did not start:\n${log.slice(from).join("\n")}`)),
          30_000,
        );
        const iv = setInterval(() => {
          if (log.slice(from).some((l) => l.includes('"agent started"'))) {
            clearInterval(iv);
            clearTimeout(timer);
            ok();
          }
        }, 50);
        void exited!.then((code) => {
          clearInterval(iv);
          clearTimeout(timer);
          fail(
            new Error(
              `${id}: agent exited (${code}) while starting:\n${log.slice(from).join("\n")}`,
            ),
          );
        });
      });
      note(`${id} agent started (pid ${proc.pid})`);
    },
    async stop(signal = "SIGTERM") {
      const proc = child;
      if (!proc) return null;
      proc.kill(signal);
      const code = await exited;
      child = undefined;
      note(`${id} agent stopped by ${signal} (exit ${code})`);
      return code ?? null;
    },
  };
  return gw;
}
