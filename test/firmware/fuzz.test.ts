/**
 * A short libFuzzer run (ASan + UBSan) over the firmware core's parser and dispatcher
 * (test/firmware/fuzz_core.c, whose port checks what the core asks of the flash and the
 * wire). npm run fuzz:firmware runs it longer. Skipped, saying so, without clang-14's
 * libFuzzer; under CI=true that fails.
 */
import { describe, expect, it } from "vitest";
import { haveFuzzToolchain, runFuzz } from "../tools/fuzz-firmware.js";

const have = haveFuzzToolchain();
const ci = process.env.CI === "true";
if (!have && !ci)
  console.warn(
    "firmware fuzz test skipped: clang-14 with libFuzzer is not installed (libclang-rt-14-dev)",
  );

describe("fuzzing the firmware core", () => {
  it.runIf(have || ci)(
    "survives 3 s of libFuzzer under ASan and UBSan from real transcripts",
    () => {
      expect(have, "clang-14 and libclang-rt-14-dev must be installed under CI (.ci/run)").toBe(
        true,
      );
      expect(() => runFuzz(3, { quiet: true })).not.toThrow();
    },
  );
});
