/**
 * A simulated fleet on in-memory UART links, in real time: the same devices and protocol as
 * serveFleet's pseudo-terminals, without socat or serial ports. Each device is the C firmware (a FirmwareEndpoint)
 * behind a PacedLink (src/sim/paced-link.ts: baud/10 bytes per second, 1 ms slices, the
 * adapter's latency; the same class serveFleet puts on a pty) on one end of a memoryPair; the
 * other end is a BytePort a gateway agent opens with DeviceLink.over. Used by
 * `esp-ota demo` where socat is missing and by `npm run bench:fleet` (1,000 devices in one
 * process, where ptys would need 1,000 socat processes).
 *
 * Not modelled here, unlike serveFleet: unplugging, power cuts and UART faults (the chaos tools
 * work on ptys).
 */
import type { BytePort } from "../uart/port.js";
import type { SimDevice } from "./device.js";
import { FirmwareEndpoint } from "./firmware-device.js";
import { type FleetDevice, loadFleetDevice, saveFleetDevice } from "./fleet.js";
import { OrderedTimers } from "./ordered-timers.js";
import { memoryPair, PacedLink } from "./paced-link.js";
import { RX_CONFIGS } from "./rx-model.js";

/**
 * The adapter's turnaround, each way (ms): an FTDI's latency timer at its minimum, 1 ms (the
 * default 16 ms is for tty use), or a CP210x's USB full-speed frame.
 */
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
    // The same paced wire as a pty gets in serveFleet, on a cable with no wire of its own.
    const cable = memoryPair(o.consoleBaud ?? 115200);
    const wire = new PacedLink(cable.device, timers, { latencyMs: MEMORY_ADAPTER_LATENCY_MS });
    const ep = new FirmwareEndpoint(device, wire, timers, { rx });
    ep.powerOn();
    return { deviceId: d.deviceId, device, port: cable.host, wire, timers, stateFile: d.stateFile };
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
        s.wire.close();
        s.timers.close();
        if (o.save ?? true) saveFleetDevice(s.stateFile, s.device);
      }
    },
  };
}
