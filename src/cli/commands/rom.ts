/**
 * `esp-ota rom`: talk to an ESP32's ROM serial loader as esptool does (docs/rom-protocol.md):
 * read-mac, chip-id, security-info, write-flash, erase-region. The work is in src/rom/host.ts;
 * this file parses options, opens the port and prints.
 */
import { type Command, Option } from "commander";
import { EspOtaError } from "../../errors.js";
import { formatMac } from "../../rom/chips.js";
import { type ChipInfo, DEFAULT_CONNECT_ATTEMPTS, RomHost } from "../../rom/host.js";
import { SECURITY_FLAG } from "../../rom/protocol.js";
import type { BeforeMode } from "../../rom/reset.js";
import type { SimChip } from "../../sim/efuse.js";
import { realTimers } from "../../uart/scheduler.js";
import { SerialBytePort } from "../../uart/serial-port.js";
import { choice, parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

/** The ROM's own rate after reset (it autobauds on SYNC; esptool's ESP_ROM_BAUD). */
const ROM_BAUD = 115200;
type AfterMode = "hard-reset" | "soft-reset" | "no-reset";

interface CommonOpts {
  port: string;
  baud: number;
  chip?: SimChip;
  before: BeforeMode;
  after: AfterMode;
  connectAttempts: number;
}

function common(cmd: Command): Command {
  return cmd
    .requiredOption(
      "--port <path>",
      "serial port (a USB-serial adapter, or a pty with --before no-reset)",
    )
    .option(
      "--baud <rate>",
      "rate to switch to after connecting (CHANGE_BAUDRATE); the ROM starts at 115200",
      parseIntArg,
      ROM_BAUD,
    )
    .option(
      "--chip <chip>",
      "expected chip: esp32 or esp32s3 (default: detect)",
      choice(["esp32", "esp32s3"] as const),
    )
    .addOption(
      new Option(
        "--before <mode>",
        "how to enter download mode: the DTR/RTS auto-reset circuit, the USB-Serial/JTAG port's sequence, or none (already in download mode; a pty)",
      )
        .choices(["default-reset", "usb-reset", "no-reset"])
        .default("default-reset"),
    )
    .option(
      "--after <mode>",
      "hard-reset (pulse EN through RTS), soft-reset (FLASH_END: run the app), no-reset (stay in the loader)",
      choice(["hard-reset", "soft-reset", "no-reset"] as const),
      "hard-reset",
    )
    .option(
      "--connect-attempts <n>",
      "connect attempts, each a reset and 5 SYNCs, as esptool makes",
      parseIntArg,
      DEFAULT_CONNECT_ATTEMPTS,
    );
}

async function session<T>(
  ctx: CliContext,
  o: CommonOpts,
  work: (host: RomHost, info: ChipInfo) => Promise<T>,
): Promise<T> {
  // hupcl off: closing must not drop DTR/RTS and reset the chip out of what we left it in.
  const port = await SerialBytePort.open(o.port, Math.min(ROM_BAUD, o.baud), { hupcl: false });
  const host = new RomHost(port, {
    timers: realTimers,
    setSignals: (l) => port.setSignals(l),
    log: (l) => ctx.note(l),
  });
  try {
    ctx.note(`connecting to ${o.port}...`);
    const info = await host.connect({
      before: o.before,
      attempts: o.connectAttempts,
      chip: o.chip,
    });
    ctx.note(`chip is ${info.description}${info.secureDownload ? " (Secure Download Mode)" : ""}`);
    if (o.baud > ROM_BAUD) await host.changeBaud(o.baud);
    const r = await work(host, info);
    if (o.after === "soft-reset") await host.softReset();
    else if (o.after === "hard-reset") {
      if (!(await host.hardReset())) ctx.note("warning: no modem lines: chip not reset");
    } else ctx.note("staying in the ROM loader");
    await port.drain();
    return r;
  } finally {
    port.close();
  }
}

export function registerRom(program: Command, ctx: CliContext): void {
  const rom = program
    .command("rom")
    .description("Talk to the ESP32 ROM serial loader as esptool does: read-mac, write-flash, ...");

  common(
    rom.command("read-mac").description("Print the chip's base MAC address (from eFuse)"),
  ).action(async (o: CommonOpts) => {
    const mac = await session(ctx, o, (h) => h.readMac());
    ctx.print(formatMac(mac));
  });

  common(rom.command("chip-id").description("Detect the chip and print what it is")).action(
    async (o: CommonOpts) => {
      const info = await session(ctx, o, async (_h, i) => i);
      ctx.print(
        JSON.stringify({
          chip: info.chip.name,
          description: info.description,
          chipId: info.securityInfo?.chipId ?? null,
          mac: info.mac ? formatMac(info.mac) : null,
          crystalMhz: info.crystalMhz ?? null,
          secureDownloadMode: info.secureDownload,
        }),
      );
    },
  );

  common(
    rom
      .command("security-info")
      .description("GET_SECURITY_INFO: security flags, FLASH_CRYPT_CNT, key purposes"),
  ).action(async (o: CommonOpts) => {
    const info = await session(ctx, o, async (_h, i) => i);
    const s = info.securityInfo;
    if (!s)
      throw new EspOtaError(
        "E_ROM_COMMAND",
        `${info.description}'s ROM has no GET_SECURITY_INFO (ESP32-S2 and later do)`,
      );
    ctx.print(
      JSON.stringify({
        flags: s.flags,
        set: Object.entries(SECURITY_FLAG)
          .filter(([, bit]) => (s.flags & bit) !== 0)
          .map(([name]) => name),
        flashCryptCnt: s.flashCryptCnt,
        keyPurposes: s.keyPurposes,
        chipId: s.chipId ?? null,
        apiVersion: s.apiVersion ?? null,
      }),
    );
  });

  common(
    rom
      .command("write-flash")
      .description(
        "Write a file to flash at an address (verified by SPI_FLASH_MD5 unless Secure Download Mode)",
      )
      .argument("<address>", "flash address (0x hex)", parseIntArg)
      .argument("<file>", "binary to write"),
  )
    .option("--compress", "send it deflated (FLASH_DEFL_*), as esptool --compress")
    .option("--no-verify", "skip the MD5 check after writing")
    .option(
      "--flash-size <size>",
      "tell the ROM the flash size (SPI_SET_PARAMS), e.g. 4M; needed past 2 MB in Secure Download Mode",
      parseIntArg,
    )
    .option(
      "--encrypt",
      "ask the ROM to encrypt as it writes (chips whose FLASH_BEGIN takes the flag; not the ESP32)",
    )
    .action(
      async (
        address: number,
        file: string,
        o: CommonOpts & {
          compress?: boolean;
          verify: boolean;
          flashSize?: number;
          encrypt?: boolean;
        },
      ) => {
        const data = ctx.readFile(file);
        const r = await session(ctx, o, async (h) => {
          await h.spiAttach();
          if (o.flashSize !== undefined) await h.spiSetParams(o.flashSize);
          if (!o.encrypt && (await h.flashEncryptionEnabled()))
            ctx.note(
              "warning: flash encryption is on and the data is written raw: it must already be ciphertext for this address",
            );
          return h.writeFlash(address, data, {
            compress: o.compress ?? false,
            verify: o.verify,
            encrypt: o.encrypt,
          });
        });
        ctx.print(
          `wrote ${r.written} bytes at 0x${address.toString(16)}${r.compressed !== undefined ? ` (${r.compressed} compressed)` : ""}; ${r.verified ? `hash of data verified (${r.md5})` : "not verified"}`,
        );
      },
    );

  common(
    rom
      .command("erase-region")
      .description(
        "Erase a 4 KB-aligned flash region (FLASH_BEGIN with no data: the ROM erases at begin)",
      )
      .argument("<address>", "start (multiple of 0x1000)", parseIntArg)
      .argument("<size>", "length (multiple of 0x1000)", parseIntArg),
  )
    .option("--force", "erase even with flash encryption or secure boot on")
    .action(async (address: number, size: number, o: CommonOpts & { force?: boolean }) => {
      await session(ctx, o, async (h) => {
        await h.spiAttach();
        await h.eraseRegion(address, size, { force: o.force });
      });
      ctx.print(`erased 0x${size.toString(16)} bytes at 0x${address.toString(16)}`);
    });
}
