/**
 * npm run bench:uart — UART OTA throughput in virtual time (deterministic): a 1.3 MB signed,
 * pre-encrypted image to an ESP32 with the flash timing model, for baud {115200, 921600,
 * 2000000} × turnaround latency {1, 16 ms} × receive path {ISR in IRAM + 48 KB ring, ISR not
 * in IRAM + 8 KB ring}; each against the physical limit and against esptool's stop-and-wait
 * shape. Then real time through `sim serve --pty` at 115200, 230400, 460800 and 921600 (needs
 * socat), against the wire's limit: `uart-bench: real-time min ratio to wire = X.XX` (target
 * 0.9). Last line: `uart-bench: min ratio to limit = X.XX`.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../../src/cli/program.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";
import { startSimServe } from "../helpers/sim-serve.js";
import { benchPoint } from "../uart/bench-core.js";

const size = 0x140000 - 0x1000; // 1.3 MB once signed (Secure Boot V1 adds its signature block)
const image = otaImage("esp32", security("esp32"), app("esp32", "2.0.0", size), 0x160000);
const rows: string[] = [];
let min = Number.POSITIVE_INFINITY;
console.log(
  `image ${image.length} bytes; times are transfer only (BEGIN → last byte in flash), virtual`,
);
console.log(
  "baud     lat  rx       time s  kbit/s  limit s  ratio  lost | stop-and-wait s  kbit/s  ratio",
);
for (const baud of [115200, 921600, 2000000]) {
  for (const lat of [1, 16]) {
    for (const [name, rx] of [
      ["iram", RX_CONFIGS.iram],
      ["no-iram", RX_CONFIGS.noIram],
    ] as const) {
      const p = await benchPoint(baud, lat, name, rx, image);
      min = Math.min(min, p.ratio);
      const line = [
        String(baud).padEnd(8),
        `${lat}`.padStart(3),
        ` ${name.padEnd(8)}`,
        (p.ms / 1000).toFixed(2).padStart(7),
        p.kbitPerS.toFixed(0).padStart(7),
        (p.limitMs / 1000).toFixed(2).padStart(8),
        p.ratio.toFixed(3).padStart(6),
        String(p.lost).padStart(5),
        " |",
        (p.stopAndWaitMs / 1000).toFixed(2).padStart(16),
        p.stopAndWaitKbitPerS.toFixed(0).padStart(7),
        p.stopAndWaitRatio.toFixed(3).padStart(6),
      ].join(" ");
      rows.push(line);
      console.log(line);
    }
  }
}
// Real time, exactly the documented path (docs/uart-protocol.md §10): `sim serve --pty` in a
// process of its own, `esp-ota device flash` through its pty (in this process), at each rate.
// The figure is the image's bytes over BEGIN → last byte in flash, against the wire's limit of
// baud/10 bytes a second (the frames' 10 bytes per 4 KB and the flash time are in the excess).
let realMin = Number.POSITIVE_INFINITY;
if (socatAvailable()) {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-bench-uart-"));
  const state = join(dir, "dev.sim");
  const sec = security("esp32");
  const dev = makeDevice("esp32", sec);
  writeFileSync(state, dev.serialize());
  const served = await startSimServe(state);
  try {
    console.log("real time: sim serve --pty (own process) + device flash, 256 KB app");
    console.log("baud      bytes  time s  kbit/s  wire s  ratio to wire");
    for (const [i, baud] of [115200, 230400, 460800, 921600].entries()) {
      const offset = i % 2 === 0 ? 0x160000 : 0x10000;
      const image = otaImage("esp32", sec, app("esp32", `${i + 3}.0.0`, 0x40000), offset);
      const file = join(dir, `app-${i}.bin`);
      writeFileSync(file, image);
      const at = new Map<string, number>();
      let err = "";
      const run = await runCli(
        [
          "device",
          "flash",
          "--port",
          served.pty,
          "--offset",
          `0x${offset.toString(16)}`,
          "--baud",
          String(baud),
          file,
        ],
        { write: () => undefined },
        {
          write: (text: string) => {
            err += text;
            // The CLI notes each phase as it enters it: "begin", then "end" once the last byte
            // is acknowledged in flash.
            for (const line of text.split("\n"))
              if (line === "begin" || line === "end") at.set(line, performance.now());
          },
        },
        dir,
      );
      if (run !== 0) throw new Error(`device flash at ${baud} failed:\n${err.slice(-2000)}`);
      const ms = at.get("end")! - at.get("begin")!;
      const wireMs = (image.length * 10_000) / baud;
      realMin = Math.min(realMin, wireMs / ms);
      console.log(
        [
          String(baud).padEnd(8),
          String(image.length).padStart(7),
          (ms / 1000).toFixed(2).padStart(7),
          ((image.length * 8) / ms).toFixed(0).padStart(7),
          (wireMs / 1000).toFixed(2).padStart(7),
          (wireMs / ms).toFixed(3).padStart(14),
        ].join(" "),
      );
    }
  } finally {
    await served.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`uart-bench: real-time min ratio to wire = ${realMin.toFixed(2)}`);
} else console.log("real time: skipped (socat not installed)");
console.log(`uart-bench: min ratio to limit = ${min.toFixed(2)}`);
