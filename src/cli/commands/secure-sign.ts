/**
 * `esp-ota secure ...`: the secure boot verbs of espsecure v5 (esptool `espsecure/__init__.py`),
 * same options and, where a script may read them, the same output lines. The underscore spellings
 * of espsecure v4 (`sign_data`, `--append_signatures`) are accepted as aliases, as espsecure v5 does.
 * Failures are coded errors (exit 1); a failed verification exits 1 with the E_SIG_* code that
 * says what failed. No command ever prints key material.
 */
import { resolve } from "node:path";
import { type Command, Option } from "commander";
import { EspOtaError, isEspOtaError } from "../../errors.js";
import type { SigningKey, SigningScheme } from "../../esp/keys.js";
import type { VerifyResult } from "../../esp/secure-boot-v1.js";
import type { CliContext } from "../context.js";

/**
 * The signing code, imported before a verb of this file runs rather than with the module:
 * keys.ts pulls in @noble/curves, most of what `esp-ota secure --help` would otherwise load
 * (issue 13 item 7; docs/benchmarks.md "CLI start-up").
 */
let keys: typeof import("../../esp/keys.js");
let sbv1: typeof import("../../esp/secure-boot-v1.js");
let sbv2: typeof import("../../esp/secure-boot-v2.js");
async function loadSigning(): Promise<void> {
  [keys, sbv1, sbv2] = await Promise.all([
    import("../../esp/keys.js"),
    import("../../esp/secure-boot-v1.js"),
    import("../../esp/secure-boot-v2.js"),
  ]);
}

type Version = "1" | "2";
const VERSIONS = ["1", "2"] as const;
const SCHEMES = ["rsa3072", "ecdsa192", "ecdsa256", "ecdsa384"] as const;

/** Reads and parses a key file; the error names the file. */
function loadKey(ctx: CliContext, path: string): SigningKey {
  const bytes = ctx.readFile(path);
  try {
    return keys.parseSigningKey(bytes);
  } catch (e) {
    if (isEspOtaError(e))
      throw new EspOtaError(e.code, `${path}: ${e.message}`, { ...e.context, path }, e);
    throw e;
  }
}

/** espsecure _check_output_is_not_input: never overwrite an input (a key above all) with output. */
function checkNotSame(ctx: CliContext, input: string, output: string): void {
  if (resolve(ctx.cwd, input) === resolve(ctx.cwd, output)) {
    throw new EspOtaError(
      "E_USAGE",
      `The input "${input}" and output "${output}" should not be the same!`,
      {
        input,
        output,
      },
    );
  }
}

function failed(result: VerifyResult): never {
  if (result.ok) throw new EspOtaError("E_INTERNAL", "failed() called with a successful result");
  throw new EspOtaError(result.code, result.reason);
}

function curveName(scheme: SigningScheme): string {
  // espsecure's wording: "ECDSA NIST256p private key ...", "RSA 3072 private key ...".
  return scheme === "rsa3072" ? "RSA 3072" : `ECDSA NIST${scheme.slice(5)}p`;
}

export function registerSecureSign(parent: Command, ctx: CliContext): void {
  const others = new Set(parent.commands);
  parent
    .command("generate-signing-key")
    .alias("generate_signing_key")
    .description(
      "Generate a private key for signing secure boot images (PEM: SEC1 for ECDSA, PKCS#1 for RSA). " +
        "Written with mode 0600; an existing file is never overwritten.",
    )
    .addOption(
      new Option("-v, --version <version>", "secure boot signing scheme version")
        .choices(VERSIONS)
        .default("1"),
    )
    .addOption(
      new Option(
        "-s, --scheme <scheme>",
        "key type; V1 takes only ecdsa256 (its default), V2 defaults to rsa3072 (ecdsa192: ESP32-C2; ecdsa384: newer chips)",
      ).choices(SCHEMES),
    )
    .argument("<keyfile>", "where to write the private key")
    .action((keyfile: string, o: { version: Version; scheme?: SigningScheme }) => {
      let scheme: SigningScheme;
      if (o.version === "1") {
        if (o.scheme !== undefined && o.scheme !== "ecdsa256") {
          throw new EspOtaError("E_USAGE", "V1 only supports ECDSA256.", { scheme: o.scheme });
        }
        scheme = "ecdsa256";
      } else {
        scheme = o.scheme ?? "rsa3072";
      }
      ctx.createSecretFile(keyfile, keys.generateSigningKeyPem(scheme));
      ctx.print(`${curveName(scheme)} private key in PEM format written to "${keyfile}".`);
    });

  parent
    .command("extract-public-key")
    .alias("extract_public_key")
    .description(
      "Extract the public verification key: V1 writes raw X||Y (64 bytes, big-endian), V2 a PEM SubjectPublicKeyInfo.",
    )
    .addOption(
      new Option("-v, --version <version>", "secure boot signing scheme version")
        .choices(VERSIONS)
        .default("1"),
    )
    .requiredOption(
      "-k, --keyfile <file>",
      "private key (PEM) to take the public key from; a public key also works",
    )
    .argument("<public-keyfile>", "where to write the public key")
    .action((out: string, o: { version: Version; keyfile: string }) => {
      checkNotSame(ctx, o.keyfile, out);
      const key = loadKey(ctx, o.keyfile);
      ctx.writeFile(out, o.version === "1" ? sbv1.extractPublicKeyV1(key) : keys.publicKeyPem(key));
      ctx.print(`"${o.keyfile}" public key extracted to "${out}".`);
    });

  parent
    .command("digest-sbv2-public-key")
    .aliases(["digest_sbv2_public_key", "digest-rsa-public-key", "digest_rsa_public_key"])
    .description(
      "Write the SHA-256 digest of a Secure Boot V2 public key: the 32 bytes burned into an eFuse key digest slot.",
    )
    .requiredOption("-k, --keyfile <file>", "private or public key in PEM format")
    .requiredOption("-o, --output <file>", "output file for the 32-byte digest")
    .action((o: { keyfile: string; output: string }) => {
      checkNotSame(ctx, o.keyfile, o.output);
      const key = loadKey(ctx, o.keyfile);
      ctx.print(`Writing the public key digest of "${o.keyfile}" to "${o.output}".`);
      ctx.writeFile(o.output, sbv2.publicKeyDigestV2(key));
    });

  parent
    .command("digest-private-key")
    .alias("digest_private_key")
    .description(
      "Write the SHA-256 digest of a V1 (ECDSA P-256) private key: the reflashable secure bootloader key. " +
        "It is a secret: written with mode 0600.",
    )
    .requiredOption("-k, --keyfile <file>", "private key file (PEM format)")
    .addOption(
      new Option("-l, --keylen <bits>", "digest length in bits; 3/4 Coding Scheme eFuse needs 192")
        .choices(["192", "256"])
        .default("256"),
    )
    .argument("<digest-file>", "where to write the digest")
    .action((out: string, o: { keyfile: string; keylen: "192" | "256" }) => {
      checkNotSame(ctx, o.keyfile, out);
      const key = loadKey(ctx, o.keyfile);
      ctx.writeFile(out, sbv1.digestPrivateKeyV1(key, o.keylen === "192" ? 192 : 256), 0o600);
      const truncated = o.keylen === "192" ? " (truncated to 192 bits)" : "";
      ctx.print(`SHA-256 digest of private key "${o.keyfile}"${truncated} written to "${out}".`);
    });

  parent
    .command("sign-data")
    .alias("sign_data")
    .description(
      "Sign a data file for secure boot: V1 appends a 68-byte ECDSA block; V2 pads to 4 KB with 0xFF and " +
        "appends a 4 KB signature sector with one block per key (up to 3).",
    )
    .addOption(
      new Option("-v, --version <version>", "secure boot signing scheme version")
        .choices(VERSIONS)
        .makeOptionMandatory(),
    )
    .option(
      "-k, --keyfile <files...>",
      "private key file(s) in PEM format; V2 takes up to 3 (the list runs to the next option, so put DATAFILE before --keyfile or another option after it)",
    )
    .option("-o, --output <file>", "output file (default: sign the input file in place)")
    .option(
      "-a, --append-signatures",
      "V2: keep the valid blocks of an already signed image and add these keys' blocks",
    )
    .addOption(new Option("--append_signatures").hideHelp())
    .option("--skip-padding", "V2: do not pad the data to a 4 KB boundary (default: pad with 0xFF)")
    .argument("<datafile>", "the data (app or bootloader image) to sign")
    .action(
      (
        datafile: string,
        o: {
          version: Version;
          keyfile?: string[];
          output?: string;
          appendSignatures?: boolean;
          append_signatures?: boolean;
          skipPadding?: boolean;
        },
      ) => {
        const keyfiles = o.keyfile ?? [];
        if (keyfiles.length === 0) throw new EspOtaError("E_USAGE", "sign-data needs --keyfile");
        const output = o.output ?? datafile;
        if (o.output !== undefined) checkNotSame(ctx, datafile, o.output);
        for (const k of keyfiles) checkNotSame(ctx, k, output);
        const data = ctx.readFile(datafile);
        if (o.version === "1") {
          if (keyfiles.length > 1)
            throw new EspOtaError("E_USAGE", "Secure Boot V1 only supports one signing key.");
          ctx.writeFile(output, sbv1.signDataV1(data, loadKey(ctx, keyfiles[0]!)));
          ctx.print(`Signed ${data.length} bytes of data from "${datafile}".`);
          return;
        }
        signV2(ctx, datafile, data, output, keyfiles, {
          append: o.appendSignatures === true || o.append_signatures === true,
          skipPadding: o.skipPadding === true,
        });
      },
    );

  parent
    .command("verify-signature")
    .alias("verify_signature")
    .description(
      "Verify a file signed by sign-data with a public or private key. Exit 0 only when the signature is " +
        "valid; otherwise exit 1 with an E_SIG_* code saying what failed.",
    )
    .addOption(
      new Option("-v, --version <version>", "secure boot scheme version")
        .choices(VERSIONS)
        .makeOptionMandatory(),
    )
    .requiredOption(
      "-k, --keyfile <file>",
      "public key (PEM, or V1 raw 64-byte .bin) or private key (PEM)",
    )
    .option(
      "--skip-padding",
      "V2: accept a file signed with --skip-padding (default: require 4 KB alignment)",
    )
    .argument("<datafile>", "the signed file")
    .action((datafile: string, o: { version: Version; keyfile: string; skipPadding?: boolean }) => {
      const key = loadKey(ctx, o.keyfile);
      const signed = ctx.readFile(datafile);
      if (o.version === "1") {
        const result = sbv1.verifySignedV1(signed, key);
        // espsecure prints this after reading the block's version word, before the ECDSA check.
        if (result.ok || result.code === "E_SIG_MISMATCH") {
          ctx.print(`Verifying ${signed.length - sbv1.SBV1_BLOCK_LENGTH} bytes of data...`);
        }
        if (!result.ok) failed(result);
        ctx.print("Signature is valid.");
        return;
      }
      const report = sbv2.verifySignedV2Report(signed, key, {
        skipPadding: o.skipPadding === true,
      });
      const keyType = key.scheme === "rsa3072" ? "RSA" : "ECDSA";
      for (const b of report.blocks) {
        if (b.outcome === "absent") {
          ctx.print(`Signature block ${b.index} invalid. Skipping.`);
          continue;
        }
        ctx.print(
          `Signature block ${b.index} is valid (${b.scheme === "rsa3072" ? "RSA" : "ECDSA"}).`,
        );
        if (b.outcome === "verified") {
          ctx.print(
            `Signature block ${b.index} verification successful using the supplied key (${keyType}).`,
          );
        } else if (b.outcome === "digest-mismatch") {
          ctx.print(
            `Signature block ${b.index} image digest does not match the actual image digest.`,
          );
        } else {
          ctx.print(
            `Signature block ${b.index} is not signed by the supplied key. Checking the next block...`,
          );
        }
      }
      if (!report.result.ok) failed(report.result);
    });

  parent
    .command("signature-info-v2")
    .alias("signature_info_v2")
    .description(
      "Check the Secure Boot V2 signature blocks and print the public key digest of each valid block.",
    )
    .argument("<datafile>", "the V2 signed file")
    .action((datafile: string) => {
      sbv2.signatureInfoV2Lines(ctx.readFile(datafile), (line) => ctx.print(line));
    });

  for (const verb of parent.commands) if (!others.has(verb)) verb.hook("preAction", loadSigning);
}

function signV2(
  ctx: CliContext,
  datafile: string,
  data: Uint8Array,
  output: string,
  keyfiles: string[],
  o: { append: boolean; skipPadding: boolean },
): void {
  const keys = keyfiles.map((k) => loadKey(ctx, k));
  // espsecure checks the block count after looking at the existing blocks; the message is the same.
  if (keys.length > sbv2.SIG_BLOCK_MAX_COUNT) {
    throw new EspOtaError(
      "E_SIG_SECTOR_FULL",
      `Number of keys (${keys.length}) more than the empty signature blocks (${sbv2.SIG_BLOCK_MAX_COUNT}).`,
    );
  }
  let signed: Uint8Array;
  let blocks = keys.length;
  const aligned = data.length % sbv2.SIG_SECTOR_SIZE === 0;
  if (o.append && aligned && data.length > 0) {
    // espsecure only appends to a sector-aligned file; an unaligned one is padded and signed afresh.
    const r = sbv2.appendSignaturesV2(data, keys);
    if (r.keptBlocks === 0) {
      ctx.print(
        "No valid signature blocks found. Discarding --append-signature and proceeding to sign the image afresh.",
      );
    } else {
      const sectorAt = data.length - sbv2.SIG_SECTOR_SIZE;
      for (let i = 0; i < r.keptBlocks; i++) {
        const version = data[sectorAt + i * sbv2.SIG_BLOCK_SIZE + 1];
        ctx.print(
          `Signature block ${i} is valid (${version === sbv2.SIG_BLOCK_VERSION_RSA ? "RSA" : "ECDSA"}).`,
        );
      }
      ctx.print(
        `${r.keptBlocks} valid signature block(s) already present in the signature sector.`,
      );
    }
    ctx.print(`${keys.length} signing key(s) found.`);
    signed = r.signed;
    blocks += r.keptBlocks;
  } else {
    if (!aligned && o.skipPadding) {
      ctx.print("Skipping sector padding. Data contents are not sector aligned.");
    } else if (!aligned) {
      ctx.print(
        `Padding data contents by ${sbv2.paddingV2(data.length)} bytes so signature sector aligns at sector boundary.`,
      );
    }
    ctx.print(`${keys.length} signing key(s) found.`);
    signed = sbv2.signDataV2(data, keys, { skipPadding: o.skipPadding });
  }
  ctx.writeFile(output, signed);
  ctx.print(
    `Signed ${signed.length - sbv2.SIG_SECTOR_SIZE} bytes of data from "${datafile}". Signature sector now has ${blocks} signature blocks.`,
  );
}
