/**
 * The broker options every MQTT-speaking command shares (`status`, `rollout ...`) and the one
 * way they connect: the same defaults as the gateway (the embedded broker on this machine, MQTT 5
 * falling back to 3.1.1), the password from a file or an environment variable so it never sits
 * in shell history, and a client certificate for brokers that require mutual TLS (AWS IoT Core
 * accepts only that; docs/mqtt-api.md). The same choices as the agent's mqtt section
 * (agent/config.ts): passwordFile, passwordEnv, tls.ca/cert/key.
 */
import { hostname } from "node:os";
import { type Command, InvalidArgumentError, Option } from "commander";
import { EspOtaError } from "../errors.js";
import { connectMqtt, type MqttClient, type MqttConnectOptions } from "../mqtt/client.js";
import { type GatewayTrust, gatewayTrust, parseGatewaysFile } from "../mqtt/status-auth.js";
import { checkPrefix, DEFAULT_PREFIX } from "../mqtt/topics.js";
import { choice } from "./args.js";
import type { CliContext } from "./context.js";

export interface BrokerCliOptions {
  broker: string;
  prefix: string;
  username?: string;
  passwordFile?: string;
  passwordEnv?: string;
  ca?: string;
  cert?: string;
  key?: string;
  mqttVersion?: "4" | "5";
  gateways?: string;
}

export function addBrokerOptions(cmd: Command): Command {
  return cmd
    .option(
      "--broker <url>",
      "MQTT broker (mqtt://, mqtts://, ws://, wss://); as for the gateway, the embedded broker on this machine unless given",
      "mqtt://127.0.0.1:1883",
    )
    .option(
      "--prefix <p>",
      "topic prefix shared by the gateways and tools of one deployment",
      (v: string) => {
        try {
          return checkPrefix(v);
        } catch (e) {
          throw new InvalidArgumentError((e as Error).message);
        }
      },
      DEFAULT_PREFIX,
    )
    .option("--username <name>", "broker user name")
    .option("--password-file <file>", "file holding the broker password (trailing newline removed)")
    .option(
      "--password-env <name>",
      "environment variable holding the broker password (instead of --password-file)",
    )
    .option("--ca <file>", "PEM CA bundle the broker's certificate must chain to (mqtts, wss)")
    .option(
      "--cert <file>",
      "PEM client certificate, for brokers that require mutual TLS (with --key; mqtts, wss)",
    )
    .option("--key <file>", "PEM private key of --cert")
    .option(
      "--gateways <file>",
      "gateways file (`esp-ota gateways add`): only statuses signed by the gateway they name count; others are ignored with a warning. Default: statuses are not authenticated",
    )
    .addOption(
      new Option(
        "--mqtt-version <v>",
        "force 5 (MQTT 5) or 4 (MQTT 3.1.1); default: 5, falling back to 3.1.1 when the broker refuses 5 (the embedded broker speaks 3.1.1)",
      ).argParser(choice(["4", "5"] as const)),
    );
}

/** Connects with a client id unique per run: two tools with one id would disconnect each other. */
export function connectFromCli(
  ctx: CliContext,
  o: BrokerCliOptions,
  tool: string,
): Promise<MqttClient> {
  return connectMqtt(mqttOptionsFromCli(ctx, o, tool));
}

/**
 * The connect options the broker options stand for: files read (E_FILE_READ names the one that
 * is not), the password from --password-file or --password-env (E_USAGE for both, for a cert
 * without its key, and for an unset or empty variable: each is a mistake on the command line).
 */
export function mqttOptionsFromCli(
  ctx: CliContext,
  o: BrokerCliOptions,
  tool: string,
  env: NodeJS.ProcessEnv = process.env,
): MqttConnectOptions {
  if (o.passwordFile !== undefined && o.passwordEnv !== undefined)
    throw new EspOtaError("E_USAGE", "give only one of --password-file and --password-env");
  if ((o.cert === undefined) !== (o.key === undefined))
    throw new EspOtaError(
      "E_USAGE",
      "--cert and --key go together: the client certificate and its private key",
    );
  let password: string | undefined;
  if (o.passwordFile !== undefined) password = ctx.readText(o.passwordFile).replace(/\r?\n$/, "");
  else if (o.passwordEnv !== undefined) {
    password = env[o.passwordEnv];
    if (password === undefined || password === "")
      throw new EspOtaError(
        "E_USAGE",
        `--password-env: environment variable ${o.passwordEnv} is ${password === undefined ? "not set" : "empty"}`,
      );
  }
  return {
    url: o.broker,
    clientId: `esp-ota-${tool}-${hostname()
      .replace(/[^A-Za-z0-9]/g, "")
      .slice(0, 20)}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
    ...(o.username === undefined ? {} : { username: o.username }),
    ...(password === undefined ? {} : { password }),
    ...(o.ca === undefined ? {} : { ca: ctx.readFile(o.ca) }),
    ...(o.cert === undefined ? {} : { cert: ctx.readFile(o.cert) }),
    ...(o.key === undefined ? {} : { key: ctx.readFile(o.key) }),
    ...(o.mqttVersion === undefined ? {} : { protocolVersion: o.mqttVersion === "4" ? 4 : 5 }),
  };
}

/**
 * The gateways whose signed statuses count (`--gateways FILE`; E_MQTT_GATEWAYS_FILE when it is
 * not valid), or undefined when the option is absent.
 */
export function gatewaysFromCli(ctx: CliContext, o: BrokerCliOptions): GatewayTrust | undefined {
  if (o.gateways === undefined) return undefined;
  return gatewayTrust(parseGatewaysFile(ctx.readText(o.gateways)));
}
