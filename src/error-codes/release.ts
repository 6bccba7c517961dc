import type { ErrorCodeTable } from "./types.js";

/**
 * Release manifests (docs/manifest.md), the gateway's trust policy and the operator keyring.
 * Each manifest check has its own code so a gateway can report exactly which one failed and the
 * tamper tests (test/release/manifest-tamper.test.ts) can tell them apart.
 */
export const releaseCodes = {
  E_MANIFEST_JSON: {
    meaning: "The manifest is not well-formed JSON (or not UTF-8).",
    action:
      "The file was truncated or corrupted in transit; fetch it again from the release output, never edit it by hand.",
  },
  E_MANIFEST_SCHEMA: {
    meaning:
      "The manifest does not match the format in docs/manifest.md (docs/schemas/manifest.schema.json): a field is missing, extra, of the wrong type or out of range, or its variants repeat a slot or offset.",
    action:
      "The message names the field. Rebuild the release with `esp-ota release build`; a gateway that reads a newer format version needs an upgrade.",
  },
  E_MANIFEST_SIGNATURE_INVALID: {
    meaning:
      "A signature by a trusted key does not verify over the manifest's canonical bytes (the manifest was changed after signing, or the signature is corrupt or for another algorithm).",
    action:
      "Do not install it. Rebuild and re-sign the release from the operator keyring; if nobody changed it, treat it as tampering.",
  },
  E_MANIFEST_KEY_UNTRUSTED: {
    meaning:
      "The manifest lacks enough signatures because some are by keys the trust policy does not list.",
    action:
      "Sign with keys from the trust policy, or, when rotating keys, deploy the trust policy that lists the new key (`esp-ota keys export`) to the gateways first.",
  },
  E_MANIFEST_KEY_REVOKED: {
    meaning:
      "The manifest lacks enough signatures because some are by keys the trust policy revokes.",
    action:
      "Re-sign with keys that are not revoked. If you did not sign this release, treat the revoked key as stolen.",
  },
  E_MANIFEST_UNSIGNED: {
    meaning: "The manifest carries no signatures at all.",
    action:
      "Publish the signed manifest `release build` wrote, not the bare release description; never strip signatures.",
  },
  E_MANIFEST_THRESHOLD: {
    meaning:
      "Fewer distinct trusted, non-revoked keys signed the manifest than the trust policy's threshold (k of n) requires.",
    action:
      "Have more of the operator's manifest keys sign the release (`release build` signs with every key in the keyring).",
  },
  E_MANIFEST_EXPIRED: {
    meaning: "The manifest's expiresAt is in the past (by the verifier's clock).",
    action:
      "Build a new release (a new counter and expiry); check the gateway's clock if the release is new.",
  },
  E_MANIFEST_NOT_YET_VALID: {
    meaning:
      "The manifest's issuedAt is more than the allowed clock skew (5 minutes) in the future by the verifier's clock.",
    action: "Check the clocks of the build machine and the gateway (NTP).",
  },
  E_MANIFEST_COUNTER: {
    meaning:
      "The manifest's release counter is below the lowest the device accepts: an older release replayed (rollback).",
    action:
      "Do not install it. Build a new release for the device; its counter must exceed the last one installed. If every new release is refused, a manifest signed with stolen keys may have fast-forwarded the counter: revoke those keys (trust.json, or trust.revoked in the gateway config) and restart the agent; the genuine counter then applies again.",
  },
  E_MANIFEST_DEVICE_MISMATCH: {
    meaning:
      "The manifest is for another device: its ciphertext is encrypted with that device's key.",
    action: "Fetch the manifest built for this device id from the release.",
  },
  E_MANIFEST_CHIP_MISMATCH: {
    meaning: "The manifest is for another chip type than the device's.",
    action: "Check the device registry entry's chip; rebuild the release for the right chip.",
  },
  E_MANIFEST_IMAGE_MISMATCH: {
    meaning: "The image file's SHA-256 matches none of the manifest's variants.",
    action:
      "It is the wrong file, another release's, or corrupted; use the ciphertext written next to the manifest by `release build`.",
  },
  E_MANIFEST_IMAGE_SIZE: {
    meaning: "The image file's size differs from the size of the variant its SHA-256 matches.",
    action: "The manifest is inconsistent; rebuild the release.",
  },
  E_TRUST_POLICY_INVALID: {
    meaning:
      "The trust policy file is not valid: malformed JSON, a key id that does not match its public key, an invalid public key, or a threshold that the non-revoked keys cannot reach.",
    action: "Export it again with `esp-ota keys export DIR`; the message names the entry at fault.",
  },
  E_KEYRING_EXISTS: {
    meaning: "The keyring directory already exists and is not empty.",
    action:
      "Keys are never overwritten: choose a new directory, or remove the old one if you really mean to replace every key.",
  },
  E_KEYRING_MISSING: {
    meaning: "The keyring directory, its keyring.json or one of its key files is missing.",
    action:
      "Check the path; restore the keyring from its backup, or create one with `esp-ota keys init DIR`.",
  },
  E_KEYRING_PERMISSIONS: {
    meaning:
      "The keyring directory or a private key file can be read by other users (group or other permission bits set), or belongs to another user.",
    action:
      "Run `chmod 700 DIR && chmod 600 DIR/*.pem DIR/keyring.json`, then consider whether the keys have leaked.",
  },
  E_KEYRING_INVALID: {
    meaning:
      "The keyring is inconsistent: keyring.json is malformed, or a key file does not hold the key keyring.json names.",
    action: "Restore the keyring from its backup; do not edit keyring.json by hand.",
  },
} as const satisfies ErrorCodeTable;
