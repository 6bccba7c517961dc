/**
 * The simulator's real-time UART: a port that has no wire of its own (a pseudo-terminal, which
 * socat relays at memory speed whatever its baud; an in-memory pair) made to move bytes as a
 * UART does, at baud/10 bytes a second (8N1: start + 8 data + stop bits) in each direction.
 * `sim serve`, `sim fleet serve`, the demo's in-memory fleet and the benches all put a
 * simulated device behind this one class (docs/simulator.md "Real time: one paced link").
 *
 * Pace the bytes, not the reads. A real UART hands the receiver each byte as its stop bit ends,
 * so a 4 KB frame at 230400 baud trickles in over 178 ms. Two earlier models got this wrong:
 *  - PacedPort (`sim serve`, formerly src/uart/paced-port.ts) gave each chunk a slot and
 *    handed it over at once when the slot was under 0.5 ms away, even while an earlier chunk
 *    still waited on a timer: an ACK overtook the RESULT written before it (E_UART_TIMEOUT "no
 *    ACK progress"), and boot-log lines after a REBOOT came out shuffled;
 *  - PacedWire (`sim fleet serve`, formerly in src/sim/fleet-serve.ts) kept chunks in order but
 *    handed each read over whole when its last byte would have arrived: the receiver then saw
 *    178 ms of silence in the middle of a frame (a pty's reads do not follow frames), longer
 *    than the 50 ms frame gap (FRAME_GAP_MS, docs/uart-protocol.md §2.3), gave the frame up,
 *    and below 921600 baud a transfer crawled on go-back-N (262 KB at 230400 took 3 min 54 s
 *    instead of 11.4 s).
 * Here each direction is one FIFO drained by one timer: every delivery carries the bytes whose
 * last bit has arrived by then, at most `sliceMs` (1 ms) worth when the timer is on time, so a
 * frame arrives spread over its wire time as on a UART and nothing can overtake anything. The
 * wire's clock runs on from byte to byte (a late timer delivers more at once and the next slice
 * comes sooner), so throughput is baud/10 bytes a second however coarse the timers are.
 *
 * Not modelled here (VirtualLink does it in virtual time, FaultPort in real time): bit errors,
 * lost bytes, and the garbage a receiver at another baud rate would read.
 */
import type { BytePort } from "../uart/port.js";
import type { TimerHandle, Timers } from "../uart/scheduler.js";

export interface PacedLinkOptions {
  /** Starting rate of the wire (default: the inner port's `baud`). */
  baud?: number;
  /**
   * Most wire time one delivery covers when the timers are on time (ms). Default 1: a USB
   * full-speed frame, the interval at which a USB-serial adapter (CP210x, FTDI with its latency
   * timer at 1 ms) hands received bytes to the host; far below the 50 ms frame gap.
   */
  sliceMs?: number;
  /** Added to every byte's arrival, each direction (ms): an adapter's turnaround. Default 0. */
  latencyMs?: number;
  /**
   * Bytes each direction may hold before more are dropped (counted in `stats.overrunBytes`).
   * Default 1 MiB: far beyond any window of the protocol (the device grants at most its 48 KB
   * ring), so only a writer ignoring flow control meets it; it bounds memory, as a UART's FIFO
   * does, against a tool on the pty writing without end.
   */
  maxQueuedBytes?: number;
}

export interface PacedLinkStats {
  /** Bytes delivered to the device (rx) and to the inner port (tx). */
  rxBytes: number;
  txBytes: number;
  /** Deliveries made (each one onData call or one inner write). */
  rxDeliveries: number;
  txDeliveries: number;
  /** Bytes dropped because a direction already held `maxQueuedBytes`. */
  overrunBytes: number;
}

/** Wire time of one byte at `baud` (ms): 10 bits, 8N1. */
export const byteMs = (baud: number): number => 10_000 / baud;

/** Float slack when counting whole bytes: a timer set for a byte's end fires exactly there. */
const EPS = 1e-6;

interface Chunk {
  bytes: Uint8Array;
  off: number;
  /** Wire time per byte of this chunk: the rate when it was written (tx) or arrived (rx). */
  per: number;
}

/** One direction of the wire: a FIFO of chunks and the one timer that drains it. */
class Lane {
  private readonly q: Chunk[] = [];
  private queued = 0;
  /** When the byte at the head of the queue starts (the wire is free from then, when empty). */
  private t0 = Number.NEGATIVE_INFINITY;
  private timer: TimerHandle | undefined;
  closed = false;

  constructor(
    private readonly timers: Timers,
    private readonly o: Required<Omit<PacedLinkOptions, "baud">>,
    /** `at`: when the last of these bytes arrived, on the timers' clock (BytePort.onData). */
    private readonly out: (b: Uint8Array, at: number) => void,
    private readonly stat: (delivered: number) => void,
    private readonly overrun: (n: number) => void,
  ) {}

  push(bytes: Uint8Array, per: number): void {
    if (this.closed || bytes.length === 0) return;
    const room = this.o.maxQueuedBytes - this.queued;
    if (room <= 0) {
      this.overrun(bytes.length);
      return;
    }
    const take = bytes.length > room ? bytes.subarray(0, room) : bytes;
    if (take.length < bytes.length) this.overrun(bytes.length - take.length);
    if (this.q.length === 0) this.t0 = Math.max(this.t0, this.timers.now());
    // Copied: a caller (serialport, a codec) may reuse its buffer once write() returns.
    this.q.push({ bytes: Uint8Array.from(take), off: 0, per });
    this.queued += take.length;
    if (!this.timer) this.arm();
  }

  close(): void {
    this.closed = true;
    this.q.length = 0;
    this.queued = 0;
    this.timers.clearTimer(this.timer);
    this.timer = undefined;
  }

  /** Time the next delivery is due: when min(a slice, all queued) more bytes are in. */
  private nextDue(): number {
    let t = this.t0;
    let left = this.o.sliceMs;
    for (const [i, c] of this.q.entries()) {
      const n = c.bytes.length - c.off;
      const fit = Math.floor(left / c.per + EPS);
      // At least one byte per delivery, however slow the rate.
      if (i === 0 && fit === 0) return t + c.per + this.o.latencyMs;
      if (n >= fit) return t + fit * c.per + this.o.latencyMs;
      t += n * c.per;
      left -= n * c.per;
    }
    return t + this.o.latencyMs;
  }

  private arm(): void {
    if (this.q.length === 0 || this.closed) return;
    const wait = Math.max(0, this.nextDue() - this.timers.now());
    this.timer = this.timers.setTimer(wait, () => {
      this.timer = undefined;
      this.pump();
    });
  }

  /** Hands over every byte whose last bit is in by now (less the latency), in order. */
  private pump(): void {
    if (this.closed) return;
    const by = this.timers.now() - this.o.latencyMs;
    const parts: Uint8Array[] = [];
    let total = 0;
    while (this.q.length > 0) {
      const c = this.q[0]!;
      const left = c.bytes.length - c.off;
      const n = Math.min(left, Math.floor((by - this.t0) / c.per + EPS));
      if (n <= 0) break;
      parts.push(c.bytes.subarray(c.off, c.off + n));
      c.off += n;
      total += n;
      this.t0 += n * c.per;
      if (n < left) break;
      this.q.shift();
    }
    this.queued -= total;
    // Re-armed before handing over: a receiver that throws (a power cut in the device code)
    // must not leave the rest of the queue stranded.
    this.arm();
    if (total === 0) return;
    this.stat(total);
    this.out(parts.length === 1 ? parts[0]! : concat(parts, total), this.t0 + this.o.latencyMs);
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * The device's end of a wire-less port, paced. `rx` is what the inner port receives (the host's
 * bytes, on their way to the device); `tx` what the device writes (on its way to the host).
 *
 * The rate is the link's own: `setBaud` changes the pacing and is never passed to the inner
 * port. A pty has no baud rate to set, and setting one through serialport flushes both kernel
 * queues (bindings-cpp: tcflush(fd, TCIOFLUSH) before tcsetattr): each reset of the simulated
 * device, which goes back to the console rate, threw away a HELLO the host had just sent and the
 * start of the boot log. Bytes already queued keep the rate they were written at (tx, as
 * uart_wait_tx_done before uart_set_baudrate does) or arrived at (rx).
 */
export class PacedLink implements BytePort {
  private rate: number;
  private dataCb: ((b: Uint8Array, at?: number) => void) | undefined;
  private readonly rx: Lane;
  private readonly tx: Lane;
  readonly stats: PacedLinkStats = {
    rxBytes: 0,
    txBytes: 0,
    rxDeliveries: 0,
    txDeliveries: 0,
    overrunBytes: 0,
  };

  constructor(
    private readonly inner: BytePort,
    timers: Timers,
    o: PacedLinkOptions = {},
  ) {
    this.rate = checkBaud(o.baud ?? inner.baud);
    const sliceMs = o.sliceMs ?? 1;
    const latencyMs = o.latencyMs ?? 0;
    const maxQueuedBytes = o.maxQueuedBytes ?? 1 << 20;
    if (!(sliceMs > 0 && Number.isFinite(sliceMs)))
      throw new RangeError(`PacedLink: sliceMs ${sliceMs} is not a positive duration`);
    if (!(latencyMs >= 0 && Number.isFinite(latencyMs)))
      throw new RangeError(`PacedLink: latencyMs ${latencyMs} is not a duration`);
    if (!(Number.isInteger(maxQueuedBytes) && maxQueuedBytes > 0))
      throw new RangeError(`PacedLink: maxQueuedBytes ${maxQueuedBytes} is not a byte count`);
    const lo = { sliceMs, latencyMs, maxQueuedBytes };
    const overrun = (n: number) => {
      this.stats.overrunBytes += n;
    };
    this.rx = new Lane(
      timers,
      lo,
      // The wire time of the bytes goes with them: a late timer hands over bytes that arrived
      // earlier, and the receiver's frame-gap rule must see the line, not the timer (§2.3).
      (b, at) => this.dataCb?.(b, at),
      (n) => {
        this.stats.rxBytes += n;
        this.stats.rxDeliveries++;
      },
      overrun,
    );
    this.tx = new Lane(
      timers,
      lo,
      (b) => this.inner.write(b),
      (n) => {
        this.stats.txBytes += n;
        this.stats.txDeliveries++;
      },
      overrun,
    );
    inner.onData((b) => this.rx.push(b, byteMs(this.rate)));
  }

  get baud(): number {
    return this.rate;
  }
  write(bytes: Uint8Array): void {
    this.tx.push(bytes, byteMs(this.rate));
  }
  onData(cb: (b: Uint8Array, at?: number) => void): void {
    this.dataCb = cb;
  }
  onClose(cb: () => void): void {
    this.inner.onClose(cb);
  }
  setBaud(baud: number): void {
    this.rate = checkBaud(baud);
  }
  /** Bytes still on the wire are lost, as when a cable is pulled; the inner port closes. */
  close(): void {
    this.rx.close();
    this.tx.close();
    this.inner.close();
  }
}

function checkBaud(baud: number): number {
  if (!(Number.isFinite(baud) && baud > 0))
    throw new RangeError(`PacedLink: baud ${baud} is not a rate`);
  return baud;
}

/**
 * Two ends of a cable with no wire: what one end writes, the other receives at once, in the
 * same call. A PacedLink on one end gives it the UART's timing (serveFleetInMemory). Each end
 * records the rate its side set, as a pty does; closing either end closes both.
 */
export function memoryPair(baud: number): { host: BytePort; device: BytePort } {
  class End implements BytePort {
    peer!: End;
    dataCb: ((b: Uint8Array) => void) | undefined;
    closeCb: (() => void) | undefined;
    closed = false;
    constructor(public baud: number) {}
    write(bytes: Uint8Array): void {
      if (this.closed) return;
      this.peer.dataCb?.(bytes);
    }
    onData(cb: (b: Uint8Array) => void): void {
      this.dataCb = cb;
    }
    onClose(cb: () => void): void {
      this.closeCb = cb;
    }
    setBaud(b: number): void {
      this.baud = b;
    }
    close(): void {
      if (this.closed) return;
      this.closed = this.peer.closed = true;
      this.closeCb?.();
      this.peer.closeCb?.();
    }
  }
  const host = new End(baud);
  const device = new End(baud);
  host.peer = device;
  device.peer = host;
  return { host, device };
}
