import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { concatBytes, toHex } from "../../src/bytes.js";
import { EspOtaError } from "../../src/errors.js";
import { parseSigningKey } from "../../src/esp/keys.js";
import {
  digestPrivateKeyV1,
  extractPublicKeyV1,
  SBV1_BLOCK_LENGTH,
  SIGNATURE_FAILURE_CODES,
  signatureBlockV1,
  signDataV1,
  verifyBlockV1,
  verifySignedV1,
} from "../../src/esp/secure-boot-v1.js";
import { fixture, fixtureJson } from "../helpers/fixtures.js";

interface V1Vector {
  data: string;
  signed: string;
  signed_len: number;
  sig_block_hex: string;
  r_be_hex: string;
  s_be_hex: string;
}
const expected = fixtureJson<{
  pubkey_x_be_hex: string;
  pubkey_y_be_hex: string;
  vectors: V1Vector[];
  negative: { last_line: string }[];
}>("sbv1/expected.json");
const privateKey = parseSigningKey(fixture("sbv1/sbv1_key.pem"));
const publicPem = parseSigningKey(fixture("sbv1/sbv1_pubkey.pem"));
const publicRaw = parseSigningKey(fixture("sbv1/sbv1_pubkey.bin"));
const otherKey = parseSigningKey(fixture("sbv1/sbv1_other_key.pem"));
const rsaKey = parseSigningKey(fixture("sbv2/sbv2_rsa3072_pubkey.pem"));

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof EspOtaError) return e.code;
    throw e;
  }
  throw new Error("did not throw");
}

describe("Secure Boot V1 signatures are byte-identical to espsecure (RFC 6979)", () => {
  it.each(expected.vectors.map((v) => [v.data, v] as const))("%s", (_name, v) => {
    const data = fixture(`sbv1/${v.data}`);
    const block = signatureBlockV1(data, privateKey);
    expect(block).toHaveLength(SBV1_BLOCK_LENGTH);
    expect(toHex(block)).toBe(v.sig_block_hex);
    expect(toHex(block.subarray(4, 36))).toBe(v.r_be_hex);
    expect(toHex(block.subarray(36))).toBe(v.s_be_hex);
    const signed = signDataV1(data, privateKey);
    expect(signed).toHaveLength(v.signed_len);
    expect(Buffer.from(signed).equals(fixture(`sbv1/${v.signed}`))).toBe(true);
  });

  it("signing twice gives the same bytes", () => {
    const data = fixture("sbv1/data_1000.bin");
    expect(toHex(signatureBlockV1(data, privateKey))).toBe(
      toHex(signatureBlockV1(data, privateKey)),
    );
  });
});

describe("verifySignedV1 (espsecure verify-signature --version 1)", () => {
  const keys = [
    ["private PEM", privateKey],
    ["public PEM", publicPem],
    ["raw 64-byte .bin", publicRaw],
  ] as const;
  for (const v of expected.vectors) {
    it.each(keys)(`${v.signed} verifies with the %s key`, (_what, key) => {
      expect(verifySignedV1(fixture(`sbv1/${v.signed}`), key)).toEqual({ ok: true });
    });
  }

  it.each([
    ["data_4096.signed.tampered_data.bin", publicRaw],
    ["data_4096.signed.tampered_sig.bin", publicRaw],
    ["data_4096.signed.bin", otherKey],
  ] as const)("negative vector %s fails with E_SIG_MISMATCH", (file, key) => {
    const r = verifySignedV1(fixture(`sbv1/${file}`), key);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.code).toBe("E_SIG_MISMATCH");
      expect(r.reason).toMatch(/does not verify/);
    }
  });

  it("the negative vectors are what espsecure rejected", () => {
    expect(expected.negative.map((n) => n.last_line)).toEqual(
      Array(3).fill("A fatal error occurred: Signature is not valid."),
    );
  });

  it("rejects a block whose version word is not 0, before checking the signature", () => {
    const signed = fixture("sbv1/data_1000.signed.bin").slice();
    signed[1000] = 1;
    const r = verifySignedV1(signed, publicRaw);
    expect(r).toMatchObject({ ok: false, code: "E_SIG_V1_VERSION" });
  });

  it("reading r and s as little-endian would not verify (the block is big-endian)", () => {
    const signed = fixture("sbv1/data_1000.signed.bin").slice();
    signed.subarray(1004, 1036).reverse();
    signed.subarray(1036, 1068).reverse();
    expect(verifySignedV1(signed, publicRaw)).toMatchObject({ ok: false, code: "E_SIG_MISMATCH" });
  });

  it("a file shorter than the block is E_SIG_TOO_SHORT; exactly 68 bytes signs empty data", () => {
    expect(verifySignedV1(new Uint8Array(67), publicRaw)).toMatchObject({
      ok: false,
      code: "E_SIG_TOO_SHORT",
    });
    const empty = signDataV1(new Uint8Array(0), privateKey);
    expect(empty).toHaveLength(68);
    expect(verifySignedV1(empty, publicRaw)).toEqual({ ok: true });
  });

  it("verifyBlockV1 takes the data and block separately", () => {
    const data = fixture("sbv1/data_4096.bin");
    const block = fixture("sbv1/data_4096.signed.bin").subarray(4096);
    expect(verifyBlockV1(data, block, publicPem)).toEqual({ ok: true });
    expect(verifyBlockV1(data.subarray(1), block, publicPem)).toMatchObject({
      ok: false,
      code: "E_SIG_MISMATCH",
    });
  });

  it("random bytes as a signed file give a coded failure value, never an exception", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const r = verifySignedV1(bytes, publicRaw);
        expect(r.ok).toBe(false);
        if (!r.ok) expect(SIGNATURE_FAILURE_CODES).toContain(r.code);
      }),
      { numRuns: 300 },
    );
  });

  it("round trip: any data signs and verifies; any flipped byte then fails", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (data, at, x) => {
          const signed = signDataV1(data, privateKey);
          expect(verifySignedV1(signed, publicRaw)).toEqual({ ok: true });
          const bad = signed.slice();
          bad[at % bad.length]! ^= x;
          expect(verifySignedV1(bad, publicRaw).ok).toBe(false);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe("keys for V1", () => {
  it("extractPublicKeyV1 is byte-exact with espsecure extract-public-key --version 1", () => {
    expect(toHex(extractPublicKeyV1(privateKey))).toBe(toHex(fixture("sbv1/sbv1_pubkey.bin")));
    expect(toHex(extractPublicKeyV1(privateKey))).toBe(
      expected.pubkey_x_be_hex + expected.pubkey_y_be_hex,
    );
  });

  it("digestPrivateKeyV1 is byte-exact with espsecure digest-private-key; 192 keeps 24 bytes", () => {
    const digest = fixture("sbv1/sbv1_private_key_digest.bin");
    expect(toHex(digestPrivateKeyV1(privateKey))).toBe(toHex(digest));
    expect(toHex(digestPrivateKeyV1(privateKey, 192))).toBe(toHex(digest.subarray(0, 24)));
  });

  it.each([
    ["signing with an RSA key", () => signatureBlockV1(new Uint8Array(4), rsaKey), "E_KEY_SCHEME"],
    [
      "verifying with an RSA key",
      () => verifySignedV1(new Uint8Array(100), rsaKey),
      "E_KEY_SCHEME",
    ],
    ["extracting from an RSA key", () => extractPublicKeyV1(rsaKey), "E_KEY_SCHEME"],
    [
      "signing with a public key",
      () => signDataV1(new Uint8Array(4), publicRaw),
      "E_KEY_NO_PRIVATE",
    ],
    ["digesting a public key", () => digestPrivateKeyV1(publicPem), "E_KEY_NO_PRIVATE"],
  ])("%s -> %s", (_what, f, code) => {
    expect(codeOf(f)).toBe(code);
  });

  it("misuse throws TypeError / RangeError", () => {
    expect(() => signatureBlockV1([1, 2] as unknown as Uint8Array, privateKey)).toThrow(TypeError);
    expect(() => verifyBlockV1(new Uint8Array(4), new Uint8Array(67), publicRaw)).toThrow(
      RangeError,
    );
    expect(() => digestPrivateKeyV1(privateKey, 128 as 256)).toThrow(RangeError);
    expect(() => verifySignedV1(new Uint8Array(80), null as never)).toThrow(TypeError);
  });

  it("a file signed with one key and appended data no longer verifies", () => {
    const signed = fixture("sbv1/data_1000.signed.bin");
    expect(verifySignedV1(concatBytes(signed, new Uint8Array(1)), publicRaw).ok).toBe(false);
  });
});
