#!/usr/bin/env node
/**
 * The `esp-ota` binary: the library's CLI (src/cli) plus the programs built on it, the gateway
 * agent (agent/) and the embedded broker (broker/). src/ never imports them (STYLE.md §2).
 *
 * `esp-ota agent` (the daemon) loads only its own command: the whole CLI pulls in every
 * library (release builds, the simulator, the broker) and costs about 40 MB more resident
 * memory on a gateway that only ever runs the agent (docs/benchmarks.md "Gateway agent").
 */
import { Command } from "commander";
import { runProgram, withCliBehaviour } from "../src/cli/run.js";

const argv = process.argv.slice(2);
if (argv[0] === "agent") {
  const { registerAgent } = await import("./command.js");
  process.exitCode = await runProgram(argv, (ctx) => {
    const program = new Command("esp-ota").enablePositionalOptions();
    registerAgent(program, ctx);
    return withCliBehaviour(program, ctx);
  });
} else {
  const { runCli } = await import("../src/cli/program.js");
  const { ESP_OTA_PLUGINS } = await import("./plugins.js");
  process.exitCode = await runCli(argv, undefined, undefined, undefined, ESP_OTA_PLUGINS);
}
