/**
 * A pseudo-terminal pair through `socat` (Node has no pty API of its own): `sim serve --pty`
 * and the serial-port contract tests attach a simulated device to one end, and any tool (the
 * CLI, minicom, a test) opens the other.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EspOtaError } from "../errors.js";

export interface PtyPair {
  /** The end the simulated device uses. */
  device: string;
  /** The end to give to a host tool. */
  host: string;
  close(): void;
}

export function socatAvailable(): boolean {
  return spawnSync("socat", ["-V"], { stdio: "ignore" }).status === 0;
}

export async function openPtyPair(
  dir = mkdtempSync(join(tmpdir(), "esp-ota-pty-")),
): Promise<PtyPair> {
  const device = join(dir, "device");
  const host = join(dir, "host");
  let proc: ChildProcess;
  try {
    proc = spawn(
      "socat",
      ["-d", "-d", `pty,raw,echo=0,link=${device}`, `pty,raw,echo=0,link=${host}`],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
  } catch (e) {
    throw new EspOtaError("E_UART_PORT", `cannot start socat: ${(e as Error).message}`, {}, e);
  }
  const failed = new Promise<never>((_, reject) => {
    proc.once("error", (e) =>
      reject(
        (e as NodeJS.ErrnoException).code === "ENOENT"
          ? new EspOtaError("E_UART_SOCAT_MISSING", "socat is not installed", {}, e)
          : new EspOtaError("E_UART_PORT", `cannot start socat: ${e.message}`, {}, e),
      ),
    );
  });
  failed.catch(() => undefined);
  // socat prints "starting data transfer loop" once both ptys exist.
  const ready = new Promise<void>((resolve) => {
    let text = "";
    proc.stderr?.on("data", (b: Buffer) => {
      text += b.toString();
      if (text.includes("starting data transfer loop") && existsSync(device) && existsSync(host))
        resolve();
    });
  });
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(
      () => reject(new EspOtaError("E_UART_PORT", "socat did not create the ptys in 5 s")),
      5000,
    ).unref(),
  );
  await Promise.race([ready, failed, timeout]);
  return {
    device,
    host,
    close: () => {
      proc.kill("SIGTERM");
    },
  };
}
