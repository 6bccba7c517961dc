/**
 * npm run bench:uart — UART OTA throughput in virtual time (deterministic): a 1.3 MB signed,
 * pre-encrypted image to an ESP32 with the flash timing model, for baud {115200, 921600,
 * 2000000} × turnaround latency {1, 16 ms} × receive path {ISR in IRAM + 48 KB ring, ISR not
 * in IRAM + 8 KB ring}; each against the physical limit and against esptool's stop-and-wait
 * shape. Last line: `uart-bench: min ratio to limit = X.XX`.
 */
import { RX_CONFIGS } from "../../src/uart/sim-endpoint.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { app, otaImage, security } from "../helpers/sim.js";
import { benchPoint, ptyTransferMs, virtualTransferMs } from "../uart/bench-core.js";

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
if (socatAvailable()) {
  // Real time over a pty at 921600: a 256 KB image, against the virtual figure for the same setup.
  const small = otaImage("esp32", security("esp32"), app("esp32", "3.0.0", 0x40000), 0x160000);
  const v = await virtualTransferMs(921600, small);
  const real = await ptyTransferMs(921600, small);
  console.log(
    `pty 921600 real time: ${small.length} bytes in ${(real / 1000).toFixed(2)} s (${((small.length * 8) / real).toFixed(0)} kbit/s); virtual ${(v / 1000).toFixed(2)} s; real/virtual = ${(real / v).toFixed(2)}`,
  );
} else console.log("pty 921600 real time: skipped (socat not installed)");
console.log(`uart-bench: min ratio to limit = ${min.toFixed(2)}`);
