/**
 * npm run build:firmware: the firmware core and its simulator port compiled to WebAssembly
 * (src/firmware/prebuilt/esp_ota_uart.wasm, committed so users and CI need no clang).
 *
 * Reproducible: fixed flags and inputs in a fixed order, paths relative to the repository and
 * mapped away (-ffile-prefix-map), no debug info, all names but the exports stripped, so the
 * same clang-14/lld-14 gives the same bytes on any machine (test/firmware/build.test.ts).
 * A module with no WASI and no libc: its only imports are the port's functions.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const FIRMWARE_WASM = "src/firmware/prebuilt/esp_ota_uart.wasm";
export const CLANG = "clang-14";
export const WASM_LD = "wasm-ld-14";

const SOURCES = [
  "src/firmware/uota_core.c",
  "src/firmware/uota_sha256.c",
  "src/firmware/port_wasm.c",
];
const LIBC = "src/firmware/wasm/libc.c";

const CFLAGS = [
  "--target=wasm32",
  "-nostdlib",
  "-ffreestanding",
  "-Os",
  "-g0",
  "-std=c11",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-Isrc/firmware/include",
  "-isystem",
  "src/firmware/wasm",
  `-ffile-prefix-map=${REPO}=.`,
  `-fdebug-prefix-map=${REPO}=.`,
];

/*
 * One 64 KB page: a 16 KB stack placed first (an overflow traps at address 0 instead of
 * corrupting the context), then the context and buffers (~19 KB). Memory per simulated device
 * is this page (docs/firmware.md).
 */
const LDFLAGS = [
  "--no-entry",
  "--strip-all",
  "--stack-first",
  "-z",
  "stack-size=16384",
  "--initial-memory=65536",
  "--max-memory=65536",
];

/** True when the toolchain is on PATH. */
export function haveWasmToolchain(): boolean {
  try {
    execFileSync(CLANG, ["--version"], { stdio: "ignore" });
    execFileSync(WASM_LD, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Builds the module into `out` (absolute, or relative to the repository). */
export function buildFirmwareWasm(out = FIRMWARE_WASM): void {
  const tmp = mkdtempSync(join(tmpdir(), "uota-wasm-"));
  try {
    const objs: string[] = [];
    for (const [i, src] of [...SOURCES, LIBC].entries()) {
      const obj = join(tmp, `${i}.o`);
      const extra = src === LIBC ? ["-fno-builtin"] : [];
      execFileSync(CLANG, [...CFLAGS, ...extra, "-c", src, "-o", obj], {
        cwd: REPO,
        stdio: "inherit",
      });
      objs.push(obj);
    }
    execFileSync(WASM_LD, [...LDFLAGS, "-o", resolve(REPO, out), ...objs], {
      cwd: REPO,
      stdio: "inherit",
    });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!haveWasmToolchain()) {
    console.error(`build:firmware needs ${CLANG} and ${WASM_LD} (Debian: clang-14 lld-14)`);
    process.exit(1);
  }
  buildFirmwareWasm();
  console.log(`built ${FIRMWARE_WASM}`);
}
