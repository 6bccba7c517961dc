/**
 * npm run fuzz:firmware [-- SECONDS]: the firmware core's parser and dispatcher under
 * libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer (test/firmware/fuzz_core.c),
 * from a seed corpus of real transcripts (a whole OTA, a resume, junk), so the fuzzer starts
 * past the CRCs. Default 60 s; test/firmware/fuzz.test.ts runs a short one.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { sha256 } from "@noble/hashes/sha2.js";
import { encodeFrame } from "../../src/uart/frame.js";
import { encodeBaud, encodeBegin, encodeData, encodeHello, MSG } from "../../src/uart/messages.js";
import { REPO } from "./build-firmware.js";

export const FUZZ_CLANG = "clang-14";

/** True when clang-14 and its libFuzzer runtime (libclang-rt-14-dev) are installed. */
export function haveFuzzToolchain(): boolean {
  try {
    const dir = execFileSync(FUZZ_CLANG, ["--print-runtime-dir"], { encoding: "utf8" }).trim();
    return readdirSync(dir).some((f) => /^libclang_rt\.fuzzer-[^.]+\.a$/.test(f));
  } catch {
    return false;
  }
}

/** Seed inputs: a configuration byte, op 0 (feed the rest), then a transcript. */
export function fuzzSeeds(): Uint8Array[] {
  const f = (t: number, p?: Uint8Array) => encodeFrame(t, p);
  const img = new Uint8Array(0x2400).map((_, i) => (i * 31 + 7) & 0xff);
  img[0] = 0xe9;
  img[1] = 1;
  const begin = f(
    MSG.BEGIN,
    encodeBegin({ offset: 0x20000, size: img.length, sha256: sha256(img) }),
  );
  const data: Uint8Array[] = [];
  for (let o = 0; o < img.length; o += 4096)
    data.push(f(MSG.DATA, encodeData({ offset: o, data: img.subarray(o, o + 4096) })));
  const ota = [
    f(MSG.HELLO, encodeHello()),
    begin,
    ...data,
    f(MSG.END),
    f(MSG.ACTIVATE),
    f(MSG.STATUS),
  ];
  const cat = (flags: number, parts: Uint8Array[]) => {
    const n = parts.reduce((a, p) => a + p.length, 0);
    const out = new Uint8Array(2 + n);
    out[0] = flags;
    out[1] = 0; // op 0: feed the rest
    let at = 2;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };
  return [
    cat(1, ota),
    cat(9, ota), // the erase at 0x2000 fails: RESULT(DATA, FLASH_ERROR), back to idle
    cat(0, ota),
    cat(5, [
      begin,
      data[1]!,
      data[0]!,
      data[0]!,
      f(MSG.END),
      f(MSG.ABORT),
      f(MSG.BAUD, encodeBaud(921600)),
    ]),
    cat(3, [
      new TextEncoder().encode("I (12) boot: junk\r\n"),
      begin.subarray(0, 9),
      f(MSG.HELLO, encodeHello()),
    ]),
  ];
}

/** Builds the fuzzer and runs it; throws (with libFuzzer's report on stderr) on a finding. */
export function runFuzz(seconds: number, opts: { quiet?: boolean } = {}): void {
  const dir = mkdtempSync(join(tmpdir(), "uota-fuzz-"));
  try {
    const bin = join(dir, "fuzz_core");
    execFileSync(
      FUZZ_CLANG,
      [
        "-fsanitize=fuzzer,address,undefined",
        "-fno-sanitize-recover=all",
        "-O1",
        "-g",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Isrc/firmware/include",
        "src/firmware/uota_core.c",
        "src/firmware/uota_sha256.c",
        "test/firmware/fake_port.c",
        "test/firmware/fuzz_core.c",
        "-o",
        bin,
      ],
      { cwd: REPO, stdio: "inherit" },
    );
    const corpus = join(dir, "corpus");
    mkdirSync(corpus);
    for (const [i, s] of fuzzSeeds().entries()) writeFileSync(join(corpus, `seed-${i}`), s);
    execFileSync(
      bin,
      [`-max_total_time=${seconds}`, "-max_len=20000", "-seed=14", "-print_final_stats=1", corpus],
      { cwd: dir, stdio: opts.quiet ? ["ignore", "ignore", "pipe"] : "inherit" },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!haveFuzzToolchain()) {
    console.error(
      "fuzz:firmware needs clang-14 with libFuzzer (Debian: clang-14 libclang-rt-14-dev)",
    );
    process.exit(1);
  }
  const seconds = Number(process.argv[2] ?? 60);
  runFuzz(Number.isFinite(seconds) && seconds > 0 ? seconds : 60);
}
