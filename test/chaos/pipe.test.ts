import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ToxicPipe } from "../../src/chaos/pipe.js";
import {
  type Item,
  type LatencyToxic,
  parseToxicSpec,
  type SlowCloseToxic,
  type Toxic,
} from "../../src/chaos/toxics.js";
import { prng } from "../../src/sim/virtual-link.js";

function toxic(spec: string): Toxic {
  const r = parseToxicSpec(spec);
  if (!r.ok) throw new Error(r.reason);
  return r.value;
}

const bytes = (n: number, seed = 1) => {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
};

/** Runs a pipe to the end on a virtual clock: items in at the given times, everything out. */
function drive(pipe: ToxicPipe, inputs: { at: number; item: Item }[], until = 1e9) {
  const out: Item[] = [];
  let now = 0;
  for (const { at, item } of inputs) {
    while (pipe.nextAt !== undefined && pipe.nextAt <= at) {
      now = pipe.nextAt;
      out.push(...pipe.advance(now));
    }
    now = at;
    out.push(...pipe.write(item, now));
  }
  while (pipe.nextAt !== undefined && pipe.nextAt <= until) {
    now = pipe.nextAt;
    out.push(...pipe.advance(now));
  }
  return out;
}

const dataOf = (items: Item[]) =>
  Buffer.concat(items.flatMap((i) => (i.kind === "data" ? [i.data] : [])));

const chunk = (data: Uint8Array, at: number) => ({
  at,
  item: { kind: "data", at: 0, data } as Item,
});

describe("a chain of toxics", () => {
  it("with no toxics, items pass at once", () => {
    const p = new ToxicPipe([], 0, Math.random);
    const d = bytes(10);
    expect(p.write({ kind: "data", at: 0, data: d }, 5)).toEqual([
      { kind: "data", at: 5, data: d },
    ]);
    expect(p.write({ kind: "eof", at: 0 }, 6)).toEqual([{ kind: "eof", at: 6 }]);
    expect(p.done).toBe(true);
    expect(p.write({ kind: "data", at: 0, data: d }, 7)).toEqual([]);
  });

  it("keeps the stream's order under jitter (a chunk waits for the one before it)", () => {
    const p = new ToxicPipe([toxic("latency:latency=100,jitter=90")], 0, prng(3));
    const inputs = Array.from({ length: 50 }, (_, i) => chunk(Uint8Array.of(i), i));
    const out = drive(p, [...inputs, { at: 60, item: { kind: "eof", at: 0 } }]);
    expect([...dataOf(out)]).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(out.at(-1)?.kind).toBe("eof");
    const times = out.map((i) => i.at);
    expect(times).toEqual([...times].sort((a, b) => a - b));
  });

  it("any chunking of the input gives the same bytes out (latency + bandwidth + slicer + slow_close)", () => {
    const chain = [
      toxic("latency:latency=20,jitter=10"),
      toxic("bandwidth:rate=50"),
      toxic("slicer:average_size=37,size_variation=11,delay=300"),
      toxic("slow_close:delay=100"),
    ];
    const input = bytes(3000, 9);
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 2999 }), { maxLength: 20 }),
        fc.integer(),
        (cuts, seed) => {
          const at = [...new Set(cuts)].sort((a, b) => a - b);
          const bounds = [0, ...at, 3000];
          const pieces = bounds.slice(1).map((end, i) => input.subarray(bounds[i]!, end));
          const p = new ToxicPipe(chain, 0, prng(seed));
          const out = drive(p, [
            ...pieces.map((d, i) => chunk(d, i * 3)),
            { at: 100, item: { kind: "eof", at: 0 } },
          ]);
          expect(dataOf(out)).toEqual(Buffer.from(input));
          expect(out.at(-1)?.kind).toBe("eof");
          expect(p.queuedBytes).toBe(0);
        },
      ),
      { numRuns: 30 },
    );
  });

  it("counts the bytes it holds", () => {
    const p = new ToxicPipe([toxic("latency:latency=100")], 0, Math.random);
    p.write({ kind: "data", at: 0, data: bytes(300) }, 0);
    expect(p.queuedBytes).toBe(300);
    expect(p.nextAt).toBe(100);
    expect(p.advance(99)).toEqual([]);
    expect(p.advance(100)).toHaveLength(1);
    expect(p.queuedBytes).toBe(0);
  });

  it("limit_data then slow_close: the cut is held back like a FIN", () => {
    const p = new ToxicPipe(
      [toxic("limit_data:bytes=4"), toxic("slow_close:delay=50")],
      0,
      Math.random,
    );
    const out = drive(p, [chunk(bytes(10), 0), chunk(bytes(10), 1)]);
    expect(out.map((i) => [i.kind, i.at, i.kind === "data" ? i.data.length : 0])).toEqual([
      ["data", 0, 4],
      ["close", 50, 0],
    ]);
    expect(p.done).toBe(true);
  });

  it("timeout closes at its deadline even with nothing flowing", () => {
    const p = new ToxicPipe([toxic("timeout:timeout=200")], 1000, Math.random);
    expect(p.nextAt).toBe(1200);
    expect(p.write({ kind: "data", at: 0, data: bytes(5) }, 1100)).toEqual([]);
    expect(p.advance(1200)).toEqual([{ kind: "close", at: 1200 }]);
  });

  it("a source's FIN before the timeout's deadline passes, and the deadline is forgotten", () => {
    const p = new ToxicPipe([toxic("timeout:timeout=200")], 0, Math.random);
    expect(p.write({ kind: "eof", at: 0 }, 50)).toEqual([{ kind: "eof", at: 50 }]);
    expect(p.nextAt).toBeUndefined();
  });
});

describe("changing the toxics of an open connection", () => {
  it("a toxic added later applies to the next chunk", () => {
    const p = new ToxicPipe([], 0, Math.random);
    expect(p.write({ kind: "data", at: 0, data: bytes(1) }, 10)).toHaveLength(1);
    p.setToxics([toxic("latency:latency=300")], 20);
    expect(p.write({ kind: "data", at: 0, data: bytes(1) }, 30)).toEqual([]);
    expect(p.nextAt).toBe(330);
  });

  it("a removed toxic lets what it holds go at once, in order", () => {
    const lat = toxic("latency:latency=1000");
    const bw = toxic("bandwidth:rate=1");
    const p = new ToxicPipe([lat, bw], 0, Math.random);
    const a = bytes(50, 1);
    const b = bytes(50, 2);
    p.write({ kind: "data", at: 0, data: a }, 0); // reaches bandwidth at 1000
    expect(p.advance(1000)).toEqual([]); // in bandwidth until 1050
    p.write({ kind: "data", at: 0, data: b }, 1001); // in latency until 2001
    // Removing the latency: b enters bandwidth behind a.
    const out1 = p.setToxics([bw], 1010);
    expect(out1).toEqual([]);
    const rest = drive(p, []);
    expect(dataOf(rest)).toEqual(Buffer.concat([a, b]));
    expect(rest.at(-1)!.at).toBe(1100);
    // Removing the last toxic lets everything out now.
    const q = new ToxicPipe([lat], 0, Math.random);
    q.write({ kind: "data", at: 0, data: a }, 0);
    expect(q.setToxics([], 5)).toEqual([{ kind: "data", at: 5, data: a }]);
  });

  it("an updated toxic lets what it holds out at once and uses the new parameters after", () => {
    const lat = toxic("latency:latency=1000") as LatencyToxic;
    const p = new ToxicPipe([lat], 0, Math.random);
    p.write({ kind: "data", at: 0, data: bytes(3) }, 0);
    const out = p.setToxics([{ ...lat, latencyMs: 10 }], 100);
    expect(out.map((i) => i.at)).toEqual([100]);
    p.write({ kind: "data", at: 0, data: bytes(3) }, 200);
    expect(p.nextAt).toBe(210);
  });

  it("removing a timeout that dropped data closes the connection; one that dropped none does not", () => {
    const t = toxic("timeout");
    const p = new ToxicPipe([t], 0, Math.random);
    p.write({ kind: "data", at: 0, data: bytes(3) }, 1);
    expect(p.setToxics([], 2)).toEqual([{ kind: "close", at: 2 }]);
    const q = new ToxicPipe([t], 0, Math.random);
    expect(q.setToxics([], 2)).toEqual([]);
    expect(q.write({ kind: "data", at: 0, data: bytes(3) }, 3)).toHaveLength(1);
  });

  it("an end held by a toxic that is updated still ends the stream", () => {
    const sc = toxic("slow_close:delay=1000") as SlowCloseToxic;
    const p = new ToxicPipe([sc], 0, Math.random);
    p.write({ kind: "eof", at: 0 }, 0);
    expect(p.setToxics([{ ...sc, delayMs: 5 }], 10)).toEqual([{ kind: "eof", at: 10 }]);
    expect(p.done).toBe(true);
  });
});
