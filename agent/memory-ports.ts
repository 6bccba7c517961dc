/**
 * AgentOptions.ports over in-memory UART links (src/sim/fleet-memory.ts, each device the C
 * firmware behind a FirmwareEndpoint): the agent sees each
 * device at a port path of its own (`memory:<deviceId>`), present from the start, and opens it
 * with DeviceLink.over instead of a serial port.
 */
import type { MemoryFleet } from "../src/sim/fleet-memory.js";
import type { AgentOptions } from "./agent.js";
import { DeviceLink } from "./link.js";

/** The port path under which a device of an in-memory fleet appears. */
export const memoryPortPath = (deviceId: string): string => `memory:${deviceId}`;

/** The ports of `deviceIds` (default: all) of `fleet`, for one agent. */
export function memoryPorts(
  fleet: MemoryFleet,
  deviceIds: readonly string[] = fleet.devices.map((d) => d.deviceId),
): NonNullable<AgentOptions["ports"]> {
  const ports = new Map(deviceIds.map((id) => [memoryPortPath(id), id]));
  return {
    source: (h) => ({
      current: new Set(ports.keys()),
      async start() {
        for (const p of ports.keys()) h.onAdded(p);
      },
      stop() {},
    }),
    open: async (path, o) => {
      const d = fleet.get(ports.get(path) ?? "");
      if (!d) throw new Error(`no simulated device on ${path}`);
      return DeviceLink.over(path, d.port, o);
    },
  };
}
