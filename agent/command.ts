/**
 * `esp-ota agent --config gateway.yaml`: the gateway daemon (docs/operations.md). Runs until
 * SIGTERM or SIGINT, then stops gracefully: progress is already in the state directory, the
 * ports are closed (a device keeps its transfer progress record), presence goes offline.
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import type { CliContext } from "../src/cli/context.js";
import { Agent } from "./agent.js";
import { loadAgentConfig } from "./config.js";
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
    .option("--duration <ms>", "stop after this long (for scripts and tests)", (v) => Number(v))
    .action(async (o: { config?: string; logLevel?: string; duration?: number }) => {
      if (!o.config) {
        agent.help({ error: true });
        return;
      }
      const { config, warnings } = loadAgentConfig(resolve(ctx.cwd, o.config));
      const log = createLogger((o.logLevel ?? config.log.level) as LogLevel);
      for (const w of warnings) log.warn({ key: w.path }, w.message);
      if (config.download.allowedUrls.length === 0)
        log.warn(
          { key: "download.allowedUrls" },
          "download.allowedUrls is empty: a notice can make this gateway request any http(s) URL; list your image servers' URL prefixes there (docs/security.md, G6)",
        );
      const a = new Agent({ config, log });
      await a.start();
      await new Promise<void>((done) => {
        const stop = () => {
          process.removeListener("SIGINT", stop);
          process.removeListener("SIGTERM", stop);
          clearTimeout(timer);
          done();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        const timer = o.duration !== undefined ? setTimeout(stop, o.duration) : undefined;
      });
      await a.stop();
      log.flush?.();
    });
  registerAgentConfigCommands(agent, ctx);
}
