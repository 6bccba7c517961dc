/**
 * npm run bench:firmware: the firmware's footprint on a RISC-V ESP32 (ESP32-C3 class), from a
 * cross-compile of the core and the ESP-IDF port with riscv64-unknown-elf-gcc
 * -march=rv32imc_zicsr_zifencei -mabi=ilp32 -Os against the component's own declarations of
 * the ESP-IDF calls (test/firmware/idf/). Prints code size, static RAM, sizeof(uota_ctx_t),
 * each function's frame and worst-case stack below it (GCC -fstack-usage and
 * -fcallgraph-info=su; a call through the port struct counts as the deepest port function;
 * ESP-IDF's own functions are not in these objects and count 0), and the receiver task's need.
 * Targets (issue 14): code < 16 KB, static RAM < 8 KB plus the 4 KB DATA chunk buffer, task
 * stack < 4 KB.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Wasm } from "../../src/sim/firmware-device.js";
import { FIRMWARE_WASM, REPO } from "../tools/build-firmware.js";

export const RISCV_GCC = "riscv64-unknown-elf-gcc";

const UNITS = [
  { src: "src/firmware/uota_core.c", std: "c11" },
  { src: "src/firmware/uota_sha256.c", std: "c11" },
  // gnu11: the port uses vsnprintf/va_list and ESP-IDF's GNU extensions (##__VA_ARGS__).
  { src: "src/firmware/port_esp_idf.c", std: "gnu11" },
] as const;

export function haveRiscvToolchain(): boolean {
  try {
    execFileSync(RISCV_GCC, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Compiles the example app's main.c against the public header (ESP_OTA_UART_CONFIG_DEFAULT). */
export function compileExample(): void {
  const dir = mkdtempSync(join(tmpdir(), "uota-ex-"));
  try {
    execFileSync(
      RISCV_GCC,
      [
        "-march=rv32imc_zicsr_zifencei",
        "-mabi=ilp32",
        "--specs=picolibc.specs",
        "-Os",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-std=gnu11",
        "-Isrc/firmware/include",
        "-Itest/firmware/idf",
        "-c",
        "src/firmware/examples/uart_ota_app/main/main.c",
        "-o",
        join(dir, "main.o"),
      ],
      { cwd: REPO, stdio: ["ignore", "ignore", "inherit"] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface FirmwareFootprint {
  code: number;
  staticRam: number;
  contextBytes: number;
  stagingBytes: number;
  /** Per function: its own frame and the worst case of it plus everything it calls. */
  functions: { name: string; frame: number; worst: number }[];
  taskStack: number;
  maxStack: number;
}

/** Cross-compiles (throws with gcc's diagnostics on a warning: -Werror) and measures. */
export function measureFirmware(opts: { idfMinor?: number } = {}): FirmwareFootprint {
  const dir = mkdtempSync(join(tmpdir(), "uota-rv-"));
  try {
    const objs: string[] = [];
    for (const [i, u] of UNITS.entries()) {
      const obj = join(dir, `u${i}.o`);
      execFileSync(
        RISCV_GCC,
        [
          "-march=rv32imc_zicsr_zifencei",
          "-mabi=ilp32",
          "--specs=picolibc.specs",
          "-Os",
          "-Wall",
          "-Wextra",
          "-Werror",
          "-fstack-usage",
          "-fcallgraph-info=su",
          `-std=${u.std}`,
          `-DUOTA_IDF_MINOR=${opts.idfMinor ?? 5}`,
          "-DUOTA_STAGING_BYTES=4096",
          "-Isrc/firmware/include",
          "-Itest/firmware/idf",
          "-c",
          u.src,
          "-o",
          obj,
        ],
        { cwd: REPO, stdio: ["ignore", "ignore", "inherit"] },
      );
      objs.push(obj);
    }
    const size = execFileSync("riscv64-unknown-elf-size", objs, { encoding: "utf8" });
    let code = 0;
    let staticRam = 0;
    for (const line of size.trim().split("\n").slice(1)) {
      const [text, data, bss] = line.trim().split(/\s+/).map(Number);
      code += text! + data!; // initialised data lives in flash too
      staticRam += data! + bss!;
    }
    const nm = execFileSync("riscv64-unknown-elf-nm", ["-S", objs[2]!], { encoding: "utf8" });
    const ctxLine = nm.split("\n").find((l) => / s_ctx$/.test(l));
    const contextBytes = ctxLine ? Number.parseInt(ctxLine.trim().split(/\s+/)[1]!, 16) : 0;
    const graph = callGraph(objs.map((o) => o.replace(/\.o$/, ".ci")));
    return { code, staticRam, contextBytes, stagingBytes: 4096, ...graph };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function callGraph(
  files: string[],
): Pick<FirmwareFootprint, "functions" | "taskStack" | "maxStack"> {
  const frame = new Map<string, number>();
  const edges = new Map<string, Set<string>>();
  const base = (t: string) =>
    t.slice(t.lastIndexOf(":") + 1).replace(/\.(constprop|isra|part)\.\d+$/, "");
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    for (const m of text.matchAll(/node: \{ title: "([^"]+)" label: "([^"]*)"/g)) {
      const bytes = /\\n(\d+) bytes \(/.exec(m[2]!);
      const name = base(m[1]!);
      if (bytes) frame.set(name, Math.max(frame.get(name) ?? 0, Number(bytes[1])));
    }
    for (const m of text.matchAll(/edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"/g)) {
      const from = base(m[1]!);
      if (!edges.has(from)) edges.set(from, new Set());
      edges.get(from)!.add(base(m[2]!));
    }
  }
  // A call through the port struct: the deepest port function (p_*) it may reach.
  const memo = new Map<string, number>();
  const worst = (fn: string, seen: Set<string>): number => {
    const hit = memo.get(fn);
    if (hit !== undefined) return hit;
    if (seen.has(fn)) throw new RangeError(`bench:firmware: recursion through ${fn}`);
    seen.add(fn);
    let below = 0;
    const targets =
      fn === "__indirect_call"
        ? [...frame.keys()].filter((n) => n.startsWith("p_"))
        : [...(edges.get(fn) ?? [])];
    for (const t of targets) below = Math.max(below, worst(t, seen));
    seen.delete(fn);
    const w = (frame.get(fn) ?? 0) + below;
    memo.set(fn, w);
    return w;
  };
  const functions = [...frame.keys()]
    .map((name) => ({ name, frame: frame.get(name)!, worst: worst(name, new Set()) }))
    .sort((a, b) => b.worst - a.worst || a.name.localeCompare(b.name));
  const taskStack = worst("receiver_task", new Set());
  return { functions, taskStack, maxStack: functions[0]?.worst ?? 0 };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!haveRiscvToolchain()) {
    console.error(
      `bench:firmware needs ${RISCV_GCC} (Debian: gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf)`,
    );
    process.exit(1);
  }
  const m = measureFirmware();
  console.log(
    "RISC-V (rv32imc, -Os), core + ESP-IDF port; ESP-IDF's own code and stack not included\n",
  );
  console.log(`code (text + data)          ${m.code} bytes   (target < 16384)`);
  console.log(
    `static RAM (data + bss)     ${m.staticRam} bytes   (${m.staticRam - m.stagingBytes} + the ${m.stagingBytes}-byte DATA chunk buffer; target < 8192 + it)`,
  );
  console.log(`sizeof(uota_ctx_t)          ${m.contextBytes} bytes`);
  console.log(
    `receiver task, worst path   ${m.taskStack} bytes   (target < 4096 with ESP-IDF's calls below it)\n`,
  );
  console.log("function                         frame   worst-case below and including it");
  for (const f of m.functions.slice(0, 25))
    console.log(
      `${f.name.padEnd(32)} ${String(f.frame).padStart(5)}   ${String(f.worst).padStart(5)}`,
    );
  const wasm = readFileSync(resolve(REPO, FIRMWARE_WASM));
  const mod = new Wasm.Module(wasm);
  const stub: Record<string, Record<string, () => number>> = {};
  for (const i of Wasm.Module.imports(mod)) {
    const m = stub[i.module] ?? {};
    m[i.name] = () => 0;
    stub[i.module] = m;
  }
  const x = new Wasm.Instance(mod, stub).exports as {
    memory: { buffer: ArrayBuffer };
    uota_wasm_ctx_size(): number;
  };
  console.log(
    `\nsimulator build: ${FIRMWARE_WASM} ${wasm.length} bytes, sizeof(uota_ctx_t) = ${x.uota_wasm_ctx_size()} (8 KB write buffer), ${x.memory.buffer.byteLength} bytes of memory per device`,
  );
  console.log(
    `\nfirmware-bench: code = ${m.code} bytes, static ram = ${m.staticRam} bytes, max stack = ${m.maxStack} bytes`,
  );
}
