/**
 * The build's per-slot encryption path (a registry record's key and FLASH_CRYPT_CONFIG ->
 * deviceCipherOptions -> slotCiphertext -> writeSlotCiphertext, hashing while writing) against
 * espsecure's own ciphertexts (test/fixtures/flash_encryption, made by `espsecure
 * encrypt-flash-data`; commands.txt). Byte for byte, at every address, in any chunk size.
 */

import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createFlashCipher } from "../../src/esp/flash-encryption.js";
import { encodePartitionTable } from "../../src/esp/partition-table.js";
import { slotCiphertext } from "../../src/release/build-plan.js";
import { hashFile, writeSlotCiphertext } from "../../src/release/build-worker.js";
import { deviceCipherOptions, makeDeviceRecord } from "../../src/release/registry.js";
import { fixture, fixtureJson } from "../helpers/fixtures.js";
import { twoOtaLayout } from "../helpers/sim.js";

interface Vector {
  mode: string;
  key: string;
  address: string;
  flash_crypt_conf?: string | null;
  plaintext: string;
  ciphertext: string;
}
const vectors = fixtureJson<{ vectors: Vector[] }>("flash_encryption/expected.json").vectors;
const dir = mkdtempSync(join(tmpdir(), "release-vectors-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A chip whose registry record takes this key: the scheme comes from the chip, as in a build. */
function chipFor(v: Vector): string {
  if (v.flash_crypt_conf != null) return "esp32";
  return v.key.includes("key128") ? "esp32c2" : "esp32s3";
}

describe("release build encryption = espsecure encrypt-flash-data", () => {
  it.each(vectors.map((v) => [`${v.ciphertext}`, v] as const))("%s", (_name, v) => {
    const record = makeDeviceRecord({
      mac: "24:0a:c4:00:00:01",
      chip: chipFor(v),
      partitionTable: encodePartitionTable(twoOtaLayout()),
      flashEncryptionKey: fixture(`flash_encryption/${v.key}`),
      ...(v.flash_crypt_conf != null ? { flashCryptConf: Number(v.flash_crypt_conf) } : {}),
      now: new Date(0),
    });
    const plain = fixture(`flash_encryption/${v.plaintext}`);
    const expected = fixture(`flash_encryption/${v.ciphertext}`);
    const address = Number(v.address);
    const cipher = createFlashCipher(deviceCipherOptions(record));
    const path = join(dir, `${v.ciphertext}`);
    const written = writeSlotCiphertext(cipher, address, plain, path, 4096);
    expect(new Uint8Array(readFileSync(path))).toEqual(expected);
    expect(written).toEqual({
      size: expected.length,
      sha256: createHash("sha256").update(expected).digest("hex"),
    });
    expect(hashFile(path)).toEqual(written);
    // Any chunking gives the same bytes (split test, STYLE.md §11).
    for (const chunk of [16, 48, 1024 + 16]) {
      const parts = [...slotCiphertext(cipher, address, plain, chunk)];
      expect(Buffer.concat(parts)).toEqual(Buffer.from(expected));
    }
  });

  it("pads a tail that is not a whole block with 0xFF, as an erased flash tail reads", () => {
    const cipher = createFlashCipher({
      scheme: "xts",
      key: fixture("flash_encryption/fe_xts_key512.bin"),
    });
    const data = new Uint8Array(100).fill(7);
    const padded = new Uint8Array(112).fill(0xff);
    padded.set(data);
    expect(Buffer.concat([...slotCiphertext(cipher, 0x10000, data, 32)])).toEqual(
      Buffer.from(cipher.encrypt(0x10000, padded)),
    );
  });

  it("rejects a chunk size that is not a multiple of 16", () => {
    const cipher = createFlashCipher({
      scheme: "xts",
      key: fixture("flash_encryption/fe_xts_key512.bin"),
    });
    expect(() => [...slotCiphertext(cipher, 0, new Uint8Array(32), 40)]).toThrow(RangeError);
  });
});
