/**
 * `esp-ota console`: the operator console in a browser (docs/console.md). A thin shell: parse the
 * options, connect to the broker with the console's own credentials (the broker options of
 * `status` and `rollout`), load who may log in, start the server (src/console/server.ts), print
 * its URL, and run until SIGINT/SIGTERM; then the rollouts it runs are saved without an owner
 * (`rollout resume ID` continues them anywhere).
 */
import { resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { startConsoleServer } from "../../console/server.js";
import {
  type Authenticator,
  parseConsoleUsers,
  tokenAuthenticator,
  usersAuthenticator,
} from "../../console/users.js";
import { EspOtaError } from "../../errors.js";
import { topics as makeTopics } from "../../mqtt/topics.js";
import {
  addBrokerOptions,
  type BrokerCliOptions,
  connectFromCli,
  gatewaysFromCli,
} from "../broker-options.js";
import type { CliContext } from "../context.js";
import { deriveBaseUrl, readIndex } from "./rollout.js";

export const CONSOLE_SUMMARY =
  "Serve the operator console, a live web page of rollouts, devices and gateways with pause/resume/abort/retry/next-wave and starting rollouts, plus /metrics, /healthz and /readyz (docs/console.md).";

interface ConsoleCliOptions extends BrokerCliOptions {
  listen: { host: string; port: number };
  users?: string;
  tokenEnv?: string;
}

/** host:port; IPv6 in brackets. Port 0 picks a free one (tests). */
function listenArg(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port >= 0 && port <= 65535))
    throw new InvalidArgumentError(`"${value}" is not host:port (127.0.0.1:8080, [::1]:8080)`);
  return { host: (m[1] ?? m[2])!, port };
}

export function registerConsole(parent: Command, ctx: CliContext): void {
  addBrokerOptions(
    parent
      .command("console")
      .description(CONSOLE_SUMMARY)
      .addOption(
        new Option(
          "--listen <host:port>",
          "where to serve (a loopback address unless a TLS reverse proxy fronts it: the console speaks plain HTTP)",
        )
          .argParser(listenArg)
          .default({ host: "127.0.0.1", port: 8080 }, "127.0.0.1:8080"),
      )
      .option(
        "--users <file>",
        "who may log in: username:scrypt-hash:role per line, role operator or viewer (hashes from `esp-ota broker passwd`)",
      )
      .option(
        "--token-env <name>",
        "instead of --users: an environment variable holding a token (16+ characters) that logs in as an operator, also as `Authorization: Bearer`",
      ),
  ).action(async (o: ConsoleCliOptions) => {
    if ((o.users === undefined) === (o.tokenEnv === undefined))
      throw new EspOtaError(
        "E_USAGE",
        "give exactly one of --users FILE and --token-env NAME: the console has no anonymous access",
      );
    let authenticate: Authenticator;
    if (o.users !== undefined) {
      const p = parseConsoleUsers(ctx.readText(o.users));
      if (!p.ok)
        throw new EspOtaError("E_CONSOLE_USERS_FILE", `${o.users}: ${p.reason}`, {
          path: o.users,
        });
      authenticate = usersAuthenticator(p.users);
    } else {
      const token = process.env[o.tokenEnv!];
      if (token === undefined || token.length < 16)
        throw new EspOtaError(
          "E_USAGE",
          `--token-env: environment variable ${o.tokenEnv} is ${token === undefined ? "not set" : "shorter than 16 characters"}`,
        );
      authenticate = tokenAuthenticator(token);
    }
    const gateways = gatewaysFromCli(ctx, o);
    const client = await connectFromCli(ctx, o, "console");
    const server = await startConsoleServer({
      client,
      topics: makeTopics(o.prefix),
      ...(gateways ? { gateways } : {}),
      authenticate,
      bearer: o.tokenEnv !== undefined,
      host: o.listen.host,
      port: o.listen.port,
      readRelease: (dir) => {
        const d = resolve(ctx.cwd, dir);
        const index = readIndex(ctx, d);
        return { dir: d, index, baseUrl: deriveBaseUrl(ctx, d, index).replace(/\/+$/, "") };
      },
      onLog: (line) => ctx.note(line),
    });
    if (!gateways)
      ctx.note(
        "note: device statuses are not authenticated (no --gateways FILE): anyone who may publish on the broker can show false states here and advance or abort the rollouts this console runs",
      );
    ctx.print(server.url);
    await new Promise<void>((done) => {
      process.once("SIGINT", done);
      process.once("SIGTERM", done);
    });
    ctx.note("console: stopping (rollouts run here are saved without an owner)");
    await server.close();
    await client.endAsync().catch(() => undefined);
  });
}
