/**
 * `esp-ota release build`: sign the app once, encrypt it per device and OTA slot, write signed
 * manifests and OUT/index.json (src/release/build.ts; docs/release.md). Progress goes to stderr:
 * a bar when a person watches (a TTY), one plain line per device otherwise (logs, CI).
 */
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { parseDurationMs } from "../../duration.js";
import { EspOtaError } from "../../errors.js";
import { type BuildProgress, buildRelease } from "../../release/build.js";
import { loadKeyring } from "../../release/keyring-fs.js";
import { openRegistry } from "../../release/registry-fs.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

interface BuildCliOptions {
  keys: string;
  registry: string;
  app: string;
  version: string;
  devices: string;
  baseUrl: string;
  out: string;
  expires: string;
  jobs?: number;
  json?: boolean;
}

export function registerReleaseBuild(parent: Command, ctx: CliContext): void {
  parent
    .command("build")
    .description(
      "Sign the app once with the keyring's secure boot key, then encrypt it for every OTA slot of every device with that device's key; write OUT/<device>/<slot>.bin, OUT/<device>/manifest.json (signed) and OUT/index.json. Rerunning skips devices whose outputs still check.",
    )
    .requiredOption("--keys <dir>", "operator keyring (esp-ota keys init)")
    .requiredOption("--registry <dir>", "device registry (esp-ota devices add)")
    .requiredOption("--app <file>", "the unsigned app image ESP-IDF built (build/<project>.bin)")
    .requiredOption("--version <v>", "the release's version; must equal the app descriptor's")
    .option(
      "--devices <ids>",
      "'all' (every device of the app's chip) or comma-separated device ids",
      "all",
    )
    .requiredOption("--base-url <url>", "where OUT will be published; manifest URLs are under it")
    .requiredOption("--out <dir>", "output directory")
    .option(
      "--expires <duration>",
      "manifest lifetime (30d, 12h, 90m, 3600s): long enough for a staged rollout, short enough that a withheld old manifest goes stale",
      "30d",
    )
    .option(
      "--jobs <n>",
      "worker threads; default one per core (encryption is CPU-bound)",
      parseIntArg,
    )
    .option(
      "--json",
      "the summary as one JSON object on stdout: {releaseId, built, skipped, excluded, bytesWritten, index}",
    )
    .action(async (o: BuildCliOptions) => {
      // The shared duration parser; a bad value keeps its own code (E_RELEASE_EXPIRES, exit 1),
      // which scripts already match on.
      const expiresInMs = parseDurationMs(o.expires);
      if (typeof expiresInMs === "string")
        throw new EspOtaError("E_RELEASE_EXPIRES", `--expires ${expiresInMs}`);
      if (o.jobs !== undefined && o.jobs < 1)
        throw new EspOtaError("E_USAGE", "--jobs must be at least 1");
      const devices =
        o.devices === "all"
          ? ("all" as const)
          : o.devices
              .split(",")
              .map((s) => s.trim().toLowerCase())
              .filter((s) => s !== "");
      const progress = progressReporter(ctx);
      try {
        const summary = await buildRelease({
          keyring: loadKeyring(resolve(ctx.cwd, o.keys)),
          registry: openRegistry(resolve(ctx.cwd, o.registry)),
          app: ctx.readFile(o.app),
          version: o.version,
          devices,
          baseUrl: o.baseUrl,
          outDir: resolve(ctx.cwd, o.out),
          expiresInMs,
          jobs: o.jobs ?? availableParallelism(),
          onProgress: progress.update,
        });
        progress.stop();
        for (const e of summary.excluded)
          ctx.note(`left out ${e.deviceId}: an ${e.chip}, the app is for ${summary.index.chip}`);
        const indexPath = `${o.out.replace(/\/+$/, "")}/index.json`;
        if (o.json) {
          const { index, ...rest } = summary;
          ctx.print(JSON.stringify({ ...rest, index: indexPath, manifests: index.devices.length }));
        } else
          ctx.print(
            `release ${summary.releaseId}: ${summary.built.length} device(s) built, ${summary.skipped.length} already done; ${summary.index.devices.length} manifest(s), index ${indexPath}`,
          );
      } finally {
        progress.stop();
      }
    });
}

function progressReporter(ctx: CliContext): {
  update: (e: BuildProgress) => void;
  stop: () => void;
} {
  if (ctx.stderr.isTTY) {
    let bar: SingleBar | undefined;
    return {
      update(e) {
        if (!bar) {
          bar = new SingleBar({
            format: "{bar} {value}/{total} devices  {device}",
            stream: ctx.stderr as unknown as NodeJS.WritableStream,
            hideCursor: true,
            clearOnComplete: true,
          });
          bar.start(e.total, 0, { device: "" });
        }
        bar.update(e.done, { device: e.deviceId });
      },
      stop() {
        bar?.stop();
        bar = undefined;
      },
    };
  }
  return {
    update(e) {
      ctx.note(`[${e.done}/${e.total}] ${e.deviceId} ${e.skipped ? "already done" : "built"}`);
    },
    stop() {},
  };
}
