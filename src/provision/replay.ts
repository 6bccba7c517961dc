/**
 * Replay a provisioning script (espsecure, espefuse, esptool, idf.py (bootloader-)flash, esp-ota
 * provision gates; espsecure/espefuse/esptool v4 `snake_case` and v5 `kebab-case` verbs) against
 * a simulated chip, boot it, and explain every line that left it unbootable or insecure.
 *
 * Shell words come from shell-quote; each logical line (backslash continuations joined) is split
 * on `;`, `&&` and `||`. espsecure steps run on our implementations (src/esp), espefuse steps on
 * the espefuse model (./espefuse.ts, which burns the simulator's eFuses), esptool steps write the
 * simulated flash through `FlashPort`: by default the simulated ROM serial loader's own
 * FLASH_BEGIN/DATA (`romFlashPort`), or a direct NOR write (`norFlashPort`). Every file the script
 * makes carries where it came from (signed from
 * what, encrypted for which address with which key), which is what the diagnoses read.
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { parse as shellParse } from "shell-quote";
import { EspOtaError, isEspOtaError } from "../errors.js";
import { createFlashCipher, generateFlashEncryptionKey } from "../esp/flash-encryption.js";
import { generateSigningKeyPem, parseSigningKey, type SigningKey } from "../esp/keys.js";
import {
  decodePartitionTable,
  isEncryptedPartition,
  type Partition,
} from "../esp/partition-table.js";
import { extractPublicKeyV1, signDataV1 } from "../esp/secure-boot-v1.js";
import { publicKeyDigestV2, signDataV2 } from "../esp/secure-boot-v2.js";
import {
  decodeResponse,
  OP,
  ROM_FLASH_WRITE_SIZE,
  req,
  responseStatus,
  romErrorName,
} from "../rom/protocol.js";
import { BOOTLOADER_OFFSET } from "../sim/bootloader.js";
import { DEFAULT_SPEC, SimDevice } from "../sim/device.js";
import { Efuses, type SimChip } from "../sim/efuse.js";
import { NorFlash } from "../sim/flash.js";
import { RomLoaderCore } from "../sim/rom-loader.js";
import { Espefuse, ToolRefused } from "./espefuse.js";
import { checkState, parseEfuseSummary, parseExpectation } from "./state-check.js";

/** Files the script reads and writes: reads fall through to the script's directory, writes stay here. */
export interface ReplayFiles {
  read(path: string): Uint8Array | undefined;
  write(path: string, data: Uint8Array): void;
}

/** How an esptool step reaches the flash (the ROM loader's job on hardware). */
export interface FlashPort {
  /** `flashSize`: esptool's --flash-size when given (Secure Download Mode cannot detect it). */
  write(address: number, data: Uint8Array, encrypt: boolean, flashSize?: number): void;
  erase(address: number, length: number): void;
}

/**
 * esptool's raw write through the simulated ROM serial loader (src/sim/rom-loader.ts): the same
 * request frames esptool sends (SPI_ATTACH, SPI_SET_PARAMS, FLASH_BEGIN, FLASH_DATA in 1 KB
 * blocks), so the ROM's own refusals (download mode disabled, Secure Download Mode limits) apply.
 * `--encrypt` on an ESP32 needs the stub (its ROM takes no encrypt word): that write goes through
 * the flash-encryption block directly, as the stub's does.
 */
export function romFlashPort(device: SimDevice): FlashPort {
  const rom = new RomLoaderCore(device);
  const send = (frame: Uint8Array, what: string) => {
    const replies = rom.handle(frame).replies;
    const last = replies[replies.length - 1];
    if (!last) throw new ToolRefused(`Failed to connect: the ROM loader does not answer (${what})`);
    const d = decodeResponse(last);
    const st = d.ok ? responseStatus(d.value, 0) : undefined;
    if (!st?.ok)
      throw new ToolRefused(
        `the ROM loader refused ${what} (${st && !st.ok ? romErrorName(st.error) : "bad reply"})`,
      );
  };
  let attached = false;
  // esptool reads the flash id and sends SPI_SET_PARAMS with the detected size; in Secure
  // Download Mode it cannot read the id, so the ROM keeps its 2 MB default unless --flash-size
  // says otherwise (esptool troubleshooting.rst, esp-idf#10959).
  const attach = (flashSize?: number) => {
    if (attached) return;
    send(req.spiAttach(), "SPI_ATTACH");
    const size = flashSize ?? (device.efuses.secureDownloadMode ? undefined : device.flash.size);
    if (size !== undefined) send(req.spiSetParams(size), "SPI_SET_PARAMS");
    attached = true;
  };
  const direct = norFlashPort(device);
  return {
    erase: (a, n) => {
      attach();
      direct.erase(a, n);
    },
    write(address, data, encrypt, flashSize) {
      attach(flashSize);
      if (encrypt && device.spec.chip === "esp32") return direct.write(address, data, true);
      const bs = ROM_FLASH_WRITE_SIZE;
      const blocks = Math.ceil(data.length / bs);
      send(
        req.flashBegin(
          data.length,
          blocks,
          bs,
          address,
          device.spec.chip === "esp32" ? undefined : encrypt,
        ),
        `FLASH_BEGIN at ${hex(address)}`,
      );
      for (let i = 0; i < blocks; i++) {
        const block = new Uint8Array(bs).fill(0xff);
        block.set(data.subarray(i * bs, (i + 1) * bs));
        send(req.flashData(OP.FLASH_DATA, i, block), `FLASH_DATA block ${i} at ${hex(address)}`);
      }
    },
  };
}

export function norFlashPort(device: SimDevice): FlashPort {
  return {
    erase: (a, n) => device.flash.eraseRange(a, n),
    write(address, data, encrypt) {
      // The sectors the data touches are erased first, as esptool's FLASH_BEGIN erase does.
      const start = address - (address % 0x1000);
      const end = Math.ceil((address + data.length) / 0x1000) * 0x1000;
      device.flash.eraseRange(start, end - start);
      if (encrypt) device.spi.writeEncrypted(address, pad16(data));
      else device.flash.program(address, data);
    },
  };
}

export interface Sdkconfig {
  secureBoot?: "v1" | "v2";
  signedBinaries?: boolean;
  flashEncryption?: "release" | "development";
  partitionTableOffset?: number;
  rollback?: boolean;
}

export function parseSdkconfig(text: string): Sdkconfig {
  const kv = new Map<string, string>();
  for (const line of text.split(/\r?\n/).slice(0, 20000)) {
    const m = /^CONFIG_([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) kv.set(m[1]!, m[2]!.replace(/^"(.*)"$/, "$1"));
  }
  const on = (k: string) => kv.get(k) === "y";
  const out: Sdkconfig = {};
  if (on("SECURE_BOOT_V2_ENABLED")) out.secureBoot = "v2";
  else if (on("SECURE_BOOT_V1_ENABLED")) out.secureBoot = "v1";
  if (kv.has("SECURE_BOOT_BUILD_SIGNED_BINARIES"))
    out.signedBinaries = on("SECURE_BOOT_BUILD_SIGNED_BINARIES");
  if (on("SECURE_FLASH_ENCRYPTION_MODE_RELEASE")) out.flashEncryption = "release";
  else if (on("SECURE_FLASH_ENCRYPTION_MODE_DEVELOPMENT")) out.flashEncryption = "development";
  const pt = kv.get("PARTITION_TABLE_OFFSET");
  if (pt && /^(0x[0-9a-fA-F]+|\d+)$/.test(pt)) out.partitionTableOffset = Number(pt);
  if (kv.has("BOOTLOADER_APP_ROLLBACK_ENABLE")) out.rollback = on("BOOTLOADER_APP_ROLLBACK_ENABLE");
  return out;
}

type Kind = "plain" | "signed" | "ciphertext" | "key" | "digest" | "bootloader-digest" | "other";

interface FileInfo {
  kind: Kind;
  line?: number;
  path: string;
  from?: FileInfo;
  /** ciphertext: the address and key it was encrypted for. */
  address?: number;
  keySha?: string;
  keyPath?: string;
  conf?: number;
  xts?: boolean;
  /** signed: V2 public-key digests (hex) of the signers, or the V1 public key. */
  signers?: string[];
  signVersion?: 1 | 2;
}

interface Region {
  address: number;
  length: number;
  line: number;
  path: string;
  info: FileInfo;
  encryptedByRom: boolean;
}

export type Severity = "unbootable" | "insecure" | "risk";
export interface Diagnosis {
  line: number;
  severity: Severity;
  code: string;
  message: string;
}

export interface ReplayStep {
  line: number;
  text: string;
  result: "ok" | "refused" | "skipped" | "failed";
  note?: string;
}

export interface ReplayReport {
  chip: SimChip;
  assumed: string[];
  steps: ReplayStep[];
  diagnoses: Diagnosis[];
  bootLog: string[];
  booted: boolean;
  device: SimDevice;
}

export interface ReplayOptions {
  device: SimDevice;
  files: ReplayFiles;
  sdkconfig?: Sdkconfig;
  flashPort?: FlashPort;
  env?: Record<string, string>;
  /**
   * Key generation for espsecure generate-signing-key (default: generateSigningKeyPem). Tests
   * inject fixture keys: an RSA-3072 key takes 0.2-2 s to generate.
   */
  signingKeyPem?: (scheme: string) => string;
  /**
   * Key generation for espsecure generate-flash-encryption-key (default:
   * generateFlashEncryptionKey, random). Tests inject a fixed key: with a random one, ciphertext
   * read as plaintext starts with the image magic 0xE9 one run in 256, and the boot then fails
   * with another message than "invalid header" (a test that failed once in the suite).
   */
  flashEncryptionKey?: (bits: 128 | 256 | 512) => Uint8Array;
  /** Bound on script size: a provisioning script is a page, not a megabyte. */
  maxLines?: number;
}

const hex = (n: number) => `0x${n.toString(16)}`;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const norm = (p: string) => p.replace(/^\.\//, "").replace(/\/+/g, "/");

class StepFailure extends Error {}

export function replayScript(script: string, opts: ReplayOptions): ReplayReport {
  const device = opts.device;
  const chip = device.spec.chip;
  const efuses = device.efuses;
  const espefuse = new Espefuse(efuses);
  // Each esptool invocation is a new session: a reset into download mode, a fresh ROM loader.
  const session = () => opts.flashPort ?? romFlashPort(device);
  const sdk = opts.sdkconfig ?? {};
  const env: Record<string, string> = { PORT: "/dev/sim", ...opts.env };
  const info = new Map<string, FileInfo>();
  const regions: Region[] = [];
  const diagnoses: Diagnosis[] = [];
  const steps: ReplayStep[] = [];
  const assumed: string[] = [];
  const events: { line: number; what: string }[] = [];
  let errexit = false;
  let sbv1PublicKey: Uint8Array | undefined;
  const ptOffset = sdk.partitionTableOffset ?? device.spec.partitionTableOffset;
  const blOffset = BOOTLOADER_OFFSET[chip];
  const diag = (line: number, severity: Severity, code: string, message: string) => {
    if (!diagnoses.some((d) => d.line === line && d.code === code))
      diagnoses.push({ line, severity, code, message });
  };
  const eventLine = (what: string) => events.find((e) => e.what === what)?.line;

  const readFile = (path: string, _line?: number): Uint8Array => {
    const data = opts.files.read(norm(path));
    if (!data) throw new StepFailure(`${path}: no such file`);
    if (!info.has(norm(path))) info.set(norm(path), classify(path, data));
    return data;
  };
  const infoOf = (path: string): FileInfo => info.get(norm(path)) ?? { kind: "other", path };
  const writeFile = (path: string, data: Uint8Array, i: FileInfo) => {
    opts.files.write(norm(path), data);
    info.set(norm(path), { ...i, path });
  };
  const loadKey = (path: string, line: number): SigningKey => {
    try {
      return parseSigningKey(readFile(path, line));
    } catch (e) {
      if (e instanceof StepFailure) throw e;
      throw new StepFailure(`${path} is not a signing key: ${(e as Error).message}`);
    }
  };

  // ---- espsecure -----------------------------------------------------------------------------
  const espsecure = (args: string[], line: number) => {
    const [verbRaw, ...rest] = args;
    const verb = (verbRaw ?? "").replace(/_/g, "-");
    const { values: o, positionals: pos } = parseArgs({
      args: rest.map((a) => (a.startsWith("--") ? a.replace(/_/g, "-") : a)),
      strict: false,
      allowPositionals: true,
      options: {
        version: { type: "string", short: "v" },
        scheme: { type: "string", short: "s" },
        keyfile: { type: "string", short: "k", multiple: true },
        output: { type: "string", short: "o" },
        address: { type: "string", short: "a" },
        "aes-xts": { type: "boolean", short: "x" },
        "flash-crypt-conf": { type: "string" },
        keylen: { type: "string", short: "l" },
        "append-signatures": { type: "boolean" },
        iv: { type: "string" },
        "pub-key": { type: "string" },
      },
    });
    const keyfiles = (o.keyfile as string[] | undefined) ?? [];
    const out = o.output as string | undefined;
    switch (verb) {
      case "generate-flash-encryption-key": {
        const bits = Number(o.keylen ?? 256) as 128 | 256 | 512;
        const key = (opts.flashEncryptionKey ?? generateFlashEncryptionKey)(bits);
        writeFile(pos[0]!, key, { kind: "key", line, path: pos[0]! });
        return;
      }
      case "generate-signing-key": {
        const scheme =
          (o.scheme as string | undefined) ?? (o.version === "2" ? "rsa3072" : "ecdsa256");
        writeFile(
          pos[0]!,
          new TextEncoder().encode((opts.signingKeyPem ?? generateSigningKeyPem)(scheme as never)),
          { kind: "key", line, path: pos[0]! },
        );
        return;
      }
      case "digest-sbv2-public-key": {
        const k = loadKey(keyfiles[0]!, line);
        writeFile(out!, publicKeyDigestV2(k), {
          kind: "digest",
          line,
          path: out!,
          signers: [sha(publicKeyDigestV2(k))],
        });
        return;
      }
      case "extract-public-key": {
        const k = loadKey(keyfiles[0]!, line);
        if ((o.version ?? "1") === "1") {
          sbv1PublicKey = extractPublicKeyV1(k);
          assumed.push(
            `the bootloader is built with the Secure Boot V1 public key extracted at line ${line} (CONFIG_SECURE_BOOT_VERIFICATION_KEY)`,
          );
          writeFile(pos[0]!, sbv1PublicKey, { kind: "key", line, path: pos[0]! });
        }
        return;
      }
      case "sign-data": {
        const input = pos[0];
        if (!input || keyfiles.length === 0)
          throw new StepFailure("sign-data needs --keyfile and an input file");
        const data = readFile(input, line);
        const src = infoOf(input);
        if (src.kind === "ciphertext") {
          const plain = src.from?.path ?? "the plaintext image";
          diag(
            line,
            "unbootable",
            "sign-ciphertext",
            `line ${line} signs ${input}, which is ciphertext (encrypted at line ${src.line}): the bootloader verifies the signature over the decrypted image, so sign ${plain} first and encrypt the signed file`,
          );
        }
        const keys = keyfiles.map((k) => loadKey(k, line));
        const v = (o.version ?? "1") === "2" ? 2 : 1;
        const signed = v === 2 ? signDataV2(data, keys) : signDataV1(data, keys[0]!);
        if (v === 1 && !sbv1PublicKey) {
          sbv1PublicKey = extractPublicKeyV1(keys[0]!);
          assumed.push(
            `the bootloader is built with the public key of ${keyfiles[0]} (line ${line} signs with it; Secure Boot V1 verifies apps with the key built into the bootloader)`,
          );
        }
        const signers =
          v === 2
            ? keys.map((k) => sha(publicKeyDigestV2(k)))
            : [sha(extractPublicKeyV1(keys[0]!))];
        writeFile(out ?? input, signed, {
          kind: "signed",
          line,
          path: out ?? input,
          from: src,
          signers,
          signVersion: v,
        });
        return;
      }
      case "encrypt-flash-data":
      case "decrypt-flash-data": {
        const input = pos[0];
        if (!input || !keyfiles[0] || o.address === undefined || !out)
          throw new StepFailure(`${verb} needs --keyfile, --address, --output and an input file`);
        const key = readFile(keyfiles[0], line);
        const address = Number(o.address);
        const xts = o["aes-xts"] === true;
        const conf = o["flash-crypt-conf"] === undefined ? 0xf : Number(o["flash-crypt-conf"]);
        const cipher = xts
          ? createFlashCipher({ scheme: "xts", key })
          : createFlashCipher({ scheme: "esp32", key, flashCryptConf: conf });
        const data = readFile(input, line);
        if (verb === "decrypt-flash-data") {
          writeFile(out, cipher.decrypt(address, pad16(data)), {
            kind: "plain",
            line,
            path: out,
            from: infoOf(input),
          });
          return;
        }
        if (infoOf(input).kind === "ciphertext")
          diag(
            line,
            "unbootable",
            "encrypt-twice",
            `line ${line} encrypts ${input}, which is already ciphertext: encrypt the signed plaintext once, for the address it is written to`,
          );
        writeFile(out, cipher.encrypt(address, pad16(data)), {
          kind: "ciphertext",
          line,
          path: out,
          from: infoOf(input),
          address,
          keySha: sha(key),
          keyPath: keyfiles[0],
          conf,
          xts,
        });
        return;
      }
      case "digest-secure-bootloader": {
        // The ROM's V1 digest is not simulated (the simulated ROM does not check it): lay the
        // file out as espsecure does (a 4 KB digest sector, then the bootloader) so every
        // address after it is right, and say so.
        const input = pos[0]!;
        const data = readFile(input, line);
        const sector = new Uint8Array(0x1000).fill(0xff);
        sector.set(
          createHash("sha512").update(readFile(keyfiles[0]!, line)).update(data).digest(),
          0x80,
        );
        const file = new Uint8Array(0x1000 + data.length);
        file.set(sector);
        file.set(data, 0x1000);
        assumed.push(
          `line ${line}: the simulated ROM does not check the Secure Boot V1 bootloader digest; the file is laid out as espsecure lays it out (digest sector at 0x0, bootloader at 0x1000)`,
        );
        writeFile(out ?? `${input.replace(/\.bin$/, "")}-digest-0x0000.bin`, file, {
          kind: "bootloader-digest",
          line,
          path: out ?? input,
          from: infoOf(input),
        });
        return;
      }
      case "verify-signature":
      case "signature-info-v2":
      case "digest-private-key":
        return;
      default:
        throw new StepFailure(`espsecure ${verbRaw} is not a verb the replay runs`);
    }
  };

  // ---- espefuse ------------------------------------------------------------------------------
  const espefuseCmd = (args: string[], line: number) => {
    const words = stripGlobals(
      args,
      ["--chip", "-c", "--port", "-p", "--baud", "-b", "--before", "--path-efuse-file"],
      ["--do-not-confirm", "--virt", "--debug", "-d"],
    );
    const [cmdRaw, ...rest] = words;
    const cmd = (cmdRaw ?? "").replace(/_/g, "-");
    const flags = new Set(rest.filter((a) => a.startsWith("--")).map((a) => a.replace(/_/g, "-")));
    const pos: string[] = [];
    for (let i = 0; i < rest.length; i++) {
      const a = rest[i]!;
      if (a === "--format" || a === "--file") {
        i++;
        continue;
      }
      if (!a.startsWith("-")) pos.push(a);
    }
    const optionValue = (name: string) => {
      const i = rest.indexOf(name);
      return i >= 0 ? rest[i + 1] : undefined;
    };
    switch (cmd) {
      case "summary": {
        const json = JSON.stringify(espefuse.summaryJson(), null, 2);
        const file = optionValue("--file");
        if (file)
          writeFile(file, new TextEncoder().encode(json), { kind: "other", line, path: file });
        return;
      }
      case "burn-efuse": {
        const pairs: [string, string][] = [];
        for (let i = 0; i + 1 < pos.length; i += 2) pairs.push([pos[i]!, pos[i + 1]!]);
        if (pairs.length === 0) throw new StepFailure("burn-efuse needs NAME VALUE pairs");
        const before = { cnt: efuses.flashCryptCnt, conf: efuses.flashCryptConfig };
        espefuse.burnEfuse(pairs);
        for (const [n] of pairs) events.push({ line, what: espefuse.name(n) });
        if (efuses.flashCryptCnt !== before.cnt) events.push({ line, what: "counter" });
        return;
      }
      case "burn-key":
      case "burn-key-digest": {
        const items: { block: string; key: Uint8Array; purpose?: string }[] = [];
        const per = chip === "esp32" ? 2 : 3;
        if (cmd === "burn-key-digest") {
          const [a, b, c] = pos;
          const pem = chip === "esp32" ? a! : b!;
          const digest = publicKeyDigestV2(loadKey(pem, line));
          items.push(
            chip === "esp32"
              ? { block: "secure_boot_v2", key: digest }
              : { block: a!, key: digest, ...(c ? { purpose: c } : {}) },
          );
        } else
          for (let i = 0; i < pos.length; i += per)
            items.push({
              block: pos[i]!,
              key: readFile(pos[i + 1]!, line),
              ...(per === 3 && pos[i + 2] ? { purpose: pos[i + 2]! } : {}),
            });
        espefuse.burnKey(items, {
          noReadProtect: flags.has("--no-read-protect") || flags.has("--no-protect-key"),
          noWriteProtect: flags.has("--no-write-protect") || flags.has("--no-protect-key"),
        });
        for (const it of items) {
          const p = (it.purpose ?? it.block).toUpperCase();
          if (p.includes("XTS") || p === "FLASH_ENCRYPTION" || p === "BLOCK1")
            events.push({ line, what: "fe-key" });
          if (p.includes("SECURE_BOOT")) events.push({ line, what: "sb-key" });
        }
        return;
      }
      case "write-protect-efuse":
        espefuse.writeProtect(pos);
        for (const n of pos) {
          const name = espefuse.name(n);
          events.push({ line, what: `wp:${name}` });
          if (
            chip === "esp32" &&
            ["FLASH_CRYPT_CONFIG", "CODING_SCHEME"].includes(name) &&
            efuses.flashCryptConfig === 0
          )
            diag(
              line,
              "insecure",
              "crypt-config-zero",
              `line ${line} write-protects ${name} while FLASH_CRYPT_CONFIG is 0: the flash key is never mixed with the address, every 32-byte block is encrypted with the same key. Burn FLASH_CRYPT_CONFIG 0xF before anything write-protects its group`,
            );
        }
        return;
      case "read-protect-efuse":
        espefuse.readProtect(pos);
        return;
      case "dump":
      case "adc-info":
      case "check-error":
        return;
      default:
        throw new StepFailure(`espefuse ${cmdRaw} is not a command the replay runs`);
    }
  };

  // ---- esptool -------------------------------------------------------------------------------
  const writeRegions = (
    pairs: [number, string][],
    encrypt: boolean,
    force: boolean,
    line: number,
    flashSize?: number,
  ) => {
    if (efuses.downloadModeDisabled)
      throw new ToolRefused("Failed to connect: download mode is disabled in eFuse");
    const romEncryptOff =
      efuses.chip === "esp32"
        ? efuses.field("DISABLE_DL_ENCRYPT")
        : efuses.field("DIS_DOWNLOAD_MANUAL_ENCRYPT");
    if (encrypt && romEncryptOff)
      throw new ToolRefused(
        "--encrypt: the ROM can no longer encrypt (download-mode encryption is disabled in eFuse); write pre-encrypted files instead",
      );
    const port = session();
    for (const [address, path] of pairs) {
      const data = readFile(path, line);
      const i = infoOf(path);
      // esptool v4.6+ (esptool#895): refuses to write a plain image with encryption on.
      if (
        efuses.flashEncryptionEnabled &&
        !encrypt &&
        !force &&
        data[0] === 0xe9 &&
        i.kind !== "ciphertext"
      )
        throw new ToolRefused(
          `${path} looks like a plaintext image and flash encryption is on: esptool refuses it without --force`,
        );
      if (encrypt && address % 16 !== 0)
        throw new ToolRefused(`--encrypt needs 16-byte aligned addresses (${hex(address)})`);
      port.write(address, data, encrypt, flashSize);
      regions.push({ address, length: data.length, line, path, info: i, encryptedByRom: encrypt });
      events.push({ line, what: `write:${hex(address)}` });
    }
  };
  const esptool = (args: string[], line: number) => {
    const words = stripGlobals(
      args,
      ["--chip", "-c", "--port", "-p", "--baud", "-b", "--before", "--after", "--connect-attempts"],
      ["--no-stub", "--trace"],
    );
    const [cmdRaw, ...rest] = words;
    const cmd = (cmdRaw ?? "").replace(/_/g, "-");
    const withValue = new Set([
      "--flash-mode",
      "-fm",
      "--flash-freq",
      "-ff",
      "--flash-size",
      "-fs",
      "--flash_mode",
      "--flash_freq",
      "--flash_size",
    ]);
    const flags = new Set<string>();
    const pos: string[] = [];
    let flashSizeArg: string | undefined;
    for (let i = 0; i < rest.length; i++) {
      const a = rest[i]!;
      if (withValue.has(a)) {
        if (a.replace(/_/g, "-") === "--flash-size" || a === "-fs") flashSizeArg = rest[i + 1];
        i++;
      } else if (a.startsWith("-")) flags.add(a.replace(/_/g, "-"));
      else pos.push(a);
    }
    switch (cmd) {
      case "write-flash": {
        const pairs: [number, string][] = [];
        for (let i = 0; i + 1 < pos.length; i += 2) pairs.push([Number(pos[i]), pos[i + 1]!]);
        if (pairs.length === 0 || pairs.some(([a]) => !Number.isInteger(a)))
          throw new StepFailure("write-flash needs ADDRESS FILE pairs");
        const m = /^(\d+)MB$/i.exec(flashSizeArg ?? "");
        writeRegions(
          pairs,
          flags.has("--encrypt"),
          flags.has("--force"),
          line,
          m ? Number(m[1]) << 20 : undefined,
        );
        return;
      }
      case "erase-flash":
        if (efuses.downloadModeDisabled || efuses.secureDownloadMode)
          throw new ToolRefused("erase-flash needs the stub, which Secure Download Mode refuses");
        session().erase(0, device.flash.size);
        return;
      case "erase-region":
        session().erase(Number(pos[0]), Number(pos[1]));
        return;
      case "read-mac":
      case "chip-id":
      case "flash-id":
      case "run":
      case "verify-flash":
        return;
      default:
        throw new StepFailure(`esptool ${cmdRaw} is not a command the replay runs`);
    }
  };

  // ---- idf.py --------------------------------------------------------------------------------
  const idf = (args: string[], line: number) => {
    let build = "build";
    const targets: string[] = [];
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!;
      if (a === "-B" || a === "--build-dir") build = args[++i]!;
      else if (a === "-p" || a === "--port" || a === "-b" || a === "--baud" || a === "-C") i++;
      else if (!a.startsWith("-")) targets.push(a);
    }
    const fa = opts.files.read(norm(`${build}/flasher_args.json`));
    if (!fa)
      throw new StepFailure(
        `idf.py flash needs ${build}/flasher_args.json (the build's flash layout)`,
      );
    let j: {
      flash_files?: Record<string, string>;
      bootloader?: { offset: string; file: string };
      app?: { offset: string; file: string };
      "partition-table"?: { offset: string; file: string };
    };
    try {
      j = JSON.parse(new TextDecoder().decode(fa));
    } catch {
      throw new StepFailure(`${build}/flasher_args.json is not JSON`);
    }
    for (const t of targets) {
      const encrypt = t.startsWith("encrypted-");
      const base = t.replace(/^encrypted-/, "");
      const pick =
        base === "flash"
          ? Object.entries(j.flash_files ?? {})
          : base === "bootloader-flash"
            ? j.bootloader
              ? [[j.bootloader.offset, j.bootloader.file]]
              : []
            : base === "app-flash"
              ? j.app
                ? [[j.app.offset, j.app.file]]
                : []
              : base === "partition-table-flash"
                ? j["partition-table"]
                  ? [[j["partition-table"].offset, j["partition-table"].file]]
                  : []
                : undefined;
      if (!pick) throw new StepFailure(`idf.py ${t} is not a target the replay runs`);
      writeRegions(
        pick.map(([a, f]) => [Number(a), `${build}/${f}`] as [number, string]),
        encrypt,
        false,
        line,
      );
    }
  };

  // ---- esp-ota provision gates ---------------------------------------------------------------
  const espOta = (args: string[], line: number) => {
    if (args[0] !== "provision")
      throw new StepFailure(`esp-ota ${args[0]} is not a command the replay runs`);
    const verb = args[1];
    const rest = args.slice(2);
    const values = (name: string) =>
      rest.flatMap((a, i) => (a === name && rest[i + 1] !== undefined ? [rest[i + 1]!] : []));
    const pos = rest.filter((a, i) => !a.startsWith("--") && !rest[i - 1]?.startsWith("--"));
    if (verb === "check-state") {
      if (pos.length === 0) return;
      const text = new TextDecoder().decode(readFile(pos[0]!, line));
      const parsed = parseEfuseSummary(text);
      if (!parsed.ok) throw new StepFailure(parsed.reason);
      const expect = values("--expect").map(
        (e) =>
          parseExpectation(e) ??
          (() => {
            throw new StepFailure(`--expect ${e} is not FIELD=VALUE`);
          })(),
      );
      const r = checkState(parsed.fields, expect);
      if (!r.ok)
        throw new ToolRefused(
          `gate ${values("--step")[0] ?? ""} failed: ${r.mismatches.map((m) => `${m.field} expected ${m.expected}, is ${m.actual}`).join("; ")}`,
        );
      return;
    }
    if (verb === "check-layout") {
      const bl = values("--bootloader")[0];
      const at = values("--at")[0] !== undefined ? Number(values("--at")[0]) : blOffset;
      const pt =
        values("--partition-table-offset")[0] !== undefined
          ? Number(values("--partition-table-offset")[0])
          : ptOffset;
      if (bl) {
        const n = readFile(bl, line).length;
        if (at + n > pt)
          throw new ToolRefused(
            `${bl} is ${n} bytes: at ${hex(at)} it runs past the partition table at ${hex(pt)}`,
          );
      }
      return;
    }
    throw new StepFailure(`esp-ota provision ${verb} is not a command the replay runs`);
  };

  // ---- the script ----------------------------------------------------------------------------
  const lines = logicalLines(script, opts.maxLines ?? 2000);
  let stopped = false;
  for (const { line, text } of lines) {
    if (stopped) {
      steps.push({
        line,
        text,
        result: "skipped",
        note: "set -e: the script stopped at an earlier failure",
      });
      continue;
    }
    let tokens: ReturnType<typeof shellParse>;
    try {
      tokens = shellParse(text, (k: string) => env[k] ?? "");
    } catch (e) {
      throw new EspOtaError("E_PROVISION_SCRIPT", `line ${line}: ${(e as Error).message}`, {
        line,
      });
    }
    const commands: { argv: string[]; op?: string }[] = [{ argv: [] }];
    let unsupported: string | undefined;
    for (const t of tokens) {
      if (typeof t === "string") commands[commands.length - 1]!.argv.push(t);
      else if ("comment" in t) break;
      else if ("op" in t && (t.op === ";" || t.op === "&&" || t.op === "||"))
        commands.push({ argv: [], op: t.op });
      else if ("op" in t) unsupported = `shell operator ${t.op}`;
      else
        commands[commands.length - 1]!.argv.push(String((t as { pattern?: string }).pattern ?? ""));
    }
    if (unsupported) {
      steps.push({ line, text, result: "skipped", note: `${unsupported} is not modelled` });
      continue;
    }
    let lastOk = true;
    for (const { argv, op } of commands) {
      if (argv.length === 0) continue;
      if (op === "&&" && !lastOk) continue;
      if (op === "||" && lastOk) continue;
      lastOk = runOne(argv, line, text);
    }
    if (!lastOk && errexit) stopped = true;
  }

  function runOne(argvIn: string[], line: number, text: string): boolean {
    let argv = argvIn;
    while (argv.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(argv[0]!)) {
      const [k, ...v] = argv[0]!.split("=");
      env[k!] = v.join("=");
      argv = argv.slice(1);
    }
    if (argv.length === 0) return true;
    if ((argv[0] === "python" || argv[0] === "python3") && argv[1] === "-m") argv = argv.slice(2);
    const tool = (argv[0]!.split("/").pop() ?? "").replace(/\.py$/, "");
    try {
      switch (tool) {
        case "set":
          if (argv.some((a) => /^-[a-z]*e/.test(a))) errexit = true;
          return true;
        case ":":
        case "true":
        case "mkdir":
        case "echo":
        case "cd":
        case "export":
          return true;
        case "espsecure":
          espsecure(argv.slice(1), line);
          break;
        case "espefuse":
          espefuseCmd(argv.slice(1), line);
          break;
        case "esptool":
          esptool(argv.slice(1), line);
          break;
        case "idf":
          idf(argv.slice(1), line);
          break;
        case "esp-ota":
          espOta(argv.slice(1), line);
          break;
        default:
          throw new StepFailure(`${argv[0]} is not a tool the replay runs`);
      }
      steps.push({ line, text, result: "ok" });
      return true;
    } catch (e) {
      if (e instanceof ToolRefused || (isEspOtaError(e) && e.code === "E_SIM_EFUSE_BURN")) {
        const why = e.message.replace(/^eFuse burn refused: /, "");
        steps.push({ line, text, result: "refused", note: why });
        diag(line, "unbootable", "refused", `line ${line} was refused by ${tool}: ${why}`);
        return false;
      }
      if (e instanceof StepFailure || isEspOtaError(e)) {
        steps.push({ line, text, result: "failed", note: e.message });
        diag(line, "unbootable", "failed", `line ${line} failed: ${e.message}`);
        return false;
      }
      throw e;
    }
  }

  // ---- assumptions -----------------------------------------------------------------------------
  if (sdk.partitionTableOffset === undefined)
    assumed.push(
      `partition table at ${hex(ptOffset)} (CONFIG_PARTITION_TABLE_OFFSET default; give --sdkconfig to change it)`,
    );
  if (efuses.secureBootVersion === 1 && !sbv1PublicKey)
    assumed.push(
      "Secure Boot V1 is on but no step shows the bootloader's public key: apps cannot verify",
    );
  if (sdk.secureBoot) assumed.push(`Secure Boot ${sdk.secureBoot.toUpperCase()} from sdkconfig`);
  else if (efuses.secureBootVersion)
    assumed.push(`Secure Boot V${efuses.secureBootVersion}, as the burned eFuses imply`);
  if (efuses.flashEncryptionEnabled)
    assumed.push(
      `flash encryption ${sdk.flashEncryption ?? efuses.flashEncryptionMode}, as ${sdk.flashEncryption ? "sdkconfig says" : "the burned eFuses imply"}`,
    );
  if (sdk.signedBinaries)
    assumed.push("the build signs its binaries (CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES)");

  // ---- analysis ----------------------------------------------------------------------------------
  const fe = efuses.flashEncryptionEnabled;
  const feKeySha = efuses.flashEncryptionKey ? sha(efuses.flashEncryptionKey) : undefined;
  const counterLine = eventLine("counter");
  let parts: Partition[] = [];
  const ptRegion = [...regions].reverse().find((r) => r.address === ptOffset);
  if (ptRegion) {
    try {
      const raw =
        ptRegion.info.kind === "ciphertext" ? undefined : opts.files.read(norm(ptRegion.path));
      if (raw) parts = decodePartitionTable(raw.subarray(0, 0xc00)).partitions;
      else {
        const src = ptRegion.info.from && opts.files.read(norm(ptRegion.info.from.path));
        if (src) parts = decodePartitionTable(src.subarray(0, 0xc00)).partitions;
      }
    } catch {
      parts = [];
    }
  }
  // Without a readable partition table, app-aligned addresses past the table are taken as apps.
  const encryptedArea = (a: number) =>
    a === blOffset ||
    a === ptOffset ||
    (chip === "esp32" && a === 0) ||
    (parts.length === 0
      ? a > ptOffset && a % 0x10000 === 0
      : parts.some((p) => isEncryptedPartition(p) && a >= p.offset && a < p.offset + p.size));
  const areaName = (a: number) =>
    a === blOffset || (chip === "esp32" && a === 0)
      ? "the bootloader"
      : a === ptOffset
        ? "the partition table"
        : (parts.find((p) => a >= p.offset && a < p.offset + p.size)?.label ?? hex(a));
  const latest = new Map<number, Region>();
  for (const r of regions) latest.set(r.address, r);
  for (const r of latest.values()) {
    // A signature appended to ciphertext leaves ciphertext: the address and key checks see through it.
    const i = r.info.kind === "signed" && r.info.from?.kind === "ciphertext" ? r.info.from : r.info;
    if (i.kind === "ciphertext") {
      if (i.address !== r.address) {
        const at = i.address === ptOffset ? " (the partition table's offset)" : "";
        diag(
          r.line,
          "unbootable",
          "wrong-address",
          `line ${r.line} writes ${r.path} at ${hex(r.address)}, but line ${i.line} encrypted it for ${hex(i.address!)}${at}: ciphertext depends on its address and decrypts to garbage anywhere else. Encrypt ${i.from?.path ?? "the plaintext"} with --address ${hex(r.address)}`,
        );
      }
      if (feKeySha && i.keySha !== feKeySha)
        diag(
          r.line,
          "unbootable",
          "wrong-key",
          `line ${r.line} writes ${r.path}, encrypted (line ${i.line}) with ${i.keyPath}, which is not the flash-encryption key burned at line ${eventLine("fe-key") ?? "?"}: encrypt with the burned key`,
        );
      if (chip === "esp32" && i.xts)
        diag(
          i.line!,
          "unbootable",
          "wrong-scheme",
          `line ${i.line} encrypts with --aes-xts, but the ESP32 uses AES-256 with FLASH_CRYPT_CONFIG, not XTS: drop --aes-xts`,
        );
      if (chip !== "esp32" && !i.xts)
        diag(
          i.line!,
          "unbootable",
          "wrong-scheme",
          `line ${i.line} encrypts without --aes-xts, but the ${chip} uses XTS-AES: add --aes-xts`,
        );
      if (chip === "esp32" && fe && !i.xts && i.conf !== efuses.flashCryptConfig)
        diag(
          i.line!,
          "unbootable",
          "crypt-conf",
          `line ${i.line} encrypts with --flash-crypt-conf ${hex(i.conf!)}, but FLASH_CRYPT_CONFIG is ${hex(efuses.flashCryptConfig)}: they must match`,
        );
      if (!fe) {
        const refused = steps.find((s) => s.result === "refused" && /CRYPT_CNT/.test(s.text));
        diag(
          r.line,
          "unbootable",
          "ciphertext-no-fe",
          `line ${r.line} writes ${r.path}, which is ciphertext, but flash encryption is off (${chip === "esp32" ? "FLASH_CRYPT_CNT" : "SPI_BOOT_CRYPT_CNT"} has an even number of bits${refused ? `: line ${refused.line}, which burns it, was refused` : counterLine === undefined ? ": no line burns it" : ""}): the ROM reads the ciphertext as plaintext and prints "invalid header"`,
        );
      } else if (counterLine !== undefined && counterLine > r.line)
        diag(
          counterLine,
          "risk",
          "counter-late",
          `line ${counterLine} burns the counter after line ${r.line} wrote ciphertext: a reset in between boots ciphertext with encryption off. Burn the counter before writing the images (and never after download mode is locked)`,
        );
    } else if (
      fe &&
      !r.encryptedByRom &&
      encryptedArea(r.address) &&
      (i.kind === "plain" || i.kind === "signed" || i.kind === "bootloader-digest")
    ) {
      diag(
        r.line,
        "unbootable",
        "plaintext-under-fe",
        `line ${r.line} writes ${r.path} as plaintext at ${hex(r.address)} (${areaName(r.address)}), but flash encryption is on${counterLine ? ` (line ${counterLine})` : ""}: the chip decrypts it into garbage. Write it encrypted for ${hex(r.address)} (espsecure encrypt-flash-data --address ${hex(r.address)})`,
      );
    }
    // Bootloader past the partition table.
    if (
      (r.address === blOffset || (chip === "esp32" && r.address === 0)) &&
      r.address + r.length > ptOffset
    )
      diag(
        r.line,
        "unbootable",
        "bootloader-overlaps-table",
        `line ${r.line} writes ${r.path} (${r.length} bytes) at ${hex(r.address)}: it runs past the partition table at ${hex(ptOffset)}. Secure boot makes the bootloader larger; move the partition table (CONFIG_PARTITION_TABLE_OFFSET) before the first secure flash`,
      );
    // Signatures over the plaintext that lands here.
    const root =
      r.info.kind === "ciphertext"
        ? r.info.from
        : r.info.kind === "signed" && r.info.from?.kind === "ciphertext"
          ? undefined
          : r.info;
    const isImage =
      r.address === blOffset || parts.some((p) => p.type === 0 && p.offset === r.address);
    if (
      isImage &&
      root &&
      efuses.secureBootVersion === 2 &&
      !(r.address === blOffset && chip === "esp32" && efuses.secureBootVersion !== 2)
    ) {
      const signers = root.kind === "signed" ? root.signers : undefined;
      const burned = efuses.sbv2Digests
        .filter((d, k) => d && !efuses.sbv2Revoked[k])
        .map((d) => sha(d!));
      if (!signers && !(sdk.signedBinaries && root.kind === "plain"))
        diag(
          r.line,
          "unbootable",
          "unsigned",
          `line ${r.line} writes ${r.path}, which was never signed, but Secure Boot V2 is on${eventLine(chip === "esp32" ? "ABS_DONE_1" : "SECURE_BOOT_EN") ? ` (line ${eventLine(chip === "esp32" ? "ABS_DONE_1" : "SECURE_BOOT_EN")})` : ""}: sign the plaintext with espsecure sign-data --version 2, then encrypt the signed file`,
        );
      else if (signers && !signers.some((s) => burned.includes(s)))
        diag(
          r.line,
          "unbootable",
          "signer-not-burned",
          `line ${r.line} writes ${r.path}, signed (line ${root.line}) with a key whose digest is not burned: burn that key's digest (espsecure digest-sbv2-public-key) or sign with the burned key`,
        );
    }
  }
  if (
    (efuses.field("ABS_DONE_1") || efuses.field("SECURE_BOOT_EN")) &&
    efuses.secureBootVersion !== 2
  )
    diag(
      eventLine("ABS_DONE_1") ?? eventLine("SECURE_BOOT_EN") ?? 0,
      "unbootable",
      "sb-no-digest",
      "Secure Boot V2 is enabled with no key digest burned: the ROM refuses every bootloader. Burn the digest first",
    );
  // Insecure leftovers.
  if (fe) {
    if (!efuses.keyReadProtected)
      diag(
        eventLine("fe-key") ?? 0,
        "insecure",
        "key-readable",
        "the flash-encryption key is not read-protected: software can read it and decrypt the flash",
      );
    const release = (sdk.flashEncryption ?? efuses.flashEncryptionMode) === "release";
    const jtag =
      chip === "esp32"
        ? efuses.field("JTAG_DISABLE")
        : efuses.field("DIS_PAD_JTAG") && efuses.field("DIS_USB_JTAG");
    if (release && !jtag)
      diag(
        0,
        "insecure",
        "jtag-open",
        "flash encryption is in release mode but JTAG is still enabled: a debugger reads the decrypted flash through the CPU",
      );
    if (chip === "esp32" && !efuses.field("DISABLE_DL_DECRYPT"))
      diag(
        0,
        "insecure",
        "dl-decrypt",
        "DISABLE_DL_DECRYPT is not burned: the ROM loader reads the flash decrypted",
      );
    if (
      chip === "esp32" &&
      efuses.flashCryptConfig === 0 &&
      !espefuse.writeable("FLASH_CRYPT_CONFIG")
    )
      diag(
        eventLine("wp:FLASH_CRYPT_CONFIG") ?? eventLine("wp:CODING_SCHEME") ?? 0,
        "insecure",
        "crypt-config-zero",
        "FLASH_CRYPT_CONFIG is write-protected at 0: the key is never mixed with the address",
      );
  }
  if (efuses.secureBootVersion === 2) {
    if (espefuse.writeable("RD_DIS"))
      diag(
        0,
        "insecure",
        "rd-dis-open",
        "Secure Boot V2 is on but RD_DIS is not write-protected: the key digest can still be read-protected, after which nothing boots (write-protect-efuse RD_DIS)",
      );
    if (chip !== "esp32")
      efuses.sbv2Digests.forEach((d, k) => {
        if (!d && !efuses.sbv2Revoked[k])
          diag(
            0,
            "insecure",
            `unrevoked-${k}`,
            `digest slot ${k} is empty and not revoked: anyone who can burn eFuses can add their own key (SECURE_BOOT_KEY_REVOKE${k})`,
          );
      });
  }

  // ---- boot ----------------------------------------------------------------------------------
  const spec = device.spec;
  spec.partitionTableOffset = ptOffset;
  if (sdk.rollback !== undefined) spec.bootloader.rollback = sdk.rollback;
  if (sbv1PublicKey) spec.bootloader.sbv1PublicKey = Buffer.from(sbv1PublicKey).toString("hex");
  const start = device.uart.lines.length;
  let booted = false;
  try {
    const s = device.powerOn();
    booted = s.kind === "running";
  } catch (e) {
    if (!isEspOtaError(e)) throw e;
    device.uart.emit(`(simulator: ${e.message})`);
  }
  const bootLog = device.uart.lines.slice(start);
  if (!booted && !diagnoses.some((d) => d.severity === "unbootable"))
    diag(
      0,
      "unbootable",
      "no-boot",
      `the chip does not boot: ${bootLog[bootLog.length - 1] ?? "no output"}`,
    );
  diagnoses.sort((a, b) => a.line - b.line);
  return { chip, assumed, steps, diagnoses, bootLog, booted, device };
}

/** A factory-fresh chip of this kind (state file that does not exist yet). */
export function freshDevice(chip: SimChip, flashSize: number, mac?: Uint8Array): SimDevice {
  const m = mac ?? new Uint8Array([0x24, 0x0a, 0xc4, chip === "esp32" ? 0x00 : 0x53, 0x00, 0x01]);
  return new SimDevice(
    { ...structuredClone(DEFAULT_SPEC), chip, flashSize },
    new Efuses(chip, m),
    new NorFlash({ size: flashSize }),
  );
}

export function formatReplay(r: ReplayReport): string[] {
  const out: string[] = [];
  if (r.assumed.length) out.push("assumed:", ...r.assumed.map((a) => `  - ${a}`));
  out.push("steps:");
  for (const s of r.steps)
    out.push(
      `  ${String(s.line).padStart(3)} ${s.result.padEnd(8)} ${cutText(s.text)}${s.note ? `\n              ${s.note}` : ""}`,
    );
  out.push("boot log:", ...r.bootLog.map((l) => `  ${l}`));
  out.push(r.booted ? "the chip boots." : "the chip does not boot.");
  if (r.diagnoses.length) {
    out.push("diagnoses:");
    for (const d of r.diagnoses) out.push(`  [${d.severity}] ${d.message}`);
  }
  return out;
}

function logicalLines(script: string, max: number): { line: number; text: string }[] {
  const raw = script.split(/\r?\n/);
  if (raw.length > max)
    throw new EspOtaError(
      "E_PROVISION_SCRIPT",
      `the script has ${raw.length} lines, more than ${max}`,
    );
  const out: { line: number; text: string }[] = [];
  for (let i = 0; i < raw.length; i++) {
    const start = i + 1;
    let text = raw[i]!;
    while (text.endsWith("\\") && i + 1 < raw.length) text = `${text.slice(0, -1)} ${raw[++i]!}`;
    const t = text.trim();
    if (t && !t.startsWith("#")) out.push({ line: start, text: t });
  }
  return out;
}

/** Remove global options (with and without values) that may sit before the command. */
function stripGlobals(args: string[], withValue: string[], bare: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const name = a.split("=")[0]!;
    if (withValue.includes(name) || withValue.includes(name.replace(/_/g, "-"))) {
      if (!a.includes("=")) i++;
    } else if (bare.includes(a) || bare.includes(a.replace(/_/g, "-"))) continue;
    else out.push(a);
  }
  return out;
}

function classify(path: string, data: Uint8Array): FileInfo {
  if (data[0] === 0xe9 || (data[0] === 0xaa && data[1] === 0x50)) return { kind: "plain", path };
  if (data.length >= 0x2000 && data.subarray(0, 32).every((b) => b === 0xff))
    return { kind: "plain", path };
  return { kind: "other", path };
}

function pad16(data: Uint8Array): Uint8Array {
  if (data.length % 16 === 0) return data;
  const out = new Uint8Array(Math.ceil(data.length / 16) * 16).fill(0xff);
  out.set(data);
  return out;
}

const cutText = (s: string) => (s.length > 110 ? `${s.slice(0, 107)}...` : s);
