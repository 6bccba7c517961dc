/**
 * npm run sweep:power-cut — the full power-cut sweep: an ESP32 with Secure Boot V1 and flash
 * encryption takes a 1.3 MB signed, encrypted OTA; the update is rerun with a power cut in every
 * one of its flash operations (plus double cuts during recovery for a sample), and after each the
 * device must boot a verified app, old or new, and accept the retried update.
 * Options: [appBytes] [doubleCutEvery]. Last line: `power-cut: operations = N, tried = N, unbootable = N`.
 */
import { otaAppPartitions } from "../../src/esp/partition-table.js";
import { runPowerCutSweep } from "../../src/sim/power-cut.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";

const size = Math.round(Number(process.argv[2] ?? 1.3 * 2 ** 20));
const doubleCutEvery = Number(process.argv[3] ?? 50);
const chip = (process.argv[4] ?? "esp32") as "esp32" | "esp32s3";
const sec = security(chip);
const base = makeDevice(chip, sec, { app: app(chip, "1.0.0", size) });
base.powerOn();
const slot = otaAppPartitions(base.partitions)[1]!;
const ciphertext = otaImage(chip, sec, app(chip, "2.0.0", size), slot.offset);
console.log(
  `${chip}, Secure Boot V${sec.secureBoot.version}, flash encryption; OTA of ${ciphertext.length} bytes into ${slot.label} @0x${slot.offset.toString(16)}`,
);
const t0 = performance.now();
let last = 0;
const report = runPowerCutSweep({
  base,
  ciphertext,
  slot,
  oldVersion: "1.0.0",
  newVersion: "2.0.0",
  doubleCutEvery,
  onProgress: (done, total) => {
    const pct = Math.floor((done / total) * 20) * 5;
    if (pct !== last) {
      last = pct;
      const s = (performance.now() - t0) / 1000;
      console.log(`  ${pct}% (${done}/${total} cut points, ${s.toFixed(0)} s)`);
    }
  },
});
const seconds = (performance.now() - t0) / 1000;
console.log(`flash operations in one update: ${report.operations}`);
console.log(
  `runs: ${report.tried} (${report.doubleCuts} with a second cut during recovery), ${seconds.toFixed(0)} s`,
);
console.log(
  `after the cut: booted old app ${report.bootedOld} (all retried), booted new app ${report.bootedNew}`,
);
for (const f of report.failures.slice(0, 20))
  console.log(`  FAILURE at cut ${f.cut}${f.second ? `+${f.second}` : ""}: ${f.reason}`);
console.log(
  `power-cut: operations = ${report.operations}, tried = ${report.tried}, unbootable = ${report.unbootable}, failures = ${report.failures.length}`,
);
process.exitCode = report.failures.length === 0 ? 0 : 1;
