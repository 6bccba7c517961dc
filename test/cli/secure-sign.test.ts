import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { runCapture } from "../helpers/cli.js";
import { fixtureJson, fixturePath, fixtureText } from "../helpers/fixtures.js";

const sbv2 = fixtureJson("sbv2/expected.json");
let dir: string;
/** Everything any command printed, to check that no key material ever appears. */
const allOutput: string[] = [];

async function run(...argv: string[]) {
  const r = await runCapture(["secure", ...argv], dir);
  allOutput.push(r.stdout, r.stderr);
  return r;
}

const fx = (p: string) => fixturePath(p);
const read = (name: string) => readFileSync(join(dir, name));

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "esp-ota-secure-sign-"));
});

describe("generate-signing-key", () => {
  it("V1 writes a P-256 SEC1 PEM with mode 0600 and refuses to overwrite it", async () => {
    const r = await run("generate-signing-key", "--version", "1", "v1.pem");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('ECDSA NIST256p private key in PEM format written to "v1.pem".\n');
    const pem = read("v1.pem").toString();
    expect(pem).toMatch(/^-----BEGIN EC PRIVATE KEY-----\n/);
    expect(statSync(join(dir, "v1.pem")).mode & 0o777).toBe(0o600);
    const again = await run("generate-signing-key", "v1.pem");
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error E_KEY_EXISTS: key file v1.pem already exists/);
    expect(read("v1.pem").toString()).toBe(pem);
  });

  it("V2 defaults to RSA-3072; --scheme picks an ECDSA curve; the underscore spelling works", async () => {
    const rsa = await run("generate-signing-key", "--version", "2", "rsa.pem");
    expect(rsa.stdout).toBe('RSA 3072 private key in PEM format written to "rsa.pem".\n');
    expect(read("rsa.pem").toString()).toMatch(/^-----BEGIN RSA PRIVATE KEY-----\n/);
    const p384 = await run("generate_signing_key", "-v", "2", "-s", "ecdsa384", "sub/p384.pem");
    expect(p384.code).toBe(0);
    expect(p384.stdout).toBe(
      'ECDSA NIST384p private key in PEM format written to "sub/p384.pem".\n',
    );
    expect(statSync(join(dir, "sub/p384.pem")).mode & 0o777).toBe(0o600);
  });

  it("V1 with another scheme is a usage error and writes nothing", async () => {
    const r = await run("generate-signing-key", "--version", "1", "--scheme", "rsa3072", "no.pem");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_USAGE: V1 only supports ECDSA256/);
    expect(existsSync(join(dir, "no.pem"))).toBe(false);
    expect((await run("generate-signing-key", "--scheme", "ed25519", "no.pem")).code).toBe(2);
  });
});

describe("key extraction and digests are byte-exact with espsecure", () => {
  it.each([
    ["1", "sbv1/sbv1_key.pem", "sbv1/sbv1_pubkey.bin"],
    ["2", "sbv2/sbv2_rsa3072_key.pem", "sbv2/sbv2_rsa3072_pubkey.pem"],
    ["2", "sbv2/sbv2_ecdsa256_key.pem", "sbv2/sbv2_ecdsa256_pubkey.pem"],
  ])("extract-public-key --version %s --keyfile %s", async (version, key, want) => {
    const r = await run(
      "extract-public-key",
      "--version",
      version,
      "--keyfile",
      fx(key),
      "pub.out",
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`"${fx(key)}" public key extracted to "pub.out".\n`);
    expect(toHex(read("pub.out"))).toBe(toHex(readFileSync(fx(want))));
  });

  it.each([
    ["sbv2/sbv2_rsa3072_key.pem", "sbv2/sbv2_rsa3072_pubkey_digest.bin"],
    ["sbv2/sbv2_rsa3072_pubkey.pem", "sbv2/sbv2_rsa3072_pubkey_digest.bin"],
    ["sbv2/sbv2_ecdsa256_key.pem", "sbv2/sbv2_ecdsa256_pubkey_digest.bin"],
    ["sbv2/sbv2_ecdsa256_pubkey.pem", "sbv2/sbv2_ecdsa256_pubkey_digest.bin"],
  ])("digest-sbv2-public-key --keyfile %s", async (key, want) => {
    const r = await run("digest-sbv2-public-key", "--keyfile", fx(key), "--output", "digest.bin");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`Writing the public key digest of "${fx(key)}" to "digest.bin".\n`);
    expect(toHex(read("digest.bin"))).toBe(toHex(readFileSync(fx(want))));
  });

  it("digest_rsa_public_key (deprecated espsecure name) still works", async () => {
    const r = await run(
      "digest_rsa_public_key",
      "-k",
      fx("sbv2/sbv2_rsa3072_key.pem"),
      "-o",
      "d2.bin",
    );
    expect(r.code).toBe(0);
    expect(toHex(read("d2.bin"))).toBe(sbv2.schemes.rsa3072.pubkey_digest_hex);
  });

  it("digest-private-key writes the secret digest with mode 0600; --keylen 192 truncates", async () => {
    const want = readFileSync(fx("sbv1/sbv1_private_key_digest.bin"));
    const r = await run("digest-private-key", "--keyfile", fx("sbv1/sbv1_key.pem"), "pk.bin");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      `SHA-256 digest of private key "${fx("sbv1/sbv1_key.pem")}" written to "pk.bin".\n`,
    );
    expect(toHex(read("pk.bin"))).toBe(toHex(want));
    expect(statSync(join(dir, "pk.bin")).mode & 0o777).toBe(0o600);
    const short = await run(
      "digest_private_key",
      "-k",
      fx("sbv1/sbv1_key.pem"),
      "-l",
      "192",
      "pk192.bin",
    );
    expect(short.stdout).toMatch(/\(truncated to 192 bits\) written to "pk192.bin"/);
    expect(toHex(read("pk192.bin"))).toBe(toHex(want.subarray(0, 24)));
  });

  it.each([
    [["digest-private-key", "--keyfile", fx("sbv1/sbv1_pubkey.pem"), "x.bin"], "E_KEY_NO_PRIVATE"],
    [
      [
        "extract-public-key",
        "--version",
        "1",
        "--keyfile",
        fx("sbv2/sbv2_rsa3072_key.pem"),
        "x.bin",
      ],
      "E_KEY_SCHEME",
    ],
    [
      ["digest-sbv2-public-key", "--keyfile", fx("sbv1/commands.txt"), "--output", "x.bin"],
      "E_KEY_PARSE",
    ],
    [["digest-sbv2-public-key", "--keyfile", "missing.pem", "--output", "x.bin"], "E_FILE_READ"],
  ])("%j -> exit 1 %s", async (argv, code) => {
    const r = await run(...argv);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${code}: `));
    expect(existsSync(join(dir, "x.bin"))).toBe(false);
  });

  it("refuses to write the output over the key", async () => {
    copyFileSync(fx("sbv1/sbv1_key.pem"), join(dir, "same.pem"));
    const r = await run("extract-public-key", "--keyfile", "same.pem", "./same.pem");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/should not be the same/);
    expect(read("same.pem").toString()).toBe(fixtureText("sbv1/sbv1_key.pem"));
  });
});

describe("sign-data and verify-signature --version 1", () => {
  it("signs byte-identically to espsecure", async () => {
    const r = await run(
      "sign-data",
      "--version",
      "1",
      "--keyfile",
      fx("sbv1/sbv1_key.pem"),
      "--output",
      "s1.bin",
      fx("sbv1/data_4096.bin"),
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`Signed 4096 bytes of data from "${fx("sbv1/data_4096.bin")}".\n`);
    expect(read("s1.bin").equals(readFileSync(fx("sbv1/data_4096.signed.bin")))).toBe(true);
  });

  it("signs in place without --output (sign_data alias)", async () => {
    copyFileSync(fx("sbv1/data_1000.bin"), join(dir, "inplace.bin"));
    // --keyfile takes several files (like espsecure's), so it would swallow a DATAFILE after it.
    const swallowed = await run(
      "sign_data",
      "-v",
      "1",
      "-k",
      fx("sbv1/sbv1_key.pem"),
      "inplace.bin",
    );
    expect(swallowed.code).toBe(2);
    const r = await run("sign_data", "inplace.bin", "-v", "1", "-k", fx("sbv1/sbv1_key.pem"));
    expect(r.code).toBe(0);
    expect(read("inplace.bin").equals(readFileSync(fx("sbv1/data_1000.signed.bin")))).toBe(true);
  });

  it.each(["sbv1/sbv1_key.pem", "sbv1/sbv1_pubkey.pem", "sbv1/sbv1_pubkey.bin"])(
    "verifies with %s: exit 0",
    async (key) => {
      const r = await run(
        "verify-signature",
        "--version",
        "1",
        "--keyfile",
        fx(key),
        fx("sbv1/data_1000.signed.bin"),
      );
      expect(r.code).toBe(0);
      expect(r.stdout).toBe("Verifying 1000 bytes of data...\nSignature is valid.\n");
    },
  );

  it.each([
    ["sbv1/sbv1_pubkey.bin", "sbv1/data_4096.signed.tampered_data.bin", "E_SIG_MISMATCH"],
    ["sbv1/sbv1_pubkey.bin", "sbv1/data_4096.signed.tampered_sig.bin", "E_SIG_MISMATCH"],
    ["sbv1/sbv1_other_key.pem", "sbv1/data_4096.signed.bin", "E_SIG_MISMATCH"],
    ["sbv1/sbv1_pubkey.bin", "sbv1/sbv1_private_key_digest.bin", "E_SIG_TOO_SHORT"],
    ["sbv1/sbv1_pubkey.bin", "sbv1/data_4096.bin", "E_SIG_V1_VERSION"],
  ])("key %s, file %s -> exit 1 %s", async (key, file, code) => {
    const r = await run("verify_signature", "--version", "1", "--keyfile", fx(key), fx(file));
    expect(r.code).toBe(1);
    expect(r.stdout).not.toMatch(/Signature is valid/);
    expect(r.stderr).toMatch(new RegExp(`^error ${code}: `));
  });

  it("V1 takes one key only", async () => {
    const k = fx("sbv1/sbv1_key.pem");
    const r = await run(
      "sign-data",
      "--version",
      "1",
      "--keyfile",
      k,
      k,
      "--output",
      "x1.bin",
      fx("sbv1/data_1000.bin"),
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/only supports one signing key/);
  });
});

describe("sign-data and verify-signature --version 2", () => {
  it.each(["rsa3072", "ecdsa256"] as const)(
    "%s: padding message, then the file verifies and signature-info-v2 matches espsecure's text",
    async (scheme) => {
      const key = fx(`sbv2/sbv2_${scheme}_key.pem`);
      const r = await run(
        "sign-data",
        "--version",
        "2",
        "--keyfile",
        key,
        "--output",
        `s2-${scheme}.bin`,
        fx("sbv2/data_5000.bin"),
      );
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(
        [
          "Padding data contents by 3192 bytes so signature sector aligns at sector boundary.",
          "1 signing key(s) found.",
          `Signed 8192 bytes of data from "${fx("sbv2/data_5000.bin")}". Signature sector now has 1 signature blocks.`,
          "",
        ].join("\n"),
      );
      expect(read(`s2-${scheme}.bin`)).toHaveLength(12288);
      const v = await run(
        "verify-signature",
        "--version",
        "2",
        "--keyfile",
        fx(`sbv2/sbv2_${scheme}_pubkey.pem`),
        `s2-${scheme}.bin`,
      );
      expect(v.code).toBe(0);
      expect(v.stdout.trimEnd().split("\n")).toEqual(
        sbv2.schemes[scheme].vectors[1].verify.output_lines,
      );
      const info = await run("signature-info-v2", `s2-${scheme}.bin`);
      expect(info.code).toBe(0);
      expect(info.stdout).toBe(
        fixtureText(`sbv2/data_5000.${scheme}.signed.signature_info_v2.txt`),
      );
    },
  );

  it("signs with up to 3 keys (--keyfile A B C) and counts them", async () => {
    const keys = [
      fx("sbv2/sbv2_rsa3072_key.pem"),
      fx("sbv2/sbv2_ecdsa256_key.pem"),
      fx("sbv2/sbv2_ecdsa256_other_key.pem"),
    ];
    const r = await run(
      "sign-data",
      "-v",
      "2",
      "--keyfile",
      ...keys,
      "--output",
      "three.bin",
      fx("sbv2/data_8192.bin"),
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^3 signing key\(s\) found\.\nSigned 8192 bytes .* now has 3 signature blocks\.\n$/,
    );
    const v = await run(
      "verify-signature",
      "-v",
      "2",
      "-k",
      fx("sbv2/sbv2_ecdsa256_other_key.pem"),
      "three.bin",
    );
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(
      /Signature block 2 verification successful using the supplied key \(ECDSA\)\./,
    );
  });

  it("more than 3 keys -> E_SIG_SECTOR_FULL", async () => {
    const k = fx("sbv2/sbv2_ecdsa256_key.pem");
    const r = await run(
      "sign-data",
      "-v",
      "2",
      "-k",
      k,
      k,
      k,
      k,
      "-o",
      "four.bin",
      fx("sbv2/data_8192.bin"),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error E_SIG_SECTOR_FULL: Number of keys \(4\)/);
  });

  it("--append-signatures (and --append_signatures) adds blocks to a signed file", async () => {
    copyFileSync(fx("sbv2/data_8192.ecdsa256.signed.bin"), join(dir, "app.bin"));
    const r = await run(
      "sign-data",
      "-v",
      "2",
      "-k",
      fx("sbv2/sbv2_rsa3072_key.pem"),
      "--append-signatures",
      "-o",
      "app2.bin",
      "app.bin",
    );
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n").slice(0, 3)).toEqual([
      "Signature block 0 is valid (ECDSA).",
      "1 valid signature block(s) already present in the signature sector.",
      "1 signing key(s) found.",
    ]);
    expect(r.stdout).toMatch(/now has 2 signature blocks\./);
    const r3 = await run(
      "sign-data",
      "-v",
      "2",
      "-k",
      fx("sbv2/sbv2_rsa3072_other_key.pem"),
      "--append_signatures",
      "-o",
      "app3.bin",
      "app2.bin",
    );
    expect(r3.stdout).toMatch(/now has 3 signature blocks\./);
    const info = await run("signature-info-v2", "app3.bin");
    expect(info.stdout.split("\n").filter((l) => l.startsWith("Public key digest"))).toHaveLength(
      3,
    );
    for (const key of [
      "sbv2_ecdsa256_pubkey.pem",
      "sbv2_rsa3072_pubkey.pem",
      "sbv2_rsa3072_other_key.pem",
    ]) {
      expect(
        (await run("verify-signature", "-v", "2", "-k", fx(`sbv2/${key}`), "app3.bin")).code,
      ).toBe(0);
    }
  });

  it("--skip-padding signs unaligned data, and verify needs --skip-padding too", async () => {
    const r = await run(
      "sign-data",
      "-v",
      "2",
      "-k",
      fx("sbv2/sbv2_ecdsa256_key.pem"),
      "--skip-padding",
      "-o",
      "skip.bin",
      fx("sbv2/data_5000.bin"),
    );
    expect(r.stdout).toMatch(/^Skipping sector padding\. Data contents are not sector aligned\.\n/);
    expect(read("skip.bin")).toHaveLength(5000 + 4096);
    expect(
      (
        await run(
          "verify-signature",
          "-v",
          "2",
          "-k",
          fx("sbv2/sbv2_ecdsa256_pubkey.pem"),
          "skip.bin",
        )
      ).stderr,
    ).toMatch(/^error E_SIG_FILE_SIZE/);
    expect(
      (
        await run(
          "verify-signature",
          "-v",
          "2",
          "-k",
          fx("sbv2/sbv2_ecdsa256_pubkey.pem"),
          "--skip-padding",
          "skip.bin",
        )
      ).code,
    ).toBe(0);
  });

  it.each(["rsa3072", "ecdsa256"] as const)(
    "espsecure's %s files verify with espsecure's output lines",
    async (scheme) => {
      for (const v of sbv2.schemes[scheme].vectors) {
        const r = await run(
          "verify-signature",
          "--version",
          "2",
          "--keyfile",
          fx(`sbv2/${sbv2.schemes[scheme].pubkey_pem}`),
          fx(`sbv2/${v.signed}`),
        );
        expect(r.code).toBe(0);
        expect(r.stdout.trimEnd().split("\n")).toEqual(v.verify.output_lines);
      }
    },
  );

  it.each([
    [
      "rsa3072",
      "data_8192.rsa3072.signed.tampered_data.bin",
      "sbv2_rsa3072_pubkey.pem",
      "E_SIG_DIGEST_MISMATCH",
    ],
    [
      "rsa3072",
      "data_8192.rsa3072.signed.tampered_sig_badcrc.bin",
      "sbv2_rsa3072_pubkey.pem",
      "E_SIG_NO_BLOCK",
    ],
    [
      "rsa3072",
      "data_8192.rsa3072.signed.tampered_sig_goodcrc.bin",
      "sbv2_rsa3072_pubkey.pem",
      "E_SIG_INVALID",
    ],
    ["rsa3072", "data_8192.rsa3072.signed.bin", "sbv2_rsa3072_other_key.pem", "E_SIG_WRONG_KEY"],
    [
      "ecdsa256",
      "data_8192.ecdsa256.signed.tampered_data.bin",
      "sbv2_ecdsa256_pubkey.pem",
      "E_SIG_DIGEST_MISMATCH",
    ],
    [
      "ecdsa256",
      "data_8192.ecdsa256.signed.tampered_sig_badcrc.bin",
      "sbv2_ecdsa256_pubkey.pem",
      "E_SIG_NO_BLOCK",
    ],
    [
      "ecdsa256",
      "data_8192.ecdsa256.signed.tampered_sig_goodcrc.bin",
      "sbv2_ecdsa256_pubkey.pem",
      "E_SIG_INVALID",
    ],
    ["ecdsa256", "data_8192.ecdsa256.signed.bin", "sbv2_ecdsa256_other_key.pem", "E_SIG_WRONG_KEY"],
    ["cross", "data_8192.rsa3072.signed.bin", "sbv2_ecdsa256_pubkey.pem", "E_SIG_WRONG_KEY"],
    ["size", "data_5000.bin", "sbv2_ecdsa256_pubkey.pem", "E_SIG_FILE_SIZE"],
  ])("%s %s with %s -> exit 1 %s", async (_s, file, key, code) => {
    const r = await run(
      "verify-signature",
      "--version",
      "2",
      "--keyfile",
      fx(`sbv2/${key}`),
      fx(`sbv2/${file}`),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${code}: `));
    expect(r.stdout).not.toMatch(/verification successful/);
  });

  it("the wrong-key lines are espsecure's", async () => {
    const neg = sbv2.schemes.ecdsa256.negative.find((n: { key?: string }) => n.key);
    const r = await run(
      "verify-signature",
      "-v",
      "2",
      "-k",
      fx(`sbv2/${neg.key}`),
      fx(`sbv2/${neg.file}`),
    );
    expect(r.stdout.trimEnd().split("\n")).toEqual(neg.output_lines.slice(0, 4));
  });

  it("signature-info-v2 (and signature_info_v2) prints espsecure's text for every vector", async () => {
    for (const scheme of ["rsa3072", "ecdsa256"] as const) {
      for (const v of sbv2.schemes[scheme].vectors) {
        const r = await run("signature_info_v2", fx(`sbv2/${v.signed}`));
        expect(r.code).toBe(0);
        expect(r.stdout).toBe(fixtureText(`sbv2/${v.signature_info_v2_output}`));
      }
    }
    const bad = await run(
      "signature-info-v2",
      fx("sbv2/data_8192.ecdsa256.signed.tampered_data.bin"),
    );
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe("Signature block 0 is valid (ECDSA).\n");
    expect(bad.stderr).toMatch(
      /^error E_SIG_DIGEST_MISMATCH: Digest in signature block 0 doesn't match/,
    );
  });

  it("usage errors exit 2", async () => {
    expect((await run("verify-signature", "--version", "2", fx("sbv2/data_5000.bin"))).code).toBe(
      2,
    );
    expect((await run("sign-data", "--keyfile", "k.pem", "in.bin")).code).toBe(2);
    expect((await run("sign-data", "--version", "3", "--keyfile", "k.pem", "in.bin")).code).toBe(2);
    expect((await run("sign-data", "--version", "2", "in.bin")).code).toBe(2);
    writeFileSync(join(dir, "same.bin"), "x");
    const same = await run(
      "sign-data",
      "-v",
      "2",
      "-k",
      fx("sbv2/sbv2_ecdsa256_key.pem"),
      "-o",
      "same.bin",
      "same.bin",
    );
    expect(same.code).toBe(2);
    expect(same.stderr).toMatch(/should not be the same/);
  });

  it("every command has help text with its defaults", async () => {
    for (const cmd of [
      "generate-signing-key",
      "extract-public-key",
      "digest-sbv2-public-key",
      "digest-private-key",
      "sign-data",
      "verify-signature",
      "signature-info-v2",
    ]) {
      const r = await run(cmd, "--help");
      expect(r.code, cmd).toBe(0);
      expect(r.stdout, cmd).toMatch(/Usage: esp-ota secure /);
    }
    expect((await run("generate-signing-key", "--help")).stdout).toMatch(/default: "1"/);
    expect((await run("digest-private-key", "--help")).stdout).toMatch(/default: "256"/);
  });
});

afterAll(() => {
  // No command printed a key: no PEM armour, no private scalar.
  const text = allOutput.join("");
  expect(text).not.toMatch(/-----BEGIN/);
  expect(text).not.toContain("a283e51d2a4d058d233ffc92c4c0d90f9d61ce84239bee31cb23c725c8373f5c");
});
