import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Crypto over 1.3 MB fixtures and CLI runs take seconds on the 2-core CI machines.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    setupFiles: ["test/setup.ts"],
    // Test files share their worker's module cache instead of re-importing every module per
    // file: on the 2-core CI machine isolation cost about 50 s of CPU per run (2m06 s of user
    // time against 1m18 s without), a third of the suite. No test file relies on a fresh module
    // graph; the few that change process-wide state (timers, env) restore it in afterEach.
    isolate: false,
    // Two test files at once on the 2-core machines (Vitest's default there is one): most of the
    // suite's wall time is real-time tests waiting on timers, processes and sockets, which overlap
    // well. One worker took 243 s, two 152 s, beside other jobs (load 4-5); docs/benchmarks.md
    // "Tests under load" has the figures and the 10-run check beside busy loops.
    maxWorkers: 2,
  },
});
