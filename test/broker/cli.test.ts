/** `esp-ota broker` and `esp-ota broker passwd`, run in-process like the binary runs them. */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import mqtt from "mqtt";
import { describe, expect, it } from "vitest";
import { ESP_OTA_PLUGINS } from "../../agent/plugins.js";
import { parseUsersFile } from "../../src/auth/users-file.js";
import { runCli } from "../../src/cli/program.js";
import { selfSignedCert } from "../helpers/brokers.js";
import { runCapture } from "../helpers/cli.js";

const cert = selfSignedCert();
const tmp = () => mkdtempSync(join(tmpdir(), "esp-ota-broker-cli-"));

/**
 * Starts `esp-ota ARGV` in-process and resolves with its URL once printed. stop() sends it
 * SIGTERM the way a service manager would (only the command listens for it in a test worker)
 * and resolves with the exit code.
 */
async function startCli(argv: string[], cwd: string) {
  let stdout = "";
  let stderr = "";
  const done = runCli(
    argv,
    { write: (s: string) => (stdout += s) },
    { write: (s: string) => (stderr += s) },
    cwd,
    ESP_OTA_PLUGINS,
  );
  let exited = false;
  done.finally(() => (exited = true));
  for (let i = 0; i < 200 && !stdout.includes("\n") && !exited; i++)
    await new Promise((r) => setTimeout(r, 25));
  return {
    url: stdout.trim(),
    stop: () => {
      if (!exited) process.emit("SIGTERM");
      return done;
    },
    output: () => ({ stdout, stderr }),
  };
}

describe("esp-ota broker", () => {
  it("prints its URL and stops after --duration", async () => {
    const r = await runCapture(["broker", "--port", "0", "--duration", "300ms"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^mqtt:\/\/127\.0\.0\.1:\d+\n$/);
    expect(r.stderr).toContain("(in memory), no authentication");
    expect(r.stderr).toContain("broker: stopped");
  });

  it("logs each client on stderr, and stops on SIGTERM", async () => {
    const cli = await startCli(["broker", "--port", "0"], tmp());
    try {
      const c = await mqtt.connectAsync(cli.url, { protocolVersion: 4, clientId: "cli-probe" });
      await c.endAsync();
    } finally {
      expect(await cli.stop()).toBe(0);
    }
    expect(cli.output().stderr).toMatch(/client cli-probe connected from 127\.0\.0\.1:\d+/);
    expect(cli.output().stderr).toContain("client cli-probe disconnected");
  });

  it("reports a port in use as E_BROKER_LISTEN (exit 1)", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await runCapture(["broker", "--port", String(port), "--duration", "100ms"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`error E_BROKER_LISTEN: cannot listen on 127.0.0.1:${port}`);
    } finally {
      blocker.close();
    }
  });

  it("refuses half a TLS setup (exit 2) and unreadable TLS files (E_BROKER_TLS)", async () => {
    const dir = tmp();
    expect((await runCapture(["broker", "--port", "0", "--tls-cert", "c.pem"], dir)).code).toBe(2);
    const r = await runCapture(
      ["broker", "--port", "0", "--tls-cert", "missing.pem", "--tls-key", "k.pem"],
      dir,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error E_BROKER_TLS: --tls-cert missing.pem");
  });

  it("--max-packet-bytes below 64 is a usage error (exit 2)", async () => {
    const r = await runCapture(["broker", "--port", "0", "--max-packet-bytes", "10"], tmp());
    expect([r.code, r.stderr]).toEqual([2, expect.stringContaining("--max-packet-bytes")]);
  });

  it.skipIf(!cert)("serves mqtts with --tls-cert and --tls-key", async () => {
    const cli = await startCli(
      ["broker", "--port", "0", "--tls-cert", cert!.certPath, "--tls-key", cert!.keyPath],
      tmp(),
    );
    try {
      expect(cli.url).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/);
      const c = await mqtt.connectAsync(cli.url, {
        protocolVersion: 4,
        ca: Buffer.from(cert!.cert),
      });
      await c.endAsync();
    } finally {
      expect(await cli.stop()).toBe(0);
    }
  });

  it("refuses a malformed users file with the line (E_BROKER_USERS)", async () => {
    const dir = tmp();
    writeFileSync(join(dir, "users"), "# ok\ngateway\n");
    const r = await runCapture(["broker", "--port", "0", "--users", "users"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error E_BROKER_USERS: users: line 2:");
  });
});

describe("esp-ota broker passwd", () => {
  it("adds and replaces users; the broker then admits only the current password", async () => {
    const dir = tmp();
    writeFileSync(join(dir, "pw1"), "first-secret\n");
    writeFileSync(join(dir, "pw2"), "second-secret\n");
    const add = await runCapture(
      ["broker", "passwd", "--users", "users", "--password-file", "pw1", "gateway"],
      dir,
    );
    expect(add.code).toBe(0);
    expect(add.stderr).toContain("added user gateway in users");
    expect(statSync(join(dir, "users")).mode & 0o777).toBe(0o600);
    await runCapture(
      ["broker", "passwd", "--users", "users", "--password-file", "pw2", "ops"],
      dir,
    );
    const again = await runCapture(
      ["broker", "passwd", "--users", "users", "--password-file", "pw2", "gateway"],
      dir,
    );
    expect(again.stderr).toContain("replaced the password of user gateway");
    const text = readFileSync(join(dir, "users"), "utf8");
    const parsed = parseUsersFile(text);
    expect(parsed.ok && Object.keys(parsed.value)).toEqual(["gateway", "ops"]);
    // Neither the password nor anything derived from it is printed.
    for (const r of [add, again]) expect(r.stdout + r.stderr).not.toMatch(/secret|scrypt/);
    expect(text).not.toContain("secret");

    const cli = await startCli(["broker", "--port", "0", "--users", "users"], dir);
    try {
      const opts = {
        protocolVersion: 4,
        reconnectPeriod: 0,
        username: "gateway",
        clientId: "gateway-1",
      } as const;
      const ok = await mqtt.connectAsync(cli.url, { ...opts, password: "second-secret" });
      await ok.endAsync();
      await expect(
        mqtt.connectAsync(cli.url, { ...opts, password: "first-secret" }),
      ).rejects.toThrow(/Bad username or password/);
    } finally {
      expect(await cli.stop()).toBe(0);
    }
    expect(cli.output().stderr).toContain("2 user(s)");
  });

  it("refuses an invalid username or an empty password (exit 2)", async () => {
    const dir = tmp();
    writeFileSync(join(dir, "empty"), "\n");
    const r1 = await runCapture(
      ["broker", "passwd", "--users", "u", "--password-file", "empty", "a:b"],
      dir,
    );
    expect(r1.code).toBe(2);
    const r2 = await runCapture(
      ["broker", "passwd", "--users", "u", "--password-file", "empty", "gateway"],
      dir,
    );
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain("empty password");
  });

  it("reads the password from stdin in the real binary", async () => {
    const dir = tmp();
    const main = new URL("../../agent/main.ts", import.meta.url).pathname;
    // tsx's loader by URL: a bare "tsx" would be resolved from the temporary cwd.
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
    const child = spawn(
      process.execPath,
      ["--import", tsx, main, "broker", "passwd", "--users", "users", "--password-stdin", "op"],
      { cwd: dir, stdio: ["pipe", "pipe", "pipe"] },
    );
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.stdin.end("piped-secret\n");
    const code = await new Promise<number | null>((r) => child.on("exit", r));
    expect(out).not.toContain("piped-secret");
    expect(code).toBe(0);
    const parsed = parseUsersFile(readFileSync(join(dir, "users"), "utf8"));
    expect(parsed.ok && Object.keys(parsed.value)).toEqual(["op"]);
  });
});
