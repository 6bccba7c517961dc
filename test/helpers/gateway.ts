/**
 * A whole gateway world for end-to-end tests, all real parts (STYLE.md §14): a broker (the
 * embedded aedes one or a real Mosquitto), the image server over loopback HTTP, simulated
 * secure ESP32s on socat pty pairs through `serialport`, and the gateway agent as its own
 * process (`esp-ota agent --config`), so it can be killed and restarted like on a gateway.
 * An observer client collects every status and progress event the agent publishes; an
 * operator client (connectMqtt: MQTT 5, or 3.1.1 where the broker refuses 5) sends commands.
 *
 * The image server misbehaves on request, per file (`w.http.fault`): a body cut short, a body
 * longer than the file, connections reset mid-body, a response that stalls. Every request is
 * recorded, so a test can see a download resume with Range.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { connectMqtt, readRetained, requestCommand } from "../../src/mqtt/client.js";
import {
  type CommandRequest,
  type CommandResponse,
  type DeviceStatus,
  encodeMessage,
  FINAL_STATES,
  type ProgressEvent,
  parseMessage,
  UPDATE_STATES,
  type UpdateNotice,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import type { ReleaseIndex } from "../../src/release/build-plan.js";
import { makeEtag, parseRange } from "../../src/release/range.js";
import { staticHandler } from "../../src/release/serve.js";
import type { Fleet } from "../../src/sim/fleet.js";
import { type FleetServer, type ServedDevice, serveFleet } from "../../src/sim/fleet-serve.js";
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
export const GATEWAY_ID = "test-gw";
/** Lines of agent output kept (debug level logs every device console line). */
const AGENT_LOG_LINES = 20_000;

/** How the image server misbehaves for one file (by URL path). */
export type HttpFault =
  /**
   * The server's copy ends at byte `at` although its headers announce the whole file (a file
   * cut short on the mirror, metadata from before): every response stops there and the
   * connection closes, whatever Range asked for.
   */
  | { kind: "truncate"; at: number }
  /**
   * `extra` bytes after the file's: with `contentLength` the headers say so (size check at the
   * headers); without, the body is chunked and only counting the bytes catches it.
   */
  | { kind: "oversize"; extra: number; contentLength?: boolean }
  /**
   * The first `times` responses are reset (TCP RST) after `after` body bytes; later ones are
   * fine. A reset throws away what the client had received but not read yet, so the RST waits
   * until `when(end)` says the file's bytes up to `end` arrived (are staged, say), or 100 ms
   * without it.
   */
  | { kind: "reset"; after: number; times: number; when?: (end: number) => boolean }
  /** Headers and `after` body bytes, then nothing until the client goes away or the fault is cleared. */
  | { kind: "stall"; after: number };

export interface HttpRequestRecord {
  path: string;
  range: string | undefined;
  status: number;
  fault: HttpFault["kind"] | undefined;
}

export interface TestHttp {
  url: string;
  /** Sets (or with undefined clears) the fault of one URL path, e.g. "/2.0.0/devices/…/ota_1.bin". */
  fault(path: string, f: HttpFault | undefined): void;
  readonly requests: HttpRequestRecord[];
  close(): Promise<void>;
}

/** The static release server (src/release/serve.ts) with per-file faults in front of it. */
export async function faultyHttp(root: string): Promise<TestHttp> {
  const serve = staticHandler(root);
  const faults = new Map<string, { f: HttpFault; served: number }>();
  const requests: HttpRequestRecord[] = [];
  const stalled = new Set<ServerResponse>();

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const range = req.headers.range;
    const entry = faults.get(path);
    const record: HttpRequestRecord = { path, range, status: 0, fault: entry?.f.kind };
    requests.push(record);
    res.on("finish", () => {
      record.status = res.statusCode;
    });
    res.on("close", () => {
      record.status ||= res.statusCode;
      stalled.delete(res);
    });
    const f = entry?.f;
    if (!entry || !f || (f.kind === "reset" && entry.served >= f.times)) {
      serve(req, res);
      return;
    }
    entry.served++;
    const file = join(root, ...path.split("/").filter(Boolean));
    const body = readFileSync(file);
    const etag = makeEtag(body.length, statSync(file).mtimeMs);
    const r = parseRange(range, body.length);
    const start = r.kind === "range" ? r.start : 0;
    const head = (extra: Record<string, string> = {}) => {
      const partial = r.kind === "range";
      res.writeHead(partial ? 206 : 200, {
        "Content-Type": "application/octet-stream",
        ETag: etag,
        "Accept-Ranges": "bytes",
        ...(partial ? { "Content-Range": `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
        ...extra,
      });
    };
    const cut = (end: number, how: "close" | "reset", when?: (end: number) => boolean) => {
      if (end > start) res.write(body.subarray(start, end));
      const go = () => {
        if (how === "reset") req.socket.resetAndDestroy();
        else req.socket.destroy();
      };
      if (!when) {
        // Let the bytes leave before the connection goes, so the client most likely reads them.
        setTimeout(go, 100);
        return;
      }
      const deadline = Date.now() + 5000;
      const poll = setInterval(() => {
        if (when(end) || Date.now() > deadline || req.socket.destroyed) {
          clearInterval(poll);
          go();
        }
      }, 5);
    };
    switch (f.kind) {
      case "truncate":
        head({ "Content-Length": String(body.length - start) });
        res.flushHeaders();
        cut(Math.max(start, Math.min(f.at, body.length)), "close");
        return;
      case "reset":
        head({ "Content-Length": String(body.length - start) });
        res.flushHeaders();
        cut(Math.min(body.length, start + f.after), "reset", f.when);
        return;
      case "oversize": {
        const bigger = Buffer.concat([body, Buffer.alloc(f.extra, 0x5a)]);
        res.writeHead(200, {
          "Content-Type": "application/octet-stream",
          ...(f.contentLength ? { "Content-Length": String(bigger.length) } : {}),
        });
        // In pieces, so a client that counts has to stop in the middle of the stream.
        for (let i = 0; i < bigger.length; i += 4096) res.write(bigger.subarray(i, i + 4096));
        res.end();
        return;
      }
      case "stall":
        head({ "Content-Length": String(body.length - start) });
        res.flushHeaders();
        res.write(body.subarray(start, Math.min(body.length, start + f.after)));
        stalled.add(res);
        return;
    }
  };

  const server: Server = createServer(handle);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    fault(path, f) {
      if (f) faults.set(path, { f, served: 0 });
      else faults.delete(path);
      if (f === undefined) for (const res of stalled) res.destroy();
    },
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

export interface WorldOptions {
  devices: number;
  fleet?: TestFleetOptions;
  /** Extra YAML appended to the agent's config (policy, download limits...). */
  configExtra?: string;
}

export interface Release {
  dir: string;
  index: ReleaseIndex;
  /** URL paths of a device's variant files (every slot), for HTTP faults. */
  paths(deviceId: string): string[];
  /** Path of a device's manifest file on disk (to tamper with it). */
  manifestFile(deviceId: string): string;
}

export interface World {
  kind: BrokerKind["name"];
  fleet: Fleet;
  broker: TestBroker;
  http: TestHttp;
  devices: FleetServer;
  ids: string[];
  configFile: string;
  stagingDir: string;
  statuses: Map<string, DeviceStatus[]>;
  progress: Map<string, ProgressEvent[]>;
  /** What each device printed on its console (boot banners, app log), the last 5000 lines. */
  console: Map<string, string[]>;
  agentLog: string[];
  /** A position in the agent's output: agentLogSince(mark) is what it printed after. */
  agentLogMark(): number;
  agentLogSince(mark: number): string[];
  release(version: string, o?: Partial<FleetReleaseOptions>): Promise<Release>;
  notify(
    deviceId: string,
    releaseDir: string,
    o?: { manifestFor?: string; counter?: number },
  ): Promise<UpdateNotice>;
  /** Empties the device's retained desired topic (the update is withdrawn). */
  clearDesired(deviceId: string): Promise<void>;
  publishRaw(topic: string, payload: string | Uint8Array, retain?: boolean): Promise<void>;
  waitFor(
    deviceId: string,
    pred: (s: DeviceStatus) => boolean,
    timeoutMs?: number,
  ): Promise<DeviceStatus>;
  waitFinal(deviceId: string, releaseId: string, timeoutMs?: number): Promise<DeviceStatus>;
  waitProgress(
    deviceId: string,
    pred: (p: ProgressEvent) => boolean,
    timeoutMs?: number,
  ): Promise<ProgressEvent>;
  /** The operator's client (connectMqtt: MQTT 5, or 3.1.1 where the broker refuses 5) and its reply topic. */
  operator(): Promise<{ client: MqttClient; replyTopic: string }>;
  /** A command over MQTT from the operator's client, as `esp-ota` tools send them. */
  command(req: Omit<CommandRequest, "format">): Promise<CommandResponse>;
  /** The device's retained status as a newly connected client reads it from the broker. */
  retainedStatus(deviceId: string): Promise<DeviceStatus | undefined>;
  /** Bytes in the device's staging file(s) now (the download in progress), 0 without one. */
  staged(deviceId: string): number;
  device(deviceId: string): ServedDevice;
  /** What the device runs now: its app's version, or its state ("off", "no-app", "crash-loop"). */
  running(deviceId: string): string;
  /**
   * What the device would boot into after a power-on reset now, from its flash alone (a copy
   * of it is booted; the device itself is left alone): a version, or "no-app" / "crash-loop".
   */
  bootsInto(deviceId: string): string;
  startAgent(): Promise<void>;
  /** SIGTERM (graceful) or SIGKILL (a crash), then wait for the process to exit. */
  stopAgent(signal?: "SIGTERM" | "SIGKILL"): Promise<number | null>;
  close(): Promise<void>;
}

const isFinal = (s: string) => (FINAL_STATES as readonly string[]).includes(s);

export async function makeWorld(kind: BrokerKind, o: WorldOptions): Promise<World> {
  const fleet = makeTestFleet(o.devices, o.fleet);
  const root = join(fleet.dir, "..");
  const releases = join(root, "releases");
  mkdirSync(releases, { recursive: true });
  const broker = await kind.start({ dataDir: join(root, "broker") });
  const http = await faultyHttp(releases);
  const console = new Map<string, string[]>();
  const devices = await serveFleet(fleet.devices, {
    linkDir: join(root, "links"),
    onLog: (id, line) => {
      const lines = console.get(id) ?? [];
      lines.push(line);
      if (lines.length > 5000) lines.splice(0, lines.length - 5000);
      console.set(id, lines);
    },
  });
  const t = topics();
  const statuses = new Map<string, DeviceStatus[]>();
  const progress = new Map<string, ProgressEvent[]>();
  const waiters = new Set<() => void>();
  const observer = await mqtt.connectAsync(broker.url, {
    clientId: `observer-${process.pid}-${Date.now()}`,
    reconnectPeriod: 200,
  });
  observer.on("message", (topic, payload) => {
    const m = /\/devices\/([^/]+)\/(status|progress)$/.exec(topic);
    if (!m || payload.length === 0) return;
    const id = m[1]!;
    if (m[2] === "status") {
      const p = parseMessage("status", payload);
      if (!p.ok) return;
      const list = statuses.get(id) ?? [];
      list.push(p.value);
      statuses.set(id, list);
    } else {
      const p = parseMessage("progress", payload);
      if (!p.ok) return;
      const list = progress.get(id) ?? [];
      list.push(p.value);
      progress.set(id, list);
    }
    for (const w of waiters) w();
  });
  await observer.subscribeAsync([t.allStatus, `${t.prefix}/devices/+/progress`], { qos: 1 });
  let ops: MqttClient | undefined;
  const opsId = `ops-${process.pid}-${Date.now()}`;

  const stateDir = join(root, "state");
  const stagingDir = join(stateDir, "staging");
  const configFile = join(root, "gateway.yaml");
  writeFileSync(
    configFile,
    `gatewayId: ${GATEWAY_ID}
mqtt:
  url: ${broker.url}
trust:
  policy: ${fleet.trustFile}
serial:
  ports:
    - glob: ${join(root, "links")}/tty-*
  rescanMs: 300
stateDir: ${stateDir}
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
  let dropped = 0;
  let builds: Promise<unknown> = Promise.resolve();

  const wait = <T>(
    deviceId: string,
    find: () => T | undefined,
    timeoutMs: number,
    describe: () => string,
  ): Promise<T> =>
    new Promise((ok, fail) => {
      const check = () => {
        const hit = find();
        if (hit !== undefined) {
          waiters.delete(check);
          clearTimeout(timer);
          ok(hit);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        // What the agent said about this device (its console lines too, the last ones), and
        // the last lines overall: enough to tell a stuck UART from a stuck broker.
        const about = agentLog.filter((l) => l.includes(`"deviceId":"${deviceId}"`));
        const tail = (lines: string[], n: number) => lines.slice(-n).join("\n");
        fail(
          new Error(
            `${describe()}\nagent log about ${deviceId}:\n${tail(
              about.filter((l) => !l.includes('"device log"')),
              30,
            )}\ndevice console:\n${tail(
              about.filter((l) => l.includes('"device log"')),
              15,
            )}\nagent log tail:\n${tail(
              agentLog.filter((l) => !l.includes('"device log"')),
              15,
            )}\ndevice ${deviceId}: ${world.running(deviceId)}`,
          ),
        );
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  const seen = (id: string) =>
    (statuses.get(id) ?? [])
      .map((s) => `${s.seq}:${s.state}${s.error ? `(${s.error.code})` : ""}`)
      .join(" ");

  const world: World = {
    kind: kind.name,
    fleet,
    broker,
    http,
    devices,
    ids: fleet.devices.map((d) => d.deviceId),
    configFile,
    stagingDir,
    statuses,
    progress,
    console,
    agentLog,
    agentLogMark: () => dropped + agentLog.length,
    agentLogSince: (mark) => agentLog.slice(Math.max(0, mark - dropped)),
    async release(version, ro = {}) {
      const dir = join(releases, version);
      // One build at a time: each persists the devices' next release counters in the registry.
      const build = builds.then(() =>
        buildFleetRelease(fleet, version, {
          baseUrl: `${http.url}${version}/`,
          outDir: dir,
          ...ro,
        }),
      );
      builds = build.catch(() => undefined);
      await build;
      const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as ReleaseIndex;
      const entry = (id: string) => {
        const e = index.devices.find((d) => d.deviceId === id);
        if (!e) throw new Error(`no ${id} in release ${version}`);
        return e;
      };
      return {
        dir,
        index,
        paths: (id) => entry(id).variants.map((v) => `/${version}/${v.file}`),
        manifestFile: (id) => join(dir, entry(id).manifest),
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
        { qos: 1, retain: true },
      );
      return notice;
    },
    async clearDesired(deviceId) {
      await observer.publishAsync(t.desired(deviceId), Buffer.alloc(0), { qos: 1, retain: true });
    },
    async publishRaw(topic, payload, retain = true) {
      await observer.publishAsync(
        topic,
        typeof payload === "string" ? payload : Buffer.from(payload),
        { qos: 1, retain },
      );
    },
    waitFor(deviceId, pred, timeoutMs = 45_000) {
      return wait(
        deviceId,
        () => (statuses.get(deviceId) ?? []).find(pred),
        timeoutMs,
        () => `timeout waiting on ${deviceId}; statuses: ${seen(deviceId)}`,
      );
    },
    waitFinal(deviceId, releaseId, timeoutMs) {
      return world.waitFor(
        deviceId,
        (s) => s.releaseId === releaseId && isFinal(s.state),
        timeoutMs,
      );
    },
    waitProgress(deviceId, pred, timeoutMs = 45_000) {
      return wait(
        deviceId,
        () => (progress.get(deviceId) ?? []).find(pred),
        timeoutMs,
        () =>
          `timeout waiting on progress of ${deviceId}; last: ${JSON.stringify(progress.get(deviceId)?.at(-1))}; statuses: ${seen(deviceId)}`,
      );
    },
    async operator() {
      ops ??= await connectMqtt({ url: broker.url, clientId: opsId });
      return { client: ops, replyTopic: t.replies(opsId) };
    },
    async command(req) {
      const { client, replyTopic } = await world.operator();
      return requestCommand(
        client,
        t.commands(GATEWAY_ID),
        replyTopic,
        { format: 1, ...req },
        10_000,
      );
    },
    async retainedStatus(deviceId) {
      const c = await connectMqtt({ url: broker.url });
      try {
        const m = await readRetained(c, t.status(deviceId));
        const payload = m.get(t.status(deviceId));
        if (!payload) return undefined;
        const p = parseMessage("status", payload);
        if (!p.ok) throw new Error(`retained status of ${deviceId}: ${p.reason}`);
        return p.value;
      } finally {
        await c.endAsync();
      }
    },
    staged(deviceId) {
      let names: string[];
      try {
        names = readdirSync(stagingDir);
      } catch {
        return 0;
      }
      let n = 0;
      for (const name of names)
        if (name.startsWith(`${deviceId}-`) && name.endsWith(".bin"))
          try {
            n += statSync(join(stagingDir, name)).size;
          } catch {
            // removed meanwhile
          }
      return n;
    },
    device(deviceId) {
      const d = devices.devices.find((x) => x.deviceId === deviceId);
      if (!d) throw new Error(`no device ${deviceId}`);
      return d;
    },
    running(deviceId) {
      const s = world.device(deviceId).device.state;
      return s.kind === "running" ? (s.app?.version ?? "?") : s.kind;
    },
    bootsInto(deviceId) {
      const copy = world.device(deviceId).device.clone();
      const s = copy.powerOn();
      return s.kind === "running" ? (s.app?.version ?? "?") : s.kind;
    },
    async startAgent() {
      const child = spawn(
        process.execPath,
        ["--import", "tsx", MAIN, "agent", "--config", configFile],
        { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
      );
      agent = child;
      const mark = world.agentLogMark();
      const onLine = (c: Buffer) => {
        for (const line of c.toString().split("\n")) if (line) agentLog.push(line);
        if (agentLog.length > AGENT_LOG_LINES) {
          const n = agentLog.length - AGENT_LOG_LINES;
          agentLog.splice(0, n);
          dropped += n;
        }
      };
      child.stdout!.on("data", onLine);
      child.stderr!.on("data", onLine);
      exited = new Promise((ok) => child.on("exit", (code) => ok(code)));
      // Ready when it has identified every device plugged in (attach runs after its first scan).
      const plugged = devices.devices.filter((d) => d.plugged).map((d) => d.deviceId);
      await new Promise<void>((ok, fail) => {
        const timer = setTimeout(
          () => fail(new Error(`agent did not start:\n${world.agentLogSince(mark).join("\n")}`)),
          30_000,
        );
        const check = () => {
          const lines = world.agentLogSince(mark);
          const attached = (id: string) =>
            lines.some((l) => l.includes('"device attached"') && l.includes(`"deviceId":"${id}"`));
          if (lines.some((l) => l.includes('"agent started"')) && plugged.every(attached)) {
            clearInterval(iv);
            clearTimeout(timer);
            ok();
          }
        };
        const iv = setInterval(check, 50);
        void exited!.then((code) => {
          clearInterval(iv);
          clearTimeout(timer);
          fail(
            new Error(
              `agent exited (${code}) during start:\n${world.agentLogSince(mark).join("\n")}`,
            ),
          );
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
      // ESP_OTA_TEST_AGENT_LOG=DIR keeps the agent's whole output (debugging a failed test).
      const keep = process.env.ESP_OTA_TEST_AGENT_LOG;
      if (keep) {
        mkdirSync(keep, { recursive: true });
        writeFileSync(
          join(keep, `agent-${kind.name}-${Date.now()}.log`),
          `${agentLog.join("\n")}\n`,
        );
      }
      await ops?.endAsync().catch(() => undefined);
      await observer.endAsync().catch(() => undefined);
      await devices.close();
      await http.close();
      await broker.close();
      removeTestFleet(fleet);
    },
  };
  return world;
}

/**
 * What every scenario checks of the statuses one device published: `seq` strictly increases
 * (a status seen twice — the agent republishes its last one after a restart, a broker
 * redelivers retained ones — is the same message with the same seq); within a run of a release
 * the state never goes backwards; and the release ended in exactly one final status. Returns
 * the statuses of the release, deduplicated, for further checks.
 */
export function releaseHistory(w: World, deviceId: string, releaseId: string): DeviceStatus[] {
  const bySeq = new Map<number, DeviceStatus>();
  let last = 0;
  for (const s of w.statuses.get(deviceId) ?? []) {
    const before = bySeq.get(s.seq);
    if (before) {
      if (JSON.stringify(before) !== JSON.stringify(s))
        throw new Error(`${deviceId}: two different statuses with seq ${s.seq}`);
      continue;
    }
    if (s.seq <= last)
      throw new Error(`${deviceId}: seq ${s.seq} (${s.state}) after seq ${last}: went backwards`);
    last = s.seq;
    bySeq.set(s.seq, s);
  }
  const mine = [...bySeq.values()].filter((s) => s.releaseId === releaseId);
  const order = (s: string) => (UPDATE_STATES as readonly string[]).indexOf(s);
  for (let i = 1; i < mine.length; i++) {
    const a = mine[i - 1]!;
    const b = mine[i]!;
    if (order(b.state) < order(a.state) && a.startedAt === b.startedAt)
      throw new Error(
        `${deviceId}: ${releaseId} went from ${a.state} (seq ${a.seq}) back to ${b.state} (seq ${b.seq})`,
      );
  }
  const finals = mine.filter((s) => isFinal(s.state));
  if (finals.length !== 1)
    throw new Error(
      `${deviceId}: ${finals.length} final statuses for ${releaseId}: ${finals.map((s) => `${s.seq}:${s.state}`).join(" ")}`,
    );
  return mine;
}

/** The largest size each file in `dir` reached while the watch ran (polled every few ms). */
export function watchSizes(dir: string): { stop(): Map<string, number> } {
  const max = new Map<string, number>();
  const poll = () => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) {
      try {
        const size = statSync(join(dir, n)).size;
        if (size > (max.get(n) ?? -1)) max.set(n, size);
      } catch {
        // removed between readdir and stat
      }
    }
  };
  const iv = setInterval(poll, 2);
  return {
    stop() {
      clearInterval(iv);
      poll();
      return max;
    },
  };
}

/**
 * Boots a copy of the device's flash every 250 ms while an update runs (bootsInto); stop()
 * returns every answer seen: a device that is "bootable throughout" only ever answers versions.
 */
export function sampleBoots(w: World, deviceId: string): { stop(): Set<string> } {
  const seen = new Set<string>([w.bootsInto(deviceId)]);
  const iv = setInterval(() => seen.add(w.bootsInto(deviceId)), 250);
  return {
    stop() {
      clearInterval(iv);
      seen.add(w.bootsInto(deviceId));
      return seen;
    },
  };
}
