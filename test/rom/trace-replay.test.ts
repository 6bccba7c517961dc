/**
 * The esptool traces in test/fixtures/rom_protocol (esptool v5.3.1 --no-stub talking to a
 * scripted device; provenance in test/fixtures/README.md) replayed against the simulated ROM:
 * each host->device frame esptool sent goes in, and what the simulated ROM answers must equal,
 * byte for byte, what the trace shows coming back. The scripted device's answers followed
 * esptool's protocol doc, so they pin the framing, op echo, value field, status bytes and data;
 * register values a blank chip holds are 0 in both.
 */
import { describe, expect, it } from "vitest";
import { decodeRequest, OP } from "../../src/rom/protocol.js";
import { SlipDecoder } from "../../src/rom/slip.js";
import { memoryPair } from "../../src/sim/paced-link.js";
import { attachRomLoader, type RomExit } from "../../src/sim/rom-loader.js";
import { blankDevice, fixture, loadTrace, type TraceFrame } from "./helpers.js";

const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function replay(name: string, opts: { downloadDisabled?: boolean } = {}) {
  const trace = loadTrace(name);
  const dev = blankDevice();
  if (opts.downloadDisabled) dev.efuses.disableDownloadMode();
  // esptool opens the port at the ROM's 115200 and changes the rate later (CHANGE_BAUDRATE).
  const { host, device } = memoryPair(115200);
  const got: string[] = [];
  host.onData((b) => {
    for (const f of new SlipDecoder().push(b)) got.push(toHex(f));
  });
  const exits: RomExit[] = [];
  attachRomLoader(dev, device, { onExit: (e) => exits.push(e) });
  const mismatches: string[] = [];
  let exchanges = 0;
  for (let i = 0; i < trace.length; i++) {
    const f = trace[i]!;
    if (f.dir !== "host->mock") continue;
    got.length = 0;
    host.write(hex(f.frame_hex));
    const want: string[] = [];
    for (let j = i + 1; j < trace.length && trace[j]!.dir === "mock->host"; j++)
      want.push(toHex(new SlipDecoder().push(hex((trace[j] as TraceFrame).frame_hex))[0]!));
    exchanges++;
    if (got.join(" ") !== want.join(" "))
      mismatches.push(`#${exchanges} op ${f.op}: got [${got.join(" ")}] want [${want.join(" ")}]`);
  }
  return { dev, mismatches, exchanges, exits, trace };
}

describe("esptool traces replayed against the simulated ROM", () => {
  it("read-mac: every answer as in the trace, and the MAC esptool printed", () => {
    const r = replay("mock_read_mac");
    expect(r.mismatches).toEqual([]);
    expect(r.exchanges).toBe(19);
  });

  it("write-flash --no-compress at 460800: answers byte for byte, payload in flash, MD5 equal", () => {
    const r = replay("mock_write_flash_nocompress");
    expect(r.mismatches).toEqual([]);
    const payload = fixture("payload_4387.bin");
    expect(toHex(r.dev.flash.read(0x10000, payload.length))).toBe(toHex(payload));
    // esptool pads to 4 bytes with 0xFF (4387 → 4388); the rest of the last block stays erased.
    expect(r.dev.flash.read(0x10000 + payload.length, 1)[0]).toBe(0xff);
  });

  it("write-flash --compress --after soft-reset: inflated into flash, MD5 equal, ROM exits", () => {
    const r = replay("mock_write_flash_compress_softreset");
    expect(r.mismatches).toEqual([]);
    const pt = fixture("pt_brief.bin");
    expect(toHex(r.dev.flash.read(0x8000, pt.length))).toBe(toHex(pt));
    expect(r.exits).toEqual([{ kind: "run-user-code" }]);
  });

  it("UART_DOWNLOAD_DIS: the five SYNCs of a one-attempt connect get no answer at all", () => {
    const r = replay("noanswer_read_mac", { downloadDisabled: true });
    expect(r.mismatches).toEqual([]);
    const syncs = r.trace.filter(
      (f) =>
        f.dir === "host->mock" && decodeRequest(new SlipDecoder().push(hex(f.frame_hex))[0]!).ok,
    );
    expect(syncs.map((f) => f.op)).toEqual(Array(5).fill(`0x0${OP.SYNC.toString(16)}`));
  });
});
