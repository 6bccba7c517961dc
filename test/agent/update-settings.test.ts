/**
 * The settings every update runs with (agent/update.ts updateSettings). The agent used to build
 * its own copy of the trust policy, which added the config's revocations to the revoked list but
 * kept the revoked keys among the trusted ones; it now takes effectiveTrustPolicy's, the one
 * `agent check-config` reports on (issue 12 "The agent's shape").
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { AgentConfig } from "../../agent/config.js";
import { updateSettings } from "../../agent/update.js";
import { DEFAULT_ERASE_BUDGET } from "../../src/gateway/ledger.js";
import {
  encodeTrustPolicy,
  generateManifestKey,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";

const dir = mkdtempSync(join(tmpdir(), "esp-ota-settings-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("updateSettings", () => {
  it("trusts no key the config revokes, and raises the threshold but never lowers it", () => {
    const keys = [0, 1, 2].map(() => generateManifestKey("ed25519"));
    const policy = join(dir, "trust.json");
    writeFileSync(policy, encodeTrustPolicy(trustPolicyFromKeys(keys, 2)));
    const config = (threshold?: number) =>
      ({
        trust: { policy, revoked: [keys[0]!.keyId], ...(threshold ? { threshold } : {}) },
        policy: {
          allowDowngrade: false,
          confirmTimeoutMs: 1000,
          maxConcurrentUpdates: 1,
          maxManifestBytes: 65536,
        },
        download: { maxConcurrent: 1, allowedUrls: [] },
        stagingDir: join(dir, "staging"),
      }) as unknown as AgentConfig;
    const s = updateSettings(config(3));
    expect(s.trust.keys.map((k) => k.keyId)).toEqual([keys[1]!.keyId, keys[2]!.keyId]);
    expect(s.trust.revoked).toEqual([keys[0]!.keyId]);
    expect(s.trust.threshold).toBe(3);
    expect(updateSettings(config()).trust.threshold).toBe(2);
    expect(s.eraseBudget).toEqual(DEFAULT_ERASE_BUDGET);
  });
});
