/**
 * `esp-ota sim fleet create|list|serve`: simulated fleets from the command line (src/sim/fleet.ts,
 * src/sim/fleet-serve.ts; docs/simulator.md "Fleets"). `create` makes the keyring, the registry
 * and N secure devices that `release build` output boots on; `serve` puts them all on ptys.
 */
import { type Command, Option } from "commander";
import { EspOtaError } from "../../errors.js";
import { SECURE_BOOT_CHOICES, type SecureBootChoice } from "../../release/keyring-fs.js";
import { deviceIdFromMac } from "../../release/registry.js";
import { APP_BEHAVIOURS, type AppBehaviour } from "../../sim/device.js";
import type { SimChip } from "../../sim/efuse.js";
import {
  createFleet,
  type FleetDeviceSpec,
  fleetMac,
  loadFleet,
  loadFleetDevice,
} from "../../sim/fleet.js";
import { serveFleet } from "../../sim/fleet-serve.js";
import { parseFaults } from "../../uart/fault-port.js";
import { choice, parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

const collect = (v: string, acc: string[]) => [...acc, v];

/** Devices `--count` may ask for: the MAC sequence (fleetMac) has 16 bits. */
const MAX_COUNT = 0x10000;

export function registerSimFleet(sim: Command, ctx: CliContext): void {
  const fleet = sim
    .command("fleet")
    .description(
      "Simulated fleets: N secure devices matching an operator keyring and device registry, served on ptys.",
    );

  fleet
    .command("create")
    .description(
      "Create DIR/keys (keyring), DIR/registry, DIR/trust.json and N devices (secure boot, flash encryption in release mode, anti-rollback) running the initial app from ota_0.",
    )
    .requiredOption("--dir <dir>", "new (or empty) directory for the fleet")
    .requiredOption("--count <n>", "number of devices", parseIntArg)
    .option(
      "--chip <chip>",
      "esp32, esp32s3, or mixed (even indexes esp32, odd esp32s3)",
      choice(["esp32", "esp32s3", "mixed"] as const),
      "esp32",
    )
    .option("--app-version <v>", "version of the initial app", "1.0.0")
    .option("--app-size <bytes>", "size of the synthetic app (K/M suffixes)", parseIntArg, 0x10000)
    .option(
      "--secure-boot <scheme>",
      `${SECURE_BOOT_CHOICES.join(", ")} (default: v1 for an all-ESP32 fleet, else v2-rsa3072)`,
      choice(SECURE_BOOT_CHOICES),
    )
    .option("--secure-version <n>", "eFuse and initial app secure_version", parseIntArg, 1)
    .option(
      "--behaviour <device=version:profile>",
      `how a device (index or id) behaves running a version: ${APP_BEHAVIOURS.join(", ")}; repeatable`,
      collect,
      [] as string[],
    )
    .action((o) => {
      if (!Number.isInteger(o.count) || o.count < 1 || o.count > MAX_COUNT)
        throw new EspOtaError("E_USAGE", `--count ${o.count}: expected 1..${MAX_COUNT}`);
      const specs: FleetDeviceSpec[] = Array.from({ length: o.count }, (_, i) => ({
        chip: (o.chip === "mixed" ? (i % 2 === 0 ? "esp32" : "esp32s3") : o.chip) as SimChip,
      }));
      for (const item of o.behaviour as string[]) {
        const b = parseBehaviour(item, o.count);
        const spec = specs[b.index]!;
        spec.behaviours = { ...spec.behaviours, [b.version]: b.behaviour };
      }
      const f = createFleet({
        dir: o.dir,
        devices: specs,
        appVersion: o.appVersion,
        appSize: o.appSize,
        secureVersion: o.secureVersion,
        ...(o.secureBoot ? { secureBoot: o.secureBoot as SecureBootChoice } : {}),
      });
      for (const d of f.devices) ctx.print(`${d.deviceId} ${d.chip} ${d.stateFile}`);
      ctx.note(
        `sim fleet: ${f.devices.length} device(s) in ${f.dir}; secure boot ${f.secureBoot}, secure_version ${f.secureVersion}; keyring ${f.keysDir}, registry ${f.registryDir}, trust policy ${f.trustFile}`,
      );
    });

  fleet
    .command("list")
    .description(
      "One line per device: id, chip, state file, and what it boots (booted on a copy; nothing is saved).",
    )
    .requiredOption("--dir <dir>", "fleet directory")
    .action((o) => {
      const f = loadFleet(o.dir);
      for (const d of f.devices) {
        const dev = loadFleetDevice(d);
        const s = dev.powerOn();
        const what =
          s.kind === "running"
            ? `runs ${s.app?.version ?? "?"} from ${s.partition.label}`
            : s.kind === "crash-loop"
              ? `crash loop in ${s.partition.label}`
              : s.kind;
        ctx.print(`${d.deviceId} ${d.chip} ${d.stateFile} ${what}`);
      }
    });

  fleet
    .command("serve")
    .description(
      "Serve every device of the fleet on its own pty (host end LINKS/tty-<id>), in real time; prints `<id> <path>` per device once ready and runs until SIGINT/SIGTERM, saving states on exit.",
    )
    .requiredOption("--dir <dir>", "fleet directory")
    .requiredOption("--links <dir>", "directory for the host ends (tty-<deviceId> links)")
    .option("--baud <rate>", "console baud rate (default 115200)", parseIntArg, 115200)
    .addOption(
      new Option(
        "--fault <options>",
        "faults on every link: ber=1e-6,drop=0.01,dropbyte=0,garbage=0.01,latency=16",
      ).argParser(parseFaults),
    )
    .option(
      "--rx <config>",
      "receive path: iram (ISR in IRAM, 48 KB ring) or no-iram (8 KB ring)",
      choice(["iram", "no-iram"] as const),
      "iram",
    )
    .option("--log", "copy every device's UART0 lines to stderr, prefixed with its id", false)
    .option("--duration <ms>", "stop after this long (default: until SIGINT/SIGTERM)", parseIntArg)
    .action(async (o) => {
      const f = loadFleet(o.dir);
      const server = await serveFleet(f.devices, {
        linkDir: o.links,
        consoleBaud: o.baud,
        rx: o.rx,
        ...(o.fault ? { faults: o.fault } : {}),
        ...(o.log ? { onLog: (id: string, line: string) => ctx.note(`${id}: ${line}`) } : {}),
      });
      for (const d of server.devices) ctx.print(`${d.deviceId} ${d.path}`);
      ctx.note(`sim fleet serve: ${server.devices.length} device(s) at ${o.baud} baud`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.removeListener("SIGINT", stop);
          process.removeListener("SIGTERM", stop);
          clearTimeout(timer);
          resolve();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        const timer = o.duration !== undefined ? setTimeout(stop, o.duration) : undefined;
      });
      await server.close();
      ctx.note(`sim fleet serve: stopped; ${server.devices.length} state file(s) saved`);
    });
}

/** `DEVICE=VERSION:PROFILE`, DEVICE an index (0-based) or a device id / MAC of the default sequence. */
function parseBehaviour(
  item: string,
  count: number,
): { index: number; version: string; behaviour: AppBehaviour } {
  const m = /^([^=]+)=(.+):([a-z-]+)$/.exec(item);
  const usage = () =>
    new EspOtaError(
      "E_USAGE",
      `--behaviour ${item}: expected DEVICE=VERSION:PROFILE, DEVICE an index (0..${count - 1}) or device id, PROFILE one of ${APP_BEHAVIOURS.join(", ")}`,
    );
  if (!m || !(APP_BEHAVIOURS as readonly string[]).includes(m[3]!)) throw usage();
  const ref = m[1]!.trim();
  let index: number;
  if (/^\d{1,5}$/.test(ref)) index = Number(ref);
  else {
    // Ids of the default MAC sequence end in the index (fleetMac).
    const id = deviceIdFromMac(ref);
    const prefix = deviceIdFromMac(fleetMac(0))!.slice(0, 8);
    index = id?.startsWith(prefix) ? Number.parseInt(id.slice(8), 16) : -1;
  }
  if (!(index >= 0 && index < count))
    throw new EspOtaError(
      "E_FLEET_DEVICE_UNKNOWN",
      `--behaviour ${item}: ${ref} is not one of the ${count} devices`,
    );
  return { index, version: m[2]!, behaviour: m[3] as AppBehaviour };
}
