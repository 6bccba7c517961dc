import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { equalBytes } from "../../src/bytes.js";
import { createFlashCipher } from "../../src/esp/flash-encryption.js";
import { runCapture } from "../helpers/cli.js";
import { fixture, fixtureJson, fixturePath } from "../helpers/fixtures.js";

interface Vector {
  mode: string;
  key: string;
  address: string;
  flash_crypt_conf: string | null;
  plaintext: string;
  ciphertext: string;
}

const vectors = fixtureJson<{ vectors: Vector[] }>("flash_encryption/expected.json").vectors;
const fx = (name: string) => fixturePath(`flash_encryption/${name}`);
let dir: string;

async function run(...argv: string[]) {
  return runCapture(["secure", ...argv], dir);
}

const read = (name: string) => new Uint8Array(readFileSync(join(dir, name)));
const put = (name: string, data: Uint8Array) => writeFileSync(join(dir, name), data);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "esp-ota-secure-flash-"));
});

describe("encrypt-flash-data / decrypt-flash-data reproduce espsecure's files", () => {
  it.each(vectors.map((v) => [v.ciphertext, v] as const))("%s", async (name, v) => {
    const scheme = v.mode.startsWith("ESP32")
      ? ["--flash-crypt-conf", v.flash_crypt_conf!]
      : ["--aes-xts"];
    const enc = await run(
      "encrypt-flash-data",
      "--keyfile",
      fx(v.key),
      "--address",
      v.address,
      "--output",
      `enc-${name}`,
      ...scheme,
      fx(v.plaintext),
    );
    expect(enc.code, enc.stderr).toBe(0);
    expect(equalBytes(read(`enc-${name}`), fixture(`flash_encryption/${v.ciphertext}`))).toBe(true);
    const dec = await run(
      "decrypt-flash-data",
      "-k",
      fx(v.key),
      "-a",
      v.address,
      "-o",
      `dec-${name}`,
      ...scheme,
      fx(v.ciphertext),
    );
    expect(dec.code, dec.stderr).toBe(0);
    expect(equalBytes(read(`dec-${name}`), fixture(`flash_encryption/${v.plaintext}`))).toBe(true);
  });

  it("prints espsecure's key line and a summary", async () => {
    const r = await run(
      "encrypt-flash-data",
      "-k",
      fx("fe_esp32_key192.bin"),
      "-a",
      "64K",
      "-o",
      "k192.bin",
      fx("pt_app.bin"),
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "Using 192-bit key (extended).\n" +
        'Encrypted 8192 bytes at flash address 0x10000 with ESP32 AES-256 (192-bit key), FLASH_CRYPT_CONFIG 0xf; wrote "k192.bin".\n',
    );
    // --flash-crypt-conf defaults to 0xF: the same bytes as the conf 0xf vector.
    expect(
      equalBytes(read("k192.bin"), fixture("flash_encryption/ct_esp32_k192_conf0xf_0x10000.bin")),
    ).toBe(true);
    const x = await run(
      "decrypt-flash-data",
      "-x",
      "-k",
      fx("fe_xts_key128.bin"),
      "-a",
      "0x10000",
      "-o",
      "x.bin",
      fx("ct_xts_k128_0x10000.bin"),
    );
    expect(x.stdout).toMatch(
      /^Using 128-bit key \(extended\)\.\nDecrypted 8192 bytes .* XTS-AES-128 \(128-bit key, SHA-256-extended\)/,
    );
  });

  it("accepts espsecure's underscore spellings", async () => {
    const r = await run(
      "encrypt_flash_data",
      "--aes_xts",
      "--keyfile",
      fx("fe_xts_key512.bin"),
      "--address",
      "0x8000",
      "--output",
      "u.bin",
      fx("pt_partition_table.bin"),
    );
    expect(r.code, r.stderr).toBe(0);
    expect(equalBytes(read("u.bin"), fixture("flash_encryption/ct_xts_k512_0x8000.bin"))).toBe(
      true,
    );
    const c = await run(
      "decrypt_flash_data",
      "--flash_crypt_conf",
      "3",
      "--keyfile",
      fx("fe_esp32_key256.bin"),
      "--address",
      "0x10000",
      "--output",
      "c.bin",
      fx("ct_esp32_k256_conf0x3_0x10000.bin"),
    );
    expect(c.code, c.stderr).toBe(0);
    expect(equalBytes(read("c.bin"), fixture("flash_encryption/pt_app.bin"))).toBe(true);
  });

  it("streams a file larger than its read chunk with the same bytes as one library call", async () => {
    // 700 000 bytes: several 256 KB reads, and a length that is no multiple of the chunk.
    const data = new Uint8Array(randomBytes(700_000));
    put("big.bin", data);
    for (const [flag, key, scheme] of [
      [[], "fe_esp32_key256.bin", "esp32"],
      [["--aes-xts"], "fe_xts_key256.bin", "xts"],
    ] as const) {
      const r = await run(
        "encrypt-flash-data",
        ...flag,
        "-k",
        fx(key),
        "-a",
        "0x110000",
        "-o",
        `big-${scheme}.enc`,
        "big.bin",
      );
      expect(r.code, r.stderr).toBe(0);
      const cipher = createFlashCipher({ scheme, key: fixture(`flash_encryption/${key}`) });
      expect(equalBytes(read(`big-${scheme}.enc`), cipher.encrypt(0x110000, data))).toBe(true);
      const d = await run(
        "decrypt-flash-data",
        ...flag,
        "-k",
        fx(key),
        "-a",
        "0x110000",
        "-o",
        `big-${scheme}.dec`,
        `big-${scheme}.enc`,
      );
      expect(d.code, d.stderr).toBe(0);
      expect(equalBytes(read(`big-${scheme}.dec`), data)).toBe(true);
    }
  });

  it("writes decrypted data owner-only (it may hold secrets) and ciphertext readable", async () => {
    expect(statSync(join(dir, "big-xts.dec")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "big-xts.enc")).mode & 0o077).toBe(0o044 & ~process.umask());
  });
});

describe("lengths, addresses and keys espsecure rejects", () => {
  it("ESP32 encryption pads a ragged end with random bytes and says so", async () => {
    const data = fixture("flash_encryption/pt_app.bin").subarray(0, 100);
    put("ragged.bin", data);
    const r = await run(
      "encrypt-flash-data",
      "-k",
      fx("fe_esp32_key256.bin"),
      "-a",
      "0x10000",
      "-o",
      "ragged.enc",
      "ragged.bin",
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      "Note: Padding with 12 bytes of random data (encrypted data must be multiple of 16 bytes long).\n",
    );
    const enc = read("ragged.enc");
    expect(enc.length).toBe(112);
    // The first 96 bytes are the vector's; the last block holds 4 data bytes and 12 random ones.
    expect(
      equalBytes(
        enc.subarray(0, 96),
        fixture("flash_encryption/ct_esp32_k256_conf0xf_0x10000.bin").subarray(0, 96),
      ),
    ).toBe(true);
    const d = await run(
      "decrypt-flash-data",
      "-k",
      fx("fe_esp32_key256.bin"),
      "-a",
      "0x10000",
      "-o",
      "ragged.dec",
      "ragged.enc",
    );
    expect(d.code).toBe(0);
    expect(equalBytes(read("ragged.dec").subarray(0, 100), data)).toBe(true);
  });

  it.each([
    [
      "decrypt, ESP32",
      "decrypt-flash-data",
      [],
      "fe_esp32_key256.bin",
      /ragged\.bin is 100 bytes, not a multiple of 16/,
    ],
    ["decrypt, XTS", "decrypt-flash-data", ["-x"], "fe_xts_key256.bin", /not a multiple of 16/],
    [
      "encrypt, XTS",
      "encrypt-flash-data",
      ["-x"],
      "fe_xts_key256.bin",
      /AES-XTS input must be a multiple of 16 bytes/,
    ],
  ] as const)(
    "%s of 100 bytes: E_FLASH_DATA_LENGTH, no output",
    async (_n, verb, flag, key, message) => {
      const out = `len-${verb}-${flag.length}.bin`;
      const r = await run(verb, ...flag, "-k", fx(key), "-a", "0x10000", "-o", out, "ragged.bin");
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error E_FLASH_DATA_LENGTH: /);
      expect(r.stderr).toMatch(message);
      expect(existsSync(join(dir, out))).toBe(false);
    },
  );

  it("an empty file: XTS refuses it (as espsecure), ESP32 writes an empty file", async () => {
    put("empty.bin", new Uint8Array(0));
    const x = await run(
      "encrypt-flash-data",
      "-x",
      "-k",
      fx("fe_xts_key256.bin"),
      "-a",
      "0",
      "-o",
      "e1.bin",
      "empty.bin",
    );
    expect(x.code).toBe(1);
    expect(x.stderr).toMatch(/^error E_FLASH_DATA_LENGTH: empty\.bin is empty/);
    const e = await run(
      "encrypt-flash-data",
      "-k",
      fx("fe_esp32_key256.bin"),
      "-a",
      "0",
      "-o",
      "e2.bin",
      "empty.bin",
    );
    expect(e.code).toBe(0);
    expect(read("e2.bin")).toHaveLength(0);
  });

  it.each([
    [
      "0x10008",
      [],
      "E_FLASH_ADDRESS_ALIGN",
      /--address: flash address 0x10008 is not a non-negative multiple of 16/,
    ],
    [
      "0xfffff0",
      [],
      "E_FLASH_ADDRESS_RANGE",
      /end past 0x1000000, the end of the ESP32's 24-bit flash address space/,
    ],
    ["0xffffff00", ["-x"], "E_FLASH_ADDRESS_RANGE", /end past 0x100000000/],
  ] as const)("address %s: %s", async (address, flag, code, message) => {
    const key = flag.length ? "fe_xts_key256.bin" : "fe_esp32_key256.bin";
    const r = await run(
      "encrypt-flash-data",
      ...flag,
      "-k",
      fx(key),
      "-a",
      address,
      "-o",
      "addr.bin",
      fx("pt_app.bin"),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${code}: `));
    expect(r.stderr).toMatch(message);
    expect(existsSync(join(dir, "addr.bin"))).toBe(false);
  });

  it.each([
    [
      [],
      "fe_xts_key512.bin",
      /64 bytes; the ESP32 \(classic\) scheme takes 32 bytes \(256-bit\) or 24 bytes .*add --aes-xts/,
    ],
    [
      ["-x"],
      "fe_esp32_key192.bin",
      /24 bytes; the AES-XTS scheme takes 16 bytes .*, 32 bytes .* or 64 bytes .*leave out --aes-xts/,
    ],
  ] as const)(
    "a key of the wrong size for the scheme: E_FLASH_KEY_LENGTH naming the sizes",
    async (flag, key, message) => {
      const r = await run(
        "encrypt-flash-data",
        ...flag,
        "-k",
        fx(key),
        "-a",
        "0x10000",
        "-o",
        "k.bin",
        fx("pt_app.bin"),
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error E_FLASH_KEY_LENGTH: /);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toMatch(/what to do: .*generate-flash-encryption-key/);
    },
  );

  it("refuses to write over its input or key, also through a symlink (E_USAGE, exit 2)", async () => {
    put("victim.bin", fixture("flash_encryption/pt_app.bin"));
    symlinkSync(join(dir, "victim.bin"), join(dir, "alias.bin"));
    for (const [input, output] of [
      ["victim.bin", "victim.bin"],
      ["victim.bin", "alias.bin"],
      ["victim.bin", fx("fe_esp32_key256.bin")],
    ]) {
      const r = await run(
        "encrypt-flash-data",
        "-k",
        fx("fe_esp32_key256.bin"),
        "-a",
        "0x10000",
        "-o",
        output!,
        input!,
      );
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(
        /^error E_USAGE: The input ".*" and output ".*" should not be the same!/,
      );
    }
    expect(equalBytes(read("victim.bin"), fixture("flash_encryption/pt_app.bin"))).toBe(true);
  });

  it("a missing input is E_FILE_READ; a bad --flash-crypt-conf is a usage error", async () => {
    const r = await run(
      "encrypt-flash-data",
      "-k",
      fx("fe_esp32_key256.bin"),
      "-a",
      "0",
      "-o",
      "m.bin",
      "nope.bin",
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error E_FILE_READ: cannot read nope\.bin/);
    const c = await run(
      "encrypt-flash-data",
      "--flash-crypt-conf",
      "16",
      "-k",
      fx("fe_esp32_key256.bin"),
      "-a",
      "0",
      "-o",
      "m.bin",
      fx("pt_app.bin"),
    );
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/not a 4-bit eFuse value/);
  });

  it("warns about FLASH_CRYPT_CONFIG 0, and that it means nothing with --aes-xts", async () => {
    const z = await run(
      "encrypt-flash-data",
      "--flash-crypt-conf",
      "0",
      "-k",
      fx("fe_esp32_key256.bin"),
      "-a",
      "0x10000",
      "-o",
      "z.bin",
      fx("pt_app.bin"),
    );
    expect(z.code).toBe(0);
    expect(z.stderr).toBe("warning: Setting FLASH_CRYPT_CONF to zero is not recommended.\n");
    expect(
      equalBytes(read("z.bin"), fixture("flash_encryption/ct_esp32_k256_conf0x0_0x10000.bin")),
    ).toBe(true);
    const x = await run(
      "encrypt-flash-data",
      "-x",
      "--flash-crypt-conf",
      "3",
      "-k",
      fx("fe_xts_key256.bin"),
      "-a",
      "0x10000",
      "-o",
      "x3.bin",
      fx("pt_app.bin"),
    );
    expect(x.code).toBe(0);
    expect(x.stderr).toMatch(/--flash-crypt-conf applies to the ESP32 \(classic\) scheme only/);
    expect(equalBytes(read("x3.bin"), fixture("flash_encryption/ct_xts_k256_0x10000.bin"))).toBe(
      true,
    );
  });

  it("help lists every option with its default", async () => {
    const r = await run("encrypt-flash-data", "--help");
    expect(r.code).toBe(0);
    for (const s of [
      "--keyfile",
      "--output",
      "--address",
      "--flash-crypt-conf",
      "(default: 0xF)",
      "--aes-xts",
    ]) {
      expect(r.stdout.replace(/\s+/g, " ")).toContain(s);
    }
    expect(r.stdout).not.toContain("--aes_xts");
    const g = await run("generate-flash-encryption-key", "--help");
    // commander wraps help at 80 columns.
    expect(g.stdout.replace(/\s+/g, " ")).toContain(
      '(choices: "128", "192", "256", "512", default: "256")',
    );
  });
});

describe("generate-flash-encryption-key", () => {
  it.each([
    [[], 32],
    [["--keylen", "128"], 16],
    [["-l", "192"], 24],
    [["--keylen", "512"], 64],
  ] as const)("%j writes %i random bytes with mode 0600", async (flag, n) => {
    const name = `key-${n}.bin`;
    const r = await run("generate-flash-encryption-key", ...flag, name);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`Writing ${n * 8} random bits to key file "${name}".\n`);
    expect(read(name)).toHaveLength(n);
    expect(statSync(join(dir, name)).mode & 0o777).toBe(0o600);
  });

  it("never overwrites a key; the underscore spelling works", async () => {
    const before = read("key-32.bin");
    const r = await run("generate_flash_encryption_key", "key-32.bin");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error E_KEY_EXISTS: key file key-32\.bin already exists/);
    expect(equalBytes(read("key-32.bin"), before)).toBe(true);
    const bad = await run("generate-flash-encryption-key", "--keylen", "384", "k384.bin");
    expect(bad.code).toBe(2);
    expect(existsSync(join(dir, "k384.bin"))).toBe(false);
  });

  it("a generated key encrypts and decrypts through the CLI", async () => {
    await run("generate-flash-encryption-key", "--keylen", "512", "fresh.bin");
    const e = await run(
      "encrypt-flash-data",
      "-x",
      "-k",
      "fresh.bin",
      "-a",
      "0x20000",
      "-o",
      "fresh.enc",
      fx("pt_bootloader.bin"),
    );
    const d = await run(
      "decrypt-flash-data",
      "-x",
      "-k",
      "fresh.bin",
      "-a",
      "0x20000",
      "-o",
      "fresh.dec",
      "fresh.enc",
    );
    expect([e.code, d.code]).toEqual([0, 0]);
    expect(equalBytes(read("fresh.dec"), fixture("flash_encryption/pt_bootloader.bin"))).toBe(true);
    expect(equalBytes(read("fresh.enc"), fixture("flash_encryption/pt_bootloader.bin"))).toBe(
      false,
    );
  });
});
