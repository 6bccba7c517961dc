/**
 * npm run sweep:power-cut — the full power-cut sweep, through the device side that ships: a UART
 * OTA from the real host (HostSession, as `esp-ota device flash` runs it) into the C firmware
 * (wasm, FirmwareEndpoint) of an ESP32 (Secure Boot V1, flash encryption) and of an ESP32-S3
 * (Secure Boot V2 RSA, XTS-AES-256), 2 Mbaud, ISR in IRAM. A clean OTA counts its flash
 * operations (slot erases and programs, the progress record, otadata at ACTIVATE, the
 * bootloader's and the new app's otadata writes after the reboot); then one run per operation
 * with the power cut half-way through it, power back after, and the host retrying sessions as
 * the gateway does (test/firmware/harness.ts powerCutRun). Every run must end with the new app
 * confirmed VALID and the slot byte-identical.
 * Options: [imageBytes = 262144] [every = 1] (every N-th operation). Last line:
 * `power-cut: operations = N, tried = N, unbootable = N, failures = N`.
 *
 * `npm run sweep:power-cut -- api [appBytes] [doubleCutEvery] [chip]`: the ESP-IDF API alone
 * (src/sim/power-cut.ts: an app erasing, writing raw and activating, no UART), with double cuts
 * during recovery: the simulator's boot and otadata rules under cuts, without a device side.
 */
import { otaAppPartitions } from "../../src/esp/partition-table.js";
import type { SimChip } from "../../src/sim/efuse.js";
import { runPowerCutSweep } from "../../src/sim/power-cut.js";
import { powerCutRun } from "../firmware/harness.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";
import { nextImage } from "../uart/harness.js";

async function uartSweep(size: number, every: number): Promise<void> {
  let operations = 0;
  let tried = 0;
  let unbootable = 0;
  const failures: string[] = [];
  for (const chip of ["esp32", "esp32s3"] as SimChip[]) {
    const img = nextImage(chip, "2.0.0", size);
    const base = makeDevice(chip, security(chip));
    const clean = await powerCutRun(base, chip, img, undefined);
    if (!clean.confirmed)
      throw new Error(`${chip}: the clean OTA did not confirm (${clean.codes.join(", ")})`);
    operations += clean.ops;
    const t0 = performance.now();
    let sessions = 0;
    let runs = 0;
    let last = 0;
    for (let op = 1; op <= clean.ops; op += every) {
      const r = await powerCutRun(base, chip, img, op);
      runs++;
      sessions += r.codes.length + (r.confirmed ? 1 : 0);
      if (!r.runsNew && !r.confirmed) unbootable++;
      if (!(r.confirmed && r.runsNew && r.slotOk && r.codes.every((c) => c.startsWith("E_UART_"))))
        failures.push(`${chip} op ${op}: ${JSON.stringify(r)}`);
      const pct = Math.floor((op / clean.ops) * 10) * 10;
      if (pct !== last) {
        last = pct;
        console.log(
          `  ${chip} ${pct}% (${op}/${clean.ops}, ${((performance.now() - t0) / 1000).toFixed(0)} s)`,
        );
      }
    }
    tried += runs;
    console.log(
      `${chip}: ${clean.ops} flash operations in a ${img.length}-byte UART OTA; ${runs} runs, ` +
        `${(sessions / runs).toFixed(2)} sessions each, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
  }
  for (const f of failures.slice(0, 20)) console.log(`  FAILURE ${f}`);
  console.log(
    `power-cut: operations = ${operations}, tried = ${tried}, unbootable = ${unbootable}, failures = ${failures.length}`,
  );
  process.exitCode = failures.length === 0 ? 0 : 1;
}

function apiSweep(argv: string[]): void {
  const size = Math.round(Number(argv[0] ?? 1.3 * 2 ** 20));
  const doubleCutEvery = Number(argv[1] ?? 50);
  const chip = (argv[2] ?? "esp32") as "esp32" | "esp32s3";
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
}

if (process.argv[2] === "api") apiSweep(process.argv.slice(3));
else
  await uartSweep(
    Math.round(Number(process.argv[2] ?? 256 * 1024)),
    Math.max(1, Number(process.argv[3] ?? 1) || 1),
  );
