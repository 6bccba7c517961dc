/**
 * The gateway's status-signing key (docs/security.md G1): Ed25519, PKCS#8 PEM at
 * `stateDir/gateway-key.pem`, owner-only, created on first use. Its public identity is what
 * `esp-ota agent key` prints and the operator adds to the gateways file.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { EspOtaError } from "../src/errors.js";
import { writeFileAtomicSync } from "../src/fs/write-atomic.js";
import {
  encodeManifestPrivateKeyPem,
  generateManifestKey,
  type ManifestSigningKey,
  parseManifestPrivateKeyPem,
} from "../src/release/keyring.js";

export const GATEWAY_KEY_FILE = "gateway-key.pem";

/** The key in `stateDir`, made (and written, mode 0600) when there is none. */
export function loadOrCreateGatewayKey(stateDir: string): {
  key: ManifestSigningKey;
  created: boolean;
  path: string;
} {
  const path = join(stateDir, GATEWAY_KEY_FILE);
  let pem: string | undefined;
  try {
    pem = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT")
      throw new EspOtaError(
        "E_AGENT_STATE",
        `cannot read ${path}: ${(e as Error).message}`,
        { path },
        e,
      );
  }
  if (pem !== undefined) return { key: parseManifestPrivateKeyPem(pem), created: false, path };
  const key = generateManifestKey("ed25519");
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    // Exclusive: two agents starting on one state directory must not overwrite each other's key;
    // durable and atomic: a power cut must not leave a torn key that stops the agent starting.
    writeFileAtomicSync(path, encodeManifestPrivateKeyPem(key), {
      mode: 0o600,
      durable: true,
      exclusive: true,
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST")
      return { key: parseManifestPrivateKeyPem(readFileSync(path, "utf8")), created: false, path };
    throw new EspOtaError(
      "E_AGENT_STATE",
      `cannot write ${path}: ${(e as Error).message}`,
      { path },
      e,
    );
  }
  return { key, created: true, path };
}
