/** A build directory in memory (bootloader, partition table, app, otadata) and a file overlay. */
import { buildAppImage } from "../../src/esp/image.js";
import { encodePartitionTable, parsePartitionCsv } from "../../src/esp/partition-table.js";
import type { ReplayFiles } from "../../src/provision/replay.js";
import type { SimChip } from "../../src/sim/efuse.js";
import { makeSyntheticApp } from "../../src/sim/synthetic-app.js";

export const CSV = [
  "nvs,      data, nvs,     0x9000,  0x4000",
  "otadata,  data, ota,     0xd000,  0x2000",
  "phy_init, data, phy,     0xf000,  0x1000",
  "ota_0,    app,  ota_0,   0x10000, 0x100000",
  "ota_1,    app,  ota_1,   0x110000, 0x100000",
].join("\n");

export class MemFiles implements ReplayFiles {
  readonly map = new Map<string, Uint8Array>();
  read(path: string) {
    return this.map.get(path);
  }
  write(path: string, data: Uint8Array) {
    this.map.set(path, data);
  }
}

/** The files `idf.py build` leaves, under the names a plan or a hand-written script uses. */
export function buildFiles(
  chip: SimChip,
  names: Record<"bootloader" | "partitionTable" | "app" | "otadata", string>,
): MemFiles {
  const files = new MemFiles();
  files.write(
    names.bootloader,
    buildAppImage({
      chip,
      appDesc: { projectName: "bootloader", version: "v5.5" },
      entryAddr: 0x40080400,
    }),
  );
  files.write(names.partitionTable, encodePartitionTable(parsePartitionCsv(CSV)));
  files.write(
    names.app,
    makeSyntheticApp({ chip, project: "receiver", version: "1.0.0", size: 0x8000 }),
  );
  files.write(names.otadata, new Uint8Array(0x2000).fill(0xff));
  return files;
}

import { readFileSync } from "node:fs";

const fixture = (p: string) => readFileSync(new URL(`../fixtures/${p}`, import.meta.url), "utf8");
/** espsecure-made keys from test/fixtures (generating RSA-3072 costs 0.2-2 s per key). */
export const fixtureKeyPem = (scheme: string): string =>
  scheme === "rsa3072"
    ? fixture("sbv2/sbv2_rsa3072_key.pem")
    : scheme === "ecdsa256"
      ? fixture("sbv1/sbv1_key.pem")
      : (() => {
          throw new Error(`no fixture key for ${scheme}`);
        })();
