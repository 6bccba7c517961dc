/**
 * The CLI is a thin shell (STYLE.md §2): parse arguments with commander, call the library, map
 * error codes to exit codes. Exit 0 on success, 1 on a coded failure, 2 on a usage error.
 */
import { Command } from "commander";
import { VERSION } from "../version.js";
import { registerChaos } from "./commands/chaos.js";
import { registerDevice } from "./commands/device.js";
import { registerDevices } from "./commands/devices.js";
import { registerGateways } from "./commands/gateways.js";
import { registerImageInfo } from "./commands/image-info.js";
import { registerKeys } from "./commands/keys.js";
import { registerOtadata } from "./commands/otadata.js";
import { registerPartitionTable } from "./commands/partition-table.js";
import { registerReleaseBuild } from "./commands/release-build.js";
import { registerReleaseVerify } from "./commands/release-verify.js";
import { registerRollout } from "./commands/rollout.js";
import { registerSecureFlash } from "./commands/secure-flash.js";
import { registerSecureSign } from "./commands/secure-sign.js";
import { registerServe } from "./commands/serve.js";
import { registerSim } from "./commands/sim.js";
import { registerStatus } from "./commands/status.js";
import type { CliContext, OutputSink } from "./context.js";
import { runProgram, withCliBehaviour } from "./run.js";

export { VERSION };

/**
 * Commands contributed by the programs built on the library (agent/, broker/): src/ never
 * imports them (STYLE.md §2); the `esp-ota` binary (agent/main.ts) passes them in.
 */
export type CommandPlugin = (program: Command, ctx: CliContext) => void;

export function buildProgram(ctx: CliContext, plugins: readonly CommandPlugin[] = []): Command {
  const program = new Command("esp-ota")
    .description(
      "Secure OTA updates for serial-attached ESP32s: format tools, release pipeline, gateway agent.",
    )
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    // espsecure's verbs and `sim make-app` take `--version`. Commander recognises a program option
    // anywhere on the line unless positional options are on, so the root's `--version` would
    // swallow `secure sign-data --version 2`. Root options go before the subcommand.
    .enablePositionalOptions()
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
    });

  const secure = program
    .command("secure")
    .description(
      "Secure boot signing and flash encryption (the verbs and options of espsecure v5).",
    );
  registerSecureSign(secure, ctx);
  registerSecureFlash(secure, ctx);
  registerImageInfo(program, ctx);
  registerPartitionTable(program, ctx);
  registerOtadata(program, ctx);
  registerSim(program, ctx);
  registerDevice(program, ctx);
  registerKeys(program, ctx);
  registerDevices(program, ctx);
  const release = program
    .command("release")
    .description("Build, sign and verify releases: sign once, encrypt per device and slot.");
  registerReleaseBuild(release, ctx);
  registerReleaseVerify(release, ctx);
  registerServe(program, ctx);
  registerChaos(program, ctx);
  registerRollout(program, ctx);
  registerStatus(program, ctx);
  registerGateways(program, ctx);
  for (const plugin of plugins) plugin(program, ctx);

  return withCliBehaviour(program, ctx);
}

/** Runs the CLI in-process and returns the exit code (tests call this directly). */
export function runCli(
  argv: readonly string[],
  stdout: OutputSink = process.stdout,
  stderr: OutputSink = process.stderr,
  cwd: string = process.cwd(),
  plugins: readonly CommandPlugin[] = [],
): Promise<number> {
  return runProgram(argv, (ctx) => buildProgram(ctx, plugins), stdout, stderr, cwd);
}
