/**
 * One attached device: its serial port, kept open for as long as it is plugged in (opening a
 * USB-serial port toggles DTR/RTS, which resets many ESP32 boards, so we open it once), with
 * host sessions (src/uart/host.ts) run one at a time over it. Between sessions the console is
 * still decoded so the device's log lines (boot messages, panics) are forwarded.
 */
import { type ErrorCode, EspOtaError, isEspOtaError } from "../src/errors.js";
import { FrameDecoder } from "../src/uart/frame.js";
import { HostSession, type ImageSource, type SessionStats } from "../src/uart/host.js";
import type { HostEvent, HostJob, HostTimeouts, Outcome } from "../src/uart/host-machine.js";
import type { Info } from "../src/uart/messages.js";
import type { BytePort } from "../src/uart/port.js";
import { realTimers, type Timers } from "../src/uart/scheduler.js";
import { SerialBytePort } from "../src/uart/serial-port.js";

export interface LinkOptions {
  consoleBaud: number;
  transferBaud: number;
  timeouts?: Partial<HostTimeouts>;
  timers?: Timers;
  onLog?: (line: string) => void;
  /** The port closed underneath us (unplugged). */
  onClosed?: () => void;
  /**
   * Each host session's decoder counts when it ends, and its failure's code (the agent's UART
   * frame-error series, docs/metrics.md). Must not throw; a throw is ignored.
   */
  onSessionEnd?: (stats: Readonly<SessionStats>, code: ErrorCode | undefined) => void;
}

/**
 * What the agent needs of a device link: DeviceLink over a serial port or any BytePort, or a
 * fake in tests (STYLE.md §9). `onClosed` of its LinkOptions reports a close underneath us; a
 * close() by the agent itself does not call it.
 */
export type AgentLink = Pick<
  DeviceLink,
  "path" | "closed" | "info" | "readInfo" | "reboot" | "flash" | "close"
>;

export class DeviceLink {
  private queue: Promise<unknown> = Promise.resolve();
  private idleDecoder = new FrameDecoder();
  private _closed = false;
  /** The running session's close listener (it sees the port close as its own input). */
  private sessionClosed: (() => void) | undefined;
  /** The last INFO the device sent. */
  info: Info | undefined;

  private constructor(
    readonly path: string,
    private readonly port: BytePort,
    private readonly o: LinkOptions,
  ) {
    // The link keeps the port's one close listener for its whole life and passes the event on
    // to the session in progress. A session used to register its own, replacing the link's: a
    // port that closed mid-transfer (unplugged) then failed the session but never told the
    // link, the agent never detached the device, and the update waited for it forever.
    this.port.onClose(() => this.markClosed());
    this.idle();
  }

  static async open(path: string, o: LinkOptions): Promise<DeviceLink> {
    const port = await SerialBytePort.open(path, o.consoleBaud);
    return new DeviceLink(path, port, o);
  }

  /** For tests and in-process fleets: any BytePort. */
  static over(path: string, port: BytePort, o: LinkOptions): DeviceLink {
    return new DeviceLink(path, port, o);
  }

  get closed(): boolean {
    return this._closed;
  }

  private idle(): void {
    this.idleDecoder = new FrameDecoder();
    this.port.onData((b) => {
      for (const ev of this.idleDecoder.push(b)) if (ev.kind === "log") this.o.onLog?.(ev.line);
    });
  }

  private markClosed(): void {
    if (this._closed) return;
    this._closed = true;
    this.sessionClosed?.();
    this.o.onClosed?.();
  }

  /** The port as one session sees it: its own data listener, and close events passed on. */
  private sessionPort(): BytePort {
    const port = this.port;
    return {
      write: (b) => port.write(b),
      onData: (cb) => port.onData(cb),
      onClose: (cb) => {
        this.sessionClosed = cb;
      },
      setBaud: (b) => port.setBaud(b),
      get baud() {
        return port.baud;
      },
      close: () => port.close(),
    };
  }

  /** Runs sessions one after another on the port. */
  private run<T>(f: () => Promise<T>): Promise<T> {
    const p = this.queue.then(f, f);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private session(
    job: HostJob,
    image: ImageSource | undefined,
    signal: AbortSignal | undefined,
    onEvent: ((e: HostEvent) => void) | undefined,
  ): Promise<Outcome> {
    return this.run(async () => {
      if (this._closed)
        throw new EspOtaError("E_AGENT_DEVICE_GONE", `${this.path} is closed`, { port: this.path });
      // Each session starts at the console rate: the device is there after any reset.
      if (this.port.baud !== this.o.consoleBaud) this.port.setBaud(this.o.consoleBaud);
      const s = new HostSession({
        port: this.sessionPort(),
        timers: this.o.timers ?? realTimers,
        job: { consoleBaud: this.o.consoleBaud, ...job },
        ...(image ? { image } : {}),
        ...(signal ? { signal } : {}),
        ...(this.o.onLog ? { onLog: this.o.onLog } : {}),
        onEvent: (e) => {
          if (e.kind === "info") this.info = e.info;
          onEvent?.(e);
        },
      });
      let code: ErrorCode | undefined;
      try {
        const out = await s.start();
        this.info = out.info;
        return out;
      } catch (e) {
        code = isEspOtaError(e) ? e.code : "E_INTERNAL";
        throw e;
      } finally {
        try {
          this.o.onSessionEnd?.(s.stats, code);
        } catch {
          // Counting must never change how a session ends.
        }
        this.sessionClosed = undefined;
        if (!this._closed) this.idle();
      }
    });
  }

  async readInfo(signal?: AbortSignal): Promise<Info> {
    const out = await this.session(
      {
        mode: "info",
        // A session cut short leaves the device at the transfer rate: ask there too (§3.3).
        probeBaud: this.o.transferBaud,
        ...(this.o.timeouts ? { timeouts: this.o.timeouts } : {}),
      },
      undefined,
      signal,
      undefined,
    );
    if (out.kind !== "info") throw new EspOtaError("E_UART_PROTOCOL", "no INFO from the device");
    return out.info;
  }

  /** REBOOT, wait for the device to boot, and return its fresh INFO. */
  async reboot(signal?: AbortSignal): Promise<Info> {
    const out = await this.session(
      { mode: "reboot", ...(this.o.timeouts ? { timeouts: this.o.timeouts } : {}) },
      undefined,
      signal,
      undefined,
    );
    if (out.kind !== "info") throw new EspOtaError("E_UART_PROTOCOL", "no INFO after REBOOT");
    return out.info;
  }

  flash(
    image: { offset: number; size: number; sha256: Uint8Array },
    source: ImageSource,
    o: {
      signal?: AbortSignal;
      onEvent?: (e: HostEvent) => void;
      confirmMs?: number;
      /** The signed manifest's version: END must report it (HostJob.expectVersion). */
      expectVersion?: string;
    },
  ): Promise<Outcome> {
    return this.session(
      {
        mode: "flash",
        image,
        requireNextSlot: true,
        ...(o.expectVersion !== undefined ? { expectVersion: o.expectVersion } : {}),
        targetBaud: this.o.transferBaud,
        timeouts: {
          ...this.o.timeouts,
          ...(o.confirmMs !== undefined ? { confirmMs: o.confirmMs } : {}),
        },
      },
      source,
      o.signal,
      o.onEvent,
    );
  }

  close(): void {
    // Closed by us (detach, agent stop): the session in progress ends now, as on an unplug,
    // rather than waiting out its timeouts; the device keeps its progress record.
    if (!this._closed) {
      this._closed = true;
      this.sessionClosed?.();
    }
    this.port.close();
  }
}
