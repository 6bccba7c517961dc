import type { ErrorCodeTable } from "./types.js";

/**
 * Signing keys (E_KEY_*) and Secure Boot V1/V2 signatures (E_SIG_*). The E_SIG_* codes that a
 * verifier returns as a value (`{ ok: false, code }`) are listed in `SIGNATURE_FAILURE_CODES`
 * in src/esp/secure-boot-v1.ts; the CLI turns them into exit code 1.
 */
export const secureBootCodes = {
  E_KEY_PARSE: {
    meaning:
      "The key file is neither a PEM key (private: SEC1 `EC PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`, PKCS#8; public: SubjectPublicKeyInfo) nor a raw 64-byte P-256 public key X||Y, or its point is not on the curve.",
    action:
      "Pass the key espsecure or `esp-ota secure generate-signing-key` wrote, or the `.bin` from `extract-public-key --version 1`.",
  },
  E_KEY_ENCRYPTED: {
    meaning:
      "The PEM private key is protected by a passphrase; espsecure does not take passphrases either.",
    action:
      "Export an unencrypted copy (`openssl pkey -in key.pem -out plain.pem`) and keep it offline.",
  },
  E_KEY_UNSUPPORTED: {
    meaning:
      "The key is of a kind secure boot cannot use: RSA other than 3072 bits or with an exponent above 32 bits, an ECDSA curve other than P-192/P-256/P-384, or another algorithm.",
    action: "Generate a supported key with `esp-ota secure generate-signing-key`.",
  },
  E_KEY_SCHEME: {
    meaning:
      "The key does not fit the signing scheme asked for (Secure Boot V1 takes only ECDSA P-256 keys).",
    action:
      "Use a P-256 key for `--version 1`, or choose `--version 2` for RSA-3072 and other ECDSA curves.",
  },
  E_KEY_NO_PRIVATE: {
    meaning: "The operation needs the private key, but the key file holds only a public key.",
    action:
      "Pass the private key PEM (signing and digest-private-key need it; verification does not).",
  },
  E_KEY_EXISTS: {
    meaning:
      "A key-generating command (generate-signing-key, generate-flash-encryption-key) refuses to overwrite an existing file, as espsecure does, so no key is lost.",
    action:
      "Choose a new file name, or move the old key away yourself if you really mean to replace it.",
  },
  E_SIG_TOO_SHORT: {
    meaning:
      "The file is shorter than the 68-byte Secure Boot V1 signature block, so it cannot be signed.",
    action:
      "Check that you passed the signed image (sign-data --version 1 output), not the key or a fragment.",
  },
  E_SIG_V1_VERSION: {
    meaning:
      "The last 68 bytes do not start with the version word 0 of a Secure Boot V1 signature block (often: the image is not signed).",
    action:
      "Sign the image with `sign-data --version 1`, or check whether it uses Secure Boot V2 instead.",
  },
  E_SIG_MISMATCH: {
    meaning:
      "The Secure Boot V1 ECDSA signature does not verify with this key: the data was changed, the signature was damaged, or another key signed it (V1 blocks carry no digest or key, so these cannot be told apart).",
    action: "Verify against the right public key; if it is right, rebuild and re-sign the image.",
  },
  E_SIG_FILE_SIZE: {
    meaning:
      "A Secure Boot V2 signed file must be a non-zero multiple of 4096 bytes (image padded to 4 KB plus the 4 KB signature sector).",
    action:
      "Pass the file sign-data --version 2 wrote, unmodified; use --skip-padding only for files signed with it.",
  },
  E_SIG_NO_BLOCK: {
    meaning:
      "The signature sector holds no Secure Boot V2 block with magic 0xE7, version 2 or 3 and a correct CRC-32 (unsigned image, or a damaged block).",
    action:
      "Sign the image with `sign-data --version 2`; if it was signed, the sector was damaged in transit.",
  },
  E_SIG_DIGEST_MISMATCH: {
    meaning:
      "The image digest stored in the signature block differs from the digest of the image: the image changed after it was signed.",
    action: "Do not flash it. Rebuild or re-download the image and sign it again.",
  },
  E_SIG_WRONG_KEY: {
    meaning:
      "No signature block carries the expected key: the image was signed with another key (or another scheme), or its key digest matches no eFuse key digest.",
    action:
      "Verify with the key the release was signed with, or re-sign the image with a key the device trusts.",
  },
  E_SIG_KEY_REVOKED: {
    meaning: "The image is signed only with keys whose eFuse digest slot is revoked (KEY_REVOKEn).",
    action: "Re-sign the image with a key in a slot that is not revoked.",
  },
  E_SIG_INVALID: {
    meaning:
      "A signature block carries the expected key and the right image digest, but its RSA-PSS or ECDSA signature does not verify (the block was tampered with).",
    action: "Do not flash it. Sign the image again from the release's own build.",
  },
  E_SIG_SECTOR_FULL: {
    meaning:
      "A signature sector holds at most 3 signature blocks; adding these keys would need more.",
    action: "Sign with fewer keys, or sign the unsigned image afresh instead of appending.",
  },
} as const satisfies ErrorCodeTable;
