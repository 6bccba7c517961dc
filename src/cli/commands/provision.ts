/**
 * `esp-ota provision ...`: the first secure flash of a device (docs/provisioning.md). `plan`
 * prints the ordered steps with their reasons, `script` the same as a bash script of espsecure /
 * espefuse / esptool v5 commands with state gates, `rehearse` replays that script on a
 * factory-fresh simulated chip, and `check-state` / `check-layout` are the gates the script calls.
 * A plan for a registered device (--registry, --device) burns exactly the key the release side
 * encrypts that device's updates with.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type Command, Option } from "commander";
import { EspOtaError } from "../../errors.js";
import { loadPartitionTable, type Partition } from "../../esp/partition-table.js";
import {
  formatPlan,
  type PlanInput,
  PROVISION_CHIPS,
  type ProvisionChip,
  type ProvisionPlan,
  planProvisioning,
} from "../../provision/plan.js";
import {
  checkState,
  MAX_SUMMARY_BYTES,
  parseEfuseSummary,
  parseExpectation,
} from "../../provision/state-check.js";
import { choice, parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

export const PROVISION_SUMMARY =
  "Plan, script and rehearse the first secure flash of a device: keys, eFuses, signing, per-address encryption, in the order that boots (docs/provisioning.md).";

interface PlanOptions {
  chip?: ProvisionChip;
  partitionTable?: string;
  partitionTableOffset?: number;
  secureBoot: "v1" | "v2";
  scheme?: "rsa3072" | "ecdsa256";
  flashEncryption: "release" | "development";
  xtsBits?: string;
  keys: string;
  registry?: string;
  device?: string;
  bootloader?: string;
  app?: string;
  build: string;
  keepDownloadMode?: boolean;
}

function planOptions(cmd: Command): Command {
  return cmd
    .option(
      "--chip <chip>",
      `target chip: ${PROVISION_CHIPS.join(", ")} (default: the registry record's)`,
      choice(PROVISION_CHIPS),
    )
    .option(
      "--partition-table <file>",
      "partition table, CSV or binary (default: the registry record's)",
    )
    .option(
      "--partition-table-offset <n>",
      "CONFIG_PARTITION_TABLE_OFFSET (default 0x8000)",
      parseIntArg,
    )
    .addOption(
      new Option("--secure-boot <version>", "Secure Boot version")
        .choices(["v1", "v2"])
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--scheme <scheme>", "Secure Boot V2 signature scheme (default rsa3072)").choices([
        "rsa3072",
        "ecdsa256",
      ]),
    )
    .addOption(
      new Option("--flash-encryption <mode>", "flash-encryption mode")
        .choices(["release", "development"])
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--xts-bits <bits>", "XTS-AES key size on S2/S3 (default 256)").choices([
        "128",
        "256",
      ]),
    )
    .option(
      "--keys <dir>",
      "key directory the script reads (signing keys, flash-encryption key)",
      "keys",
    )
    .option("--registry <dir>", "device registry: the plan burns the registered device's key")
    .option("--device <id>", "device id (MAC, 12 hex digits) in --registry")
    .option(
      "--build <dir>",
      "the build directory (bootloader/, partition_table/, the app)",
      "build",
    )
    .option("--app <file>", "the app image (default BUILD/app.bin)")
    .option(
      "--bootloader <file>",
      "the bootloader image, for an exact layout check (default BUILD/bootloader/bootloader.bin when present)",
    )
    .option(
      "--keep-download-mode",
      "ESP32 release: do not burn UART_DOWNLOAD_DIS (keeps the rescue path)",
    );
}

interface Made {
  plan: ProvisionPlan;
  /** The registered key, when the plan comes from the registry. */
  feKey?: Uint8Array;
}

async function makePlan(ctx: CliContext, o: PlanOptions): Promise<Made> {
  let chip = o.chip;
  let partitions: Partition[] | undefined;
  let feKey: Uint8Array | undefined;
  if (o.registry || o.device) {
    if (!o.registry || !o.device)
      throw new EspOtaError("E_USAGE", "--registry and --device go together");
    const { openRegistry } = await import("../../release/registry-fs.js");
    const { devicePartitions } = await import("../../release/registry.js");
    const record = openRegistry(resolve(ctx.cwd, o.registry)).get(o.device);
    if (chip && chip !== record.chip)
      throw new EspOtaError(
        "E_USAGE",
        `--chip ${chip}, but device ${o.device} is registered as ${record.chip}`,
      );
    if (!(PROVISION_CHIPS as readonly string[]).includes(record.chip))
      throw new EspOtaError(
        "E_PROVISION_PLAN",
        `device ${o.device} is a ${record.chip}; plans cover ${PROVISION_CHIPS.join(", ")}`,
      );
    chip = record.chip as ProvisionChip;
    if (
      record.flashEncryption.flashCryptConf !== undefined &&
      record.flashEncryption.flashCryptConf !== 0xf
    )
      throw new EspOtaError(
        "E_PROVISION_PLAN",
        `device ${o.device} is registered with FLASH_CRYPT_CONFIG ${record.flashEncryption.flashCryptConf}; the plan burns 0xF`,
      );
    partitions = devicePartitions(record);
    feKey = new Uint8Array(Buffer.from(record.flashEncryption.key, "hex"));
  }
  if (!chip) throw new EspOtaError("E_USAGE", "--chip is required without --registry/--device");
  if (o.partitionTable) partitions = loadPartitionTable(ctx.readFile(o.partitionTable));
  if (!partitions)
    throw new EspOtaError("E_USAGE", "--partition-table is required without --registry/--device");
  const keys = o.keys.replace(/\/+$/, "");
  const dev = o.device ? `${o.device}-` : "";
  const files = {
    feKey: `${keys}/${dev}flash_encryption_key.bin`,
    signingKey: `${keys}/${o.secureBoot === "v1" ? "secure_boot_signing_key_v1.pem" : "secure_boot_signing_key.pem"}`,
    bootloaderKey: `${keys}/secure_bootloader_key.bin`,
    digest: `${keys}/secure_boot_digest.bin`,
    bootloader: `${o.build}/bootloader/bootloader.bin`,
    partitionTable: `${o.build}/partition_table/partition-table.bin`,
    app: o.app ?? `${o.build}/app.bin`,
    otadata: `${o.build}/ota_data_initial.bin`,
    nvsKeys: `${o.build}/nvs_keys.bin`,
  };
  const exists = (p: string) => existsSync(resolve(ctx.cwd, p));
  const blPath = o.bootloader ?? (exists(files.bootloader) ? files.bootloader : undefined);
  const input: PlanInput = {
    chip,
    partitions,
    secureBoot: o.secureBoot,
    flashEncryption: o.flashEncryption,
    files,
    have: {
      feKey: feKey !== undefined || exists(files.feKey),
      signingKey: exists(files.signingKey),
      bootloaderKey: exists(files.bootloaderKey),
    },
    ...(o.partitionTableOffset !== undefined
      ? { partitionTableOffset: o.partitionTableOffset }
      : {}),
    ...(o.scheme ? { scheme: o.scheme } : {}),
    ...(o.xtsBits ? { xtsBits: Number(o.xtsBits) as 128 | 256 } : {}),
    ...(o.device ? { deviceId: o.device } : {}),
    ...(blPath ? { bootloaderSize: statSync(resolve(ctx.cwd, blPath)).size } : {}),
    ...(o.keepDownloadMode ? { keepDownloadMode: true } : {}),
  };
  const plan = planProvisioning(input);
  return { plan, ...(feKey ? { feKey } : {}) };
}

function refuseLayout(plan: ProvisionPlan): void {
  const errors = plan.problems.filter((p) => p.severity === "error");
  if (errors.length)
    throw new EspOtaError("E_PROVISION_LAYOUT", errors.map((p) => p.message).join("; "), {
      chip: plan.chip,
    });
}

export function registerProvision(program: Command, ctx: CliContext): void {
  const provision = program.command("provision").description(PROVISION_SUMMARY);

  planOptions(
    provision
      .command("plan")
      .description("Print the ordered provisioning steps, each with why it is where it is."),
  )
    .option("--json", "the plan as JSON", false)
    .action(async (o: PlanOptions & { json: boolean }) => {
      const { plan } = await makePlan(ctx, o);
      const { shellLine } = await import("../../provision/script.js");
      ctx.print(o.json ? JSON.stringify(plan, null, 2) : formatPlan(plan, shellLine));
      refuseLayout(plan);
    });

  planOptions(
    provision
      .command("script")
      .description(
        "Print the plan as a bash script (espsecure/espefuse/esptool v5) with a device-state gate before each irreversible step and a per-device receipt. With --registry/--device the device's key is written to --keys (mode 0600).",
      ),
  ).action(async (o: PlanOptions) => {
    const { plan, feKey } = await makePlan(ctx, o);
    refuseLayout(plan);
    if (feKey) writeKeyOnce(ctx, plan.files.feKey, feKey);
    const { renderScript } = await import("../../provision/script.js");
    ctx.stdout.write(renderScript(plan));
  });

  planOptions(
    provision
      .command("rehearse")
      .description(
        "Run the generated script against a factory-fresh simulated chip (esp32, esp32s3) and show the boot log. Reads the build files; writes nothing (keys it generates stay in memory).",
      ),
  )
    .option("--flash-size <size>", "simulated flash size", "4MB")
    .action(async (o: PlanOptions & { flashSize: string }) => {
      const { plan, feKey } = await makePlan(ctx, o);
      refuseLayout(plan);
      const [{ rehearse }, { formatReplay }, { parseFlashSize }] = await Promise.all([
        import("../../provision/rehearse.js"),
        import("../../provision/replay.js"),
        import("../../sim/flash.js"),
      ]);
      const files = overlayFiles(ctx.cwd);
      if (feKey) files.write(plan.files.feKey, feKey);
      let flashSize: number;
      try {
        flashSize = parseFlashSize(o.flashSize);
      } catch (e) {
        throw new EspOtaError("E_USAGE", (e as Error).message);
      }
      if (plan.chip !== "esp32" && plan.chip !== "esp32s3")
        throw new EspOtaError(
          "E_USAGE",
          `the simulator models esp32 and esp32s3; cannot rehearse on ${plan.chip}`,
        );
      const { report, gates } = rehearse(plan, { files, flashSize });
      for (const l of formatReplay(report)) ctx.print(l);
      ctx.print(`${gates} state gate(s) passed`);
      if (!report.booted || report.diagnoses.some((d) => d.severity !== "risk"))
        throw new EspOtaError(
          "E_PROVISION_NOT_BOOTABLE",
          "the rehearsal did not end with a secured chip that boots (see above)",
          { chip: plan.chip },
        );
    });

  provision
    .command("check-state")
    .description(
      "A gate: compare `espefuse summary --format json` with the expected eFuse state; append the result to the receipt. Exit 1 on any difference.",
    )
    .argument(
      "[summary]",
      "the summary JSON file (omit with --step done: the chip may no longer be readable)",
    )
    .option(
      "--expect <field=value>",
      "FIELD=VALUE, FIELD:readable=true|false, FIELD:writeable=true|false; repeatable",
      (v: string, a: string[]) => [...a, v],
      [] as string[],
    )
    .option("--receipt <file>", "append one JSON line per gate (the device's receipt)")
    .option("--step <name>", "the gate's name in the receipt", "check")
    .option("--plan <id>", "the plan id the script was generated from")
    .action(
      (
        summary: string | undefined,
        o: { expect: string[]; receipt?: string; step: string; plan?: string },
      ) => {
        const expect = o.expect.map((e) => {
          const x = parseExpectation(e);
          if (!x)
            throw new EspOtaError(
              "E_USAGE",
              `--expect ${e}: expected FIELD=VALUE or FIELD:readable|writeable=true|false`,
            );
          return x;
        });
        const line: Record<string, unknown> = {
          step: o.step,
          at: new Date().toISOString(),
          ...(o.plan ? { plan: o.plan } : {}),
        };
        let result: ReturnType<typeof checkState> = { ok: true, mismatches: [] };
        if (summary) {
          const size = statSafe(ctx, summary);
          if (size > MAX_SUMMARY_BYTES)
            throw new EspOtaError(
              "E_PROVISION_SUMMARY",
              `${summary} is ${size} bytes, more than ${MAX_SUMMARY_BYTES}`,
            );
          const parsed = parseEfuseSummary(ctx.readText(summary));
          if (!parsed.ok)
            throw new EspOtaError("E_PROVISION_SUMMARY", `${summary}: ${parsed.reason}`);
          result = checkState(parsed.fields, expect);
          const mac = parsed.fields.get("MAC")?.value;
          if (typeof mac === "string") line.mac = mac.slice(0, 40);
          line.checked = expect.length;
          line.ok = result.ok;
          if (!result.ok) line.mismatches = result.mismatches;
        } else if (expect.length) throw new EspOtaError("E_USAGE", "--expect needs a summary file");
        if (o.receipt) {
          const path = resolve(ctx.cwd, o.receipt);
          mkdirSync(dirname(path), { recursive: true });
          appendFileSync(path, `${JSON.stringify(line)}\n`, { mode: 0o644 });
        }
        if (!result.ok) {
          for (const m of result.mismatches)
            ctx.note(`  ${m.field}: expected ${m.expected}, chip shows ${m.actual}`);
          throw new EspOtaError(
            "E_PROVISION_STATE_MISMATCH",
            `gate ${o.step}: ${result.mismatches.length} eFuse field(s) differ from the plan; stopping before the next irreversible step`,
            { step: o.step },
          );
        }
        ctx.print(
          `gate ${o.step}: ${summary ? `${expect.length} field(s) as expected` : "recorded"}`,
        );
      },
    );

  provision
    .command("check-layout")
    .description(
      "A gate: the (signed) bootloader written at its offset must end before the partition table.",
    )
    .requiredOption("--bootloader <file>", "the bootloader file as it will be written")
    .option("--chip <chip>", "target chip", choice(PROVISION_CHIPS), "esp32" as ProvisionChip)
    .option(
      "--at <offset>",
      "where the file is written (default: the chip's bootloader offset)",
      parseIntArg,
    )
    .option("--partition-table-offset <n>", "CONFIG_PARTITION_TABLE_OFFSET", parseIntArg, 0x8000)
    .action(
      async (o: {
        bootloader: string;
        chip: ProvisionChip;
        at?: number;
        partitionTableOffset: number;
      }) => {
        const { CHIP_FACTS } = await import("../../provision/plan.js");
        const at = o.at ?? CHIP_FACTS[o.chip].bootloaderOffset;
        const size = statSafe(ctx, o.bootloader);
        if (at + size > o.partitionTableOffset)
          throw new EspOtaError(
            "E_PROVISION_LAYOUT",
            `${o.bootloader} is ${size} bytes: written at 0x${at.toString(16)} it runs past the partition table at 0x${o.partitionTableOffset.toString(16)}. Move the table (CONFIG_PARTITION_TABLE_OFFSET) before the first secure flash`,
          );
        ctx.print(
          `${o.bootloader}: ${size} bytes at 0x${at.toString(16)}, ${o.partitionTableOffset - at - size} bytes below the partition table`,
        );
      },
    );
}

function statSafe(ctx: CliContext, path: string): number {
  try {
    return statSync(resolve(ctx.cwd, path)).size;
  } catch (e) {
    throw new EspOtaError("E_FILE_READ", `cannot read ${path}: ${(e as Error).message}`, { path });
  }
}

/** The registry's key, written for espefuse/espsecure; an existing file must hold the same key. */
function writeKeyOnce(ctx: CliContext, path: string, key: Uint8Array): void {
  const abs = resolve(ctx.cwd, path);
  if (existsSync(abs)) {
    if (!Buffer.from(readFileSync(abs)).equals(Buffer.from(key)))
      throw new EspOtaError(
        "E_KEY_EXISTS",
        `${path} exists and is not the registered key; not overwriting it`,
        { path },
      );
    return;
  }
  ctx.createSecretFile(path, key);
  ctx.note(
    `wrote the registered flash-encryption key to ${path} (mode 0600); delete it after provisioning`,
  );
}

/** Reads from disk under `dir` (bounded), writes stay in memory: a rehearsal touches nothing. */
export function overlayFiles(dir: string, maxFileBytes = 64 << 20) {
  const mem = new Map<string, Uint8Array>();
  return {
    mem,
    read(path: string): Uint8Array | undefined {
      const m = mem.get(path);
      if (m) return m;
      const abs = resolve(dir, path);
      try {
        if (statSync(abs).size > maxFileBytes) return undefined;
        return new Uint8Array(readFileSync(abs));
      } catch {
        return undefined;
      }
    },
    write(path: string, data: Uint8Array): void {
      mem.set(path, data);
    },
  };
}
