import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Crypto over 1.3 MB fixtures and CLI runs take seconds on the 2-core CI machines.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
  },
});
