/**
 * The host side of one UART OTA session as data (STYLE.md §3, docs/uart-protocol.md §5): a pure
 * `transition(state, input) -> { state, effects }`. Frames, timeouts, resets seen in the log,
 * disconnects and cancellation arrive as inputs; the clock is in every input (`now`); effects
 * say what to send, which timer to arm, what to tell the user. The driver (host.ts) performs
 * the effects and feeds the inputs; nothing here touches a port or a timer.
 */
import type { ErrorCode, ErrorContext } from "../errors.js";
import { OTA_STATE, seqToSlot, stateName } from "../esp/otadata.js";
import { quote } from "../text.js";
import { FRAME_OVERHEAD } from "./frame.js";
import {
  type Ack,
  type Announce,
  CONSOLE_BAUD,
  DATA_CHUNK,
  decodeAck,
  decodeAnnounce,
  decodeInfo,
  decodeResult,
  describeInfo,
  encodeBaud,
  encodeBegin,
  encodeHello,
  type Info,
  MSG,
  PROTOCOL_VERSION,
  type Result,
  STATUS,
  statusName,
} from "./messages.js";

export interface HostJob {
  /** info: handshake and report; flash: send an image; reboot: restart the device (REBOOT) and report its INFO after it boots. */
  mode: "info" | "flash" | "reboot";
  /** The image (flash mode): where it goes, its size and SHA-256 of the ciphertext. */
  image?: { offset: number; size: number; sha256: Uint8Array };
  /** Refuse unless the offset is the slot after the running one (the CLI's rule). */
  requireNextSlot?: boolean;
  /**
   * The app version the image must carry: the signed manifest's. END's RESULT names the version
   * of the image the device decrypted and verified (§4); any other is aborted before activation
   * (E_UART_VERSION_MISMATCH), so a manifest cannot pass an older image off as a newer one.
   */
  expectVersion?: string;
  /** Negotiate this baud after the handshake (default: stay at the console rate). */
  targetBaud?: number;
  /**
   * A rate the device may have been left at, asked at when HELLO goes unanswered at the console
   * rate, without negotiating it afterwards (default: targetBaud). For a session that only reads
   * INFO: a transfer cut short (superseded, cancelled, failed) leaves the device at the transfer
   * rate until its next reset, and the gateway's next INFO must still find it.
   */
  probeBaud?: number;
  /** The rate the device's console boots into (default 115200, the ESP-IDF default). */
  consoleBaud?: number;
  timeouts?: Partial<HostTimeouts>;
}

export interface HostTimeouts {
  /** A request's RESULT/INFO (default 3000 ms: esptool's default command timeout). */
  responseMs: number;
  /** Without ACK progress while data is outstanding (default 3000 ms: ≥ a slow block erase). */
  ackMs: number;
  /** REBOOT to the device's first ANNOUNCE (default 10 s). */
  bootMs: number;
  /** First ANNOUNCE to the app confirming itself (default 30 s). */
  confirmMs: number;
  /** Attempts per request before giving up (default 5). */
  retries: number;
  /** Resumes after device resets within one session (default 8). */
  resumes: number;
}

export const DEFAULT_TIMEOUTS: HostTimeouts = {
  responseMs: 3000,
  ackMs: 3000,
  bootMs: 10_000,
  confirmMs: 30_000,
  retries: 5,
  resumes: 8,
};

/** Wait after BAUD's RESULT before the first byte at the new rate (device switches in ~4 ms). */
export const BAUD_SWITCH_MS = 10;

export type Outcome =
  | { kind: "info"; info: Info }
  | { kind: "confirmed"; info: Info; slotOffset: number; version: string; resumedFrom: number }
  | {
      kind: "rolled-back";
      info: Info;
      runningOffset: number;
      /** The new slot's otadata state after the rollback (ABORTED, INVALID) if known. */
      newSlotState: number | undefined;
    };

export type HostEvent =
  | { kind: "info"; info: Info }
  | { kind: "baud"; baud: number; confirmed: boolean }
  | { kind: "progress"; sent: number; acked: number; written: number; total: number }
  | { kind: "resumed"; from: number }
  | { kind: "phase"; phase: Phase["kind"] }
  | { kind: "announce"; announce: Announce }
  | { kind: "device-reset" };

export type Effect =
  | { kind: "send"; type: number; payload: Uint8Array }
  | { kind: "send-data"; offset: number; length: number }
  | { kind: "timer"; name: TimerName; ms: number | undefined }
  | { kind: "baud"; baud: number }
  | { kind: "event"; event: HostEvent }
  | { kind: "finish"; outcome: Outcome }
  | { kind: "fail"; code: ErrorCode; message: string; context: ErrorContext };

export type TimerName = "response" | "hold";

export type HostInput =
  | { kind: "start"; now: number }
  | { kind: "frame"; now: number; type: number; payload: Uint8Array }
  | { kind: "timer"; now: number; name: TimerName }
  | { kind: "reset-seen"; now: number }
  | { kind: "closed"; now: number }
  /**
   * `keep`: end the session without ABORT, so the device's progress record stays open (§6.4):
   * the job is being replaced by one that may send the same image, whose BEGIN then resumes
   * instead of erasing otadata and the slot again (issue 12 defect 6).
   */
  | { kind: "cancel"; now: number; reason: string; keep?: boolean };

interface Ctx {
  job: HostJob;
  t: HostTimeouts;
  baud: number;
  info: Info | undefined;
  resumes: number;
  resumedFrom: number;
  /** reboot mode: REBOOT done and the device announced itself; the next INFO ends the job. */
  rebooted: boolean;
}

type Phase =
  | { kind: "idle" }
  | {
      kind: "hello";
      attempt: number;
      sentAt: number;
      /** This attempt's second HELLO, at the job's target rate (§3.3, probeBaud). */
      probe?: boolean;
    }
  | { kind: "baud"; target: number; attempt: number }
  | { kind: "baud-confirm"; target: number; sentAt: number }
  | { kind: "baud-fallback" }
  | { kind: "begin"; attempt: number }
  | {
      kind: "send";
      next: number;
      received: number;
      credit: number;
      written: number;
      holdUntil: number;
      stalls: number;
      /** ISR not in IRAM: pause `ms` once the byte before image offset `at` is on the wire. */
      pause: { at: number; ms: number } | undefined;
      /** When the bytes we wrote will have left the wire (ms, our estimate from the baud). */
      wireFreeAt: number;
    }
  | { kind: "end"; attempt: number }
  | { kind: "activate"; attempt: number }
  | { kind: "reboot"; attempt: number }
  | { kind: "await-boot" }
  | { kind: "await-confirm"; since: number; polls: number }
  | { kind: "rollback-info"; runningOffset: number; attempt: number }
  | { kind: "aborting"; code: ErrorCode; message: string }
  | { kind: "done" };

export interface HostState {
  phase: Phase;
  ctx: Ctx;
}

export function initialHostState(job: HostJob): HostState {
  if (job.mode === "flash" && !job.image)
    throw new TypeError("initialHostState: flash mode needs an image");
  return {
    phase: { kind: "idle" },
    ctx: {
      job,
      t: { ...DEFAULT_TIMEOUTS, ...job.timeouts },
      baud: job.consoleBaud ?? CONSOLE_BAUD,
      info: undefined,
      resumes: 0,
      resumedFrom: 0,
      rebooted: false,
    },
  };
}

interface Step {
  state: HostState;
  effects: Effect[];
}

const consoleBaud = (s: HostState) => s.ctx.job.consoleBaud ?? CONSOLE_BAUD;

/** The pure transition function. */
export function transition(s: HostState, input: HostInput): Step {
  const { phase } = s;
  if (phase.kind === "done") return { state: s, effects: [] };
  if (input.kind === "closed")
    return fail(s, "E_UART_DISCONNECTED", "the serial link closed", { phase: phase.kind });
  if (input.kind === "cancel") return cancel(s, input.reason, input.keep === true);
  if (input.kind === "start") return hello(s, 1, input.now);
  if (input.kind === "reset-seen") return onReset(s);
  if (input.kind === "timer") return onTimer(s, input.name, input.now);
  return onFrame(s, input.type, input.payload, input.now);
}

// ---- helpers ----

function go(s: HostState, phase: Phase, effects: Effect[] = []): Step {
  const changed = phase.kind !== s.phase.kind;
  return {
    state: { ...s, phase },
    effects: changed
      ? [{ kind: "event", event: { kind: "phase", phase: phase.kind } }, ...effects]
      : effects,
  };
}

function withCtx(s: HostState, ctx: Partial<Ctx>): HostState {
  return { ...s, ctx: { ...s.ctx, ...ctx } };
}

function fail(s: HostState, code: ErrorCode, message: string, context: ErrorContext = {}): Step {
  return {
    state: { ...s, phase: { kind: "done" } },
    effects: [
      { kind: "timer", name: "response", ms: undefined },
      { kind: "timer", name: "hold", ms: undefined },
      { kind: "fail", code, message, context },
    ],
  };
}

function finish(s: HostState, outcome: Outcome): Step {
  return {
    state: { ...s, phase: { kind: "done" } },
    effects: [
      { kind: "timer", name: "response", ms: undefined },
      { kind: "timer", name: "hold", ms: undefined },
      { kind: "finish", outcome },
    ],
  };
}

const respTimer = (s: HostState, ms = s.ctx.t.responseMs): Effect => ({
  kind: "timer",
  name: "response",
  ms,
});

function request(type: number, payload: Uint8Array = new Uint8Array(0)): Effect {
  return { kind: "send", type, payload };
}

/**
 * The rate a silent device may be at besides the console rate: the job's target. A device keeps
 * a new rate once any valid frame arrives within its window (§3.3), so when the INFO confirming it
 * reaches the host after the host has given up on it (a slow link, a stalled event loop), or a
 * previous session's host did, the device is at the target rate and the host at the console
 * rate, and only a reset would bring them together. So every HELLO attempt that goes unanswered at
 * the console rate is repeated at the target rate before the next one.
 */
function probeBaud(s: HostState): number | undefined {
  const target = s.ctx.job.probeBaud ?? s.ctx.job.targetBaud;
  return target !== undefined && target !== consoleBaud(s) ? target : undefined;
}

function hello(s: HostState, attempt: number, now: number): Step {
  return go(s, { kind: "hello", attempt, sentAt: now }, [
    request(MSG.HELLO, encodeHello()),
    respTimer(s),
  ]);
}

function begin(s: HostState, attempt: number): Step {
  const img = s.ctx.job.image!;
  return go(s, { kind: "begin", attempt }, [request(MSG.BEGIN, encodeBegin(img)), respTimer(s)]);
}

function simple(s: HostState, kind: "end" | "activate" | "reboot", attempt: number): Step {
  const type = kind === "end" ? MSG.END : kind === "activate" ? MSG.ACTIVATE : MSG.REBOOT;
  return go(s, { kind, attempt }, [request(type), respTimer(s)]);
}

/** After a handshake: negotiate baud, report, or start the transfer. */
function afterInfo(s: HostState, info: Info): Step {
  const job = s.ctx.job;
  if (info.protocol !== PROTOCOL_VERSION)
    return fail(
      s,
      "E_UART_PROTOCOL",
      `device speaks protocol ${info.protocol}, host ${PROTOCOL_VERSION}`,
    );
  const target = job.targetBaud;
  if (target && target !== s.ctx.baud && s.phase.kind === "hello" && s.ctx.info === undefined) {
    const st = withCtx(s, { info });
    return go(st, { kind: "baud", target, attempt: 1 }, [
      { kind: "event", event: { kind: "info", info } },
      request(MSG.BAUD, encodeBaud(target)),
      respTimer(s),
    ]);
  }
  const st = withCtx(s, { info });
  const ev: Effect = { kind: "event", event: { kind: "info", info } };
  if (job.mode === "reboot" && !s.ctx.rebooted) {
    const r = simple(st, "reboot", 1);
    return { state: r.state, effects: [ev, ...r.effects] };
  }
  if (job.mode === "info" || job.mode === "reboot") {
    const r = finish(st, { kind: "info", info });
    return { state: r.state, effects: [ev, ...r.effects] };
  }
  const img = job.image!;
  if (job.requireNextSlot) {
    const next = nextSlotOffset(info);
    if (next !== img.offset)
      return fail(
        st,
        "E_UART_SLOT_NOT_NEXT",
        `0x${img.offset.toString(16)} is not the next update slot (the device says ${next === undefined ? "none" : `0x${next.toString(16)}`})`,
        { offset: img.offset, next },
      );
  }
  const r = begin(st, 1);
  return { state: r.state, effects: [ev, ...r.effects] };
}

/** esp_ota_get_next_update_partition: the OTA slot after the running one. */
export function nextSlotOffset(info: Info): number | undefined {
  const ota = info.slots.filter((p) => p.subtype >= 0x10 && p.subtype <= 0x1f);
  if (ota.length === 0) return undefined;
  const i = ota.findIndex((p) => p.offset === info.runningOffset);
  return ota[(i + 1) % ota.length]!.offset;
}

function pump(s: HostState, now: number): Step {
  const p = s.phase;
  if (p.kind !== "send") return { state: s, effects: [] };
  const size = s.ctx.job.image!.size;
  const effects: Effect[] = [];
  let { next, wireFreeAt, pause, holdUntil } = p;
  const byteMs = 10_000 / s.ctx.baud;
  const consume = () => {
    if (pause && next >= pause.at) {
      // §7: the device programs flash once our byte before `at` reaches it. Its latency
      // cancels out: that byte and our next one take the same path.
      holdUntil = Math.max(holdUntil, wireFreeAt + pause.ms);
      pause = undefined;
    }
  };
  consume();
  if (now >= holdUntil) {
    let limit = Math.min(p.credit, size);
    if (pause) limit = Math.min(limit, pause.at);
    while (next < limit) {
      const len = Math.min(DATA_CHUNK, limit - next);
      effects.push({ kind: "send-data", offset: next, length: len });
      wireFreeAt = Math.max(now, wireFreeAt) + (FRAME_OVERHEAD + 4 + len) * byteMs;
      next += len;
    }
    consume();
  }
  if (holdUntil > now && next < Math.min(p.credit, size))
    effects.push({ kind: "timer", name: "hold", ms: holdUntil - now });
  if (next !== p.next)
    effects.push({
      kind: "event",
      event: { kind: "progress", sent: next, acked: p.received, written: p.written, total: size },
    });
  return { state: { ...s, phase: { ...p, next, wireFreeAt, pause, holdUntil } }, effects };
}

function onReset(s: HostState): Step {
  // A ROM banner in the log: the device restarted. Expected after REBOOT; otherwise the
  // transfer resumes once the device announces itself (§6.4).
  return { state: s, effects: [{ kind: "event", event: { kind: "device-reset" } }] };
}

function cancel(s: HostState, reason: string, keep: boolean): Step {
  const k = s.phase.kind;
  if ((k === "begin" || k === "send" || k === "end") && !keep) {
    return go(s, { kind: "aborting", code: "E_UART_CANCELLED", message: reason }, [
      { kind: "timer", name: "hold", ms: undefined },
      request(MSG.ABORT),
      respTimer(s, Math.min(s.ctx.t.responseMs, 1000)),
    ]);
  }
  return fail(s, "E_UART_CANCELLED", reason, { phase: k, ...(keep ? { kept: true } : {}) });
}

function onTimer(s: HostState, name: TimerName, now: number): Step {
  const p = s.phase;
  const t = s.ctx.t;
  if (name === "hold" && p.kind === "baud-confirm")
    return go(s, { ...p, sentAt: now }, [
      request(MSG.HELLO, encodeHello()),
      respTimer(s, Math.min(t.responseMs, 800)),
    ]);
  if (name === "hold") return pump(s, now);
  switch (p.kind) {
    case "hello": {
      const probe = probeBaud(s);
      if (probe !== undefined && !p.probe)
        return go(withCtx(s, { baud: probe }), { ...p, sentAt: now, probe: true }, [
          { kind: "baud", baud: probe },
          request(MSG.HELLO, encodeHello()),
          respTimer(s),
        ]);
      if (p.attempt >= t.retries)
        return fail(s, "E_UART_NO_DEVICE", `no answer to HELLO after ${p.attempt} attempts`, {
          baud: probe === undefined ? s.ctx.baud : `${consoleBaud(s)} and ${probe}`,
        });
      if (probe === undefined) return hello(s, p.attempt + 1, now);
      const back = hello(withCtx(s, { baud: consoleBaud(s) }), p.attempt + 1, now);
      return {
        state: back.state,
        effects: [{ kind: "baud", baud: consoleBaud(s) }, ...back.effects],
      };
    }
    case "baud":
      if (p.attempt >= t.retries) return baudFallback(s);
      return go(s, { ...p, attempt: p.attempt + 1 }, [
        request(MSG.BAUD, encodeBaud(p.target)),
        respTimer(s),
      ]);
    case "baud-confirm":
      return baudFallback(s);
    case "baud-fallback":
      return hello(withCtx(s, {}), 1, now);
    case "begin":
    case "end":
    case "activate":
    case "reboot":
      if (p.attempt >= t.retries)
        return fail(s, "E_UART_TIMEOUT", `no answer to ${p.kind.toUpperCase()}`, { phase: p.kind });
      return p.kind === "begin" ? begin(s, p.attempt + 1) : simple(s, p.kind, p.attempt + 1);
    case "send": {
      // No ACK progress: go back to the last acknowledged byte (go-back-N) and resend.
      if (p.stalls >= t.retries)
        return fail(s, "E_UART_TIMEOUT", `no ACK progress at offset ${p.received}`, {
          offset: p.received,
        });
      const st = { ...s, phase: { ...p, next: p.received, stalls: p.stalls + 1, holdUntil: 0 } };
      const r = pump(st, now);
      return { state: r.state, effects: [...r.effects, respTimer(s, t.ackMs)] };
    }
    case "await-boot":
      return fail(
        s,
        "E_UART_CONFIRM_TIMEOUT",
        "the device did not announce itself after REBOOT",
        {},
      );
    case "await-confirm":
      if (now - p.since >= t.confirmMs)
        return fail(
          s,
          "E_UART_CONFIRM_TIMEOUT",
          `the new app did not confirm itself within ${t.confirmMs} ms`,
          {},
        );
      return go(s, { ...p, polls: p.polls + 1 }, [
        request(MSG.STATUS),
        respTimer(s, Math.min(t.responseMs, t.confirmMs)),
      ]);
    case "rollback-info":
      if (p.attempt >= t.retries)
        return finish(s, {
          kind: "rolled-back",
          info: s.ctx.info!,
          runningOffset: p.runningOffset,
          newSlotState: undefined,
        });
      return go(s, { ...p, attempt: p.attempt + 1 }, [
        request(MSG.HELLO, encodeHello()),
        respTimer(s),
      ]);
    case "aborting":
      return fail(s, p.code, p.message, {});
    default:
      return { state: s, effects: [] };
  }
}

function baudFallback(s: HostState): Step {
  // Both sides go back to the console rate: the device on its own after BAUD_CONFIRM_MS.
  const st = withCtx(s, { baud: consoleBaud(s) });
  return go(st, { kind: "baud-fallback" }, [
    { kind: "baud", baud: consoleBaud(s) },
    { kind: "event", event: { kind: "baud", baud: consoleBaud(s), confirmed: false } },
    respTimer(s, 1200),
  ]);
}

function resultFailure(s: HostState, r: Result): Step {
  const ctx = { status: statusName(r.status), espErr: r.espErr, request: r.request };
  // The device's own words: at most 255 bytes (a u8-prefixed string), control characters escaped.
  const msg = `${statusName(r.status)}: ${quote(r.detail, 255)}`;
  switch (r.status) {
    case STATUS.RUNNING_SLOT:
    case STATUS.NOT_APP_SLOT:
    case STATUS.TOO_BIG:
      return fail(s, "E_UART_SLOT_REFUSED", msg, ctx);
    case STATUS.PENDING_VERIFY:
      return fail(s, "E_UART_PENDING_VERIFY", msg, ctx);
    case STATUS.HASH_MISMATCH:
      return fail(s, "E_UART_HASH_MISMATCH", msg, ctx);
    case STATUS.IMAGE_INVALID:
    case STATUS.SMALL_SEC_VER:
      return fail(
        s,
        r.request === MSG.ACTIVATE ? "E_UART_ACTIVATE_FAILED" : "E_UART_IMAGE_INVALID",
        msg,
        ctx,
      );
    // A device that refuses (BAD_STATE) or whose flash failed (FLASH_ERROR) did not send
    // anything the host cannot use: E_UART_PROTOCOL, which says that, sent the operator to
    // compare firmware versions for a worn flash (issue 12, "distinct codes").
    case STATUS.FLASH_ERROR:
      return fail(s, "E_UART_FLASH_ERROR", msg, ctx);
    case STATUS.BAD_STATE:
      return fail(s, "E_UART_BAD_STATE", msg, ctx);
    default:
      return fail(s, "E_UART_PROTOCOL", msg, ctx);
  }
}

function onFrame(s: HostState, type: number, payload: Uint8Array, now: number): Step {
  const p = s.phase;
  if (type === MSG.ANNOUNCE) {
    const a = decodeAnnounce(payload);
    if (!a) return { state: s, effects: [] };
    return onAnnounce(s, a, now);
  }
  if (type === MSG.INFO) {
    const info = decodeInfo(payload);
    if (!info) return fail(s, "E_UART_PROTOCOL", "malformed INFO");
    if (p.kind === "hello" || p.kind === "baud-confirm") {
      const sentAt = p.sentAt;
      let st = s;
      if (p.kind === "baud-confirm") {
        st = withCtx(st, { info });
        const r = afterInfo({ ...st, phase: { kind: "hello", attempt: 1, sentAt } }, info);
        return {
          state: r.state,
          effects: [
            { kind: "event", event: { kind: "baud", baud: st.ctx.baud, confirmed: true } },
            ...r.effects,
          ],
        };
      }
      if (p.kind === "hello" && p.probe) {
        // Found at the target rate: it is the rate in use from now on, no BAUD needed.
        const r = afterInfo(st, info);
        return {
          state: r.state,
          effects: [
            { kind: "event", event: { kind: "baud", baud: st.ctx.baud, confirmed: true } },
            ...r.effects,
          ],
        };
      }
      return afterInfo(st, info);
    }
    if (p.kind === "rollback-info") {
      return finish(withCtx(s, { info }), {
        kind: "rolled-back",
        info,
        runningOffset: p.runningOffset,
        newSlotState: slotState(info, s.ctx.job.image!.offset),
      });
    }
    return { state: s, effects: [] };
  }
  if (type === MSG.ACK) {
    const a = decodeAck(payload);
    if (!a || p.kind !== "send") return { state: s, effects: [] };
    return onAck(s, a, now);
  }
  if (type === MSG.RESULT) {
    const r = decodeResult(payload);
    if (!r) return fail(s, "E_UART_PROTOCOL", "malformed RESULT");
    return onResult(s, r);
  }
  return { state: s, effects: [] };
}

function onAck(s: HostState, a: Ack, now: number): Step {
  const p = s.phase;
  if (p.kind !== "send") return { state: s, effects: [] };
  const size = s.ctx.job.image!.size;
  const progressed = a.received > p.received;
  let next = p.next;
  // Gap reported (flags bit 0): the frames after `received` were dropped; resend from there.
  if (a.flags & 1 && a.received >= p.received) next = a.received;
  if (next < a.received) next = a.received;
  let pause = p.pause;
  if (a.busyMs > 0 && a.holdAt >= next) pause = { at: a.holdAt, ms: a.busyMs };
  const phase: Phase = {
    ...p,
    pause,
    next,
    received: Math.max(p.received, a.received),
    credit: Math.max(p.credit, a.credit),
    written: Math.max(p.written, a.written),
    stalls: progressed ? 0 : p.stalls,
  };
  const st: HostState = { ...s, phase };
  if (phase.received >= size) {
    const r = simple(st, "end", 1);
    const done: HostEvent = {
      kind: "progress",
      sent: size,
      acked: size,
      written: phase.written,
      total: size,
    };
    return {
      state: r.state,
      effects: [
        { kind: "timer", name: "hold", ms: undefined },
        { kind: "event", event: done },
        ...r.effects,
      ],
    };
  }
  const r = pump(st, now);
  const effects = r.effects;
  if (progressed || next !== p.next) effects.push(respTimer(s, s.ctx.t.ackMs));
  return { state: r.state, effects };
}

function onResult(s: HostState, r: Result): Step {
  const p = s.phase;
  if (r.status !== STATUS.OK && p.kind !== "aborting" && p.kind !== "baud") {
    if (requestOf(p.kind) === r.request) return resultFailure(s, r);
    return { state: s, effects: [] };
  }
  switch (p.kind) {
    case "baud":
      if (r.request !== MSG.BAUD) return { state: s, effects: [] };
      if (r.status !== STATUS.OK) return baudFallback(s);
      // Give the device its uart_wait_tx_done and switch before the first fast byte (§3.3).
      return go(
        withCtx(s, { baud: p.target }),
        { kind: "baud-confirm", target: p.target, sentAt: Number.POSITIVE_INFINITY },
        [
          { kind: "baud", baud: p.target },
          { kind: "timer", name: "response", ms: undefined },
          { kind: "timer", name: "hold", ms: BAUD_SWITCH_MS },
        ],
      );
    case "begin": {
      if (r.request !== MSG.BEGIN) return { state: s, effects: [] };
      const from = r.value;
      const st = withCtx(s, { resumedFrom: from });
      const r2 = go(
        st,
        {
          kind: "send",
          next: from,
          received: from,
          credit: from,
          written: from,
          holdUntil: 0,
          stalls: 0,
          pause: undefined,
          wireFreeAt: 0,
        },
        [respTimer(s, s.ctx.t.ackMs)],
      );
      if (from > 0) r2.effects.push({ kind: "event", event: { kind: "resumed", from } });
      return r2;
    }
    case "end": {
      if (r.request !== MSG.END) return { state: s, effects: [] };
      const want = s.ctx.job.expectVersion;
      if (want !== undefined && r.detail !== want)
        return go(
          s,
          {
            kind: "aborting",
            code: "E_UART_VERSION_MISMATCH",
            message: `the device verified an image of version ${JSON.stringify(quote(r.detail, 64))}, the manifest says ${JSON.stringify(want)}`,
          },
          [request(MSG.ABORT), respTimer(s, Math.min(s.ctx.t.responseMs, 1000))],
        );
      return simple(s, "activate", 1);
    }
    case "activate":
      if (r.request !== MSG.ACTIVATE) return { state: s, effects: [] };
      return simple(s, "reboot", 1);
    case "reboot":
      if (r.request !== MSG.REBOOT) return { state: s, effects: [] };
      // The device reboots into its console rate; so must we (§3.3).
      return go(withCtx(s, { baud: consoleBaud(s) }), { kind: "await-boot" }, [
        { kind: "baud", baud: consoleBaud(s) },
        respTimer(s, s.ctx.t.bootMs),
      ]);
    case "aborting":
      if (r.request !== MSG.ABORT) return { state: s, effects: [] };
      return fail(s, p.code, `${p.message} (device aborted the transfer; old app untouched)`, {});
    default:
      return { state: s, effects: [] };
  }
}

function requestOf(kind: Phase["kind"]): number | undefined {
  return (
    {
      begin: MSG.BEGIN,
      end: MSG.END,
      activate: MSG.ACTIVATE,
      reboot: MSG.REBOOT,
    } as Partial<Record<Phase["kind"], number>>
  )[kind];
}

function onAnnounce(s: HostState, a: Announce, now: number): Step {
  const p = s.phase;
  const ev: Effect = { kind: "event", event: { kind: "announce", announce: a } };
  const img = s.ctx.job.image;
  const withEv = (r: Step): Step => ({ state: r.state, effects: [ev, ...r.effects] });
  switch (p.kind) {
    case "begin":
    case "send":
    case "end":
    case "activate": {
      // The device reset in the middle: its RAM is gone, its progress record is not (§6.4).
      if (a.phase !== 0) return { state: s, effects: [ev] };
      // Not E_UART_TIMEOUT ("stopped answering": retried, a cable's fault): a device that keeps
      // resetting is crashing or browning out, and retrying the transfer only resets it again.
      if (s.ctx.resumes >= s.ctx.t.resumes)
        return fail(
          s,
          "E_UART_RESET_LOOP",
          `device reset ${s.ctx.resumes} times during the transfer`,
          { resets: s.ctx.resumes },
        );
      const st = withCtx(s, { resumes: s.ctx.resumes + 1, info: undefined, baud: consoleBaud(s) });
      return withEv(
        go(st, { kind: "hello", attempt: 1, sentAt: now }, [
          { kind: "timer", name: "hold", ms: undefined },
          { kind: "baud", baud: consoleBaud(s) },
          request(MSG.HELLO, encodeHello()),
          respTimer(s),
        ]),
      );
    }
    case "await-boot":
    case "await-confirm":
    case "reboot": {
      if (s.ctx.job.mode === "reboot") {
        // Booted (phase 0) or done with its self-test (phase 1): read the fresh INFO.
        const st = withCtx(s, { rebooted: true, info: undefined });
        return withEv(
          go(st, { kind: "hello", attempt: 1, sentAt: now }, [
            request(MSG.HELLO, encodeHello()),
            respTimer(s),
          ]),
        );
      }
      if (!img) return { state: s, effects: [ev] };
      if (a.runningOffset !== img.offset)
        return withEv(
          go(s, { kind: "rollback-info", runningOffset: a.runningOffset, attempt: 1 }, [
            request(MSG.HELLO, encodeHello()),
            respTimer(s),
          ]),
        );
      if (
        a.runningState === OTA_STATE.VALID ||
        (a.phase === 1 && a.runningState === OTA_STATE.UNDEFINED)
      )
        return withEv(
          finish(s, {
            kind: "confirmed",
            info: s.ctx.info!,
            slotOffset: img.offset,
            version: a.version,
            resumedFrom: s.ctx.resumedFrom,
          }),
        );
      if (p.kind === "await-confirm") return { state: s, effects: [ev] };
      return withEv(
        go(s, { kind: "await-confirm", since: now, polls: 0 }, [
          respTimer(s, Math.min(s.ctx.t.responseMs, s.ctx.t.confirmMs)),
        ]),
      );
    }
    default:
      return { state: s, effects: [ev] };
  }
}

/** The otadata state of the newest entry that selects `offset` (after a rollback). */
export function slotState(info: Info, offset: number): number | undefined {
  const ota = info.slots.filter((p) => p.subtype >= 0x10 && p.subtype <= 0x1f);
  const idx = ota.findIndex((p) => p.offset === offset);
  if (idx < 0) return undefined;
  const { otadata } = describeInfo(info);
  let best: { seq: number; state: number } | undefined;
  for (const e of otadata) {
    if (e.seq === 0xffffffff || e.seq === 0) continue;
    if (seqToSlot(e.seq, ota.length) !== idx) continue;
    if (!best || e.seq > best.seq) best = { seq: e.seq, state: e.state };
  }
  return best?.state;
}

export function describeOutcome(o: Outcome): string {
  switch (o.kind) {
    case "info":
      return "info";
    case "confirmed":
      return `confirmed: ${o.version} runs from 0x${o.slotOffset.toString(16)} and marked itself VALID`;
    case "rolled-back":
      return `rolled back: the device runs 0x${o.runningOffset.toString(16)} again${o.newSlotState === undefined ? "" : `; the new slot's entry is ${stateName(o.newSlotState)}`}`;
  }
}
