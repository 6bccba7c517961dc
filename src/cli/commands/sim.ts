/**
 * `esp-ota sim ...`: the device simulator from the command line. A device lives in a state file
 * (eFuses, spec, sparse flash); each command loads it, acts, and saves it back.
 */
import { type Command, Option } from "commander";
import { EspOtaError } from "../../errors.js";
import { parseSigningKey } from "../../esp/keys.js";
import { loadPartitionTable, type Partition } from "../../esp/partition-table.js";
import { formatDemoSummary, runSimDemo } from "../../sim/demo.js";
import { APP_BEHAVIOURS, type AppBehaviour, SimDevice } from "../../sim/device.js";
import { parseFlashSize } from "../../sim/flash.js";
import { formatInspection, inspectDevice } from "../../sim/inspect.js";
import { applyPreEncryptedUpdate } from "../../sim/ota-update.js";
import { provisionDevice } from "../../sim/provision.js";
import { makeSyntheticApp } from "../../sim/synthetic-app.js";
import { choice, parseIntArg, parseSizeArg } from "../args.js";
import type { CliContext } from "../context.js";
import { parseVersionBehaviour, registerSimFleet } from "./sim-fleet.js";
import { registerSimReplay } from "./sim-replay.js";
import { registerSimServe } from "./sim-serve.js";

const collect = (v: string, acc: string[]) => [...acc, v];

export function registerSim(parent: Command, ctx: CliContext): void {
  const sim = parent
    .command("sim")
    .description("Simulated ESP32s: provision, boot, inspect, update, make synthetic apps.");

  sim
    .command("create")
    .description(
      "Provision a simulated device into a state file: sign the app, encrypt each region at its address, burn eFuses.",
    )
    .requiredOption("--state <file>", "device state file to create")
    .requiredOption("--chip <chip>", "esp32 or esp32s3", choice(["esp32", "esp32s3"] as const))
    .option("--flash-size <size>", "2MB, 4MB, 8MB or 16MB", "4MB")
    .requiredOption("--partition-table <file>", "partition table, CSV or binary")
    .requiredOption("--app <file>", "the plain (unsigned) app image to install in factory or ota_0")
    .option("--flash-encryption", "enable flash encryption (needs --fe-key)", false)
    .option("--fe-key <file>", "flash-encryption key file (secure generate-flash-encryption-key)")
    .option("--flash-crypt-conf <n>", "ESP32 FLASH_CRYPT_CONFIG", parseIntArg, 0xf)
    .option(
      "--release-mode",
      "flash encryption in release mode (download-mode encryption disabled)",
      false,
    )
    .option("--secure-boot <version>", "v1 or v2 (needs --sb-key)", choice(["v1", "v2"] as const))
    .option(
      "--sb-key <file>",
      "secure boot signing key (private PEM); repeat for up to 3 V2 keys",
      collect,
      [] as string[],
    )
    .option("--no-rollback", "build the bootloader without CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE")
    .option("--anti-rollback", "CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK (secure_version checks)", false)
    .option("--secure-version <n>", "initial eFuse secure_version", parseIntArg, 0)
    .option("--mac <mac>", "MAC address, 12 hex digits (default 24:0a:c4:..)")
    .option(
      "--behaviour <version=profile>",
      `app behaviour per version: ${APP_BEHAVIOURS.join(", ")}; repeatable`,
      collect,
      [] as string[],
    )
    .option(
      "--default-behaviour <profile>",
      "behaviour of apps not named by --behaviour",
      choice(APP_BEHAVIOURS),
      "healthy" as AppBehaviour,
    )
    .action((o) => {
      if (o.flashEncryption && !o.feKey)
        throw new EspOtaError("E_USAGE", "--flash-encryption needs --fe-key KEYFILE");
      if (o.secureBoot && o.sbKey.length === 0)
        throw new EspOtaError("E_USAGE", "--secure-boot needs --sb-key KEYFILE");
      const partitions = loadPartitionTable(ctx.readFile(o.partitionTable));
      const device = provisionDevice({
        chip: o.chip,
        flashSize: flashSize(o.flashSize),
        partitions,
        app: ctx.readFile(o.app),
        ...(o.flashEncryption
          ? {
              flashEncryption: {
                key: ctx.readFile(o.feKey),
                flashCryptConf: o.flashCryptConf,
                release: o.releaseMode,
              },
            }
          : {}),
        ...(o.secureBoot
          ? {
              secureBoot: {
                version: o.secureBoot === "v1" ? 1 : 2,
                keys: (o.sbKey as string[]).map((k) => parseSigningKey(ctx.readFile(k))),
              },
            }
          : {}),
        bootloader: { rollback: o.rollback, antiRollback: o.antiRollback },
        secureVersion: o.secureVersion,
        ...(o.mac ? { mac: parseMac(o.mac) } : {}),
        behaviours: parseBehaviours(o.behaviour),
        defaultBehaviour: o.defaultBehaviour,
      });
      ctx.writeFile(o.state, device.serialize());
      ctx.print(`created ${o.state}: ${o.chip} ${o.flashSize}, device id ${device.id}`);
      ctx.print(
        `  flash encryption: ${device.efuses.flashEncryptionMode}, secure boot: ${device.efuses.secureBootVersion ? `V${device.efuses.secureBootVersion}` : "off"}`,
      );
    });

  sim
    .command("boot")
    .description(
      "Power the device on and print its UART0 boot log; saves the state the boot leaves.",
    )
    .requiredOption("--state <file>", "device state file")
    .action((o) => {
      const device = load(ctx, o.state);
      const start = device.uart.lines.length;
      const state = device.powerOn();
      for (const line of device.uart.lines.slice(start)) ctx.print(line);
      ctx.writeFile(o.state, device.serialize());
      if (state.kind === "no-app") {
        ctx.print("(the device resets and prints this again, forever)");
        throw new EspOtaError("E_SIM_NOT_BOOTABLE", `device does not boot: ${state.reason}`, {
          device: device.id,
        });
      }
      if (state.kind === "crash-loop") {
        throw new EspOtaError(
          "E_SIM_NOT_BOOTABLE",
          `device is in a crash loop running ${state.partition.label}`,
          { device: device.id },
        );
      }
    });

  sim
    .command("inspect")
    .description(
      "Show eFuses, partitions, otadata, and each slot's app with its verification result.",
    )
    .requiredOption("--state <file>", "device state file")
    .option("--json", "machine-readable output", false)
    .action((o) => {
      const report = inspectDevice(load(ctx, o.state));
      ctx.print(o.json ? JSON.stringify(report, null, 2) : formatInspection(report));
    });

  sim
    .command("update")
    .description(
      "Apply an image pre-encrypted for a slot the way the OTA device side does (erase, write raw, set boot partition, restart).",
    )
    .requiredOption("--state <file>", "device state file (must boot)")
    .requiredOption(
      "--image <file>",
      "ciphertext: the signed image encrypted for the target slot's address",
    )
    .option("--slot <label>", "target slot label (default: the next update partition)")
    .action((o) => {
      const device = load(ctx, o.state);
      const start = device.uart.lines.length;
      const state = device.powerOn();
      if (state.kind !== "running")
        throw new EspOtaError(
          "E_SIM_NOT_BOOTABLE",
          `device does not boot (${state.kind}); nothing to update from`,
        );
      let slot: Partition | undefined;
      if (o.slot) {
        slot = device.partitions.find((p) => p.label === o.slot);
        if (!slot) throw new EspOtaError("E_USAGE", `no partition labelled ${o.slot}`);
      }
      const r = applyPreEncryptedUpdate(device, ctx.readFile(o.image), slot ? { slot } : {});
      for (const line of device.uart.lines.slice(start)) ctx.print(line);
      ctx.writeFile(o.state, device.serialize());
      if (!r.ok)
        throw new EspOtaError(
          "E_SIM_UPDATE_REFUSED",
          `the device refused the update at ${r.message}`,
          { device: device.id, step: r.step },
        );
      const s = device.state;
      ctx.print(
        s.kind === "running"
          ? `now running ${s.partition.label}: ${s.app?.projectName} ${s.app?.version}`
          : `device state: ${s.kind}`,
      );
    });

  registerSimDemo(sim, ctx);
  registerSimServe(sim, ctx);
  registerSimFleet(sim, ctx);
  registerSimReplay(sim, ctx);

  sim
    .command("make-app")
    .description("Build a synthetic, valid ESP-IDF app image (for tests and the demo).")
    .option("--chip <chip>", "esp32 or esp32s3", choice(["esp32", "esp32s3"] as const), "esp32")
    .requiredOption("--project <name>", "project name in esp_app_desc_t")
    .requiredOption("--version <version>", "app version string in esp_app_desc_t")
    .option("--secure-version <n>", "anti-rollback secure_version", parseIntArg, 0)
    .addOption(
      new Option(
        "--size <bytes>",
        "approximate image size (K/M suffixes, decimal fractions: 64K, 1.3M)",
      )
        .argParser(parseSizeArg)
        .default(0x10000, "64K"),
    )
    .argument("<out>", "output image file")
    .action((out: string, o) => {
      const image = makeSyntheticApp({
        chip: o.chip,
        project: o.project,
        version: o.version,
        secureVersion: o.secureVersion,
        size: o.size,
      });
      ctx.writeFile(out, image);
      ctx.print(
        `wrote ${out}: ${o.chip} app ${o.project} ${o.version} (secure_version ${o.secureVersion}), ${image.length} bytes`,
      );
    });
}

function load(ctx: CliContext, path: string): SimDevice {
  return SimDevice.deserialize(ctx.readFile(path));
}

function flashSize(s: string): number {
  try {
    return parseFlashSize(s);
  } catch (e) {
    throw new EspOtaError("E_USAGE", (e as Error).message);
  }
}

function parseMac(s: string): Uint8Array {
  const hex = s.replace(/[:-]/g, "");
  if (!/^[0-9a-fA-F]{12}$/.test(hex))
    throw new EspOtaError("E_USAGE", `--mac ${s} is not 6 bytes of hex`);
  return new Uint8Array(Buffer.from(hex, "hex"));
}

function parseBehaviours(list: string[]): Record<string, AppBehaviour> {
  const out: Record<string, AppBehaviour> = {};
  for (const item of list) {
    const vb = parseVersionBehaviour(item);
    if (!vb)
      throw new EspOtaError(
        "E_USAGE",
        `--behaviour ${item}: expected VERSION=PROFILE, PROFILE one of ${APP_BEHAVIOURS.join(", ")}`,
      );
    out[vb.version] = vb.behaviour;
  }
  return out;
}

export function registerSimDemo(sim: Command, ctx: CliContext): void {
  sim
    .command("demo")
    .description(
      "Two secure simulated devices take a correct update, then the classic mistakes fail safely.",
    )
    .addOption(
      new Option(
        "--app-size <bytes>",
        "approximate size of the demo apps (K/M suffixes, decimal fractions: 256K, 1.3M)",
      )
        .argParser(parseSizeArg)
        .default(0x40000, "256K"),
    )
    .action((o) => {
      ctx.print(
        "esp-ota-gateway simulator demo: sign the plaintext, then encrypt it for the slot it lands in.",
      );
      const result = runSimDemo((l) => ctx.print(l), o.appSize);
      ctx.print("");
      ctx.print(formatDemoSummary(result));
      if (result.unbootable > 0 || result.rows.some((r) => !r.ok)) {
        throw new EspOtaError(
          "E_INTERNAL",
          "the demo did not go as expected (see the table above)",
        );
      }
    });
}
