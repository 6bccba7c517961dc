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
import {
  type AgentConfig,
  AgentConfigError,
  formatProblem,
  loadAgentConfig,
  stateDirProblems,
} from "./config.js";
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

/** Keys whose values are secrets wherever they appear (never a file name or a variable name). */
const SECRET_KEY = /^(password|secret|token|passphrase)$/i;

/**
 * A URL's password as `(redacted)`: `mqtt://user:pw@host` is accepted (with a warning) and
 * download.allowedUrls entries may carry credentials too. Text that is not a URL is unchanged.
 */
export function redactUrl(text: string): string {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*@/.test(text)) return text;
  try {
    const u = new URL(text);
    if (u.password === "") return text;
    u.password = "(redacted)";
    return u.toString();
  } catch {
    // Unparseable but shaped like userinfo: drop everything before the @.
    return text.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/, "$1(redacted)@");
  }
}

/**
 * The resolved configuration as check-config --print shows it: no secret appears, neither a
 * password field (shown as "(set)") nor a password inside a URL.
 */
export function redactedConfig(c: AgentConfig): object {
  const walk = (v: unknown, key: string): unknown => {
    if (typeof v === "string") return SECRET_KEY.test(key) ? "(set)" : redactUrl(v);
    if (Array.isArray(v)) return v.map((x) => walk(x, ""));
    if (typeof v === "object" && v !== null)
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
    return v;
  };
  return walk(c, "") as object;
}

/**
 * The example with some values set, so an install can be scripted without editing the file
 * (docs/operations.md). Each is one known line of gateway.example.yaml; values are written as
 * JSON strings, which YAML reads back unchanged whatever they contain.
 */
export function customiseExample(
  text: string,
  v: { stateDir?: string; trustPolicy?: string; broker?: string },
): string {
  const set = (t: string, line: RegExp, key: string, value: string | undefined) => {
    if (value === undefined) return t;
    const n = t.match(new RegExp(line.source, "gm"))?.length ?? 0;
    // The example is ours: a line gone missing is a bug here, not an operator's mistake.
    if (n !== 1) throw new Error(`customiseExample: ${n} lines match ${line} in the example`);
    return t.replace(
      new RegExp(line.source, "m"),
      (m) => `${m.slice(0, m.indexOf(key))}${key}: ${JSON.stringify(value)}`,
    );
  };
  let t = set(text, /^stateDir: .*$/, "stateDir", v.stateDir);
  t = set(t, /^ {2}policy: .*$/, "policy", v.trustPolicy);
  t = set(t, /^ {2}url: .*$/, "url", v.broker);
  return t;
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
        // Run by hand, outside the service: a systemd credential cannot be read here.
        loaded = loadAgentConfig(o.config, { cwd: ctx.cwd, missingCredentials: "warn" });
      } catch (e) {
        // Warnings first, so the whole picture is on screen; runCli then prints the errors.
        if (e instanceof AgentConfigError) {
          for (const w of e.problems.filter((p) => p.severity === "warning"))
            ctx.note(formatProblem(o.config, w));
        }
        throw e;
      }
      for (const w of loaded.warnings) ctx.note(formatProblem(o.config, w));
      // The agent dies at its first write to a directory it cannot write: say so now.
      const dirs = stateDirProblems(loaded.config);
      if (dirs.length > 0) throw new AgentConfigError(o.config, [...loaded.warnings, ...dirs]);
      if (process.getuid?.() === 0)
        ctx.note(
          `${o.config}: note: checked as root, who can write anywhere; run check-config as the agent's user (sudo -u esp-ota …) to check that it can write ${loaded.config.stateDir} and ${loaded.config.stagingDir}`,
        );
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
    .option("--state-dir <dir>", "set stateDir (default in the file: ./state beside it)")
    .option("--trust-policy <file>", "set trust.policy (default in the file: trust.json beside it)")
    .option("--broker <url>", "set mqtt.url (default in the file: mqtt://127.0.0.1:1883)")
    .action((o: { out?: string; stateDir?: string; trustPolicy?: string; broker?: string }) => {
      const text = customiseExample(exampleConfigText(), {
        ...(o.stateDir !== undefined ? { stateDir: resolve(ctx.cwd, o.stateDir) } : {}),
        ...(o.trustPolicy !== undefined ? { trustPolicy: resolve(ctx.cwd, o.trustPolicy) } : {}),
        ...(o.broker !== undefined ? { broker: o.broker } : {}),
      });
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
        `wrote ${o.out}: ${o.trustPolicy === undefined ? "set trust.policy and review serial.ports" : "review serial.ports"}, then run \`esp-ota agent check-config --config ${o.out}\` as the agent's user`,
      );
    });
}
