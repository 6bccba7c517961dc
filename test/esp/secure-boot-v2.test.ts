import { createPublicKey, verify as nodeVerify } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { concatBytes, crc32, fromHex, putU32le, toHex, u32le } from "../../src/bytes.js";
import { EspOtaError } from "../../src/errors.js";
import {
  ECDSA_CURVES,
  type EcdsaScheme,
  generateSigningKeyPem,
  hashBytes,
  parseSigningKey,
  publicKeyPem,
  type SigningKey,
} from "../../src/esp/keys.js";
import { SIGNATURE_FAILURE_CODES } from "../../src/esp/secure-boot-v1.js";
import {
  appendSignaturesV2,
  encodeSignatureBlockV2,
  formatSignatureInfoV2,
  paddingV2,
  parseSignatureSectorV2,
  publicKeyDigestV2,
  SIG_BLOCK_SIZE,
  SIG_SECTOR_SIZE,
  signatureInfoV2Lines,
  signatureSectorV2,
  signDataV2,
  verifySectorV2,
  verifySectorV2WithDigests,
  verifySignedV2,
  verifySignedV2Report,
} from "../../src/esp/secure-boot-v2.js";
import { fixture, fixtureJson, fixtureText } from "../helpers/fixtures.js";

const expected = fixtureJson("sbv2/expected.json");
const key = (f: string) => parseSigningKey(fixture(`sbv2/${f}`));
const rsa = key("sbv2_rsa3072_key.pem");
const rsaPub = key("sbv2_rsa3072_pubkey.pem");
const rsaOther = key("sbv2_rsa3072_other_key.pem");
const ec = key("sbv2_ecdsa256_key.pem");
const ecPub = key("sbv2_ecdsa256_pubkey.pem");
const ecOther = key("sbv2_ecdsa256_other_key.pem");
const KEYS = {
  rsa3072: { priv: rsa, pub: rsaPub, other: rsaOther },
  ecdsa256: { priv: ec, pub: ecPub, other: ecOther },
};
const SCHEMES = ["rsa3072", "ecdsa256"] as const;

function split(signed: Uint8Array) {
  return {
    data: signed.subarray(0, signed.length - SIG_SECTOR_SIZE),
    sector: signed.subarray(signed.length - SIG_SECTOR_SIZE),
  };
}

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof EspOtaError) return e.code;
    throw e;
  }
  throw new Error("did not throw");
}

function expectFail(r: ReturnType<typeof verifySignedV2>, code: string) {
  expect(r.ok).toBe(false);
  if (!r.ok) {
    expect(r.code).toBe(code);
    expect(r.reason.length).toBeGreaterThan(10);
  }
}

describe("espsecure's signed files verify", () => {
  for (const scheme of SCHEMES) {
    for (const v of expected.schemes[scheme].vectors) {
      it(`${v.signed} with the public and the private key`, () => {
        const signed = fixture(`sbv2/${v.signed}`);
        expect(verifySignedV2(signed, KEYS[scheme].pub)).toEqual({
          ok: true,
          keyIndex: 0,
          blockIndex: 0,
        });
        expect(verifySignedV2(signed, KEYS[scheme].priv)).toEqual({
          ok: true,
          keyIndex: 0,
          blockIndex: 0,
        });
      });

      it(`${v.signed}: parsed block 0 matches expected.json`, () => {
        const signed = fixture(`sbv2/${v.signed}`);
        expect(v.signature_sector_offset).toBe(signed.length - SIG_SECTOR_SIZE);
        const blocks = parseSignatureSectorV2(split(signed).sector);
        expect(blocks).toHaveLength(1);
        const b = blocks[0]!;
        const f = v.signature_block;
        expect(b.index).toBe(0);
        expect(b.scheme).toBe(scheme);
        expect(b.crcOk).toBe(true);
        expect(toHex(b.imageDigest)).toBe(f.image_sha256);
        expect(toHex(b.keyDigest)).toBe(expected.schemes[scheme].pubkey_digest_hex);
        if (scheme === "rsa3072") {
          expect(toHex(b.signature)).toBe(toHex(fromHex(f.rsa_pss_signature_le_hex).reverse()));
          expect(b.publicKey).toEqual({
            scheme: "rsa3072",
            n: (rsa as { n: bigint }).n,
            e: f.rsa_e,
          });
        } else {
          expect(toHex(b.signature)).toBe(
            toHex(concatBytes(fromHex(f.r_le_hex).reverse(), fromHex(f.s_le_hex).reverse())),
          );
          expect(b.publicKey).toEqual({
            scheme: "ecdsa256",
            publicKey: (ecPub as { publicKey: Uint8Array }).publicKey,
          });
        }
      });

      it(`${v.signed}: signature-info-v2 text is byte-exact`, () => {
        expect(formatSignatureInfoV2(fixture(`sbv2/${v.signed}`))).toBe(
          fixtureText(`sbv2/${v.signature_info_v2_output}`),
        );
      });
    }

    it(`${scheme}: the eFuse key digest is byte-exact (digest-sbv2-public-key), from private or public key`, () => {
      const want = toHex(fixture(`sbv2/${expected.schemes[scheme].pubkey_digest_file}`));
      expect(toHex(publicKeyDigestV2(KEYS[scheme].priv))).toBe(want);
      expect(toHex(publicKeyDigestV2(KEYS[scheme].pub))).toBe(want);
    });
  }

  it("the RSA signature in espsecure's block is a standard RSA-PSS signature (checked by OpenSSL directly)", () => {
    const signed = fixture("sbv2/data_8192.rsa3072.signed.bin");
    const [b] = parseSignatureSectorV2(split(signed).sector);
    const ok = nodeVerify(
      "sha256",
      split(signed).data,
      {
        key: createPublicKey(fixtureText("sbv2/sbv2_rsa3072_pubkey.pem")),
        padding: 6,
        saltLength: 32,
      },
      b!.signature,
    );
    expect(ok).toBe(true);
  });
});

describe("negative vectors fail with distinct codes", () => {
  for (const scheme of SCHEMES) {
    it.each([
      ["tampered_data", "E_SIG_DIGEST_MISMATCH"],
      ["tampered_sig_badcrc", "E_SIG_NO_BLOCK"],
      ["tampered_sig_goodcrc", "E_SIG_INVALID"],
    ])(`${scheme} %s -> %s`, (what, code) => {
      expectFail(
        verifySignedV2(fixture(`sbv2/data_8192.${scheme}.signed.${what}.bin`), KEYS[scheme].pub),
        code,
      );
    });

    it(`${scheme}: the other key of the same scheme -> E_SIG_WRONG_KEY`, () => {
      expectFail(
        verifySignedV2(fixture(`sbv2/data_8192.${scheme}.signed.bin`), KEYS[scheme].other),
        "E_SIG_WRONG_KEY",
      );
    });
  }

  it("an RSA-signed file checked with an ECDSA key is a clean E_SIG_WRONG_KEY (espsecure crashes)", () => {
    expect(expected.cross_key_negative.last_line).toBe("AssertionError");
    const r = verifySignedV2(fixture("sbv2/data_8192.rsa3072.signed.bin"), ecPub);
    expectFail(r, "E_SIG_WRONG_KEY");
    if (!r.ok) expect(r.reason).toMatch(/RSA-3072.*ECDSA P-256/);
    expectFail(
      verifySignedV2(fixture("sbv2/data_8192.ecdsa256.signed.bin"), rsaPub),
      "E_SIG_WRONG_KEY",
    );
  });

  it("the per-block report says what happened to each block", () => {
    const report = verifySignedV2Report(
      fixture("sbv2/data_8192.rsa3072.signed.tampered_sig_goodcrc.bin"),
      rsaPub,
    );
    expect(report.blocks.map((b) => b.outcome)).toEqual(["invalid-signature", "absent", "absent"]);
    const good = verifySignedV2Report(fixture("sbv2/data_8192.ecdsa256.signed.bin"), ecPub);
    expect(good.blocks.map((b) => b.outcome)).toEqual(["verified", "absent", "absent"]);
  });

  it("file sizes: not a multiple of 4096, or empty -> E_SIG_FILE_SIZE", () => {
    const signed = fixture("sbv2/data_8192.rsa3072.signed.bin");
    expectFail(verifySignedV2(signed.subarray(1), rsaPub), "E_SIG_FILE_SIZE");
    expectFail(verifySignedV2(new Uint8Array(0), rsaPub), "E_SIG_FILE_SIZE");
    expectFail(
      verifySignedV2(new Uint8Array(4095), rsaPub, { skipPadding: true }),
      "E_SIG_FILE_SIZE",
    );
    expectFail(verifySignedV2(new Uint8Array(4096).fill(0xff), rsaPub), "E_SIG_NO_BLOCK");
  });

  it("signature-info-v2 stops where espsecure stops", () => {
    const lines: string[] = [];
    const bad = fixture("sbv2/data_8192.rsa3072.signed.tampered_data.bin");
    expect(codeOf(() => signatureInfoV2Lines(bad, (l) => lines.push(l)))).toBe(
      "E_SIG_DIGEST_MISMATCH",
    );
    expect(lines).toEqual(["Signature block 0 is valid (RSA)."]);
    expect(
      formatSignatureInfoV2(fixture("sbv2/data_8192.rsa3072.signed.tampered_sig_badcrc.bin")),
    ).toBe("Signature block 0 absent/invalid. Skipping checking next blocks...\n");
    expect(codeOf(() => formatSignatureInfoV2(new Uint8Array(5000)))).toBe("E_SIG_FILE_SIZE");
  });
});

describe("our signatures verify and have espsecure's exact layout", () => {
  for (const scheme of SCHEMES) {
    for (const v of expected.schemes[scheme].vectors) {
      it(`${scheme} ${v.data}`, () => {
        const data = fixture(`sbv2/${v.data}`);
        const theirs = fixture(`sbv2/${v.signed}`);
        const ours = signDataV2(data, [KEYS[scheme].priv]);
        expect(ours).toHaveLength(theirs.length);
        expect(paddingV2(data.length)).toBe(v.padded_len - v.data_len);
        // Same image, same 0xFF padding.
        expect(Buffer.from(split(ours).data).equals(Buffer.from(split(theirs).data))).toBe(true);
        const ob = split(ours).sector.subarray(0, SIG_BLOCK_SIZE);
        const tb = split(theirs).sector.subarray(0, SIG_BLOCK_SIZE);
        const f = v.signature_block;
        expect(ob[0]).toBe(0xe7);
        expect(ob[1]).toBe(f.version);
        // Header, image digest and every key field (RSA n, e, rinv, m'; ECDSA curve id, X, Y).
        const keyEnd = scheme === "rsa3072" ? 812 : 101;
        expect(toHex(ob.subarray(0, keyEnd))).toBe(toHex(tb.subarray(0, keyEnd)));
        if (scheme === "rsa3072") {
          expect(toHex(ob.subarray(36, 420))).toBe(f.rsa_n_le_hex);
          expect(u32le(ob, 420)).toBe(f.rsa_e);
          expect(toHex(ob.subarray(424, 808))).toBe(f.rsa_rinv_le_hex);
          expect(u32le(ob, 808)).toBe(Number.parseInt(f.rsa_m_prime, 16));
        } else {
          expect(ob[36]).toBe(f.curve_id);
          expect(toHex(ob.subarray(37, 69))).toBe(f.pubkey_x_le_hex);
          expect(toHex(ob.subarray(69, 101))).toBe(f.pubkey_y_le_hex);
          expect(ob.subarray(165, 1196).every((x) => x === 0)).toBe(true);
        }
        expect(u32le(ob, 1196)).toBe(crc32(ob.subarray(0, 1196)));
        expect(toHex(ob.subarray(1200))).toBe(f.pad_16_after_crc_hex);
        expect(
          split(ours)
            .sector.subarray(SIG_BLOCK_SIZE)
            .every((x) => x === 0xff),
        ).toBe(true);
        expect(verifySignedV2(ours, KEYS[scheme].pub)).toEqual({
          ok: true,
          keyIndex: 0,
          blockIndex: 0,
        });
        // Same key and image digests, so espsecure's signature-info-v2 text is the same too.
        expect(formatSignatureInfoV2(ours)).toBe(fixtureText(`sbv2/${v.signature_info_v2_output}`));
      });
    }
  }

  it("ECDSA blocks are deterministic (RFC 6979); RSA-PSS ones are salted", () => {
    const data = fixture("sbv2/data_8192.bin");
    expect(toHex(signatureSectorV2(data, [ec]))).toBe(toHex(signatureSectorV2(data, [ec])));
    expect(toHex(signatureSectorV2(data, [rsa]))).not.toBe(toHex(signatureSectorV2(data, [rsa])));
  });

  it("our RSA block's signature is standard RSA-PSS to OpenSSL", () => {
    const data = fixture("sbv2/data_5000.bin");
    const signed = signDataV2(data, [rsa]);
    const [b] = parseSignatureSectorV2(split(signed).sector);
    const pub = createPublicKey(publicKeyPem(rsaPub));
    expect(
      nodeVerify(
        "sha256",
        split(signed).data,
        { key: pub, padding: 6, saltLength: 32 },
        b!.signature,
      ),
    ).toBe(true);
  });

  it("--skip-padding keeps the data unaligned; verification then needs skipPadding too", () => {
    const data = fixture("sbv2/data_5000.bin");
    const signed = signDataV2(data, [ec], { skipPadding: true });
    expect(signed).toHaveLength(5000 + SIG_SECTOR_SIZE);
    expectFail(verifySignedV2(signed, ecPub), "E_SIG_FILE_SIZE");
    expect(verifySignedV2(signed, ecPub, { skipPadding: true }).ok).toBe(true);
  });

  it("an aligned input gets no padding", () => {
    expect(signDataV2(fixture("sbv2/data_8192.bin"), [ec])).toHaveLength(8192 + 4096);
    expect([0, 1, 4095, 4096, 4097].map(paddingV2)).toEqual([0, 4095, 1, 0, 4095]);
  });
});

describe("1 to 3 signature blocks", () => {
  const data = fixture("sbv2/data_8192.bin");
  const signed = signDataV2(data, [rsa, ecOther, rsaOther]);

  it("blocks sit at sector offsets 0, 1216, 2432, the rest 0xFF; each key verifies its block", () => {
    const { sector } = split(signed);
    expect(parseSignatureSectorV2(sector).map((b) => [b.index, b.scheme])).toEqual([
      [0, "rsa3072"],
      [1, "ecdsa256"],
      [2, "rsa3072"],
    ]);
    expect(sector.subarray(3 * SIG_BLOCK_SIZE).every((x) => x === 0xff)).toBe(true);
    expect(verifySignedV2(signed, rsaPub)).toEqual({ ok: true, keyIndex: 0, blockIndex: 0 });
    expect(verifySignedV2(signed, ecOther)).toEqual({ ok: true, keyIndex: 1, blockIndex: 1 });
    expect(verifySignedV2(signed, rsaOther)).toEqual({ ok: true, keyIndex: 2, blockIndex: 2 });
    expectFail(verifySignedV2(signed, ecPub), "E_SIG_WRONG_KEY");
  });

  it("signature-info-v2 lists all three digests", () => {
    expect(formatSignatureInfoV2(signed).split("\n")).toEqual([
      "Signature block 0 is valid (RSA).",
      `Public key digest for block 0: ${expected.schemes.rsa3072.pubkey_digest_hex.match(/../g).join(" ")}`,
      "Signature block 1 is valid (ECDSA).",
      `Public key digest for block 1: ${toHex(publicKeyDigestV2(ecOther)).match(/../g)!.join(" ")}`,
      "Signature block 2 is valid (RSA).",
      `Public key digest for block 2: ${toHex(publicKeyDigestV2(rsaOther)).match(/../g)!.join(" ")}`,
      "",
    ]);
  });

  it("0 or 4 keys is misuse; a public key cannot sign", () => {
    expect(() => signDataV2(data, [])).toThrow(RangeError);
    expect(() => signDataV2(data, [ec, ec, ec, ec])).toThrow(RangeError);
    expect(codeOf(() => signDataV2(data, [ecPub]))).toBe("E_KEY_NO_PRIVATE");
    expect(codeOf(() => signDataV2(data, [rsaPub]))).toBe("E_KEY_NO_PRIVATE");
  });

  it("appendSignaturesV2 keeps the present blocks and adds the new ones (--append-signatures)", () => {
    const one = signDataV2(data, [ec]);
    const { signed: two, keptBlocks } = appendSignaturesV2(one, [rsaOther]);
    expect(keptBlocks).toBe(1);
    expect(two).toHaveLength(one.length);
    expect(toHex(split(two).sector.subarray(0, SIG_BLOCK_SIZE))).toBe(
      toHex(split(one).sector.subarray(0, SIG_BLOCK_SIZE)),
    );
    expect(verifySignedV2(two, ecPub)).toMatchObject({ ok: true, blockIndex: 0 });
    expect(verifySignedV2(two, rsaOther)).toMatchObject({ ok: true, blockIndex: 1 });
    expect(codeOf(() => appendSignaturesV2(two, [rsa, ec]))).toBe("E_SIG_SECTOR_FULL");
    expect(codeOf(() => appendSignaturesV2(signed, [ec]))).toBe("E_SIG_SECTOR_FULL");
    expect(codeOf(() => appendSignaturesV2(one.subarray(1), [ec]))).toBe("E_SIG_FILE_SIZE");
  });

  it("appending to a file with no signature signs the whole file afresh, as espsecure does", () => {
    const { signed: fresh, keptBlocks } = appendSignaturesV2(data, [ec]);
    expect(keptBlocks).toBe(0);
    expect(fresh).toHaveLength(data.length + SIG_SECTOR_SIZE);
    expect(verifySignedV2(fresh, ecPub).ok).toBe(true);
  });
});

describe("ECDSA P-192 and P-384 blocks (ESP32-C2, ESP32-C5/P4)", () => {
  const data = fixture("sbv2/data_5000.bin");
  it.each(["ecdsa192", "ecdsa384"] as EcdsaScheme[])(
    "%s: layout, verification, and OpenSSL agreement",
    (scheme) => {
      const pem = generateSigningKeyPem(scheme);
      const k = parseSigningKey(new TextEncoder().encode(pem)) as Extract<
        SigningKey,
        { publicKey: Uint8Array }
      >;
      const signed = signDataV2(data, [k]);
      const { data: padded, sector } = split(signed);
      const b = sector.subarray(0, SIG_BLOCK_SIZE);
      const curve = ECDSA_CURVES[scheme];
      const size = curve.size;
      expect(b[1]).toBe(3);
      if (scheme === "ecdsa384") {
        expect(b[2]).toBe(1);
        expect(toHex(b.subarray(4, 52))).toBe(toHex(hashBytes("sha384", padded)));
        expect(b[52]).toBe(3);
        expect(toHex(b.subarray(53, 101))).toBe(toHex(k.publicKey.slice(0, 48).reverse()));
        expect(toHex(publicKeyDigestV2(k))).toBe(toHex(hashBytes("sha256", b.subarray(52, 149))));
        expect(b.subarray(245, 1196).every((x) => x === 0)).toBe(true);
      } else {
        expect(b[2]).toBe(0);
        expect(b[36]).toBe(1);
        expect(toHex(b.subarray(37, 61))).toBe(toHex(k.publicKey.slice(0, 24).reverse()));
        expect(toHex(b.subarray(61, 85))).toBe(toHex(k.publicKey.slice(24).reverse()));
        // espsecure packs the 48-byte point and signature into 64-byte fields ("64s"): zero-filled.
        expect(b.subarray(85, 101).every((x) => x === 0)).toBe(true);
        expect(b.subarray(149, 1196).every((x) => x === 0)).toBe(true);
        expect(toHex(publicKeyDigestV2(k))).toBe(toHex(hashBytes("sha256", b.subarray(36, 101))));
      }
      const [parsed] = parseSignatureSectorV2(sector);
      expect(parsed!.scheme).toBe(scheme);
      expect(parsed!.publicKey).toEqual({ scheme, publicKey: k.publicKey });
      expect(parsed!.signature).toHaveLength(2 * size);
      expect(
        nodeVerify(
          curve.hash,
          padded,
          { key: createPublicKey(pem), dsaEncoding: "ieee-p1363" },
          parsed!.signature,
        ),
      ).toBe(true);
      expect(
        verifySignedV2(signed, parseSigningKey(new TextEncoder().encode(publicKeyPem(k)))),
      ).toEqual({
        ok: true,
        keyIndex: 0,
        blockIndex: 0,
      });
      expect(formatSignatureInfoV2(signed)).toContain(
        `Public key digest for block 0: ${toHex(publicKeyDigestV2(k)).match(/../g)!.join(" ")}`,
      );
      const tampered = signed.slice();
      tampered[100]! ^= 1;
      expectFail(verifySignedV2(tampered, k), "E_SIG_DIGEST_MISMATCH");
    },
  );
});

describe("verifySectorV2WithDigests: the device's check against eFuse key digests", () => {
  const signed = signDataV2(fixture("sbv2/data_8192.bin"), [rsa, ec]);
  const { data, sector } = split(signed);
  const dRsa = publicKeyDigestV2(rsa);
  const dEc = publicKeyDigestV2(ec);
  const dOther = publicKeyDigestV2(rsaOther);

  it.each([
    ["slot 0 holds block 0's key", [dRsa], [], { ok: true, keyIndex: 0, blockIndex: 0 }],
    [
      "only slot 2 holds block 0's key",
      [undefined, dOther, dRsa],
      [],
      { ok: true, keyIndex: 2, blockIndex: 0 },
    ],
    [
      "block 0's key revoked, block 1's trusted",
      [dRsa, dEc],
      [true],
      { ok: true, keyIndex: 1, blockIndex: 1 },
    ],
    [
      "same digest in a revoked and a live slot",
      [dRsa, dRsa],
      [true, false],
      { ok: true, keyIndex: 1, blockIndex: 0 },
    ],
    ["no digest matches", [dOther], [], { ok: false, code: "E_SIG_WRONG_KEY" }],
    ["no slot programmed", [], [], { ok: false, code: "E_SIG_WRONG_KEY" }],
    [
      "the only matching slot is revoked",
      [dOther, dEc],
      [false, true],
      { ok: false, code: "E_SIG_KEY_REVOKED" },
    ],
  ] as const)("%s", (_what, digests, revoked, want) => {
    expect(verifySectorV2WithDigests(data, sector, digests, revoked)).toMatchObject(want);
  });

  it("ESP32 (one block): a key trusted only for block 1 is not enough", () => {
    expect(verifySectorV2WithDigests(data, sector, [dEc], [], { maxBlocks: 1 })).toMatchObject({
      ok: false,
      code: "E_SIG_WRONG_KEY",
    });
    expect(verifySectorV2WithDigests(data, sector, [dEc], [], { maxBlocks: 2 })).toMatchObject({
      ok: true,
    });
  });

  it("tampered image, tampered signature and damaged CRC with trusted digests", () => {
    const e = fixture("sbv2/sbv2_ecdsa256_pubkey_digest.bin");
    for (const [what, code] of [
      ["tampered_data", "E_SIG_DIGEST_MISMATCH"],
      ["tampered_sig_goodcrc", "E_SIG_INVALID"],
      ["tampered_sig_badcrc", "E_SIG_NO_BLOCK"],
    ]) {
      const f = split(fixture(`sbv2/data_8192.ecdsa256.signed.${what}.bin`));
      expect(verifySectorV2WithDigests(f.data, f.sector, [e])).toMatchObject({ ok: false, code });
    }
    const good = split(fixture("sbv2/data_8192.ecdsa256.signed.bin"));
    expect(verifySectorV2WithDigests(good.data, good.sector, [undefined, e])).toEqual({
      ok: true,
      keyIndex: 1,
      blockIndex: 0,
    });
  });

  it("a block with the right n and e but other key fields does not match the eFuse digest", () => {
    const forged = sector.slice();
    forged[808]! ^= 1; // m'
    putU32le(forged, 1196, crc32(forged.subarray(0, 1196)));
    expect(verifySectorV2WithDigests(data, forged, [dRsa])).toMatchObject({
      ok: false,
      code: "E_SIG_WRONG_KEY",
    });
    expect(verifySectorV2(data, forged, rsaPub)).toMatchObject({
      ok: false,
      code: "E_SIG_WRONG_KEY",
    });
  });

  it("misuse throws RangeError", () => {
    expect(() => verifySectorV2WithDigests(data, sector.subarray(1), [dRsa])).toThrow(RangeError);
    expect(() => verifySectorV2WithDigests(data, sector, [dRsa.subarray(1)])).toThrow(RangeError);
    expect(() => verifySectorV2WithDigests(data, sector, [dRsa, dRsa, dRsa, dRsa])).toThrow(
      RangeError,
    );
    expect(() => verifySectorV2WithDigests(data, sector, [dRsa], [], { maxBlocks: 4 })).toThrow(
      RangeError,
    );
    expect(() => verifySectorV2(data, sector, { scheme: "dsa" } as never)).toThrow(TypeError);
  });
});

describe("blocks from outside signers, and odd blocks", () => {
  it("encodeSignatureBlockV2 from a digest and a signature rebuilds espsecure's block byte for byte", () => {
    for (const scheme of SCHEMES) {
      const theirs = split(fixture(`sbv2/data_8192.${scheme}.signed.bin`)).sector.subarray(
        0,
        SIG_BLOCK_SIZE,
      );
      const [b] = parseSignatureSectorV2(
        split(fixture(`sbv2/data_8192.${scheme}.signed.bin`)).sector,
      );
      expect(toHex(encodeSignatureBlockV2(b!.imageDigest, KEYS[scheme].pub, b!.signature))).toBe(
        toHex(theirs),
      );
    }
    expect(() => encodeSignatureBlockV2(new Uint8Array(31), ecPub, new Uint8Array(64))).toThrow(
      RangeError,
    );
    expect(() => encodeSignatureBlockV2(new Uint8Array(32), rsaPub, new Uint8Array(64))).toThrow(
      RangeError,
    );
  });

  it("an ECDSA block with an unknown curve id is skipped by parse and fails verification cleanly", () => {
    const sector = split(fixture("sbv2/data_8192.ecdsa256.signed.bin")).sector.slice();
    sector[36] = 9;
    putU32le(sector, 1196, crc32(sector.subarray(0, 1196)));
    expect(parseSignatureSectorV2(sector)).toEqual([]);
    expect(verifySectorV2(fixture("sbv2/data_8192.bin"), sector, ecPub)).toMatchObject({
      ok: false,
      code: "E_SIG_WRONG_KEY",
    });
  });

  it("includeBadCrc shows a block whose only fault is its CRC", () => {
    const { sector } = split(fixture("sbv2/data_8192.rsa3072.signed.tampered_sig_badcrc.bin"));
    expect(parseSignatureSectorV2(sector)).toEqual([]);
    expect(
      parseSignatureSectorV2(sector, { includeBadCrc: true }).map((b) => [b.index, b.crcOk]),
    ).toEqual([[0, false]]);
  });
});

describe("random and truncated input never crashes a verifier", () => {
  const signed = fixture("sbv2/data_5000.ecdsa256.signed.bin");

  it("random bytes as a signed file -> coded failure value", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 9000 }), fc.boolean(), (bytes, skipPadding) => {
        for (const k of [ecPub, rsaPub]) {
          const r = verifySignedV2(bytes, k, { skipPadding });
          expect(r.ok).toBe(false);
          if (!r.ok) expect(SIGNATURE_FAILURE_CODES).toContain(r.code);
        }
      }),
      { numRuns: 100 },
    );
  });

  it("truncated signed files -> coded failure value", () => {
    fc.assert(
      fc.property(fc.nat({ max: signed.length - 1 }), (n) => {
        const r = verifySignedV2(signed.subarray(0, n), ecPub);
        expect(r.ok).toBe(false);
        if (!r.ok) expect(SIGNATURE_FAILURE_CODES).toContain(r.code);
      }),
      { numRuns: 100 },
    );
  });

  it("random blocks with a right header and CRC -> value, never an exception", () => {
    const data = new Uint8Array(4096);
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: SIG_SECTOR_SIZE, maxLength: SIG_SECTOR_SIZE }),
        fc.constantFrom(2, 3),
        fc.constantFrom(0, 1, 2),
        fc.constantFrom(1, 2, 3, 7),
        (raw, version, shaType, curveId) => {
          const sector = raw.slice();
          sector[0] = 0xe7;
          sector[1] = version;
          sector[2] = shaType;
          sector[36] = curveId;
          sector[52] = curveId;
          putU32le(sector, 1196, crc32(sector.subarray(0, 1196)));
          const blocks = parseSignatureSectorV2(sector);
          const digests = blocks.map((b) => b.keyDigest).slice(0, 3);
          for (const r of [
            verifySectorV2(data, sector, ecPub),
            verifySectorV2(data, sector, rsaPub),
            verifySectorV2WithDigests(data, sector, digests),
          ]) {
            expect(r.ok).toBe(false);
            if (!r.ok) expect(SIGNATURE_FAILURE_CODES).toContain(r.code);
          }
          try {
            formatSignatureInfoV2(concatBytes(data, sector));
          } catch (e) {
            expect(e).toBeInstanceOf(EspOtaError);
          }
        },
      ),
      { numRuns: 100 },
    );
  });
});
