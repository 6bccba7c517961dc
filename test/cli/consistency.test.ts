/**
 * One way to say a thing across commands (issue 13 items 8 and 12): durations with units from
 * one parser, one `--behaviour` syntax, sizes with decimal fractions where help says K/M, `--json`
 * where a script wants it, and a quiet exit when stdout's reader goes away (`| head`).
 */
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { durationArg, parseIntArg, parseSizeArg } from "../../src/cli/args.js";
import { parseVersionBehaviour } from "../../src/cli/commands/sim-fleet.js";
import { buildProgram } from "../../src/cli/program.js";
import { exitQuietlyOnBrokenPipe, runProgram } from "../../src/cli/run.js";
import { formatDurationMs, parseDurationMs, TIMER_MAX_MS } from "../../src/duration.js";
import { gatewayIdentity } from "../../src/mqtt/status-auth.js";
import { generateManifestKey, toPublicKey } from "../../src/release/keyring.js";
import { parseDurationMs as planParseDurationMs } from "../../src/rollout/plan.js";
import { runCapture } from "../helpers/cli.js";

const dir = mkdtempSync(join(tmpdir(), "esp-ota-consistency-"));

describe("durations", () => {
  it("take a unit; a bare number is refused with a message saying to add one", () => {
    expect(parseDurationMs("500ms")).toBe(500);
    expect(parseDurationMs("10s")).toBe(10_000);
    expect(parseDurationMs("30m")).toBe(1_800_000);
    expect(parseDurationMs("2h")).toBe(7_200_000);
    expect(parseDurationMs("30d")).toBe(2_592_000_000);
    expect(parseDurationMs("1.5s")).toBe(1500);
    expect(parseDurationMs(" 90s ")).toBe(90_000);
    expect(parseDurationMs("5000")).toBe(
      '"5000" has no unit: add one, e.g. 5000ms or 5000s (units ms, s, m, h, d)',
    );
    expect(parseDurationMs("0s")).toMatch(/above zero/);
    expect(parseDurationMs("0.1ms")).toMatch(/above zero/);
    expect(parseDurationMs("1 hour")).toMatch(/not a duration/);
    expect(parseDurationMs("-5s")).toMatch(/not a duration/);
    expect(parseDurationMs("25d", TIMER_MAX_MS)).toMatch(/too long: at most/);
    expect(parseDurationMs("24d", TIMER_MAX_MS)).toBe(24 * 86_400_000);
    expect(() => durationArg()("10")).toThrow(/has no unit/);
    expect([
      formatDurationMs(1_800_000),
      formatDurationMs(1500),
      formatDurationMs(86_400_000),
    ]).toEqual(["30m", "1500ms", "1d"]);
    // The rollout plan's parser is the same function, not a second one.
    expect(planParseDurationMs).toBe(parseDurationMs);
  });

  it("status --duration takes 10s; rollout pause --timeout refuses 5000 asking for a unit", async () => {
    // Parsed, then refused for another reason: 10s is a duration now (it was "not a number").
    const status = await runCapture(["status", "--duration", "10s"]);
    expect([status.code, status.stderr]).toEqual([
      2,
      expect.stringContaining("--duration only applies with --watch"),
    ]);
    const pause = await runCapture(["rollout", "pause", "r1", "--timeout", "5000"]);
    expect(pause.code).toBe(2);
    expect(pause.stderr).toContain('"5000" has no unit: add one, e.g. 5000ms or 5000s');
    const chaos = await runCapture(["chaos", "proxy", "--duration", "100"]);
    expect([chaos.code, chaos.stderr]).toEqual([2, expect.stringContaining("has no unit")]);
  });
});

describe("--behaviour", () => {
  it("is VERSION=PROFILE in sim create and DEVICE:VERSION=PROFILE in sim fleet create", async () => {
    expect(parseVersionBehaviour("2.0.0=refuses")).toEqual({
      version: "2.0.0",
      behaviour: "refuses",
    });
    // The version is everything before the last "=".
    expect(parseVersionBehaviour("v=1=crash-loop")).toEqual({
      version: "v=1",
      behaviour: "crash-loop",
    });
    expect(parseVersionBehaviour("2.0.0=sulks")).toBeNull();
    expect(parseVersionBehaviour("2.0.0:refuses")).toBeNull();

    // The fleet's former DEVICE=VERSION:PROFILE is refused with a pointer to the new form.
    const old = await runCapture(
      ["sim", "fleet", "create", "--dir", join(dir, "f0"), "--count", "2"].concat([
        "--behaviour",
        "1=2.0.0:refuses",
      ]),
    );
    expect(old.code).toBe(2);
    expect(old.stderr).toContain(
      "expected DEVICE:VERSION=PROFILE (DEVICE=VERSION:PROFILE was the old form)",
    );
    const simCreate = await runCapture(["sim", "create", "--help"]);
    expect(simCreate.stdout).toContain("--behaviour <version=profile>");
    const fleetCreate = await runCapture(["sim", "fleet", "create", "--help"]);
    expect(fleetCreate.stdout).toContain("--behaviour <device:version=profile>");
  });
});

describe("sizes (sim make-app --size 1.3M)", () => {
  it("parseSizeArg takes a decimal fraction before K/M; parseIntArg (offsets) does not", () => {
    expect(parseSizeArg("1.3M")).toBe(Math.round(1.3 * 1024 * 1024));
    expect(parseSizeArg("1.5k")).toBe(1536);
    expect(parseSizeArg("64K")).toBe(65536);
    expect(parseSizeArg("0x1000")).toBe(4096);
    expect(parseSizeArg("4096")).toBe(4096);
    expect(() => parseSizeArg("1.3")).toThrow(/not a size/);
    expect(() => parseSizeArg("1.3G")).toThrow(/not a size/);
    expect(() => parseIntArg("1.5K")).toThrow(/not a number/);
  });

  it("sim make-app --size 1.3M makes an app of about that size", async () => {
    const out = join(dir, "app.bin");
    const r = await runCapture([
      ...["sim", "make-app", "--project", "p", "--version", "1.0.0", "--size", "1.3M", out],
    ]);
    expect(r.code, r.stderr).toBe(0);
    const size = readFileSync(out).length;
    expect(Math.abs(size - 1.3 * 1024 * 1024)).toBeLessThan(64 * 1024);
  });
});

describe("--json", () => {
  it("sim fleet create and list", async () => {
    const fleetDir = join(dir, "fleet");
    const created = await runCapture(
      ["sim", "fleet", "create", "--dir", fleetDir, "--count", "2", "--app-size", "16K"].concat([
        "--json",
      ]),
    );
    expect(created.code, created.stderr).toBe(0);
    const fleet = JSON.parse(created.stdout);
    expect(fleet).toMatchObject({
      dir: fleetDir,
      secureBoot: "v1",
      secureVersion: 1,
      devices: [
        { deviceId: "240ac4fe0000", chip: "esp32" },
        { deviceId: "240ac4fe0001", chip: "esp32" },
      ],
    });
    const listed = await runCapture(["sim", "fleet", "list", "--dir", fleetDir, "--json"]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual(
      fleet.devices.map((d: object) => ({
        ...d,
        boots: { kind: "running", partition: "ota_0", version: "1.0.0" },
      })),
    );
  });

  it("gateways add", async () => {
    const key = toPublicKey(generateManifestKey("ed25519"));
    const line = JSON.stringify(gatewayIdentity("gw-a", key));
    const file = join(dir, "gateways.json");
    const added = await runCapture(["gateways", "add", file, "--identity", line, "--json"]);
    expect(added.code, added.stderr).toBe(0);
    expect(JSON.parse(added.stdout)).toEqual({
      file,
      gatewayId: "gw-a",
      keyId: key.keyId,
      change: "added",
    });
    const again = await runCapture(["gateways", "add", file, "--identity", line, "--json"]);
    expect(JSON.parse(again.stdout)).toMatchObject({ change: "unchanged" });
  });
});

describe("a closed stdout (`esp-ota status | head`)", () => {
  afterEach(() => vi.restoreAllMocks());

  it("ends the program quietly with exit 0 on EPIPE, once per stream", async () => {
    const exit = vi.spyOn(process, "exit").mockImplementation((() => undefined) as never);
    let stderr = "";
    const stdout = Object.assign(new EventEmitter(), { write: () => true });
    for (let i = 0; i < 2; i++)
      await runProgram(["--version"], (ctx) => buildProgram(ctx), stdout, {
        write: (s: string) => (stderr += s),
      });
    expect(stdout.listenerCount("error")).toBe(1);
    const epipe = Object.assign(new Error("write EPIPE"), { code: "EPIPE" });
    stdout.emit("error", epipe);
    expect(exit).toHaveBeenCalledWith(0);
    expect(stderr).toBe("");
  });

  it("the binary, its stdout pipe closed before it writes, exits 0 without a stack trace", async () => {
    const main = fileURLToPath(new URL("../../agent/main.ts", import.meta.url));
    const child = spawn(process.execPath, ["--import", "tsx", main, "--help"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    // The reader goes away at once, as `head` does after its lines: every write then fails.
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
  });

  it("any other stdout error is still thrown", () => {
    const stdout = Object.assign(new EventEmitter(), { write: () => true });
    const exit = vi.fn();
    exitQuietlyOnBrokenPipe(stdout, exit);
    const eio = Object.assign(new Error("write EIO"), { code: "EIO" });
    expect(() => stdout.emit("error", eio)).toThrow("write EIO");
    expect(exit).not.toHaveBeenCalled();
  });
});
