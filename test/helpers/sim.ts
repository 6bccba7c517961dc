/** Builders for simulator tests: partition layouts, keys from the oracle fixtures, devices. */
import { parseSigningKey } from "../../src/esp/keys.js";
import { type Partition, parsePartitionCsv } from "../../src/esp/partition-table.js";
import type { SimDevice } from "../../src/sim/device.js";
import type { SimChip } from "../../src/sim/efuse.js";
import {
  encryptForAddress,
  type FlashEncryptionSetup,
  type ProvisionOptions,
  provisionDevice,
  type SecureBootSetup,
  signImage,
} from "../../src/sim/provision.js";
import { makeSyntheticApp } from "../../src/sim/synthetic-app.js";
import { fixture } from "./fixtures.js";

/** The layout the otadata oracle used: factory 0x10000, ota_i at 0x110000 + i MB, otadata 0xd000. */
export function oracleLayout(otaSlots: number, factory: boolean): Partition[] {
  const rows = [
    "nvs, data, nvs, 0x9000, 0x4000",
    "otadata, data, ota, 0xd000, 0x2000",
    "phy_init, data, phy, 0xf000, 0x1000",
  ];
  if (factory) rows.push("factory, app, factory, 0x10000, 1M");
  for (let i = 0; i < otaSlots; i++)
    rows.push(`ota_${i}, app, ota_${i}, 0x${(0x110000 + i * 0x100000).toString(16)}, 1M`);
  return parsePartitionCsv(rows.join("\n"));
}

/** ESP-IDF's two-OTA layout: ota_0 at 0x10000, ota_1 at 0x160000 (the classic-mistake addresses). */
export function twoOtaLayout(): Partition[] {
  return parsePartitionCsv(
    [
      "nvs, data, nvs, 0x9000, 0x4000",
      "otadata, data, ota, 0xd000, 0x2000",
      "phy_init, data, phy, 0xf000, 0x1000",
      "ota_0, app, ota_0, 0x10000, 0x150000",
      "ota_1, app, ota_1, 0x160000, 0x150000",
    ].join("\n"),
  );
}

export const keys = {
  sbv1: () => parseSigningKey(fixture("sbv1/sbv1_key.pem")),
  sbv1Other: () => parseSigningKey(fixture("sbv1/sbv1_other_key.pem")),
  rsa: () => parseSigningKey(fixture("sbv2/sbv2_rsa3072_key.pem")),
  rsaOther: () => parseSigningKey(fixture("sbv2/sbv2_rsa3072_other_key.pem")),
  feEsp32: () => fixture("flash_encryption/fe_esp32_key256.bin"),
  feXts512: () => fixture("flash_encryption/fe_xts_key512.bin"),
};

export interface Security {
  secureBoot?: SecureBootSetup;
  flashEncryption?: FlashEncryptionSetup;
}

/** The two secure configurations the product targets. */
export function security(chip: SimChip): Required<Security> {
  return chip === "esp32"
    ? { secureBoot: { version: 1, keys: [keys.sbv1()] }, flashEncryption: { key: keys.feEsp32() } }
    : { secureBoot: { version: 2, keys: [keys.rsa()] }, flashEncryption: { key: keys.feXts512() } };
}

export function app(chip: SimChip, version: string, size = 0x4000, secureVersion = 0): Uint8Array {
  return makeSyntheticApp({ chip, project: "sim-test", version, size, secureVersion });
}

export function makeDevice(
  chip: SimChip,
  sec: Security,
  extra: Partial<ProvisionOptions> = {},
): SimDevice {
  return provisionDevice({
    chip,
    flashSize: 8 << 20,
    partitions: twoOtaLayout(),
    app: app(chip, "1.0.0"),
    ...sec,
    ...extra,
  });
}

/** What the release pipeline produces for one device and slot: sign, then encrypt at the slot. */
export function otaImage(
  chip: SimChip,
  sec: Security,
  plain: Uint8Array,
  slotOffset: number,
): Uint8Array {
  const signed = sec.secureBoot ? signImage(plain, sec.secureBoot) : plain;
  return sec.flashEncryption
    ? encryptForAddress(chip, sec.flashEncryption, slotOffset, signed)
    : signed;
}
