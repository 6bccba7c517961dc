import { describe, expect, it } from "vitest";
import { runCapture } from "../helpers/cli.js";

describe("esp-ota rom: arguments", () => {
  it("needs --port; a bad mode is a usage error (exit 2)", async () => {
    expect((await runCapture(["rom", "read-mac"])).code).toBe(2);
    const r = await runCapture(["rom", "read-mac", "--port", "/dev/null", "--before", "sometimes"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("sometimes");
  });

  it("a port that cannot be opened is E_UART_PORT (exit 1), nothing written", async () => {
    const r = await runCapture([
      "rom",
      "erase-region",
      "--port",
      "/nonexistent/tty",
      "0x1000",
      "0x1000",
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("E_UART_PORT");
  });
});
