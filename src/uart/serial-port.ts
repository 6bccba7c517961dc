/**
 * A real serial port as a BytePort, through `serialport` (the only file that imports it). Works
 * on USB-serial adapters and on pseudo-terminals (socat pty pairs in the tests and `sim serve`).
 * Never calls SerialPort.list(): it needs udevadm, which gateways often lack. The ROM loader's
 * host side (src/rom/) drives the modem lines too (`setSignals`) for esptool's reset sequences.
 */
import { statSync } from "node:fs";
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
    /** A pseudo-terminal: no wire, so no rate to set (see setBaud). */
    private readonly pty: boolean,
  ) {
    this._baud = baud;
    sp.on("data", (b: Buffer) => this.dataCb?.(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    sp.on("close", () => this.closeCb?.());
    // An I/O error (adapter unplugged) is a close for the protocol; it reports E_UART_DISCONNECTED.
    sp.on("error", () => {
      if (!this.closing) this.closeCb?.();
    });
  }

  /**
   * `hupcl: false` keeps DTR/RTS as they are when the port closes, so closing does not reset the
   * chip out of the state a reset sequence left it in (the ROM loader's host). Default: the
   * driver's (on: DTR drops at close).
   */
  static open(path: string, baud = 115200, o: { hupcl?: boolean } = {}): Promise<SerialBytePort> {
    return new Promise((resolve, reject) => {
      const sp = new SerialPort({
        path,
        baudRate: baud,
        autoOpen: false,
        ...(o.hupcl === false ? { hupcl: false } : {}),
      });
      sp.open((err) => {
        if (err)
          reject(
            new EspOtaError("E_UART_PORT", `cannot open ${path}: ${err.message}`, { path }, err),
          );
        else resolve(new SerialBytePort(sp, baud, isPseudoTerminal(path)));
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
    // A pty moves bytes at memory speed whatever its rate, and setting one flushes both of its
    // queues (bindings-cpp's setBaudRate: tcflush(fd, TCIOFLUSH) before tcsetattr): the boot log a
    // simulated device printed after REBOOT, already waiting in the queue when a busy host got
    // round to switching back to the console rate, was thrown away (test/cli/sim-serve.test.ts
    // lost 20 of 21 boot lines at load 11). The rate is only recorded.
    if (this.pty) return;
    // Bytes already queued go out at the old rate first (tcdrain), as uart_wait_tx_done does.
    this.sp.drain(() => {
      if (this.sp.isOpen) this.sp.update({ baudRate: baud }, () => undefined);
    });
  }

  close(): void {
    this.closing = true;
    if (this.sp.isOpen) this.sp.close(() => undefined);
  }

  /**
   * DTR and RTS in one call, as esptool's UnixTightReset sets both with one TIOCMSET. A
   * pseudo-terminal has no modem lines: the call fails there (ENOTTY/EINVAL), and the caller
   * treats that as "not supported", as esptool does ("Setting RTS/DTR lines is not supported").
   */
  setSignals(lines: { dtr: boolean; rts: boolean }): Promise<void> {
    return new Promise((resolve, reject) =>
      this.sp.set({ dtr: lines.dtr, rts: lines.rts }, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Resolves once everything written has been handed to the OS. */
  drain(): Promise<void> {
    return new Promise((r) => this.sp.drain(() => r()));
  }
}

/**
 * Whether `path` (after symlinks: socat's `link=` names) is a Unix98 pseudo-terminal slave, whose
 * character devices have majors 136-143 on Linux (Documentation/admin-guide/devices.txt,
 * "Unix98 PTY slaves"). Anything else, or a path that cannot be stat'ed, is taken as a UART.
 */
export function isPseudoTerminal(path: string): boolean {
  try {
    const st = statSync(path);
    if (!st.isCharacterDevice()) return false;
    // glibc's gnu_dev_major for a 64-bit dev_t, in Number arithmetic (rdev < 2^53 in practice).
    const rdev = st.rdev;
    const major = (Math.floor(rdev / 256) % 4096) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
    return major >= 136 && major <= 143;
  } catch {
    return false;
  }
}
