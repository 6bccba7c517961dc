/**
 * Real-time pacing at baud/10 bytes per second for a port that has no wire (a pseudo-terminal
 * moves bytes at memory speed whatever its baud): what `sim serve` puts in front of a simulated
 * device so a pty behaves like a UART, and what lets a real-time run be compared with the
 * virtual-time model (docs/uart-protocol.md §8).
 */
import { type BytePort, WrappingPort } from "./port.js";
import type { Timers } from "./scheduler.js";

export class PacedPort extends WrappingPort {
  private rxFreeAt = 0;
  private txFreeAt = 0;

  constructor(
    inner: BytePort,
    private readonly timers: Timers,
  ) {
    super(inner);
    inner.onData((b) => {
      const at = this.slot("rx", b.length);
      this.later(at, () => this.dataCb?.(b));
    });
  }

  private slot(dir: "rx" | "tx", n: number): number {
    const now = this.timers.now();
    const ms = (n * 10_000) / this.inner.baud;
    if (dir === "rx") {
      this.rxFreeAt = Math.max(now, this.rxFreeAt) + ms;
      return this.rxFreeAt;
    }
    const start = Math.max(now, this.txFreeAt);
    this.txFreeAt = start + ms;
    return start;
  }

  private later(at: number, fn: () => void): void {
    const wait = at - this.timers.now();
    if (wait <= 0.5) fn();
    else this.timers.setTimer(wait, fn);
  }

  write(bytes: Uint8Array): void {
    const copy = Uint8Array.from(bytes);
    this.later(this.slot("tx", bytes.length), () => this.inner.write(copy));
  }
}
