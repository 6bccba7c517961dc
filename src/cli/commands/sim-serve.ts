/**
 * `esp-ota sim serve`: attach a simulated ESP32 (a state file) to a pseudo-terminal or a serial
 * port, running the UART OTA device side in real time, so any tool can talk to it
 * (docs/uart-protocol.md §8). The state is saved when it stops.
 */
import { realpathSync } from "node:fs";
import { type Command, Option } from "commander";
import { TIMER_MAX_MS } from "../../duration.js";
import { EspOtaError } from "../../errors.js";
import { SimDevice } from "../../sim/device.js";
import { FaultPort, parseFaults } from "../../sim/fault-port.js";
import { FirmwareEndpoint } from "../../sim/firmware-device.js";
import { OrderedTimers } from "../../sim/ordered-timers.js";
import { PacedLink } from "../../sim/paced-link.js";
import { attachRomLoader } from "../../sim/rom-loader.js";
import { RX_CONFIGS } from "../../sim/rx-model.js";
import type { BytePort } from "../../uart/port.js";
import { SerialBytePort } from "../../uart/serial-port.js";
import { openPtyPair, type PtyPair } from "../../uart/socat.js";
import { durationArg, parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

export function registerSimServe(parent: Command, ctx: CliContext): void {
  parent
    .command("serve")
    .description(
      "Attach a simulated ESP32 to a pseudo-terminal (--pty, prints its path) or a serial port, and serve the UART OTA protocol in real time until interrupted.",
    )
    .requiredOption("--state <file>", "device state file (saved again on exit)")
    .option("--pty", "create a pseudo-terminal pair with socat and print the host end's path")
    .option("--port <path>", "an existing serial port or pty end to attach to")
    .option("--baud <rate>", "console baud rate the device boots into", parseIntArg, 115200)
    .addOption(
      new Option(
        "--fault <options>",
        "faults on the device's link: ber=1e-6,drop=0.01,dropbyte=0,garbage=0.01,latency=16",
      ).argParser(parseFaults),
    )
    .option(
      "--rx <config>",
      "receive path: iram (ISR in IRAM, 48 KB ring) or no-iram (ESP-IDF default, 8 KB ring)",
      "iram",
    )
    .option(
      "--boot <mode>",
      "normal (boot the app) or download (GPIO0 held low: the ROM serial loader, for esptool or `esp-ota rom`; docs/rom-protocol.md)",
      "normal",
    )
    .option(
      "--duration <time>",
      "stop after this long, e.g. 30s (default: until SIGINT/SIGTERM)",
      durationArg(TIMER_MAX_MS),
    )
    .action(async (o) => {
      if (!o.pty === !o.port)
        throw new EspOtaError("E_USAGE", "give exactly one of --pty and --port");
      if (o.boot !== "normal" && o.boot !== "download")
        throw new EspOtaError("E_USAGE", `--boot ${o.boot}: expected normal or download`);
      if (o.rx !== "iram" && o.rx !== "no-iram")
        throw new EspOtaError("E_USAGE", `--rx ${o.rx}: expected iram or no-iram`);
      // A VirtualClock (deserialize's default) on real timers, as serveFleet runs its devices:
      // the device side (FirmwareEndpoint) waits out the flash's busy time on `timers`, so the device's frames, its
      // boot log and the link's deliveries all fire from one queue, in due order.
      const dev = SimDevice.deserialize(ctx.readFile(o.state));
      const timers = new OrderedTimers();
      let pair: PtyPair | undefined;
      let path: string = o.port;
      if (o.pty) {
        pair = await openPtyPair();
        path = pair.device;
      }
      const serial = await SerialBytePort.open(path, o.baud);
      // A pty has no wire: pace it at the baud rate so it behaves like a UART (one 1 ms slice
      // at a time, in order; src/sim/paced-link.ts). A real UART paces itself.
      let port: BytePort = isPseudoTerminal(path)
        ? new PacedLink(serial, timers, { baud: o.baud })
        : serial;
      if (o.fault) port = new FaultPort(port, timers, o.fault);
      const startApp = () =>
        new FirmwareEndpoint(dev, port, timers, {
          rx: o.rx === "iram" ? RX_CONFIGS.iram : RX_CONFIGS.noIram,
        }).powerOn();
      if (o.boot === "download") {
        // The ROM answers until FLASH_END (esptool --after soft-reset), then the app boots on
        // the same port, as a chip does when the ROM jumps to user code.
        attachRomLoader(dev, port, {
          banner: true,
          onExit: () => {
            ctx.note("sim serve: the ROM left download mode; booting");
            // The app's console starts at the boot rate, whatever CHANGE_BAUDRATE set.
            port.setBaud(o.baud);
            startApp();
          },
        });
      } else startApp();
      ctx.print(pair ? pair.host : path);
      ctx.note(
        `sim serve: ${dev.spec.chip} ${dev.id} on ${pair ? pair.host : path} at ${o.baud} baud`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.removeListener("SIGINT", stop);
          process.removeListener("SIGTERM", stop);
          clearTimeout(timer);
          resolve();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        const timer = o.duration !== undefined ? setTimeout(stop, o.duration) : undefined;
      });
      port.close();
      timers.close();
      pair?.close();
      ctx.writeFile(o.state, dev.serialize());
      ctx.note(`sim serve: stopped; state saved to ${o.state}`);
    });
}

/**
 * A pty's device end (Linux: /dev/pts/N, which a socat link resolves to). Unlike a real UART it
 * moves bytes at memory speed and must not have its rate set (that flushes it).
 */
function isPseudoTerminal(path: string): boolean {
  try {
    return realpathSync(path).startsWith("/dev/pts/");
  } catch {
    return false;
  }
}
