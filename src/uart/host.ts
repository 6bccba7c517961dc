/**
 * The host-side driver: runs the pure state machine (host-machine.ts) over any byte port with
 * injected timers. It decodes frames (surfacing console lines as log events), performs the
 * machine's effects, reads image chunks on demand (memory per device is one chunk, not the
 * image: STYLE.md §10), and settles a promise with the outcome or a coded EspOtaError.
 */
import { EspOtaError, isEspOtaError } from "../errors.js";
import { encodeFrame, FRAME_GAP_MS, FrameDecoder } from "./frame.js";
import {
  type Effect,
  type HostEvent,
  type HostInput,
  type HostJob,
  type HostState,
  initialHostState,
  type Outcome,
  type TimerName,
  transition,
} from "./host-machine.js";
import { encodeData, MSG } from "./messages.js";
import type { BytePort } from "./port.js";
import type { TimerHandle, Timers } from "./scheduler.js";

export interface ImageSource {
  /** `length` bytes of the ciphertext at `offset` (any source: file, memory, a download). */
  read(offset: number, length: number): Uint8Array;
}

export interface HostSessionOptions {
  port: BytePort;
  timers: Timers;
  job: HostJob;
  image?: ImageSource;
  signal?: AbortSignal;
  /** Console lines from the device (boot log, panics): diagnostics, not noise. */
  onLog?: (line: string) => void;
  onEvent?: (event: HostEvent) => void;
}

/** Lines that start a ROM boot (esp32-facts §6.4): the device has just reset. */
const ROM_BANNER = /^(ets [A-Z][a-z]{2} |ESP-ROM:)/;

export interface SessionStats {
  framesIn: number;
  crcErrors: number;
  dataFramesSent: number;
  dataBytesSent: number;
  logLines: number;
  /**
   * Partial frames given up after a silence of FRAME_GAP_MS (§2.3: a lost byte, a reset, a
   * pulled cable): the agent's `esp_ota_agent_uart_frame_errors_total{kind="gap"}`.
   */
  gapResyncs: number;
}

export class HostSession {
  private state: HostState;
  private readonly decoder = new FrameDecoder();
  private readonly timerHandles = new Map<TimerName, TimerHandle>();
  private settled = false;
  private lastBytesAt = Number.NEGATIVE_INFINITY;
  private resolve!: (o: Outcome) => void;
  private reject!: (e: EspOtaError) => void;
  readonly done: Promise<Outcome>;
  readonly stats: SessionStats = {
    framesIn: 0,
    crcErrors: 0,
    dataFramesSent: 0,
    dataBytesSent: 0,
    logLines: 0,
    gapResyncs: 0,
  };
  /** The last console lines (for error reports: why a device did not boot). */
  readonly recentLog: string[] = [];

  constructor(private readonly o: HostSessionOptions) {
    this.state = initialHostState({ consoleBaud: o.port.baud, ...o.job });
    this.done = new Promise<Outcome>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    // A caller that only awaits later must not see an unhandled rejection in between.
    this.done.catch(() => undefined);
  }

  get phase(): string {
    return this.state.phase.kind;
  }

  start(): Promise<Outcome> {
    this.o.port.onData((b) => this.onBytes(b));
    this.o.port.onClose(() => this.feed({ kind: "closed", now: this.o.timers.now() }));
    const sig = this.o.signal;
    if (sig) {
      const onAbort = () =>
        this.feed({
          kind: "cancel",
          now: this.o.timers.now(),
          reason: String(sig.reason ?? "cancelled"),
          // A reason that says so keeps the device's transfer open (HostInput "cancel").
          ...(isEspOtaError(sig.reason) && sig.reason.context.keepTransfer === true
            ? { keep: true }
            : {}),
        });
      if (sig.aborted) queueMicrotask(onAbort);
      else sig.addEventListener("abort", onAbort, { once: true });
    }
    this.feed({ kind: "start", now: this.o.timers.now() });
    return this.done;
  }

  private onBytes(b: Uint8Array): void {
    const now = this.o.timers.now();
    const afterSilence = now - this.lastBytesAt > FRAME_GAP_MS && this.decoder.pending > 0;
    if (afterSilence && !this.decoder.completesPending(b)) this.stats.gapResyncs++;
    const evs = afterSilence ? this.decoder.pushAfterSilence(b) : this.decoder.push(b);
    this.lastBytesAt = now;
    for (const ev of evs) {
      if (this.settled) return;
      if (ev.kind === "log") {
        this.stats.logLines++;
        this.recentLog.push(ev.line);
        if (this.recentLog.length > 50) this.recentLog.shift();
        this.o.onLog?.(ev.line);
        if (ROM_BANNER.test(ev.line)) this.feed({ kind: "reset-seen", now: this.o.timers.now() });
      } else if (ev.kind === "error") {
        this.stats.crcErrors++;
      } else {
        this.stats.framesIn++;
        this.feed({
          kind: "frame",
          now: this.o.timers.now(),
          type: ev.frame.type,
          payload: ev.frame.payload,
        });
      }
    }
  }

  private feed(input: HostInput): void {
    if (this.settled) return;
    const { state, effects } = transition(this.state, input);
    this.state = state;
    for (const e of effects) {
      // A failed event handler (below) ends the session: nothing after it is performed.
      if (this.settled) return;
      this.perform(e);
    }
  }

  private perform(e: Effect): void {
    const { port, timers } = this.o;
    switch (e.kind) {
      case "send":
        port.write(encodeFrame(e.type, e.payload));
        return;
      case "send-data": {
        const src = this.o.image;
        if (!src) throw new TypeError("HostSession: flash job without an image source");
        const data = src.read(e.offset, e.length);
        this.stats.dataFramesSent++;
        this.stats.dataBytesSent += data.length;
        port.write(encodeFrame(MSG.DATA, encodeData({ offset: e.offset, data })));
        return;
      }
      case "timer": {
        timers.clearTimer(this.timerHandles.get(e.name));
        this.timerHandles.delete(e.name);
        if (e.ms !== undefined) {
          const name = e.name;
          this.timerHandles.set(
            name,
            timers.setTimer(e.ms, () => {
              this.timerHandles.delete(name);
              this.feed({ kind: "timer", name, now: timers.now() });
            }),
          );
        }
        return;
      }
      case "baud":
        port.setBaud(e.baud);
        return;
      case "event":
        try {
          this.o.onEvent?.(e.event);
        } catch (err) {
          // The caller could not record what is about to happen (the agent's ledger before
          // ACTIVATE): the effects after the event, such as sending ACTIVATE, must not happen.
          this.settle();
          this.reject(
            isEspOtaError(err)
              ? err
              : new EspOtaError("E_INTERNAL", `event handler failed: ${String(err)}`, {}, err),
          );
        }
        return;
      case "finish":
        this.settle();
        this.resolve(e.outcome);
        return;
      case "fail":
        this.settle();
        this.reject(
          new EspOtaError(e.code, e.message, {
            ...e.context,
            log: this.recentLog.slice(-8).join(" | ") || undefined,
          }),
        );
        return;
    }
  }

  private settle(): void {
    this.settled = true;
    for (const h of this.timerHandles.values()) this.o.timers.clearTimer(h);
    this.timerHandles.clear();
  }
}

export function memoryImage(bytes: Uint8Array): ImageSource {
  return { read: (o, n) => bytes.subarray(o, o + n) };
}
