/**
 * The C firmware (wasm) under a power cut at every flash operation of a whole UART OTA, on an
 * ESP32 and an ESP32-S3: count the operations of a clean OTA, then one run per operation with
 * power cut half-way through it (test/firmware/harness.ts powerCutRun). Each run must end with
 * the new app confirmed and the slot byte-identical. `npx tsx
 * test/tools/sweep-firmware-power-cut.ts [EVERY]` tries every EVERY-th operation (default 1).
 * Last line: `firmware-power-cut: N runs, N confirmed, N failed`.
 */
import type { SimChip } from "../../src/sim/efuse.js";
import { powerCutRun } from "../firmware/harness.js";
import { makeDevice, security } from "../helpers/sim.js";
import { nextImage } from "../uart/harness.js";

const every = Math.max(1, Number(process.argv[2] ?? 1) || 1);
let runs = 0;
let ok = 0;
const failed: string[] = [];
for (const chip of ["esp32", "esp32s3"] as SimChip[]) {
  const img = nextImage(chip, "2.0.0", 0xa000);
  const base = makeDevice(chip, security(chip));
  const clean = await powerCutRun(base, chip, img, undefined);
  if (!clean.confirmed)
    throw new Error(`${chip}: the clean OTA did not confirm (${clean.codes.join(", ")})`);
  const t0 = performance.now();
  let sessions = 0;
  for (let op = 1; op <= clean.ops; op += every) {
    const r = await powerCutRun(base, chip, img, op);
    runs++;
    sessions += r.codes.length + (r.confirmed ? 1 : 0);
    if (r.confirmed && r.runsNew && r.slotOk && r.codes.every((c) => c.startsWith("E_UART_"))) ok++;
    else failed.push(`${chip} op ${op}: ${JSON.stringify(r)}`);
  }
  console.log(
    `${chip}: ${clean.ops} flash operations in a ${img.length}-byte OTA; cut at every ${every === 1 ? "" : `${every}th `}one: ` +
      `${Math.ceil(clean.ops / every)} runs, ${(sessions / Math.ceil(clean.ops / every)).toFixed(2)} sessions each, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}
for (const f of failed) console.log(`FAILED ${f}`);
console.log(`firmware-power-cut: ${runs} runs, ${ok} confirmed, ${failed.length} failed`);
if (failed.length > 0) process.exitCode = 1;
