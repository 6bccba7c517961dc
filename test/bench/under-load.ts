/**
 * `npm run test:under-load` (issue 13): the test suite, run RUNS times in a row (default 10)
 * while BUSY processes (default: one per core) spin on the CPU beside it, as on a busy CI
 * machine or a gateway doing other work. It prints one line per run (passed or failed, wall
 * time, failed files) and ends with `under-load: runs = N, passed = N, failed = N, median = X s`;
 * it exits 0 when every run passed. The busy loops are ended when it stops, however it stops.
 *
 *   RUNS=3 BUSY=2 npm run test:under-load
 *   RUNS=1 BUSY=4 npm run test:under-load -- test/agent   # a subset, more load
 *
 * Results are in docs/benchmarks.md ("Tests under load").
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";

const RUNS = Number(process.env.RUNS ?? 10);
const BUSY = Number(process.env.BUSY ?? availableParallelism());
const ROOT = new URL("../..", import.meta.url).pathname;
const extra = process.argv.slice(2);

if (!(Number.isInteger(RUNS) && RUNS > 0) || !(Number.isInteger(BUSY) && BUSY >= 0)) {
  console.error("under-load: RUNS must be a positive integer and BUSY a whole number");
  process.exit(2);
}

const busy: ChildProcess[] = [];
const stopBusy = () => {
  for (const b of busy) b.kill("SIGKILL");
  busy.length = 0;
};
process.on("exit", stopBusy);
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => {
    stopBusy();
    process.exit(130);
  });

for (let i = 0; i < BUSY; i++)
  busy.push(spawn(process.execPath, ["-e", "for(;;){}"], { stdio: "ignore" }));

interface VitestJson {
  numTotalTests: number;
  numFailedTests: number;
  testResults: { name: string; status: string }[];
}

const results: { ok: boolean; s: number }[] = [];
const dir = mkdtempSync(join(tmpdir(), "esp-ota-under-load-"));
try {
  for (let run = 1; run <= RUNS; run++) {
    const out = join(dir, `run-${run}.json`);
    const t0 = performance.now();
    const r = spawnSync(
      process.execPath,
      [
        join(ROOT, "node_modules/vitest/vitest.mjs"),
        "run",
        "--reporter=dot",
        "--reporter=json",
        `--outputFile.json=${out}`,
        ...extra,
      ],
      { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, CI: "true" } },
    );
    const s = (performance.now() - t0) / 1000;
    let failed: string[] = [];
    let tests = 0;
    try {
      const j = JSON.parse(readFileSync(out, "utf8")) as VitestJson;
      tests = j.numTotalTests;
      failed = j.testResults
        .filter((f) => f.status !== "passed")
        .map((f) => f.name.slice(ROOT.length));
    } catch {
      failed = ["(no report: vitest did not finish)"];
    }
    const ok = r.status === 0 && failed.length === 0;
    results.push({ ok, s });
    console.log(
      `run ${run}/${RUNS}: ${ok ? "passed" : "FAILED"} in ${s.toFixed(1)} s, ${tests} tests, ` +
        `load ${loadavg()[0]!.toFixed(1)}${failed.length ? `; failed: ${failed.join(", ")}` : ""}`,
    );
  }
} finally {
  stopBusy();
  rmSync(dir, { recursive: true, force: true });
}

const times = results.map((r) => r.s).sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)]!;
const passed = results.filter((r) => r.ok).length;
console.log(
  `under-load: runs = ${RUNS}, busy = ${BUSY}, passed = ${passed}, failed = ${RUNS - passed}, median = ${median.toFixed(1)} s`,
);
process.exitCode = passed === RUNS ? 0 : 1;
