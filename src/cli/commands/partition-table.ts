/**
 * `esp-ota partition-table`: gen_esp32part.py's command line (ESP-IDF v6.0.x), so the same
 * invocation works here: CSV in -> 0xC00-byte binary out, binary in -> CSV out.
 */
import { type Command, Option } from "commander";
import { EspOtaError } from "../../errors.js";
import {
  decodeCsvText,
  decodePartitionTable,
  encodePartitionTable,
  type PartitionTableOptions,
  parsePartitionCsv,
  partitionsToCsv,
  sniffPartitionTable,
} from "../../esp/partition-table.js";
import { choice, parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

/** gen_esp32part's --flash-size choices. */
const FLASH_SIZES = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"] as const;

interface Options {
  flashSize?: (typeof FLASH_SIZES)[number];
  offset: number;
  disableMd5sum?: boolean;
  secure?: true | "v1" | "v2";
  verify: boolean;
  primaryBootloaderOffset?: number;
  recoveryBootloaderOffset?: number;
  quiet?: boolean;
}

export function registerPartitionTable(parent: Command, ctx: CliContext): void {
  parent
    .command("partition-table")
    .description(
      "Convert an ESP-IDF partition table between CSV and binary, as gen_esp32part.py does: a CSV input " +
        "gives the 0xC00-byte binary, a binary input (it starts with AA 50) gives CSV. Every " +
        "gen_esp32part check runs first.",
    )
    .argument(
      "<input>",
      "partition table file: CSV text, or the binary (detected from its first bytes)",
    )
    .argument(
      "[output]",
      'file to write; omitted or "-": stdout (binary output to a terminal is refused: give a file)',
    )
    .option(
      "--flash-size <size>",
      `check that the partitions fit in this much flash (${FLASH_SIZES.join(", ")}); default: no check`,
      choice(FLASH_SIZES),
    )
    .addOption(
      new Option(
        "-o, --offset <offset>",
        "partition table offset, CONFIG_PARTITION_TABLE_OFFSET; partitions start after its 4 KB sector",
      )
        .argParser(parseIntArg)
        .default(0x8000, "0x8000"),
    )
    .option(
      "--disable-md5sum",
      "write no MD5 entry, and read EB EB entries as errors; for bootloaders older than ESP-IDF v3.1 " +
        "(default: MD5 entry on, as CONFIG_PARTITION_TABLE_MD5)",
    )
    .option(
      "--secure [version]",
      "require app partitions to suit secure boot: v1 (sizes multiples of 64 KB; the version taken " +
        "when none is given) or v2 (4 KB, as without secure boot); default: no secure boot",
      choice(["v1", "v2"] as const),
    )
    .option(
      "--no-verify",
      "skip the table checks (syntax, field ranges and --flash-size still apply)",
    )
    .option(
      "--primary-bootloader-offset <offset>",
      "CONFIG_BOOTLOADER_OFFSET_IN_FLASH (0x1000 on ESP32, 0x0 on most later chips); needed only " +
        "by bootloader-type partitions; no default",
      parseIntArg,
    )
    .option(
      "--recovery-bootloader-offset <offset>",
      "recovery bootloader address; needed only by a bootloader/recovery partition; no default",
      parseIntArg,
    )
    .option("-q, --quiet", "print no summary on stderr (warnings still print)")
    .action((input: string, output: string | undefined, o: Options) => {
      const data = ctx.readFile(input);
      const md5 = !o.disableMd5sum;
      const opts: PartitionTableOptions = {
        tableOffset: o.offset,
        secureBootV1: o.secure === true || o.secure === "v1",
        verify: o.verify,
        md5,
        // gen_esp32part expands $VARS in the CSV from the environment; the CLI is the edge that
        // may read it (the library takes it as a parameter).
        env: process.env,
        onWarning: (m) => ctx.note(`warning: ${m}`),
        ...(o.flashSize ? { flashSize: Number.parseInt(o.flashSize, 10) * 1024 * 1024 } : {}),
        ...(o.primaryBootloaderOffset !== undefined
          ? { primaryBootloaderOffset: o.primaryBootloaderOffset }
          : {}),
        ...(o.recoveryBootloaderOffset !== undefined
          ? { recoveryBootloaderOffset: o.recoveryBootloaderOffset }
          : {}),
      };
      const toStdout = output === undefined || output === "-";

      if (sniffPartitionTable(data) === "binary") {
        const { partitions, md5: md5State } = decodePartitionTable(data, opts);
        const csv = partitionsToCsv(partitions);
        if (toStdout) ctx.stdout.write(csv);
        else ctx.writeFile(output, csv);
        if (!o.quiet) {
          ctx.note(
            `${input}: binary table, ${partitions.length} partitions, MD5 ${md5State === "ok" ? "ok" : "entry absent"} -> CSV${toStdout ? "" : ` ${output}`}`,
          );
        }
        return;
      }

      const partitions = parsePartitionCsv(decodeCsvText(data), opts);
      const bin = encodePartitionTable(partitions, { md5 });
      if (toStdout) {
        if (ctx.stdout.isTTY) {
          throw new EspOtaError(
            "E_USAGE",
            "the binary partition table would be written to the terminal: give an output file, e.g. `esp-ota partition-table partitions.csv partitions.bin`",
          );
        }
        // Piped stdout takes the raw bytes, as gen_esp32part writes to sys.stdout.buffer.
        // OutputSink is typed for text; process.stdout also accepts a Uint8Array.
        (ctx.stdout as unknown as { write(chunk: Uint8Array): unknown }).write(bin);
      } else {
        ctx.writeFile(output, bin);
      }
      if (!o.quiet) {
        ctx.note(
          `${input}: ${partitions.length} partitions -> binary table (0x${bin.length.toString(16)} bytes, ${md5 ? "with" : "without"} MD5 entry)${toStdout ? "" : ` ${output}`}`,
        );
      }
    });
}
