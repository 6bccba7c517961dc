/**
 * The operator keyring directory: the one place private keys live (docs/manifest.md "Keyring").
 *
 *   DIR/                         0700
 *   DIR/keyring.json             0600  what the keyring holds (no key material)
 *   DIR/secure-boot-key-0.pem    0600  secure boot signing key, as espsecure writes it
 *   DIR/secure-boot-key-0.pub.pem 0644 its public key (espsecure extract-public-key --version 2)
 *   DIR/manifest-key-N.pem       0600  manifest signing keys, PKCS#8
 *   DIR/trust.json               0644  the gateway's trust policy (public keys only)
 *
 * The fs adapter for keyring.ts: files are created exclusively ("wx", so a key is never
 * overwritten and there is no check-then-write race) with their final mode, and loading refuses
 * private files that other users could read, as ssh does with identity files.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { EspOtaError } from "../errors.js";
import {
  generateSigningKeyPem,
  hasPrivateKey,
  parseSigningKey,
  publicKeyPem,
  type SigningKey,
} from "../esp/keys.js";
import { writeFileAtomicSync } from "../fs/write-atomic.js";
import {
  encodeManifestPrivateKeyPem,
  encodeTrustPolicy,
  generateManifestKey,
  KEY_ID_PATTERN,
  MANIFEST_KEY_ALGS,
  type ManifestKeyAlg,
  type ManifestSigningKey,
  parseManifestPrivateKeyPem,
  parseTrustPolicy,
  type TrustPolicy,
  trustPolicyFromKeys,
} from "./keyring.js";

export type SecureBootChoice = "v1" | "v2-rsa3072" | "v2-ecdsa256";
export const SECURE_BOOT_CHOICES: readonly SecureBootChoice[] = ["v1", "v2-rsa3072", "v2-ecdsa256"];

export interface Keyring {
  dir: string;
  secureBoot: { version: 1 | 2; keys: SigningKey[] };
  manifestKeys: ManifestSigningKey[];
  threshold: number;
  /** Manifest key ids the trust policy revokes (`keys revoke`); never among manifestKeys. */
  revoked: string[];
}

export interface KeyringInitOptions {
  secureBoot: SecureBootChoice;
  manifestKeys: number;
  manifestAlg: ManifestKeyAlg;
  threshold: number;
}

export const KEYRING_FILE = "keyring.json";
export const TRUST_FILE = "trust.json";
const KEYRING_FORMAT = 1;

interface KeyringDoc {
  format: 1;
  secureBoot: {
    version: 1 | 2;
    scheme: "ecdsa256" | "rsa3072";
    keys: { file: string; publicKeyFile: string }[];
  };
  manifestKeys: { file: string; keyId: string; alg: ManifestKeyAlg }[];
  threshold: number;
  revoked: string[];
}

const SECURE_BOOT: Readonly<
  Record<SecureBootChoice, { version: 1 | 2; scheme: "ecdsa256" | "rsa3072" }>
> = {
  // Secure Boot V1 signs apps with ECDSA P-256 (esp32-facts §5.1).
  v1: { version: 1, scheme: "ecdsa256" },
  "v2-rsa3072": { version: 2, scheme: "rsa3072" },
  "v2-ecdsa256": { version: 2, scheme: "ecdsa256" },
};

/** At most this many manifest keys: a threshold beyond a handful of people is not a real process. */
export const MAX_MANIFEST_KEYS = 16;

/**
 * Creates a keyring in `dir` (which must not exist or be empty): one secure boot signing key,
 * `manifestKeys` manifest keys, and trust.json for the gateways. Throws E_KEYRING_EXISTS rather
 * than touch an existing keyring; RangeError for counts out of range (the CLI checks them first).
 */
export function initKeyring(dir: string, opts: KeyringInitOptions): Keyring {
  const sb = SECURE_BOOT[opts?.secureBoot];
  if (!sb)
    throw new RangeError(
      `initKeyring: secureBoot must be one of ${SECURE_BOOT_CHOICES.join(", ")}`,
    );
  if (!MANIFEST_KEY_ALGS.includes(opts.manifestAlg)) {
    throw new RangeError(`initKeyring: manifestAlg must be one of ${MANIFEST_KEY_ALGS.join(", ")}`);
  }
  const n = opts.manifestKeys;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_MANIFEST_KEYS) {
    throw new RangeError(`initKeyring: manifestKeys must be 1..${MAX_MANIFEST_KEYS}`);
  }
  if (!Number.isSafeInteger(opts.threshold) || opts.threshold < 1 || opts.threshold > n) {
    throw new RangeError(`initKeyring: threshold must be 1..${n} (the number of manifest keys)`);
  }

  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory() || readdirSync(dir).length > 0) {
      throw new EspOtaError(
        "E_KEYRING_EXISTS",
        `${dir} already exists and is not an empty directory`,
        { dir },
      );
    }
  }
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // mkdir leaves an existing empty directory's mode alone, and recursive parents get the umask.
    chmodSync(dir, 0o700);
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_WRITE",
      `cannot create ${dir}: ${(e as Error).message}`,
      { dir },
      e,
    );
  }

  const sbPem = generateSigningKeyPem(sb.scheme);
  const sbKey = parseSigningKey(new TextEncoder().encode(sbPem));
  writeNew(dir, "secure-boot-key-0.pem", sbPem, 0o600);
  writeNew(dir, "secure-boot-key-0.pub.pem", publicKeyPem(sbKey), 0o644);

  const manifestKeys = Array.from({ length: n }, () => generateManifestKey(opts.manifestAlg));
  manifestKeys.forEach((k, i) => {
    writeNew(dir, `manifest-key-${i}.pem`, encodeManifestPrivateKeyPem(k), 0o600);
  });

  const doc: KeyringDoc = {
    format: KEYRING_FORMAT,
    secureBoot: {
      version: sb.version,
      scheme: sb.scheme,
      keys: [{ file: "secure-boot-key-0.pem", publicKeyFile: "secure-boot-key-0.pub.pem" }],
    },
    manifestKeys: manifestKeys.map((k, i) => ({
      file: `manifest-key-${i}.pem`,
      keyId: k.keyId,
      alg: k.alg,
    })),
    threshold: opts.threshold,
    revoked: [],
  };
  const keyring: Keyring = {
    dir,
    secureBoot: { version: sb.version, keys: [sbKey] },
    manifestKeys,
    threshold: opts.threshold,
    revoked: [],
  };
  writeNew(dir, TRUST_FILE, encodeTrustPolicy(keyringTrustPolicy(keyring)), 0o644);
  // Written last: a directory without keyring.json is a keyring whose creation did not finish.
  writeNew(dir, KEYRING_FILE, `${JSON.stringify(doc, null, 2)}\n`, 0o600);
  return keyring;
}

/** The trust policy a gateway needs for this keyring: public keys, revocations, threshold. */
export function keyringTrustPolicy(keyring: Keyring): TrustPolicy {
  return trustPolicyFromKeys(keyring.manifestKeys, keyring.threshold, keyring.revoked);
}

/**
 * Loads a keyring, checking that the directory and every private key file are owner-only
 * (E_KEYRING_PERMISSIONS), present (E_KEYRING_MISSING) and hold the keys keyring.json names
 * (E_KEYRING_INVALID).
 */
export function loadKeyring(dir: string): Keyring {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new EspOtaError("E_KEYRING_MISSING", `no keyring directory at ${dir}`, { dir });
  }
  checkOwnerOnly(dir, "the keyring directory");
  const docPath = join(dir, KEYRING_FILE);
  if (!existsSync(docPath)) {
    throw new EspOtaError(
      "E_KEYRING_MISSING",
      `${dir} has no ${KEYRING_FILE}: not a keyring, or its creation did not finish`,
      {
        dir,
      },
    );
  }
  checkOwnerOnly(docPath, KEYRING_FILE);
  const doc = parseKeyringDoc(readFileSync(docPath, "utf8"), dir);

  const sbKeys = doc.secureBoot.keys.map(({ file }) => {
    const key = parseSigningKey(readPrivate(dir, file));
    if (key.scheme !== doc.secureBoot.scheme || !hasPrivateKey(key)) {
      throw new EspOtaError(
        "E_KEYRING_INVALID",
        `${file} does not hold a ${doc.secureBoot.scheme} private key`,
        {
          file,
        },
      );
    }
    return key;
  });
  const manifestKeys = doc.manifestKeys.map(({ file, keyId, alg }) => {
    const key = parseManifestPrivateKeyPem(new TextDecoder().decode(readPrivate(dir, file)));
    if (key.keyId !== keyId || key.alg !== alg) {
      throw new EspOtaError(
        "E_KEYRING_INVALID",
        `${file} holds ${key.alg} key ${key.keyId}, but ${KEYRING_FILE} says ${alg} key ${keyId}`,
        { file },
      );
    }
    return key;
  });
  return {
    dir,
    secureBoot: { version: doc.secureBoot.version, keys: sbKeys },
    manifestKeys,
    threshold: doc.threshold,
    revoked: doc.revoked,
  };
}

/**
 * Key rotation, step 1: adds a manifest key (and optionally changes the threshold), rewriting
 * keyring.json and trust.json. Deploy the new trust.json to every gateway before releases need
 * the new key's signature (docs/manifest.md "Key rotation").
 */
export function addManifestKey(
  dir: string,
  alg: ManifestKeyAlg,
  threshold?: number,
): { keyring: Keyring; key: ManifestSigningKey } {
  const keyring = loadKeyring(dir);
  const doc = parseKeyringDoc(readFileSync(join(dir, KEYRING_FILE), "utf8"), dir);
  if (doc.manifestKeys.length >= MAX_MANIFEST_KEYS) {
    throw new RangeError(
      `addManifestKey: a keyring holds at most ${MAX_MANIFEST_KEYS} manifest keys`,
    );
  }
  const key = generateManifestKey(alg);
  const taken = new Set(readdirSync(dir));
  let i = 0;
  while (taken.has(`manifest-key-${i}.pem`)) i++;
  const file = `manifest-key-${i}.pem`;
  writeNew(dir, file, encodeManifestPrivateKeyPem(key), 0o600);
  doc.manifestKeys.push({ file, keyId: key.keyId, alg });
  keyring.manifestKeys.push(key);
  return { keyring: rewrite(dir, doc, keyring, threshold), key };
}

/**
 * Revokes a manifest key: its id goes on the trust policy's revoked list and, if the key is in
 * this keyring, its private key file is deleted (a revoked key must never sign again). `keyId`
 * may also name a key that is not here (one from an older keyring).
 */
export function revokeManifestKey(dir: string, keyId: string, threshold?: number): Keyring {
  if (!new RegExp(KEY_ID_PATTERN).test(keyId))
    throw new RangeError(`revokeManifestKey: ${keyId} is not a key id`);
  const keyring = loadKeyring(dir);
  const doc = parseKeyringDoc(readFileSync(join(dir, KEYRING_FILE), "utf8"), dir);
  if (doc.revoked.includes(keyId)) return keyring;
  const entry = doc.manifestKeys.find((k) => k.keyId === keyId);
  doc.manifestKeys = doc.manifestKeys.filter((k) => k.keyId !== keyId);
  doc.revoked.push(keyId);
  keyring.manifestKeys = keyring.manifestKeys.filter((k) => k.keyId !== keyId);
  keyring.revoked.push(keyId);
  const updated = rewrite(dir, doc, keyring, threshold);
  // Deleted only once keyring.json no longer names it, so a crash leaves a loadable keyring.
  if (entry) rmSync(join(dir, entry.file), { force: true });
  return updated;
}

/** Writes keyring.json and trust.json for a changed keyring, each by rename (never half-written). */
function rewrite(dir: string, doc: KeyringDoc, keyring: Keyring, threshold?: number): Keyring {
  const t = threshold ?? doc.threshold;
  if (!Number.isSafeInteger(t) || t < 1 || t > keyring.manifestKeys.length) {
    throw new RangeError(
      `threshold ${t} must be 1..${keyring.manifestKeys.length} (the keyring's non-revoked manifest keys)`,
    );
  }
  doc.threshold = t;
  keyring.threshold = t;
  replaceFile(dir, TRUST_FILE, encodeTrustPolicy(keyringTrustPolicy(keyring)), 0o644);
  replaceFile(dir, KEYRING_FILE, `${JSON.stringify(doc, null, 2)}\n`, 0o600);
  return keyring;
}

/**
 * Durable (src/fs/write-atomic.ts): keyring.json names the key files, and losing it or a key to a
 * power cut would leave releases unsignable and devices un-updatable.
 */
function replaceFile(dir: string, name: string, data: string, mode: number): void {
  try {
    writeFileAtomicSync(join(dir, name), data, { mode, durable: true });
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_WRITE",
      `cannot write ${join(dir, name)}: ${(e as Error).message}`,
      { dir },
      e,
    );
  }
}

/** Reads a trust file (trust.json). Throws E_FILE_READ or E_TRUST_POLICY_INVALID. */
export function readTrustPolicy(path: string): TrustPolicy {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_READ",
      `cannot read ${path}: ${(e as Error).message}`,
      { path },
      e,
    );
  }
  return parseTrustPolicy(text);
}

/** Created whole or not at all, never over an existing file, on disk before it returns. */
function writeNew(dir: string, name: string, data: string, mode: number): void {
  const path = join(dir, name);
  try {
    writeFileAtomicSync(path, data, { mode, durable: true, exclusive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new EspOtaError("E_KEYRING_EXISTS", `${path} already exists; not overwriting it`, {
        path,
      });
    }
    throw new EspOtaError(
      "E_FILE_WRITE",
      `cannot write ${path}: ${(e as Error).message}`,
      { path },
      e,
    );
  }
}

function checkOwnerOnly(path: string, what: string): void {
  // POSIX permission bits do not describe Windows ACLs; there the check would refuse every file.
  if (process.platform === "win32") return;
  const st = statSync(path);
  if ((st.mode & 0o077) !== 0) {
    throw new EspOtaError(
      "E_KEYRING_PERMISSIONS",
      `${what} ${path} has mode 0${(st.mode & 0o777).toString(8)}; other users may read it (owner-only is required)`,
      { path, mode: `0${(st.mode & 0o777).toString(8)}` },
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new EspOtaError(
      "E_KEYRING_PERMISSIONS",
      `${what} ${path} belongs to uid ${st.uid}, not to you (${uid})`,
      {
        path,
      },
    );
  }
}

function readPrivate(dir: string, file: string): Uint8Array {
  const path = join(dir, file);
  if (!existsSync(path)) {
    throw new EspOtaError("E_KEYRING_MISSING", `key file ${path} is missing`, { path });
  }
  checkOwnerOnly(path, "private key file");
  return new Uint8Array(readFileSync(path));
}

function parseKeyringDoc(text: string, dir: string): KeyringDoc {
  const bad = (why: string): never => {
    throw new EspOtaError("E_KEYRING_INVALID", `${join(dir, KEYRING_FILE)}: ${why}`, { dir });
  };
  let d: KeyringDoc;
  try {
    d = JSON.parse(text) as KeyringDoc;
  } catch {
    return bad("not JSON");
  }
  // Key files are plain names inside DIR: keyring.json must not point elsewhere.
  const fileName = (f: unknown) => typeof f === "string" && /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(f);
  if (typeof d !== "object" || d === null || d.format !== KEYRING_FORMAT)
    bad(`format must be ${KEYRING_FORMAT}`);
  const sb = d.secureBoot;
  if (
    typeof sb !== "object" ||
    sb === null ||
    (sb.version !== 1 && sb.version !== 2) ||
    (sb.scheme !== "ecdsa256" && sb.scheme !== "rsa3072") ||
    (sb.version === 1 && sb.scheme !== "ecdsa256") ||
    !Array.isArray(sb.keys) ||
    sb.keys.length < 1 ||
    sb.keys.length > 3 ||
    !sb.keys.every((k) => fileName(k?.file) && fileName(k?.publicKeyFile))
  ) {
    bad("secureBoot is malformed");
  }
  const idPattern = new RegExp(KEY_ID_PATTERN);
  if (
    !Array.isArray(d.manifestKeys) ||
    d.manifestKeys.length < 1 ||
    !d.manifestKeys.every(
      (k) =>
        fileName(k?.file) &&
        typeof k.keyId === "string" &&
        idPattern.test(k.keyId) &&
        MANIFEST_KEY_ALGS.includes(k.alg),
    )
  ) {
    bad("manifestKeys is malformed");
  }
  if (
    !Array.isArray(d.revoked) ||
    !d.revoked.every((id) => typeof id === "string" && idPattern.test(id))
  ) {
    bad("revoked is malformed");
  }
  if (d.manifestKeys.some((k) => d.revoked.includes(k.keyId))) bad("a revoked key is still listed");
  const live = d.manifestKeys.length;
  if (!Number.isSafeInteger(d.threshold) || d.threshold < 1 || d.threshold > live) {
    bad(`threshold must be 1..${live} (the manifest keys)`);
  }
  return d;
}
