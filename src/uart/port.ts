/**
 * A byte port: what both protocol sides need from a link (STYLE.md §9). Implemented by the
 * virtual link (src/uart/virtual-link.ts, in-memory and with faults) and by serial ports
 * through `serialport` (src/uart/serial-port.ts). One contract suite runs over all of them.
 */
export interface BytePort {
  write(bytes: Uint8Array): void;
  /** One listener; bytes in arrival order. */
  onData(cb: (bytes: Uint8Array) => void): void;
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
  protected dataCb: ((b: Uint8Array) => void) | undefined;

  constructor(protected readonly inner: BytePort) {}

  abstract write(bytes: Uint8Array): void;

  get baud(): number {
    return this.inner.baud;
  }

  onData(cb: (b: Uint8Array) => void): void {
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
