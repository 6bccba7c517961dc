/**
 * npm run bench:sim — memory of a simulated fleet: provision 1,000 ESP32s (4 MB flash, Secure
 * Boot V1, flash encryption with a key per device, a 64 KB app) and boot each one. Target: under
 * 1 GB RSS. Sparse flash is what makes this fit: an untouched sector costs nothing.
 *
 * `npm run bench:sim -- 1000 uart` also puts the device side on each device's UART (a
 * FirmwareEndpoint: the C firmware as one WebAssembly instance, with its receive ring) on an
 * in-memory link, booted to its ANNOUNCE, and prints what it costs per device.
 * Last line: `sim-bench: devices = N, rss = N MB` (with `, uart per device = N KB`).
 */
import { generateFlashEncryptionKey } from "../../src/esp/flash-encryption.js";
import { parseSigningKey } from "../../src/esp/keys.js";
import { parsePartitionCsv } from "../../src/esp/partition-table.js";
import { DEMO_PARTITIONS } from "../../src/sim/demo.js";
import type { SimDevice } from "../../src/sim/device.js";
import { FirmwareEndpoint } from "../../src/sim/firmware-device.js";
import { memoryPair } from "../../src/sim/paced-link.js";
import { provisionDevice } from "../../src/sim/provision.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { makeSyntheticApp } from "../../src/sim/synthetic-app.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { fixture } from "../helpers/fixtures.js";

const count = Number(process.argv[2] ?? 1000);
const side = process.argv[3];
if (side !== undefined && side !== "uart") {
  console.error("usage: bench:sim [COUNT] [uart]");
  process.exit(2);
}
const partitions = parsePartitionCsv(DEMO_PARTITIONS);
const app = makeSyntheticApp({
  chip: "esp32",
  project: "fleet",
  version: "1.0.0",
  size: 64 * 1024,
});
const key = parseSigningKey(fixture("sbv1/sbv1_key.pem"));
const rss0 = process.memoryUsage().rss;
const t0 = performance.now();
const devices: SimDevice[] = [];
let booted = 0;
for (let i = 0; i < count; i++) {
  const d = provisionDevice({
    chip: "esp32",
    flashSize: 4 << 20,
    partitions,
    app,
    flashEncryption: { key: generateFlashEncryptionKey(256) },
    secureBoot: { version: 1, keys: [key] },
    mac: new Uint8Array([0x24, 0x0a, 0xc4, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff]),
  });
  if (d.powerOn().kind === "running") booted++;
  devices.push(d);
}
const seconds = (performance.now() - t0) / 1000;
global.gc?.();
const rss = process.memoryUsage().rss;
const sectors = devices.reduce((n, d) => n + d.flash.usedSectors, 0);
console.log(
  `provisioned and booted ${booted}/${count} devices in ${seconds.toFixed(1)} s (${((seconds * 1000) / count).toFixed(1)} ms each)`,
);
console.log(
  `flash in use: ${sectors} sectors = ${((sectors * 4096) / 2 ** 20).toFixed(1)} MB of ${count * 4} MB simulated`,
);
console.log(
  `rss before: ${(rss0 / 2 ** 20).toFixed(0)} MB, after: ${(rss / 2 ** 20).toFixed(0)} MB`,
);
let sideFigure = "";
if (side) {
  // Each device side on the end of an in-memory link, in virtual time, run to its ANNOUNCE.
  const t1 = performance.now();
  const held: unknown[] = [];
  let up = 0;
  for (const d of devices) {
    const sched = new VirtualScheduler();
    const port = memoryPair(115200).device;
    const ep = new FirmwareEndpoint(d, port, sched, { rx: RX_CONFIGS.iram });
    sched.run();
    if (ep.up) up++;
    held.push(ep, sched);
  }
  const ms = performance.now() - t1;
  global.gc?.();
  const rss2 = process.memoryUsage().rss;
  const perKb = (rss2 - rss) / count / 1024;
  console.log(
    `device side: ${up}/${count} up in ${(ms / 1000).toFixed(2)} s (${(ms / count).toFixed(2)} ms each), rss ${(rss2 / 2 ** 20).toFixed(0)} MB: ${perKb.toFixed(0)} KB per device`,
  );
  sideFigure = `, uart per device = ${Math.round(perKb)} KB`;
  // Held until the reading above; released now.
  held.length = 0;
}
console.log(`target rss < 1024 MB: ${rss < 2 ** 30 ? "PASS" : "FAIL"}`);
console.log(`sim-bench: devices = ${booted}, rss = ${Math.round(rss / 2 ** 20)} MB${sideFigure}`);
