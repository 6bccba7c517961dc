/**
 * One attached device: its serial port, kept open for as long as it is plugged in (opening a
 * USB-serial port toggles DTR/RTS, which resets many ESP32 boards, so we open it once), with
 * host sessions (src/uart/host.ts) run one at a time over it. Between sessions the console is
 * still decoded so the device's log lines (boot messages, panics) are forwarded.
 */
import { EspOtaError } from "../src/errors.js";
import { FrameDecoder } from "../src/uart/frame.js";
import { HostSession, type ImageSource } from "../src/uart/host.js";
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
}

export class DeviceLink {
  private queue: Promise<unknown> = Promise.resolve();
  private idleDecoder = new FrameDecoder();
  private _closed = false;
  /** The last INFO the device sent. */
  info: Info | undefined;

  private constructor(
    readonly path: string,
    private readonly port: BytePort,
    private readonly o: LinkOptions,
  ) {
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
    this.port.onClose(() => this.markClosed());
  }

  private markClosed(): void {
    if (this._closed) return;
    this._closed = true;
    this.o.onClosed?.();
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
        port: this.port,
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
      try {
        const out = await s.start();
        this.info = out.info;
        return out;
      } finally {
        if (!this._closed) this.idle();
      }
    });
  }

  async readInfo(signal?: AbortSignal): Promise<Info> {
    const out = await this.session(
      { mode: "info", ...(this.o.timeouts ? { timeouts: this.o.timeouts } : {}) },
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
    o: { signal?: AbortSignal; onEvent?: (e: HostEvent) => void; confirmMs?: number },
  ): Promise<Outcome> {
    return this.session(
      {
        mode: "flash",
        image,
        requireNextSlot: true,
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
    this._closed = true;
    this.port.close();
  }
}
