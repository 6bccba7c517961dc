/**
 * docs/uart-protocol.md §4.1 shows an exchange in hex for firmware engineers to check a decoder
 * against. Its bytes must decode, with the real codec, to exactly what the line above each one
 * says, and the exchange must be what the device side does today.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { encodeFrame, FrameDecoder } from "../../src/uart/frame.js";
import { decodeInfo, encodeInfo } from "../../src/uart/messages.js";
import { describeFrame, exampleExchange, NOT_SHOWN, renderExchange } from "./example-exchange.js";

const doc = readFileSync(new URL("../../docs/uart-protocol.md", import.meta.url), "utf8");

function block(): string {
  const at = doc.indexOf("### 4.1 Example exchange");
  expect(at, "docs/uart-protocol.md has no §4.1 Example exchange").toBeGreaterThan(0);
  const m = /```text\n([\s\S]*?)\n```/.exec(doc.slice(at));
  expect(m, "§4.1 has no ```text block").not.toBeNull();
  return m![1]!;
}

interface Entry {
  label: string;
  hex: string[];
}

function entries(text: string): Entry[] {
  const out: Entry[] = [];
  for (const line of text.split("\n")) {
    if (/^[→←] /.test(line)) out.push({ label: line, hex: [] });
    else out.at(-1)?.hex.push(line);
  }
  return out;
}

describe("docs/uart-protocol.md §4.1 example exchange", () => {
  it("every frame shown decodes (both CRCs) to what its line says", () => {
    const es = entries(block());
    expect(es.length).toBeGreaterThan(10);
    let shown = 0;
    for (const e of es) {
      if (e.hex.length === 1 && e.hex[0]!.endsWith(`${NOT_SHOWN})`)) continue;
      const bytes = Uint8Array.from(
        e.hex
          .join(" ")
          .trim()
          .split(/\s+/)
          .map((h) => {
            expect(h, e.label).toMatch(/^[0-9a-f]{2}$/);
            return Number.parseInt(h, 16);
          }),
      );
      const d = new FrameDecoder();
      const evs = d.push(bytes);
      expect(
        evs.map((x) => x.kind),
        e.label,
      ).toEqual(["frame"]);
      expect(d.pending, e.label).toBe(0);
      const frame = evs[0]!.kind === "frame" ? evs[0]!.frame : undefined;
      expect(`${e.label.slice(0, 2)}${describeFrame(frame!)}`).toBe(e.label);
      expect(encodeFrame(frame!.type, frame!.payload)).toEqual(bytes);
      shown++;
    }
    expect(shown).toBeGreaterThan(10);
  });

  it("§4's INFO sizes: 420 bytes with the flag at 0, 464 with a resume block, 388/432 without the hash", () => {
    const info = entries(block()).find((e) => e.label.startsWith("← INFO"))!;
    const bytes = Uint8Array.from(
      info.hex
        .join(" ")
        .split(/\s+/)
        .map((h) => Number.parseInt(h, 16)),
    );
    const ev = new FrameDecoder().push(bytes)[0]!;
    const m = ev.kind === "frame" ? decodeInfo(ev.frame.payload) : undefined;
    expect(m?.resume).toBeUndefined();
    const resume = { offset: 0x160000, size: 8272, sha256: new Uint8Array(32), written: 4096 };
    const { partitionTableSha256: _hash, ...noHash } = m!;
    expect(encodeInfo(m!).length).toBe(420);
    expect(encodeInfo({ ...m!, resume }).length).toBe(464);
    expect(encodeInfo(noHash).length).toBe(388);
    expect(encodeInfo({ ...noHash, resume }).length).toBe(432);
    // The flag decides, the remainder is 0 or 32 bytes: anything else is malformed.
    const p = encodeInfo(m!);
    expect(decodeInfo(p.subarray(0, p.length - 1))).toBeUndefined();
    expect(decodeInfo(Uint8Array.of(...p, 0))).toBeUndefined();
    expect(decodeInfo(encodeInfo({ ...m!, resume }))?.resume).toEqual(resume);
  });

  it("§2's HELLO example decodes to HELLO version 1", () => {
    const m = /HELLO is `([0-9a-f ]+)`/.exec(doc);
    expect(m, "§2 has no HELLO example").not.toBeNull();
    const evs = new FrameDecoder().push(
      Uint8Array.from(m![1]!.split(" ").map((h) => Number.parseInt(h, 16))),
    );
    expect(evs).toHaveLength(1);
    expect(evs[0]!.kind === "frame" && describeFrame(evs[0]!.frame)).toBe("HELLO version 1");
  });

  it("is the exchange the device side produces now (regenerate: npx tsx test/tools/write-uart-example.ts)", async () => {
    expect(block()).toBe(renderExchange(await exampleExchange()));
  });
});
