/**
 * `esp-ota devices add|import|list|remove --registry DIR`: the device registry
 * (src/release/registry.ts, docs/release.md "Registering devices"). A record holds the device's
 * flash-encryption key, so the registry is created 0700 with 0600 files, and no command prints a
 * key: listings show its size only. A generated key is written only to the file the operator
 * names for burning it (`--save-fe-key`), created exclusively with mode 0600.
 */
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { EspOtaError } from "../../errors.js";
import { chipByName } from "../../esp/chips.js";
import { generateFlashEncryptionKey } from "../../esp/flash-encryption.js";
import {
  type DeviceRecord,
  defaultFlashKeyBits,
  describeDevice,
  deviceOtaSlots,
  makeDeviceRecord,
} from "../../release/registry.js";
import { openRegistry } from "../../release/registry-fs.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

interface AddOptions {
  registry: string;
  mac: string;
  chip: string;
  partitionTable: string;
  feKey?: string;
  saveFeKey?: string;
  flashCryptConf?: number;
  secureVersion?: number;
}

export function registerDevices(parent: Command, ctx: CliContext): void {
  const devices = parent
    .command("devices")
    .description(
      "The device registry: each device's chip, partition table and flash-encryption key (owner-only files).",
    );

  devices
    .command("add")
    .description(
      "Register a device. Its id is its MAC (12 hex digits). Without --fe-key a new flash-encryption key is generated (the strongest the chip takes); save it with --save-fe-key to burn it into the device.",
    )
    .requiredOption("--registry <dir>", "registry directory (created 0700 if missing)")
    .requiredOption("--mac <mac>", "factory MAC, as `esptool read-mac` prints it")
    .requiredOption("--chip <chip>", "esptool chip name (esp32, esp32s3, ...)")
    .requiredOption("--partition-table <file>", "the device's partition table, CSV or binary")
    .option("--fe-key <file>", "import the device's existing flash-encryption key file")
    .option(
      "--save-fe-key <file>",
      "with a generated key: write it here (mode 0600, never overwritten) for `espefuse burn-key`",
    )
    .option(
      "--flash-crypt-conf <n>",
      "ESP32 only: the FLASH_CRYPT_CONFIG eFuse (default 0xF, what the bootloader burns)",
      parseIntArg,
    )
    .option(
      "--secure-version <n>",
      "the device's eFuse secure_version (anti-rollback; default 0)",
      parseIntArg,
    )
    .action((o: AddOptions) => {
      if (o.feKey && o.saveFeKey)
        throw new EspOtaError(
          "E_USAGE",
          "--save-fe-key is for generated keys; --fe-key imports one",
        );
      const reg = openRegistry(resolve(ctx.cwd, o.registry), { create: true });
      const key = o.feKey
        ? ctx.readFile(o.feKey)
        : generateFlashEncryptionKey(defaultFlashKeyBits(chipOf(o.chip)));
      const record = makeDeviceRecord({
        mac: o.mac,
        chip: o.chip,
        partitionTable: ctx.readFile(o.partitionTable),
        flashEncryptionKey: key,
        ...(o.flashCryptConf !== undefined ? { flashCryptConf: o.flashCryptConf } : {}),
        ...(o.secureVersion !== undefined ? { secureVersion: o.secureVersion } : {}),
        now: new Date(),
      });
      if (reg.has(record.deviceId))
        throw new EspOtaError(
          "E_DEVICE_EXISTS",
          `device ${record.deviceId} is already in the registry; remove it first (its key would be lost)`,
          { deviceId: record.deviceId },
        );
      // Save a generated key before registering, so no device is registered with a key nobody
      // can burn; createSecretFile refuses to overwrite an existing key file.
      if (!o.feKey && o.saveFeKey) ctx.createSecretFile(o.saveFeKey, key);
      reg.add(record);
      key.fill(0);
      ctx.print(`added ${describeDevice(record)}`);
      ctx.print(
        o.feKey
          ? `  flash-encryption key imported from ${o.feKey}`
          : o.saveFeKey
            ? `  flash-encryption key generated, saved to ${o.saveFeKey} (mode 0600): burn it, then delete or lock it away`
            : "  flash-encryption key generated (kept in the registry only)",
      );
    });

  devices
    .command("import")
    .description(
      "Register many devices from a CSV file, one per line: MAC,CHIP,PARTITION_TABLE,KEY_FILE[,FLASH_CRYPT_CONF[,SECURE_VERSION]] (paths relative to the CSV; # comments; an optional header line starting with 'mac').",
    )
    .requiredOption("--registry <dir>", "registry directory (created 0700 if missing)")
    .argument("<file>", "the CSV file")
    .action((file: string, o: { registry: string }) => {
      const reg = openRegistry(resolve(ctx.cwd, o.registry), { create: true });
      const base = dirname(resolve(ctx.cwd, file));
      const records: DeviceRecord[] = [];
      ctx
        .readText(file)
        .split(/\r?\n/)
        .forEach((line, i) => {
          const t = line.trim();
          if (t === "" || t.startsWith("#") || (i === 0 && /^mac\s*,/i.test(t))) return;
          const f = t.split(",").map((s) => s.trim());
          if (f.length < 4 || f.length > 6 || f.slice(0, 4).some((s) => s === ""))
            throw new EspOtaError(
              "E_REGISTRY_IMPORT",
              `${file} line ${i + 1}: expected MAC,CHIP,PARTITION_TABLE,KEY_FILE[,FLASH_CRYPT_CONF[,SECURE_VERSION]]`,
              { line: i + 1 },
            );
          const num = (s: string | undefined, what: string) => {
            if (s === undefined || s === "") return undefined;
            try {
              return parseIntArg(s);
            } catch {
              throw new EspOtaError(
                "E_REGISTRY_IMPORT",
                `${file} line ${i + 1}: ${what} "${s}" is not a number`,
                {
                  line: i + 1,
                },
              );
            }
          };
          const conf = num(f[4], "FLASH_CRYPT_CONF");
          const sv = num(f[5], "SECURE_VERSION");
          records.push(
            makeDeviceRecord({
              mac: f[0]!,
              chip: f[1]!,
              partitionTable: ctx.readFile(resolve(base, f[2]!)),
              flashEncryptionKey: ctx.readFile(resolve(base, f[3]!)),
              ...(conf !== undefined ? { flashCryptConf: conf } : {}),
              ...(sv !== undefined ? { secureVersion: sv } : {}),
              now: new Date(),
            }),
          );
        });
      // Every line is checked before anything is written: an import is all or nothing.
      const seen = new Set<string>();
      for (const r of records) {
        if (seen.has(r.deviceId) || reg.has(r.deviceId))
          throw new EspOtaError(
            "E_DEVICE_EXISTS",
            `device ${r.deviceId} is ${seen.has(r.deviceId) ? "listed twice" : "already in the registry"}; nothing imported`,
            { deviceId: r.deviceId },
          );
        seen.add(r.deviceId);
      }
      for (const r of records) reg.add(r);
      ctx.print(`imported ${records.length} device(s) into ${o.registry}`);
    });

  devices
    .command("list")
    .description("List registered devices (never their keys).")
    .requiredOption("--registry <dir>", "registry directory")
    .option("--json", "one JSON object per device, without the key")
    .action((o: { registry: string; json?: boolean }) => {
      const reg = openRegistry(resolve(ctx.cwd, o.registry));
      for (const r of reg.list()) {
        if (o.json) {
          const { flashEncryption, partitionTable: _table, ...rest } = r;
          ctx.print(
            JSON.stringify({
              ...rest,
              flashEncryption: {
                keyBits: (flashEncryption.key.length / 2) * 8,
                ...(flashEncryption.flashCryptConf !== undefined
                  ? { flashCryptConf: flashEncryption.flashCryptConf }
                  : {}),
              },
              slots: deviceOtaSlots(r).map((p) => ({
                label: p.label,
                offset: p.offset,
                size: p.size,
              })),
            }),
          );
        } else ctx.print(describeDevice(r));
      }
    });

  devices
    .command("remove")
    .description("Remove a device from the registry (its flash-encryption key is deleted with it).")
    .requiredOption("--registry <dir>", "registry directory")
    .argument("<id>", "device id (12 hex digits)")
    .action((id: string, o: { registry: string }) => {
      openRegistry(resolve(ctx.cwd, o.registry)).remove(id.toLowerCase());
      ctx.print(`removed ${id.toLowerCase()}`);
    });
}

/** The chip's esptool name (chipByName throws E_CHIP_UNKNOWN for anything else). */
function chipOf(name: string) {
  return chipByName(name).name;
}
