/**
 * The gateway agent (issue 6; docs/operations.md): watches the configured serial ports,
 * identifies each ESP32 over the UART OTA protocol, subscribes to its desired-update topic,
 * runs one update at a time per device (agent/update.ts) with bounded concurrency across
 * devices, and reports presence, inventory, status, progress and device log lines over MQTT
 * (docs/mqtt-api.md). All decisions are in src/gateway (pure); this file wires them to the
 * broker, the ports and the state directory.
 */
import { accessSync, existsSync, constants as fsConstants, mkdirSync, readFileSync } from "node:fs";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { type ErrorCode, EspOtaError } from "../src/errors.js";
import { otadataOf, runningAppOf } from "../src/gateway/device-view.js";
import {
  type DeviceLedger,
  decideNotice,
  type FinalState,
  type Job,
  type NoticeDecision,
  pastPointOfNoReturn,
  recordRefusal,
  refusalStatus,
} from "../src/gateway/ledger.js";
import {
  checkDeviceInfo,
  type PortContext,
  type PortEffect,
  type PortInput,
  type PortState,
  servedDevice,
  transition,
} from "../src/gateway/port-state.js";
import { type ProbeServer, type Readiness, startProbeServer } from "../src/metrics/http.js";
import { commandResponder, connectMqtt, subscribeCommands } from "../src/mqtt/client.js";
import {
  type CommandRequest,
  type CommandResponse,
  type DeviceState,
  type DeviceStatus,
  type InventoryConflict,
  type InventoryDevice,
  isFinalState,
  parseMessage,
  type UpdateNotice,
} from "../src/mqtt/messages.js";
import { signStatus } from "../src/mqtt/status-auth.js";
import { parseTopic, type Topics, topics } from "../src/mqtt/topics.js";
import type { ManifestSigningKey } from "../src/release/keyring.js";
import type { Info } from "../src/uart/messages.js";
import type { AgentConfig } from "./config.js";
import { loadOrCreateGatewayKey } from "./gateway-key.js";
import { type AgentLink, DeviceLink, type LinkOptions } from "./link.js";
import { AgentMetrics } from "./metrics.js";
import { PortWatcher } from "./ports.js";
import { boundedStatus, codeOf, nextStatus, Publisher } from "./publisher.js";
import { LedgerStore } from "./store.js";
import {
  deviceFields,
  httpNet,
  type RunResult,
  runUpdate,
  type UpdateObservation,
  type UpdateSettings,
  updateSettings,
} from "./update.js";

/** Retries of the identifying INFO on a newly seen port (a device may be booting). */
const IDENTIFY_ATTEMPTS = 3;
/** A port that keeps failing to attach is tried again at most this far apart (backoff cap). */
const RETRY_MAX_MS = 60_000;
/** How long a clean stop waits for the broker to take the offline presence and the DISCONNECT. */
const STOP_PUBLISH_MS = 2000;
/**
 * The retained presence's health summary is refreshed this often (docs/mqtt-api.md "presence"):
 * a console sees a gateway's state within a minute, at one small retained message a minute.
 */
export const PRESENCE_HEALTH_EVERY_MS = 60_000;

interface Attached {
  deviceId: string;
  path: string;
  link: AgentLink;
  attachedAt: string;
  info: Info;
  running?: Promise<void>;
  abort?: AbortController;
}

/** One serial port: its state (src/gateway/port-state.ts) and what the effects hold. */
interface PortEntry {
  state: PortState;
  link?: AgentLink;
  /** The INFO the last identification read (attach uses it). */
  info?: Info;
  /** Bumped whenever an identification in flight must be ignored (link closed, port gone). */
  gen: number;
  retry?: NodeJS.Timeout;
}

/** `p`, or undefined after `ms` (a clean stop must end even when the broker is gone). */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  return Promise.race([p.catch(() => undefined), t]).finally(() => clearTimeout(timer));
}

class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async run<T>(f: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiters.push(r));
    this.active++;
    try {
      return await f();
    } finally {
      this.active--;
      this.waiters.shift()?.();
    }
  }
}

/** Where devices come from: the serial ports the config selects (PortWatcher), or any source. */
export interface PortSource {
  start(): Promise<void>;
  stop(): void;
  readonly current: ReadonlySet<string>;
}

export interface AgentOptions {
  config: AgentConfig;
  log: Logger;
  now?: () => Date;
  /**
   * Devices other than serial ports (in-process simulated fleets: bench:fleet, the demo without
   * socat). Default: a PortWatcher over config.serial.ports and DeviceLink.open.
   */
  ports?: {
    source: (handlers: {
      onAdded(path: string): void;
      onRemoved(path: string): void;
    }) => PortSource;
    open: (path: string, o: LinkOptions) => Promise<AgentLink>;
  };
  /** How often the presence's health summary is refreshed; default PRESENCE_HEALTH_EVERY_MS (tests). */
  presenceHealthMs?: number;
}

export class Agent {
  readonly t: Topics;
  private client: MqttClient | undefined;
  private watcher: PortSource | undefined;
  private readonly store: LedgerStore;
  private readonly ledgers = new Map<string, DeviceLedger>();
  private readonly byId = new Map<string, Attached>();
  /** Every port seen, in one state each (src/gateway/port-state.ts). */
  private readonly ports = new Map<string, PortEntry>();
  private readonly pub: Publisher;
  private readonly updates: Semaphore;
  private readonly downloads: Semaphore;
  private readonly settings: UpdateSettings;
  /** Signs every status (agent/gateway-key.ts); its identity is `esp-ota agent key`. */
  private readonly statusKey: ManifestSigningKey;
  private logTimer: NodeJS.Timeout | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  /** The first port scan has been delivered (readiness). */
  private scanned = false;
  /** This agent's counters and gauges (agent/metrics.ts); its own registry, never the global one. */
  readonly metrics: AgentMetrics;
  private probe: ProbeServer | undefined;
  private readonly now: () => Date;
  readonly startedAt: string;

  constructor(private readonly o: AgentOptions) {
    const c = o.config;
    this.t = topics(c.mqtt.prefix);
    this.now = o.now ?? (() => new Date());
    this.startedAt = this.now().toISOString();
    this.store = new LedgerStore(c.stateDir, {
      log: o.log,
      // Attached devices keep their ledgers; a pruned one is forgotten here too (issue 12 #14).
      inUse: () => this.byId.keys(),
      onPruned: (ids) => {
        for (const id of ids) this.ledgers.delete(id);
      },
    });
    const gatewayKey = loadOrCreateGatewayKey(c.stateDir);
    this.statusKey = gatewayKey.key;
    if (gatewayKey.created)
      this.log.info(
        { keyId: gatewayKey.key.keyId, path: gatewayKey.path },
        "created the gateway's status-signing key; register it with `esp-ota agent key` and `esp-ota gateways add`",
      );
    mkdirSync(c.stagingDir, { recursive: true, mode: 0o700 });
    this.updates = new Semaphore(c.policy.maxConcurrentUpdates);
    this.downloads = new Semaphore(c.download.maxConcurrent);
    this.settings = updateSettings(c);
    this.metrics = new AgentMetrics({
      ports: () => [...this.ports.values()].map((p) => p.state),
      mqttConnected: () => this.client?.connected === true,
      stagingDir: c.stagingDir,
      processMetrics: c.metrics.enabled,
      now: this.now,
    });
    this.pub = new Publisher({
      client: () => this.client,
      topics: this.t,
      gatewayId: c.gatewayId,
      statusKey: this.statusKey,
      log: o.log,
      now: this.now,
      deviceLines: c.log.deviceLines,
      deviceLinesPerSec: c.log.deviceLinesPerSec,
      health: () => this.metrics.health(this.readiness().ok),
    });
  }

  /** Where /metrics, /healthz and /readyz are served, when metrics are enabled and started. */
  get metricsUrl(): string | undefined {
    return this.probe?.url;
  }

  /**
   * What /readyz answers (docs/metrics.md): connected to the broker, the first port scan
   * delivered, and the state directory writable (a full or read-only disk stops every ledger
   * write, and with it every update).
   */
  readiness(): Readiness {
    const failing: string[] = [];
    if (this.stopping) failing.push("stopping");
    if (this.client?.connected !== true) failing.push("broker not connected");
    if (!this.scanned) failing.push("ports not scanned yet");
    try {
      accessSync(this.o.config.stateDir, fsConstants.W_OK);
    } catch (e) {
      failing.push(`state directory not writable (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
    return failing.length === 0 ? { ok: true } : { ok: false, failing };
  }

  get log(): Logger {
    return this.o.log;
  }

  /** Devices attached now (for tests and the `info` command). */
  attached(): { deviceId: string; path: string; busy: boolean }[] {
    return [...this.byId.values()].map((a) => ({
      deviceId: a.deviceId,
      path: a.path,
      busy: this.busy(a),
    }));
  }

  /**
   * An update is in flight: the ledger has a job. Not "a run is in progress": a run goes on for
   * a moment after its final status (it reads the device again for the inventory), and a
   * command sent as soon as the final status was seen found the device "busy" (E_AGENT_BUSY).
   */
  private busy(a: Attached): boolean {
    return this.ledger(a.deviceId).job !== undefined;
  }

  async start(): Promise<void> {
    const c = this.o.config;
    const tls = c.mqtt.tls;
    // First, so /healthz answers and /readyz says why not while the broker is being reached.
    if (c.metrics.enabled) {
      this.probe = await startProbeServer({
        ...c.metrics.listen,
        registry: this.metrics.registry,
        ready: () => this.readiness(),
      });
      this.log.info({ url: this.probe.url }, "metrics, /healthz and /readyz served");
    }
    const commandsTopic = this.t.commands(c.gatewayId);
    // Made before connecting and installed with connectMqtt's onMessage: the commands a
    // persistent session queued while the gateway was away arrive right behind the CONNACK,
    // and were dropped when the responder was attached later (issue 12 defect 16).
    const respond = commandResponder(
      commandsTopic,
      async (r) => {
        const res = await this.onCommand(r);
        // Operators act on devices through these: each one is in the log with its answer.
        this.log.info(
          { deviceId: r.deviceId, command: r.command, ok: res.ok, code: res.error?.code },
          `command ${r.command}${res.ok ? "" : ` refused: ${res.error?.message}`}`,
        );
        return res;
      },
      {
        // "Logged and dropped" (docs/mqtt-api.md; issue 13 item 15); the texts are bounded.
        onRefused: (r) =>
          this.log.warn(
            { code: r.code, command: r.command, replyTo: r.replyTo },
            `command dropped: ${r.reason}`,
          ),
      },
    );
    this.client = await this.connect({
      url: c.mqtt.url,
      clientId: c.mqtt.clientId ?? `esp-ota-gw-${c.gatewayId}`,
      ...(c.mqtt.username !== undefined ? { username: c.mqtt.username } : {}),
      ...(c.mqtt.password !== undefined ? { password: c.mqtt.password } : {}),
      ...(tls?.ca ? { ca: readFileSync(tls.ca) } : {}),
      ...(tls?.cert ? { cert: readFileSync(tls.cert) } : {}),
      ...(tls?.key ? { key: readFileSync(tls.key) } : {}),
      ...(tls ? { rejectUnauthorized: tls.rejectUnauthorized } : {}),
      // 5 means "prefer MQTT 5": connectMqtt falls back to 3.1.1 when the broker refuses 5 (aedes).
      // Forced when the config names a version (docs/configuration.md); otherwise 5 with the
      // fallback to 3.1.1 (the embedded aedes broker speaks 3.1.1).
      ...(c.mqtt.protocolVersion !== undefined ? { protocolVersion: c.mqtt.protocolVersion } : {}),
      keepalive: c.mqtt.keepaliveSec,
      // A persistent session: QoS 1 notices published while the gateway was away are queued.
      clean: false,
      will: {
        topic: this.t.presence(c.gatewayId),
        // Made for every CONNECT: each connection's will orders after its online (presence seq).
        payload: () => this.pub.willForNextConnection(),
        retain: true,
        qos: 1,
      },
      onMessage: (client, topic, payload, packet) => {
        respond(client, topic, payload, packet);
        this.onMessage(topic, payload);
      },
    });
    const client = this.client;
    client.on("connect", () => {
      // Installed after the first connection: every connect here is a reconnect.
      this.metrics.mqttReconnected();
      this.log.info({ url: c.mqtt.url }, "broker connected");
      void this.pub.online();
      void this.publishInventory();
    });
    client.on("offline", () => this.log.warn("broker unreachable; reconnecting"));
    client.on("error", (e) => this.log.warn({ err: e.message }, "broker error"));
    await this.pub.online();
    // Kept when the agent stops (no UNSUBSCRIBE): the session then queues QoS 1 commands.
    await subscribeCommands(client, commandsTopic).catch((e: unknown) =>
      this.log.error({ code: codeOf(e), err: String(e) }, "cannot subscribe to commands"),
    );
    this.logTimer = setInterval(() => this.pub.flushLogs(), 1000);
    this.logTimer.unref();
    this.healthTimer = setInterval(() => {
      if (this.client?.connected) void this.pub.online();
    }, this.o.presenceHealthMs ?? PRESENCE_HEALTH_EVERY_MS);
    this.healthTimer.unref();
    const handlers = {
      onAdded: (p: string) => {
        if (!this.stopping) this.portInput(p, { kind: "seen" });
      },
      onRemoved: (p: string) => this.portInput(p, { kind: "removed", exists: existsSync(p) }),
      onError: (e: unknown) => this.log.warn({ err: String(e) }, "port scan failed"),
    };
    this.watcher = this.o.ports
      ? this.o.ports.source(handlers)
      : new PortWatcher(c.serial.ports, c.serial.rescanMs, handlers);
    await this.watcher.start();
    this.scanned = true;
    this.log.info({ gatewayId: c.gatewayId }, "agent started");
  }

  /** connectMqtt; a failure also closes the probe listener start() opened before it. */
  private async connect(o: Parameters<typeof connectMqtt>[0]): Promise<MqttClient> {
    try {
      return await connectMqtt(o);
    } catch (e) {
      await this.probe?.close();
      this.metrics.close();
      throw e;
    }
  }

  /**
   * Graceful stop (SIGTERM): progress is in the ledgers; ports close; presence goes offline.
   * Bounded: with the broker gone, the offline presence and the DISCONNECT are given up after
   * STOP_PUBLISH_MS (a QoS 1 publish otherwise waits for a reconnect forever, and the process
   * never exited: issue 13 item 6, `npm run bench:agent`). The command subscription stays.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.watcher?.stop();
    if (this.logTimer) clearInterval(this.logTimer);
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.pub.flushLogs();
    const running = [...this.byId.values()].map((a) => a.running);
    for (const path of [...this.ports.keys()]) this.portInput(path, { kind: "stop" });
    await Promise.allSettled(running);
    await this.store.flush();
    const client = this.client;
    if (client?.connected) {
      await within(this.pub.offline(), STOP_PUBLISH_MS);
      const ended = await within(
        client.endAsync().then(() => true),
        STOP_PUBLISH_MS,
      );
      if (ended !== true) await client.endAsync(true).catch(() => undefined);
    } else if (client) {
      // Not connected: the broker publishes (or published) the will, which says the same.
      await client.endAsync(true).catch(() => undefined);
    }
    await this.probe?.close();
    this.metrics.close();
    this.log.info("agent stopped");
  }

  /** Publishes the inventory (never rejects): attached devices and ports in conflict. */
  private publishInventory(): Promise<void> {
    try {
      return this.pub.inventory(...this.inventoryLists());
    } catch (e) {
      // A ledger that cannot be read (busy()) must not take the inventory down with it.
      this.log.warn({ code: codeOf(e), err: String(e) }, "inventory not published");
      return Promise.resolve();
    }
  }

  private inventoryLists(): [InventoryDevice[], InventoryConflict[]] {
    const devices: InventoryDevice[] = [...this.byId.values()].map((a) => {
      const running = runningAppOf(a.info);
      return {
        deviceId: a.deviceId,
        port: a.path,
        chip: a.info.chip,
        ...(running ? { running } : {}),
        otadata: otadataOf(a.info),
        busy: this.busy(a),
        attachedAt: a.attachedAt,
      };
    });
    const conflicts: InventoryConflict[] = [];
    for (const [port, p] of this.ports)
      if (p.state.kind === "conflict")
        conflicts.push({
          deviceId: p.state.deviceId,
          port,
          heldBy: p.state.heldBy,
          code: "E_AGENT_DEVICE_CONFLICT",
        });
    return [devices, conflicts];
  }

  private ledger(id: string): DeviceLedger {
    let l = this.ledgers.get(id);
    if (!l) {
      l = this.store.load(id);
      this.ledgers.set(id, l);
    }
    return l;
  }

  /**
   * Changes the device's ledger now and writes it in the background; the promise says when it is
   * on disk. Callers that publish or reply on the strength of the change await it (status(), the
   * retry command); the others need not, because the next status awaits a write that includes
   * their change. A failed write is logged here and surfaces at the next awaited save.
   */
  private save(id: string, f: (l: DeviceLedger) => void): Promise<void> {
    const l = this.ledger(id);
    f(l);
    const written = this.store.save(l);
    written.catch((e: unknown) =>
      this.log.error({ deviceId: id, err: String(e) }, "ledger write failed"),
    );
    return written;
  }

  // ---- ports and devices ------------------------------------------------------------------

  private portContext(): PortContext {
    const base = this.o.config.serial.rescanMs * 2;
    return { now: Date.now(), retryBaseMs: base, retryMaxMs: Math.max(base, RETRY_MAX_MS) };
  }

  /** Feeds one input to a port's state machine and carries out the effects it returns. */
  private portInput(path: string, input: PortInput): void {
    let p = this.ports.get(path);
    if (!p) {
      if (input.kind !== "seen") return;
      p = { state: { kind: "absent" }, gen: 0 };
      this.ports.set(path, p);
    }
    const from = p.state.kind;
    const { state, effects } = transition(p.state, input, this.portContext());
    p.state = state;
    if (from !== state.kind) {
      this.log.debug({ port: path, from, to: state.kind, input: input.kind }, "port state");
      // The inventory lists the ports in conflict: one that leaves that state is taken off.
      if (from === "conflict" && !this.stopping) void this.publishInventory();
    }
    if (state.kind === "gone") {
      clearTimeout(p.retry);
      this.ports.delete(path);
    }
    for (const e of effects) this.portEffect(path, p, e);
  }

  private portEffect(path: string, p: PortEntry, e: PortEffect): void {
    switch (e.kind) {
      case "identify":
        p.gen++;
        this.identify(path, p, p.gen).catch((err: unknown) => this.bug("identify", err));
        return;
      case "attach":
        this.attachDevice(path, p, e.deviceId).catch((err: unknown) => this.bug("attach", err));
        return;
      case "detach":
        this.unlist(path, e.deviceId, e.why);
        return;
      case "closeLink":
        p.gen++;
        p.link?.close();
        p.link = undefined;
        return;
      case "scheduleRetry": {
        clearTimeout(p.retry);
        if (this.stopping) return;
        p.retry = setTimeout(
          () => {
            // The watcher no longer lists it: it went while we waited.
            if (this.watcher && !this.watcher.current.has(path))
              this.portInput(path, { kind: "removed", exists: existsSync(path) });
            else this.portInput(path, { kind: "retryDue" });
          },
          Math.max(0, e.at - Date.now()),
        );
        p.retry.unref();
        return;
      }
      case "report":
        this.log.warn(
          { port: path, deviceId: e.deviceId, heldBy: e.heldBy, code: e.code },
          `${path} reports ${e.deviceId}, which ${e.heldBy} serves: not attached (conflict)`,
        );
        void this.publishInventory();
        return;
    }
  }

  /** A promise of the agent that rejected where none should: logged, never unhandled. */
  private bug(where: string, e: unknown): void {
    this.log.error({ code: "E_INTERNAL", where, err: String(e).slice(0, 500) }, "internal error");
  }

  /** Whether `p` is still the entry of `path` and no newer effect superseded identification `gen`. */
  private current(path: string, p: PortEntry, gen?: number): boolean {
    return this.ports.get(path) === p && (gen === undefined || p.gen === gen);
  }

  /** Opens the port (if needed) and reads and checks its INFO; answers identified/attachFailed. */
  private async identify(path: string, p: PortEntry, gen: number): Promise<void> {
    const c = this.o.config;
    try {
      let link = p.link;
      if (!link || link.closed) {
        const opened: AgentLink = await (this.o.ports?.open ?? DeviceLink.open)(path, {
          consoleBaud: c.serial.consoleBaud,
          transferBaud: c.serial.transferBaud,
          onLog: (line) => {
            const d = servedDevice(p.state);
            if (d !== undefined && this.ports.get(path) === p) this.pub.deviceLine(d, line);
          },
          onClosed: () => {
            if (this.ports.get(path) === p && p.link === opened)
              this.portInput(path, { kind: "closed" });
          },
          onSessionEnd: (stats, code) => {
            this.metrics.frameError("crc", stats.crcErrors);
            this.metrics.frameError("gap", stats.gapResyncs);
            if (code === "E_UART_TIMEOUT") this.metrics.frameError("timeout");
          },
        });
        if (!this.current(path, p, gen)) {
          opened.close();
          return;
        }
        p.link = opened;
        link = opened;
      }
      let info: Info | undefined;
      for (let i = 1; i <= IDENTIFY_ATTEMPTS && !info; i++) {
        try {
          info = await link.readInfo();
        } catch (e) {
          if (i === IDENTIFY_ATTEMPTS || link.closed) throw e;
        }
      }
      if (!this.current(path, p, gen)) return;
      // Everything the device says is checked here, once (issue 12 defect 3).
      const check = checkDeviceInfo(info!, this.byId.size);
      if (!check.ok) {
        this.log.warn(
          { port: path, code: check.code },
          `device on ${path} refused: ${check.reason}`,
        );
        this.portInput(path, { kind: "attachFailed", code: check.code });
        return;
      }
      p.info = info!;
      const holder = this.byId.get(check.deviceId);
      this.portInput(path, {
        kind: "identified",
        deviceId: check.deviceId,
        ...(holder && holder.path !== path ? { heldBy: holder.path } : {}),
      });
    } catch (e) {
      if (!this.current(path, p, gen)) return;
      const code = codeOf(e);
      this.log.warn(
        { port: path, code },
        `cannot identify a device on ${path}: ${String((e as Error)?.message ?? e).slice(0, 300)}`,
      );
      this.portInput(path, { kind: "attachFailed", code });
    }
  }

  /**
   * Lists the identified device and publishes what a newly attached device needs. Any failure
   * is `attachFailed`: the state machine detaches it and schedules a retry (issue 12 defect 1:
   * a failure here used to close the link and leave the device listed for good).
   */
  private async attachDevice(path: string, p: PortEntry, deviceId: string): Promise<void> {
    const link = p.link;
    const info = p.info;
    if (!link || !info) {
      this.portInput(path, { kind: "attachFailed", code: "E_INTERNAL" });
      return;
    }
    const a: Attached = { deviceId, path, link, info, attachedAt: this.now().toISOString() };
    this.byId.set(deviceId, a);
    const served = () => this.ports.get(path) === p && servedDevice(p.state) === deviceId;
    try {
      const running = runningAppOf(info);
      this.log.info(
        { deviceId, port: path, chip: info.chip, version: running?.version, slot: running?.slot },
        "device attached",
      );
      void this.publishInventory();
      const l = this.ledger(deviceId);
      // Republish what the ledger last said (a crash may have come between save and publish);
      // the publisher bounds a status that no longer fits and never throws.
      if (l.lastStatus) await this.pub.status(l.lastStatus);
      if (!served()) return;
      if (l.job) this.kick(a);
      else if (!l.lastStatus || !isFinalState(l.lastStatus.state))
        await this.status(deviceId, "idle", deviceFields(info));
      if (!served()) return;
      await this.client?.subscribeAsync(this.t.desired(deviceId), { qos: 1 });
    } catch (e) {
      if (!served()) return;
      const code = codeOf(e);
      this.log.warn(
        { deviceId, port: path, code },
        `attach of ${deviceId} on ${path} failed: ${String((e as Error)?.message ?? e).slice(0, 300)}`,
      );
      this.portInput(path, { kind: "attachFailed", code });
    }
  }

  /** The detach effect: the device is no longer served on `path`. */
  private unlist(path: string, deviceId: string, why: string): void {
    const a = this.byId.get(deviceId);
    if (a?.path !== path) return;
    this.byId.delete(deviceId);
    // The link itself is closed by the closeLink effect that comes with every detach.
    this.log.warn({ deviceId, port: path }, `device detached (${why})`);
    if (this.stopping) return;
    this.pub.forget(deviceId);
    void this.client?.unsubscribeAsync(this.t.desired(deviceId)).catch(() => undefined);
    void this.publishInventory();
    // A port refused because this one held its device is identified again now (defect 5).
    for (const [q, e] of [...this.ports])
      if (e.state.kind === "conflict" && e.state.deviceId === deviceId && e.state.heldBy === path)
        this.portInput(q, { kind: "peerLeft" });
  }

  // ---- MQTT ---------------------------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer): void {
    try {
      this.onMessageUnsafe(topic, payload);
    } catch (e) {
      // Thrown inside mqtt.js's packet handling this would end the process.
      this.bug("message", e);
    }
  }

  private onMessageUnsafe(topic: string, payload: Buffer): void {
    const ref = parseTopic(this.t.prefix, topic);
    if (ref?.kind !== "desired") return;
    const a = this.byId.get(ref.id);
    if (!a) return;
    if (payload.length === 0) {
      this.onNotice(a, null);
      return;
    }
    const p = parseMessage("notice", payload);
    if (!p.ok) {
      this.log.warn(
        { deviceId: a.deviceId, code: "E_AGENT_NOTICE_INVALID" },
        `bad notice: ${p.reason.slice(0, 200)}`,
      );
      return;
    }
    this.onNotice(a, p.value);
  }

  private onNotice(a: Attached, notice: UpdateNotice | null): void {
    const l = this.ledger(a.deviceId);
    const d = decideNotice(l, notice, this.settings.trust);
    const log = this.log.child({ deviceId: a.deviceId, step: "parseNotice" });
    switch (d.action) {
      case "ignore":
        log.debug(d.reason);
        return;
      case "refuse":
        // A final status with the code, so the rollout that published it counts it rather than
        // waiting for its wave timeout (issue 12 defect 16).
        log.warn({ code: d.code, releaseId: d.notice.releaseId }, `notice refused: ${d.reason}`);
        void this.refuse(a.deviceId, d);
        return;
      case "start":
        log.info({ releaseId: d.notice.releaseId }, `notice for ${d.notice.releaseId}`);
        this.save(a.deviceId, (x) => {
          x.job = { notice: d.notice, step: "parseNotice", startedAt: this.now().toISOString() };
          x.pending = undefined;
        });
        this.kick(a);
        return;
      case "defer":
        log.info("the running update is past activation; the new notice waits for it");
        this.save(a.deviceId, (x) => {
          x.pending = d.notice ?? undefined;
        });
        return;
      case "cancel":
        log.info({ code: d.code }, d.reason);
        this.save(a.deviceId, (x) => {
          x.pending = d.next;
        });
        a.abort?.abort(new EspOtaError(d.code, d.reason, { deviceId: a.deviceId }));
        return;
    }
  }

  /** Signs, records and publishes the final status that answers a refused notice. */
  private async refuse(
    deviceId: string,
    d: Extract<NoticeDecision, { action: "refuse" }>,
  ): Promise<void> {
    try {
      const signed = signStatus(
        // Bounded before it is signed and recorded, as every status (defect 1).
        boundedStatus(refusalStatus(this.ledger(deviceId), d, this.o.config.gatewayId, this.now()))
          .status,
        this.statusKey,
      );
      await this.save(deviceId, (x) => recordRefusal(x, d, signed));
      this.metrics.noticeRefused(d.code);
      await this.publishStatus(signed);
    } catch (e) {
      this.log.warn({ deviceId, code: d.code, err: String(e) }, "refusal status not published");
    }
  }

  /** Builds (nextStatus), signs, records and publishes the device's next status (seq + 1). */
  private async status(
    deviceId: string,
    state: DeviceState,
    extra: Partial<DeviceStatus> = {},
  ): Promise<void> {
    const l = this.ledger(deviceId);
    const job = l.job;
    const a = this.byId.get(deviceId);
    const now = this.now();
    const next = nextStatus({
      ledger: l,
      state,
      extra,
      gatewayId: this.o.config.gatewayId,
      now,
      ...(a ? { device: deviceFields(a.info) } : {}),
    });
    if (!next) {
      this.log.debug(
        { deviceId, state, prev: l.lastStatus?.state },
        "status would go backwards; not published",
      );
      return;
    }
    // Bounded before it is signed and recorded: the ledger never holds a status that cannot be
    // published (issue 12 defect 1: a restart republished it and attach failed for good).
    const bounded = boundedStatus(next);
    if (bounded.replaced)
      this.log.warn(
        { deviceId, state, code: next.error?.code, err: next.error?.message.slice(0, 300) },
        "status too large for the schema: recorded and published in a bounded form",
      );
    // Signed by this gateway (docs/security.md G1), so a rollout run with --gateways can tell it
    // from a forgery; the ledger keeps the signed form, which is what a restart republishes.
    const signed = signStatus(bounded.status, this.statusKey);
    const at = now.toISOString();
    await this.save(deviceId, (x) => {
      x.seq = signed.seq;
      x.lastStatus = signed;
      if (isFinalState(state) && job) {
        x.lastFinal = { releaseId: job.notice.releaseId, state: state as FinalState, at };
        x.lastNotice = job.notice;
        x.job = undefined;
      }
    });
    if (isFinalState(state) && job)
      this.metrics.updateFinished(state as FinalState, signed.error?.code);
    await this.pub.status(signed);
  }

  private async publishStatus(st: DeviceStatus): Promise<void> {
    await this.pub.status(st);
  }

  /**
   * A progress event, and now and then the retained status with the bytes done (issue 12
   * defect 16: its `progress.bytes` stayed 0 through a transfer).
   */
  private progress(a: Attached, step: string, bytes: number, total: number): void {
    try {
      this.progressUnsafe(a, step, bytes, total);
    } catch (e) {
      // Called from inside a download or transfer: reporting must never break it.
      this.bug("progress", e);
    }
  }

  private progressUnsafe(a: Attached, step: string, bytes: number, total: number): void {
    const l = this.ledger(a.deviceId);
    const job = l.job;
    if (!job) return;
    this.pub.progress(a.deviceId, job.notice.releaseId, step, bytes, total);
    const last = l.lastStatus;
    if (
      last?.progress !== undefined &&
      last.step === step &&
      last.releaseId === job.notice.releaseId &&
      !isFinalState(last.state) &&
      this.pub.statusProgressDue(a.deviceId, bytes, total)
    )
      this.status(a.deviceId, last.state, { step, progress: { bytes, total } }).catch(
        (e: unknown) =>
          this.log.warn({ deviceId: a.deviceId, code: codeOf(e) }, "progress status not recorded"),
      );
  }

  // ---- updates --------------------------------------------------------------------------------

  /** Starts the device's ledger job unless one is running (one update per device at a time). */
  private kick(a: Attached): void {
    if (a.running || this.stopping) return;
    const ac = new AbortController();
    a.abort = ac;
    const log = this.log.child({ deviceId: a.deviceId });
    let ran: Job | undefined;
    a.running = this.updates
      .run(async (): Promise<RunResult | undefined> => {
        ran = this.ledger(a.deviceId).job;
        if (!ran || this.stopping) return undefined;
        this.metrics.updateStarted();
        if (ac.signal.aborted) {
          // Cancelled while waiting for a slot: nothing was sent to the device.
          const r = ac.signal.reason as EspOtaError;
          await this.status(a.deviceId, "cancelled", {
            step: "parseNotice",
            error: { code: r.code, message: r.message, step: "parseNotice" },
            finishedAt: this.now().toISOString(),
          });
          return { kind: "final", state: "cancelled" };
        }
        this.portInput(a.path, { kind: "jobStarted" });
        void this.publishInventory();
        return runUpdate({
          deviceId: a.deviceId,
          job: ran,
          settings: this.settings,
          ports: {
            device: () => {
              const cur = this.byId.get(a.deviceId);
              if (!cur || cur.link.closed)
                throw new EspOtaError("E_AGENT_DEVICE_GONE", `${a.deviceId} is not attached`, {
                  deviceId: a.deviceId,
                });
              return cur.link;
            },
            ledger: {
              get: () => this.ledger(a.deviceId),
              save: (f) => this.save(a.deviceId, f),
              saveNow: (f) => {
                const l = this.ledger(a.deviceId);
                f(l);
                this.store.saveNow(l);
              },
            },
            publish: {
              status: (state, extra) => this.status(a.deviceId, state, extra),
              progress: (step, bytes, total) => this.progress(a, step, bytes, total),
            },
            clock: {
              now: this.now,
              sleep: (ms) => new Promise<void>((r) => setTimeout(r, ms).unref()),
            },
            net: httpNet(this.settings, (f) => this.downloads.run(f)),
            log,
            observe: (ob) => this.observe(ob),
          },
          signal: ac.signal,
          stopping: () => this.stopping,
        });
      })
      .catch((e) => log.error({ err: String(e) }, "update runner crashed"))
      .then(async (r) => {
        a.running = undefined;
        a.abort = undefined;
        this.portInput(a.path, { kind: "jobEnded" });
        if (this.stopping) return;
        const cur = this.byId.get(a.deviceId);
        if (cur) {
          try {
            // Checked as at attach: a device may say something else after an update.
            this.acceptInfo(cur, await cur.link.readInfo());
          } catch {
            // The device may be rebooting or gone; the inventory keeps the last INFO.
          }
        }
        void this.publishInventory();
        const l = this.ledger(a.deviceId);
        if (r?.kind !== "final" || !cur) return;
        if (l.job && l.job !== ran) {
          // A job recorded while this run was finishing (the retry command, a notice right
          // after the final status) found the device busy and was not started: start it now.
          // Before this, such a job sat in the ledger until the agent restarted.
          this.kick(cur);
        } else if (l.pending) {
          const next = l.pending;
          this.save(a.deviceId, (x) => {
            x.pending = undefined;
          });
          this.onNotice(cur, next);
        }
      })
      // No promise of the agent may reject unhandled (issue 12 defect 3): a ledger that cannot
      // be read here must not end the process.
      .catch((e: unknown) => log.error({ code: codeOf(e), err: String(e) }, "after the update"));
  }

  /** What an update run saw, into the metrics (docs/metrics.md). */
  private observe(o: UpdateObservation): void {
    const m = this.metrics;
    switch (o.kind) {
      case "downloaded":
        m.downloaded(o.bytes);
        return;
      case "downloadEnded":
        m.downloadEnded(o.ms / 1000, o.ok);
        if (o.resumedFrom > 0) m.resumed("download");
        return;
      case "transferred":
        m.transferred(o.bytes);
        return;
      case "transferEnded":
        m.transferEnded(o.ms / 1000, o.ok);
        return;
      case "transferResumed":
        m.resumed("transfer");
        return;
      case "deviceReset":
        m.reboot(o.expected ? "update" : "unexpected");
        return;
    }
  }

  // ---- commands -----------------------------------------------------------------------------

  /**
   * A fresh INFO of an attached device, checked as at attach (a device may say something else
   * later: issue 12 defect 3): kept when it passes, else the last one stays and the refusal is
   * returned (and logged).
   */
  private acceptInfo(a: Attached, info: Info): { code: ErrorCode; reason: string } | undefined {
    const check = checkDeviceInfo(info, 0);
    if (check.ok && check.deviceId === a.deviceId) {
      a.info = info;
      return undefined;
    }
    const refusal = check.ok
      ? { code: "E_AGENT_DEVICE_INFO" as const, reason: `the device now reports ${check.deviceId}` }
      : { code: check.code, reason: check.reason };
    this.log.warn({ deviceId: a.deviceId, port: a.path, code: refusal.code }, refusal.reason);
    return refusal;
  }

  private async onCommand(r: CommandRequest): Promise<CommandResponse> {
    const base = { format: 1 as const, gatewayId: this.o.config.gatewayId, command: r.command };
    const err = (code: ErrorCode, message: string): CommandResponse => ({
      ...base,
      ok: false,
      error: { code, message },
    });
    if (r.command === "info" && r.deviceId === undefined)
      return { ...base, ok: true, result: { devices: this.attached(), startedAt: this.startedAt } };
    const a = r.deviceId !== undefined ? this.byId.get(r.deviceId) : undefined;
    if (!a)
      return err("E_AGENT_UNKNOWN_DEVICE", `${r.deviceId ?? "(no deviceId)"} is not attached here`);
    const l = this.ledger(a.deviceId);
    switch (r.command) {
      case "info": {
        if (this.busy(a))
          return { ...base, ok: true, result: { busy: true, status: l.lastStatus } };
        let fresh: Info;
        try {
          fresh = await a.link.readInfo();
        } catch (e) {
          return err(codeOf(e), (e as Error).message);
        }
        const refused = this.acceptInfo(a, fresh);
        if (refused) return err(refused.code, refused.reason);
        return {
          ...base,
          ok: true,
          result: { busy: false, ...deviceFields(a.info), port: a.path },
        };
      }
      case "cancel": {
        if (!l.job) return err("E_AGENT_NO_JOB", "no update in flight");
        if (pastPointOfNoReturn(l.job.step))
          return err(
            "E_AGENT_BUSY",
            `the update is at ${l.job.step}: past activation, it cannot be cancelled`,
          );
        a.abort?.abort(
          new EspOtaError("E_AGENT_CANCELLED", "cancelled by an operator", {
            deviceId: a.deviceId,
          }),
        );
        return { ...base, ok: true, result: { cancelled: l.job.notice.releaseId } };
      }
      case "retry": {
        if (l.job) return err("E_AGENT_BUSY", `${l.job.notice.releaseId} is in flight`);
        const notice = l.lastNotice;
        if (!notice) return err("E_AGENT_NO_JOB", "no earlier update to retry");
        try {
          await this.save(a.deviceId, (x) => {
            x.job = { notice, step: "parseNotice", startedAt: this.now().toISOString() };
            x.lastFinal = undefined;
          });
        } catch (e) {
          return err("E_AGENT_STATE", (e as Error).message);
        }
        this.kick(a);
        return { ...base, ok: true, result: { retrying: notice.releaseId } };
      }
      case "reboot": {
        if (this.busy(a)) return err("E_AGENT_BUSY", "an update is in flight");
        let fresh: Info;
        try {
          fresh = await a.link.reboot();
        } catch (e) {
          return err(codeOf(e), (e as Error).message);
        }
        this.metrics.reboot("command");
        const refused = this.acceptInfo(a, fresh);
        if (refused) return err(refused.code, refused.reason);
        void this.publishInventory();
        return { ...base, ok: true, result: { rebooted: true, ...deviceFields(a.info) } };
      }
    }
  }
}
