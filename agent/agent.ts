/**
 * The gateway agent (issue 6; docs/operations.md): watches the configured serial ports,
 * identifies each ESP32 over the UART OTA protocol, subscribes to its desired-update topic,
 * runs one update at a time per device (agent/update.ts) with bounded concurrency across
 * devices, and reports presence, inventory, status, progress and device log lines over MQTT
 * (docs/mqtt-api.md). All decisions are in src/gateway (pure); this file wires them to the
 * broker, the ports and the state directory.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { EspOtaError, isEspOtaError } from "../src/errors.js";
import { deviceIdOf, otadataOf, runningAppOf } from "../src/gateway/device-view.js";
import {
  type DeviceLedger,
  decideNotice,
  type FinalState,
  type Job,
  pastPointOfNoReturn,
  statusMayFollow,
} from "../src/gateway/ledger.js";
import { connectMqtt, serveCommands } from "../src/mqtt/client.js";
import {
  type CommandRequest,
  type CommandResponse,
  type DeviceState,
  type DeviceStatus,
  encodeMessage,
  type InventoryDevice,
  isFinalState,
  parseMessage,
  type UpdateNotice,
} from "../src/mqtt/messages.js";
import { signStatus } from "../src/mqtt/status-auth.js";
import { parseTopic, type Topics, topics } from "../src/mqtt/topics.js";
import type { ManifestSigningKey } from "../src/release/keyring.js";
import { readTrustPolicy } from "../src/release/keyring-fs.js";
import type { Info } from "../src/uart/messages.js";
import { VERSION } from "../src/version.js";
import type { AgentConfig } from "./config.js";
import { loadOrCreateGatewayKey } from "./gateway-key.js";
import { DeviceLink, type LinkOptions } from "./link.js";
import { PortWatcher } from "./ports.js";
import { LedgerStore } from "./store.js";
import { deviceFields, type RunResult, runUpdate, type UpdateSettings } from "./update.js";

/** Retries of the identifying INFO on a newly seen port (a device may be booting). */
const IDENTIFY_ATTEMPTS = 3;
/** Progress events: at most one per device per this many ms (status carries the rest). */
const PROGRESS_EVERY_MS = 500;

interface Attached {
  deviceId: string;
  path: string;
  link: DeviceLink;
  attachedAt: string;
  info: Info;
  running?: Promise<void>;
  abort?: AbortController;
  lastProgressAt: number;
  /** Attached again after its link closed (see Agent.portRemoved). */
  reattached: boolean;
  logBucket: { tokens: number; at: number; lines: string[]; dropped: number };
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
    open: (path: string, o: LinkOptions) => Promise<DeviceLink>;
  };
}

export class Agent {
  readonly t: Topics;
  private client: MqttClient | undefined;
  private watcher: PortSource | undefined;
  private readonly store: LedgerStore;
  private readonly ledgers = new Map<string, DeviceLedger>();
  private readonly byId = new Map<string, Attached>();
  private readonly byPath = new Map<string, Attached>();
  private readonly identifying = new Set<string>();
  /** Ports whose link closed under us while the watcher may still list the old node. */
  private readonly closedPorts = new Set<string>();
  private readonly updates: Semaphore;
  private readonly downloads: Semaphore;
  private readonly settings: UpdateSettings;
  /** Signs every status (agent/gateway-key.ts); its identity is `esp-ota agent key`. */
  private readonly statusKey: ManifestSigningKey;
  private stopCommands: (() => Promise<void>) | undefined;
  private logTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private readonly now: () => Date;
  readonly startedAt: string;

  constructor(private readonly o: AgentOptions) {
    const c = o.config;
    this.t = topics(c.mqtt.prefix);
    this.now = o.now ?? (() => new Date());
    this.startedAt = this.now().toISOString();
    this.store = new LedgerStore(c.stateDir);
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
    const trust = readTrustPolicy(c.trust.policy);
    const revoked = [...new Set([...trust.revoked, ...c.trust.revoked])];
    this.settings = {
      trust: {
        ...trust,
        revoked,
        threshold: Math.max(trust.threshold, c.trust.threshold ?? trust.threshold),
      },
      policy: {
        allowDowngrade: c.policy.allowDowngrade,
        confirmTimeoutMs: c.policy.confirmTimeoutMs,
        maxManifestBytes: c.policy.maxManifestBytes,
      },
      download: c.download,
      ...(c.download.ca ? { tls: { ca: readFileSync(c.download.ca) } } : {}),
      stagingDir: c.stagingDir,
      transferAttempts: 3,
    };
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
    this.client = await connectMqtt({
      url: c.mqtt.url,
      clientId: c.mqtt.clientId ?? `esp-ota-gw-${c.gatewayId}`,
      ...(c.mqtt.username !== undefined ? { username: c.mqtt.username } : {}),
      ...(c.mqtt.password !== undefined ? { password: c.mqtt.password } : {}),
      ...(tls?.ca ? { ca: readFileSync(tls.ca) } : {}),
      ...(tls?.cert ? { cert: readFileSync(tls.cert) } : {}),
      ...(tls?.key ? { key: readFileSync(tls.key) } : {}),
      ...(tls ? { rejectUnauthorized: tls.rejectUnauthorized } : {}),
      // 5 means "prefer MQTT 5": connectMqtt falls back to 3.1.1 when the broker refuses 5 (aedes).
      ...(c.mqtt.protocolVersion === 4 ? { protocolVersion: 4 as const } : {}),
      keepalive: c.mqtt.keepaliveSec,
      // A persistent session: QoS 1 notices published while the gateway was away are queued.
      clean: false,
      will: {
        topic: this.t.presence(c.gatewayId),
        payload: this.presence("offline"),
        retain: true,
        qos: 1,
      },
    });
    const client = this.client;
    client.on("connect", () => {
      this.log.info({ url: c.mqtt.url }, "broker connected");
      void this.publishPresence("online");
      void this.publishInventory();
    });
    client.on("offline", () => this.log.warn("broker unreachable; reconnecting"));
    client.on("error", (e) => this.log.warn({ err: e.message }, "broker error"));
    client.on("message", (topic, payload) => this.onMessage(topic, payload));
    await this.publishPresence("online");
    this.stopCommands = serveCommands(client, this.t.commands(c.gatewayId), async (r) => {
      const res = await this.onCommand(r);
      // Operators act on devices through these: each one is in the log with its answer.
      this.log.info(
        { deviceId: r.deviceId, command: r.command, ok: res.ok, code: res.error?.code },
        `command ${r.command}${res.ok ? "" : ` refused: ${res.error?.message}`}`,
      );
      return res;
    });
    this.logTimer = setInterval(() => this.flushLogs(), 1000);
    this.logTimer.unref();
    const handlers = {
      onAdded: (p: string) => void this.attach(p),
      onRemoved: (p: string) => this.portRemoved(p),
      onError: (e: unknown) => this.log.warn({ err: String(e) }, "port scan failed"),
    };
    this.watcher = this.o.ports
      ? this.o.ports.source(handlers)
      : new PortWatcher(c.serial.ports, c.serial.rescanMs, handlers);
    await this.watcher.start();
    this.log.info({ gatewayId: c.gatewayId }, "agent started");
  }

  /** Graceful stop (SIGTERM): progress is in the ledgers; ports close; presence goes offline. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.watcher?.stop();
    if (this.logTimer) clearInterval(this.logTimer);
    this.flushLogs();
    for (const a of this.byId.values()) a.link.close();
    await Promise.allSettled([...this.byId.values()].map((a) => a.running));
    await this.store.flush();
    await this.stopCommands?.().catch(() => undefined);
    const client = this.client;
    if (client) {
      await this.publishPresence("offline").catch(() => undefined);
      await client.endAsync().catch(() => undefined);
    }
    this.log.info("agent stopped");
  }

  private presence(state: "online" | "offline"): Uint8Array {
    return encodeMessage("presence", {
      format: 1,
      gatewayId: this.o.config.gatewayId,
      state,
      version: VERSION,
      at: this.now().toISOString(),
    });
  }

  private async publishPresence(state: "online" | "offline"): Promise<void> {
    await this.client?.publishAsync(
      this.t.presence(this.o.config.gatewayId),
      Buffer.from(this.presence(state)),
      {
        qos: 1,
        retain: true,
      },
    );
  }

  private async publishInventory(): Promise<void> {
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
    const payload = encodeMessage("inventory", {
      format: 1,
      gatewayId: this.o.config.gatewayId,
      devices,
      at: this.now().toISOString(),
    });
    await this.client
      ?.publishAsync(this.t.inventory(this.o.config.gatewayId), Buffer.from(payload), {
        qos: 1,
        retain: true,
      })
      .catch((e) => this.log.warn({ err: String(e) }, "inventory publish failed"));
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

  private async attach(path: string): Promise<void> {
    if (this.byPath.has(path) || this.identifying.has(path) || this.stopping) return;
    this.identifying.add(path);
    const c = this.o.config;
    let link: DeviceLink | undefined;
    try {
      const pending: { a?: Attached } = {};
      link = await (this.o.ports?.open ?? DeviceLink.open)(path, {
        consoleBaud: c.serial.consoleBaud,
        transferBaud: c.serial.transferBaud,
        onLog: (line) => pending.a && this.deviceLog(pending.a, line),
        onClosed: () => this.detach(path, "port closed"),
      });
      let info: Info | undefined;
      for (let i = 1; i <= IDENTIFY_ATTEMPTS && !info; i++) {
        try {
          info = await link.readInfo();
        } catch (e) {
          if (i === IDENTIFY_ATTEMPTS || link.closed) throw e;
        }
      }
      const deviceId = deviceIdOf(info!);
      const old = this.byId.get(deviceId);
      if (old) this.detach(old.path, `moved to ${path}`);
      const a: Attached = {
        deviceId,
        path,
        link,
        info: info!,
        attachedAt: this.now().toISOString(),
        lastProgressAt: 0,
        reattached: this.closedPorts.delete(path),
        logBucket: { tokens: c.log.deviceLinesPerSec, at: Date.now(), lines: [], dropped: 0 },
      };
      pending.a = a;
      this.byId.set(deviceId, a);
      this.byPath.set(path, a);
      const running = runningAppOf(a.info);
      this.log.info(
        { deviceId, port: path, chip: a.info.chip, version: running?.version, slot: running?.slot },
        "device attached",
      );
      await this.publishInventory();
      const l = this.ledger(deviceId);
      // Republish what the ledger last said (a crash may have come between save and publish).
      if (l.lastStatus) await this.publishStatus(l.lastStatus);
      if (l.job) this.kick(a);
      else if (!l.lastStatus || !isFinalState(l.lastStatus.state))
        await this.status(deviceId, "idle", deviceFields(a.info));
      await this.client?.subscribeAsync(this.t.desired(deviceId), { qos: 1 });
    } catch (e) {
      link?.close();
      const code = isEspOtaError(e) ? e.code : "E_INTERNAL";
      this.log.warn(
        { port: path, code },
        `cannot identify a device on ${path}: ${(e as Error).message}`,
      );
      // Try again later while the port is still there (a device still booting, a flaky cable).
      this.attachLater(path);
    } finally {
      this.identifying.delete(path);
    }
  }

  /** attach(path) again after two rescans, if the watcher still lists the port by then. */
  private attachLater(path: string): void {
    const retry = setTimeout(() => {
      if (this.watcher?.current.has(path) && !this.byPath.has(path)) void this.attach(path);
    }, this.o.config.serial.rescanMs * 2);
    retry.unref();
  }

  /** The watcher no longer lists `path`, or lists another node under that name. */
  private portRemoved(path: string): void {
    const a = this.byPath.get(path);
    // Replugged between two scans: our link already closed, was dropped, and attachLater opened
    // the new node, which the watcher reports now as "removed and added" (another inode). The
    // open link is the new device; keep it (the add that follows is then a no-op).
    if (a?.reattached && !a.link.closed && existsSync(path)) {
      a.reattached = false;
      return;
    }
    this.detach(path, "port removed");
  }

  private detach(path: string, why: string): void {
    const a = this.byPath.get(path);
    if (!a) return;
    this.byPath.delete(path);
    if (this.byId.get(a.deviceId) === a) this.byId.delete(a.deviceId);
    a.link.close();
    this.log.warn({ deviceId: a.deviceId, port: path }, `device detached (${why})`);
    if (!this.stopping) {
      void this.client?.unsubscribeAsync(this.t.desired(a.deviceId)).catch(() => undefined);
      void this.publishInventory();
      // Unplugged and plugged back within one rescan, a tty can come back as the same node
      // (a pty number is reused at once), and then the watcher sees no change and never reports
      // the port again: look for it ourselves.
      if (why === "port closed") {
        this.closedPorts.add(path);
        this.attachLater(path);
      }
    }
  }

  // ---- MQTT ---------------------------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer): void {
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
        `bad notice: ${p.reason}`,
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

  /** Builds, records and publishes the device's next status (seq + 1). */
  private async status(
    deviceId: string,
    state: DeviceState,
    extra: Partial<DeviceStatus> = {},
  ): Promise<void> {
    const l = this.ledger(deviceId);
    const job = l.job;
    const now = this.now().toISOString();
    const a = this.byId.get(deviceId);
    const base: DeviceStatus = {
      format: 1,
      deviceId,
      gatewayId: this.o.config.gatewayId,
      seq: l.seq + 1,
      state,
      updatedAt: now,
    };
    const prev = l.lastStatus;
    const carried: Partial<DeviceStatus> = job
      ? {
          releaseId: job.notice.releaseId,
          counter: job.notice.counter,
          ...(job.notice.rolloutId ? { rolloutId: job.notice.rolloutId } : {}),
          ...(job.targetVersion ? { targetVersion: job.targetVersion } : {}),
          ...(job.variant
            ? { targetSlot: { label: job.variant.slot, offset: job.variant.offset } }
            : {}),
          ...(job.previous ? { previousVersion: job.previous.version } : {}),
          startedAt: job.startedAt,
          ...(prev?.releaseId === job.notice.releaseId && prev.running
            ? { running: prev.running }
            : {}),
          ...(prev?.releaseId === job.notice.releaseId && prev.otadata
            ? { otadata: prev.otadata }
            : {}),
        }
      : a
        ? deviceFields(a.info)
        : {};
    const st: DeviceStatus = { ...base, ...carried, ...extra, seq: l.seq + 1, updatedAt: now };
    if (job && (state === "idle" || state === "offline")) delete st.releaseId;
    if (!statusMayFollow(prev, st)) {
      this.log.debug(
        { deviceId, state, prev: prev?.state },
        "status would go backwards; not published",
      );
      return;
    }
    // Signed by this gateway (docs/security.md G1), so a rollout run with --gateways can tell it
    // from a forgery; the ledger keeps the signed form, which is what a restart republishes.
    const signed = signStatus(st, this.statusKey);
    await this.save(deviceId, (x) => {
      x.seq = signed.seq;
      x.lastStatus = signed;
      if (isFinalState(state) && job) {
        x.lastFinal = { releaseId: job.notice.releaseId, state: state as FinalState, at: now };
        x.lastNotice = job.notice;
        x.job = undefined;
      }
    });
    await this.publishStatus(signed);
  }

  private async publishStatus(st: DeviceStatus): Promise<void> {
    await this.client
      ?.publishAsync(this.t.status(st.deviceId), Buffer.from(encodeMessage("status", st)), {
        qos: 1,
        retain: true,
      })
      .catch((e) =>
        this.log.warn(
          { deviceId: st.deviceId, err: String(e) },
          "status publish failed (queued for reconnect)",
        ),
      );
  }

  private progress(a: Attached, step: string, bytes: number, total: number): void {
    const now = Date.now();
    if (now - a.lastProgressAt < PROGRESS_EVERY_MS && bytes < total) return;
    a.lastProgressAt = now;
    const job = this.ledger(a.deviceId).job;
    if (!job) return;
    const ev = encodeMessage("progress", {
      format: 1,
      deviceId: a.deviceId,
      releaseId: job.notice.releaseId,
      step,
      bytes,
      total,
      at: this.now().toISOString(),
    });
    void this.client
      ?.publishAsync(this.t.progress(a.deviceId), Buffer.from(ev), { qos: 0 })
      .catch(() => undefined);
  }

  /** Device console lines: forwarded in batches, at most deviceLinesPerSec (token bucket). */
  private deviceLog(a: Attached, line: string): void {
    const c = this.o.config.log;
    this.log.debug({ deviceId: a.deviceId, device: line }, "device log");
    if (!c.deviceLines) return;
    const b = a.logBucket;
    const now = Date.now();
    b.tokens = Math.min(
      c.deviceLinesPerSec,
      b.tokens + ((now - b.at) / 1000) * c.deviceLinesPerSec,
    );
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.lines.push(line);
    } else b.dropped++;
  }

  private flushLogs(): void {
    for (const a of this.byId.values()) {
      const b = a.logBucket;
      if (b.lines.length === 0 && b.dropped === 0) continue;
      const ev = encodeMessage("log", {
        format: 1,
        deviceId: a.deviceId,
        lines: b.lines.splice(0),
        dropped: b.dropped,
        at: this.now().toISOString(),
      });
      b.dropped = 0;
      void this.client
        ?.publishAsync(this.t.log(a.deviceId), Buffer.from(ev), { qos: 0 })
        .catch(() => undefined);
    }
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
        void this.publishInventory();
        return runUpdate({
          deviceId: a.deviceId,
          settings: this.settings,
          log,
          now: this.now,
          ledger: () => this.ledger(a.deviceId),
          save: (f) => this.save(a.deviceId, f),
          saveNow: (f) => {
            const l = this.ledger(a.deviceId);
            f(l);
            this.store.saveNow(l);
          },
          status: (state, extra) => this.status(a.deviceId, state, extra),
          progress: (step, bytes, total) => this.progress(a, step, bytes, total),
          link: () => {
            const cur = this.byId.get(a.deviceId);
            if (!cur || cur.link.closed)
              throw new EspOtaError("E_AGENT_DEVICE_GONE", `${a.deviceId} is not attached`, {
                deviceId: a.deviceId,
              });
            return cur.link;
          },
          downloadSlot: (f) => this.downloads.run(f),
          signal: ac.signal,
          stopping: () => this.stopping,
        });
      })
      .catch((e) => log.error({ err: String(e) }, "update runner crashed"))
      .then(async (r) => {
        a.running = undefined;
        a.abort = undefined;
        if (this.stopping) return;
        const cur = this.byId.get(a.deviceId);
        if (cur) {
          try {
            cur.info = await cur.link.readInfo();
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
      });
  }

  // ---- commands -----------------------------------------------------------------------------

  private async onCommand(r: CommandRequest): Promise<CommandResponse> {
    const base = { format: 1 as const, gatewayId: this.o.config.gatewayId, command: r.command };
    const err = (code: string, message: string): CommandResponse => ({
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
        try {
          a.info = await a.link.readInfo();
        } catch (e) {
          return err(isEspOtaError(e) ? e.code : "E_INTERNAL", (e as Error).message);
        }
        return {
          ...base,
          ok: true,
          result: { busy: false, ...deviceFields(a.info), port: a.path },
        };
      }
      case "cancel": {
        if (!l.job) return err("E_AGENT_UNKNOWN_DEVICE", "no update in flight");
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
        if (!notice) return err("E_AGENT_UNKNOWN_DEVICE", "no earlier update to retry");
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
        try {
          a.info = await a.link.reboot();
        } catch (e) {
          return err(isEspOtaError(e) ? e.code : "E_INTERNAL", (e as Error).message);
        }
        void this.publishInventory();
        return { ...base, ok: true, result: { rebooted: true, ...deviceFields(a.info) } };
      }
    }
  }
}
