/**
 * `esp-ota broker`: run the embedded MQTT broker until SIGINT/SIGTERM (docs/broker.md), and
 * `esp-ota broker passwd` to add or replace a user in its users file.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Readable } from "node:stream";
import { type Command, InvalidArgumentError } from "commander";
import { hashPassword, isUsername, parseUsersFile, setUser } from "../src/auth/users-file.js";
import { durationArg, parseIntArg } from "../src/cli/args.js";
import type { CliContext } from "../src/cli/context.js";
import { TIMER_MAX_MS } from "../src/duration.js";
import { EspOtaError } from "../src/errors.js";
import { isLoopback, type ListenAddress, parseListen } from "../src/metrics/http.js";
import type { BrokerOptions } from "./broker.js";

interface BrokerCliOptions {
  port: number;
  host: string;
  data?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  users?: string;
  allowAnonymous?: boolean;
  maxPacketBytes?: number;
  duration?: number;
  metricsListen?: ListenAddress;
}

/** `--metrics-listen host:port` (src/metrics/http.ts parseListen); a usage error otherwise. */
function listenArg(value: string): ListenAddress {
  try {
    return parseListen(value);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

export function registerBroker(program: Command, ctx: CliContext): void {
  const broker = program
    .command("broker")
    .description(
      "Run the embedded MQTT broker (aedes; MQTT 3.1.1) until SIGINT/SIGTERM, for a site without one. Prints its URL on stdout, then a line per client on stderr.",
    )
    .option("--port <n>", "TCP port; 0 picks a free one (printed)", parseIntArg, 1883)
    .option(
      "--host <addr>",
      "address to listen on: loopback, so nothing is exposed by accident (0.0.0.0 to serve a site)",
      "127.0.0.1",
    )
    .option(
      "--data <dir>",
      "keep retained messages, persistent sessions and their queued QoS 1 messages in DIR so they survive a restart (default: in memory; gateways that were offline then miss queued notices)",
    )
    .option("--tls-cert <file>", "serve mqtts with this PEM certificate (chain); needs --tls-key")
    .option("--tls-key <file>", "PEM private key of --tls-cert")
    .option(
      "--tls-ca <file>",
      "PEM CA that client certificates must chain to; giving it requires every client to present one (mutual TLS)",
    )
    .option(
      "--users <file>",
      "require a username and password listed in FILE (made with `esp-ota broker passwd`); default: no authentication",
    )
    .option("--allow-anonymous", "with --users: also admit clients that send no username")
    .option(
      "--max-packet-bytes <n>",
      "disconnect a client that sends an MQTT packet larger than this, before it is buffered (default 524288: twice the largest message of the MQTT API)",
      parseIntArg,
    )
    .option(
      "--metrics-listen <host:port>",
      "serve /metrics, /healthz and /readyz (Prometheus) on this address, e.g. 127.0.0.1:9478; port 0 picks a free one (default: not served; docs/metrics.md)",
      listenArg,
    )
    .option(
      "--duration <time>",
      "stop after this long, e.g. 30s (default: until SIGINT/SIGTERM)",
      durationArg(TIMER_MAX_MS),
    )
    .action(async (o: BrokerCliOptions) => {
      const options = brokerOptions(o, ctx);
      // aedes and LevelDB load when a broker starts, not for `broker passwd` or `--help`
      // (src/cli/program.ts, docs/benchmarks.md "CLI start-up").
      const { startBroker } = await import("./broker.js");
      const running = await startBroker({ ...options, onLog: (line) => ctx.note(line) });
      ctx.print(running.url);
      if (running.metricsUrl) ctx.note(`broker: metrics on ${running.metricsUrl}/metrics`);
      ctx.note(
        `broker: listening on ${running.url}${o.data ? ` (data in ${o.data})` : " (in memory)"}${options.users ? `, ${Object.keys(options.users).length} user(s)` : ", no authentication"}`,
      );
      await new Promise<void>((done) => {
        const stop = () => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          clearTimeout(timer);
          done();
        };
        process.on("SIGINT", stop);
        process.on("SIGTERM", stop);
        const timer = o.duration !== undefined ? setTimeout(stop, o.duration) : undefined;
      });
      await running.close();
      ctx.note("broker: stopped");
    });

  broker
    .command("passwd")
    .description(
      "Add USER to the broker's users file, or replace their password. The password is read from stdin (prompted without echo on a terminal) and never printed; the file keeps only a salted scrypt hash.",
    )
    .argument("<user>", "username (no ':' or control characters)")
    .requiredOption("--users <file>", "users file to create or update (mode 0600)")
    .option(
      "--password-stdin",
      "read the password from stdin even when it is a terminal (first line)",
    )
    .option("--password-file <file>", "read the password from the first line of FILE instead")
    .action(
      async (
        user: string,
        o: { users: string; passwordStdin?: boolean; passwordFile?: string },
      ) => {
        if (!isUsername(user))
          throw new EspOtaError(
            "E_USAGE",
            `invalid username ${JSON.stringify(user)}: no ':' or control characters, 1..256 chars`,
          );
        if (o.passwordStdin && o.passwordFile)
          throw new EspOtaError(
            "E_USAGE",
            "give at most one of --password-stdin and --password-file",
          );
        const path = resolve(ctx.cwd, o.users);
        const existing = existsSync(path) ? ctx.readText(o.users) : "";
        const parsed = parseUsersFile(existing);
        if (!parsed.ok)
          throw new EspOtaError("E_BROKER_USERS", `${o.users}: ${parsed.reason}`, {
            path: o.users,
          });
        const password =
          o.passwordFile !== undefined
            ? firstLine(ctx.readText(o.passwordFile))
            : await readPassword(process.stdin, ctx, !o.passwordStdin);
        if (password === "") throw new EspOtaError("E_USAGE", "empty password");
        const text = setUser(existing, user, await hashPassword(password));
        ctx.writeFile(o.users, text, 0o600);
        ctx.note(
          `${user in parsed.value ? "replaced the password of" : "added"} user ${user} in ${o.users}`,
        );
      },
    );
}

/** The CLI options as BrokerOptions: files read, users file parsed (coded errors name the file). */
function brokerOptions(o: BrokerCliOptions, ctx: CliContext): BrokerOptions {
  const out: BrokerOptions = { port: o.port, host: o.host };
  if (o.metricsListen !== undefined) {
    out.metrics = o.metricsListen;
    if (!isLoopback(o.metricsListen.host))
      ctx.note(
        `warning: --metrics-listen ${o.metricsListen.host} is not loopback: /metrics is served without authentication to whoever reaches it`,
      );
  }
  if (o.maxPacketBytes !== undefined) {
    if (!(o.maxPacketBytes >= 64))
      throw new EspOtaError("E_USAGE", "--max-packet-bytes must be at least 64");
    out.maxPacketBytes = o.maxPacketBytes;
  }
  if (o.data !== undefined) out.dataDir = resolve(ctx.cwd, o.data);
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined))
    throw new EspOtaError("E_USAGE", "--tls-cert and --tls-key go together");
  if (o.tlsCa !== undefined && o.tlsCert === undefined)
    throw new EspOtaError("E_USAGE", "--tls-ca needs --tls-cert and --tls-key");
  if (o.tlsCert !== undefined && o.tlsKey !== undefined) {
    const read = (flag: string, path: string) => {
      try {
        return ctx.readFile(path);
      } catch (e) {
        throw new EspOtaError(
          "E_BROKER_TLS",
          `${flag} ${path}: ${(e as Error).message}`,
          { path },
          e,
        );
      }
    };
    out.tls = {
      cert: read("--tls-cert", o.tlsCert),
      key: read("--tls-key", o.tlsKey),
      ...(o.tlsCa === undefined ? {} : { ca: read("--tls-ca", o.tlsCa), requestClientCert: true }),
    };
  }
  if (o.users !== undefined) {
    let text: string;
    try {
      text = ctx.readText(o.users);
    } catch (e) {
      throw new EspOtaError("E_BROKER_USERS", (e as Error).message, { path: o.users }, e);
    }
    const parsed = parseUsersFile(text);
    if (!parsed.ok)
      throw new EspOtaError("E_BROKER_USERS", `${o.users}: ${parsed.reason}`, { path: o.users });
    if (Object.keys(parsed.value).length === 0 && !o.allowAnonymous)
      ctx.note(
        `warning: ${o.users} lists no users and --allow-anonymous is off: every client will be refused`,
      );
    out.users = parsed.value;
    out.allowAnonymous = o.allowAnonymous ?? false;
  } else if (o.allowAnonymous) {
    ctx.note("note: --allow-anonymous has no effect without --users (everyone is admitted)");
  }
  return out;
}

function firstLine(text: string): string {
  return text.split(/\r?\n/, 1)[0] ?? "";
}

/**
 * The password from stdin: on a terminal (unless `pipeMode`), a prompt on stderr and one line
 * read with echo off; otherwise the first line of whatever is piped in.
 */
async function readPassword(
  stdin: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown },
  ctx: CliContext,
  promptOnTty: boolean,
): Promise<string> {
  if (promptOnTty && stdin.isTTY && stdin.setRawMode) {
    const setRaw = stdin.setRawMode.bind(stdin);
    ctx.stderr.write("Password: ");
    setRaw(true);
    try {
      return await new Promise<string>((done, fail) => {
        let line = "";
        const onData = (chunk: Buffer) => {
          for (const ch of chunk.toString("utf8")) {
            if (ch === "\r" || ch === "\n" || ch === "\u0004") {
              stdin.off("data", onData);
              stdin.pause();
              ctx.stderr.write("\n");
              done(line);
              return;
            }
            if (ch === "\u0003") {
              stdin.off("data", onData);
              stdin.pause();
              ctx.stderr.write("\n");
              fail(new EspOtaError("E_USAGE", "cancelled"));
              return;
            }
            if (ch === "\u007f" || ch === "\b") line = line.slice(0, -1);
            else line += ch;
          }
        };
        stdin.on("data", onData);
        stdin.resume();
      });
    } finally {
      setRaw(false);
    }
  }
  const chunks: Buffer[] = [];
  for await (const c of stdin) chunks.push(Buffer.from(c as Buffer));
  return firstLine(Buffer.concat(chunks).toString("utf8"));
}
