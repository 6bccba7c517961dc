/**
 * `esp-ota image-info [--json] [--chip CHIP] [--kind KIND] FILE`: esptool v5's `image-info`
 * report, plus every problem the bootloader would find, each with its code. Exit 0 when the image
 * is valid, 1 with the first problem's code when it is not (docs/errors.md, "App image").
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { toHex } from "../../bytes.js";
import { EspOtaError, isEspOtaError } from "../../errors.js";
import { type ChipName, chipByName, memoryTypes } from "../../esp/chips.js";
import {
  formatImageInfo,
  type ImageKind,
  type ImageProblem,
  type ParsedImage,
  verifyImage,
} from "../../esp/image.js";
import { choice } from "../args.js";
import type { CliContext } from "../context.js";

interface ImageInfoOptions {
  json?: boolean;
  chip?: ChipName;
  kind: ImageKind;
}

function parseChip(value: string): ChipName {
  try {
    return chipByName(value).name;
  } catch (e) {
    if (isEspOtaError(e)) throw new InvalidArgumentError(e.message);
    throw e;
  }
}

const FLASH_SIZES = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"];
const FLASH_MODES = ["qio", "qout", "dio", "dout", "fast_read", "slow_read"];

/** The `--json` document: numbers as JSON numbers, byte strings as lowercase hex. */
export function imageInfoJson(
  file: string,
  bytes: Uint8Array,
  image: ParsedImage | undefined,
  problems: readonly ImageProblem[],
): Record<string, unknown> {
  const doc: Record<string, unknown> = { file, size: bytes.length, valid: problems.length === 0 };
  if (image) {
    const h = image.header;
    const chip = image.chip;
    Object.assign(doc, {
      chip: chip?.name ?? null,
      header: {
        ...h,
        flashSize: FLASH_SIZES[h.spiSize] ?? null,
        flashFreq: chip?.flashFrequencies.find(([, v]) => v === h.spiSpeed)?.[0] ?? null,
        flashMode: FLASH_MODES[h.spiMode] ?? null,
      },
      segments: image.segments.map((s, index) => ({
        index,
        ...s,
        memoryTypes: chip ? memoryTypes(chip, s.loadAddr) : [],
      })),
      checksum: {
        offset: image.checksumOffset,
        stored: image.storedChecksum,
        computed: image.computedChecksum,
        valid: image.storedChecksum === image.computedChecksum,
      },
      hash:
        image.hashOffset === undefined
          ? null
          : {
              offset: image.hashOffset,
              stored: toHex(image.storedHash!),
              computed: toHex(image.computedHash!),
              valid: toHex(image.storedHash!) === toHex(image.computedHash!),
            },
      imageEnd: image.imageEnd,
      appDesc: image.appDesc
        ? { ...image.appDesc, appElfSha256: toHex(image.appDesc.appElfSha256) }
        : null,
    });
  }
  doc.problems = problems.map((p) => ({ ...p }));
  return doc;
}

function problemLine(p: ImageProblem): string {
  const at = p.offset === undefined ? "" : ` (at 0x${p.offset.toString(16)})`;
  return `${p.code}: ${p.message}${at}`;
}

export function registerImageInfo(parent: Command, ctx: CliContext): void {
  parent
    .command("image-info")
    .description(
      "Show an ESP32 app or bootloader image as esptool v5 `image-info` does (header, segments, checksum, SHA-256, app description) and list every problem the bootloader would refuse it for. Exit 0 if valid, 1 if not.",
    )
    .argument(
      "<file>",
      "the image (.bin from idf.py build / esptool elf2image; plaintext, not flash-encrypted)",
    )
    .option("--json", "print a JSON document instead of the text report (default: text)")
    .option(
      "--chip <chip>",
      "also check the header's chip id against this target, as the bootloader does (default: only that the id is known)",
      parseChip,
    )
    .addOption(
      new Option(
        "--kind <kind>",
        "which image the checks assume: app (segment 0 must hold esp_app_desc_t, max chip revision applies), bootloader, or any (structure and integrity only, like esptool)",
      )
        .argParser(choice(["any", "app", "bootloader"] as const))
        .default("any"),
    )
    .action((file: string, opts: ImageInfoOptions) => {
      const bytes = ctx.readFile(file);
      const v = verifyImage(bytes, { kind: opts.kind, ...(opts.chip ? { chip: opts.chip } : {}) });
      const problems = v.ok ? [] : v.problems;
      if (opts.json) {
        ctx.print(JSON.stringify(imageInfoJson(file, bytes, v.image, problems), null, 2));
      } else if (v.image) {
        ctx.stdout.write(formatImageInfo(bytes));
        if (problems.length > 0) {
          ctx.print();
          ctx.print("Problems");
          ctx.print("========");
          for (const p of problems) ctx.print(problemLine(p));
        }
      }
      if (problems.length > 0) {
        const first = problems[0]!;
        const more =
          problems.length > 1
            ? ` (${problems.length} problems: ${problems.map((p) => p.code).join(", ")})`
            : "";
        throw new EspOtaError(first.code, `${file}: ${first.message}${more}`, {
          file,
          offset: first.offset,
        });
      }
    });
}
