#!/usr/bin/env node
/**
 * The `esp-ota` binary: the library's CLI (src/cli) plus the programs built on it, the gateway
 * agent (agent/) and the embedded broker (broker/). src/ never imports them (STYLE.md §2).
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
