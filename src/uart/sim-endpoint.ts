/**
 * A simulated ESP32 on the end of a byte port: its UART receive path (rx-model.ts), the console
 * (every boot and app log line goes out as text between frames, as on UART0), the device side
 * of the protocol, and resets. In virtual time the flash keeps the device busy for exactly the
 * time the flash timing model spends; with a RealClock it waits that time out (`sim serve`).
 */
import { isEspOtaError } from "../errors.js";
import { RealClock } from "../sim/clock.js";
import type { SimDevice } from "../sim/device.js";
import type { ResetCause } from "../sim/uart-log.js";
import { type DeviceSideConfig, UartOtaDevice } from "./device.js";
import { type DecodeEvent, FRAME_GAP_MS, FrameDecoder } from "./frame.js";
import type { BytePort } from "./port.js";
import { RxModel } from "./rx-model.js";
import type { Timers } from "./scheduler.js";

/** Bytes the device task reads per uart_read_bytes call. */
const READ_CHUNK = 64;

export interface SimEndpointOptions extends DeviceSideConfig {
  /** Print the boot log over the port (UART0 shared with the console; default true). */
  console?: boolean;
}

export const RX_CONFIGS = {
  /** CONFIG_UART_ISR_IN_IRAM=y with a 48 KB ring: reception continues during flash writes (48 KB hides a 150 ms block erase at 2 Mbaud plus a 16 ms turnaround; measured in npm run bench:uart). */
  iram: { ringBytes: 48 * 1024, isrInIram: true },
  /** The ESP-IDF default (ISR not in IRAM) with an 8 KB ring: only the FIFO during flash ops. */
  noIram: { ringBytes: 8 * 1024, isrInIram: false },
} as const;

export class SimEndpoint {
  readonly rx: RxModel;
  private engine: UartOtaDevice | undefined;
  private decoder = new FrameDecoder();
  private pending: DecodeEvent[] = [];
  private wake: ReturnType<Timers["setTimer"]> | undefined;
  private settling = false;
  /** device clock − timers clock, fixed at attach (the device clock may start anywhere). */
  private offset: number;
  private readonly consoleBaud: number;
  private txQueued = 0;
  private lastArrival = Number.NEGATIVE_INFINITY;
  /** Byte counts (of bytes stored) at which a silence preceded the next byte. */
  private gaps: number[] = [];
  private arrived = 0;
  private consumed = 0;
  /** Frames handled (tests), and whether the device is up. */
  framesHandled = 0;

  constructor(
    readonly dev: SimDevice,
    readonly port: BytePort,
    private readonly timers: Timers,
    private readonly opts: SimEndpointOptions,
  ) {
    this.rx = new RxModel(opts.rx);
    this.offset = dev.clock.now() - timers.now();
    this.consoleBaud = port.baud;
    port.onData((b) => {
      const now = this.timers.now();
      // A silence before these bytes: the frame in progress, if any, is abandoned there.
      if (now - this.lastArrival > FRAME_GAP_MS) this.gaps.push(this.arrived);
      this.lastArrival = now;
      const before = this.rx.lost;
      this.rx.arrive(b, this.busy());
      this.arrived += b.length - (this.rx.lost - before);
      this.kick();
    });
    if (opts.console ?? true) dev.uart.onLine = (line) => this.transmit(textBytes(line));
    this.attach();
  }

  /** The device pulls the reset line / loses power and comes back (fault tests). */
  reset(cause: ResetCause = "POWERON_RESET"): void {
    this.engine = undefined;
    this.rx.clear();
    this.decoder = new FrameDecoder();
    this.pending = [];
    this.gaps = [];
    this.arrived = this.consumed = 0;
    try {
      this.dev.reset(cause);
    } catch (e) {
      if (!(isEspOtaError(e) && e.code === "E_SIM_POWER_CUT")) throw e;
    }
    // The ROM and the app start at the console rate (115200 unless the link was made faster).
    this.port.setBaud(this.consoleBaud);
    this.attach();
  }

  /** Power restored after a cut (the device was off). */
  powerOn(): void {
    this.reset("POWERON_RESET");
  }

  /** The device side's transfer state (idle, receiving, verified, activated); "down" when off. */
  get transferState(): string {
    return this.engine?.transferState ?? "down";
  }

  get up(): boolean {
    return this.engine !== undefined;
  }

  private attach(): void {
    this.syncClock();
    if (this.dev.state.kind !== "running") return;
    const ep = this;
    this.engine = new UartOtaDevice(
      this.dev,
      {
        send: (b) => this.transmit(b),
        setBaud: (b) => this.port.setBaud(b),
        get baud() {
          return ep.port.baud;
        },
        after: (ms, fn) => {
          const h = this.timers.setTimer(ms, fn);
          return { cancel: () => this.timers.clearTimer(h) };
        },
        restart: () => this.reset("SW_RESET"),
      },
      this.opts,
    );
    // The announcements go out once the boot (bootMs + self-test on the device clock) is over.
    this.afterBusy(() => {
      this.engine?.announce(0);
      this.engine?.announce(1);
    });
  }

  /**
   * The one write path to the wire. A handler that programmed flash before answering answers
   * when the flash is done: in virtual time the bytes leave at the device's clock, in order.
   */
  private transmit(b: Uint8Array): void {
    const wait = this.dev.clock instanceof RealClock ? 0 : this.devNow() - this.timers.now();
    if (wait <= 0 && this.txQueued === 0) {
      this.port.write(b);
      return;
    }
    this.txQueued++;
    this.timers.setTimer(Math.max(0, wait), () => {
      this.txQueued--;
      this.port.write(b);
    });
  }

  private devNow(): number {
    return this.dev.clock.now() - this.offset;
  }

  private busy(): boolean {
    return this.settling || this.devNow() > this.timers.now() + 1e-9;
  }

  private syncClock(): void {
    const lag = this.timers.now() - this.devNow();
    if (lag > 0 && !(this.dev.clock instanceof RealClock)) this.dev.clock.spend(lag);
  }

  private afterBusy(fn: () => void): void {
    if (this.dev.clock instanceof RealClock) {
      this.settling = true;
      void this.dev.clock.settle().then(() => {
        this.settling = false;
        this.rx.idle();
        fn();
      });
      return;
    }
    const wait = this.devNow() - this.timers.now();
    if (wait <= 0) {
      fn();
      return;
    }
    this.timers.setTimer(wait, () => {
      this.rx.idle();
      fn();
    });
  }

  private kick(): void {
    if (this.wake) return;
    if (this.busy()) {
      this.wake = { id: -1 };
      this.afterBusy(() => this.process());
      return;
    }
    this.process();
  }

  private process(): void {
    this.wake = undefined;
    for (;;) {
      if (!this.engine) {
        // Nothing runs the UART driver: what arrives is lost.
        this.rx.clear();
        this.gaps = [];
        this.consumed = this.arrived;
        return;
      }
      this.syncClock();
      if (this.busy()) {
        this.wake = { id: -1 };
        this.afterBusy(() => this.process());
        return;
      }
      const ev = this.pending.shift();
      if (ev) {
        if (ev.kind === "frame") {
          this.framesHandled++;
          try {
            this.engine.handle(ev.frame);
          } catch (e) {
            // Power cut in a flash operation: the chip is off until powerOn().
            if (isEspOtaError(e) && e.code === "E_SIM_POWER_CUT") {
              this.engine = undefined;
              return;
            }
            throw e;
          }
        }
        continue;
      }
      while (this.gaps.length > 0 && this.gaps[0]! <= this.consumed) {
        this.gaps.shift();
        this.pending.push(...this.decoder.expire());
      }
      const upTo = this.gaps.length > 0 ? this.gaps[0]! - this.consumed : READ_CHUNK;
      const bytes = this.rx.read(Math.min(READ_CHUNK, upTo));
      if (bytes.length === 0) {
        if (this.pending.length > 0) continue;
        this.engine.drained();
        return;
      }
      this.consumed += bytes.length;
      this.pending.push(...this.decoder.push(bytes));
    }
  }
}

function textBytes(line: string): Uint8Array {
  return new TextEncoder().encode(`${line}\r\n`);
}
