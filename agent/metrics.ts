/**
 * The gateway agent's metrics (docs/metrics.md, issue 16 "Metrics and health"): one prom-client
 * Registry per Agent, never prom-client's global default one (tests and `bench:fleet` run many
 * agents in one process, and each must count only its own devices), and a compact summary of the
 * same counters for the retained presence (PresenceHealth), for gateways nobody can scrape.
 *
 * The agent calls the record methods where things happen; gauges read the agent's own state at
 * scrape time (ports by state, the MQTT connection, the staging directory). Label values come
 * from closed sets (port states, final states, error codes of docs/errors.md, frame-error
 * kinds), so no device id or URL ever becomes a label: the series count stays bounded however
 * many devices come and go.
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { type IntervalHistogram, monitorEventLoopDelay } from "node:perf_hooks";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { FinalState } from "../src/gateway/ledger.js";
import { PORT_STATE_KINDS, type PortState } from "../src/gateway/port-state.js";
import type { PresenceHealth } from "../src/mqtt/messages.js";

export const METRIC_PREFIX = "esp_ota_agent_";

export type FrameErrorKind = "crc" | "gap" | "timeout";
export type RebootCause = "update" | "command" | "unexpected";
export type ResumeKind = "download" | "transfer";

/**
 * Codes that say a check refused what it was given (docs/security.md): a manifest's signature,
 * trust, expiry, counter, device or chip; an image's hash or size; the device's own verdict on
 * the image; the partition table, secure_version or a downgrade. The verification-failure series
 * counts these by code; every other failure is the network's, the wire's or the device's.
 */
export function isVerificationCode(code: string): boolean {
  return code.startsWith("E_MANIFEST_") || VERIFICATION_CODES.has(code);
}

const VERIFICATION_CODES = new Set([
  "E_AGENT_NOTICE_INVALID",
  "E_AGENT_PARTITION_TABLE",
  "E_AGENT_SECURE_VERSION",
  "E_AGENT_DOWNGRADE",
  "E_AGENT_NO_VARIANT",
  "E_DOWNLOAD_HASH_MISMATCH",
  "E_DOWNLOAD_SIZE",
  "E_DOWNLOAD_TOO_LARGE",
  "E_UART_HASH_MISMATCH",
  "E_UART_IMAGE_INVALID",
  "E_UART_VERSION_MISMATCH",
]);

/**
 * Histogram buckets (seconds). A transfer of a 1 MB image at 921600 baud takes about 12 s and a
 * 4 MB one at 115200 about 6 min; a download over a site's uplink is seconds to minutes.
 */
const TRANSFER_BUCKETS = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200];
const DOWNLOAD_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600];

/**
 * The staging directory's size is read at most this often: a scraper set to scrape every few
 * milliseconds must not turn into a stat() storm on a gateway's SD card.
 */
const STAGING_CACHE_MS = 1000;
/** Files summed at most (the directory holds a few images per device; a runaway one is cut). */
const STAGING_MAX_FILES = 10_000;

/**
 * The event loop's delay, for the presence summary: one monitor per process, shared by the agents
 * in it (the loop is the process's; `bench:fleet` runs 50 agents in one, and 50 monitors would be
 * 50 timers every 20 ms). Its window restarts at most once a minute, whoever reads it.
 */
const loopMonitor = {
  h: undefined as IntervalHistogram | undefined,
  users: 0,
  resetAt: 0,
  acquire(): void {
    if (this.users++ === 0) {
      this.h = monitorEventLoopDelay({ resolution: 20 });
      this.h.enable();
      this.resetAt = Date.now();
    }
  },
  release(): void {
    if (this.users > 0 && --this.users === 0) {
      this.h?.disable();
      this.h = undefined;
    }
  },
  /** The p99 delay (ms) since the window began; a window older than a minute restarts. */
  p99Ms(): number {
    const h = this.h;
    if (!h || h.count === 0) return 0;
    const ms = h.percentile(99) / 1e6;
    if (Date.now() - this.resetAt >= 60_000) {
      h.reset();
      this.resetAt = Date.now();
    }
    return Number.isFinite(ms) ? ms : 0;
  },
};

export interface AgentMetricsSources {
  /** Every port's state now. */
  ports(): Iterable<PortState>;
  mqttConnected(): boolean;
  stagingDir: string;
  /** Also register prom-client's process metrics (CPU, memory, event-loop lag, GC): off when nothing scrapes. */
  processMetrics: boolean;
  now(): Date;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly startedAt: number;
  private closed = false;
  private staging = { at: Number.NEGATIVE_INFINITY, bytes: 0 };
  private readonly tally = {
    started: 0,
    succeeded: 0,
    failed: 0,
    rolledBack: 0,
    cancelled: 0,
    frameErrors: 0,
    reconnects: 0,
  };
  private lastFailure: { code: string; at: string } | undefined;

  private readonly updatesStarted: Counter;
  private readonly updatesFinished: Counter<"outcome" | "code">;
  private readonly noticesRefused: Counter<"code">;
  private readonly transferBytes: Counter;
  private readonly transferSeconds: Histogram<"result">;
  private readonly downloadBytes: Counter;
  private readonly downloadSeconds: Histogram<"result">;
  private readonly resumes: Counter<"kind">;
  private readonly frameErrors: Counter<"kind">;
  private readonly reboots: Counter<"cause">;
  private readonly rollbacks: Counter;
  private readonly verification: Counter<"reason">;
  private readonly reconnects: Counter;

  constructor(private readonly src: AgentMetricsSources) {
    this.startedAt = src.now().getTime();
    const registers = [this.registry];
    const p = METRIC_PREFIX;
    if (src.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: p });
    // For the presence summary: prom-client's own monitor resets at every scrape.
    loopMonitor.acquire();

    const self = this;
    new Gauge({
      name: `${p}ports`,
      help: "Serial ports by lifecycle state (src/gateway/port-state.ts): attached and updating serve a device.",
      labelNames: ["state"],
      registers,
      collect() {
        const n = Object.fromEntries(PORT_STATE_KINDS.map((k) => [k, 0])) as Record<
          PortState["kind"],
          number
        >;
        for (const s of src.ports()) n[s.kind]++;
        for (const k of PORT_STATE_KINDS) this.set({ state: k }, n[k]);
      },
    });
    new Gauge({
      name: `${p}mqtt_connected`,
      help: "1 while the agent's MQTT connection is up.",
      registers,
      collect() {
        this.set(src.mqttConnected() ? 1 : 0);
      },
    });
    new Gauge({
      name: `${p}staging_bytes`,
      help: "Bytes in the staging directory (downloaded images waiting for or in transfer).",
      registers,
      collect() {
        this.set(self.stagingBytes());
      },
    });
    this.updatesStarted = new Counter({
      name: `${p}updates_started_total`,
      help: "Updates whose steps started running (a job resumed after a restart counts again).",
      registers,
    });
    this.updatesFinished = new Counter({
      name: `${p}updates_finished_total`,
      help: "Updates that ended, by outcome (succeeded, failed, rolled-back, cancelled) and error code (empty when none).",
      labelNames: ["outcome", "code"],
      registers,
    });
    this.noticesRefused = new Counter({
      name: `${p}notices_refused_total`,
      help: "Notices refused before any step ran (replayed counter, wrong device), by code; each is answered by a failed status.",
      labelNames: ["code"],
      registers,
    });
    this.transferBytes = new Counter({
      name: `${p}transfer_bytes_total`,
      help: "Image bytes the devices acknowledged over the UART.",
      registers,
    });
    this.transferSeconds = new Histogram({
      name: `${p}transfer_duration_seconds`,
      help: "One UART transfer session, from BEGIN to the device's verdict on the image (END) or the failure; result ok or failed.",
      labelNames: ["result"],
      buckets: TRANSFER_BUCKETS,
      registers,
    });
    this.downloadBytes = new Counter({
      name: `${p}download_bytes_total`,
      help: "Image bytes fetched from the image servers (a resumed download counts only what it fetched).",
      registers,
    });
    this.downloadSeconds = new Histogram({
      name: `${p}download_duration_seconds`,
      help: "One image download (with its retries), result ok or failed; an image already staged is not timed.",
      labelNames: ["result"],
      buckets: DOWNLOAD_BUCKETS,
      registers,
    });
    this.resumes = new Counter({
      name: `${p}resumes_total`,
      help: "Downloads resumed from a staged part (HTTP Range) and transfers resumed from the device's progress record (uart-protocol.md §6.4).",
      labelNames: ["kind"],
      registers,
    });
    this.frameErrors = new Counter({
      name: `${p}uart_frame_errors_total`,
      help: "UART frame errors: crc (a frame whose CRC failed), gap (a partial frame given up after a silence), timeout (a session that got no answer in time).",
      labelNames: ["kind"],
      registers,
    });
    this.reboots = new Counter({
      name: `${p}device_reboots_total`,
      help: "Device resets seen or asked for: update (the reboot into a new image), command (the reboot command), unexpected (a reset during a transfer).",
      labelNames: ["cause"],
      registers,
    });
    this.rollbacks = new Counter({
      name: `${p}device_rollbacks_total`,
      help: "Updates the device rolled back (the new app did not confirm itself; the old one runs).",
      registers,
    });
    this.verification = new Counter({
      name: `${p}verification_failures_total`,
      help: "Updates or notices refused by a check (signature, trust, counter, expiry, device, chip, hash, size, the device's own verdict), by code.",
      labelNames: ["reason"],
      registers,
    });
    this.reconnects = new Counter({
      name: `${p}mqtt_reconnects_total`,
      help: "Times the agent reconnected to the broker after losing it.",
      registers,
    });
    // Every labelled series exists from the start at 0, so rate() and absent() work at once.
    for (const k of ["crc", "gap", "timeout"] as const) this.frameErrors.inc({ kind: k }, 0);
    for (const k of ["download", "transfer"] as const) this.resumes.inc({ kind: k }, 0);
    for (const k of ["update", "command", "unexpected"] as const) this.reboots.inc({ cause: k }, 0);
    this.updatesFinished.inc({ outcome: "succeeded", code: "" }, 0);
  }

  updateStarted(): void {
    this.tally.started++;
    this.updatesStarted.inc();
  }

  updateFinished(outcome: FinalState, code: string | undefined): void {
    this.updatesFinished.inc({ outcome, code: code ?? "" });
    if (outcome === "succeeded") this.tally.succeeded++;
    else if (outcome === "failed") this.tally.failed++;
    else if (outcome === "rolled-back") this.tally.rolledBack++;
    else this.tally.cancelled++;
    if (outcome === "rolled-back") this.rollbacks.inc();
    if ((outcome === "failed" || outcome === "rolled-back") && code !== undefined)
      this.lastFailure = { code, at: this.src.now().toISOString() };
    if (outcome === "failed" && code !== undefined && isVerificationCode(code))
      this.verification.inc({ reason: code });
  }

  noticeRefused(code: string): void {
    this.noticesRefused.inc({ code });
    if (isVerificationCode(code)) this.verification.inc({ reason: code });
  }

  transferred(bytes: number): void {
    if (bytes > 0) this.transferBytes.inc(bytes);
  }

  transferEnded(seconds: number, ok: boolean): void {
    this.transferSeconds.observe({ result: ok ? "ok" : "failed" }, Math.max(0, seconds));
  }

  downloaded(bytes: number): void {
    if (bytes > 0) this.downloadBytes.inc(bytes);
  }

  downloadEnded(seconds: number, ok: boolean): void {
    this.downloadSeconds.observe({ result: ok ? "ok" : "failed" }, Math.max(0, seconds));
  }

  resumed(kind: ResumeKind): void {
    this.resumes.inc({ kind });
  }

  frameError(kind: FrameErrorKind, n = 1): void {
    if (n <= 0) return;
    this.tally.frameErrors += n;
    this.frameErrors.inc({ kind }, n);
  }

  reboot(cause: RebootCause): void {
    this.reboots.inc({ cause });
  }

  mqttReconnected(): void {
    this.tally.reconnects++;
    this.reconnects.inc();
  }

  /** Bytes in the staging directory (cached for STAGING_CACHE_MS; 0 when it cannot be read). */
  stagingBytes(): number {
    const now = Date.now();
    if (now - this.staging.at < STAGING_CACHE_MS) return this.staging.bytes;
    let bytes = 0;
    try {
      const names = readdirSync(this.src.stagingDir);
      for (const n of names.slice(0, STAGING_MAX_FILES)) {
        try {
          const st = statSync(join(this.src.stagingDir, n));
          if (st.isFile()) bytes += st.size;
        } catch {
          // removed between the listing and the stat
        }
      }
    } catch {
      bytes = 0;
    }
    this.staging = { at: now, bytes };
    return bytes;
  }

  /** The presence's health summary (docs/mqtt-api.md "presence"). */
  health(ready: boolean): PresenceHealth {
    const devices = { attached: 0, updating: 0, identifying: 0, failed: 0, conflict: 0 };
    for (const s of this.src.ports())
      if (s.kind in devices) devices[s.kind as keyof typeof devices]++;
    const t = this.tally;
    return {
      ready,
      devices,
      updates: {
        started: t.started,
        succeeded: t.succeeded,
        failed: t.failed,
        rolledBack: t.rolledBack,
        cancelled: t.cancelled,
      },
      ...(this.lastFailure ? { lastFailure: this.lastFailure } : {}),
      uartFrameErrors: t.frameErrors,
      mqttReconnects: t.reconnects,
      stagingBytes: this.stagingBytes(),
      eventLoopDelayMs: Math.round(loopMonitor.p99Ms()),
      uptimeSec: Math.max(0, Math.floor((this.src.now().getTime() - this.startedAt) / 1000)),
    };
  }

  /** Lets go of the event-loop monitor (the agent stopped). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    loopMonitor.release();
  }
}
