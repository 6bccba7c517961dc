/**
 * `esp-ota release verify`: the gateway's manifest checks (docs/manifest.md "Verification"), for
 * an operator to run before publishing. Exit 0 only when everything verifies; otherwise the error
 * code names the check that failed (E_MANIFEST_*). With --image it also streams the ciphertext
 * through SHA-256 (bounded memory, whatever the image size) and matches it to its variant.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { EspOtaError } from "../../errors.js";
import { chipByName } from "../../esp/chips.js";
import { readTrustPolicy } from "../../release/keyring-fs.js";
import {
  manifestCheckError,
  type ReleaseManifest,
  verifyManifest,
} from "../../release/manifest.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

interface VerifyOptions {
  trust: string;
  device?: string;
  chip?: string;
  minCounter?: number;
  now?: string;
  image?: string;
}

/** Size and SHA-256 of a file, read as a stream. */
export async function hashFile(path: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  let size = 0;
  try {
    for await (const chunk of createReadStream(path)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_READ",
      `cannot read ${path}: ${(e as Error).message}`,
      { path },
      e,
    );
  }
  return { size, sha256: hash.digest("hex") };
}

function parseNow(value: string | undefined): Date {
  if (value === undefined) return new Date();
  const d = new Date(value);
  if (Number.isNaN(d.getTime()))
    throw new EspOtaError("E_USAGE", `--now ${value} is not an ISO 8601 time`);
  return d;
}

function hexOffset(n: number): string {
  return `0x${n.toString(16)}`;
}

export function registerReleaseVerify(parent: Command, ctx: CliContext): void {
  parent
    .command("verify")
    .description(
      "Verify a signed release manifest as a gateway does: schema, k-of-n signatures by trusted, " +
        "non-revoked keys, device, chip, expiry, release counter; with --image, the ciphertext's size and SHA-256.",
    )
    .argument("<manifest>", "signed manifest (JSON)")
    .requiredOption("--trust <file>", "trust policy (trust.json from `esp-ota keys export`)")
    .option("--device <id>", "require the manifest to be for this device id")
    .option("--chip <chip>", "require the manifest to be for this chip (esptool name)")
    .option(
      "--min-counter <n>",
      "lowest release counter accepted (the last installed counter + 1); default: no check",
      parseIntArg,
    )
    .option("--now <time>", "check expiry at this ISO 8601 time instead of the clock")
    .option(
      "--image <file>",
      "also check this ciphertext file against the variant whose SHA-256 it has",
    )
    .action(async (manifestPath: string, o: VerifyOptions) => {
      const now = parseNow(o.now);
      const chip = o.chip === undefined ? undefined : chipByName(o.chip).name;
      const policy = readTrustPolicy(resolve(ctx.cwd, o.trust));
      const check = verifyManifest(ctx.readFile(manifestPath), policy, {
        now,
        ...(o.device === undefined ? {} : { deviceId: o.device }),
        ...(chip === undefined ? {} : { chip }),
        ...(o.minCounter === undefined ? {} : { minCounter: o.minCounter }),
      });
      if (!check.ok) throw manifestCheckError(check);
      for (const g of check.ignored)
        ctx.note(`note: ignored signature ${g.index} (${g.code}): ${g.reason}`);
      printManifest(ctx, check.manifest, check.keyIds, policy.threshold);
      if (o.image !== undefined) await checkImage(ctx, o.image, check.manifest);
    });
}

function printManifest(
  ctx: CliContext,
  m: ReleaseManifest,
  keyIds: string[],
  threshold: number,
): void {
  ctx.print(`manifest OK: release ${m.releaseId} for device ${m.deviceId} (${m.chip})`);
  ctx.print(
    `  app: ${m.project} ${m.version}, secure_version ${m.secureVersion}, release counter ${m.counter}`,
  );
  ctx.print(`  signatures: ${keyIds.length} valid, ${threshold} required (${keyIds.join(", ")})`);
  ctx.print(`  issued ${m.issuedAt}, expires ${m.expiresAt}`);
  ctx.print(`  partition table SHA-256: ${m.partitionTableSha256}`);
  for (const v of m.variants) {
    ctx.print(`  ${v.slot} at ${hexOffset(v.offset)}: ${v.size} bytes, SHA-256 ${v.sha256}`);
  }
}

async function checkImage(ctx: CliContext, path: string, m: ReleaseManifest): Promise<void> {
  const { size, sha256 } = await hashFile(resolve(ctx.cwd, path));
  const variant = m.variants.find((v) => v.sha256 === sha256);
  if (!variant) {
    throw new EspOtaError(
      "E_MANIFEST_IMAGE_MISMATCH",
      `${path} (SHA-256 ${sha256}) is none of the manifest's variants (${m.variants.map((v) => v.slot).join(", ")})`,
      { path, sha256 },
    );
  }
  if (variant.size !== size) {
    throw new EspOtaError(
      "E_MANIFEST_IMAGE_SIZE",
      `${path} is ${size} bytes, but variant ${variant.slot} says ${variant.size}`,
      { path, size, expected: variant.size },
    );
  }
  ctx.print(
    `image OK: ${path} is the ${variant.slot} variant (${hexOffset(variant.offset)}), ${size} bytes`,
  );
}
