/**
 * One device's update as named steps (STYLE.md §4; docs/operations.md "Update steps"):
 * parseNotice, fetchManifest, verifyManifest, readDevice, selectSlot, download, transfer,
 * verifyOnDevice, activate, reboot, awaitConfirm, report. Each step is recorded in the device's
 * ledger before it acts, so a restart resumes from the right place: a manifest already fetched
 * is re-verified from the ledger, a finished download is re-hashed instead of fetched again, a
 * transfer resumes from the device's own progress record, and an update that was already
 * activated is settled by asking the device which app runs.
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
  readSync,
  rmSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { fromHex } from "../src/bytes.js";
import type { DownloadLimits, TlsPinning } from "../src/download/download.js";
import { downloadImage, fetchDocument } from "../src/download/download.js";
import { EspOtaError, isEspOtaError } from "../src/errors.js";
import { otadataOf, runningAppOf } from "../src/gateway/device-view.js";
import {
  type DeviceLedger,
  type FinalState,
  type Job,
  minCounterFor,
  pastPointOfNoReturn,
  recordMark,
  STEP_STATE,
  type StepName,
} from "../src/gateway/ledger.js";
import { selectVariant, type UpdatePolicy } from "../src/gateway/select.js";
import type { DeviceStatus, UpdateState } from "../src/mqtt/messages.js";
import type { TrustPolicy } from "../src/release/keyring.js";
import { verifyManifest } from "../src/release/manifest.js";
import type { ImageSource } from "../src/uart/host.js";
import type { HostEvent, Outcome } from "../src/uart/host-machine.js";
import type { Info } from "../src/uart/messages.js";
import type { DeviceLink } from "./link.js";

export interface UpdateSettings {
  trust: TrustPolicy;
  policy: UpdatePolicy & { confirmTimeoutMs: number; maxManifestBytes: number };
  download: Partial<DownloadLimits> & { allowedUrls?: readonly string[] };
  tls?: TlsPinning;
  stagingDir: string;
  /** Transfer attempts on a transient UART failure (each resumes where the device stopped). */
  transferAttempts: number;
}

export interface UpdateHost {
  deviceId: string;
  settings: UpdateSettings;
  log: Logger;
  now(): Date;
  ledger(): DeviceLedger;
  /**
   * Mutates the ledger and writes it atomically in the background; resolves once it is on disk.
   * status() awaits a write that includes every earlier change, so nothing is published before
   * the ledger that explains it is durable.
   */
  save(f: (l: DeviceLedger) => void): Promise<void>;
  /**
   * Mutates the ledger and writes it durably before returning (E_AGENT_STATE on failure): for
   * the step recorded as ACTIVATE is about to leave the port.
   */
  saveNow(f: (l: DeviceLedger) => void): void;
  /** Publishes the device's status for the job's release (seq and timestamps added). */
  status(state: UpdateState, extra?: Partial<DeviceStatus>): Promise<void>;
  progress(step: StepName, bytes: number, total: number): void;
  /** The device's link; throws E_AGENT_DEVICE_GONE when it is unplugged. */
  link(): DeviceLink;
  /** Bounds concurrent downloads across devices. */
  downloadSlot<T>(f: () => Promise<T>): Promise<T>;
  /** Aborted (with an EspOtaError as reason) to cancel before the point of no return. */
  signal: AbortSignal;
  /** The agent is stopping (SIGTERM) and closed the ports itself: nothing to report. */
  stopping?(): boolean;
}

/** How a run ended: a final status was published, or the job waits for the device to return. */
export type RunResult = { kind: "final"; state: FinalState } | { kind: "suspended"; code: string };

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
const TRANSIENT_UART = new Set(["E_UART_TIMEOUT", "E_UART_NO_DEVICE", "E_UART_FRAME_CRC"]);
/** The device went away: the job waits for it to be plugged back in. */
const DEVICE_GONE = new Set(["E_UART_DISCONNECTED", "E_AGENT_DEVICE_GONE", "E_UART_PORT"]);

export function stagingPath(dir: string, job: Job, slot: string): string {
  return join(dir, `${job.notice.deviceId}-${job.notice.releaseId}-${slot}.bin`);
}

/** Removes this device's staging files (all releases): called when a job ends. */
export function removeStaging(dir: string, deviceId: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) if (n.startsWith(`${deviceId}-`)) rmSync(join(dir, n), { force: true });
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

export async function runUpdate(h: UpdateHost): Promise<RunResult> {
  let step: StepName = h.ledger().job!.step;
  const enter = async (s: StepName, extra: Partial<DeviceStatus> = {}) => {
    step = s;
    h.save((l) => {
      l.job!.step = s;
    });
    h.log.info({ step: s }, `step ${s}`);
    await h.status(STEP_STATE[s], { step: s, ...extra });
  };
  const fail = (e: unknown): never => {
    throw new StepFailure(step, errorOf(e));
  };
  const checkCancel = () => {
    if (h.signal.aborted && !pastPointOfNoReturn(step)) fail(h.signal.reason);
  };

  try {
    const job = h.ledger().job!;
    if (pastPointOfNoReturn(job.step)) return await settleAfterActivation(h, job);

    // parseNotice: the notice was parsed and checked against the ledger by the agent.
    if (job.step === "parseNotice") await enter("parseNotice");

    // fetchManifest
    let manifestText = job.manifestText;
    if (manifestText === undefined) {
      await enter("fetchManifest");
      const doc = await h
        .downloadSlot(() =>
          fetchDocument(job.notice.manifestUrls, {
            maxBytes: h.settings.policy.maxManifestBytes,
            limits: h.settings.download,
            ...(h.settings.tls ? { tls: h.settings.tls } : {}),
            hooks: { signal: h.signal },
            ...(h.settings.download.allowedUrls
              ? { allowedUrls: h.settings.download.allowedUrls }
              : {}),
          }),
        )
        .catch(fail);
      manifestText = new TextDecoder().decode(doc.bytes);
      const text = manifestText;
      h.save((l) => {
        l.job!.manifestText = text;
      });
    }
    checkCancel();

    // verifyManifest: trust, threshold, expiry, counter high-water mark, device id and chip.
    await enter("verifyManifest");
    const chip = h.link().info?.chip;
    const check = verifyManifest(manifestText, h.settings.trust, {
      now: h.now(),
      deviceId: h.deviceId,
      ...(chip ? { chip } : {}),
      minCounter: minCounterFor(h.ledger(), job.notice.releaseId, h.settings.trust),
    });
    if (!check.ok) fail(new EspOtaError(check.code, check.reason, { deviceId: h.deviceId }));
    const manifest = (check as Extract<typeof check, { ok: true }>).manifest;
    if (manifest.releaseId !== job.notice.releaseId)
      fail(
        new EspOtaError(
          "E_AGENT_NOTICE_INVALID",
          `the notice names release ${job.notice.releaseId} but its manifest is ${manifest.releaseId}`,
        ),
      );
    const signers = (check as Extract<typeof check, { ok: true }>).keyIds;
    h.save((l) => {
      recordMark(l, { counter: manifest.counter, releaseId: manifest.releaseId, keyIds: signers });
      l.job!.targetVersion = manifest.version;
    });
    checkCancel();

    // readDevice: the device's otadata decides the slot (never a cached view).
    await enter("readDevice", { targetVersion: manifest.version });
    const info = await h.link().readInfo(h.signal).catch(fail);
    const running = runningAppOf(info);
    if (running && h.ledger().job!.previous === undefined)
      h.save((l) => {
        l.job!.previous = running;
      });
    checkCancel();

    // selectSlot
    await enter("selectSlot", deviceFields(info));
    const sel = selectVariant(manifest, info, h.settings.policy);
    if (!sel.ok) fail(new EspOtaError(sel.code, sel.reason, { deviceId: h.deviceId }));
    const { variant, alreadyRunning } = sel as Extract<typeof sel, { ok: true }>;
    h.save((l) => {
      l.job!.variant = variant;
    });
    if (alreadyRunning) {
      h.log.info({ step }, `${manifest.version} already runs from ${variant.slot}`);
      return await finish(h, "succeeded", { ...deviceFields(info) });
    }
    const target = { label: variant.slot, offset: variant.offset };

    // download: resumable, hashed while streaming, never more than the manifest's size.
    await enter("download", { targetSlot: target, progress: { bytes: 0, total: variant.size } });
    const staging = stagingPath(h.settings.stagingDir, h.ledger().job!, variant.slot);
    h.save((l) => {
      l.job!.staging = staging;
    });
    const complete =
      existsWithSize(staging, variant.size) && (await fileSha256(staging)) === variant.sha256;
    if (!complete) {
      await h
        .downloadSlot(() =>
          downloadImage(
            {
              urls: variant.urls,
              size: variant.size,
              sha256: variant.sha256,
              dest: staging,
              ...(h.settings.download.allowedUrls
                ? { allowedUrls: h.settings.download.allowedUrls }
                : {}),
            },
            h.settings.download,
            h.settings.tls,
            {
              signal: h.signal,
              onProgress: (b, t) => h.progress("download", b, t),
              onRetry: (r) =>
                h.log.warn({ step: "download", ...r }, `download retry ${r.attempt}: ${r.code}`),
            },
          ),
        )
        .catch((e) => fail(downloadCause(e)));
    }
    checkCancel();

    // transfer .. awaitConfirm: one UART session; its phases are our steps.
    await enter("transfer", { targetSlot: target, progress: { bytes: 0, total: variant.size } });
    const outcome = await transfer(h, variant.size, fromHex(variant.sha256), staging, {
      enter,
      fail,
    });
    return await settleOutcome(h, outcome);
  } catch (e) {
    const f = e instanceof StepFailure ? e : new StepFailure(step, errorOf(e));
    if (DEVICE_GONE.has(f.error.code) && !h.signal.aborted) {
      if (h.stopping?.()) {
        // Not the device's doing: a status saying it went away would mislead whoever watches
        // an agent restart. The ledger keeps the job; the next start resumes it.
        h.log.info({ step: f.step }, "agent stopping; the update resumes when it starts again");
        return { kind: "suspended", code: f.error.code };
      }
      h.log.warn(
        { step: f.step, code: f.error.code },
        "device gone; the update resumes when it returns",
      );
      await h.status(STEP_STATE[f.step], {
        step: f.step,
        error: { code: "E_AGENT_DEVICE_GONE", message: f.error.message, step: f.step },
      });
      return { kind: "suspended", code: f.error.code };
    }
    const cancelled =
      f.error.code === "E_UART_CANCELLED" ||
      f.error.code === "E_DOWNLOAD_CANCELLED" ||
      (h.signal.aborted && !pastPointOfNoReturn(f.step));
    const err = cancelled && isEspOtaError(h.signal.reason) ? h.signal.reason : f.error;
    if (pastPointOfNoReturn(f.step)) {
      // The device was already switching: ask it which app runs rather than guess.
      return await settleAfterActivation(h, h.ledger().job!, err);
    }
    h.log.error({ step: f.step, code: err.code }, err.message);
    return await finish(h, cancelled ? "cancelled" : "failed", {
      error: { code: err.code, message: err.message, step: f.step },
    });
  }
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
  const [code] = codes as Set<EspOtaError["code"]>;
  return new EspOtaError(code!, e.message, e.context, e);
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

const PHASE_STEP: Partial<Record<string, StepName>> = {
  end: "verifyOnDevice",
  activate: "activate",
  reboot: "reboot",
  "await-boot": "reboot",
  "await-confirm": "awaitConfirm",
};

async function transfer(
  h: UpdateHost,
  size: number,
  sha256: Uint8Array,
  staging: string,
  s: { enter: (s: StepName) => Promise<void>; fail: (e: unknown) => never },
): Promise<Outcome> {
  const variant = h.ledger().job!.variant!;
  // The signed manifest's version: the device must report the same for the image it verified
  // (docs/security.md, G2), or the session aborts before ACTIVATE.
  const expectVersion = h.ledger().job!.targetVersion;
  let lastProgress = 0;
  for (let attempt = 1; ; attempt++) {
    const src = stagingSource(staging);
    // Cancelling is only allowed before ACTIVATE: after it, the session must run to its end.
    const ac = new AbortController();
    const onAbort = () => {
      if (!pastPointOfNoReturn(h.ledger().job!.step)) ac.abort(h.signal.reason);
    };
    h.signal.addEventListener("abort", onAbort);
    if (h.signal.aborted) onAbort();
    let entering: Promise<void> = Promise.resolve();
    try {
      const out = await h.link().flash({ offset: variant.offset, size, sha256 }, src, {
        signal: ac.signal,
        confirmMs: h.settings.policy.confirmTimeoutMs,
        ...(expectVersion !== undefined ? { expectVersion } : {}),
        onEvent: (e: HostEvent) => {
          if (e.kind === "phase") {
            const next = PHASE_STEP[e.phase];
            if (next && next !== h.ledger().job!.step) {
              // Past the point of no return the step is on disk before the machine's ACTIVATE
              // leaves the port (saveNow, synchronous): after a crash, the agent then asks the
              // device which app runs instead of sending the image again.
              const record = (l: DeviceLedger) => {
                l.job!.step = next;
              };
              if (pastPointOfNoReturn(next)) h.saveNow(record);
              else void h.save(record);
              entering = entering.then(() => s.enter(next));
            }
          } else if (e.kind === "progress") {
            lastProgress = e.acked;
            h.progress("transfer", e.acked, e.total);
          } else if (e.kind === "resumed") {
            h.log.info({ step: "transfer", from: e.from }, `transfer resumes at byte ${e.from}`);
          }
        },
      });
      await entering;
      return out;
    } catch (e) {
      await entering;
      const err = errorOf(e);
      const again =
        TRANSIENT_UART.has(err.code) &&
        attempt < h.settings.transferAttempts &&
        !pastPointOfNoReturn(h.ledger().job!.step) &&
        !h.signal.aborted;
      if (!again) return s.fail(err);
      h.log.warn(
        { step: "transfer", code: err.code, attempt, acked: lastProgress },
        `transfer attempt ${attempt} failed (${err.code}: ${err.message}); resuming`,
      );
    } finally {
      h.signal.removeEventListener("abort", onAbort);
      src.close();
    }
  }
}

async function settleOutcome(h: UpdateHost, out: Outcome): Promise<RunResult> {
  // The session's INFO is from before the reboot: report what runs now (best effort).
  const info = await h
    .link()
    .readInfo()
    .catch(() => out.info);
  const fields = deviceFields(info);
  if (out.kind === "confirmed") return finish(h, "succeeded", fields);
  if (out.kind === "rolled-back")
    return finish(h, "rolled-back", {
      ...fields,
      error: {
        code: "E_UART_ROLLED_BACK",
        message: `the new app did not confirm itself; the device runs 0x${out.runningOffset.toString(16)} again`,
        step: "awaitConfirm",
      },
    });
  return finish(h, "failed", {
    ...fields,
    error: { code: "E_UART_PROTOCOL", message: "unexpected session outcome", step: "transfer" },
  });
}

/**
 * After ACTIVATE the answer is on the device: the new app runs and is VALID (succeeded), the old
 * one runs again (rolled back), or the new one still awaits its self-test (wait for it).
 */
async function settleAfterActivation(
  h: UpdateHost,
  job: Job,
  cause?: EspOtaError,
): Promise<RunResult> {
  const variant = job.variant;
  const deadline = Date.now() + h.settings.policy.confirmTimeoutMs;
  let info: Info | undefined;
  for (;;) {
    try {
      info = await h.link().readInfo();
    } catch (e) {
      const err = errorOf(e);
      if (DEVICE_GONE.has(err.code)) return { kind: "suspended", code: err.code };
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    const running = runningAppOf(info);
    const onNew = variant !== undefined && info.runningOffset === variant.offset;
    if (onNew && running?.state === "PENDING_VERIFY" && Date.now() < deadline) {
      await h.status("awaiting-confirm", { step: "awaitConfirm", ...deviceFields(info) });
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (onNew && running?.state !== "PENDING_VERIFY")
      return finish(h, "succeeded", deviceFields(info));
    if (!onNew)
      return finish(h, "rolled-back", {
        ...deviceFields(info),
        error: {
          code: "E_UART_ROLLED_BACK",
          message: `the device runs ${running?.version ?? "its previous app"} from 0x${info.runningOffset.toString(16)}${cause ? ` (${cause.code}: ${cause.message})` : ""}`,
          step: "awaitConfirm",
        },
      });
    break;
  }
  return finish(h, "failed", {
    ...(info ? deviceFields(info) : {}),
    error: {
      code: cause?.code ?? "E_AGENT_NO_ROLLBACK_INFO",
      message: cause?.message ?? "could not tell whether the new app confirmed itself",
      step: "awaitConfirm",
    },
  });
}

async function finish(
  h: UpdateHost,
  state: FinalState,
  extra: Partial<DeviceStatus>,
): Promise<RunResult> {
  const job = h.ledger().job!;
  h.log.info({ step: "report", state, code: extra.error?.code }, `update ${state}`);
  // The ledger says the release ended before the status goes out: a restart in between
  // republishes this final status, never runs the job again.
  await h.status(state, { step: "report", ...extra, finishedAt: h.now().toISOString() });
  removeStaging(h.settings.stagingDir, job.notice.deviceId);
  return { kind: "final", state };
}
