/**
 * The simulator demo (`esp-ota sim demo`, `npm run demo`): two secure devices — an ESP32 with
 * Secure Boot V1 and AES-256 flash encryption, an ESP32-S3 with Secure Boot V2 (RSA-3072) and
 * XTS-AES-256 — take an update signed then encrypted for their OTA slot, and then the classic
 * mistakes are shown failing safely, each with the reason the device gives.
 */
import { generateFlashEncryptionKey } from "../esp/flash-encryption.js";
import { generateSigningKeyPem, parseSigningKey } from "../esp/keys.js";
import { parsePartitionCsv } from "../esp/partition-table.js";
import type { SimDevice } from "./device.js";
import type { SimChip } from "./efuse.js";
import { applyPreEncryptedUpdate, type UpdateResult } from "./ota-update.js";
import {
  encryptForAddress,
  type FlashEncryptionSetup,
  provisionDevice,
  type SecureBootSetup,
  signImage,
} from "./provision.js";
import { makeSyntheticApp } from "./synthetic-app.js";

export const DEMO_PARTITIONS = `# Name,   Type, SubType, Offset,   Size
nvs,      data, nvs,     0x9000,   0x4000
otadata,  data, ota,     0xd000,   0x2000
phy_init, data, phy,     0xf000,   0x1000
ota_0,    app,  ota_0,   0x10000,  0x150000
ota_1,    app,  ota_1,   0x160000, 0x150000
`;

export interface DemoRow {
  device: string;
  scenario: string;
  expected: string;
  outcome: string;
  ok: boolean;
}

interface DemoDevice {
  name: string;
  chip: SimChip;
  sb: SecureBootSetup;
  fe: FlashEncryptionSetup;
  device: SimDevice;
}

export interface DemoResult {
  rows: DemoRow[];
  /** Devices not running an app at the end (must be 0). */
  unbootable: number;
}

export function runSimDemo(print: (line: string) => void, appSize = 0x40000): DemoResult {
  const partitions = parsePartitionCsv(DEMO_PARTITIONS);
  const rows: DemoRow[] = [];
  const devices: DemoDevice[] = (
    [
      {
        name: "esp32-a",
        chip: "esp32",
        sb: { version: 1, keys: [parseSigningKey(Buffer.from(generateSigningKeyPem("ecdsa256")))] },
        feLen: 256,
      },
      {
        name: "esp32s3-b",
        chip: "esp32s3",
        sb: { version: 2, keys: [parseSigningKey(Buffer.from(generateSigningKeyPem("rsa3072")))] },
        feLen: 512,
      },
    ] as const
  ).map((d, i) => {
    const fe = { key: generateFlashEncryptionKey(d.feLen) };
    const sb = d.sb as SecureBootSetup;
    const device = provisionDevice({
      chip: d.chip,
      flashSize: 4 << 20,
      partitions,
      app: makeSyntheticApp({ chip: d.chip, project: "demo", version: "1.0.0", size: appSize }),
      flashEncryption: fe,
      secureBoot: sb,
      mac: new Uint8Array([0x24, 0x0a, 0xc4, 0xde, 0x00, i + 1]),
      behaviours: { "2.1.0": "crash-loop" },
    });
    return { name: d.name, chip: d.chip, sb, fe, device };
  });

  const slotOf = (d: DemoDevice) => d.device.ota.esp_ota_get_next_update_partition()!;
  const appV = (d: DemoDevice, version: string) =>
    makeSyntheticApp({ chip: d.chip, project: "demo", version, size: appSize });
  const describe = (d: DemoDevice) => {
    const s = d.device.state;
    return s.kind === "running" ? `runs ${s.app?.version} from ${s.partition.label}` : s.kind;
  };
  const record = (
    d: DemoDevice,
    scenario: string,
    expected: string,
    r: UpdateResult | undefined,
    ok: boolean,
  ) => {
    const outcome = r && !r.ok ? `refused at ${r.message}` : describe(d);
    rows.push({
      device: d.name,
      scenario,
      expected,
      outcome: r && !r.ok ? `${outcome}; still ${describe(d)}` : outcome,
      ok,
    });
    print(`  ${ok ? "ok  " : "FAIL"} ${scenario}: ${rows.at(-1)!.outcome}`);
  };
  const version = (d: DemoDevice) => {
    const s = d.device.state;
    return s.kind === "running" ? s.app?.version : undefined;
  };

  for (const d of devices) {
    print(
      `\n== ${d.name}: ${d.chip}, Secure Boot V${d.sb.version}, flash encryption ${d.device.efuses.flashEncryptionMode} (${d.chip === "esp32" ? "AES-256, key tweaked per 32 bytes" : "XTS-AES-256"})`,
    );
    const start = d.device.uart.lines.length;
    d.device.powerOn();
    for (const l of d.device.uart.lines
      .slice(start)
      .filter((x) => /rst:|Loaded app|Project name|App version/.test(x)))
      print(`   | ${l}`);
    record(d, "first boot", "runs 1.0.0", undefined, version(d) === "1.0.0");

    let slot = slotOf(d);
    let r = applyPreEncryptedUpdate(
      d.device,
      encryptForAddress(d.chip, d.fe, slot.offset, signImage(appV(d, "2.0.0"), d.sb)),
    );
    record(
      d,
      `2.0.0 signed, then encrypted for ${slot.label} @0x${slot.offset.toString(16)}`,
      "boots 2.0.0 and confirms it",
      r,
      r.ok && version(d) === "2.0.0",
    );

    slot = slotOf(d);
    const other = d.device.partitions.find((p) => p.type === 0 && p.offset !== slot.offset)!;
    r = applyPreEncryptedUpdate(
      d.device,
      encryptForAddress(d.chip, d.fe, other.offset, signImage(appV(d, "2.0.1"), d.sb)),
    );
    record(
      d,
      `mistake: encrypted for 0x${other.offset.toString(16)}, written at 0x${slot.offset.toString(16)}`,
      "refused, 2.0.0 keeps running",
      r,
      !r.ok && version(d) === "2.0.0",
    );

    r = applyPreEncryptedUpdate(
      d.device,
      signImage(encryptForAddress(d.chip, d.fe, slot.offset, appV(d, "2.0.2")), d.sb),
    );
    record(
      d,
      "mistake: signed after encrypting",
      "refused by secure boot",
      r,
      !r.ok && version(d) === "2.0.0",
    );

    r = applyPreEncryptedUpdate(
      d.device,
      encryptForAddress(d.chip, d.fe, slot.offset, appV(d, "2.0.3")),
    );
    record(
      d,
      "mistake: not signed at all",
      "refused by secure boot",
      r,
      !r.ok && version(d) === "2.0.0",
    );

    const crashStart = d.device.uart.lines.length;
    r = applyPreEncryptedUpdate(
      d.device,
      encryptForAddress(d.chip, d.fe, slot.offset, signImage(appV(d, "2.1.0"), d.sb)),
    );
    const shown = /^rst:|Loaded app|App version|Guru Meditation/;
    for (const l of d.device.uart.lines.slice(crashStart).filter((x) => shown.test(x))) {
      print(`   | ${l}`);
    }
    record(
      d,
      "2.1.0 panics before confirming itself",
      "rolls back to 2.0.0",
      r,
      r.ok && version(d) === "2.0.0",
    );
  }
  return { rows, unbootable: devices.filter((d) => d.device.state.kind !== "running").length };
}

export function formatDemoSummary({ rows, unbootable }: DemoResult): string {
  const w = [10, 58, 30];
  const line = (a: string, b: string, c: string, d: string) =>
    `${a.padEnd(w[0]!)} ${b.padEnd(w[1]!)} ${c.padEnd(w[2]!)} ${d}`;
  return [
    line("device", "scenario", "expected", "result"),
    line("-".repeat(w[0]!), "-".repeat(w[1]!), "-".repeat(w[2]!), "------"),
    ...rows.map((r) => line(r.device, r.scenario, r.expected, r.ok ? "ok" : "FAIL")),
    "",
    `${rows.filter((r) => r.ok).length} of ${rows.length} as expected; devices left unbootable: ${unbootable}.`,
  ].join("\n");
}
