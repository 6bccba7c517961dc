/**
 * `esp-ota gateways add|list|remove FILE`: the operator's gateways file, the gateways whose
 * signed statuses a rollout or `esp-ota status` trusts with `--gateways FILE` (docs/security.md
 * G1, src/mqtt/status-auth.ts). A gateway's identity is the JSON line `esp-ota agent key` prints
 * on it.
 */
import type { Command } from "commander";
import { EspOtaError } from "../../errors.js";
import {
  encodeGatewaysFile,
  type GatewayIdentity,
  type GatewaysFile,
  identityProblem,
  parseGatewaysFile,
} from "../../mqtt/status-auth.js";
import type { CliContext } from "../context.js";

function readOrEmpty(ctx: CliContext, file: string): GatewaysFile {
  let text: string;
  try {
    text = ctx.readText(file);
  } catch (e) {
    // A file not there yet: `add` creates it.
    if ((e as { cause?: { code?: string } }).cause?.code === "ENOENT")
      return { format: 1, gateways: [] };
    throw e;
  }
  return parseGatewaysFile(text);
}

function parseIdentity(text: string): GatewayIdentity {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new EspOtaError(
      "E_MQTT_GATEWAYS_FILE",
      "--identity is not JSON: pass the line `esp-ota agent key` printed, quoted",
    );
  }
  const problem = identityProblem(v);
  if (problem) throw new EspOtaError("E_MQTT_GATEWAYS_FILE", `--identity: ${problem}`);
  return v as GatewayIdentity;
}

export function registerGateways(parent: Command, ctx: CliContext): void {
  const gw = parent
    .command("gateways")
    .description(
      "The gateways file: gateways whose signed statuses count with --gateways FILE (rollout, status).",
    );

  gw.command("add")
    .description(
      "Add a gateway's identity (the JSON line `esp-ota agent key` prints on it), or replace that gateway's key with --replace. Creates FILE if missing.",
    )
    .argument("<file>", "the gateways file (JSON)")
    .option("--identity <json>", "the identity line")
    .option("--identity-file <path>", "a file holding the identity line")
    .option("--replace", "replace the key of a gateway already in the file (it was re-keyed)")
    .option("--json", "what was done as one JSON object on stdout: {gatewayId, keyId, change}")
    .action(
      (
        file: string,
        o: { identity?: string; identityFile?: string; replace?: boolean; json?: boolean },
      ) => {
        if ((o.identity === undefined) === (o.identityFile === undefined))
          throw new EspOtaError("E_USAGE", "give exactly one of --identity and --identity-file");
        const id = parseIdentity(o.identity ?? ctx.readText(o.identityFile!).trim());
        const f = readOrEmpty(ctx, file);
        const existing = f.gateways.find((g) => g.gatewayId === id.gatewayId);
        if (existing && existing.keyId !== id.keyId && !o.replace)
          throw new EspOtaError(
            "E_MQTT_GATEWAYS_FILE",
            `gateway ${id.gatewayId} is in ${file} with key ${existing.keyId}; pass --replace to trust ${id.keyId} instead`,
            { gatewayId: id.gatewayId },
          );
        const gateways = [...f.gateways.filter((g) => g.gatewayId !== id.gatewayId), id];
        ctx.writeFile(file, encodeGatewaysFile({ format: 1, gateways }));
        const change = existing?.keyId === id.keyId ? "unchanged" : existing ? "replaced" : "added";
        if (o.json)
          ctx.print(JSON.stringify({ file, gatewayId: id.gatewayId, keyId: id.keyId, change }));
        ctx.note(
          change === "unchanged"
            ? `${id.gatewayId} is already in ${file} with key ${id.keyId}`
            : `${change} ${id.gatewayId} (key ${id.keyId}) in ${file}`,
        );
      },
    );

  gw.command("list")
    .description("The gateways in FILE: id, algorithm, key id.")
    .argument("<file>", "the gateways file (JSON)")
    .option("--json", "the file's entries as JSON")
    .action((file: string, o: { json?: boolean }) => {
      const f = parseGatewaysFile(ctx.readText(file));
      if (o.json) {
        ctx.print(JSON.stringify(f.gateways, null, 2));
        return;
      }
      for (const g of f.gateways) ctx.print(`${g.gatewayId}  ${g.alg}  ${g.keyId}`);
    });

  gw.command("remove")
    .description("Stop trusting a gateway's statuses.")
    .argument("<file>", "the gateways file (JSON)")
    .argument("<gatewayId>", "the gateway")
    .action((file: string, gatewayId: string) => {
      const f = parseGatewaysFile(ctx.readText(file));
      if (!f.gateways.some((g) => g.gatewayId === gatewayId))
        throw new EspOtaError("E_MQTT_GATEWAYS_FILE", `gateway ${gatewayId} is not in ${file}`, {
          gatewayId,
        });
      const gateways = f.gateways.filter((g) => g.gatewayId !== gatewayId);
      ctx.writeFile(file, encodeGatewaysFile({ format: 1, gateways }));
      ctx.note(`removed ${gatewayId} from ${file}`);
    });
}
