/**
 * The CLI's edge: files and output. Commands get a CliContext so tests run them in-process
 * (test/cli/*.test.ts) against temporary files and captured output.
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { EspOtaError } from "../errors.js";
import { writeFileAtomicSync } from "../fs/write-atomic.js";

export interface OutputSink {
  write(chunk: string): unknown;
  /** True when a person is watching (enables colour and progress bars). */
  readonly isTTY?: boolean;
}

export interface CliContext {
  readonly stdout: OutputSink;
  readonly stderr: OutputSink;
  readonly cwd: string;
  readFile(path: string): Uint8Array;
  readText(path: string): string;
  /** Writes atomically enough for a CLI: creates the parent directory; `mode` 0o600 for secrets. */
  writeFile(path: string, data: Uint8Array | string, mode?: number): void;
  /**
   * Creates a secret (a key) exclusively — flag "wx", so an existing file is never overwritten
   * and there is no check-then-write race — with mode 0600. Throws E_KEY_EXISTS if it exists.
   */
  createSecretFile(path: string, data: Uint8Array | string): void;
  /** stdout.write with a newline. */
  print(line?: string): void;
  /** stderr.write with a newline (progress and notes, never machine-readable output). */
  note(line: string): void;
}

export function createContext(
  stdout: OutputSink = process.stdout,
  stderr: OutputSink = process.stderr,
  cwd: string = process.cwd(),
): CliContext {
  const abs = (p: string) => resolve(cwd, p);
  return {
    stdout,
    stderr,
    cwd,
    readFile(path) {
      try {
        return new Uint8Array(readFileSync(abs(path)));
      } catch (e) {
        throw new EspOtaError(
          "E_FILE_READ",
          `cannot read ${path}: ${(e as Error).message}`,
          { path },
          e,
        );
      }
    },
    readText(path) {
      return new TextDecoder().decode(this.readFile(path));
    },
    writeFile(path, data, mode = 0o644) {
      try {
        mkdirSync(dirname(abs(path)), { recursive: true });
        // Atomic (a reader or a crash never sees half a signed image or key); durable when the
        // file is a secret. A device or a pipe (/dev/stdout) is written in place.
        if (isSpecialFile(abs(path))) writeFileSync(abs(path), data, { mode });
        else writeFileAtomicSync(abs(path), data, { mode, durable: mode === 0o600 });
      } catch (e) {
        throw new EspOtaError(
          "E_FILE_WRITE",
          `cannot write ${path}: ${(e as Error).message}`,
          { path },
          e,
        );
      }
    },
    createSecretFile(path, data) {
      try {
        mkdirSync(dirname(abs(path)), { recursive: true });
        // A new key: never over an existing file, never torn by a power cut.
        writeFileAtomicSync(abs(path), data, { mode: 0o600, durable: true, exclusive: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") {
          throw new EspOtaError(
            "E_KEY_EXISTS",
            `key file ${path} already exists; not overwriting it`,
            { path },
          );
        }
        throw new EspOtaError(
          "E_FILE_WRITE",
          `cannot write ${path}: ${(e as Error).message}`,
          { path },
          e,
        );
      }
    },
    print(line = "") {
      stdout.write(`${line}\n`);
    },
    note(line) {
      stderr.write(`${line}\n`);
    },
  };
}

/** An existing path that is not a regular file (a device, a FIFO): no temporary file beside it. */
function isSpecialFile(path: string): boolean {
  try {
    return !statSync(path).isFile();
  } catch {
    return false;
  }
}
