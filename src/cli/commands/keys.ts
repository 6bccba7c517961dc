/**
 * `esp-ota keys ...`: the operator keyring (docs/manifest.md "Keyring"). `init` creates the secure
 * boot signing key and the release-manifest keys with owner-only permissions; `export` writes the
 * trust policy a gateway needs. No command prints a private key: output names files, key ids,
 * public digests and the threshold, nothing else.
 */
import { resolve } from "node:path";
import { type Command, Option } from "commander";
import { toHex } from "../../bytes.js";
import { EspOtaError } from "../../errors.js";
import { describeScheme } from "../../esp/keys.js";
import { publicKeyDigestV2 } from "../../esp/secure-boot-v2.js";
import {
  encodeTrustPolicy,
  MANIFEST_KEY_ALGS,
  type ManifestKeyAlg,
} from "../../release/keyring.js";
import {
  addManifestKey,
  initKeyring,
  type Keyring,
  keyringTrustPolicy,
  loadKeyring,
  MAX_MANIFEST_KEYS,
  revokeManifestKey,
  SECURE_BOOT_CHOICES,
  type SecureBootChoice,
  TRUST_FILE,
} from "../../release/keyring-fs.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

/**
 * Default threshold: a majority of the manifest keys (1 of 1, 2 of 2, 2 of 3, 3 of 4): one stolen
 * key is not enough once there are two or more, and one lost key does not stop releases once
 * there are three or more.
 */
export function defaultThreshold(keys: number): number {
  return Math.floor(keys / 2) + 1;
}

function describeKeyring(ctx: CliContext, k: Keyring): void {
  const sbKey = k.secureBoot.keys[0]!;
  ctx.print(
    `  secure boot: V${k.secureBoot.version} ${describeScheme(sbKey.scheme)}, private key secure-boot-key-0.pem`,
  );
  ctx.print("    public key: secure-boot-key-0.pub.pem");
  if (k.secureBoot.version === 2) {
    // The digest is what `espefuse burn-key-digest` / the bootloader's first boot burns into eFuse.
    ctx.print(`    eFuse public key digest (SHA-256): ${toHex(publicKeyDigestV2(sbKey))}`);
  }
  const n = k.manifestKeys.length;
  ctx.print(`  manifest keys: ${n}, threshold ${k.threshold} of ${n}`);
  for (const m of k.manifestKeys) ctx.print(`    ${m.keyId}  ${m.alg}`);
  for (const id of k.revoked) ctx.print(`    ${id}  revoked`);
}

export function registerKeys(parent: Command, ctx: CliContext): void {
  const keys = parent
    .command("keys")
    .description("The operator keyring: secure boot signing key and release-manifest keys.");

  keys
    .command("init")
    .description(
      "Create a keyring in DIR (mode 0700, private key files 0600): a secure boot signing key, " +
        "release-manifest signing keys, and DIR/trust.json for the gateways. Refuses an existing keyring.",
    )
    .argument("<dir>", "keyring directory; must not exist or be empty")
    .addOption(
      new Option(
        "--secure-boot <scheme>",
        "secure boot signing key: v1 (ESP32 ECDSA P-256), v2-rsa3072 (every V2 chip but the C2), v2-ecdsa256 (C2, C6, H2, ...)",
      )
        .choices(SECURE_BOOT_CHOICES)
        .default("v2-rsa3072"),
    )
    .option(
      "--manifest-keys <n>",
      `number of manifest signing keys, 1..${MAX_MANIFEST_KEYS} (use 3 and keep them with different people for k of n)`,
      parseIntArg,
      1,
    )
    .addOption(
      new Option(
        "--manifest-alg <alg>",
        "manifest key algorithm: ecdsa-p256 is what HSMs and cloud KMSs offer; ed25519 is verified strictly",
      )
        .choices(MANIFEST_KEY_ALGS)
        .default("ecdsa-p256"),
    )
    .option(
      "--threshold <k>",
      "distinct manifest signatures a gateway requires (default: a majority of the keys)",
      parseIntArg,
    )
    .action(
      (
        dir: string,
        o: {
          secureBoot: SecureBootChoice;
          manifestKeys: number;
          manifestAlg: ManifestKeyAlg;
          threshold?: number;
        },
      ) => {
        if (o.manifestKeys < 1 || o.manifestKeys > MAX_MANIFEST_KEYS) {
          throw new EspOtaError("E_USAGE", `--manifest-keys must be 1..${MAX_MANIFEST_KEYS}`);
        }
        const threshold = o.threshold ?? defaultThreshold(o.manifestKeys);
        if (threshold < 1 || threshold > o.manifestKeys) {
          throw new EspOtaError(
            "E_USAGE",
            `--threshold must be 1..${o.manifestKeys} (the number of manifest keys), got ${threshold}`,
          );
        }
        const path = resolve(ctx.cwd, dir);
        const keyring = initKeyring(path, {
          secureBoot: o.secureBoot,
          manifestKeys: o.manifestKeys,
          manifestAlg: o.manifestAlg,
          threshold,
        });
        ctx.print(`keyring created in ${dir}`);
        describeKeyring(ctx, keyring);
        ctx.print(`  trust policy for gateways: ${dir}/${TRUST_FILE}`);
      },
    );

  keys
    .command("export")
    .description(
      "Write the trust policy a gateway needs (manifest public keys, revoked key ids, threshold) " +
        "to FILE, or print it. Checks the keyring first; prints no private key.",
    )
    .argument("<dir>", "keyring directory")
    .option("--out <file>", "write the trust policy here (mode 0644) instead of printing it")
    .action((dir: string, o: { out?: string }) => {
      const keyring = loadKeyring(resolve(ctx.cwd, dir));
      const policy = keyringTrustPolicy(keyring);
      const text = encodeTrustPolicy(policy);
      if (o.out === undefined) {
        ctx.stdout.write(text);
        return;
      }
      ctx.writeFile(o.out, text, 0o644);
      ctx.print(
        `trust policy written to ${o.out}: ${policy.keys.length} key(s), ${policy.revoked.length} revoked, threshold ${policy.threshold}`,
      );
    });

  keys
    .command("add")
    .description(
      "Key rotation: add a manifest key to the keyring and rewrite DIR/trust.json. Deploy that " +
        "trust policy to every gateway before releases depend on the new key.",
    )
    .argument("<dir>", "keyring directory")
    .addOption(
      new Option("--manifest-alg <alg>", "algorithm of the new key")
        .choices(MANIFEST_KEY_ALGS)
        .default("ecdsa-p256"),
    )
    .option("--threshold <k>", "new threshold (default: unchanged)", parseIntArg)
    .action((dir: string, o: { manifestAlg: ManifestKeyAlg; threshold?: number }) => {
      const path = resolve(ctx.cwd, dir);
      const { keyring, key } = withUsage(() => addManifestKey(path, o.manifestAlg, o.threshold));
      ctx.print(`added manifest key ${key.keyId} (${key.alg}) to ${dir}`);
      describeKeyring(ctx, keyring);
      ctx.print(
        `  trust policy for gateways: ${dir}/${TRUST_FILE} (deploy it before signing with the new key)`,
      );
    });

  keys
    .command("revoke")
    .description(
      "Revoke a manifest key: add its id to the trust policy's revoked list and delete its private " +
        "key file from the keyring. Deploy DIR/trust.json to every gateway.",
    )
    .argument("<dir>", "keyring directory")
    .argument("<key-id>", "id of the key to revoke (32 hex digits)")
    .option(
      "--threshold <k>",
      "new threshold, needed when too few keys would be left (default: unchanged)",
      parseIntArg,
    )
    .action((dir: string, keyId: string, o: { threshold?: number }) => {
      if (!/^[0-9a-f]{32}$/.test(keyId))
        throw new EspOtaError("E_USAGE", `${keyId} is not a key id (32 lowercase hex digits)`);
      const path = resolve(ctx.cwd, dir);
      const keyring = withUsage(() => revokeManifestKey(path, keyId, o.threshold));
      ctx.print(`revoked manifest key ${keyId} in ${dir}`);
      describeKeyring(ctx, keyring);
      ctx.print(`  trust policy for gateways: ${dir}/${TRUST_FILE} (deploy it now)`);
    });
}

/** The library's RangeErrors here are about the user's numbers: report them as usage errors. */
function withUsage<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof RangeError) throw new EspOtaError("E_USAGE", e.message);
    throw e;
  }
}
