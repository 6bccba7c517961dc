/**
 * A serial port for the ROM loader's host side: the byte stream of src/uart/serial-port.ts plus
 * the modem lines (serialport's `set({ dtr, rts })`) that the reset sequences drive. A
 * pseudo-terminal has no modem lines: `set` fails there (ENOTTY/EINVAL), which `setSignals`
 * reports as unsupported, as esptool does ("Setting RTS/DTR lines is not supported").
 */
import { SerialPort } from "serialport";
import { EspOtaError } from "../errors.js";
import type { BytePort } from "../uart/port.js";
import type { ModemLines } from "./reset.js";

export class ModemLinesUnsupported extends Error {}

export class RomSerialPort implements BytePort {
  private dataCb: ((b: Uint8Array) => void) | undefined;
  private closeCb: (() => void) | undefined;
  private _baud: number;

  private constructor(
    private readonly sp: SerialPort,
    baud: number,
  ) {
    this._baud = baud;
    sp.on("data", (b: Buffer) => this.dataCb?.(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    sp.on("close", () => this.closeCb?.());
    sp.on("error", () => this.closeCb?.());
  }

  static open(path: string, baud: number): Promise<RomSerialPort> {
    return new Promise((resolve, reject) => {
      // hupcl off: closing must not drop DTR/RTS and reset the chip out of what we left it in.
      const sp = new SerialPort({ path, baudRate: baud, autoOpen: false, hupcl: false });
      sp.open((err) => {
        if (err)
          reject(
            new EspOtaError("E_UART_PORT", `cannot open ${path}: ${err.message}`, { path }, err),
          );
        else resolve(new RomSerialPort(sp, baud));
      });
    });
  }

  get baud(): number {
    return this._baud;
  }

  write(bytes: Uint8Array): void {
    if (this.sp.isOpen)
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
    this.sp.drain(() => {
      if (this.sp.isOpen) this.sp.update({ baudRate: baud }, () => undefined);
    });
  }

  /** Both lines in one call: what esptool's UnixTightReset does with one TIOCMSET. */
  setSignals(lines: ModemLines): Promise<void> {
    return new Promise((resolve, reject) =>
      this.sp.set({ dtr: lines.dtr, rts: lines.rts }, (err) =>
        err ? reject(new ModemLinesUnsupported(err.message)) : resolve(),
      ),
    );
  }

  drain(): Promise<void> {
    return new Promise((r) => this.sp.drain(() => r()));
  }

  close(): void {
    if (this.sp.isOpen) this.sp.close(() => undefined);
  }
}
