/**
 * Power cuts inside the C firmware's flash operations: a full UART OTA (wasm device side) is
 * run once to count its flash operations (slot erases and programs, progress record, otadata),
 * then rerun from the same device with power cut half-way through 6 operations spread over
 * the whole run, power back 300 ms later, and the host retrying sessions as the gateway does.
 * Every run must end with the new app confirmed and the slot byte-identical: the cut never
 * activates a wrong image and the progress record resumes the transfer.
 * (The sweep over every operation, on both chips, is the power-cut suite's, next session.)
 */
import { describe, expect, it } from "vitest";
import { makeDevice, security } from "../helpers/sim.js";
import { nextImage } from "../uart/harness.js";
import { powerCutRun } from "./harness.js";

const img = nextImage("esp32", "2.0.0", 0xa000);
const base = makeDevice("esp32", security("esp32"));

describe("power cuts in the C firmware's flash operations", () => {
  let total = 0;

  it("a clean OTA counts its flash operations", async () => {
    const clean = await powerCutRun(base, "esp32", img, undefined);
    expect(clean.confirmed && clean.slotOk && clean.codes).toEqual([]);
    total = clean.ops;
    expect(total).toBeGreaterThan(img.length / 256);
  });

  it("a cut at any of 6 points spread over the OTA ends confirmed, the slot byte-identical", async () => {
    expect(total).toBeGreaterThan(0);
    for (let k = 0; k < 6; k++) {
      const cutAt = 1 + Math.floor((k * (total - 1)) / 5);
      const r = await powerCutRun(base, "esp32", img, cutAt);
      const at = `cut at op ${cutAt}/${total}`;
      // The cut struck: the session it struck in failed with a coded error.
      expect(r.codes.length, at).toBeGreaterThan(0);
      for (const c of r.codes) expect(c, at).toMatch(/^E_UART_/);
      expect(r.confirmed && r.runsNew && r.slotOk, at).toBe(true);
    }
  });
});
