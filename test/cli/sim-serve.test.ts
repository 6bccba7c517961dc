import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "../../src/cli/program.js";
import { SimDevice } from "../../src/sim/device.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { runCapture } from "../helpers/cli.js";
import { makeDevice, security } from "../helpers/sim.js";

const haveSocat = socatAvailable();
if (!haveSocat && process.env.CI === "true")
  throw new Error("socat is required in CI for `sim serve` tests (apt-get install socat)");
if (!haveSocat) console.warn("sim-serve.test: socat is not installed; not run here");

describe.runIf(haveSocat)("esp-ota sim serve", () => {
  it("attaches a simulated ESP32 to a pty that `device info` can talk to, and saves its state", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-serve-"));
    const state = join(dir, "dev.sim");
    const dev = makeDevice("esp32", security("esp32"));
    dev.powerOn();
    writeFileSync(state, dev.serialize());
    let out = "";
    let err = "";
    const serving = runCli(
      ["sim", "serve", "--state", state, "--pty", "--duration", "4000"],
      { write: (s: string) => (out += s) },
      { write: (s: string) => (err += s) },
      dir,
    );
    for (let i = 0; i < 100 && !out.includes("\n"); i++)
      await new Promise((r) => setTimeout(r, 50));
    const pty = out.trim();
    expect(pty).toMatch(/host$/);
    // Let the device finish booting (bootMs + self-test in real time).
    await new Promise((r) => setTimeout(r, 1000));
    const info = await runCapture(["device", "info", "--port", pty, "--json"], dir);
    expect(info.code).toBe(0);
    const j = JSON.parse(info.stdout);
    expect(j.chip).toBe("esp32");
    expect(j.mac).toBe(dev.id);
    expect(j.nextSlot).toBe(0x160000);
    expect(await serving).toBe(0);
    expect(err).toContain("state saved");
    expect(SimDevice.deserialize(new Uint8Array(readFileSync(state))).id).toBe(dev.id);
  }, 20_000);

  it("needs exactly one of --pty and --port", async () => {
    const r = await runCapture(["sim", "serve", "--state", "x.sim"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("E_USAGE");
  });
});
