/**
 * The core and the ESP-IDF port cross-compile for a RISC-V ESP32 with -Wall -Wextra -Werror
 * (ESP-IDF 5.5 and the pre-5.5 otadata fallback), within the footprint issue 14 sets: code
 * < 16 KB, static RAM < 8 KB plus the DATA chunk buffer, the receiver task's own stack well
 * under 4 KB. Where the compiler is missing the test says so and skips; under CI=true it fails.
 */
import { describe, expect, it } from "vitest";
import { compileExample, haveRiscvToolchain, measureFirmware } from "../bench/firmware.js";

const have = haveRiscvToolchain();
const ci = process.env.CI === "true";
if (!have && !ci)
  console.warn(
    "firmware cross-compile test skipped: riscv64-unknown-elf-gcc is not installed (gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf)",
  );

describe("the firmware on a RISC-V ESP32 (cross-compiled)", () => {
  it.runIf(have || ci)(
    "compiles warning-free against ESP-IDF 5.5 and 5.4, with the example app, and fits its budget",
    () => {
      expect(have, "riscv64-unknown-elf-gcc must be installed under CI (.ci/run)").toBe(true);
      const m = measureFirmware({ idfMinor: 5 });
      measureFirmware({ idfMinor: 4 }); // the esp_ota_invalidate_inactive_ota_data_slot fallback
      compileExample(); // the example app, through the public header's Kconfig defaults
      expect(m.code).toBeLessThan(16 * 1024);
      expect(m.staticRam - m.stagingBytes).toBeLessThan(8 * 1024);
      expect(m.contextBytes).toBeGreaterThan(m.stagingBytes);
      // ESP-IDF's calls below (esp_image_verify, NVS, the UART driver) need the rest of 4 KB.
      expect(m.taskStack).toBeLessThan(2 * 1024);
      expect(m.functions.find((f) => f.name === "uota_feed")?.worst).toBeGreaterThan(0);
    },
  );
});
