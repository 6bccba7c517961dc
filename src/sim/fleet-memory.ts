/**
 * A simulated fleet on in-memory UART links, in real time: the same devices and protocol as
 * serveFleet's pseudo-terminals, without socat or serial ports. Each device is a SimEndpoint on the
 * device end of a VirtualLink whose pacing (baud/10 bytes per second), latency and deliveries run
 * on real timers; the host end is a BytePort a gateway agent opens with DeviceLink.over. Used by
 * `esp-ota demo` where socat is missing and by `npm run bench:fleet` (1,000 devices in one
 * process, where ptys would need 1,000 socat processes).
 *
 * Not modelled here, unlike serveFleet: unplugging, power cuts and UART faults (the chaos tools
 * work on ptys).
 */
import type { BytePort } from "../uart/port.js";
import { type TimerHandle, type Timers, VirtualScheduler } from "../uart/scheduler.js";
import { RX_CONFIGS, SimEndpoint } from "../uart/sim-endpoint.js";
import { VirtualLink } from "../uart/virtual-link.js";
import type { SimDevice } from "./device.js";
import { type FleetDevice, loadFleetDevice, saveFleetDevice } from "./fleet.js";
import { OrderedTimers } from "./fleet-serve.js";

/**
 * VirtualLink on real time: its pacing and deliveries go to `timers` (OrderedTimers, which fire
 * strictly in due order, as a wire delivers) instead of a virtual clock.
 */
export class RealTimeScheduler extends VirtualScheduler {
  constructor(private readonly timers: Timers) {
    super();
  }
  override now(): number {
    return this.timers.now();
  }
  override setTimer(ms: number, fn: () => void): TimerHandle {
    return this.timers.setTimer(ms, fn);
  }
  override at(time: number, fn: () => void): TimerHandle {
    return this.timers.setTimer(Math.max(0, time - this.timers.now()), fn);
  }
  override clearTimer(h: TimerHandle | undefined): void {
    this.timers.clearTimer(h);
  }
  override run(): void {
    throw new TypeError("RealTimeScheduler runs on real timers; there is nothing to run");
  }
}

/** One USB 2.0 high-speed bulk packet: how a bridge hands received bytes to the host. */
export const MEMORY_DELIVERY_CHUNK = 512;
/** The adapter's latency timer at its minimum (FTDI: 1 ms; the default 16 ms is for tty use). */
export const MEMORY_ADAPTER_LATENCY_MS = 1;

export interface MemoryFleetOptions {
  /** Console baud rate each device boots into; default 115200, as ESP-IDF's console. */
  consoleBaud?: number;
  /** Receive path: default "iram" (CONFIG_UART_ISR_IN_IRAM, 48 KB ring), as `sim serve`. */
  rx?: "iram" | "no-iram";
  /** Write each device's state file at close (default true, as serveFleet). */
  save?: boolean;
}

export interface MemoryDevice {
  readonly deviceId: string;
  /** The simulated chip. */
  readonly device: SimDevice;
  /** The host end of its UART: what a USB-serial adapter's port would carry. */
  readonly port: BytePort;
}

export interface MemoryFleet {
  readonly devices: readonly MemoryDevice[];
  /** The device's entry; undefined for a device not in this fleet. */
  get(deviceId: string): MemoryDevice | undefined;
  /** Disconnects every link, stops the devices' timers and writes each state file (`save`). */
  close(): void;
}

/** Powers on every device of `devices` (state files as `esp-ota sim fleet create` wrote them). */
export function serveFleetInMemory(
  devices: readonly FleetDevice[],
  o: MemoryFleetOptions = {},
): MemoryFleet {
  const rx = (o.rx ?? "iram") === "iram" ? RX_CONFIGS.iram : RX_CONFIGS.noIram;
  const served = devices.map((d) => {
    const device = loadFleetDevice(d);
    const timers = new OrderedTimers();
    const link = new VirtualLink(new RealTimeScheduler(timers), {
      baud: o.consoleBaud ?? 115200,
      latencyMs: MEMORY_ADAPTER_LATENCY_MS,
      deliveryChunk: MEMORY_DELIVERY_CHUNK,
    });
    const ep = new SimEndpoint(device, link.device, timers, { rx });
    ep.powerOn();
    return { deviceId: d.deviceId, device, port: link.host, link, timers, stateFile: d.stateFile };
  });
  const byId = new Map(served.map((s) => [s.deviceId, s]));
  let closed = false;
  return {
    devices: served,
    get: (id) => byId.get(id),
    close() {
      if (closed) return;
      closed = true;
      for (const s of served) {
        s.link.disconnect();
        s.timers.close();
        if (o.save ?? true) saveFleetDevice(s.stateFile, s.device);
      }
    },
  };
}
