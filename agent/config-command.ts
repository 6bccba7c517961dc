/**
 * `esp-ota agent check-config` and `esp-ota agent init-config` (docs/configuration.md): validate
 * a gateway configuration before deploying it, and write the commented example to start from.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import type { CliContext } from "../src/cli/context.js";
import { EspOtaError } from "../src/errors.js";
import { gatewayIdentity } from "../src/mqtt/status-auth.js";
import { type AgentConfig, AgentConfigError, formatProblem, loadAgentConfig } from "./config.js";
import { loadOrCreateGatewayKey } from "./gateway-key.js";

/**
 * agent/gateway.example.yaml. tsc does not copy it into dist/, so from dist/agent/*.js it is
 * found in the package's agent/ directory (package.json "files" must list it).
 */
export function exampleConfigText(): string {
  const candidates = [
    new URL("./gateway.example.yaml", import.meta.url),
    new URL("../../agent/gateway.example.yaml", import.meta.url),
  ];
  for (const u of candidates) {
    const p = fileURLToPath(u);
    if (existsSync(p)) return readFileSync(p, "utf8");
  }
  throw new EspOtaError(
    "E_FILE_READ",
    `the example configuration is missing from this installation (looked for ${candidates.map((u) => fileURLToPath(u)).join(", ")})`,
    {},
  );
}

/** The resolved configuration as check-config --print shows it: the password never appears. */
export function redactedConfig(c: AgentConfig): object {
  return {
    ...c,
    mqtt: { ...c.mqtt, ...(c.mqtt.password !== undefined ? { password: "(set)" } : {}) },
  };
}

export function registerAgentConfigCommands(agentCmd: Command, ctx: CliContext): void {
  agentCmd
    .command("check-config")
    .description(
      "Check a gateway configuration: YAML syntax, every key's type and range, and the files it names (trust policy, TLS, password file). Lists every problem as FILE:LINE:COLUMN.",
    )
    .requiredOption("--config <file>", "the gateway configuration (YAML)")
    .option(
      "--print",
      "also print the resolved configuration as JSON (defaults filled in, paths absolute, password redacted)",
    )
    .action((o: { config: string; print?: boolean }) => {
      let loaded: ReturnType<typeof loadAgentConfig>;
      try {
        loaded = loadAgentConfig(o.config, { cwd: ctx.cwd });
      } catch (e) {
        // Warnings first, so the whole picture is on screen; runCli then prints the errors.
        if (e instanceof AgentConfigError) {
          for (const w of e.problems.filter((p) => p.severity === "warning"))
            ctx.note(formatProblem(o.config, w));
        }
        throw e;
      }
      for (const w of loaded.warnings) ctx.note(formatProblem(o.config, w));
      const n = loaded.warnings.length;
      ctx.print(`ok ${o.config}${n > 0 ? ` (${n} warning${n === 1 ? "" : "s"})` : ""}`);
      if (o.print) ctx.print(JSON.stringify(redactedConfig(loaded.config), null, 2));
    });

  agentCmd
    .command("key")
    .description(
      "Print this gateway's public identity for signed statuses (one JSON line: gatewayId, alg, keyId, publicKey), creating its key in stateDir when there is none. Add it on the operator's machine with `esp-ota gateways add FILE --identity '<line>'`.",
    )
    .requiredOption("--config <file>", "the gateway configuration (YAML)")
    .action((o: { config: string }) => {
      const { config } = loadAgentConfig(o.config, { cwd: ctx.cwd });
      const { key, created, path } = loadOrCreateGatewayKey(config.stateDir);
      if (created) ctx.note(`created the gateway's status-signing key ${path}`);
      ctx.print(JSON.stringify(gatewayIdentity(config.gatewayId, key)));
    });

  agentCmd
    .command("init-config")
    .description(
      "Write a complete, commented gateway configuration to start from (every key, its default and why).",
    )
    .option("--out <file>", "write it here (never overwrites); without it, print it")
    .action((o: { out?: string }) => {
      const text = exampleConfigText();
      if (o.out === undefined) {
        ctx.stdout.write(text);
        return;
      }
      const path = resolve(ctx.cwd, o.out);
      try {
        mkdirSync(dirname(path), { recursive: true });
        // "wx": never overwrite (no check-then-write race). 0600 because operators add broker
        // credentials to this file despite the advice to use passwordFile.
        writeFileSync(path, text, { flag: "wx", mode: 0o600 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") {
          throw new EspOtaError("E_CONFIG_EXISTS", `${o.out} already exists; not overwriting it`, {
            file: o.out,
          });
        }
        throw new EspOtaError(
          "E_FILE_WRITE",
          `cannot write ${o.out}: ${(e as Error).message}`,
          { path: o.out },
          e,
        );
      }
      ctx.note(
        `wrote ${o.out}: set trust.policy and serial.ports, then run \`esp-ota agent check-config --config ${o.out}\``,
      );
    });
}
