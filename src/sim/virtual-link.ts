/**
 * A simulated serial cable in virtual time, with the fault layer built in (STYLE.md §13):
 * bytes are paced at baud/10 per second (8N1: start + 8 data + stop bits), each direction adds
 * a turnaround latency (USB-serial adapters hold received bytes 1–16 ms, e.g. the FTDI latency
 * timer), and faults flip bits, drop whole writes (a lost frame) or bytes, inject garbage and
 * disconnect. A byte sent at one baud and received at another arrives garbled, as on a wire.
 *
 * With `baud: Infinity` and no latency it is the plain in-memory pair of the contract suite.
 */
import type { BytePort } from "../uart/port.js";
import type { VirtualScheduler } from "../uart/scheduler.js";

export interface LinkFaults {
  /** Probability that any one bit is flipped (bit error rate). */
  bitErrorRate?: number;
  /** Probability that one write (one frame, as both sides write a frame at a time) is lost. */
  dropWriteRate?: number;
  /** Probability that any one byte is lost. */
  dropByteRate?: number;
  /** Probability, per write, that a burst of 1–32 garbage bytes is inserted before it. */
  garbageRate?: number;
  /** Highest baud the adapter really carries; bytes sent faster arrive garbled. */
  maxBaud?: number;
}

export interface LinkOptions {
  /** Initial baud on both ends (default 115200, the ESP-IDF console default). */
  baud?: number;
  /** Added once per direction to every write (ms). */
  latencyMs?: number;
  faults?: LinkFaults;
  /** PRNG seed for the faults (runs are reproducible). */
  seed?: number;
  /** Bytes per delivery event; smaller is finer-grained and slower (default 16). */
  deliveryChunk?: number;
}

/** xorshift32: fast, seedable, good enough to place faults. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

export interface LinkStats {
  bytes: number;
  bitFlips: number;
  droppedWrites: number;
  droppedBytes: number;
  garbageBytes: number;
}

class End implements BytePort {
  baud: number;
  dataCb: ((b: Uint8Array) => void) | undefined;
  closeCb: (() => void) | undefined;
  peer!: End;
  /** When this end's transmit wire is next free. */
  wireFreeAt = 0;
  closed = false;
  readonly stats: LinkStats = {
    bytes: 0,
    bitFlips: 0,
    droppedWrites: 0,
    droppedBytes: 0,
    garbageBytes: 0,
  };

  constructor(
    private readonly link: VirtualLink,
    baud: number,
  ) {
    this.baud = baud;
  }

  write(bytes: Uint8Array): void {
    if (this.closed || this.peer.closed) return;
    this.link.transmit(this, bytes);
  }
  onData(cb: (b: Uint8Array) => void): void {
    this.dataCb = cb;
  }
  onClose(cb: () => void): void {
    this.closeCb = cb;
  }
  setBaud(baud: number): void {
    this.baud = baud;
  }
  close(): void {
    this.link.disconnect();
  }
}

export class VirtualLink {
  readonly host: End;
  readonly device: End;
  private readonly latency: number;
  private readonly faults: LinkFaults;
  private readonly rand: () => number;
  private readonly chunk: number;
  /** Bumped on disconnect so bytes in flight are lost. */
  private epoch = 0;

  constructor(
    readonly sched: VirtualScheduler,
    opts: LinkOptions = {},
  ) {
    const baud = opts.baud ?? 115200;
    this.host = new End(this, baud);
    this.device = new End(this, baud);
    this.host.peer = this.device;
    this.device.peer = this.host;
    this.latency = opts.latencyMs ?? 0;
    this.faults = opts.faults ?? {};
    this.rand = prng(opts.seed ?? 1);
    this.chunk = opts.deliveryChunk ?? 16;
  }

  /** Time one byte takes on the wire at `baud` (ms). */
  static byteMs(baud: number): number {
    return Number.isFinite(baud) ? 10_000 / baud : 0;
  }

  transmit(from: End, input: Uint8Array): void {
    const f = this.faults;
    const to = from.peer;
    let bytes = input;
    if (f.garbageRate && this.rand() < f.garbageRate) {
      const g = new Uint8Array(1 + Math.floor(this.rand() * 32));
      for (let i = 0; i < g.length; i++) g[i] = Math.floor(this.rand() * 256);
      from.stats.garbageBytes += g.length;
      const both = new Uint8Array(g.length + bytes.length);
      both.set(g);
      both.set(bytes, g.length);
      bytes = both;
    }
    const now = this.sched.now();
    const byteMs = VirtualLink.byteMs(from.baud);
    const start = Math.max(now + this.latency, from.wireFreeAt);
    from.wireFreeAt = start + bytes.length * byteMs;
    from.stats.bytes += bytes.length;
    if (f.dropWriteRate && this.rand() < f.dropWriteRate) {
      from.stats.droppedWrites++;
      return;
    }
    const out = Uint8Array.from(bytes);
    const garble = from.baud !== to.baud || (f.maxBaud !== undefined && from.baud > f.maxBaud);
    let kept = 0;
    for (let i = 0; i < out.length; i++) {
      if (f.dropByteRate && this.rand() < f.dropByteRate) {
        from.stats.droppedBytes++;
        continue;
      }
      let b = out[i]!;
      if (garble) b = Math.floor(this.rand() * 256);
      if (f.bitErrorRate) {
        // Draw the number of flipped bits in this byte cheaply: P(any) ≈ 8·BER for small BER.
        if (this.rand() < 8 * f.bitErrorRate) {
          b ^= 1 << Math.floor(this.rand() * 8);
          from.stats.bitFlips++;
        }
      }
      out[kept++] = b;
    }
    const epoch = this.epoch;
    for (let i = 0; i < kept; i += this.chunk) {
      const piece = out.slice(i, Math.min(kept, i + this.chunk));
      const arrive = start + Math.min(kept, i + this.chunk) * byteMs;
      this.sched.at(arrive, () => {
        if (epoch === this.epoch && !to.closed) to.dataCb?.(piece);
      });
    }
  }

  /** Pull the cable: bytes in flight are lost and both ends see close. */
  disconnect(): void {
    if (this.host.closed) return;
    this.epoch++;
    this.host.closed = true;
    this.device.closed = true;
    this.host.closeCb?.();
    this.device.closeCb?.();
  }

  /** Plug it back in (a new session starts on the host side). */
  reconnect(): void {
    this.host.closed = false;
    this.device.closed = false;
    this.host.wireFreeAt = this.device.wireFreeAt = this.sched.now();
  }
}
