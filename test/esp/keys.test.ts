import {
  createPrivateKey,
  generateKeyPairSync,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "../../src/bytes.js";
import { EspOtaError } from "../../src/errors.js";
import {
  ECDSA_CURVES,
  type EcdsaScheme,
  type EcdsaSigningKey,
  ecdsaSignDigest,
  ecdsaVerifyDigest,
  generateSigningKeyPem,
  hashBytes,
  hasPrivateKey,
  parseSigningKey,
  publicKeyPem,
  samePublicKey,
} from "../../src/esp/keys.js";
import { fixture, fixtureJson, fixtureText } from "../helpers/fixtures.js";

const sbv1 = fixtureJson("sbv1/expected.json");
const enc = (s: string) => new TextEncoder().encode(s);

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof EspOtaError) return e.code;
    throw e;
  }
  throw new Error("did not throw");
}

describe("parseSigningKey: the key files espsecure reads", () => {
  const xy = sbv1.pubkey_x_be_hex + sbv1.pubkey_y_be_hex;

  it.each([
    ["SEC1 private PEM (espsecure generate-signing-key)", "sbv1/sbv1_key.pem", true],
    ["SubjectPublicKeyInfo PEM", "sbv1/sbv1_pubkey.pem", false],
    ["raw 64-byte X||Y (extract-public-key --version 1)", "sbv1/sbv1_pubkey.bin", false],
  ])("%s gives the same P-256 public key", (_what, file, priv) => {
    const key = parseSigningKey(fixture(file));
    expect(key.scheme).toBe("ecdsa256");
    expect(toHex((key as EcdsaSigningKey).publicKey)).toBe(xy);
    expect(hasPrivateKey(key)).toBe(priv);
  });

  it("reads the private scalar whose SHA-256 espsecure digest-private-key wrote", () => {
    const key = parseSigningKey(fixture("sbv1/sbv1_key.pem")) as EcdsaSigningKey;
    expect(key.privateKey).toHaveLength(32);
    expect(toHex(hashBytes("sha256", key.privateKey!))).toBe(sbv1.private_key_digest.hex);
  });

  it("reads RSA-3072 private (PKCS#1) and public (SPKI) PEMs as the same key", () => {
    const priv = parseSigningKey(fixture("sbv2/sbv2_rsa3072_key.pem"));
    const pub = parseSigningKey(fixture("sbv2/sbv2_rsa3072_pubkey.pem"));
    expect(priv.scheme).toBe("rsa3072");
    if (priv.scheme !== "rsa3072" || pub.scheme !== "rsa3072") throw new Error("scheme");
    expect(priv.n.toString(2)).toHaveLength(3072);
    expect(priv.e).toBe(65537);
    expect(priv.privateKeyPem).toMatch(/^-----BEGIN RSA PRIVATE KEY-----\n/);
    expect(pub.privateKeyPem).toBeUndefined();
    expect(samePublicKey(priv, pub)).toBe(true);
    expect(samePublicKey(priv, parseSigningKey(fixture("sbv2/sbv2_rsa3072_other_key.pem")))).toBe(
      false,
    );
  });

  it.each(["sbv1/sbv1_key.pem", "sbv2/sbv2_rsa3072_key.pem", "sbv2/sbv2_ecdsa256_key.pem"])(
    "PKCS#8 form of %s parses to the same key",
    (file) => {
      const pkcs8 = createPrivateKey(fixtureText(file)).export({
        type: "pkcs8",
        format: "pem",
      }) as string;
      expect(pkcs8).toMatch(/^-----BEGIN PRIVATE KEY-----/);
      const a = parseSigningKey(fixture(file));
      const b = parseSigningKey(enc(pkcs8));
      expect(b).toEqual(a);
    },
  );

  it("accepts an EC PARAMETERS block before the key (openssl ecparam -genkey output)", () => {
    const pem = `-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n${fixtureText("sbv1/sbv1_key.pem")}`;
    expect(parseSigningKey(enc(pem))).toEqual(parseSigningKey(fixture("sbv1/sbv1_key.pem")));
  });

  it("publicKeyPem is byte-identical to the public PEMs in the vectors", () => {
    expect(publicKeyPem(parseSigningKey(fixture("sbv1/sbv1_key.pem")))).toBe(
      fixtureText("sbv1/sbv1_pubkey.pem"),
    );
    expect(publicKeyPem(parseSigningKey(fixture("sbv1/sbv1_pubkey.bin")))).toBe(
      fixtureText("sbv1/sbv1_pubkey.pem"),
    );
    expect(publicKeyPem(parseSigningKey(fixture("sbv2/sbv2_rsa3072_key.pem")))).toBe(
      fixtureText("sbv2/sbv2_rsa3072_pubkey.pem"),
    );
    expect(publicKeyPem(parseSigningKey(fixture("sbv2/sbv2_ecdsa256_key.pem")))).toBe(
      fixtureText("sbv2/sbv2_ecdsa256_pubkey.pem"),
    );
  });
});

describe("parseSigningKey: bad key files are coded errors", () => {
  const rsa1024 = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({
    type: "pkcs1",
    format: "pem",
  }) as string;
  const k1 = generateKeyPairSync("ec", { namedCurve: "secp256k1" }).privateKey.export({
    type: "sec1",
    format: "pem",
  }) as string;
  const ed = generateKeyPairSync("ed25519").privateKey.export({
    type: "pkcs8",
    format: "pem",
  }) as string;
  const encrypted = createPrivateKey(fixtureText("sbv1/sbv1_key.pem")).export({
    type: "pkcs8",
    format: "pem",
    cipher: "aes-256-cbc",
    passphrase: "secret",
  }) as string;
  const offCurve = fixture("sbv1/sbv1_pubkey.bin").slice();
  offCurve[63]! ^= 1;
  const pemBody = fixtureText("sbv1/sbv1_key.pem")
    .replace("MHcCAQEEIKKD", "MHcCAQEEIKKE")
    .replace("AwEHoUQ", "AwEHoUX");

  it.each([
    ["empty file", new Uint8Array(0), "E_KEY_PARSE"],
    ["63 random bytes", new Uint8Array(63).fill(7), "E_KEY_PARSE"],
    ["64 bytes that are not a P-256 point", offCurve, "E_KEY_PARSE"],
    [
      "a certificate PEM",
      enc("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
      "E_KEY_PARSE",
    ],
    ["a PEM private key with a damaged body", enc(pemBody), "E_KEY_PARSE"],
    ["a passphrase-protected PKCS#8 key", enc(encrypted), "E_KEY_ENCRYPTED"],
    ["RSA-1024", enc(rsa1024), "E_KEY_UNSUPPORTED"],
    ["secp256k1", enc(k1), "E_KEY_UNSUPPORTED"],
    ["Ed25519", enc(ed), "E_KEY_UNSUPPORTED"],
  ])("%s -> %s", (_what, bytes, code) => {
    expect(codeOf(() => parseSigningKey(bytes))).toBe(code);
  });

  it("misuse throws TypeError", () => {
    expect(() => parseSigningKey("pem" as unknown as Uint8Array)).toThrow(TypeError);
  });

  it("random bytes, and random PEM bodies, give a key or an E_KEY_* error, nothing else", () => {
    const check = (bytes: Uint8Array) => {
      try {
        parseSigningKey(bytes);
      } catch (e) {
        expect(e).toBeInstanceOf(EspOtaError);
        expect((e as EspOtaError).code).toMatch(/^E_KEY_/);
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), check), { numRuns: 300 });
    fc.assert(
      fc.property(
        fc.constantFrom(
          "EC PRIVATE KEY",
          "RSA PRIVATE KEY",
          "PRIVATE KEY",
          "PUBLIC KEY",
          "RSA PUBLIC KEY",
        ),
        fc.base64String({ maxLength: 400 }),
        (label, body) => check(enc(`-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`)),
      ),
      { numRuns: 200 },
    );
  });
});

describe("generateSigningKeyPem writes what espsecure writes", () => {
  it.each([
    ["ecdsa192", 195],
    ["ecdsa256", 227],
    ["ecdsa384", 288],
  ] as const)(
    "%s: SEC1 'EC PRIVATE KEY' with the curve, %d bytes like espsecure's",
    (scheme, length) => {
      const pem = generateSigningKeyPem(scheme);
      expect(pem).toMatch(/^-----BEGIN EC PRIVATE KEY-----\n/);
      expect(pem).toHaveLength(length);
      const key = parseSigningKey(enc(pem));
      expect(key.scheme).toBe(scheme);
      expect(hasPrivateKey(key)).toBe(true);
    },
  );

  it("the vector key has the same shape (227-byte SEC1 PEM)", () => {
    expect(fixtureText("sbv1/sbv1_key.pem")).toHaveLength(227);
  });

  it("rsa3072: PKCS#1 'RSA PRIVATE KEY', 3072 bits, e = 65537", () => {
    const pem = generateSigningKeyPem("rsa3072");
    expect(pem).toMatch(/^-----BEGIN RSA PRIVATE KEY-----\n/);
    const key = parseSigningKey(enc(pem));
    if (key.scheme !== "rsa3072") throw new Error("scheme");
    expect(key.n.toString(2)).toHaveLength(3072);
    expect(key.e).toBe(65537);
  });

  it("two keys differ", () => {
    expect(generateSigningKeyPem("ecdsa256")).not.toBe(generateSigningKeyPem("ecdsa256"));
  });
});

describe("ECDSA agrees with OpenSSL on every curve (checks the hand-entered P-192 parameters)", () => {
  const data = enc("esp-ota secure boot");
  it.each(["ecdsa192", "ecdsa256", "ecdsa384"] as EcdsaScheme[])("%s", (scheme) => {
    const curve = ECDSA_CURVES[scheme];
    const pair = generateKeyPairSync("ec", { namedCurve: curve.namedCurve });
    const pem = pair.privateKey.export({ type: "sec1", format: "pem" }) as string;
    const key = parseSigningKey(enc(pem)) as EcdsaSigningKey;
    // noble derives the same public point from the scalar that OpenSSL did.
    expect(toHex(curve.ecdsa.getPublicKey(key.privateKey!, false).subarray(1))).toBe(
      toHex(key.publicKey),
    );
    const digest = hashBytes(curve.hash, data);
    const ours = ecdsaSignDigest(key, digest);
    expect(
      nodeVerify(curve.hash, data, { key: pair.publicKey, dsaEncoding: "ieee-p1363" }, ours),
    ).toBe(true);
    const theirs = new Uint8Array(
      nodeSign(curve.hash, data, { key: pair.privateKey, dsaEncoding: "ieee-p1363" }),
    );
    expect(ecdsaVerifyDigest(key, digest, theirs)).toBe(true);
    theirs[5]! ^= 0x10;
    expect(ecdsaVerifyDigest(key, digest, theirs)).toBe(false);
  });

  it("signing needs the private key", () => {
    const pub = parseSigningKey(fixture("sbv1/sbv1_pubkey.bin")) as EcdsaSigningKey;
    expect(codeOf(() => ecdsaSignDigest(pub, new Uint8Array(32)))).toBe("E_KEY_NO_PRIVATE");
  });

  it("verify returns false, never throws, on malformed signatures", () => {
    const key = parseSigningKey(fixture("sbv1/sbv1_pubkey.bin")) as EcdsaSigningKey;
    const digest = fromHex(sbv1.vectors[0].sha256_of_data);
    expect(ecdsaVerifyDigest(key, digest, new Uint8Array(64))).toBe(false);
    expect(ecdsaVerifyDigest(key, digest, new Uint8Array(64).fill(0xff))).toBe(false);
    expect(ecdsaVerifyDigest(key, digest, new Uint8Array(63))).toBe(false);
  });
});
