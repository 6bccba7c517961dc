/**
 * `esp-ota otadata`: decode an otadata partition image (0x2000 bytes, e.g. from
 * `esptool read-flash 0xd000 0x2000 otadata.bin`) and show which copy and slot ESP-IDF's
 * bootloader boots from it, and what it would rewrite, for a given partition layout and
 * rollback/anti-rollback configuration. The decisions are src/esp/otadata.ts's.
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { EspOtaError } from "../../errors.js";
import {
  type BootConfig,
  describeOtadata,
  FACTORY_INDEX,
  indexName,
  MAX_OTA_SLOTS,
  OTADATA_SIZE,
  type OtadataReport,
  type OtaLayout,
  TEST_APP_INDEX,
} from "../../esp/otadata.js";
import {
  APP_SUBTYPE,
  DATA_SUBTYPE,
  findPartition,
  loadPartitionTable,
  otaAppPartitions,
  PART_TYPE,
} from "../../esp/partition-table.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

interface Options {
  json?: boolean;
  partitionTable?: string;
  otaSlots?: number;
  factory?: boolean;
  test?: boolean;
  rollback?: boolean;
  antiRollbackEfuse?: number;
  secureVersion?: Map<number, number>;
  secureVersionBits: number;
  testPin?: boolean;
}

function slotCountArg(value: string): number {
  const n = parseIntArg(value);
  if (n > MAX_OTA_SLOTS) {
    throw new InvalidArgumentError(
      `${n} OTA slots: ESP-IDF has at most ${MAX_OTA_SLOTS} (ota_0..ota_15).`,
    );
  }
  return n;
}

function bitsArg(value: string): number {
  const n = parseIntArg(value);
  if (n < 1 || n > 32) throw new InvalidArgumentError(`"${value}" is not in 1..32.`);
  return n;
}

/** `ota_N=V`, `factory=V` or `test=V`, collected into a map from boot index to secure_version. */
function secureVersionArg(value: string, previous?: Map<number, number>): Map<number, number> {
  const m = /^(ota_(\d{1,2})|factory|test)=(.+)$/.exec(value.trim());
  if (!m) {
    throw new InvalidArgumentError(`"${value}" is not of the form ota_N=V, factory=V or test=V.`);
  }
  const index =
    m[1] === "factory" ? FACTORY_INDEX : m[1] === "test" ? TEST_APP_INDEX : Number(m[2]);
  if (index >= MAX_OTA_SLOTS) throw new InvalidArgumentError(`"${m[1]}": there is no such slot.`);
  const out = new Map(previous ?? []);
  out.set(index, parseIntArg(m[3]!));
  return out;
}

/** The layout from a partition table (.csv or .bin), with the app side's slot counting. */
function layoutFromTable(
  ctx: CliContext,
  path: string,
): { layout: OtaLayout; hasOtadata: boolean } {
  const parts = loadPartitionTable(ctx.readFile(path));
  const slots = otaAppPartitions(parts);
  const allOta = parts.filter(
    (p) =>
      p.type === PART_TYPE.app && p.subtype >= APP_SUBTYPE.ota_0 && p.subtype <= APP_SUBTYPE.ota_15,
  );
  if (allOta.length !== slots.length) {
    throw new EspOtaError(
      "E_OTADATA_LAYOUT",
      `${path}: the OTA app partitions (${allOta.map((p) => p.label).join(", ")}) are not ota_0..ota_${allOta.length - 1}, each once`,
      { path },
    );
  }
  return {
    layout: {
      otaSlotCount: slots.length,
      hasFactory: findPartition(parts, PART_TYPE.app, APP_SUBTYPE.factory) !== undefined,
      hasTest: findPartition(parts, PART_TYPE.app, APP_SUBTYPE.test) !== undefined,
    },
    hasOtadata: findPartition(parts, PART_TYPE.data, DATA_SUBTYPE.ota) !== undefined,
  };
}

export function registerOtadata(parent: Command, ctx: CliContext): void {
  parent
    .command("otadata")
    .description(
      "Decode an otadata partition image (0x2000 bytes) and show what ESP-IDF's bootloader (v5.0-v6.x) " +
        "does with it: both copies with ota_seq, state and CRC check, which copy and slot it boots, " +
        "the order it tries the others in, and the otadata writes and eFuse burns it would make. " +
        "Give the layout with --partition-table, or with --ota-slots [--factory] [--test].",
    )
    .argument(
      "<file>",
      "otadata image, exactly 0x2000 bytes (plaintext: decrypt it first if flash encryption is on)",
    )
    .option("--json", "print the report as JSON instead of a table (default: table)")
    .option(
      "--partition-table <file>",
      "partition table (.csv or the .bin) to take the OTA slot count and factory/test apps from",
    )
    .option(
      "--ota-slots <n>",
      "number of OTA app partitions ota_0..ota_{n-1}, 0-16 (instead of --partition-table)",
      slotCountArg,
    )
    .option("--factory", "the table has a factory app (with --ota-slots; default: no)")
    .option("--test", "the table has a test app (with --ota-slots; default: no)")
    .option(
      "--rollback",
      "bootloader built with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (default: off, ESP-IDF's default)",
    )
    .option(
      "--anti-rollback-efuse <n>",
      "bootloader built with CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK, and the eFuse secure version is n " +
        "(set bits of SECURE_VERSION); implies --rollback (default: anti-rollback off)",
      parseIntArg,
    )
    .option(
      "--secure-version <slot=v>",
      "with --anti-rollback-efuse: secure_version of the app in ota_N, factory or test; repeat for " +
        "each (default: every app equal to the eFuse value, so none is refused or burnt)",
      secureVersionArg,
    )
    .addOption(
      new Option(
        "--secure-version-bits <n>",
        "CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD, the largest secure version the eFuse holds",
      )
        .argParser(bitsArg)
        .default(16, "16, the Kconfig default except ESP32 32, ESP32-C2 4, ESP32-C5 9"),
    )
    .option(
      "--test-pin",
      "CONFIG_BOOTLOADER_APP_TEST's GPIO is held at reset: boot the test app only (default: not held)",
    )
    .action((file: string, opts: Options) => {
      runOtadata(ctx, file, opts);
    });
}

function runOtadata(ctx: CliContext, file: string, opts: Options): void {
  if ((opts.partitionTable === undefined) === (opts.otaSlots === undefined)) {
    throw new EspOtaError("E_USAGE", "give exactly one of --partition-table and --ota-slots");
  }
  if (opts.partitionTable !== undefined && (opts.factory || opts.test)) {
    throw new EspOtaError(
      "E_USAGE",
      "--factory and --test go with --ota-slots; the partition table says which apps exist",
    );
  }
  if (opts.antiRollbackEfuse === undefined && (opts.secureVersion?.size ?? 0) > 0) {
    throw new EspOtaError("E_USAGE", "--secure-version needs --anti-rollback-efuse");
  }
  if (opts.antiRollbackEfuse !== undefined && opts.antiRollbackEfuse > opts.secureVersionBits) {
    throw new EspOtaError(
      "E_USAGE",
      `--anti-rollback-efuse ${opts.antiRollbackEfuse} does not fit a ${opts.secureVersionBits}-bit field (--secure-version-bits)`,
    );
  }

  let layout: OtaLayout;
  if (opts.partitionTable !== undefined) {
    const t = layoutFromTable(ctx, opts.partitionTable);
    layout = t.layout;
    if (!t.hasOtadata) {
      ctx.note(
        `note: ${opts.partitionTable} has no data/ota partition: the bootloader never reads otadata and boots the factory app`,
      );
    }
  } else {
    layout = { otaSlotCount: opts.otaSlots!, hasFactory: !!opts.factory, hasTest: !!opts.test };
  }

  const cfg: BootConfig = { rollback: !!opts.rollback };
  if (opts.testPin) cfg.testAppPin = true;
  const efuse = opts.antiRollbackEfuse;
  if (efuse !== undefined) {
    if (!opts.rollback) {
      ctx.note("note: anti-rollback depends on rollback (Kconfig), so rollback is on");
      cfg.rollback = true;
    }
    if (layout.otaSlotCount === 0) {
      throw new EspOtaError(
        "E_OTADATA_LAYOUT",
        "anti-rollback needs OTA app slots (ESP-IDF's anti-rollback path divides by their number)",
      );
    }
    const versions = opts.secureVersion ?? new Map<number, number>();
    for (const i of versions.keys()) {
      const exists =
        i === FACTORY_INDEX
          ? layout.hasFactory
          : i === TEST_APP_INDEX
            ? layout.hasTest
            : i < layout.otaSlotCount;
      if (!exists)
        throw new EspOtaError(
          "E_USAGE",
          `--secure-version ${indexName(i)}: the layout has no such app`,
        );
    }
    if (versions.size === 0) {
      ctx.note(
        `note: no --secure-version given: every app is taken to have secure_version ${efuse}`,
      );
    }
    cfg.antiRollback = {
      efuseSecureVersion: efuse,
      slotSecureVersion: (i) => versions.get(i) ?? efuse,
      secureVersionBits: opts.secureVersionBits,
    };
  }

  const data = ctx.readFile(file);
  if (data.length !== OTADATA_SIZE) {
    throw new EspOtaError(
      "E_OTADATA_SIZE",
      `${file} is ${data.length} bytes (0x${data.length.toString(16)}); an otadata image is 0x2000 bytes`,
      { path: file, length: data.length },
    );
  }
  const report = describeOtadata(data, layout, cfg);
  if (opts.json) {
    const { lines: _lines, ...machine } = report;
    ctx.print(
      JSON.stringify(
        { file, ...machine } satisfies Omit<OtadataReport, "lines"> & { file: string },
        null,
        2,
      ),
    );
    return;
  }
  ctx.print(`otadata: ${file}`);
  for (const line of report.lines) ctx.print(line);
}
