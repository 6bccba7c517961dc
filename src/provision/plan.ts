/**
 * The first secure flash of one device, as an ordered list of steps, each with its reason
 * (docs/provisioning.md). Pure: the caller reads the partition table, the device record and the
 * key directory; this decides the order, the addresses, the eFuse values and the state the chip
 * must be in after each irreversible step.
 *
 * The order is Espressif's host-side workflow for a host-generated key (esp32-facts §9; ESP-IDF
 * docs/en/security/flash-encryption.rst "Using Host Generated Key", secure-boot-v2.rst "Enable
 * Secure Boot V2 Externally"): keys; sign the plaintext; encrypt each signed image at its own
 * address; the flash-encryption key and its purpose; FLASH_CRYPT_CONFIG; the counter; the
 * download-mode crypto restrictions; write the ciphertext; Secure Boot V2 (which write-protects
 * RD_DIS, so it must come after the key is read-protected); revoke unused digest slots; lock
 * download mode last, because after it espefuse can no longer reach the chip.
 */
import { EspOtaError } from "../errors.js";
import {
  APP_SUBTYPE,
  DATA_SUBTYPE,
  findPartition,
  otaAppPartitions,
  PART_TYPE,
  type Partition,
} from "../esp/partition-table.js";

export type ProvisionChip = "esp32" | "esp32s2" | "esp32s3" | "esp32c3" | "esp32c6";
export const PROVISION_CHIPS: readonly ProvisionChip[] = [
  "esp32",
  "esp32s2",
  "esp32s3",
  "esp32c3",
  "esp32c6",
];

interface ChipFacts {
  bootloaderOffset: number;
  /** "esp32": AES-256 with FLASH_CRYPT_CONFIG tweak; "xts": XTS-AES in a BLOCK_KEYn. */
  fe: "esp32" | "xts";
  xtsBits: readonly (128 | 256)[];
  counter: "FLASH_CRYPT_CNT" | "SPI_BOOT_CRYPT_CNT";
  counterBits: number;
  secureBoot: readonly ("v1" | "v2")[];
  sbv2Schemes: readonly ("rsa3072" | "ecdsa256")[];
  digestSlots: number;
}

/** esp32-facts §4.2, §5, §9; espefuse efuse_defs/*.yaml for field names. */
export const CHIP_FACTS: Readonly<Record<ProvisionChip, ChipFacts>> = {
  esp32: {
    bootloaderOffset: 0x1000,
    fe: "esp32",
    xtsBits: [],
    counter: "FLASH_CRYPT_CNT",
    counterBits: 7,
    secureBoot: ["v1", "v2"],
    sbv2Schemes: ["rsa3072"],
    digestSlots: 1,
  },
  esp32s2: {
    bootloaderOffset: 0x1000,
    fe: "xts",
    xtsBits: [128, 256],
    counter: "SPI_BOOT_CRYPT_CNT",
    counterBits: 3,
    secureBoot: ["v2"],
    sbv2Schemes: ["rsa3072"],
    digestSlots: 3,
  },
  esp32s3: {
    bootloaderOffset: 0x0,
    fe: "xts",
    xtsBits: [128, 256],
    counter: "SPI_BOOT_CRYPT_CNT",
    counterBits: 3,
    secureBoot: ["v2"],
    sbv2Schemes: ["rsa3072"],
    digestSlots: 3,
  },
  esp32c3: {
    bootloaderOffset: 0x0,
    fe: "xts",
    xtsBits: [128],
    counter: "SPI_BOOT_CRYPT_CNT",
    counterBits: 3,
    secureBoot: ["v2"],
    sbv2Schemes: ["rsa3072"],
    digestSlots: 3,
  },
  esp32c6: {
    bootloaderOffset: 0x0,
    fe: "xts",
    xtsBits: [128],
    counter: "SPI_BOOT_CRYPT_CNT",
    counterBits: 3,
    secureBoot: ["v2"],
    sbv2Schemes: ["rsa3072", "ecdsa256"],
    digestSlots: 3,
  },
};

/** One eFuse fact checked against `espefuse summary --format json` after a step. */
export interface Expectation {
  field: string;
  value?: number | string;
  readable?: boolean;
  writeable?: boolean;
}

export type Tool = "espsecure" | "espefuse" | "esptool" | "esp-ota";

export interface PlanStep {
  /** Stable name: in the script's comments, the gates and the receipt. */
  id: string;
  title: string;
  why: string;
  /** Cannot be undone (eFuses): the script checks the chip's state before and after it. */
  irreversible: boolean;
  /** argv lists, tool first. */
  commands: string[][];
  /** What the chip must show after this step (cumulative state is built by the script). */
  expect: Expectation[];
}

export interface LayoutProblem {
  severity: "error" | "warning";
  message: string;
}

export interface ProvisionPlan {
  chip: ProvisionChip;
  deviceId?: string;
  secureBoot: "v1" | "v2";
  scheme: "rsa3072" | "ecdsa256";
  flashEncryption: "release" | "development";
  partitionTableOffset: number;
  bootloaderOffset: number;
  /** Largest bootloader (signed, as written) that fits below the partition table. */
  maxBootloaderSize: number;
  /** Each region encrypted at its own address: label, plaintext input, address. */
  regions: { label: string; input: string; address: number; output: string }[];
  steps: PlanStep[];
  problems: LayoutProblem[];
  files: PlanFiles;
}

export interface PlanFiles {
  feKey: string;
  signingKey: string;
  /** Secure Boot V1 reflashable: the bootloader digest key (espsecure digest-secure-bootloader). */
  bootloaderKey: string;
  digest: string;
  bootloader: string;
  partitionTable: string;
  app: string;
  otadata: string;
  nvsKeys: string;
  work: string;
}

export interface PlanInput {
  chip: ProvisionChip;
  partitions: readonly Partition[];
  partitionTableOffset?: number;
  secureBoot: "v1" | "v2";
  scheme?: "rsa3072" | "ecdsa256";
  flashEncryption: "release" | "development";
  /** XTS key size (S2/S3: 256 by default; C3/C6: 128 only). */
  xtsBits?: 128 | 256;
  deviceId?: string;
  port?: string;
  /** Key files already present (from the keyring / registry): no generation step for them. */
  have?: { feKey?: boolean; signingKey?: boolean; bootloaderKey?: boolean };
  /** Size of the plain bootloader image when known: the layout check is exact then. */
  bootloaderSize?: number;
  /** ESP32 release: keep UART download mode (the rescue path needs it). Default: disable it. */
  keepDownloadMode?: boolean;
  files?: Partial<PlanFiles>;
}

const hex = (n: number) => `0x${n.toString(16)}`;
/** V2 signing pads to 4 KB and appends a 4 KB signature sector (esp32-facts §5). */
const SBV2_OVERHEAD = 0x1000;
/** V1 reflashable: a 4 KB digest sector in front of the bootloader at 0x0 (ESP32). */
const SBV1_DIGEST_SECTOR = 0x1000;

export function planProvisioning(input: PlanInput): ProvisionPlan {
  const chip = CHIP_FACTS[input.chip];
  if (!chip)
    throw new EspOtaError(
      "E_USAGE",
      `chip ${input.chip} is not one of ${PROVISION_CHIPS.join(", ")}`,
    );
  const bad = (why: string) => new EspOtaError("E_PROVISION_PLAN", why, { chip: input.chip });
  if (!chip.secureBoot.includes(input.secureBoot))
    throw bad(`${input.chip} has no Secure Boot ${input.secureBoot.toUpperCase()}`);
  const scheme = input.secureBoot === "v1" ? "ecdsa256" : (input.scheme ?? "rsa3072");
  if (input.secureBoot === "v2" && !chip.sbv2Schemes.includes(scheme))
    throw bad(
      `${input.chip} verifies Secure Boot V2 with ${chip.sbv2Schemes.join(" or ")}, not ${scheme}`,
    );
  const xtsBits = input.xtsBits ?? (chip.xtsBits.includes(256) ? 256 : 128);
  if (chip.fe === "xts" && !chip.xtsBits.includes(xtsBits))
    throw bad(`${input.chip} has XTS-AES-${chip.xtsBits.join("/")} only`);
  const release = input.flashEncryption === "release";
  const ptOffset = input.partitionTableOffset ?? 0x8000;
  const parts = input.partitions;
  const dev = input.deviceId ? `${input.deviceId}-` : "";
  const f: PlanFiles = {
    feKey: `keys/${dev}flash_encryption_key.bin`,
    signingKey:
      input.secureBoot === "v1"
        ? "keys/secure_boot_signing_key_v1.pem"
        : "keys/secure_boot_signing_key.pem",
    bootloaderKey: "keys/secure_bootloader_key.bin",
    digest: "keys/secure_boot_digest.bin",
    bootloader: "build/bootloader/bootloader.bin",
    partitionTable: "build/partition_table/partition-table.bin",
    app: "build/app.bin",
    otadata: "build/ota_data_initial.bin",
    nvsKeys: "build/nvs_keys.bin",
    work: "provision",
    ...input.files,
  };
  const port = input.port ?? "$PORT";
  const efuse = (...args: string[]) => [
    "espefuse",
    "--chip",
    input.chip,
    "--port",
    port,
    "--do-not-confirm",
    ...args,
  ];
  const w = (name: string) => `${f.work}/${dev}${name}`;

  // ---- layout --------------------------------------------------------------------------------
  const problems: LayoutProblem[] = [];
  const blOffset = chip.bootloaderOffset;
  const overhead = input.secureBoot === "v2" ? SBV2_OVERHEAD : 0;
  const maxBootloaderSize = ptOffset - blOffset;
  if (input.bootloaderSize !== undefined) {
    const signed =
      input.secureBoot === "v2"
        ? Math.ceil(input.bootloaderSize / 0x1000) * 0x1000 + overhead
        : input.bootloaderSize;
    if (blOffset + signed > ptOffset)
      problems.push({
        severity: "error",
        message: `the bootloader is ${input.bootloaderSize} bytes, ${signed} once signed: at ${hex(blOffset)} it runs past the partition table at ${hex(ptOffset)}. Move the table (CONFIG_PARTITION_TABLE_OFFSET, e.g. 0xA000 or 0xD000, with every partition after it) before the first secure flash; it cannot be moved afterwards`,
      });
  } else if (ptOffset === 0x8000) {
    problems.push({
      severity: "warning",
      message: `with the partition table at 0x8000 a bootloader${input.secureBoot === "v2" ? " and its 4 KB signature sector" : ""} must fit ${maxBootloaderSize} bytes; secure boot and flash encryption make the bootloader larger. The script checks the signed bootloader's size before burning anything`,
    });
  }
  const app =
    findPartition(parts, PART_TYPE.app, APP_SUBTYPE.factory) ?? otaAppPartitions(parts)[0];
  if (!app) throw bad("the partition table has no factory or ota_0 app partition");
  const otadata = findPartition(parts, PART_TYPE.data, DATA_SUBTYPE.ota);
  const nvsKeys = findPartition(parts, PART_TYPE.data, DATA_SUBTYPE.nvs_keys);
  if (chip.fe === "esp32" && parts.some((p) => p.offset + p.size > 0x100_0000))
    problems.push({
      severity: "error",
      message: "ESP32 flash encryption covers the first 16 MB only; a partition ends past it",
    });

  // ---- regions ---------------------------------------------------------------------------------
  const signedBl = input.secureBoot === "v2" ? w("bootloader-signed.bin") : f.bootloader;
  const regions: ProvisionPlan["regions"] = [
    {
      label: "bootloader",
      input: input.secureBoot === "v1" ? w("bootloader-reflash-digest.bin") : signedBl,
      address: input.secureBoot === "v1" ? 0x0 : blOffset,
      output: w("bootloader-encrypted.bin"),
    },
    {
      label: "partition table",
      input: f.partitionTable,
      address: ptOffset,
      output: w("partition-table-encrypted.bin"),
    },
    {
      label: app.label,
      input: w("app-signed.bin"),
      address: app.offset,
      output: w(`${app.label}-encrypted.bin`),
    },
  ];
  if (otadata)
    regions.push({
      label: otadata.label,
      input: f.otadata,
      address: otadata.offset,
      output: w("ota_data_initial-encrypted.bin"),
    });
  if (nvsKeys)
    regions.push({
      label: nvsKeys.label,
      input: f.nvsKeys,
      address: nvsKeys.offset,
      output: w("nvs_keys-encrypted.bin"),
    });

  // ---- steps -------------------------------------------------------------------------------------
  const steps: PlanStep[] = [];
  const step = (s: Omit<PlanStep, "expect"> & { expect?: Expectation[] }) =>
    steps.push({ expect: [], ...s });
  const keyCmds: string[][] = [];
  if (!input.have?.feKey)
    keyCmds.push([
      "espsecure",
      "generate-flash-encryption-key",
      ...(chip.fe === "xts" ? ["--keylen", String(xtsBits === 256 ? 512 : 256)] : []),
      f.feKey,
    ]);
  if (!input.have?.signingKey)
    keyCmds.push([
      "espsecure",
      "generate-signing-key",
      "--version",
      input.secureBoot === "v1" ? "1" : "2",
      ...(input.secureBoot === "v2" ? ["--scheme", scheme] : []),
      f.signingKey,
    ]);
  if (input.secureBoot === "v1" && !input.have?.bootloaderKey)
    keyCmds.push(["espsecure", "generate-flash-encryption-key", f.bootloaderKey]);
  step({
    id: "keys",
    title: "Keys",
    why: input.have?.feKey
      ? "The flash-encryption key comes from the device registry: the release side encrypts every later update with exactly this key, so it must be the one burned. The signing key stays with the keyring; only its public digest reaches the chip."
      : "A host-generated flash-encryption key per device (never shared between devices: one leaked key then decrypts one device, not the fleet), kept in the device registry because per-slot pre-encryption of updates needs it. The signing key signs every image; only its public digest reaches the chip.",
    irreversible: false,
    commands: keyCmds,
  });
  if (input.secureBoot === "v2")
    step({
      id: "digest",
      title: "Public key digest",
      why: "The chip stores a SHA-256 digest of the signing public key, not the key: the ROM compares it with the key in each image's signature block.",
      irreversible: false,
      commands: [
        ["espsecure", "digest-sbv2-public-key", "--keyfile", f.signingKey, "--output", f.digest],
      ],
    });
  const signCmds: string[][] = [];
  if (input.secureBoot === "v2") {
    signCmds.push([
      "espsecure",
      "sign-data",
      "--version",
      "2",
      "--keyfile",
      f.signingKey,
      "--output",
      signedBl,
      f.bootloader,
    ]);
    signCmds.push([
      "espsecure",
      "sign-data",
      "--version",
      "2",
      "--keyfile",
      f.signingKey,
      "--output",
      w("app-signed.bin"),
      f.app,
    ]);
  } else {
    signCmds.push([
      "espsecure",
      "digest-secure-bootloader",
      "--keyfile",
      f.bootloaderKey,
      "--output",
      w("bootloader-reflash-digest.bin"),
      f.bootloader,
    ]);
    signCmds.push([
      "espsecure",
      "sign-data",
      "--version",
      "1",
      "--keyfile",
      f.signingKey,
      "--output",
      w("app-signed.bin"),
      f.app,
    ]);
  }
  step({
    id: "sign",
    title: "Sign the plaintext images",
    why:
      input.secureBoot === "v2"
        ? "The ROM verifies the bootloader, and the bootloader the app, over the decrypted image: the signature must cover the plaintext. Sign first, then encrypt the signed file; a signature over ciphertext never verifies."
        : "Secure Boot V1: the ROM checks a digest of the bootloader made with the secure-bootloader key (written with it at 0x0), and the bootloader checks the app's ECDSA signature with the public key built into it (CONFIG_SECURE_BOOT_VERIFICATION_KEY). Both cover the plaintext: digest and sign first, encrypt after.",
    irreversible: false,
    commands: signCmds,
  });
  step({
    id: "check-layout",
    title: "Check the layout",
    why: `The signed bootloader must end before the partition table at ${hex(ptOffset)}: secure boot makes it larger, and a bootloader that overlaps the table is overwritten by it (or overwrites it). The table cannot move once the chip is secured.`,
    irreversible: false,
    commands: [
      [
        "esp-ota",
        "provision",
        "check-layout",
        "--chip",
        input.chip,
        "--partition-table-offset",
        hex(ptOffset),
        "--bootloader",
        regions[0]!.input,
        ...(input.secureBoot === "v1" ? ["--at", "0x0"] : []),
      ],
    ],
  });
  step({
    id: "encrypt",
    title: "Encrypt each image at its own address",
    why: "Flash-encryption ciphertext depends on the flash address (the key is tweaked per block of address): each image is encrypted for the offset it is written to, and is garbage anywhere else. The partition table, otadata and nvs_keys are encrypted too; the bootloader reads all of them through decryption.",
    irreversible: false,
    commands: regions.map((r) => [
      "espsecure",
      "encrypt-flash-data",
      ...(chip.fe === "xts" ? ["--aes-xts"] : []),
      "--keyfile",
      f.feKey,
      "--address",
      hex(r.address),
      "--output",
      r.output,
      r.input,
    ]),
  });
  step({
    id: "fresh",
    title: "Check the chip is factory-fresh",
    why: "Before the first burn: a chip that already has a key or a counter bit would end up with a key other than the registry's.",
    irreversible: false,
    commands: [],
    expect: [
      { field: chip.counter, value: 0 },
      ...(chip.fe === "esp32"
        ? [{ field: "BLOCK1", writeable: true }]
        : [{ field: "KEY_PURPOSE_0", value: "USER" }]),
    ],
  });

  // Flash-encryption key and purpose.
  const keyBlocks =
    chip.fe === "esp32"
      ? ["BLOCK1"]
      : xtsBits === 256
        ? ["BLOCK_KEY0", "BLOCK_KEY1"]
        : ["BLOCK_KEY0"];
  step({
    id: "burn-fe-key",
    title: "Burn the flash-encryption key",
    why:
      chip.fe === "esp32"
        ? "BLOCK1 (purpose flash_encryption) is read- and write-protected as it is burned: software can no longer read it, the flash controller still can."
        : `An XTS-AES-${xtsBits} key in ${keyBlocks.join(" and ")} with purpose ${xtsBits === 256 ? "XTS_AES_256_KEY_1/_2 (espefuse splits the 64-byte file)" : "XTS_AES_128_KEY"}; read-protected as it is burned. It comes before Secure Boot V2, which write-protects RD_DIS.`,
    irreversible: true,
    commands: [
      chip.fe === "esp32"
        ? efuse("burn-key", "flash_encryption", f.feKey)
        : efuse(
            "burn-key",
            "BLOCK_KEY0",
            f.feKey,
            xtsBits === 256 ? "XTS_AES_256_KEY" : "XTS_AES_128_KEY",
          ),
    ],
    expect:
      chip.fe === "esp32"
        ? [{ field: "BLOCK1", readable: false, writeable: false }]
        : [
            ...keyBlocks.map((b) => ({ field: b, readable: false, writeable: false })),
            ...(xtsBits === 256
              ? [
                  { field: "KEY_PURPOSE_0", value: "XTS_AES_256_KEY_1" },
                  { field: "KEY_PURPOSE_1", value: "XTS_AES_256_KEY_2" },
                ]
              : [{ field: "KEY_PURPOSE_0", value: "XTS_AES_128_KEY" }]),
          ],
  });
  if (chip.fe === "esp32")
    step({
      id: "flash-crypt-config",
      title: "FLASH_CRYPT_CONFIG = 0xF",
      why: "All four tweak bits: the key is mixed with the address for every bit. Left at 0 (and write-protected by a later step, with CODING_SCHEME and the rest of its WR_DIS group) every block would be encrypted with the same key, the weakest scheme. espsecure's --flash-crypt-conf default is 0xF too.",
      irreversible: true,
      commands: [efuse("burn-efuse", "FLASH_CRYPT_CONFIG", "0xF")],
      expect: [{ field: "FLASH_CRYPT_CONFIG", value: 15 }],
    });
  const full = 2 ** chip.counterBits - 1;
  step({
    id: "crypt-cnt",
    title: `${chip.counter} = ${release ? hex(full) : "1"}`,
    why: release
      ? `An odd number of set bits turns flash encryption on; all ${chip.counterBits} bits set means no later burn can turn it off (release mode). Burned before the images are written: a chip reset in between boots ciphertext read as plaintext, and the bootloader built for flash encryption never re-encrypts ciphertext.`
      : "One bit (odd) turns flash encryption on; development mode leaves bits to turn it off again. Burned before the images are written, so no reset finds ciphertext with encryption off.",
    irreversible: true,
    commands: [efuse("burn-efuse", chip.counter, String(release ? full : 1))],
    expect: [{ field: chip.counter, value: release ? full : 1 }],
  });
  const sec: [string, string][] =
    input.chip === "esp32"
      ? [
          ...(release ? ([["DISABLE_DL_ENCRYPT", "1"]] as [string, string][]) : []),
          ["DISABLE_DL_DECRYPT", "1"],
          ["DISABLE_DL_CACHE", "1"],
          ...(release
            ? ([
                ["JTAG_DISABLE", "1"],
                ["CONSOLE_DEBUG_DISABLE", "1"],
              ] as [string, string][])
            : []),
        ]
      : [
          ...(release ? ([["DIS_DOWNLOAD_MANUAL_ENCRYPT", "1"]] as [string, string][]) : []),
          ["DIS_DOWNLOAD_ICACHE", "1"],
          ["DIS_DOWNLOAD_DCACHE", "1"],
          ...(release
            ? ([
                ["DIS_PAD_JTAG", "1"],
                ["DIS_USB_JTAG", "1"],
                ["DIS_DIRECT_BOOT", "1"],
              ] as [string, string][])
            : []),
        ];
  step({
    id: "security-efuses",
    title: "Security eFuses",
    why: release
      ? "Download mode can no longer encrypt, decrypt or read through the cache, and JTAG is off: nothing on the pins reads plaintext. Raw ciphertext writes still work, which is how the images go in next (and how the rescue path works)."
      : "Download mode can no longer read decrypted flash; it can still encrypt (development mode), and JTAG stays for debugging.",
    irreversible: true,
    commands: [efuse("burn-efuse", ...sec.flat())],
    expect: sec.map(([n]) => ({ field: n, value: 1 })),
  });
  step({
    id: "write-flash",
    title: "Write the ciphertext",
    why: "Each encrypted file at the address it was encrypted for, raw (no --encrypt: it is ciphertext already).",
    irreversible: false,
    commands: [
      [
        "esptool",
        "--chip",
        input.chip,
        "--port",
        port,
        "--before",
        "default-reset",
        "--after",
        "no-reset",
        "write-flash",
        ...regions.flatMap((r) => [hex(r.address), r.output]),
      ],
    ],
  });
  // Secure boot.
  if (input.secureBoot === "v2") {
    const digestBlock =
      chip.fe === "esp32" ? "secure_boot_v2" : xtsBits === 256 ? "BLOCK_KEY2" : "BLOCK_KEY1";
    const keyCmd =
      chip.fe === "esp32"
        ? efuse("burn-key", "secure_boot_v2", f.digest)
        : efuse("burn-key", digestBlock, f.digest, "SECURE_BOOT_DIGEST0");
    step({
      id: "secure-boot-v2",
      title: "Secure Boot V2",
      why: `The key digest, the enable bit, and RD_DIS write-protected (so nobody can later read-protect the digest and stop the ROM reading it). It comes after flash encryption because once RD_DIS is write-protected no key can be read-protected any more. From here the ROM boots only signed bootloaders.${input.chip === "esp32" ? " (ESP32: chip revision v3.0 or later; earlier ones have Secure Boot V1 only.)" : ""}`,
      irreversible: true,
      commands: [
        keyCmd,
        efuse("burn-efuse", chip.fe === "esp32" ? "ABS_DONE_1" : "SECURE_BOOT_EN", "1"),
        efuse("write-protect-efuse", "RD_DIS"),
      ],
      expect: [
        chip.fe === "esp32"
          ? { field: "BLOCK2", readable: true, writeable: false }
          : { field: digestBlock, readable: true, writeable: false },
        ...(chip.fe === "esp32"
          ? []
          : [{ field: `KEY_PURPOSE_${digestBlock.slice(-1)}`, value: "SECURE_BOOT_DIGEST0" }]),
        { field: chip.fe === "esp32" ? "ABS_DONE_1" : "SECURE_BOOT_EN", value: 1 },
        { field: "RD_DIS", writeable: false },
      ],
    });
    if (chip.digestSlots > 1)
      step({
        id: "revoke-unused",
        title: "Revoke the unused digest slots",
        why: "An empty digest slot is an open door: anyone who can burn eFuses could add their own key digest and boot their own firmware. Revoking slots 1 and 2 closes them (the price: no key rotation into them later).",
        irreversible: true,
        commands: [
          efuse("burn-efuse", "SECURE_BOOT_KEY_REVOKE1", "1", "SECURE_BOOT_KEY_REVOKE2", "1"),
        ],
        expect: [
          { field: "SECURE_BOOT_KEY_REVOKE1", value: 1 },
          { field: "SECURE_BOOT_KEY_REVOKE2", value: 1 },
        ],
      });
  } else {
    step({
      id: "secure-boot-v1",
      title: "Secure Boot V1 (reflashable)",
      why: "The secure-bootloader key into BLOCK2 (read-protected: the ROM recomputes the digest with it), then ABS_DONE_0. After it the ROM boots only the bootloader whose digest sits at 0x0.",
      irreversible: true,
      commands: [
        efuse("burn-key", "secure_boot_v1", f.bootloaderKey),
        efuse("burn-efuse", "ABS_DONE_0", "1"),
      ],
      expect: [
        { field: "BLOCK2", readable: false, writeable: false },
        { field: "ABS_DONE_0", value: 1 },
      ],
    });
  }
  // Download mode, last.
  if (release && !(input.chip === "esp32" && input.keepDownloadMode)) {
    const field = input.chip === "esp32" ? "UART_DOWNLOAD_DIS" : "ENABLE_SECURITY_DOWNLOAD";
    step({
      id: "lock-download",
      title: input.chip === "esp32" ? "Disable UART download mode" : "Secure Download Mode",
      why:
        input.chip === "esp32"
          ? "Last, because after it espefuse and esptool can never reach the chip again: any eFuse still to burn would stay unburned. Needs ESP32 v3.0. It also ends the rescue path (raw ciphertext writes over the ROM loader); --keep-download-mode keeps it."
          : "Last, because in Secure Download Mode espefuse can no longer read or burn eFuses (no READ_REG/WRITE_REG). esptool can still write raw ciphertext (the rescue path) but read nothing back.",
      irreversible: true,
      commands: [efuse("burn-efuse", field, "1")],
      expect: [],
    });
  }
  return {
    chip: input.chip,
    ...(input.deviceId ? { deviceId: input.deviceId } : {}),
    secureBoot: input.secureBoot,
    scheme,
    flashEncryption: input.flashEncryption,
    partitionTableOffset: ptOffset,
    bootloaderOffset: blOffset,
    maxBootloaderSize:
      input.secureBoot === "v1" ? maxBootloaderSize + SBV1_DIGEST_SECTOR : maxBootloaderSize,
    regions,
    steps,
    problems,
    files: f,
  };
}

/** The plan as text: numbered steps, each with its reason and commands. */
export function formatPlan(plan: ProvisionPlan, quote: (argv: string[]) => string): string {
  const out: string[] = [
    `Provisioning plan: ${plan.chip}${plan.deviceId ? ` device ${plan.deviceId}` : ""}, Secure Boot ${plan.secureBoot.toUpperCase()}${plan.secureBoot === "v2" ? ` (${plan.scheme})` : ""}, flash encryption ${plan.flashEncryption}`,
    `bootloader at ${hex(plan.bootloaderOffset)}, partition table at ${hex(plan.partitionTableOffset)}`,
  ];
  for (const p of plan.problems) out.push(`${p.severity}: ${p.message}`);
  plan.steps.forEach((s, i) => {
    out.push(
      "",
      `${i + 1}. ${s.title}${s.irreversible ? " (irreversible)" : ""}`,
      `   why: ${s.why}`,
    );
    for (const c of s.commands) out.push(`   $ ${quote(c)}`);
    for (const e of s.expect) out.push(`   expect ${describeExpectation(e)}`);
  });
  return out.join("\n");
}

export function describeExpectation(e: Expectation): string {
  const parts: string[] = [];
  if (e.value !== undefined) parts.push(`= ${e.value}`);
  if (e.readable !== undefined) parts.push(e.readable ? "readable" : "read-protected");
  if (e.writeable !== undefined) parts.push(e.writeable ? "writeable" : "write-protected");
  return `${e.field} ${parts.join(", ")}`;
}
