/**
 * `esp-ota agent --config gateway.yaml`: the gateway daemon (docs/operations.md). Runs until
 * SIGTERM or SIGINT, then stops gracefully: progress is already in the state directory, the
 * ports are closed (a device keeps its transfer progress record), presence goes offline.
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import { durationArg } from "../src/cli/args.js";
import type { CliContext } from "../src/cli/context.js";
import { TIMER_MAX_MS } from "../src/duration.js";
import { loadAgentConfig, prepareStateDirs } from "./config.js";
import { registerAgentConfigCommands } from "./config-command.js";
import { createLogger, type LogLevel } from "./log.js";

export function registerAgent(program: Command, ctx: CliContext): void {
  const agent = program
    .command("agent")
    .description(
      "Run the gateway agent: updates every ESP32 on the configured serial ports from MQTT notices (docs/operations.md).",
    )
    .option("--config <file>", "gateway configuration (YAML; see `esp-ota agent init-config`)")
    .option("--log-level <level>", "override log.level from the config")
    .option(
      "--duration <time>",
      "stop after this long, e.g. 30s (for scripts and tests)",
      durationArg(TIMER_MAX_MS),
    )
    .action(async (o: { config?: string; logLevel?: string; duration?: number }) => {
      if (!o.config) {
        // A usage error (exit 2), not help and exit 0: a service unit with a typo in its
        // ExecStart= line must fail, and say so, instead of sitting "inactive (dead)" as if done.
        return agent.error(
          "error: required option '--config <file>' not specified (the gateway configuration; `esp-ota agent init-config --out FILE` writes one)",
        );
      }
      const { config, warnings } = loadAgentConfig(resolve(ctx.cwd, o.config));
      const log = createLogger((o.logLevel ?? config.log.level) as LogLevel);
      for (const w of warnings) log.warn({ key: w.path }, w.message);
      if (config.download.allowedUrls.length === 0)
        log.warn(
          { key: "download.allowedUrls" },
          "download.allowedUrls is empty: a notice can make this gateway request any http(s) URL; list your image servers' URL prefixes there (docs/security.md, G6)",
        );
      // Before anything is written: a directory the agent cannot write is one coded error
      // naming it (E_AGENT_STATE), not EACCES from the first download.
      prepareStateDirs(config);
      // Loaded here, not at the top: `esp-ota agent --help` and `check-config` need none of it.
      const { Agent } = await import("./agent.js");
      const a = new Agent({ config, log });
      // The handlers go in before start(): a SIGTERM while it connects (systemd stopping a
      // service that just started, or a test stopping it as soon as it reports online) would
      // otherwise kill the process with no graceful stop. It waits for start() to finish.
      let timer: NodeJS.Timeout | undefined;
      let done = () => {};
      const stopped = new Promise<void>((d) => {
        done = d;
      });
      const stop = () => {
        process.removeListener("SIGINT", stop);
        process.removeListener("SIGTERM", stop);
        clearTimeout(timer);
        done();
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      if (o.duration !== undefined) timer = setTimeout(stop, o.duration);
      try {
        await a.start();
      } catch (e) {
        stop();
        throw e;
      }
      await stopped;
      await a.stop();
      log.flush?.();
    });
  registerAgentConfigCommands(agent, ctx);
}
