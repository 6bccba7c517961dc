/**
 * `esp-ota demo`, the README's first command, end to end in-process on in-memory UART links (so it
 * runs where socat is missing, as on a fresh machine): broker, image server, three simulated
 * ESP32s, the agent, a release and a two-wave rollout in which one device rolls back. The pty
 * variant is the same code after the devices are attached (test/agent/e2e-*.test.ts cover the
 * agent on ptys).
 */
import { describe, expect, it } from "vitest";
import { runCapture } from "../helpers/cli.js";

describe("esp-ota demo", () => {
  it("--links memory: two devices updated, one rolled back, the summary says so", async () => {
    const r = await runCapture(["demo", "--links", "memory", "--app-size", "16384"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("3. devices attached over in-memory UART links");
    expect(r.stdout).toContain("5. gateway agent: 3 devices identified");
    expect(r.stdout.match(/ 2\.0\.0 from ota_1/g)).toHaveLength(2);
    expect(r.stdout).toMatch(/1\.0\.0 from ota_0 {2}\(its 2\.0\.0 failed the self-test/);
    expect(r.stdout).toContain("demo: as expected — two updated, one rolled back safely.");
  }, 60_000);

  it("--links pty without socat: E_UART_SOCAT_MISSING before anything starts", async () => {
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      const r = await runCapture(["demo", "--links", "pty"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("E_UART_SOCAT_MISSING");
      expect(r.stdout).toBe("");
    } finally {
      process.env.PATH = path;
    }
  });

  it("rejects an unknown --links value (usage error)", async () => {
    const r = await runCapture(["demo", "--links", "usb"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--links/);
  });
});
