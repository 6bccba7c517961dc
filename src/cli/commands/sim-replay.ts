/**
 * `esp-ota sim replay`: run a provisioning script (espsecure, espefuse, esptool, idf.py flash;
 * v4 or v5 syntax) against a simulated chip, boot it, and explain every line that left it
 * unbootable or insecure (src/provision/replay.ts, docs/provisioning.md). Files the script reads
 * come from its directory; files it writes stay in memory: only the state file is written.
 */
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { EspOtaError } from "../../errors.js";
import { choice } from "../args.js";
import type { CliContext } from "../context.js";
import { overlayFiles } from "./provision.js";

export function registerSimReplay(sim: Command, ctx: CliContext): void {
  sim
    .command("replay")
    .description(
      "Replay a provisioning script (espsecure/espefuse/esptool/idf.py, v4 or v5 syntax) on a simulated chip, boot it, and explain each line that made it unbootable or insecure.",
    )
    .requiredOption(
      "--state <file>",
      "device state file (a file that does not exist yet is a factory-fresh chip)",
    )
    .option("--chip <chip>", "chip of a new state file", choice(["esp32", "esp32s3"] as const))
    .option("--flash-size <size>", "flash size of a new state file", "4MB")
    .option(
      "--sdkconfig <file>",
      "the build's sdkconfig: secure boot version, signed binaries, flash-encryption mode, partition table offset",
    )
    .argument("<script>", "the script to replay")
    .action(
      async (
        script: string,
        o: { state: string; chip?: "esp32" | "esp32s3"; flashSize: string; sdkconfig?: string },
      ) => {
        const [{ SimDevice }, { parseFlashSize }, replay] = await Promise.all([
          import("../../sim/device.js"),
          import("../../sim/flash.js"),
          import("../../provision/replay.js"),
        ]);
        let device: InstanceType<typeof SimDevice>;
        if (existsSync(resolve(ctx.cwd, o.state))) {
          device = SimDevice.deserialize(ctx.readFile(o.state));
          if (o.chip && o.chip !== device.spec.chip)
            throw new EspOtaError(
              "E_USAGE",
              `--chip ${o.chip}, but ${o.state} holds an ${device.spec.chip}`,
            );
        } else {
          if (!o.chip)
            throw new EspOtaError(
              "E_USAGE",
              `${o.state} does not exist yet: give --chip for the factory-fresh chip`,
            );
          let size: number;
          try {
            size = parseFlashSize(o.flashSize);
          } catch (e) {
            throw new EspOtaError("E_USAGE", (e as Error).message);
          }
          device = replay.freshDevice(o.chip, size);
          ctx.note(`${o.state} does not exist: replaying on a factory-fresh ${o.chip}`);
        }
        const text = ctx.readText(script);
        const report = replay.replayScript(text, {
          device,
          files: overlayFiles(dirname(resolve(ctx.cwd, script))),
          ...(o.sdkconfig ? { sdkconfig: replay.parseSdkconfig(ctx.readText(o.sdkconfig)) } : {}),
        });
        for (const l of replay.formatReplay(report)) ctx.print(l);
        ctx.writeFile(o.state, device.serialize());
        const bad = report.diagnoses.filter((d) => d.severity !== "risk");
        if (!report.booted || bad.length)
          throw new EspOtaError(
            "E_PROVISION_NOT_BOOTABLE",
            `${report.booted ? "the chip boots but is not secure" : "the chip does not boot"}: ${bad.length} problem(s), each named by line above`,
            { device: device.id },
          );
      },
    );
}
