import { existsSync, lstatSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "../../src/cli/program.js";
import { loadFleet, loadFleetDevice } from "../../src/sim/fleet.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { runCapture } from "../helpers/cli.js";

const root = mkdtempSync(join(tmpdir(), "esp-ota-cli-fleet-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("esp-ota sim fleet", () => {
  const dir = join(root, "fleet");

  it("create makes N devices, with behaviours by index or id, and prints one line each", async () => {
    const r = await runCapture(
      [
        "sim",
        "fleet",
        "create",
        "--dir",
        dir,
        "--count",
        "3",
        "--behaviour",
        "1:2.0.0=refuses",
        "--behaviour",
        "24:0a:c4:fe:00:02:2.1.0=crash-loop",
      ],
      root,
    );
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines.map((l) => l.split(" ").slice(0, 2).join(" "))).toEqual([
      "240ac4fe0000 esp32",
      "240ac4fe0001 esp32",
      "240ac4fe0002 esp32",
    ]);
    const fleet = loadFleet(dir);
    expect(lines.map((l) => l.split(" ")[2])).toEqual(fleet.devices.map((d) => d.stateFile));
    expect(r.stderr).toContain("secure boot v1");
    expect(fleet.devices.map((d) => loadFleetDevice(d).spec.behaviours)).toEqual([
      {},
      { "2.0.0": "refuses" },
      { "2.1.0": "crash-loop" },
    ]);
  });

  it("list boots a copy of each device and says what it runs", async () => {
    const r = await runCapture(["sim", "fleet", "list", "--dir", dir], root);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual(
      loadFleet(dir).devices.map((d) => `${d.deviceId} esp32 ${d.stateFile} runs 1.0.0 from ota_0`),
    );
  });

  it("refuses an existing fleet, a device it does not have, and a malformed behaviour", async () => {
    const again = await runCapture(["sim", "fleet", "create", "--dir", dir, "--count", "1"], root);
    expect([again.code, again.stderr]).toEqual([1, expect.stringContaining("E_FLEET_EXISTS")]);
    const unknown = await runCapture(
      [
        "sim",
        "fleet",
        "create",
        "--dir",
        join(root, "x"),
        "--count",
        "2",
        "--behaviour",
        "5:2.0.0=hang",
      ],
      root,
    );
    expect([unknown.code, unknown.stderr]).toEqual([
      1,
      expect.stringContaining("E_FLEET_DEVICE_UNKNOWN"),
    ]);
    const bad = await runCapture(
      [
        "sim",
        "fleet",
        "create",
        "--dir",
        join(root, "y"),
        "--count",
        "2",
        "--behaviour",
        "0=2.0.0",
      ],
      root,
    );
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining("E_USAGE")]);
    const missing = await runCapture(["sim", "fleet", "list", "--dir", root], root);
    expect([missing.code, missing.stderr]).toEqual([1, expect.stringContaining("E_FLEET_MISSING")]);
  });

  it.runIf(socatAvailable())(
    "serve prints `id path` per device once the links exist, and removes them when it stops",
    async () => {
      const links = join(root, "links");
      let out = "";
      let err = "";
      const serving = runCli(
        ["sim", "fleet", "serve", "--dir", dir, "--links", links, "--duration", "1500ms"],
        { write: (s: string) => (out += s) },
        { write: (s: string) => (err += s) },
        root,
      );
      for (let i = 0; i < 100 && out.split("\n").length < 4; i++)
        await new Promise((r) => setTimeout(r, 20));
      const served = out.trim().split("\n");
      expect(served).toEqual(
        loadFleet(dir).devices.map((d) => `${d.deviceId} ${join(links, `tty-${d.deviceId}`)}`),
      );
      for (const l of served) expect(lstatSync(l.split(" ")[1]!).isSymbolicLink()).toBe(true);
      expect(await serving).toBe(0);
      expect(err).toContain("3 state file(s) saved");
      for (const l of served) expect(existsSync(l.split(" ")[1]!)).toBe(false);
    },
    10_000,
  );
});
