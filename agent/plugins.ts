/**
 * Every command the programs in agent/ and broker/ add to the library's CLI. Each module is
 * imported only when its command runs (src/cli/program.ts): `esp-ota agent`, the daemon, loads
 * the agent and nothing of the release tools or the simulator.
 */
import type { CommandPlugin } from "../src/cli/program.js";

export const ESP_OTA_PLUGINS: readonly CommandPlugin[] = [
  {
    name: "agent",
    summary:
      "Run the gateway agent: updates every ESP32 on the configured serial ports from MQTT notices (docs/operations.md).",
    register: async (p, ctx) => (await import("./command.js")).registerAgent(p, ctx),
  },
  {
    name: "broker",
    summary:
      "Run the embedded MQTT broker (aedes; MQTT 3.1.1) until SIGINT/SIGTERM, for a site without one. Prints its URL on stdout, then a line per client on stderr.",
    register: async (p, ctx) => (await import("../broker/command.js")).registerBroker(p, ctx),
  },
  {
    name: "demo",
    summary:
      "The whole system on this machine: embedded broker, image server, 3 simulated secure ESP32s (on ptys, or in-memory UART links without socat), the gateway agent, a release and a rollout (one device rolls back). Leaves nothing running.",
    register: async (p, ctx) => (await import("./demo.js")).registerDemo(p, ctx),
  },
];
