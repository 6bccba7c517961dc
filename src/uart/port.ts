/**
 * A byte port: what both protocol sides need from a link (STYLE.md §9). Implemented by the
 * virtual link (src/sim/virtual-link.ts, in-memory and with faults) and by serial ports
 * through `serialport` (src/uart/serial-port.ts). One contract suite runs over all of them.
 */
export interface BytePort {
  write(bytes: Uint8Array): void;
  /**
   * One listener; bytes in arrival order. `at`, where the port knows it, is when the last of
   * these bytes arrived on the wire, on the clock of the Timers the port runs on: a simulated
   * wire (src/sim/paced-link.ts) hands bytes over by timer, and a timer that fires late on a busy
   * machine must not look like silence on the line (docs/uart-protocol.md §2.3). Ports without a
   * wire model leave it out: the bytes arrived now.
   */
  onData(cb: (bytes: Uint8Array, at?: number) => void): void;
  /** The link went away (cable pulled, port closed). */
  onClose(cb: () => void): void;
  /** Change this end's baud rate (applies to bytes sent and received from now on). */
  setBaud(baud: number): void;
  readonly baud: number;
  close(): void;
}

/**
 * A port that sits in front of another (pacing, faults): forwards close, baud and close events,
 * and keeps the one data listener; subclasses decide how bytes pass each way.
 */
export abstract class WrappingPort implements BytePort {
  protected dataCb: ((b: Uint8Array, at?: number) => void) | undefined;

  constructor(protected readonly inner: BytePort) {}

  abstract write(bytes: Uint8Array): void;

  get baud(): number {
    return this.inner.baud;
  }

  onData(cb: (b: Uint8Array, at?: number) => void): void {
    this.dataCb = cb;
  }

  onClose(cb: () => void): void {
    this.inner.onClose(cb);
  }

  setBaud(baud: number): void {
    this.inner.setBaud(baud);
  }

  close(): void {
    this.inner.close();
  }
}
