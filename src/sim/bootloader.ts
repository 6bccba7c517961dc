/**
 * ROM and 2nd-stage bootloader, as ESP-IDF's do it (bootloader_utility.c:
 * bootloader_utility_load_partition_table, _get_selected_boot_partition, _load_boot_image).
 * The decisions come from src/esp/otadata.ts (planBoot/afterLoad, the same pure functions the
 * vectors from the compiled bootloader check); this file only executes them against flash,
 * loads images through the decrypting cache and prints what the real bootloader prints.
 */
import { decodeAppDesc } from "../esp/image.js";
import {
  afterLoad,
  applyWrites,
  type BootConfig,
  type BootPlan,
  encodeOtaEntry,
  FACTORY_INDEX,
  OTADATA_SECTOR,
  OTADATA_SIZE,
  type OtadataWrite,
  planBoot,
  TEST_APP_INDEX,
} from "../esp/otadata.js";
import {
  APP_SUBTYPE,
  DATA_SUBTYPE,
  decodePartitionTable,
  findPartition,
  isEncryptedPartition,
  otaAppPartitions,
  PART_TYPE,
  PARTITION_TABLE_MAX_LEN,
  type Partition,
} from "../esp/partition-table.js";
import { type AppCheck, appVerifyContext, verifyAppInFlash } from "./app-verify.js";
import type { Efuses } from "./efuse.js";
import type { SpiFlash } from "./spi-flash.js";
import type { UartLog } from "./uart-log.js";

/** Kconfig options built into the bootloader (and the app's OTA library). */
export interface BootloaderConfig {
  /** CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (default on: the gateway relies on it). */
  rollback: boolean;
  /** CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK (requires rollback). */
  antiRollback: boolean;
  /** Secure Boot V1: the ECDSA public key compiled into the bootloader, hex X||Y. */
  sbv1PublicKey?: string;
}

export interface BootTarget {
  /** -1 factory, 0..N-1 ota_N, or the test index. */
  index: number;
  partition: Partition;
  check: AppCheck;
}

export type BootOutcome =
  | { kind: "app"; target: BootTarget; partitions: Partition[] }
  | { kind: "no-app"; reason: string };

export interface BootEnv {
  chip: "esp32" | "esp32s3";
  spi: SpiFlash;
  efuses: Efuses;
  uart: UartLog;
  config: BootloaderConfig;
  partitionTableOffset: number;
  bootloaderOffset: number;
}

export const BOOTLOADER_OFFSET = { esp32: 0x1000, esp32s3: 0x0 } as const;

export function runBoot(env: BootEnv): BootOutcome {
  const { uart, spi, efuses } = env;
  const fe = spi.encryptionEnabled;

  // ROM: load the 2nd-stage bootloader (decrypted when flash encryption is on; with Secure Boot
  // V2 the ROM verifies its signature before running it).
  const bl = verifyAppInFlash(
    { spi, efuses, checkSignature: efuses.secureBootVersion === 2, kind: "bootloader" },
    {
      label: "bootloader",
      type: PART_TYPE.bootloader,
      subtype: 0,
      offset: env.bootloaderOffset,
      size: env.partitionTableOffset - env.bootloaderOffset,
      encrypted: true,
      readonly: false,
    },
  );
  if (!bl.ok) {
    const word = spi.readDecrypted(env.bootloaderOffset, 4);
    const magic = (word[0]! | (word[1]! << 8) | (word[2]! << 16) | (word[3]! << 24)) >>> 0;
    const reason =
      bl.code === "E_IMAGE_MAGIC"
        ? `invalid header: 0x${magic.toString(16).padStart(8, "0")}`
        : `bootloader verification failed: ${bl.log.map((l) => l.message).join("; ")}`;
    uart.emit(reason);
    return { kind: "no-app", reason };
  }
  uart.log("I", "boot", "ESP-IDF v5.5 2nd stage bootloader (esp-ota-gateway simulator)");
  uart.log(
    "I",
    "boot",
    `chip: ${env.chip}, flash encryption: ${fe ? efuses.flashEncryptionMode : "off"}, secure boot: ${efuses.secureBootVersion ? `V${efuses.secureBootVersion}` : "off"}`,
  );

  // Partition table (always encrypted when flash encryption is on).
  let partitions: Partition[];
  try {
    const raw = spi.read(env.partitionTableOffset, PARTITION_TABLE_MAX_LEN, fe);
    partitions = decodePartitionTable(raw).partitions;
  } catch (e) {
    uart.log("E", "flash_parts", (e as Error).message);
    uart.log("E", "boot", "Failed to verify partition table");
    uart.log("E", "boot", "load partition table error!");
    return { kind: "no-app", reason: "load partition table error" };
  }
  printPartitionTable(uart, partitions);

  const otadataPart = findPartition(partitions, PART_TYPE.data, DATA_SUBTYPE.ota);
  const partOf = indexToPartition(partitions);
  const verifyCtx = appVerifyContext(spi, efuses, env.config.sbv1PublicKey);
  const cfg = bootConfig(env, partOf);

  let plan: BootPlan;
  let otadata: Uint8Array | undefined;
  if (!otadataPart) {
    plan = planBoot(null, layoutOf(partitions), cfg);
  } else {
    const otaEnc = fe && isEncryptedPartition(otadataPart);
    otadata = spi.read(otadataPart.offset, OTADATA_SIZE, otaEnc);
    plan = planBoot(otadata, layoutOf(partitions), cfg);
    writeOtadata(spi, otadataPart, otaEnc, plan.preWrites);
    otadata = applyWrites(otadata, plan.preWrites);
  }
  for (const l of plan.logLines ?? []) if (l.level !== "D") uart.log(l.level, l.tag, l.message);
  if (plan.burnSecureVersion !== undefined) efuses.burnSecureVersion(plan.burnSecureVersion);

  for (const index of plan.attemptOrder) {
    const part = partOf(index);
    if (!part) continue;
    const check = verifyAppInFlash(verifyCtx, part);
    if (!check.ok) {
      for (const l of check.log) uart.log(l.level, l.tag, l.message);
      uart.log("E", "boot", `${describeIndex(index)} is not bootable`);
      continue;
    }
    if (otadataPart && otadata) {
      const after = afterLoad(plan, index, otadata, cfg);
      writeOtadata(spi, otadataPart, fe && isEncryptedPartition(otadataPart), after.writes);
      for (const l of after.logLines) if (l.level !== "D") uart.log(l.level, l.tag, l.message);
      if (after.burnSecureVersion !== undefined) efuses.burnSecureVersion(after.burnSecureVersion);
    }
    uart.log("I", "boot", `Loaded app from partition at offset 0x${part.offset.toString(16)}`);
    return { kind: "app", target: { index, partition: part, check }, partitions };
  }
  uart.log("E", "boot", "No bootable app partitions in the partition table");
  return { kind: "no-app", reason: "No bootable app partitions in the partition table" };
}

export function describeIndex(index: number): string {
  if (index === -1) return "Factory app partition";
  if (index === TEST_APP_INDEX) return "Factory test app partition";
  return `OTA app partition slot ${index}`;
}

/**
 * The otadata module's view of this bootloader's Kconfig. Anti-rollback reads each candidate's
 * esp_app_desc_t through the cache (bootloader_common_get_partition_description), without a
 * full image check, as check_anti_rollback does.
 */
export function bootConfig(
  env: Pick<BootEnv, "config" | "efuses" | "spi">,
  partOf: (index: number) => Partition | undefined,
): BootConfig {
  const { config, efuses, spi } = env;
  if (!config.antiRollback) return { rollback: config.rollback };
  return {
    rollback: config.rollback,
    antiRollback: {
      efuseSecureVersion: efuses.secureVersion,
      secureVersionBits: efuses.maxSecureVersion,
      slotSecureVersion: (index: number) => {
        const p = partOf(index);
        if (!p) return undefined;
        return decodeAppDesc(
          spi.read(p.offset + 0x20, 256, spi.encryptionEnabled && isEncryptedPartition(p)),
        )?.secureVersion;
      },
    },
  };
}

export function layoutOf(parts: readonly Partition[]) {
  return {
    otaSlotCount: otaAppPartitions(parts).length,
    hasFactory: !!findPartition(parts, PART_TYPE.app, APP_SUBTYPE.factory),
    hasTest: !!findPartition(parts, PART_TYPE.app, APP_SUBTYPE.test),
  };
}

/** Boot index (FACTORY_INDEX, 0..N-1, TEST_APP_INDEX) to partition. */
export function indexToPartition(
  parts: readonly Partition[],
): (index: number) => Partition | undefined {
  const slots = otaAppPartitions(parts);
  const factory = findPartition(parts, PART_TYPE.app, APP_SUBTYPE.factory);
  const test = findPartition(parts, PART_TYPE.app, APP_SUBTYPE.test);
  return (index) =>
    index === FACTORY_INDEX ? factory : index === TEST_APP_INDEX ? test : slots[index];
}

/** Each otadata write = erase that copy's 4 KB sector, then write the 32-byte entry (esp32-facts §1.1). */
export function writeOtadata(
  spi: SpiFlash,
  part: Partition,
  encrypted: boolean,
  writes: readonly OtadataWrite[],
): void {
  for (const w of writes) {
    const addr = part.offset + w.copy * OTADATA_SECTOR;
    spi.erase(addr, OTADATA_SECTOR);
    spi.write(addr, encodeOtaEntry(w.entry), encrypted);
  }
}

function printPartitionTable(uart: UartLog, parts: Partition[]): void {
  uart.log("I", "boot", "Partition Table:");
  uart.log("I", "boot", "## Label            Usage          Type ST Offset   Length");
  parts.forEach((p, i) => {
    const usage = usageName(p);
    uart.log(
      "I",
      "boot",
      `${String(i).padStart(2)} ${p.label.padEnd(16)} ${usage.padEnd(14)} ${hex2(p.type)} ${hex2(p.subtype)} ${p.offset.toString(16).padStart(8, "0")} ${p.size.toString(16).padStart(8, "0")}`,
    );
  });
  uart.log("I", "boot", "End of partition table");
}

const hex2 = (v: number) => v.toString(16).padStart(2, "0");

/** bootloader_utility.c's "Usage" column. */
function usageName(p: Partition): string {
  if (p.type === PART_TYPE.app) {
    if (p.subtype === APP_SUBTYPE.factory) return "factory app";
    if (p.subtype === APP_SUBTYPE.test) return "test app";
    if (p.subtype >= 0x10 && p.subtype <= 0x1f) return "OTA app";
    return "Unknown app";
  }
  if (p.type === PART_TYPE.data) {
    switch (p.subtype) {
      case DATA_SUBTYPE.ota:
        return "OTA data";
      case DATA_SUBTYPE.phy:
        return "RF data";
      case DATA_SUBTYPE.nvs:
        return "WiFi data";
      case DATA_SUBTYPE.nvs_keys:
        return "NVS keys";
      case DATA_SUBTYPE.efuse:
        return "efuse";
      default:
        return "Unknown data";
    }
  }
  return "Unknown";
}
