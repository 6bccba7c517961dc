/**
 * `esp-ota sim serve`: attach a simulated ESP32 (a state file) to a pseudo-terminal or a serial
 * port, running the UART OTA device side in real time, so any tool can talk to it
 * (docs/uart-protocol.md §8). The state is saved when it stops.
 */
import { type Command, Option } from "commander";
import { EspOtaError } from "../../errors.js";
import { RealClock } from "../../sim/clock.js";
import { SimDevice } from "../../sim/device.js";
import { FaultPort, parseFaults } from "../../uart/fault-port.js";
import { PacedPort } from "../../uart/paced-port.js";
import type { BytePort } from "../../uart/port.js";
import { realTimers } from "../../uart/scheduler.js";
import { SerialBytePort } from "../../uart/serial-port.js";
import { RX_CONFIGS, SimEndpoint } from "../../uart/sim-endpoint.js";
import { openPtyPair, type PtyPair } from "../../uart/socat.js";
import { parseIntArg } from "../args.js";
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
    .option(
      "--baud <rate>",
      "console baud rate the device boots into (default 115200)",
      parseIntArg,
      115200,
    )
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
    .option("--duration <ms>", "stop after this long (default: until SIGINT/SIGTERM)", parseIntArg)
    .action(async (o) => {
      if (!o.pty === !o.port)
        throw new EspOtaError("E_USAGE", "give exactly one of --pty and --port");
      if (o.rx !== "iram" && o.rx !== "no-iram")
        throw new EspOtaError("E_USAGE", `--rx ${o.rx}: expected iram or no-iram`);
      const dev = SimDevice.deserialize(ctx.readFile(o.state), new RealClock());
      let pair: PtyPair | undefined;
      let path: string = o.port;
      if (o.pty) {
        pair = await openPtyPair();
        path = pair.device;
      }
      const serial = await SerialBytePort.open(path, o.baud);
      // A pty has no wire: pace it at the baud rate so it behaves like a UART.
      let port: BytePort = new PacedPort(serial, realTimers);
      if (o.fault) port = new FaultPort(port, realTimers, o.fault);
      const ep = new SimEndpoint(dev, port, realTimers, {
        rx: o.rx === "iram" ? RX_CONFIGS.iram : RX_CONFIGS.noIram,
      });
      ep.powerOn();
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
      serial.close();
      pair?.close();
      ctx.writeFile(o.state, dev.serialize());
      ctx.note(`sim serve: stopped; state saved to ${o.state}`);
    });
}
