/** Every command the programs in agent/ and broker/ add to the library's CLI. */
import { registerBroker } from "../broker/command.js";
import type { CommandPlugin } from "../src/cli/program.js";
import { registerAgent } from "./command.js";
import { registerDemo } from "./demo.js";

export const ESP_OTA_PLUGINS: readonly CommandPlugin[] = [
  registerAgent,
  registerBroker,
  registerDemo,
];
