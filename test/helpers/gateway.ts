/**
 * A whole gateway world for end-to-end tests, all real parts (STYLE.md §14): a broker (the
 * embedded aedes one or a real Mosquitto), the image server over loopback HTTP, simulated
 * secure ESP32s on socat pty pairs through `serialport`, and the gateway agent as its own
 * process (`esp-ota agent --config`), so it can be killed and restarted like on a gateway.
 * An observer client collects every status the agent publishes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import mqtt from "mqtt";
import {
  type DeviceStatus,
  encodeMessage,
  parseMessage,
  type UpdateNotice,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import type { ReleaseIndex } from "../../src/release/build-plan.js";
import { createStaticServer } from "../../src/release/serve.js";
import type { Fleet } from "../../src/sim/fleet.js";
import { type FleetServer, serveFleet } from "../../src/sim/fleet-serve.js";
import type { BrokerKind, TestBroker } from "./brokers.js";
import {
  buildFleetRelease,
  type FleetReleaseOptions,
  makeTestFleet,
  removeTestFleet,
  type TestFleetOptions,
} from "./fleet.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const MAIN = join(ROOT, "agent/main.ts");

export interface WorldOptions {
  devices: number;
  fleet?: TestFleetOptions;
  /** Extra YAML appended to the agent's config (policy, download limits...). */
  configExtra?: string;
  /** Serve HTTP through this function (e.g. a faulty server) instead of the static server. */
  http?: (root: string) => Promise<{ url: string; close(): Promise<void> }>;
}

export interface World {
  fleet: Fleet;
  broker: TestBroker;
  baseUrl: string;
  devices: FleetServer;
  configFile: string;
  statuses: Map<string, DeviceStatus[]>;
  agentLog: string[];
  release(
    version: string,
    o?: Partial<FleetReleaseOptions>,
  ): Promise<{ dir: string; index: ReleaseIndex }>;
  notify(
    deviceId: string,
    releaseDir: string,
    o?: { manifestFor?: string; counter?: number },
  ): Promise<UpdateNotice>;
  publishRaw(topic: string, payload: string | Uint8Array, retain?: boolean): Promise<void>;
  waitFor(
    deviceId: string,
    pred: (s: DeviceStatus) => boolean,
    timeoutMs?: number,
  ): Promise<DeviceStatus>;
  waitFinal(deviceId: string, releaseId: string, timeoutMs?: number): Promise<DeviceStatus>;
  startAgent(): Promise<void>;
  /** SIGTERM (graceful) or SIGKILL (a crash), then wait for the process to exit. */
  stopAgent(signal?: "SIGTERM" | "SIGKILL"): Promise<number | null>;
  close(): Promise<void>;
}

export async function staticHttp(root: string): Promise<{ url: string; close(): Promise<void> }> {
  const server = createStaticServer(root);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

export async function makeWorld(kind: BrokerKind, o: WorldOptions): Promise<World> {
  const fleet = makeTestFleet(o.devices, o.fleet);
  const root = join(fleet.dir, "..");
  const releases = join(root, "releases");
  mkdirSync(releases, { recursive: true });
  const broker = await kind.start({ dataDir: join(root, "broker") });
  const http = await (o.http ?? staticHttp)(releases);
  const devices = await serveFleet(fleet.devices, { linkDir: join(root, "links") });
  const t = topics();
  const statuses = new Map<string, DeviceStatus[]>();
  const waiters = new Set<() => void>();
  const observer = await mqtt.connectAsync(broker.url, {
    clientId: `observer-${process.pid}-${Date.now()}`,
  });
  observer.on("message", (topic, payload) => {
    const m = /\/devices\/([^/]+)\/status$/.exec(topic);
    if (!m || payload.length === 0) return;
    const p = parseMessage("status", payload);
    if (!p.ok) return;
    const list = statuses.get(m[1]!) ?? [];
    list.push(p.value);
    statuses.set(m[1]!, list);
    for (const w of waiters) w();
  });
  await observer.subscribeAsync(t.allStatus, { qos: 1 });

  const configFile = join(root, "gateway.yaml");
  writeFileSync(
    configFile,
    `gatewayId: test-gw
mqtt:
  url: ${broker.url}
trust:
  policy: ${fleet.trustFile}
serial:
  ports:
    - glob: ${join(root, "links")}/tty-*
  rescanMs: 300
stateDir: ${join(root, "state")}
download:
  connectTimeoutMs: 2000
  idleTimeoutMs: 2000
  retries: 3
  backoffBaseMs: 50
  backoffMaxMs: 500
policy:
  confirmTimeoutMs: 15000
log:
  level: debug
${o.configExtra ?? ""}`,
  );

  let agent: ChildProcess | undefined;
  let exited: Promise<number | null> | undefined;
  const agentLog: string[] = [];

  const world: World = {
    fleet,
    broker,
    baseUrl: http.url,
    devices,
    configFile,
    statuses,
    agentLog,
    async release(version, ro = {}) {
      const dir = join(releases, version);
      await buildFleetRelease(fleet, version, {
        baseUrl: `${http.url}${version}/`,
        outDir: dir,
        ...ro,
      });
      return {
        dir,
        index: JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as ReleaseIndex,
      };
    },
    async notify(deviceId, releaseDir, no = {}) {
      const index = JSON.parse(
        readFileSync(join(releaseDir, "index.json"), "utf8"),
      ) as ReleaseIndex;
      const of = no.manifestFor ?? deviceId;
      const entry = index.devices.find((d) => d.deviceId === of);
      if (!entry) throw new Error(`no manifest for ${of} in ${releaseDir}`);
      const rel = releaseDir.slice(releases.length + 1);
      const notice: UpdateNotice = {
        format: 1,
        deviceId,
        releaseId: index.releaseId,
        counter: no.counter ?? entry.counter,
        manifestUrls: [`${http.url}${rel}/${entry.manifest}`],
        issuedAt: new Date().toISOString(),
      };
      await observer.publishAsync(
        t.desired(deviceId),
        Buffer.from(encodeMessage("notice", notice)),
        {
          qos: 1,
          retain: true,
        },
      );
      return notice;
    },
    async publishRaw(topic, payload, retain = true) {
      await observer.publishAsync(
        topic,
        typeof payload === "string" ? payload : Buffer.from(payload),
        {
          qos: 1,
          retain,
        },
      );
    },
    waitFor(deviceId, pred, timeoutMs = 60_000) {
      return new Promise((ok, fail) => {
        const check = () => {
          const hit = (statuses.get(deviceId) ?? []).find(pred);
          if (hit) {
            waiters.delete(check);
            clearTimeout(timer);
            ok(hit);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          const seen = (statuses.get(deviceId) ?? []).map(
            (s) => `${s.state}${s.error ? `(${s.error.code})` : ""}`,
          );
          fail(
            new Error(
              `timeout waiting on ${deviceId}; statuses: ${seen.join(" ")}\nagent log tail:\n${agentLog.slice(-30).join("\n")}`,
            ),
          );
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    waitFinal(deviceId, releaseId, timeoutMs) {
      return world.waitFor(
        deviceId,
        (s) =>
          s.releaseId === releaseId &&
          ["succeeded", "rolled-back", "failed", "cancelled"].includes(s.state),
        timeoutMs,
      );
    },
    async startAgent() {
      const child = spawn(
        process.execPath,
        ["--import", "tsx", MAIN, "agent", "--config", configFile],
        {
          cwd: ROOT,
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      agent = child;
      const onLine = (c: Buffer) => {
        for (const line of c.toString().split("\n")) if (line) agentLog.push(line);
        if (agentLog.length > 2000) agentLog.splice(0, agentLog.length - 2000);
      };
      child.stdout!.on("data", onLine);
      child.stderr!.on("data", onLine);
      exited = new Promise((ok) => child.on("exit", (code) => ok(code)));
      // Ready when it reports the gateway online (retained presence).
      await new Promise<void>((ok, fail) => {
        const timer = setTimeout(
          () => fail(new Error(`agent did not start:\n${agentLog.join("\n")}`)),
          30_000,
        );
        const check = () => {
          if (agentLog.some((l) => l.includes("agent started"))) {
            clearInterval(iv);
            clearTimeout(timer);
            ok();
          }
        };
        const iv = setInterval(check, 50);
        void exited!.then((code) => {
          clearInterval(iv);
          clearTimeout(timer);
          fail(new Error(`agent exited (${code}) during start:\n${agentLog.join("\n")}`));
        });
      });
    },
    async stopAgent(signal = "SIGTERM") {
      if (!agent) return null;
      agent.kill(signal);
      const code = await exited;
      agent = undefined;
      return code ?? null;
    },
    async close() {
      await world.stopAgent("SIGKILL");
      await observer.endAsync().catch(() => undefined);
      await devices.close();
      await http.close();
      await broker.close();
      removeTestFleet(fleet);
    },
  };
  return world;
}
