/**
 * What `esp-ota sim inspect` shows: eFuses, the partition table, both otadata copies with what the
 * bootloader would do, and each app slot's app with its verification result — read the way the
 * chip reads them (through the decrypting cache when flash encryption is on), without booting.
 */
import type { AppDescriptor } from "../esp/image.js";
import { describeOtadata, OTADATA_SIZE, type OtadataReport } from "../esp/otadata.js";
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
import { appVerifyContext, verifyAppInFlash } from "./app-verify.js";
import { bootConfig, indexToPartition } from "./bootloader.js";
import type { SimDevice } from "./device.js";

export interface SlotReport {
  label: string;
  offset: number;
  size: number;
  app?: { projectName: string; version: string; secureVersion: number };
  verified: boolean;
  problem?: string;
}

export interface DeviceReport {
  id: string;
  chip: string;
  flashSize: number;
  state: string;
  efuses: {
    flashEncryption: string;
    flashCryptCnt: number;
    flashCryptConfig: number;
    secureBoot: string;
    sbv2Digests: (string | null)[];
    sbv2Revoked: boolean[];
    secureVersion: number;
    keyReadProtected: boolean;
  };
  bootloader: { rollback: boolean; antiRollback: boolean };
  partitions?: Partition[];
  partitionTableError?: string;
  otadata?: OtadataReport;
  slots: SlotReport[];
  usedFlashSectors: number;
}

export function inspectDevice(dev: SimDevice): DeviceReport {
  const spi = dev.spi;
  const e = dev.efuses;
  const report: DeviceReport = {
    id: dev.id,
    chip: dev.spec.chip,
    flashSize: dev.spec.flashSize,
    state: dev.state.kind,
    efuses: {
      flashEncryption: e.flashEncryptionMode,
      flashCryptCnt: e.flashCryptCnt,
      flashCryptConfig: e.flashCryptConfig,
      secureBoot: e.secureBootVersion ? `V${e.secureBootVersion}` : "off",
      sbv2Digests: e.sbv2Digests.map((d) => (d ? Buffer.from(d).toString("hex") : null)),
      sbv2Revoked: e.sbv2Revoked,
      secureVersion: e.secureVersion,
      keyReadProtected: e.keyReadProtected,
    },
    bootloader: {
      rollback: dev.spec.bootloader.rollback,
      antiRollback: dev.spec.bootloader.antiRollback,
    },
    slots: [],
    usedFlashSectors: dev.flash.usedSectors,
  };
  let parts: Partition[];
  try {
    parts = decodePartitionTable(
      spi.read(dev.spec.partitionTableOffset, PARTITION_TABLE_MAX_LEN, spi.encryptionEnabled),
    ).partitions;
  } catch (err) {
    report.partitionTableError = (err as Error).message;
    return report;
  }
  report.partitions = parts;
  const slots = otaAppPartitions(parts);
  const factory = findPartition(parts, PART_TYPE.app, APP_SUBTYPE.factory);
  const otadataPart = findPartition(parts, PART_TYPE.data, DATA_SUBTYPE.ota);
  if (otadataPart) {
    const otadata = spi.read(
      otadataPart.offset,
      OTADATA_SIZE,
      spi.encryptionEnabled && isEncryptedPartition(otadataPart),
    );
    report.otadata = describeOtadata(
      otadata,
      {
        otaSlotCount: slots.length,
        hasFactory: !!factory,
        hasTest: !!findPartition(parts, PART_TYPE.app, APP_SUBTYPE.test),
      },
      bootConfig({ config: dev.spec.bootloader, efuses: e, spi }, indexToPartition(parts)),
    );
  }
  const verifyCtx = appVerifyContext(spi, e, dev.spec.bootloader.sbv1PublicKey);
  for (const p of parts.filter((q) => q.type === PART_TYPE.app)) {
    const check = verifyAppInFlash(verifyCtx, p);
    const slot: SlotReport = { label: p.label, offset: p.offset, size: p.size, verified: check.ok };
    if (check.appDesc) slot.app = pickApp(check.appDesc);
    if (!check.ok) slot.problem = `${check.code}: ${check.log.map((l) => l.message).join("; ")}`;
    report.slots.push(slot);
  }
  return report;
}

function pickApp(d: AppDescriptor) {
  return { projectName: d.projectName, version: d.version, secureVersion: d.secureVersion };
}

export function formatInspection(r: DeviceReport): string {
  const L: string[] = [];
  L.push(
    `device ${r.id}: ${r.chip}, ${r.flashSize >> 20} MB flash, ${r.state}, ${r.usedFlashSectors} sectors in use`,
  );
  L.push("eFuses:");
  L.push(
    `  flash encryption: ${r.efuses.flashEncryption} (FLASH_CRYPT_CNT 0b${r.efuses.flashCryptCnt.toString(2)}${r.chip === "esp32" ? `, FLASH_CRYPT_CONFIG 0x${r.efuses.flashCryptConfig.toString(16)}` : ""}, key ${r.efuses.keyReadProtected ? "read-protected" : "readable"})`,
  );
  L.push(`  secure boot: ${r.efuses.secureBoot}`);
  r.efuses.sbv2Digests.forEach((d, i) => {
    if (d) L.push(`  key digest ${i}: ${d}${r.efuses.sbv2Revoked[i] ? " (revoked)" : ""}`);
  });
  L.push(`  secure_version: ${r.efuses.secureVersion}`);
  L.push(
    `bootloader: rollback ${r.bootloader.rollback ? "on" : "off"}, anti-rollback ${r.bootloader.antiRollback ? "on" : "off"}`,
  );
  if (r.partitionTableError) {
    L.push(`partition table: UNREADABLE (${r.partitionTableError})`);
    return L.join("\n");
  }
  L.push("partitions:");
  for (const p of r.partitions ?? []) {
    L.push(
      `  ${p.label.padEnd(16)} type 0x${p.type.toString(16).padStart(2, "0")} subtype 0x${p.subtype.toString(16).padStart(2, "0")} 0x${p.offset.toString(16).padStart(6, "0")} ${String(p.size >> 10).padStart(5)} KB${p.encrypted ? " encrypted" : ""}`,
    );
  }
  if (r.otadata) {
    L.push("otadata:");
    for (const line of r.otadata.lines) L.push(`  ${line}`);
  }
  L.push("app slots:");
  for (const s of r.slots) {
    const app = s.app
      ? `${s.app.projectName} ${s.app.version} (secure_version ${s.app.secureVersion})`
      : "no app";
    L.push(
      `  ${s.label.padEnd(10)} 0x${s.offset.toString(16).padStart(6, "0")}  ${s.verified ? "verified" : "NOT BOOTABLE"}  ${app}${s.problem ? `\n             ${s.problem}` : ""}`,
    );
  }
  return L.join("\n");
}
