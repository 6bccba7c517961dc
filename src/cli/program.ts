/**
 * The CLI is a thin shell (STYLE.md §2): parse arguments with commander, call the library, map
 * error codes to exit codes. Exit 0 on success, 1 on a coded failure, 2 on a usage error.
 *
 * Start-up loads only the command that runs (issue 13 item 7): every command module pulls in
 * its part of the library (crypto, the simulator, MQTT, serial ports), and importing them all
 * cost about 0.7 s of CPU for `esp-ota --version`, 9 times `node -e 0`, several seconds on a
 * Raspberry Pi-class gateway. The table below names each top-level command with its one-line
 * summary; the command argv names is imported and registered in full, the others stay
 * placeholders that only list themselves in `esp-ota --help` and feed commander's
 * "did you mean" (docs/benchmarks.md "CLI start-up").
 */
import { Command } from "commander";
import { VERSION } from "../version.js";
import type { CliContext, OutputSink } from "./context.js";
import { runProgram, withCliBehaviour } from "./run.js";

export { VERSION };

/**
 * One top-level command: its name and summary (what `esp-ota --help` lists without loading it)
 * and `register`, which imports the command's module and adds the command in full. The summary
 * must equal the description the module sets (test/cli/startup.test.ts checks every entry).
 */
export interface CommandEntry {
  readonly name: string;
  readonly summary: string;
  readonly register: (program: Command, ctx: CliContext) => Promise<void>;
}

/**
 * Commands contributed by the programs built on the library (agent/, broker/): src/ never
 * imports them (STYLE.md §2); the `esp-ota` binary (agent/main.ts) passes them in. An entry is
 * loaded only when its command runs; a plain function (code already imported, as in tests that
 * add a command of their own) is registered every time.
 */
export type CommandPlugin = CommandEntry | ((program: Command, ctx: CliContext) => void);

const SECURE_SUMMARY =
  "Secure boot signing and flash encryption (the verbs and options of espsecure v5).";
const RELEASE_SUMMARY = "Build, sign and verify releases: sign once, encrypt per device and slot.";

/** The library's commands, in the order `esp-ota --help` lists them. */
export const LIBRARY_COMMANDS: readonly CommandEntry[] = [
  {
    name: "secure",
    summary: SECURE_SUMMARY,
    async register(program, ctx) {
      const [sign, flash] = await Promise.all([
        import("./commands/secure-sign.js"),
        import("./commands/secure-flash.js"),
      ]);
      const secure = program.command("secure").description(SECURE_SUMMARY);
      sign.registerSecureSign(secure, ctx);
      flash.registerSecureFlash(secure, ctx);
    },
  },
  {
    name: "image-info",
    summary:
      "Show an ESP32 app or bootloader image as esptool v5 `image-info` does (header, segments, checksum, SHA-256, app description) and list every problem the bootloader would refuse it for. Exit 0 if valid, 1 if not.",
    register: async (p, ctx) =>
      (await import("./commands/image-info.js")).registerImageInfo(p, ctx),
  },
  {
    name: "partition-table",
    summary:
      "Convert an ESP-IDF partition table between CSV and binary, as gen_esp32part.py does: a CSV input gives the 0xC00-byte binary, a binary input (it starts with AA 50) gives CSV. Every gen_esp32part check runs first.",
    register: async (p, ctx) =>
      (await import("./commands/partition-table.js")).registerPartitionTable(p, ctx),
  },
  {
    name: "otadata",
    summary:
      "Decode an otadata partition image (0x2000 bytes) and show what ESP-IDF's bootloader (v5.0-v6.x) does with it: both copies with ota_seq, state and CRC check, which copy and slot it boots, the order it tries the others in, and the otadata writes and eFuse burns it would make. Give the layout with --partition-table, or with --ota-slots [--factory] [--test].",
    register: async (p, ctx) => (await import("./commands/otadata.js")).registerOtadata(p, ctx),
  },
  {
    name: "sim",
    summary: "Simulated ESP32s: provision, boot, inspect, update, make synthetic apps.",
    register: async (p, ctx) => (await import("./commands/sim.js")).registerSim(p, ctx),
  },
  {
    name: "rom",
    summary: "Talk to the ESP32 ROM serial loader as esptool does: read-mac, write-flash, ...",
    register: async (p, ctx) => (await import("./commands/rom.js")).registerRom(p, ctx),
  },
  {
    name: "provision",
    summary:
      "Plan, script and rehearse the first secure flash of a device: keys, eFuses, signing, per-address encryption, in the order that boots (docs/provisioning.md).",
    register: async (p, ctx) => (await import("./commands/provision.js")).registerProvision(p, ctx),
  },
  {
    name: "device",
    summary: "Talk to an ESP32 over the UART OTA protocol (docs/uart-protocol.md).",
    register: async (p, ctx) => (await import("./commands/device.js")).registerDevice(p, ctx),
  },
  {
    name: "keys",
    summary: "The operator keyring: secure boot signing key and release-manifest keys.",
    register: async (p, ctx) => (await import("./commands/keys.js")).registerKeys(p, ctx),
  },
  {
    name: "devices",
    summary:
      "The device registry: each device's chip, partition table and flash-encryption key (owner-only files).",
    register: async (p, ctx) => (await import("./commands/devices.js")).registerDevices(p, ctx),
  },
  {
    name: "release",
    summary: RELEASE_SUMMARY,
    async register(program, ctx) {
      const [build, verify] = await Promise.all([
        import("./commands/release-build.js"),
        import("./commands/release-verify.js"),
      ]);
      const release = program.command("release").description(RELEASE_SUMMARY);
      build.registerReleaseBuild(release, ctx);
      verify.registerReleaseVerify(release, ctx);
    },
  },
  {
    name: "serve",
    summary: "Serve DIR over HTTP (GET and HEAD; single byte ranges; strong ETags; If-Range).",
    register: async (p, ctx) => (await import("./commands/serve.js")).registerServe(p, ctx),
  },
  {
    name: "chaos",
    summary:
      "A TCP fault proxy with Toxiproxy's toxics (latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data) for testing over flaky networks.",
    register: async (p, ctx) => (await import("./commands/chaos.js")).registerChaos(p, ctx),
  },
  {
    name: "rollout",
    summary:
      "Staged rollouts of a release over MQTT: waves of devices, abort on a failure rate, pause/resume/abort from any machine (docs/rollouts.md).",
    register: async (p, ctx) => (await import("./commands/rollout.js")).registerRollout(p, ctx),
  },
  {
    name: "status",
    summary:
      "Show the fleet as the broker sees it: gateways (presence, attached devices) and devices (update state, release, progress, running app, error).",
    register: async (p, ctx) => (await import("./commands/status.js")).registerStatus(p, ctx),
  },
  {
    name: "gateways",
    summary:
      "The gateways file: gateways whose signed statuses count with --gateways FILE (rollout, status).",
    register: async (p, ctx) => (await import("./commands/gateways.js")).registerGateways(p, ctx),
  },
  {
    name: "console",
    summary:
      "Serve the operator console, a live web page of rollouts, devices and gateways with pause/resume/abort/retry/next-wave and starting rollouts, plus /metrics, /healthz and /readyz (docs/console.md).",
    register: async (p, ctx) => (await import("./commands/console.js")).registerConsole(p, ctx),
  },
];

/**
 * The top-level command argv runs: the first word that is not an option, or for
 * `help COMMAND` the word after it. Root options (-V, -h) take no value, so no word after an
 * option is its value.
 */
export function commandNamed(argv: readonly string[]): string | undefined {
  const words = argv.filter((a) => !a.startsWith("-"));
  return words[0] === "help" ? words[1] : words[0];
}

/**
 * The program for argv: the command it names registered in full, every other one as a
 * placeholder. `load: "all"` registers everything in full (tests that walk every command's
 * help).
 */
export async function buildProgram(
  ctx: CliContext,
  plugins: readonly CommandPlugin[] = [],
  load: readonly string[] | "all" = "all",
): Promise<Command> {
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
    // A placeholder knows its name, not its options or arguments: list every command by name so
    // the listing does not depend on which one happens to be loaded.
    .configureHelp({ subcommandTerm: (cmd) => cmd.name() })
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
    });

  const wanted = load === "all" ? undefined : commandNamed(load);
  for (const entry of [...LIBRARY_COMMANDS, ...plugins]) {
    if (typeof entry === "function") entry(program, ctx);
    else if (load === "all" || entry.name === wanted) await entry.register(program, ctx);
    else program.command(entry.name).description(entry.summary);
  }
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
  return runProgram(argv, (ctx) => buildProgram(ctx, plugins, argv), stdout, stderr, cwd);
}
