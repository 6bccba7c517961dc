/**
 * Serve many simulated devices from one process, each on its own pseudo-terminal pair (socat),
 * in real time: what `sim serve --pty` does for one device, for a fleet, plus the faults a
 * gateway meets in the field — an adapter unplugged and plugged back, a power cut (now, or in
 * the middle of the Nth flash operation from now) followed by a power-on reset.
 *
 * Model of a device on its USB-UART adapter (docs/simulator.md "Fleets"):
 *  - the adapter is the pty pair; its host end is the link `linkDir/tty-<deviceId>`;
 *  - the ESP32 is powered from the adapter's USB, as on a dev board: unplug removes the link
 *    (the host side sees its port close: EIO/hang-up) and powers the chip off; plug makes a new
 *    pty pair on the same link path and the chip powers on and boots (POWERON_RESET);
 *  - a power cut leaves the adapter plugged (its link stays) and the chip off for
 *    POWER_CUT_OFF_MS, then it boots again, like a brown-out followed by a power-on reset.
 *
 * Each power-on of a device is one "life": a SimEndpoint behind a PowerGate (its port) and
 * PowerTimers (its timers). When power goes, the gate and the timers close, so nothing the old
 * life had scheduled (an ACK, a baud revert, a restart) and no byte still on the wire can reach
 * the device again: the next life starts from the flash and eFuses alone, as hardware does.
 * Every call into a life from the event loop passes through the same guard, which is also how a
 * scheduled power cut is noticed wherever in the device code it struck.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { EspOtaError, isEspOtaError } from "../errors.js";
import { FaultPort, type RealFaults } from "../uart/fault-port.js";
import type { BytePort } from "../uart/port.js";
import type { TimerHandle, Timers } from "../uart/scheduler.js";
import { SerialBytePort } from "../uart/serial-port.js";
import { RX_CONFIGS, SimEndpoint } from "../uart/sim-endpoint.js";
import { SimDevice } from "./device.js";
import { saveFleetDevice } from "./fleet.js";

/** Faults on every device's link, as `parseFaults` (src/uart/fault-port.ts) returns them. */
export type FaultOptions = RealFaults;

export interface ServeFleetOptions {
  /** Host ends appear as linkDir/tty-<deviceId> (socat link=); created if missing. */
  linkDir: string;
  /** Console baud rate each device boots into; default 115200, as ESP-IDF's console. */
  consoleBaud?: number;
  /** Faults on every link (each device's fault stream seeded by its index, so they differ). */
  faults?: FaultOptions;
  /** Receive path: default "iram" (CONFIG_UART_ISR_IN_IRAM, 48 KB ring), as `sim serve`. */
  rx?: "iram" | "no-iram";
  /** Every line a device prints on UART0 (boot log, app log), as it prints it. */
  onLog?: (deviceId: string, line: string) => void;
}

export interface ServedDevice {
  readonly deviceId: string;
  /** The host end: linkDir/tty-<deviceId>. Absent while unplugged. */
  readonly path: string;
  /** The simulated chip (its state persists across unplug and power cuts). */
  readonly device: SimDevice;
  readonly plugged: boolean;
  /** Plugged and not in a power cut. */
  readonly powered: boolean;
}

export interface FleetServer {
  devices: ServedDevice[];
  /**
   * Pull the adapter: the pty pair closes, the link disappears, the host sees its port close,
   * and the ESP32 loses power (it is powered from the adapter's USB). A no-op when unplugged.
   */
  unplug(deviceId: string): Promise<void>;
  /** Plug the adapter back: a new pty pair on the same link path; the ESP32 powers on and boots. */
  plug(deviceId: string): Promise<void>;
  /**
   * Cut the ESP32's power now (no argument, or 0), or in the middle of the Nth flash operation
   * (erase or page program) from now (NorFlash.schedulePowerCut, half of it done); power comes
   * back POWER_CUT_OFF_MS later. The adapter stays plugged.
   */
  powerCut(deviceId: string, afterFlashOps?: number): void;
  /** Write every device's state file. */
  save(): void;
  /** Unplug everything, stop socat, save every state file. */
  close(): Promise<void>;
}

/**
 * How long the chip stays off after a power cut: long enough for a host to see silence (its
 * frame timeouts are shorter) and short enough for tests. 200 ms.
 */
export const POWER_CUT_OFF_MS = 200;

/** Time socat gets to create both ptys (as openPtyPair in src/uart/socat.ts). */
const SOCAT_READY_MS = 5000;

/**
 * A device's port while it has power. Closing it is the chip losing power: it sends nothing,
 * receives nothing and cannot change its baud; the wire (pacing, faults, the pty) stays.
 */
class PowerGate implements BytePort {
  private open = true;
  private dataCb: ((b: Uint8Array) => void) | undefined;

  constructor(
    private readonly wire: BytePort,
    guard: (fn: () => void) => void,
  ) {
    // The wire keeps one data listener: this gate replaces the previous life's.
    wire.onData((b) => {
      if (this.open) guard(() => this.dataCb?.(b));
    });
  }

  get baud(): number {
    return this.wire.baud;
  }
  write(bytes: Uint8Array): void {
    if (this.open) this.wire.write(bytes);
  }
  onData(cb: (b: Uint8Array) => void): void {
    this.dataCb = cb;
  }
  // The device side never watches for its own port closing; the server watches the wire.
  onClose(_cb: () => void): void {}
  setBaud(baud: number): void {
    if (this.open) this.wire.setBaud(baud);
  }
  close(): void {
    this.open = false;
  }
}

/**
 * Real timers that fire in due-time order, ties in the order they were set. Node's setTimeout
 * counts a delay from the event loop's cached millisecond clock (getLibuvNow), not from
 * performance.now(): two delays computed from performance.now() in one tick can fire in the
 * wrong order, and SimEndpoint and PacedPort compute theirs that way (a boot log line, or an ACK,
 * overtook the one written before it when these used `realTimers`). One Node timer per queue.
 */
/**
 * The device end of a pty pair. A pty has no baud rate (socat relays at memory speed; PacedPort
 * models the wire from `baud`), and changing a port's rate through serialport flushes both kernel
 * queues (bindings-cpp: tcflush(fd, TCIOFLUSH) before tcsetattr). SimEndpoint sets the console
 * rate at every reset, so each boot threw away a HELLO the host had just sent (it answered only
 * after the host's 3 s retry) and part of the boot log: here the rate is only recorded.
 */
class PtyEnd implements BytePort {
  constructor(
    private readonly serial: SerialBytePort,
    private rate: number,
  ) {}
  get baud(): number {
    return this.rate;
  }
  setBaud(baud: number): void {
    this.rate = baud;
  }
  write(bytes: Uint8Array): void {
    this.serial.write(bytes);
  }
  onData(cb: (b: Uint8Array) => void): void {
    this.serial.onData(cb);
  }
  onClose(cb: () => void): void {
    this.serial.onClose(cb);
  }
  close(): void {
    this.serial.close();
  }
}

/**
 * Real-time pacing at baud/10 bytes a second, as PacedPort (src/uart/paced-port.ts) models a
 * UART on a pty, but strictly in order in each direction. PacedPort hands a chunk over at once
 * when its slot is under 0.5 ms away, even while an earlier chunk still waits on a timer: an ACK
 * overtook the RESULT written just before it and the host, seeing the ACK first, stalled at
 * "no ACK progress at offset 0". Here a chunk waits behind every earlier one.
 */
class PacedWire implements BytePort {
  private dataCb: ((b: Uint8Array) => void) | undefined;
  private readonly freeAt = { rx: 0, tx: 0 };
  private readonly waiting = { rx: 0, tx: 0 };

  constructor(
    private readonly inner: BytePort,
    private readonly timers: Timers,
  ) {
    inner.onData((b) => this.pass("rx", b, (x) => this.dataCb?.(x)));
  }

  get baud(): number {
    return this.inner.baud;
  }
  write(bytes: Uint8Array): void {
    this.pass("tx", bytes, (x) => this.inner.write(x));
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

  /** A chunk leaves (tx) when the wire is free, or is received (rx) once its last byte is in. */
  private pass(dir: "rx" | "tx", b: Uint8Array, out: (b: Uint8Array) => void): void {
    const now = this.timers.now();
    const start = Math.max(now, this.freeAt[dir]);
    this.freeAt[dir] = start + (b.length * 10_000) / this.inner.baud;
    const at = dir === "tx" ? start : this.freeAt[dir];
    if (at <= now && this.waiting[dir] === 0) {
      out(b);
      return;
    }
    const copy = Uint8Array.from(b);
    this.waiting[dir]++;
    this.timers.setTimer(at - now, () => {
      this.waiting[dir]--;
      out(copy);
    });
  }
}

/** Due times closer than this are one time: far below a UART byte (5 µs at 2 Mbaud). */
const TIE_MS = 1e-3;

export class OrderedTimers implements Timers {
  private queue: { at: number; id: number; fn: () => void }[] = [];
  private nextId = 0;
  private armed: { at: number; timer: ReturnType<typeof setTimeout> } | undefined;
  private closed = false;
  private tickNow: number | undefined;

  /**
   * One value per synchronous run, like the event loop's own clock. A caller that computes a
   * delay as `due - now()` then sets a timer gets exactly `due` back: with a fresh reading here
   * the two readings differed by microseconds (more under load), enough to order two frames of
   * one device time (a RESULT and the ACK sent after it) the wrong way round.
   */
  now(): number {
    if (this.tickNow === undefined) {
      this.tickNow = performance.now();
      queueMicrotask(() => {
        this.tickNow = undefined;
      });
    }
    return this.tickNow;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    if (!(ms >= 0)) throw new RangeError(`setTimer: ${ms} is not a delay`);
    const e = { at: this.now() + ms, id: ++this.nextId, fn };
    if (this.closed) return { id: e.id };
    // After every entry due no later, ties in the order set. "No later" within TIE_MS, for float
    // rounding: now + (due - now) can be a few ulps off `due` (boot log lines printed at one
    // device time came out shuffled before this).
    let i = this.queue.length;
    while (i > 0 && this.queue[i - 1]!.at > e.at + TIE_MS) i--;
    this.queue.splice(i, 0, e);
    this.arm();
    return { id: e.id };
  }

  clearTimer(h: TimerHandle | undefined): void {
    if (!h) return;
    const i = this.queue.findIndex((e) => e.id === h.id);
    if (i >= 0) this.queue.splice(i, 1);
  }

  /** Drops every pending timer; later ones are never run. */
  close(): void {
    this.closed = true;
    this.queue = [];
    if (this.armed) clearTimeout(this.armed.timer);
    this.armed = undefined;
  }

  private arm(): void {
    const head = this.queue[0];
    if (!head || (this.armed && this.armed.at <= head.at)) return;
    if (this.armed) clearTimeout(this.armed.timer);
    this.armed = {
      at: head.at,
      timer: setTimeout(() => this.fire(), Math.max(0, head.at - this.now())),
    };
  }

  private fire(): void {
    this.armed = undefined;
    const now = this.now();
    try {
      while (this.queue.length > 0 && this.queue[0]!.at <= now) this.queue.shift()!.fn();
    } finally {
      // Early by up to a millisecond (libuv rounds), or set meanwhile: wait for the rest.
      this.arm();
    }
  }
}

/** A life's timers: every callback runs through the life's guard; closing drops them all. */
class PowerTimers extends OrderedTimers {
  constructor(private readonly guard: (fn: () => void) => void) {
    super();
  }
  override setTimer(ms: number, fn: () => void): TimerHandle {
    return super.setTimer(ms, () => this.guard(fn));
  }
}

interface Adapter {
  socat: ChildProcess;
  serial: SerialBytePort;
  /** The wire's pacing and fault timers (dropped at unplug). */
  timers: OrderedTimers;
  /** serial, paced at the baud rate, with the faults: what every life of the device talks to. */
  wire: BytePort;
}

interface Life {
  gate: PowerGate;
  timers: PowerTimers;
}

class Slot implements ServedDevice {
  adapter: Adapter | undefined;
  life: Life | undefined;
  /** Pending power-on after a cut. */
  restore: ReturnType<typeof setTimeout> | undefined;
  /** A plug or unplug in progress (they are serialised per device). */
  busy: Promise<void> = Promise.resolve();

  constructor(
    readonly index: number,
    readonly deviceId: string,
    readonly stateFile: string,
    readonly path: string,
    readonly device: SimDevice,
  ) {}

  get plugged(): boolean {
    return this.adapter !== undefined;
  }
  get powered(): boolean {
    return this.life !== undefined && this.device.flash.isPowered;
  }
}

export async function serveFleet(
  devices: { deviceId: string; stateFile: string }[],
  o: ServeFleetOptions,
): Promise<FleetServer> {
  const consoleBaud = o.consoleBaud ?? 115200;
  const rx = (o.rx ?? "iram") === "iram" ? RX_CONFIGS.iram : RX_CONFIGS.noIram;
  const linkDir = resolve(o.linkDir);
  mkdirSync(linkDir, { recursive: true });
  // The device ends live apart from the host ends, so a tool globbing linkDir sees only hosts.
  const privateDir = mkdtempSync(join(tmpdir(), "esp-ota-fleet-"));

  const slots = devices.map((d, i) => {
    // A VirtualClock (deserialize's default) with real timers: SimEndpoint then waits out the
    // flash's busy time on the timers it is given, so every continuation runs through this
    // device's PowerTimers (a RealClock's settle() would resume it outside them).
    const device = SimDevice.deserialize(new Uint8Array(readFileSync(d.stateFile)));
    if (device.id !== d.deviceId)
      throw new EspOtaError(
        "E_FLEET_INVALID",
        `${d.stateFile} holds device ${device.id}, not ${d.deviceId}`,
        { deviceId: d.deviceId },
      );
    return new Slot(i, d.deviceId, d.stateFile, join(linkDir, `tty-${d.deviceId}`), device);
  });
  const byId = new Map(slots.map((s) => [s.deviceId, s]));
  const slotOf = (id: string) => {
    const s = byId.get(id);
    if (!s)
      throw new EspOtaError("E_FLEET_DEVICE_UNKNOWN", `device ${id} is not being served`, {
        deviceId: id,
      });
    return s;
  };

  /**
   * Every entry into a device's life. SimEndpoint catches a power cut inside a frame handler but
   * not one in its idle-time erase-ahead (UartOtaDevice.drained), which would otherwise escape
   * into the event loop; the chip is off either way, and the flash says so.
   */
  const guard = (s: Slot) => (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      if (!(isEspOtaError(e) && e.code === "E_SIM_POWER_CUT")) throw e;
    }
    if (s.life && !s.device.flash.isPowered) {
      endLife(s);
      scheduleRestore(s);
    }
  };

  const endLife = (s: Slot) => {
    if (!s.life) return;
    s.life.gate.close();
    s.life.timers.close();
    s.life = undefined;
    s.device.powerOff();
  };

  const scheduleRestore = (s: Slot) => {
    clearTimeout(s.restore);
    s.restore = setTimeout(() => {
      s.restore = undefined;
      if (s.adapter && !s.life) startLife(s);
    }, POWER_CUT_OFF_MS);
  };

  const startLife = (s: Slot) => {
    const adapter = s.adapter;
    if (!adapter || s.life) return;
    // The ROM starts at the console rate whatever the last life had negotiated.
    adapter.wire.setBaud(consoleBaud);
    const g = guard(s);
    const life: Life = { gate: new PowerGate(adapter.wire, g), timers: new PowerTimers(g) };
    s.life = life;
    const ep = new SimEndpoint(s.device, life.gate, life.timers, { rx });
    const toWire = s.device.uart.onLine;
    s.device.uart.onLine = (line) => {
      o.onLog?.(s.deviceId, line);
      toWire?.(line);
    };
    g(() => ep.powerOn());
  };

  const plug = async (s: Slot) => {
    if (s.adapter) return;
    removeStaleLink(s.path);
    const deviceEnd = join(privateDir, `dev-${s.deviceId}`);
    const socat = await startSocat(deviceEnd, s.path);
    let serial: SerialBytePort;
    try {
      serial = await SerialBytePort.open(deviceEnd, consoleBaud);
    } catch (e) {
      await stopSocat(socat);
      throw e;
    }
    // A pty has no wire: pace it at the baud rate so it behaves like a UART (as `sim serve`).
    const timers = new OrderedTimers();
    let wire: BytePort = new PacedWire(new PtyEnd(serial, consoleBaud), timers);
    if (o.faults) wire = new FaultPort(wire, timers, o.faults, s.index + 1);
    const adapter: Adapter = { socat, serial, timers, wire };
    s.adapter = adapter;
    // socat gone without unplug() (killed from outside): the adapter is gone all the same.
    socat.once("exit", () => {
      if (s.adapter === adapter) void serialise(s, () => unplug(s));
    });
    startLife(s);
  };

  const unplug = async (s: Slot) => {
    const adapter = s.adapter;
    if (!adapter) return;
    s.adapter = undefined;
    clearTimeout(s.restore);
    s.restore = undefined;
    // An armed cut dies with the power; power-on starts without one.
    s.device.flash.cancelPowerCut();
    endLife(s);
    adapter.timers.close();
    adapter.serial.close();
    await stopSocat(adapter.socat);
  };

  /** Plug and unplug of one device run one after the other, never interleaved. */
  const serialise = (s: Slot, op: () => Promise<void>): Promise<void> => {
    const next = s.busy.then(op, op);
    s.busy = next.catch(() => undefined);
    return next;
  };

  let closed = false;
  const server: FleetServer = {
    devices: slots,
    unplug: (id) => serialise(slotOf(id), () => unplug(slotOf(id))),
    plug: (id) => serialise(slotOf(id), () => plug(slotOf(id))),
    powerCut(id, afterFlashOps = 0) {
      const s = slotOf(id);
      if (!Number.isInteger(afterFlashOps) || afterFlashOps < 0)
        throw new RangeError(`powerCut: afterFlashOps ${afterFlashOps} is not a whole number`);
      if (afterFlashOps > 0) {
        s.device.flash.schedulePowerCut(s.device.flash.operationCount + afterFlashOps);
        return;
      }
      if (!s.life) return; // already off
      s.device.flash.cancelPowerCut();
      endLife(s);
      scheduleRestore(s);
    },
    save() {
      for (const s of slots) saveFleetDevice(s.stateFile, s.device);
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(slots.map((s) => serialise(s, () => unplug(s))));
      server.save();
      rmSync(privateDir, { recursive: true, force: true });
    },
  };

  try {
    await Promise.all(slots.map((s) => serialise(s, () => plug(s))));
  } catch (e) {
    await Promise.all(slots.map((s) => serialise(s, () => unplug(s))));
    rmSync(privateDir, { recursive: true, force: true });
    throw e;
  }
  return server;
}

/** A link left by a process that died without stopping its socat (SIGKILL); never a real file. */
function removeStaleLink(path: string): void {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSymbolicLink())
    throw new EspOtaError(
      "E_FILE_WRITE",
      `${path} exists and is not a link: not replacing it with a device's pty`,
      { path },
    );
  rmSync(path);
}

/**
 * One pty pair with both ends as links (openPtyPair in src/uart/socat.ts names its ends itself;
 * a fleet needs the host end at a given path). socat removes its links when it exits.
 */
async function startSocat(deviceEnd: string, hostEnd: string): Promise<ChildProcess> {
  let proc: ChildProcess;
  try {
    proc = spawn(
      "socat",
      ["-d", "-d", `pty,raw,echo=0,link=${deviceEnd}`, `pty,raw,echo=0,link=${hostEnd}`],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
  } catch (e) {
    throw new EspOtaError("E_UART_PORT", `cannot start socat: ${(e as Error).message}`, {}, e);
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await new Promise<void>((ok, fail) => {
      let text = "";
      const onData = (b: Buffer) => {
        text += b.toString();
        if (
          text.includes("starting data transfer loop") &&
          existsSync(deviceEnd) &&
          existsSync(hostEnd)
        ) {
          // Later messages are read and dropped (a full pipe would stall socat).
          proc.stderr?.off("data", onData);
          proc.stderr?.resume();
          ok();
        }
      };
      proc.stderr?.on("data", onData);
      proc.once("error", (e) =>
        fail(new EspOtaError("E_UART_PORT", `cannot start socat: ${e.message}`, {}, e)),
      );
      proc.once("exit", (code) =>
        fail(new EspOtaError("E_UART_PORT", `socat exited (${code}) before creating ${hostEnd}`)),
      );
      timer = setTimeout(
        () =>
          fail(
            new EspOtaError(
              "E_UART_PORT",
              `socat did not create ${hostEnd} in ${SOCAT_READY_MS / 1000} s`,
            ),
          ),
        SOCAT_READY_MS,
      );
    });
  } catch (e) {
    await stopSocat(proc);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return proc;
}

/** SIGTERM, and wait for the exit: socat has removed its links by then. */
function stopSocat(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    proc.once("exit", () => done());
    proc.kill("SIGTERM");
  });
}
