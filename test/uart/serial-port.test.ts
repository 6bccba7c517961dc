/**
 * SerialBytePort on a pseudo-terminal (socat pty pairs: `sim serve --pty`, the tests). Setting a
 * rate on a pty flushes its queues (bindings-cpp: tcflush(fd, TCIOFLUSH) before tcsetattr), so a
 * host that switched back to the console rate after REBOOT threw away the boot log a simulated
 * device had already written (test/cli/sim-serve.test.ts, 20 of 21 lines lost at load 11).
 */
import { describe, expect, it } from "vitest";
import { isPseudoTerminal, SerialBytePort } from "../../src/uart/serial-port.js";
import { openPtyPair, socatAvailable } from "../../src/uart/socat.js";

const haveSocat = socatAvailable();
if (!haveSocat && process.env.CI === "true")
  throw new Error("socat is required in CI for the serial-port tests (apt-get install socat)");
if (!haveSocat) console.warn("serial-port.test: socat is not installed; pty cases not run here");

describe("isPseudoTerminal", () => {
  it("a regular file, a directory, /dev/null and a missing path are not ptys", () => {
    expect(isPseudoTerminal(new URL(import.meta.url).pathname)).toBe(false);
    expect(isPseudoTerminal("/tmp")).toBe(false);
    expect(isPseudoTerminal("/dev/null")).toBe(false);
    expect(isPseudoTerminal("/no/such/port")).toBe(false);
  });

  it.runIf(haveSocat)("both ends of a socat pair are (through socat's symlinks)", async () => {
    const pair = await openPtyPair();
    try {
      expect(isPseudoTerminal(pair.host)).toBe(true);
      expect(isPseudoTerminal(pair.device)).toBe(true);
    } finally {
      pair.close();
    }
  });
});

describe.runIf(haveSocat)("SerialBytePort on a pty", () => {
  it("a rate change loses nothing already queued for the reader", async () => {
    const pair = await openPtyPair();
    const dev = await SerialBytePort.open(pair.device, 921600);
    const host = await SerialBytePort.open(pair.host, 921600);
    try {
      const got: number[] = [];
      host.onData((b) => got.push(...b));
      const text = new TextEncoder().encode("ets Jun  8 2016 00:22:57\r\n".repeat(40));
      dev.write(text);
      // Switch while the bytes are in flight through socat and the kernel's queues; with the
      // flush this lost some or all of them.
      host.setBaud(115200);
      dev.setBaud(115200);
      const deadline = Date.now() + 10_000;
      while (got.length < text.length && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      expect(got.length).toBe(text.length);
      expect(host.baud).toBe(115200);
    } finally {
      dev.close();
      host.close();
      pair.close();
    }
  });
});
