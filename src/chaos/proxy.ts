/**
 * The chaos proxy's socket edge: accepts TCP connections, opens one to the upstream for each,
 * and moves the bytes of both directions through a ToxicPipe (src/chaos/pipe.ts), writing what
 * the toxics let out when it is due. All decisions are the pipe's; this file owns sockets,
 * one timer per connection, and backpressure.
 *
 * Memory per connection is bounded: a direction's source socket is paused while the bytes held
 * by its toxics plus those waiting in the destination's write buffer reach `highWaterMark`,
 * and resumed when they fall below half of it.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { performance } from "node:perf_hooks";
import { EspOtaError } from "../errors.js";
import { formatHostPort, type HostPort } from "./address.js";
import { ToxicPipe } from "./pipe.js";
import {
  formatToxicSpec,
  type Item,
  MAX_DELAY_MS,
  parseToxicSpec,
  type Toxic,
  type ToxicResult,
  toxicFromJson,
  updateToxicFields,
} from "./toxics.js";

/** A toxic as a caller writes it: the type, and any fields that differ from the defaults. */
export type ToxicInput = Toxic extends infer T
  ? T extends Toxic
    ? Partial<Omit<T, "type">> & { readonly type: T["type"] }
    : never
  : never;

export type ChaosEvent =
  | { readonly type: "connection"; readonly id: number; readonly client: string }
  | {
      readonly type: "connection-closed";
      readonly id: number;
      readonly bytesUp: number;
      readonly bytesDown: number;
    }
  | { readonly type: "upstream-error"; readonly id: number; readonly message: string }
  | { readonly type: "toxic-added" | "toxic-updated" | "toxic-removed"; readonly toxic: Toxic }
  | { readonly type: "enabled"; readonly enabled: boolean }
  | { readonly type: "reset"; readonly connections: number };

export interface ChaosProxyOptions {
  /** Where clients connect; port 0 takes a free port (see `address`). */
  readonly listen: HostPort;
  /** The real server: the MQTT broker or the image server. */
  readonly upstream: HostPort;
  /** Toxics present from the start (objects or `TYPE[:STREAM][:key=value,...]` specs). */
  readonly toxics?: readonly (ToxicInput | Toxic | string)[];
  /** Toxicity rolls, jitter and slice sizes (default Math.random; tests pass a seeded one). */
  readonly random?: () => number;
  /**
   * Bytes a direction may hold (in its toxics and the destination's write buffer) before its
   * source is paused (default 64 KiB: one socket read's worth, so a full read fits while
   * memory per connection stays small next to an image).
   */
  readonly highWaterMark?: number;
  readonly onEvent?: (e: ChaosEvent) => void;
}

export interface ChaosStats {
  /** Connections accepted since the start. */
  readonly connections: number;
  /** Connections open now. */
  readonly active: number;
  /** Bytes written to the upstream (client to server, after the toxics). */
  readonly bytesUp: number;
  /** Bytes written to clients (server to client, after the toxics). */
  readonly bytesDown: number;
  /** Bytes the toxics hold now, all connections together (bounded by highWaterMark each way). */
  readonly held: number;
}

export interface ChaosProxy {
  /** The address the proxy listens on (the real port when port 0 was asked for). */
  readonly address: HostPort;
  readonly upstream: HostPort;
  readonly enabled: boolean;
  readonly stats: ChaosStats;
  /** Adds a toxic at the end of its direction's chain, on new and open connections alike. */
  addToxic(toxic: ToxicInput | Toxic | string): Toxic;
  /** Changes a toxic's parameters or toxicity; open connections take the change at once. */
  updateToxic(name: string, partial: Readonly<Record<string, unknown>>): Toxic;
  /** Removes a toxic; what it held goes on at once (docs/chaos.md, "Changing toxics"). */
  removeToxic(name: string): void;
  listToxics(): Toxic[];
  /**
   * false: stop listening (new connections are refused) and cut the open ones, like Toxiproxy's
   * `enabled: false` (a server that is down); true: listen again on the same address.
   */
  setEnabled(enabled: boolean): Promise<void>;
  /** Aborts every open connection with a TCP RST on both sides (a broker restart, a NAT flush). */
  resetConnections(): number;
  close(): Promise<void>;
}

const DEFAULT_HIGH_WATER = 64 * 1024;

function unwrap<T>(r: ToxicResult<T>): T {
  if (!r.ok) throw new EspOtaError("E_CHAOS_TOXIC", r.reason);
  return r.value;
}

/** Normalises any accepted form of a toxic; throws E_CHAOS_TOXIC. */
export function toToxic(t: ToxicInput | Toxic | string): Toxic {
  return unwrap(typeof t === "string" ? parseToxicSpec(t) : toxicFromJson(t));
}

export async function startChaosProxy(opts: ChaosProxyOptions): Promise<ChaosProxy> {
  const random = opts.random ?? Math.random;
  const hwm = opts.highWaterMark ?? DEFAULT_HIGH_WATER;
  if (!(hwm >= 1)) throw new RangeError("highWaterMark must be at least 1 byte");
  const emit = opts.onEvent ?? (() => {});
  const toxics: Toxic[] = [];
  for (const t of opts.toxics ?? []) {
    const toxic = toToxic(t);
    if (toxics.some((x) => x.name === toxic.name))
      throw new EspOtaError("E_CHAOS_TOXIC_EXISTS", `toxic ${toxic.name} is given twice`, {
        toxic: toxic.name,
      });
    toxics.push(toxic);
  }
  const conns = new Set<Connection>();
  let nextId = 1;
  let accepted = 0;
  let bytesUp = 0;
  let bytesDown = 0;
  let enabled = true;
  let closed = false;

  const chain = (stream: Toxic["stream"]) => toxics.filter((t) => t.stream === stream);
  const ctx: ConnectionContext = {
    random,
    hwm,
    chain,
    count: (dir, n) => {
      if (dir === "up") bytesUp += n;
      else bytesDown += n;
    },
    emit,
    gone: (c) => conns.delete(c),
  };

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    accepted++;
    conns.add(new Connection(nextId++, client, opts.upstream, ctx));
  });
  let address = await listen(server, opts.listen);

  const changed = () => {
    for (const c of conns) c.retoxic();
  };
  const find = (name: string) => {
    const i = toxics.findIndex((t) => t.name === name);
    if (i < 0)
      throw new EspOtaError("E_CHAOS_TOXIC_NOT_FOUND", `no toxic named ${name}`, { toxic: name });
    return i;
  };
  const cut = (how: "destroy" | "reset") => {
    const n = conns.size;
    for (const c of [...conns]) c.abort(how);
    return n;
  };

  return {
    get address() {
      return address;
    },
    upstream: opts.upstream,
    get enabled() {
      return enabled;
    },
    get stats() {
      let held = 0;
      for (const c of conns) held += c.held;
      return { connections: accepted, active: conns.size, bytesUp, bytesDown, held };
    },
    addToxic(input) {
      const toxic = toToxic(input);
      if (toxics.some((t) => t.name === toxic.name))
        throw new EspOtaError(
          "E_CHAOS_TOXIC_EXISTS",
          `a toxic named ${toxic.name} is already on the proxy`,
          { toxic: toxic.name },
        );
      toxics.push(toxic);
      changed();
      emit({ type: "toxic-added", toxic });
      return toxic;
    },
    updateToxic(name, partial) {
      const i = find(name);
      const toxic = unwrap(updateToxicFields(toxics[i]!, partial));
      toxics[i] = toxic;
      changed();
      emit({ type: "toxic-updated", toxic });
      return toxic;
    },
    removeToxic(name) {
      const [toxic] = toxics.splice(find(name), 1);
      changed();
      emit({ type: "toxic-removed", toxic: toxic! });
    },
    listToxics() {
      return [...toxics];
    },
    async setEnabled(on) {
      if (closed) throw new EspOtaError("E_CHAOS_LISTEN", "the proxy is closed");
      if (on === enabled) return;
      enabled = on;
      if (on) {
        // The same port as before, so clients configured with it find the proxy again.
        try {
          address = await listen(server, address);
        } catch (e) {
          enabled = false;
          throw e;
        }
      } else {
        const stopped = new Promise<void>((ok) => server.close(() => ok()));
        cut("destroy");
        await stopped;
      }
      emit({ type: "enabled", enabled: on });
    },
    resetConnections() {
      const n = cut("reset");
      emit({ type: "reset", connections: n });
      return n;
    },
    async close() {
      if (closed) return;
      closed = true;
      const stopped = enabled ? new Promise<void>((ok) => server.close(() => ok())) : undefined;
      enabled = false;
      cut("destroy");
      await stopped;
    },
  };
}

function listen(server: Server, at: HostPort): Promise<HostPort> {
  return new Promise((ok, fail) => {
    const onError = (e: Error) =>
      fail(
        new EspOtaError(
          "E_CHAOS_LISTEN",
          `cannot listen on ${formatHostPort(at)}: ${e.message}`,
          { address: formatHostPort(at) },
          e,
        ),
      );
    server.once("error", onError);
    server.listen(at.port, at.host, () => {
      server.off("error", onError);
      const a = server.address();
      ok(typeof a === "object" && a ? { host: a.address, port: a.port } : at);
    });
  });
}

interface ConnectionContext {
  readonly random: () => number;
  readonly hwm: number;
  chain(stream: Toxic["stream"]): Toxic[];
  count(dir: "up" | "down", n: number): void;
  emit(e: ChaosEvent): void;
  gone(c: Connection): void;
}

/** One side's socket and what has happened to it. */
interface Side {
  readonly socket: Socket;
  /** Closed: nothing more can be written to it or read from it. */
  dead: boolean;
  /** Its read side has ended (FIN, error, close), and the end was fed to its pipe. */
  ended: boolean;
  paused: boolean;
}

/** One direction: bytes read from `src` go through `pipe` and are written to `dst`. */
interface Direction {
  readonly name: "up" | "down";
  readonly pipe: ToxicPipe;
  readonly src: Side;
  readonly dst: Side;
  bytes: number;
}

class Connection {
  private readonly client: Side;
  private readonly server: Side;
  private readonly up: Direction;
  private readonly down: Direction;
  private timer: NodeJS.Timeout | undefined;
  private timerAt: number | undefined;
  private finished = false;

  constructor(
    private readonly id: number,
    clientSocket: Socket,
    upstream: HostPort,
    private readonly ctx: ConnectionContext,
  ) {
    const serverSocket = tcpConnect({
      host: upstream.host,
      port: upstream.port,
      allowHalfOpen: true,
    });
    // Toxics decide the timing; Nagle's algorithm would add its own (Go, which Toxiproxy is
    // written in, turns it off by default too).
    clientSocket.setNoDelay(true);
    serverSocket.setNoDelay(true);
    this.client = { socket: clientSocket, dead: false, ended: false, paused: false };
    this.server = { socket: serverSocket, dead: false, ended: false, paused: false };
    const now = performance.now();
    this.up = {
      name: "up",
      pipe: new ToxicPipe(ctx.chain("upstream"), now, ctx.random),
      src: this.client,
      dst: this.server,
      bytes: 0,
    };
    this.down = {
      name: "down",
      pipe: new ToxicPipe(ctx.chain("downstream"), now, ctx.random),
      src: this.server,
      dst: this.client,
      bytes: 0,
    };
    this.wire(this.up);
    this.wire(this.down);
    serverSocket.once("error", (e) => ctx.emit({ type: "upstream-error", id, message: e.message }));
    const remote = clientSocket.remoteAddress
      ? formatHostPort({ host: clientSocket.remoteAddress, port: clientSocket.remotePort ?? 0 })
      : "?";
    ctx.emit({ type: "connection", id, client: remote });
    clientSocket.resume();
  }

  private wire(d: Direction): void {
    const s = d.src.socket;
    s.on("data", (chunk: Buffer) => {
      this.deliver(d, d.pipe.write({ kind: "data", at: 0, data: chunk }, performance.now()));
      this.settle();
    });
    s.on("end", () => this.endOf(d));
    // A peer's RST or a refused upstream: 'close' follows, which ends the stream.
    s.on("error", () => {});
    s.on("close", () => {
      d.src.dead = true;
      this.endOf(d);
      this.settle();
      if (this.client.dead && this.server.dead) this.finish();
    });
    d.dst.socket.on("drain", () => this.settle());
  }

  get held(): number {
    return this.up.pipe.queuedBytes + this.down.pipe.queuedBytes;
  }

  /** The toxics changed: every open connection takes the new chains at once. */
  retoxic(): void {
    const now = performance.now();
    this.deliver(this.up, this.up.pipe.setToxics(this.ctx.chain("upstream"), now));
    this.deliver(this.down, this.down.pipe.setToxics(this.ctx.chain("downstream"), now));
    this.settle();
  }

  /** The proxy is disabled (destroy) or its connections reset (reset). */
  abort(how: "destroy" | "reset"): void {
    for (const side of [this.client, this.server]) {
      if (side.socket.destroyed) continue;
      if (how === "reset") side.socket.resetAndDestroy();
      else side.socket.destroy();
    }
  }

  /** The source of `d` will send nothing more. */
  private endOf(d: Direction): void {
    if (d.src.ended) return;
    d.src.ended = true;
    this.deliver(d, d.pipe.write({ kind: "eof", at: 0 }, performance.now()));
  }

  /** Carries out what left a pipe. */
  private deliver(d: Direction, items: readonly Item[]): void {
    for (const item of items) {
      const dst = d.dst.socket;
      if (dst.destroyed && item.kind !== "reset") continue;
      switch (item.kind) {
        case "data":
          dst.write(item.data);
          d.bytes += item.data.length;
          this.ctx.count(d.name, item.data.length);
          break;
        case "eof":
          // A source that is gone cannot take the answer: close rather than half-close.
          if (d.src.dead) dst.destroySoon();
          else dst.end();
          break;
        case "close":
          dst.destroySoon();
          this.endOf(d === this.up ? this.down : this.up);
          break;
        case "reset":
          this.abort("reset");
          return;
      }
    }
  }

  /** Backpressure both ways, then the timer for whatever the toxics hold. */
  private settle(): void {
    for (const d of [this.up, this.down]) {
      const held = d.pipe.queuedBytes + d.dst.socket.writableLength;
      const s = d.src.socket;
      if (!d.src.paused && held >= this.ctx.hwm && !d.src.ended) {
        d.src.paused = true;
        s.pause();
      } else if (d.src.paused && held < this.ctx.hwm / 2) {
        d.src.paused = false;
        s.resume();
      }
    }
    if (this.up.pipe.done && this.down.pipe.done) {
      // Both ends have gone through: the sockets close once their last bytes are written.
      for (const side of [this.client, this.server])
        if (!side.socket.destroyed) side.socket.destroySoon();
    }
    const next = minDefined(this.up.pipe.nextAt, this.down.pipe.nextAt);
    if (next === this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = next;
    if (next === undefined || this.finished) return;
    const wait = Math.min(MAX_DELAY_MS, Math.max(0, Math.ceil(next - performance.now())));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = undefined;
      const now = performance.now();
      this.deliver(this.up, this.up.pipe.advance(now));
      this.deliver(this.down, this.down.pipe.advance(now));
      this.settle();
    }, wait);
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.ctx.gone(this);
    this.ctx.emit({
      type: "connection-closed",
      id: this.id,
      bytesUp: this.up.bytes,
      bytesDown: this.down.bytes,
    });
  }
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

/** An event as one line of `chaos proxy`'s stderr. */
export function describeEvent(e: ChaosEvent): string {
  switch (e.type) {
    case "connection":
      return `connection ${e.id} from ${e.client}`;
    case "connection-closed":
      return `connection ${e.id} closed (up ${e.bytesUp} B, down ${e.bytesDown} B)`;
    case "upstream-error":
      return `connection ${e.id}: upstream: ${e.message}`;
    case "toxic-added":
      return `toxic added: ${e.toxic.name} ${formatToxicSpec(e.toxic)}`;
    case "toxic-updated":
      return `toxic updated: ${e.toxic.name} ${formatToxicSpec(e.toxic)}`;
    case "toxic-removed":
      return `toxic removed: ${e.toxic.name}`;
    case "enabled":
      return e.enabled ? "enabled: accepting connections" : "disabled: refusing connections";
    case "reset":
      return `reset ${e.connections} connection(s)`;
  }
}
