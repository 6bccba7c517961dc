/**
 * One device's update as a list of named steps run by one runner (STYLE.md §4; issue 12 "The
 * agent's shape"; docs/operations.md "Update steps"): parseNotice, fetchManifest,
 * verifyManifest, readDevice, selectSlot, download, transfer (whose UART phases are the steps
 * verifyOnDevice, activate, reboot, awaitConfirm), report.
 *
 * The runner, not the steps, records each step in the ledger before it acts (so a restart
 * resumes from the right place), publishes its status, checks for cancellation, knows the point
 * of no return (ACTIVATE), and turns any failure into a final status with a code. Each step is a
 * function of the job (passed explicitly), what earlier steps found (`Work`), and small ports:
 * the device link, the ledger, the publisher, the clock, the network.
 *
 * Everything is verified before the first byte goes to the device: the manifest's signatures,
 * trust, expiry, counter, device and chip; the variant for the device's next slot; and the
 * ciphertext's SHA-256 and size (the device checks the hash again, then the bootloader checks
 * the signature). The gateway never holds a plaintext image or a device key.
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { fromHex, toHex } from "../src/bytes.js";
import type { DownloadLimits, TlsPinning } from "../src/download/download.js";
import { downloadImage, fetchDocument } from "../src/download/download.js";
import { type ErrorCode, EspOtaError, isEspOtaError } from "../src/errors.js";
import { otadataOf, runningAppOf } from "../src/gateway/device-view.js";
import {
  DEFAULT_ERASE_BUDGET,
  type DeviceLedger,
  type EraseBudget,
  eraseBudgetLeft,
  type FinalState,
  type Job,
  minCounterFor,
  pastPointOfNoReturn,
  recordErase,
  recordMark,
  STEP_STATE,
  type StepName,
} from "../src/gateway/ledger.js";
import { selectVariant, type UpdatePolicy } from "../src/gateway/select.js";
import type { DeviceStatus, UpdateState } from "../src/mqtt/messages.js";
import type { TrustPolicy } from "../src/release/keyring.js";
import { readTrustPolicy } from "../src/release/keyring-fs.js";
import {
  type ManifestVariant,
  type ReleaseManifest,
  verifyManifest,
} from "../src/release/manifest.js";
import type { ImageSource } from "../src/uart/host.js";
import type { HostEvent, Outcome } from "../src/uart/host-machine.js";
import type { Info } from "../src/uart/messages.js";
import { type AgentConfig, effectiveTrustPolicy } from "./config.js";

export interface UpdateSettings {
  trust: TrustPolicy;
  policy: UpdatePolicy & { confirmTimeoutMs: number; maxManifestBytes: number };
  download: Partial<DownloadLimits> & { allowedUrls?: readonly string[] };
  tls?: TlsPinning;
  stagingDir: string;
  /** Transfer attempts on a transient UART failure (each resumes where the device stopped). */
  transferAttempts: number;
  /** How often the device may be made to start a transfer afresh (default DEFAULT_ERASE_BUDGET). */
  eraseBudget?: EraseBudget;
}

/**
 * The settings of every update, from the agent's config. The trust policy is
 * effectiveTrustPolicy's (agent/config.ts, the one check-config reports on): the agent used to
 * build its own copy, which added the config's revocations to the list but kept the revoked
 * keys among the trusted ones.
 */
export function updateSettings(c: AgentConfig): UpdateSettings {
  return {
    trust: effectiveTrustPolicy(readTrustPolicy(c.trust.policy), c.trust),
    policy: {
      allowDowngrade: c.policy.allowDowngrade,
      confirmTimeoutMs: c.policy.confirmTimeoutMs,
      maxManifestBytes: c.policy.maxManifestBytes,
    },
    download: c.download,
    ...(c.download.ca ? { tls: { ca: readFileSync(c.download.ca) } } : {}),
    stagingDir: c.stagingDir,
    transferAttempts: 3,
    eraseBudget: DEFAULT_ERASE_BUDGET,
  };
}

// ---- ports --------------------------------------------------------------------------------------

/** The device's UART link (agent/link.ts DeviceLink is one). */
export interface DevicePort {
  /** The last INFO the device sent (at attach): its identity, for checks that need no fresh one. */
  readonly info: Info | undefined;
  readInfo(signal?: AbortSignal): Promise<Info>;
  flash(
    image: { offset: number; size: number; sha256: Uint8Array },
    source: ImageSource,
    o: {
      signal?: AbortSignal;
      onEvent?: (e: HostEvent) => void;
      confirmMs?: number;
      expectVersion?: string;
    },
  ): Promise<Outcome>;
}

/** The device's ledger: read it, change it and write it. */
export interface LedgerPort {
  get(): DeviceLedger;
  /**
   * Mutates the ledger and writes it atomically in the background; resolves once it is on disk.
   * The publisher's status() awaits a write that includes every earlier change, so nothing is
   * published before the ledger that explains it is durable.
   */
  save(f: (l: DeviceLedger) => void): Promise<void>;
  /**
   * Mutates the ledger and writes it durably before returning (E_AGENT_STATE on failure): for
   * the step recorded as ACTIVATE is about to leave the port.
   */
  saveNow(f: (l: DeviceLedger) => void): void;
}

/** Where the job's statuses and progress go (the agent adds seq, timestamps, signature). */
export interface PublishPort {
  status(state: UpdateState, extra?: Partial<DeviceStatus>): Promise<void>;
  progress(step: StepName, bytes: number, total: number): void;
}

export interface ClockPort {
  now(): Date;
  /** Waits `ms` (the awaitConfirm poll after a restart). */
  sleep(ms: number): Promise<void>;
}

/** The network: the signed manifest and the ciphertext (httpNet over src/download). */
export interface NetPort {
  fetchManifest(urls: readonly string[], signal: AbortSignal): Promise<Uint8Array>;
  /**
   * Stages the variant's ciphertext at `dest`, resuming what is there; hash and size checked.
   * May say where it resumed from (the byte count already staged; 0 or absent: from the start).
   */
  download(
    variant: ManifestVariant,
    dest: string,
    hooks: {
      signal: AbortSignal;
      onProgress(bytes: number, total: number): void;
      onRetry(r: { attempt: number; url: string; code: string; delayMs: number }): void;
    },
    // biome-ignore lint/suspicious/noConfusingVoidType: fakes that resolve to nothing stay valid
  ): Promise<void | { resumedFrom: number }>;
}

/**
 * What the runner saw, for the agent's metrics (agent/metrics.ts, docs/metrics.md): bytes as
 * they move, each download and UART transfer with its duration and result, resumes, and the
 * device resets the session saw. Never affects the update; a throw is ignored.
 */
export type UpdateObservation =
  | { kind: "downloaded"; bytes: number }
  | { kind: "downloadEnded"; ms: number; ok: boolean; resumedFrom: number }
  | { kind: "transferred"; bytes: number }
  | { kind: "transferEnded"; ms: number; ok: boolean }
  | { kind: "transferResumed"; from: number }
  | { kind: "deviceReset"; expected: boolean };

export interface UpdatePorts {
  /** The device's link now; throws E_AGENT_DEVICE_GONE when it is unplugged. */
  device(): DevicePort;
  ledger: LedgerPort;
  publish: PublishPort;
  clock: ClockPort;
  net: NetPort;
  log: Logger;
  observe?: (o: UpdateObservation) => void;
}

/** The real network: src/download with the agent's limits, `slot` bounding concurrent transfers. */
export function httpNet(
  settings: UpdateSettings,
  slot: <T>(f: () => Promise<T>) => Promise<T>,
): NetPort {
  const allowed = settings.download.allowedUrls
    ? { allowedUrls: settings.download.allowedUrls }
    : {};
  return {
    fetchManifest: async (urls, signal) =>
      (
        await slot(() =>
          fetchDocument(urls, {
            maxBytes: settings.policy.maxManifestBytes,
            limits: settings.download,
            ...(settings.tls ? { tls: settings.tls } : {}),
            hooks: { signal },
            ...allowed,
          }),
        )
      ).bytes,
    download: async (v, dest, hooks) => {
      const r = await slot(() =>
        downloadImage(
          { urls: v.urls, size: v.size, sha256: v.sha256, dest, ...allowed },
          settings.download,
          settings.tls,
          hooks,
        ),
      );
      return { resumedFrom: r.resumedFrom };
    },
  };
}

// ---- the job ----------------------------------------------------------------------------------

export interface UpdateRun {
  deviceId: string;
  /** The ledger's job this run carries out (the runner records its progress in it). */
  job: Job;
  settings: UpdateSettings;
  ports: UpdatePorts;
  /** Aborted (with an EspOtaError as reason) to cancel before the point of no return. */
  signal: AbortSignal;
  /** The agent is stopping (SIGTERM) and closed the ports itself: nothing to report. */
  stopping?(): boolean;
}

/** How a run ended: a final status was published, or the job waits for the device to return. */
export type RunResult =
  | { kind: "final"; state: FinalState }
  | { kind: "suspended"; code: ErrorCode };

/** What the steps found, handed from one to the next (the ledger keeps what a restart needs). */
interface Work {
  manifestText?: string;
  manifest?: ReleaseManifest;
  /** The device's INFO, read once by readDevice. */
  info?: Info;
  variant?: ManifestVariant;
  /** BEGIN will start afresh (erase) rather than resume the device's progress record. */
  fresh?: boolean;
  staging?: string;
}

/** A step ends the job early with this final state (the release already runs, say). */
type Early = { end: FinalState; extra: Partial<DeviceStatus> };

interface StepDef {
  name: StepName;
  /** Already done in an earlier run (from the ledger): not entered again. */
  skip?(run: UpdateRun, w: Work): boolean;
  /** Status fields published on entering the step. */
  status?(run: UpdateRun, w: Work): Partial<DeviceStatus>;
  run(r: Runner, w: Work): Promise<Early | Outcome | undefined>;
}

/** A failure inside a step, with the step it happened in. */
class StepFailure extends Error {
  constructor(
    readonly step: StepName,
    readonly error: EspOtaError,
  ) {
    super(error.message);
  }
}

const errorOf = (e: unknown): EspOtaError =>
  isEspOtaError(e)
    ? e
    : new EspOtaError("E_INTERNAL", e instanceof Error ? e.message : String(e), {}, e);

/** Transient UART failures: the transfer is retried (and resumes) before the update fails. */
const TRANSIENT_UART = new Set<ErrorCode>([
  "E_UART_TIMEOUT",
  "E_UART_NO_DEVICE",
  "E_UART_FRAME_CRC",
]);
/** The device went away: the job waits for it to be plugged back in. */
const DEVICE_GONE = new Set<ErrorCode>([
  "E_UART_DISCONNECTED",
  "E_AGENT_DEVICE_GONE",
  "E_UART_PORT",
]);
/** How a cancellation reaches the UART session or the download. */
const CANCELLED = new Set<ErrorCode>(["E_UART_CANCELLED", "E_DOWNLOAD_CANCELLED"]);

/**
 * The staging file of one image: named by the ciphertext's SHA-256 and slot, not the release,
 * so a notice superseded and issued again (or another release of the same image) finds the
 * bytes already staged (issue 12 defect 6).
 */
export function stagingPath(dir: string, deviceId: string, variant: ManifestVariant): string {
  return join(dir, `${deviceId}-${variant.slot}-${variant.sha256}.bin`);
}

/**
 * Removes this device's staging files (every image, with its resume sidecar), except the images
 * named in `keep`: called when a job ends.
 */
export function removeStaging(dir: string, deviceId: string, keep: readonly string[] = []): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  const kept = new Set(keep.flatMap((k) => [k, `${k}.json`]));
  for (const n of names) {
    const p = join(dir, n);
    if (n.startsWith(`${deviceId}-`) && !kept.has(p)) rmSync(p, { force: true });
  }
}

/** The most recently written staged image of the device other than `except`, if any. */
function newestOtherStaging(dir: string, deviceId: string, except: string): string | undefined {
  let best: { p: string; t: number } | undefined;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  for (const n of names) {
    const p = join(dir, n);
    if (!n.startsWith(`${deviceId}-`) || !n.endsWith(".bin") || p === except) continue;
    try {
      const t = statSync(p).mtimeMs;
      if (!best || t > best.t) best = { p, t };
    } catch {
      // removed meanwhile
    }
  }
  return best?.p;
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** The ciphertext in the staging file, a chunk at a time (memory bounded by a chunk). */
function stagingSource(path: string): ImageSource & { close(): void } {
  const fd = openSync(path, "r");
  return {
    read(offset, length) {
      const b = Buffer.alloc(length);
      const n = readSync(fd, b, 0, length, offset);
      return new Uint8Array(b.buffer, b.byteOffset, n);
    },
    close: () => closeSync(fd),
  };
}

function existsWithSize(path: string, size: number): boolean {
  try {
    return statSync(path).size === size;
  } catch {
    return false;
  }
}

export function deviceFields(info: Info): Partial<DeviceStatus> {
  const running = runningAppOf(info);
  return { ...(running ? { running } : {}), otadata: otadataOf(info) };
}

/** Whether the device's progress record (INFO) resumes a BEGIN of this variant (§6.4). */
export function resumesOnDevice(info: Info, v: ManifestVariant): boolean {
  const r = info.resume;
  return (
    r !== undefined &&
    r.offset === v.offset &&
    r.size === v.size &&
    toHex(r.sha256) === v.sha256 &&
    r.written <= v.size
  );
}

// ---- the steps --------------------------------------------------------------------------------

const fail = (step: StepName, e: unknown): never => {
  throw new StepFailure(step, errorOf(e));
};

/** The notice was parsed and checked against the ledger by the agent (decideNotice). */
const parseNotice: StepDef = {
  name: "parseNotice",
  skip: (run) => run.job.step !== "parseNotice",
  run: async () => undefined,
};

const fetchManifestStep: StepDef = {
  name: "fetchManifest",
  // Fetched in an earlier run: re-verified from the ledger's copy (the disk is not trusted).
  skip: (run, w) => {
    if (run.job.manifestText !== undefined) w.manifestText = run.job.manifestText;
    return w.manifestText !== undefined;
  },
  run: async (r, w) => {
    const bytes = await r.ports.net
      .fetchManifest(r.job.notice.manifestUrls, r.signal)
      .catch((e) => fail("fetchManifest", downloadCause(e)));
    const text = new TextDecoder().decode(bytes);
    w.manifestText = text;
    void r.record({ manifestText: text });
    return undefined;
  },
};

/** Trust, threshold, expiry, the counter's high-water mark, device id and chip. */
const verifyManifestStep: StepDef = {
  name: "verifyManifest",
  run: async (r, w) => {
    const { job, settings } = r;
    // The chip from the INFO read at attach: it cannot change, and the fresh INFO comes next.
    const chip = r.ports.device().info?.chip;
    const check = verifyManifest(w.manifestText, settings.trust, {
      now: r.ports.clock.now(),
      deviceId: r.deviceId,
      ...(chip ? { chip } : {}),
      minCounter: minCounterFor(r.ports.ledger.get(), job.notice.releaseId, settings.trust),
    });
    if (!check.ok)
      return fail(
        "verifyManifest",
        new EspOtaError(check.code, check.reason, { deviceId: r.deviceId }),
      );
    const manifest = check.manifest;
    if (manifest.releaseId !== job.notice.releaseId)
      fail(
        "verifyManifest",
        new EspOtaError(
          "E_AGENT_NOTICE_INVALID",
          `the notice names release ${job.notice.releaseId} but its manifest is ${manifest.releaseId}`,
        ),
      );
    w.manifest = manifest;
    void r.ports.ledger.save((l) => {
      recordMark(l, {
        counter: manifest.counter,
        releaseId: manifest.releaseId,
        keyIds: check.keyIds,
      });
      if (l.job === job) job.targetVersion = manifest.version;
    });
    return undefined;
  },
};

/** The device's otadata decides the slot: its INFO, read once here, never a cached view. */
const readDevice: StepDef = {
  name: "readDevice",
  status: (_run, w) => (w.manifest ? { targetVersion: w.manifest.version } : {}),
  run: async (r, w) => {
    const info = await r.ports
      .device()
      .readInfo(r.signal)
      .catch((e) => fail("readDevice", e));
    w.info = info;
    const running = runningAppOf(info);
    if (running && r.job.previous === undefined) void r.record({ previous: running });
    return undefined;
  },
};

/** The variant for the next slot, the update policy, and the device's erase budget. */
const selectSlot: StepDef = {
  name: "selectSlot",
  status: (_run, w) => (w.info ? deviceFields(w.info) : {}),
  run: async (r, w) => {
    const info = w.info!;
    const sel = selectVariant(w.manifest!, info, r.settings.policy);
    if (!sel.ok)
      return fail("selectSlot", new EspOtaError(sel.code, sel.reason, { deviceId: r.deviceId }));
    const { variant, alreadyRunning } = sel;
    w.variant = variant;
    void r.record({ variant });
    if (alreadyRunning) {
      r.ports.log.info(
        { step: "selectSlot" },
        `${w.manifest!.version} already runs from ${variant.slot}`,
      );
      return { end: "succeeded", extra: deviceFields(info) };
    }
    // Issue 12 defect 6: a BEGIN the device's progress record does not resume erases otadata's
    // inactive sector and then the slot. Checked before the download, so a refused update costs
    // neither flash nor bandwidth.
    w.fresh = !resumesOnDevice(info, variant);
    if (w.fresh) {
      const budget = r.settings.eraseBudget ?? DEFAULT_ERASE_BUDGET;
      const left = eraseBudgetLeft(r.ports.ledger.get(), budget, r.ports.clock.now());
      if (!left.ok)
        fail(
          "selectSlot",
          new EspOtaError(
            "E_AGENT_ERASE_BUDGET",
            `the device already started ${budget.cycles} transfers afresh within ${budget.windowMs / 60_000} min (each erases otadata and the slot); refused until ${left.until.toISOString()}`,
            { deviceId: r.deviceId, until: left.until.toISOString() },
          ),
        );
    }
    return undefined;
  },
};

/** Resumable, hashed while streaming, never more than the manifest's size. */
const download: StepDef = {
  name: "download",
  status: (_run, w) => ({
    targetSlot: { label: w.variant!.slot, offset: w.variant!.offset },
    progress: { bytes: 0, total: w.variant!.size },
  }),
  run: async (r, w) => {
    const variant = w.variant!;
    const staging = stagingPath(r.settings.stagingDir, r.deviceId, variant);
    w.staging = staging;
    void r.record({ staging });
    const complete =
      existsWithSize(staging, variant.size) && (await fileSha256(staging)) === variant.sha256;
    if (complete) {
      r.ports.publish.progress("download", variant.size, variant.size);
      return undefined;
    }
    const t0 = r.ports.clock.now().getTime();
    // The first report is what was staged already: only what comes after it was fetched.
    let seen: number | undefined;
    const ended = (ok: boolean, resumedFrom: number) =>
      r.observe({
        kind: "downloadEnded",
        ms: r.ports.clock.now().getTime() - t0,
        ok,
        resumedFrom,
      });
    const got = await r.ports.net
      .download(variant, staging, {
        signal: r.signal,
        onProgress: (b, t) => {
          if (seen !== undefined && b > seen) r.observe({ kind: "downloaded", bytes: b - seen });
          // Lower after a reset of the staged file (another server's copy): counted from there.
          seen = b;
          r.ports.publish.progress("download", b, t);
        },
        onRetry: (x) =>
          r.ports.log.warn({ step: "download", ...x }, `download retry ${x.attempt}: ${x.code}`),
      })
      .catch((e) => {
        ended(false, 0);
        return fail("download", downloadCause(e));
      });
    ended(true, got?.resumedFrom ?? 0);
    return undefined;
  },
};

const PHASE_STEP: Partial<Record<string, StepName>> = {
  end: "verifyOnDevice",
  activate: "activate",
  reboot: "reboot",
  "await-boot": "reboot",
  "await-confirm": "awaitConfirm",
};

/** transfer .. awaitConfirm: one UART session; its phases are our steps. */
const transfer: StepDef = {
  name: "transfer",
  status: (_run, w) => ({
    targetSlot: { label: w.variant!.slot, offset: w.variant!.offset },
    progress: { bytes: 0, total: w.variant!.size },
  }),
  run: async (r, w) => {
    const variant = w.variant!;
    if (w.fresh) {
      const budget = r.settings.eraseBudget ?? DEFAULT_ERASE_BUDGET;
      const now = r.ports.clock.now();
      await r.ports.ledger.save((l) => recordErase(l, budget, now));
    }
    return sendImage(r, variant, w.staging!);
  },
};

/** The steps of an update, in order (the UART phases after transfer are entered by events). */
const PIPELINE: readonly StepDef[] = [
  parseNotice,
  fetchManifestStep,
  verifyManifestStep,
  readDevice,
  selectSlot,
  download,
  transfer,
];

// ---- the runner -------------------------------------------------------------------------------

class Runner {
  step: StepName;
  readonly job: Job;
  readonly deviceId: string;
  readonly settings: UpdateSettings;
  readonly ports: UpdatePorts;
  readonly signal: AbortSignal;

  constructor(readonly run: UpdateRun) {
    this.job = run.job;
    this.step = run.job.step;
    this.deviceId = run.deviceId;
    this.settings = run.settings;
    this.ports = run.ports;
    this.signal = run.signal;
  }

  /** Hands an observation to the agent's metrics; they never change the update. */
  observe(o: UpdateObservation): void {
    try {
      this.ports.observe?.(o);
    } catch {
      // counting is best effort
    }
  }

  /** Changes the job in the ledger (if it is still the ledger's job) and writes it. */
  record(patch: Partial<Job>): Promise<void> {
    return this.ports.ledger.save((l) => {
      if (l.job === this.job) Object.assign(this.job, patch);
    });
  }

  /** Records the step, logs it, and publishes its status. */
  async enter(s: StepName, extra: Partial<DeviceStatus> = {}): Promise<void> {
    this.step = s;
    void this.record({ step: s });
    this.ports.log.info({ step: s }, `step ${s}`);
    await this.ports.publish.status(STEP_STATE[s], { step: s, ...extra });
  }

  checkCancel(): void {
    if (this.signal.aborted && !pastPointOfNoReturn(this.step)) fail(this.step, this.signal.reason);
  }

  async runAll(): Promise<RunResult> {
    if (pastPointOfNoReturn(this.job.step)) return settleAfterActivation(this);
    const w: Work = {};
    try {
      for (const s of PIPELINE) {
        if (s.skip?.(this.run, w)) continue;
        this.checkCancel();
        await this.enter(s.name, s.status?.(this.run, w));
        const out = await s.run(this, w);
        if (out && "end" in out) return await this.finish(out.end, out.extra);
        if (out) return await settleOutcome(this, out);
      }
      throw new TypeError("runUpdate: the steps ended without an outcome");
    } catch (e) {
      return this.failed(e instanceof StepFailure ? e : new StepFailure(this.step, errorOf(e)));
    }
  }

  /** Maps a failure to what happens next: wait for the device, cancelled, settle, or failed. */
  private async failed(f: StepFailure): Promise<RunResult> {
    if (DEVICE_GONE.has(f.error.code) && !this.signal.aborted) {
      if (this.run.stopping?.()) {
        // Not the device's doing: a status saying it went away would mislead whoever watches
        // an agent restart. The ledger keeps the job; the next start resumes it.
        this.ports.log.info(
          { step: f.step },
          "agent stopping; the update resumes when it starts again",
        );
        return { kind: "suspended", code: f.error.code };
      }
      this.ports.log.warn(
        { step: f.step, code: f.error.code },
        "device gone; the update resumes when it returns",
      );
      await this.ports.publish.status(STEP_STATE[f.step], {
        step: f.step,
        error: { code: "E_AGENT_DEVICE_GONE", message: f.error.message, step: f.step },
      });
      return { kind: "suspended", code: f.error.code };
    }
    const cancelled =
      CANCELLED.has(f.error.code) || (this.signal.aborted && !pastPointOfNoReturn(f.step));
    const err = cancelled && isEspOtaError(this.signal.reason) ? this.signal.reason : f.error;
    // The device was already switching: ask it which app runs rather than guess.
    if (pastPointOfNoReturn(f.step)) return settleAfterActivation(this, err);
    this.ports.log.error({ step: f.step, code: err.code }, err.message);
    return this.finish(cancelled ? "cancelled" : "failed", {
      error: { code: err.code, message: err.message, step: f.step },
    });
  }

  async finish(state: FinalState, extra: Partial<DeviceStatus>): Promise<RunResult> {
    this.ports.log.info({ step: "report", state, code: extra.error?.code }, `update ${state}`);
    // The ledger says the release ended before the status goes out: a restart in between
    // republishes this final status, never runs the job again.
    await this.ports.publish.status(state, {
      step: "report",
      ...extra,
      finishedAt: this.ports.clock.now().toISOString(),
    });
    // Superseded: the replacing notice, or the one after it, may be the same image again
    // (issue 12 defect 6), so its staged bytes stay, with the newest other image (a release
    // re-issued over its replacement); every other end removes the device's staging.
    const staging = this.job.staging;
    const keep =
      state === "cancelled" && extra.error?.code === "E_AGENT_SUPERSEDED" && staging
        ? [staging, newestOtherStaging(this.settings.stagingDir, this.deviceId, staging)]
        : [];
    removeStaging(
      this.settings.stagingDir,
      this.deviceId,
      keep.filter((k): k is string => k !== undefined),
    );
    return { kind: "final", state };
  }
}

export function runUpdate(run: UpdateRun): Promise<RunResult> {
  return new Runner(run).runAll();
}

/**
 * The code a failed download reports. downloadImage says E_DOWNLOAD_FAILED when every mirror
 * failed, with each mirror's last code in `context.codes`; when they all failed the same way
 * (always so with one mirror) that code is the one the operator can act on (docs/errors.md:
 * E_DOWNLOAD_TOO_LARGE "the server serves another file", E_DOWNLOAD_TRUNCATED ...), so the
 * status carries it. The message still names every mirror.
 */
function downloadCause(e: unknown): unknown {
  if (!isEspOtaError(e) || e.code !== "E_DOWNLOAD_FAILED") return e;
  const codes = new Set(
    String(e.context.codes ?? "")
      .split(",")
      .filter(Boolean),
  );
  if (codes.size !== 1) return e;
  const [code] = codes as Set<ErrorCode>;
  return new EspOtaError(code!, e.message, e.context, e);
}

/**
 * Why the UART session is cancelled, as the session should see it. A supersede ends the session
 * without ABORT (`keepTransfer`): ABORT closes the device's progress record, and the notice
 * superseded and issued again (notice churn) then restarted at byte 0 and erased otadata's
 * inactive sector every time (issue 12 defect 6). Left open, the record resumes a BEGIN of the
 * same image; a BEGIN of another image starts afresh as it would after ABORT (§6.4). A clear or
 * an operator's cancel still ABORTs: nothing is meant to follow.
 */
function sessionCancel(reason: unknown): unknown {
  if (isEspOtaError(reason) && reason.code === "E_AGENT_SUPERSEDED")
    return new EspOtaError(reason.code, reason.message, { ...reason.context, keepTransfer: true });
  return reason;
}

async function sendImage(r: Runner, variant: ManifestVariant, staging: string): Promise<Outcome> {
  const { job } = r;
  // The signed manifest's version: the device must report the same for the image it verified
  // (docs/security.md, G2), or the session aborts before ACTIVATE.
  const expectVersion = job.targetVersion;
  const sha256 = fromHex(variant.sha256);
  let lastProgress = 0;
  for (let attempt = 1; ; attempt++) {
    const src = stagingSource(staging);
    // This attempt's transfer: BEGIN (or the resume) up to END, the device's verdict on the
    // image; what follows (activate, reboot, confirm) is the device's time, not the wire's.
    const t0 = r.ports.clock.now().getTime();
    let acked: number | undefined;
    let timed = false;
    const transferEnded = (ok: boolean) => {
      if (timed) return;
      timed = true;
      r.observe({ kind: "transferEnded", ms: r.ports.clock.now().getTime() - t0, ok });
    };
    // Cancelling is only allowed before ACTIVATE: after it, the session must run to its end.
    const ac = new AbortController();
    const onAbort = () => {
      if (!pastPointOfNoReturn(r.step)) ac.abort(sessionCancel(r.signal.reason));
    };
    r.signal.addEventListener("abort", onAbort);
    if (r.signal.aborted) onAbort();
    let entering: Promise<void> = Promise.resolve();
    try {
      const out = await r.ports
        .device()
        .flash({ offset: variant.offset, size: variant.size, sha256 }, src, {
          signal: ac.signal,
          confirmMs: r.settings.policy.confirmTimeoutMs,
          ...(expectVersion !== undefined ? { expectVersion } : {}),
          onEvent: (e: HostEvent) => {
            if (e.kind === "phase") {
              if (e.phase === "end") transferEnded(true);
              const next = PHASE_STEP[e.phase];
              if (next && next !== r.step) {
                // Past the point of no return the step is on disk before the machine's ACTIVATE
                // leaves the port (saveNow, synchronous): after a crash, the agent then asks the
                // device which app runs instead of sending the image again.
                r.step = next;
                if (pastPointOfNoReturn(next))
                  r.ports.ledger.saveNow((l) => {
                    if (l.job === job) job.step = next;
                  });
                else void r.record({ step: next });
                entering = entering.then(() => r.enter(next));
              }
            } else if (e.kind === "progress") {
              lastProgress = e.acked;
              if (e.acked > (acked ?? 0))
                r.observe({ kind: "transferred", bytes: e.acked - (acked ?? 0) });
              acked = Math.max(acked ?? 0, e.acked);
              r.ports.publish.progress("transfer", e.acked, e.total);
            } else if (e.kind === "device-reset") {
              // After ACTIVATE the reset is the one asked for; before it the device fell over.
              r.observe({ kind: "deviceReset", expected: pastPointOfNoReturn(r.step) });
            } else if (e.kind === "resumed") {
              // The device already holds `from` bytes: they are not sent (nor counted) again.
              acked = Math.max(acked ?? 0, e.from);
              r.observe({ kind: "transferResumed", from: e.from });
              r.ports.log.info(
                { step: "transfer", from: e.from },
                `transfer resumes at byte ${e.from}`,
              );
            }
          },
        });
      await entering;
      transferEnded(true);
      return out;
    } catch (e) {
      transferEnded(false);
      await entering;
      const err = errorOf(e);
      const again =
        TRANSIENT_UART.has(err.code) &&
        attempt < r.settings.transferAttempts &&
        !pastPointOfNoReturn(r.step) &&
        !r.signal.aborted;
      if (!again) return fail(r.step, err);
      r.ports.log.warn(
        { step: "transfer", code: err.code, attempt, acked: lastProgress },
        `transfer attempt ${attempt} failed (${err.code}: ${err.message}); resuming`,
      );
    } finally {
      r.signal.removeEventListener("abort", onAbort);
      src.close();
    }
  }
}

async function settleOutcome(r: Runner, out: Outcome): Promise<RunResult> {
  // The session's INFO is from before the reboot: report what runs now (best effort).
  const info = await r.ports
    .device()
    .readInfo()
    .catch(() => out.info);
  const fields = deviceFields(info);
  if (out.kind === "confirmed") return r.finish("succeeded", fields);
  if (out.kind === "rolled-back")
    return r.finish("rolled-back", {
      ...fields,
      error: {
        code: "E_UART_ROLLED_BACK",
        message: `the new app did not confirm itself; the device runs 0x${out.runningOffset.toString(16)} again`,
        step: "awaitConfirm",
      },
    });
  return r.finish("failed", {
    ...fields,
    error: { code: "E_UART_PROTOCOL", message: "unexpected session outcome", step: "transfer" },
  });
}

/** The poll while a new app awaits its self-test after a restart. */
const SETTLE_POLL_MS = 1000;

/**
 * After ACTIVATE the answer is on the device: the new app runs and is VALID (succeeded), the old
 * one runs again (rolled back), or the new one still awaits its self-test (wait for it).
 */
async function settleAfterActivation(r: Runner, cause?: EspOtaError): Promise<RunResult> {
  const variant = r.job.variant;
  const clock = r.ports.clock;
  const deadline = clock.now().getTime() + r.settings.policy.confirmTimeoutMs;
  let info: Info | undefined;
  for (;;) {
    try {
      info = await r.ports.device().readInfo();
    } catch (e) {
      const err = errorOf(e);
      if (DEVICE_GONE.has(err.code)) return { kind: "suspended", code: err.code };
      if (clock.now().getTime() > deadline) break;
      await clock.sleep(SETTLE_POLL_MS);
      continue;
    }
    const running = runningAppOf(info);
    const onNew = variant !== undefined && info.runningOffset === variant.offset;
    if (onNew && running?.state === "PENDING_VERIFY" && clock.now().getTime() < deadline) {
      await r.ports.publish.status("awaiting-confirm", {
        step: "awaitConfirm",
        ...deviceFields(info),
      });
      await clock.sleep(SETTLE_POLL_MS);
      continue;
    }
    if (onNew && running?.state !== "PENDING_VERIFY")
      return r.finish("succeeded", deviceFields(info));
    if (!onNew)
      return r.finish("rolled-back", {
        ...deviceFields(info),
        error: {
          code: "E_UART_ROLLED_BACK",
          message: `the device runs ${running?.version ?? "its previous app"} from 0x${info.runningOffset.toString(16)}${cause ? ` (${cause.code}: ${cause.message})` : ""}`,
          step: "awaitConfirm",
        },
      });
    break;
  }
  return r.finish("failed", {
    ...(info ? deviceFields(info) : {}),
    error: {
      code: cause?.code ?? "E_AGENT_NO_ROLLBACK_INFO",
      message: cause?.message ?? "could not tell whether the new app confirmed itself",
      step: "awaitConfirm",
    },
  });
}
