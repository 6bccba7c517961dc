/**
 * A real serial port as a BytePort, through `serialport` (the only file that imports it). Works
 * on USB-serial adapters and on pseudo-terminals (socat pty pairs in the tests and `sim serve`).
 * Never calls SerialPort.list(): it needs udevadm, which gateways often lack.
 */
import { SerialPort } from "serialport";
import { EspOtaError } from "../errors.js";
import type { BytePort } from "./port.js";

export class SerialBytePort implements BytePort {
  private dataCb: ((b: Uint8Array) => void) | undefined;
  private closeCb: (() => void) | undefined;
  private _baud: number;
  private closing = false;

  private constructor(
    private readonly sp: SerialPort,
    baud: number,
  ) {
    this._baud = baud;
    sp.on("data", (b: Buffer) => this.dataCb?.(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    sp.on("close", () => this.closeCb?.());
    // An I/O error (adapter unplugged) is a close for the protocol; it reports E_UART_DISCONNECTED.
    sp.on("error", () => {
      if (!this.closing) this.closeCb?.();
    });
  }

  static open(path: string, baud = 115200): Promise<SerialBytePort> {
    return new Promise((resolve, reject) => {
      const sp = new SerialPort({ path, baudRate: baud, autoOpen: false });
      sp.open((err) => {
        if (err)
          reject(
            new EspOtaError("E_UART_PORT", `cannot open ${path}: ${err.message}`, { path }, err),
          );
        else resolve(new SerialBytePort(sp, baud));
      });
    });
  }

  get baud(): number {
    return this._baud;
  }

  write(bytes: Uint8Array): void {
    if (!this.sp.isOpen) return;
    this.sp.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }

  onData(cb: (b: Uint8Array) => void): void {
    this.dataCb = cb;
  }

  onClose(cb: () => void): void {
    this.closeCb = cb;
  }

  setBaud(baud: number): void {
    this._baud = baud;
    // Bytes already queued go out at the old rate first (tcdrain), as uart_wait_tx_done does.
    this.sp.drain(() => {
      if (this.sp.isOpen) this.sp.update({ baudRate: baud }, () => undefined);
    });
  }

  close(): void {
    this.closing = true;
    if (this.sp.isOpen) this.sp.close(() => undefined);
  }

  /** Resolves once everything written has been handed to the OS. */
  drain(): Promise<void> {
    return new Promise((r) => this.sp.drain(() => r()));
  }
}
