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
 * Each power-on of a device is one "life": a FirmwareEndpoint behind a PowerGate (its port) and
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
import type { BytePort } from "../uart/port.js";
import type { TimerHandle } from "../uart/scheduler.js";
import { SerialBytePort } from "../uart/serial-port.js";
import { SimDevice } from "./device.js";
import { FaultPort, type RealFaults } from "./fault-port.js";
import { FirmwareEndpoint } from "./firmware-device.js";
import { saveFleetDevice } from "./fleet.js";
import { OrderedTimers } from "./ordered-timers.js";
import { PacedLink } from "./paced-link.js";
import { RX_CONFIGS } from "./rx-model.js";

// OrderedTimers was first defined here; code written against that keeps working.
export { OrderedTimers };

/** Faults on every device's link, as `parseFaults` (src/sim/fault-port.ts) returns them. */
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
    // A VirtualClock (deserialize's default) with real timers: the device side then waits out the
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
   * Every entry into a device's life. FirmwareEndpoint catches a power cut inside any call into
   * the firmware; this guard also catches one anywhere else a life's timers or port reach the
   * chip (the boot after a restart), which would otherwise escape into the event loop; the chip
   * is off either way, and the flash says so.
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
    const ep = new FirmwareEndpoint(s.device, life.gate, life.timers, { rx });
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
    // PacedLink keeps the rate to itself: setting one on a pty flushes its queues.
    const timers = new OrderedTimers();
    let wire: BytePort = new PacedLink(serial, timers, { baud: consoleBaud });
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
