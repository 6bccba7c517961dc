import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { hasPrivateKey } from "../../src/esp/keys.js";
import { encodeTrustPolicy } from "../../src/release/keyring.js";
import {
  addManifestKey,
  initKeyring,
  keyringTrustPolicy,
  loadKeyring,
  readTrustPolicy,
  revokeManifestKey,
} from "../../src/release/keyring-fs.js";
import { codeOf } from "../helpers/cli.js";

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "esp-ota-keyring-"));
});
const mode = (p: string) => statSync(p).mode & 0o777;
const opts = {
  secureBoot: "v1",
  manifestKeys: 3,
  manifestAlg: "ecdsa-p256",
  threshold: 2,
} as const;

describe("initKeyring", () => {
  it("creates a 0700 directory, 0600 private files and a public trust.json", () => {
    const dir = join(root, "a");
    const k = initKeyring(dir, opts);
    expect(mode(dir)).toBe(0o700);
    expect(readdirSync(dir).sort()).toEqual([
      "keyring.json",
      "manifest-key-0.pem",
      "manifest-key-1.pem",
      "manifest-key-2.pem",
      "secure-boot-key-0.pem",
      "secure-boot-key-0.pub.pem",
      "trust.json",
    ]);
    for (const f of [
      "keyring.json",
      "manifest-key-0.pem",
      "manifest-key-2.pem",
      "secure-boot-key-0.pem",
    ]) {
      expect(mode(join(dir, f)), f).toBe(0o600);
    }
    expect(mode(join(dir, "trust.json"))).toBe(0o644);
    expect(mode(join(dir, "secure-boot-key-0.pub.pem"))).toBe(0o644);
    expect(k.secureBoot.version).toBe(1);
    expect(k.secureBoot.keys[0]!.scheme).toBe("ecdsa256");
    expect(k.manifestKeys.map((m) => m.alg)).toEqual(["ecdsa-p256", "ecdsa-p256", "ecdsa-p256"]);
    expect(new Set(k.manifestKeys.map((m) => m.keyId)).size).toBe(3);
    // trust.json is exactly what `keys export` writes, and has no private key in it.
    const trust = readFileSync(join(dir, "trust.json"), "utf8");
    expect(trust).toBe(encodeTrustPolicy(keyringTrustPolicy(k)));
    for (const m of k.manifestKeys) expect(trust).not.toContain(toHex(m.privateKey));
    expect(readFileSync(join(dir, "secure-boot-key-0.pub.pem"), "utf8")).toMatch(
      /^-----BEGIN PUBLIC KEY-----/,
    );
  });

  it("loadKeyring reads back the same keys", () => {
    const dir = join(root, "b");
    const made = initKeyring(dir, { ...opts, manifestAlg: "ed25519", secureBoot: "v2-ecdsa256" });
    const loaded = loadKeyring(dir);
    expect(loaded).toEqual(made);
    expect(hasPrivateKey(loaded.secureBoot.keys[0]!)).toBe(true);
    expect(readTrustPolicy(join(dir, "trust.json"))).toEqual(keyringTrustPolicy(loaded));
  });

  it("V2 RSA-3072", () => {
    const dir = join(root, "rsa");
    initKeyring(dir, { ...opts, secureBoot: "v2-rsa3072", manifestKeys: 1, threshold: 1 });
    const k = loadKeyring(dir);
    expect(k.secureBoot).toMatchObject({ version: 2, keys: [{ scheme: "rsa3072" }] });
    expect(readFileSync(join(dir, "secure-boot-key-0.pem"), "utf8")).toMatch(
      /^-----BEGIN RSA PRIVATE KEY-----/,
    );
  });

  it("refuses an existing keyring or a non-empty directory, and changes nothing", () => {
    const dir = join(root, "c");
    initKeyring(dir, opts);
    const before = readFileSync(join(dir, "manifest-key-0.pem"), "utf8");
    expect(codeOf(() => initKeyring(dir, opts))).toBe("E_KEYRING_EXISTS");
    expect(readFileSync(join(dir, "manifest-key-0.pem"), "utf8")).toBe(before);
    const other = join(root, "other");
    mkdirSync(other);
    writeFileSync(join(other, "notes.txt"), "x");
    expect(codeOf(() => initKeyring(other, opts))).toBe("E_KEYRING_EXISTS");
    // An existing empty directory is fine and gets mode 0700.
    const empty = join(root, "empty");
    mkdirSync(empty, { mode: 0o755 });
    initKeyring(empty, opts);
    expect(mode(empty)).toBe(0o700);
  });

  it("bad counts are misuse (RangeError)", () => {
    expect(() => initKeyring(join(root, "x1"), { ...opts, threshold: 4 })).toThrow(RangeError);
    expect(() => initKeyring(join(root, "x2"), { ...opts, threshold: 0 })).toThrow(RangeError);
    expect(() => initKeyring(join(root, "x3"), { ...opts, manifestKeys: 0 })).toThrow(RangeError);
  });
});

describe("loadKeyring refuses", () => {
  function fresh(name: string): string {
    const dir = join(root, name);
    initKeyring(dir, opts);
    return dir;
  }

  it("a missing directory, keyring.json or key file (E_KEYRING_MISSING)", () => {
    expect(codeOf(() => loadKeyring(join(root, "nope")))).toBe("E_KEYRING_MISSING");
    const empty = join(root, "empty-dir");
    mkdirSync(empty, { mode: 0o700 });
    expect(codeOf(() => loadKeyring(empty))).toBe("E_KEYRING_MISSING");
    const dir = fresh("m");
    unlinkSync(join(dir, "manifest-key-1.pem"));
    expect(codeOf(() => loadKeyring(dir))).toBe("E_KEYRING_MISSING");
  });

  it.each([
    ["the directory", ".", 0o750],
    ["a manifest key", "manifest-key-0.pem", 0o640],
    ["the secure boot key", "secure-boot-key-0.pem", 0o604],
    ["keyring.json", "keyring.json", 0o644],
  ])("%s readable by others (E_KEYRING_PERMISSIONS)", (_what, file, m) => {
    const dir = fresh(`perm-${file}`);
    chmodSync(join(dir, file), m);
    expect(codeOf(() => loadKeyring(dir))).toBe("E_KEYRING_PERMISSIONS");
    chmodSync(join(dir, file), file === "." ? 0o700 : 0o600);
    expect(loadKeyring(dir).manifestKeys.length).toBe(3);
  });

  it("a key file that does not hold the key keyring.json names, or a malformed keyring.json (E_KEYRING_INVALID)", () => {
    const dir = fresh("swap");
    const k0 = readFileSync(join(dir, "manifest-key-0.pem"));
    writeFileSync(join(dir, "manifest-key-1.pem"), k0);
    expect(codeOf(() => loadKeyring(dir))).toBe("E_KEYRING_INVALID");

    const dir2 = fresh("doc");
    const docPath = join(dir2, "keyring.json");
    const doc = JSON.parse(readFileSync(docPath, "utf8"));
    for (const broken of [
      "not json",
      JSON.stringify({ ...doc, format: 2 }),
      JSON.stringify({ ...doc, threshold: 4 }),
      JSON.stringify({
        ...doc,
        manifestKeys: [{ ...doc.manifestKeys[0], file: "../../etc/passwd" }],
      }),
      JSON.stringify({ ...doc, secureBoot: { ...doc.secureBoot, scheme: "rsa3072" } }),
    ]) {
      writeFileSync(docPath, broken);
      expect(
        codeOf(() => loadKeyring(dir2)),
        broken.slice(0, 40),
      ).toBe("E_KEYRING_INVALID");
    }
  });
});

describe("key rotation and revocation", () => {
  it("addManifestKey adds a key, rewrites trust.json, and can raise the threshold", () => {
    const dir = join(root, "rot");
    const before = initKeyring(dir, { ...opts, manifestKeys: 1, threshold: 1 });
    const { keyring, key } = addManifestKey(dir, "ed25519", 2);
    expect(keyring.manifestKeys.map((k) => k.keyId)).toEqual([
      before.manifestKeys[0]!.keyId,
      key.keyId,
    ]);
    expect(mode(join(dir, "manifest-key-1.pem"))).toBe(0o600);
    expect(mode(join(dir, "trust.json"))).toBe(0o644);
    expect(loadKeyring(dir)).toEqual(keyring);
    const trust = readTrustPolicy(join(dir, "trust.json"));
    expect(trust.keys.map((k) => k.keyId)).toEqual(keyring.manifestKeys.map((k) => k.keyId));
    expect(trust.threshold).toBe(2);
    expect(() => addManifestKey(dir, "ed25519", 4)).toThrow(RangeError);
  });

  it("revokeManifestKey lists the id as revoked, deletes the private key, keeps the keyring loadable", () => {
    const dir = join(root, "rev");
    const k = initKeyring(dir, opts); // 3 keys, threshold 2
    const victim = k.manifestKeys[1]!;
    // Revoking down to 2 keys keeps threshold 2; a third revocation needs a lower threshold.
    const after = revokeManifestKey(dir, victim.keyId);
    expect(after.revoked).toEqual([victim.keyId]);
    expect(after.manifestKeys.map((m) => m.keyId)).not.toContain(victim.keyId);
    expect(readdirSync(dir)).not.toContain("manifest-key-1.pem");
    expect(loadKeyring(dir)).toEqual(after);
    const trust = readTrustPolicy(join(dir, "trust.json"));
    expect(trust.revoked).toEqual([victim.keyId]);
    expect(trust.keys.map((x) => x.keyId)).not.toContain(victim.keyId);
    expect(() => revokeManifestKey(dir, k.manifestKeys[0]!.keyId)).toThrow(RangeError);
    expect(loadKeyring(dir)).toEqual(after); // the refused revocation changed nothing
    revokeManifestKey(dir, k.manifestKeys[0]!.keyId, 1);
    expect(readTrustPolicy(join(dir, "trust.json"))).toMatchObject({
      threshold: 1,
      revoked: [victim.keyId, k.manifestKeys[0]!.keyId],
    });
    // An id from elsewhere can be revoked too; a key added later gets a fresh file name.
    revokeManifestKey(dir, "0".repeat(32));
    expect(addManifestKey(dir, "ecdsa-p256").keyring.manifestKeys.length).toBe(2);
    expect(loadKeyring(dir).revoked.length).toBe(3);
  });
});
