/**
 * `esp-ota sim serve --state FILE --pty` in a process of its own, as docs/uart-protocol.md §10
 * tells a user to run it, for the tests and `npm run bench:uart` that flash through its pty.
 * The CLI runs from source through tsx, so it is the code under test, never a stale build.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { socatAvailable } from "../../src/uart/socat.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
const MAIN = join(ROOT, "agent/main.ts");
// tsx's loader by URL: a bare "tsx" would be resolved from the caller's cwd.
const TSX = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
/**
 * Start-up allowance: tsx compiles the CLI's module graph at start; start to exit of a `sim serve
 * --duration 100` measured 2.3–3.4 s on the 2-core test machine at a load average of 14. 30 s
 * leaves a wide margin.
 */
const READY_MS = 30_000;

/** socat present, or a clear failure under CI=true (never silently skipped tests there). */
export function requireSocat(what: string): boolean {
  const have = socatAvailable();
  if (!have && /^(true|1)$/i.test(process.env.CI ?? ""))
    throw new Error(`socat is required in CI for ${what} (apt-get install socat)`);
  if (!have) console.warn(`${what}: socat is not installed; not run here`);
  return have;
}

export interface ServedSim {
  /** The host end of the pty pair, as `sim serve` printed it. */
  pty: string;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM, and its exit code once it has saved the state file. */
  stop(): Promise<number | null>;
}

export async function startSimServe(
  state: string,
  args: readonly string[] = [],
): Promise<ServedSim> {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", TSX, MAIN, "sim", "serve", "--state", state, "--pty", ...args],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  let err = "";
  child.stderr!.on("data", (b: Buffer) => {
    err += b.toString();
  });
  const exited = new Promise<number | null>((ok) => child.once("exit", (code) => ok(code)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    return exited;
  };
  try {
    const pty = await new Promise<string>((ok, fail) => {
      const timer = setTimeout(
        () => fail(new Error(`sim serve printed no pty in ${READY_MS / 1000} s:\n${err}`)),
        READY_MS,
      );
      child.stdout!.on("data", (b: Buffer) => {
        out += b.toString();
        const nl = out.indexOf("\n");
        if (nl >= 0) {
          clearTimeout(timer);
          ok(out.slice(0, nl).trim());
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        fail(new Error(`sim serve exited (${code}) before printing its pty:\n${err}`));
      });
    });
    return { pty, stderr: () => err, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
