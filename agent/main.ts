#!/usr/bin/env node
/**
 * The `esp-ota` binary: the library's CLI (src/cli) plus the programs built on it, the gateway
 * agent (agent/) and the embedded broker (broker/). src/ never imports them (STYLE.md §2).
 *
 * Only the command on the line is loaded (src/cli/program.ts): `esp-ota agent`, the daemon,
 * imports its own command and none of the release tools, the simulator or the broker, which
 * would cost about 40 MB more resident memory on a gateway that only ever runs the agent
 * (docs/benchmarks.md "Gateway agent"), and `esp-ota --version` loads no command at all
 * (docs/benchmarks.md "CLI start-up").
 */
import { runCli } from "../src/cli/program.js";
import { ESP_OTA_PLUGINS } from "./plugins.js";

process.exitCode = await runCli(
  process.argv.slice(2),
  undefined,
  undefined,
  undefined,
  ESP_OTA_PLUGINS,
);
