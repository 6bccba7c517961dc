/** Runs the CLI in-process with captured output (exit code, stdout, stderr). */
import { ESP_OTA_PLUGINS } from "../../agent/plugins.js";
import { runCli } from "../../src/cli/program.js";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The whole `esp-ota` binary's command set (library CLI plus agent/ and broker/ commands). */
export async function runCapture(
  argv: readonly string[],
  cwd: string = process.cwd(),
): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(
    argv,
    { write: (s: string) => (stdout += s) },
    { write: (s: string) => (stderr += s) },
    cwd,
    ESP_OTA_PLUGINS,
  );
  return { code, stdout, stderr };
}

/** The coded error an expression throws ("no error" when it does not). */
export function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return "no error";
}
