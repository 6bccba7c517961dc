/**
 * One short real run: `esp-ota sim serve --boot download` on a socat pty, and `esp-ota rom
 * write-flash` writing a new app over it as esptool would (--before no-reset on a pty; --after
 * soft-reset makes the ROM run the app). The state file afterwards boots the new app.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "../../src/cli/program.js";
import { SimDevice } from "../../src/sim/device.js";
import { runCapture } from "../helpers/cli.js";
import { app, makeDevice } from "../helpers/sim.js";
import { requireSocat } from "../helpers/sim-serve.js";

const haveSocat = requireSocat("rom pty test");

describe.runIf(haveSocat)("esp-ota rom over a pty to sim serve --boot download", () => {
  it("write-flash --compress flashes an app that then boots", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-rom-"));
    const state = join(dir, "dev.sim");
    const dev = makeDevice("esp32", {});
    dev.powerOn();
    expect(dev.state.kind === "running" && dev.state.app?.version).toBe("1.0.0");
    writeFileSync(state, dev.serialize());
    // Small, so its wire time at 115200 (the pty is paced as a UART) stays short: 4 KB ≈ 0.36 s.
    writeFileSync(join(dir, "app2.bin"), app("esp32", "2.0.0", 0x1000));
    let out = "";
    let err = "";
    const serving = runCli(
      ["sim", "serve", "--state", state, "--pty", "--boot", "download", "--duration", "4s"],
      { write: (s: string) => (out += s) },
      { write: (s: string) => (err += s) },
      dir,
    );
    // socat and the pty come up in ~0.1 s; allow 10 s on a loaded machine (the 4 s starts after).
    for (let i = 0; i < 500 && !out.includes("\n"); i++)
      await new Promise((r) => setTimeout(r, 20));
    const pty = out.trim();
    const t0 = performance.now();
    const w = await runCapture(
      [
        "rom",
        "write-flash",
        "--port",
        pty,
        "--before",
        "no-reset",
        "--after",
        "soft-reset",
        "--compress",
        "0x10000",
        "app2.bin",
      ],
      dir,
    );
    const ms = performance.now() - t0;
    console.log(`rom write-flash over the pty: ${Math.round(ms)} ms`);
    expect(w.stderr).toContain("chip is ESP32");
    expect(w.code, w.stderr).toBe(0);
    expect(w.stdout).toMatch(/hash of data verified/);
    // Measured 0.5 s; the served sim stops at 4 s (a 7× margin on a busy machine).
    expect(ms).toBeLessThan(3500);
    expect(await serving).toBe(0);
    expect(err).toContain("the ROM left download mode");
    const after = SimDevice.deserialize(new Uint8Array(readFileSync(state)));
    after.powerOn();
    expect(after.state.kind === "running" && after.state.app?.version).toBe("2.0.0");
  }, 20_000);
});
