/**
 * The firmware core's unit tests in C (test/firmware/core_unit.c), built natively with
 * clang-14 under ASan and UBSan and run: CRC check values, SHA-256 vectors, the spec's HELLO
 * bytes, the push parser's contract, the frame gap on the core's clock, the baud timer, init's
 * refusals. Skipped, saying so, without clang-14; under CI=true that fails.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CLANG, haveWasmToolchain, REPO } from "../tools/build-firmware.js";

const have = haveWasmToolchain();
const ci = process.env.CI === "true";
if (!have && !ci) console.warn("firmware C unit tests skipped: clang-14 is not installed");

describe("the firmware core's C unit tests", () => {
  it.runIf(have || ci)("pass under ASan and UBSan", () => {
    expect(have, "clang-14 must be installed under CI (.ci/run)").toBe(true);
    const dir = mkdtempSync(join(tmpdir(), "uota-unit-"));
    try {
      const bin = join(dir, "core_unit");
      execFileSync(
        CLANG,
        [
          "-O1",
          "-g",
          "-fsanitize=address,undefined",
          "-fno-sanitize-recover=all",
          "-std=c11",
          "-Wall",
          "-Wextra",
          "-Werror",
          "-Isrc/firmware/include",
          "src/firmware/uota_core.c",
          "src/firmware/uota_sha256.c",
          "test/firmware/fake_port.c",
          "test/firmware/core_unit.c",
          "-o",
          bin,
        ],
        { cwd: REPO, stdio: "inherit" },
      );
      const out = execFileSync(bin, { encoding: "utf8" });
      const m = /^(\d+) passed, (\d+) failed$/m.exec(out);
      expect(m, out).not.toBeNull();
      expect(Number(m![2])).toBe(0);
      expect(Number(m![1])).toBeGreaterThanOrEqual(38);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
