/**
 * `esp-ota sim fleet create|list|serve`: simulated fleets from the command line (src/sim/fleet.ts,
 * src/sim/fleet-serve.ts; docs/simulator.md "Fleets"). `create` makes the keyring, the registry
 * and N secure devices that `release build` output boots on; `serve` puts them all on ptys.
 */
import { type Command, Option } from "commander";
import { TIMER_MAX_MS } from "../../duration.js";
import { EspOtaError } from "../../errors.js";
import { SECURE_BOOT_CHOICES, type SecureBootChoice } from "../../release/keyring-fs.js";
import { deviceIdFromMac } from "../../release/registry.js";
import { APP_BEHAVIOURS, type AppBehaviour } from "../../sim/device.js";
import type { SimChip } from "../../sim/efuse.js";
import { parseFaults } from "../../sim/fault-port.js";
import {
  createFleet,
  type FleetDeviceSpec,
  fleetMac,
  loadFleet,
  loadFleetDevice,
} from "../../sim/fleet.js";
import { serveFleet } from "../../sim/fleet-serve.js";
import { choice, durationArg, parseIntArg, parseSizeArg } from "../args.js";
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
    .addOption(
      new Option(
        "--app-size <bytes>",
        "approximate size of the synthetic app (K/M suffixes, decimal fractions: 64K, 1.3M)",
      )
        .argParser(parseSizeArg)
        .default(0x10000, "64K"),
    )
    .option(
      "--secure-boot <scheme>",
      `${SECURE_BOOT_CHOICES.join(", ")} (default: v1 for an all-ESP32 fleet, else v2-rsa3072)`,
      choice(SECURE_BOOT_CHOICES),
    )
    .option("--secure-version <n>", "eFuse and initial app secure_version", parseIntArg, 1)
    .option(
      "--behaviour <device:version=profile>",
      `how a device (index or id) behaves running a version, as sim create's VERSION=PROFILE with the device first: ${APP_BEHAVIOURS.join(", ")}; repeatable`,
      collect,
      [] as string[],
    )
    .option("--json", "the fleet (directories, secure boot, devices) as one JSON object on stdout")
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
      if (o.json) ctx.print(JSON.stringify(f, null, 2));
      else for (const d of f.devices) ctx.print(`${d.deviceId} ${d.chip} ${d.stateFile}`);
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
    .option("--json", "one JSON array of {deviceId, chip, stateFile, boots}")
    .action((o) => {
      const f = loadFleet(o.dir);
      const rows = f.devices.map((d) => {
        const s = loadFleetDevice(d).powerOn();
        const boots =
          s.kind === "running"
            ? { kind: s.kind, partition: s.partition.label, version: s.app?.version ?? null }
            : s.kind === "crash-loop"
              ? { kind: s.kind, partition: s.partition.label }
              : { kind: s.kind };
        return { ...d, boots };
      });
      if (o.json) {
        ctx.print(JSON.stringify(rows, null, 2));
        return;
      }
      for (const { boots: b, ...d } of rows) {
        const what =
          b.kind === "running"
            ? `runs ${b.version ?? "?"} from ${b.partition}`
            : b.kind === "crash-loop"
              ? `crash loop in ${b.partition}`
              : b.kind;
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
    .option("--baud <rate>", "console baud rate", parseIntArg, 115200)
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
    .option(
      "--duration <time>",
      "stop after this long (10s, 500ms; without it, until SIGINT/SIGTERM)",
      durationArg(TIMER_MAX_MS),
    )
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

/**
 * `VERSION=PROFILE`: how an app version behaves, the one syntax of `sim create --behaviour` and,
 * after `DEVICE:`, of `sim fleet create --behaviour` (issue 13 item 8: the fleet's used to be
 * `DEVICE=VERSION:PROFILE`, the same `=` meaning something else). The version is everything
 * before the last `=`; null when item is not of that form.
 */
export function parseVersionBehaviour(
  item: string,
): { version: string; behaviour: AppBehaviour } | null {
  const m = /^(.+)=([a-z-]+)$/.exec(item);
  if (!m || !(APP_BEHAVIOURS as readonly string[]).includes(m[2]!)) return null;
  return { version: m[1]!, behaviour: m[2] as AppBehaviour };
}

/**
 * `DEVICE:VERSION=PROFILE`, DEVICE an index (0-based) or the device id or MAC of one of the
 * default sequence.
 */
function parseBehaviour(
  item: string,
  count: number,
): { index: number; version: string; behaviour: AppBehaviour } {
  // DEVICE ends at the first colon, unless it is a MAC written with colons (24:0a:c4:fe:00:02).
  const mac = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}:/i.exec(item);
  const colon = mac ? mac[0].length - 1 : item.indexOf(":");
  const vb = colon > 0 ? parseVersionBehaviour(item.slice(colon + 1)) : null;
  if (!vb) {
    const old = /^[^=:]+=[^=]+:[a-z-]+$/.test(item)
      ? " (DEVICE=VERSION:PROFILE was the old form)"
      : "";
    throw new EspOtaError(
      "E_USAGE",
      `--behaviour ${item}: expected DEVICE:VERSION=PROFILE${old}, DEVICE an index (0..${count - 1}) or device id, PROFILE one of ${APP_BEHAVIOURS.join(", ")}`,
    );
  }
  const ref = item.slice(0, colon).trim();
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
  return { index, ...vb };
}
