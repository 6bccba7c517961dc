/**
 * The committed src/firmware/prebuilt/esp_ota_uart.wasm is what `npm run build:firmware` makes
 * from the committed C sources: rebuilt here where clang-14 and lld-14 are installed, compared
 * byte for byte. Without the toolchain the test says so and skips; under CI=true (where
 * .ci/run installs it) a missing toolchain fails.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { Wasm } from "../../src/sim/firmware-device.js";
import {
  buildFirmwareWasm,
  FIRMWARE_WASM,
  haveWasmToolchain,
  REPO,
} from "../tools/build-firmware.js";

const have = haveWasmToolchain();
const ci = process.env.CI === "true";
if (!have && !ci)
  console.warn(
    "firmware build test skipped: clang-14 and lld-14 are not installed (apt-get install clang-14 lld-14)",
  );

describe("the committed firmware wasm", () => {
  it.runIf(have || ci)("is rebuilt byte for byte from the sources (reproducible build)", () => {
    expect(have, "clang-14 and wasm-ld-14 must be installed under CI (.ci/run)").toBe(true);
    const dir = mkdtempSync(join(tmpdir(), "uota-build-"));
    try {
      const out = join(dir, "esp_ota_uart.wasm");
      buildFirmwareWasm(out);
      const fresh = readFileSync(out);
      const committed = readFileSync(resolve(REPO, FIRMWARE_WASM));
      expect(
        fresh.equals(committed),
        "src/firmware/prebuilt/esp_ota_uart.wasm is stale: run npm run build:firmware and commit it",
      ).toBe(true);
      // Nothing of this machine in the module: no absolute paths, no WASI.
      expect(fresh.includes(Buffer.from(REPO))).toBe(false);
      const imports = Wasm.Module.imports(new Wasm.Module(fresh));
      expect(new Set(imports.map((i) => i.module))).toEqual(new Set(["uota_port"]));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
