/**
 * `esp-ota serve` as a process: it prints the address it listens on (port 0 picks a free one),
 * serves over real HTTP on loopback, logs each request on stderr, and exits 0 on SIGTERM.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const dir = mkdtempSync(join(tmpdir(), "serve-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("esp-ota serve (process)", () => {
  it("serves DIR until SIGTERM", async () => {
    writeFileSync(join(dir, "hello.bin"), "0123456789");
    const main = new URL("../../agent/main.ts", import.meta.url).pathname;
    const child = spawn(process.execPath, ["--import", "tsx", main, "serve", dir, "--port", "0"], {
      cwd: new URL("../..", import.meta.url).pathname,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const exited = new Promise<number | null>((ok) => child.on("exit", (code) => ok(code)));
    const url = await new Promise<string>((ok, fail) => {
      let out = "";
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
        const m = /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
        if (m) ok(m[1]!);
      });
      child.on("exit", () => fail(new Error(`serve exited early: ${stderr}`)));
    });
    const r = await fetch(`${url}hello.bin`, { headers: { Range: "bytes=2-4" } });
    expect(r.status).toBe(206);
    expect(await r.text()).toBe("234");
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(stderr).toContain("206 GET /hello.bin");
  }, 20_000);
});
