import { mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { publicKeyDigestV2 } from "../../src/esp/secure-boot-v2.js";
import { parseTrustPolicy } from "../../src/release/keyring.js";
import { loadKeyring } from "../../src/release/keyring-fs.js";
import { runCapture } from "../helpers/cli.js";

let dir: string;
/** Everything any command printed, to check that no private key ever appears. */
const allOutput: string[] = [];

async function run(...argv: string[]) {
  const r = await runCapture(["keys", ...argv], dir);
  allOutput.push(r.stdout, r.stderr);
  return r;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "esp-ota-cli-keys-"));
});

describe("keys init", () => {
  it("creates an owner-only keyring and prints ids, digests and the threshold", async () => {
    const r = await run("init", "kr", "--manifest-keys", "3", "--secure-boot", "v2-ecdsa256");
    expect(r.code, r.stderr).toBe(0);
    const k = loadKeyring(join(dir, "kr"));
    expect(statSync(join(dir, "kr")).mode & 0o777).toBe(0o700);
    expect(r.stdout).toContain("keyring created in kr");
    expect(r.stdout).toContain("secure boot: V2 ECDSA P-256");
    expect(r.stdout).toContain(
      `eFuse public key digest (SHA-256): ${toHex(publicKeyDigestV2(k.secureBoot.keys[0]!))}`,
    );
    // Default threshold: a majority, 2 of 3.
    expect(r.stdout).toContain("manifest keys: 3, threshold 2 of 3");
    for (const m of k.manifestKeys) expect(r.stdout).toContain(`${m.keyId}  ecdsa-p256`);
    expect(r.stdout).toContain("trust policy for gateways: kr/trust.json");
    expect(k.threshold).toBe(2);
  });

  it("V1 and Ed25519 with an explicit threshold", async () => {
    const r = await run(
      "init",
      "kr1",
      "--secure-boot",
      "v1",
      "--manifest-alg",
      "ed25519",
      "--manifest-keys",
      "2",
      "--threshold",
      "1",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("secure boot: V1 ECDSA P-256");
    expect(r.stdout).not.toContain("eFuse public key digest");
    const k = loadKeyring(join(dir, "kr1"));
    expect(k.manifestKeys.map((m) => m.alg)).toEqual(["ed25519", "ed25519"]);
    expect(k.threshold).toBe(1);
  });

  it("refuses an existing keyring (exit 1, E_KEYRING_EXISTS) and leaves it alone", async () => {
    const before = readFileSync(join(dir, "kr", "manifest-key-0.pem"));
    const r = await run("init", "kr", "--secure-boot", "v1");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error E_KEYRING_EXISTS: /);
    expect(readFileSync(join(dir, "kr", "manifest-key-0.pem"))).toEqual(before);
  });

  it.each([
    [["--threshold", "4", "--manifest-keys", "3"]],
    [["--threshold", "0"]],
    [["--manifest-keys", "0"]],
    [["--manifest-keys", "17"]],
    [["--manifest-alg", "rsa"]],
    [["--secure-boot", "v2"]],
  ])("usage errors write nothing: %j", async (args) => {
    const r = await run("init", "bad", "--secure-boot", "v1", ...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("E_USAGE");
    expect(readdirSync(dir)).not.toContain("bad");
  });
});

describe("keys export", () => {
  it("prints the trust policy, equal to trust.json", async () => {
    const r = await run("export", "kr");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(readFileSync(join(dir, "kr", "trust.json"), "utf8"));
    const p = parseTrustPolicy(r.stdout);
    expect(p.keys.length).toBe(3);
    expect(p.threshold).toBe(2);
  });

  it("--out writes it with mode 0644", async () => {
    const r = await run("export", "kr", "--out", "gw/trust.json");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(
      "trust policy written to gw/trust.json: 3 key(s), 0 revoked, threshold 2\n",
    );
    expect(statSync(join(dir, "gw/trust.json")).mode & 0o777).toBe(0o644);
    expect(readFileSync(join(dir, "gw/trust.json"), "utf8")).toBe(
      readFileSync(join(dir, "kr", "trust.json"), "utf8"),
    );
  });

  it("a missing keyring is E_KEYRING_MISSING (exit 1)", async () => {
    const r = await run("export", "nowhere");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error E_KEYRING_MISSING/);
  });
});

describe("keys add and keys revoke (rotation)", () => {
  it("rotate: add a key, then revoke an old one; trust.json follows", async () => {
    expect((await run("init", "rot", "--secure-boot", "v1", "--manifest-keys", "2")).code).toBe(0);
    const old = loadKeyring(join(dir, "rot")).manifestKeys[0]!;
    const add = await run("add", "rot", "--manifest-alg", "ed25519");
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout).toMatch(/^added manifest key [0-9a-f]{32} \(ed25519\) to rot\n/);
    expect(add.stdout).toContain("manifest keys: 3, threshold 2 of 3");
    const rev = await run("revoke", "rot", old.keyId);
    expect(rev.code, rev.stderr).toBe(0);
    expect(rev.stdout).toContain(`revoked manifest key ${old.keyId} in rot`);
    expect(rev.stdout).toContain(`    ${old.keyId}  revoked`);
    const trust = parseTrustPolicy(readFileSync(join(dir, "rot", "trust.json"), "utf8"));
    expect(trust.revoked).toEqual([old.keyId]);
    expect(trust.keys.length).toBe(2);
    expect((await run("export", "rot")).stdout).toBe(
      readFileSync(join(dir, "rot", "trust.json"), "utf8"),
    );
  });

  it("a revocation that would leave fewer keys than the threshold is a usage error until --threshold lowers it", async () => {
    expect(
      (await run("init", "rot2", "--secure-boot", "v1", "--manifest-keys", "2", "--threshold", "2"))
        .code,
    ).toBe(0);
    const [a] = loadKeyring(join(dir, "rot2")).manifestKeys;
    const refused = await run("revoke", "rot2", a!.keyId);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/E_USAGE: threshold 2 must be 1\.\.1/);
    expect((await run("revoke", "rot2", a!.keyId, "--threshold", "1")).code).toBe(0);
    expect((await run("revoke", "rot2", "xyz")).code).toBe(2);
  });
});

it("no command printed a private key", () => {
  const printed = allOutput.join("\n");
  expect(printed).not.toMatch(/PRIVATE KEY/);
  for (const name of ["kr", "kr1", "rot", "rot2"]) {
    const k = loadKeyring(join(dir, name));
    for (const m of k.manifestKeys) {
      expect(printed).not.toContain(toHex(m.privateKey));
      expect(printed).not.toContain(Buffer.from(m.privateKey).toString("base64"));
      expect(printed).not.toContain(Buffer.from(m.privateKey).toString("base64url"));
    }
    const sb = k.secureBoot.keys[0]!;
    if (sb.scheme !== "rsa3072" && sb.privateKey)
      expect(printed).not.toContain(toHex(sb.privateKey));
  }
});
