/**
 * `npm run bench:startup`: what `esp-ota` costs before it does anything, against `node -e 0` on the
 * same machine in the same run (docs/benchmarks.md "CLI start-up"). Issue 13 item 7: every command
 * module used to load at start, and `esp-ota --version` took 9 times `node -e 0`.
 *
 * Method: each case runs the built binary (dist/agent/main.js; `npm run build` first) as a child
 * process. Wall time is measured around the spawn; CPU time is the child's own user + system time
 * (process.cpuUsage() at its exit, reported by a one-line --import preload that every case,
 * the baseline included, carries). Cases are interleaved round by round after warm-up, so a
 * frequency change or a burst of other work hits all alike; medians of ROUNDS rounds.
 *
 * Prints one line per case with both ratios, then one line per target (within 2.5 times
 * `node -e 0`, wall and CPU, for `--version` and `secure --help`); exits 1 if one fails.
 * Usage: tsx test/bench/startup.ts [DIST_DIR]
 */
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const MAIN = join(resolve(process.argv[2] ?? join(ROOT, "dist")), "agent/main.js");
const ROUNDS = 15;
const WARMUP = 2;
const TARGET = 2.5;

const MARK = "\u0000cpu-us=";
const PRELOAD = `data:text/javascript,${encodeURIComponent(
  `process.on("exit", () => { const u = process.cpuUsage(); process.stderr.write(${JSON.stringify(MARK)} + (u.user + u.system) + "\\n"); });`,
)}`;

interface Case {
  name: string;
  args: string[];
  target: boolean;
}
const CASES: Case[] = [
  { name: "node -e 0", args: ["-e", "0"], target: false },
  { name: "esp-ota --version", args: [MAIN, "--version"], target: true },
  { name: "esp-ota secure --help", args: [MAIN, "secure", "--help"], target: true },
  { name: "esp-ota --help", args: [MAIN, "--help"], target: false },
  { name: "esp-ota agent --help", args: [MAIN, "agent", "--help"], target: false },
];

function once(c: Case): { wallMs: number; cpuMs: number } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, ["--import", PRELOAD, ...c.args], {
    encoding: "utf8",
    stdio: ["ignore", "ignore", "pipe"],
  });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const m = r.stderr.split(MARK)[1];
  if (r.status !== 0 || m === undefined)
    throw new Error(`${c.name}: exit ${r.status}\n${r.stderr.slice(0, 2000)}`);
  return { wallMs, cpuMs: Number.parseInt(m, 10) / 1000 };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const samples = CASES.map(() => ({ wall: [] as number[], cpu: [] as number[] }));
for (let round = 0; round < WARMUP + ROUNDS; round++) {
  CASES.forEach((c, i) => {
    const r = once(c);
    if (round < WARMUP) return;
    samples[i]!.wall.push(r.wallMs);
    samples[i]!.cpu.push(r.cpuMs);
  });
}

console.log(
  `CLI start-up, ${MAIN}, node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? "?"}; median of ${ROUNDS} rounds`,
);
const base = { wall: median(samples[0]!.wall), cpu: median(samples[0]!.cpu) };
let failed = 0;
const lines: string[] = [];
CASES.forEach((c, i) => {
  const wall = median(samples[i]!.wall);
  const cpu = median(samples[i]!.cpu);
  const rw = wall / base.wall;
  const rc = cpu / base.cpu;
  console.log(
    `${c.name.padEnd(24)} wall ${wall.toFixed(1).padStart(6)} ms (${rw.toFixed(2)}x)   cpu ${cpu.toFixed(1).padStart(6)} ms (${rc.toFixed(2)}x)`,
  );
  if (c.target) {
    const ok = rw <= TARGET && rc <= TARGET;
    if (!ok) failed++;
    lines.push(
      `target ${c.name} within ${TARGET}x node -e 0 (wall ${rw.toFixed(2)}x, cpu ${rc.toFixed(2)}x): ${ok ? "met" : "MISSED"}`,
    );
  }
});
for (const l of lines) console.log(l);
process.exitCode = failed === 0 ? 0 : 1;
