/**
 * `esp-ota secure ...`: the flash encryption verbs of espsecure v5 (esptool
 * `espsecure/__init__.py`): `generate-flash-encryption-key`, `encrypt-flash-data`,
 * `decrypt-flash-data`, with espsecure's options, its underscore spellings (`encrypt_flash_data`,
 * `--aes_xts`, `--flash_crypt_conf`) and its output lines. The library does the cryptography
 * (src/esp/flash-encryption.ts); this file reads and writes files in chunks, so memory stays
 * bounded by the chunk size whatever the image size.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname, resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { EspOtaError, isEspOtaError } from "../../errors.js";
import {
  checkFlashRegion,
  createFlashCipher,
  createFlashCryptStream,
  DEFAULT_FLASH_CRYPT_CONF,
  type FlashCipher,
  type FlashKeyBits,
  generateFlashEncryptionKey,
} from "../../esp/flash-encryption.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

/** Read size. 256 KB keeps memory small and is past the point where larger reads stop helping. */
const CHUNK_BYTES = 256 * 1024;

type Direction = "encrypt" | "decrypt";

interface CryptOptions {
  keyfile: string;
  output: string;
  address: number;
  flashCryptConf: number;
  flash_crypt_conf?: number;
  aesXts?: boolean;
  aes_xts?: boolean;
}

function parseFlashCryptConf(value: string): number {
  const n = parseIntArg(value);
  if (n > 15) throw new InvalidArgumentError(`"${value}" is not a 4-bit eFuse value (0..15).`);
  return n;
}

export function registerSecureFlash(secure: Command, ctx: CliContext): void {
  secure
    .command("generate-flash-encryption-key")
    .alias("generate_flash_encryption_key")
    .description(
      "Generate a development-use flash encryption key with random data (raw bytes, as the eFuse " +
        "holds it). Written with mode 0600; an existing file is never overwritten.",
    )
    .addOption(
      new Option(
        "-l, --keylen <bits>",
        "key length in bits: 256 = ESP32 (classic) or XTS-AES-128, 192 = ESP32 with the 3/4 coding " +
          "scheme, 512 = XTS-AES-256 (ESP32-S2, S3, C5, P4), 128 = ESP32-C2",
      )
        .choices(["128", "192", "256", "512"])
        .default("256"),
    )
    .argument("<keyfile>", "where to write the key")
    .action((keyfile: string, o: { keylen: string }) => {
      const keylen = Number(o.keylen) as FlashKeyBits;
      ctx.createSecretFile(keyfile, generateFlashEncryptionKey(keylen));
      ctx.print(`Writing ${keylen} random bits to key file "${keyfile}".`);
    });

  for (const direction of ["encrypt", "decrypt"] as const) {
    const cmd = secure
      .command(`${direction}-flash-data`)
      .alias(`${direction}_flash_data`)
      .description(
        direction === "encrypt"
          ? "Encrypt data for encrypted flash (using a known key), for the flash address it will be written to."
          : "Decrypt data read from encrypted flash (using a known key), at the flash address it was read from.",
      )
      .requiredOption("-k, --keyfile <file>", "file with the flash encryption key (raw bytes)")
      .requiredOption(
        "-o, --output <file>",
        direction === "encrypt"
          ? "output file for the encrypted data"
          : "output file for the plaintext (written with mode 0600: it may hold secrets such as NVS keys)",
      )
      .requiredOption(
        "-a, --address <addr>",
        `flash address the data ${direction === "encrypt" ? "will be written to" : "was read from"}; a multiple of 16 (decimal, 0x hex, K/M)`,
        parseIntArg,
      )
      .addOption(
        new Option(
          "--flash-crypt-conf <n>",
          "FLASH_CRYPT_CONFIG eFuse value, ESP32 (classic) only: which key bits the flash address tweaks (0xF is what the bootloader burns)",
        )
          .argParser(parseFlashCryptConf)
          .default(DEFAULT_FLASH_CRYPT_CONF, "0xF"),
      )
      .addOption(new Option("--flash_crypt_conf <n>").argParser(parseFlashCryptConf).hideHelp())
      .option(
        "-x, --aes-xts",
        "use XTS-AES (ESP32-S2 and later); without it, the ESP32 (classic) scheme (default: off)",
      )
      .addOption(new Option("--aes_xts").hideHelp())
      .argument(
        direction === "encrypt" ? "<plaintext-file>" : "<encrypted-file>",
        direction === "encrypt" ? "the plaintext to encrypt" : "the ciphertext read from flash",
      )
      .action((input: string, o: CryptOptions) => {
        const explicitConf =
          o.flash_crypt_conf !== undefined || cmd.getOptionValueSource("flashCryptConf") === "cli";
        cryptFile(ctx, direction, input, {
          ...o,
          flashCryptConf: o.flash_crypt_conf ?? o.flashCryptConf,
          aesXts: Boolean(o.aesXts || o.aes_xts),
          explicitConf,
        });
      });
  }
}

/** espsecure `_load_hardware_key`'s lines, so scripts that read them keep working. */
function keyLine(keyLength: number): string {
  if (keyLength === 16) return "Using 128-bit key (extended).";
  if (keyLength === 24) return "Using 192-bit key (extended).";
  return `Using ${keyLength * 8}-bit key.`;
}

function cryptFile(
  ctx: CliContext,
  direction: Direction,
  input: string,
  o: CryptOptions & { explicitConf: boolean },
): void {
  checkNotSame(ctx, input, o.output);
  checkNotSame(ctx, o.keyfile, o.output);
  const xts = o.aesXts === true;
  const key = ctx.readFile(o.keyfile);
  let cipher: FlashCipher;
  try {
    cipher = createFlashCipher(
      xts ? { scheme: "xts", key } : { scheme: "esp32", key, flashCryptConf: o.flashCryptConf },
    );
  } catch (e) {
    if (isEspOtaError(e)) {
      // The usual mistake is the scheme, not the key: say which flag the key length suggests.
      const hint = !xts
        ? " (for ESP32-S2 and later chips, add --aes-xts)"
        : key.length === 24
          ? " (a 24-byte key is for the ESP32 (classic) scheme: leave out --aes-xts)"
          : "";
      throw new EspOtaError(
        e.code,
        `${o.keyfile}: ${e.message}${hint}`,
        { ...e.context, path: o.keyfile },
        e,
      );
    }
    throw e;
  } finally {
    key.fill(0);
  }
  ctx.print(keyLine(key.length));
  if (xts && o.explicitConf) {
    ctx.note(
      "note: --flash-crypt-conf applies to the ESP32 (classic) scheme only; ignored with --aes-xts.",
    );
  }
  if (!xts && o.flashCryptConf === 0) {
    // espsecure warns too: with conf 0 the key is the same at every address.
    ctx.note("warning: Setting FLASH_CRYPT_CONF to zero is not recommended.");
  }

  const inPath = resolve(ctx.cwd, input);
  let fd: number;
  try {
    fd = openSync(inPath, "r");
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_READ",
      `cannot read ${input}: ${(e as Error).message}`,
      { path: input },
      e,
    );
  }
  try {
    const size = fstatSync(fd).size;
    let padded = size;
    if (size % 16 !== 0) {
      if (direction === "decrypt") {
        throw new EspOtaError(
          "E_FLASH_DATA_LENGTH",
          `${input} is ${size} bytes, not a multiple of 16: data read from encrypted flash comes in 16-byte blocks`,
          { path: input, length: size },
        );
      }
      if (xts) {
        // espsecure pads (with random bytes) only in the ESP32 scheme and rejects this for XTS.
        throw new EspOtaError(
          "E_FLASH_DATA_LENGTH",
          `${input} is ${size} bytes; AES-XTS input must be a multiple of 16 bytes`,
          { path: input, length: size },
        );
      }
      padded = size + 16 - (size % 16);
    }
    if (xts && size === 0) {
      throw new EspOtaError(
        "E_FLASH_DATA_LENGTH",
        `${input} is empty; AES-XTS input must be longer than 0`,
        {
          path: input,
        },
      );
    }
    const region = checkFlashRegion(cipher.scheme, o.address, padded);
    if (!region.ok) {
      throw new EspOtaError(
        region.reason === "range" ? "E_FLASH_ADDRESS_RANGE" : "E_FLASH_ADDRESS_ALIGN",
        `--address: ${region.message}`,
        { address: o.address, length: padded, scheme: cipher.scheme },
      );
    }
    const total = streamToFile(
      ctx,
      fd,
      o.output,
      createFlashCryptStream(cipher, o.address, direction),
      {
        direction,
        input,
        // Decrypted flash may hold secrets (nvs_keys, credentials): owner-only, like a key.
        mode: direction === "decrypt" ? 0o600 : 0o644,
        padWithRandom: direction === "encrypt" && !xts,
      },
    );
    ctx.print(
      `${direction === "encrypt" ? "Encrypted" : "Decrypted"} ${total} bytes at flash address 0x${o.address.toString(16)} with ${cipher.description}; wrote "${o.output}".`,
    );
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads `fd` in chunks through the stream into `output`. A failure part-way removes the partial
 * output, so a half-encrypted file is never left behind. Returns the number of bytes written.
 */
function streamToFile(
  ctx: CliContext,
  fd: number,
  output: string,
  stream: ReturnType<typeof createFlashCryptStream>,
  opts: { direction: Direction; input: string; mode: number; padWithRandom: boolean },
): number {
  const outPath = resolve(ctx.cwd, output);
  let out: number;
  try {
    mkdirSync(dirname(outPath), { recursive: true });
    out = openSync(outPath, "w", opts.mode);
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_WRITE",
      `cannot write ${output}: ${(e as Error).message}`,
      { path: output },
      e,
    );
  }
  const write = (bytes: Uint8Array) => {
    for (let off = 0; off < bytes.length; ) {
      try {
        off += writeSync(out, bytes, off, bytes.length - off);
      } catch (e) {
        throw new EspOtaError(
          "E_FILE_WRITE",
          `cannot write ${output}: ${(e as Error).message}`,
          { path: output },
          e,
        );
      }
    }
    return bytes.length;
  };
  let ok = false;
  try {
    const buf = new Uint8Array(CHUNK_BYTES);
    let read = 0;
    let written = 0;
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        throw new EspOtaError(
          "E_FILE_READ",
          `cannot read ${opts.input}: ${(e as Error).message}`,
          { path: opts.input },
          e,
        );
      }
      if (n === 0) break;
      read += n;
      written += write(stream.push(buf.subarray(0, n)));
    }
    if (opts.padWithRandom && read % 16 !== 0) {
      const pad = 16 - (read % 16);
      // espsecure's wording and behaviour (random, not 0xFF: the pad is ciphertext noise anyway).
      ctx.print(
        `Note: Padding with ${pad} bytes of random data (encrypted data must be multiple of 16 bytes long).`,
      );
      written += write(stream.push(new Uint8Array(randomBytes(pad))));
    }
    try {
      stream.end();
    } catch (e) {
      // Only when the file changed length while it was read (the length was checked up front).
      throw new EspOtaError(
        "E_FLASH_DATA_LENGTH",
        `${opts.input}: ${read} bytes read, not a multiple of 16 (did the file change while it was read?)`,
        { path: opts.input, length: read },
        e,
      );
    }
    ok = true;
    return written;
  } finally {
    closeSync(out);
    if (!ok) {
      try {
        unlinkSync(outPath);
      } catch {
        // Already gone or never created: nothing to clean up.
      }
    }
  }
}

/**
 * espsecure `_check_output_is_not_input`: writing the output must never destroy an input (here
 * the output is truncated before the input is read). Also catches two names for one file.
 */
function checkNotSame(ctx: CliContext, input: string, output: string): void {
  const a = resolve(ctx.cwd, input);
  const b = resolve(ctx.cwd, output);
  let same = a === b;
  if (!same) {
    try {
      const sa = statSync(a);
      const sb = statSync(b);
      same = sa.dev === sb.dev && sa.ino === sb.ino;
    } catch {
      // One of them does not exist yet: they cannot be the same file.
    }
  }
  if (same) {
    throw new EspOtaError(
      "E_USAGE",
      `The input "${input}" and output "${output}" should not be the same!`,
      {
        input,
        output,
      },
    );
  }
}
