import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatHostPort, parseHostPort } from "../../src/chaos/address.js";
import {
  bandwidthPieces,
  expireToxic,
  formatToxicSpec,
  type Item,
  latencyDelay,
  parseToxicSpec,
  sliceOffsets,
  startToxic,
  stepToxic,
  stopToxic,
  TOXIC_PARAMS,
  TOXIC_TYPES,
  type Toxic,
  toxicFromJson,
  updateToxicFields,
} from "../../src/chaos/toxics.js";
import { prng } from "../../src/sim/virtual-link.js";

function toxic(spec: string): Toxic {
  const r = parseToxicSpec(spec);
  if (!r.ok) throw new Error(r.reason);
  return r.value;
}

type DataItem = Extract<Item, { kind: "data" }>;

const data = (n: number, at = 0): DataItem => ({
  kind: "data",
  at,
  data: Uint8Array.from({ length: n }, (_, i) => i & 0xff),
});

describe("toxic specs", () => {
  const rows: { spec: string; expect: Toxic | string }[] = [
    {
      spec: "latency:downstream:latency=300,jitter=50",
      expect: {
        type: "latency",
        name: "latency_downstream",
        stream: "downstream",
        toxicity: 1,
        latencyMs: 300,
        jitterMs: 50,
      },
    },
    {
      spec: "latency:latency=10",
      expect: {
        type: "latency",
        name: "latency_downstream",
        stream: "downstream",
        toxicity: 1,
        latencyMs: 10,
        jitterMs: 0,
      },
    },
    {
      spec: " bandwidth : upstream : rate=0.5 , toxicity=0.25, name=slow ",
      expect: {
        type: "bandwidth",
        name: "slow",
        stream: "upstream",
        toxicity: 0.25,
        rateKBps: 0.5,
      },
    },
    {
      spec: "timeout",
      expect: {
        type: "timeout",
        name: "timeout_downstream",
        stream: "downstream",
        toxicity: 1,
        timeoutMs: 0,
      },
    },
    {
      spec: "reset_peer:upstream",
      expect: {
        type: "reset_peer",
        name: "reset_peer_upstream",
        stream: "upstream",
        toxicity: 1,
        timeoutMs: 0,
      },
    },
    {
      spec: "slicer::average_size=64,size_variation=16,delay=500",
      expect: "stream", // an empty stream is not a stream
    },
    {
      spec: "slicer:downstream:average_size=64,size_variation=16,delay=500",
      expect: {
        type: "slicer",
        name: "slicer_downstream",
        stream: "downstream",
        toxicity: 1,
        averageSize: 64,
        sizeVariation: 16,
        delayUs: 500,
      },
    },
    {
      spec: "limit_data:upstream:bytes=0",
      expect: {
        type: "limit_data",
        name: "limit_data_upstream",
        stream: "upstream",
        toxicity: 1,
        bytes: 0,
      },
    },
    { spec: "slow_close:delay=1e3", expect: "" },
    { spec: "", expect: "type" },
    { spec: "jitter:latency=1", expect: "type" },
    { spec: "latency", expect: "latency (latencyMs, ms) is required" },
    { spec: "latency:sideways:latency=1", expect: "stream" },
    { spec: "latency:latency=-1", expect: "not a number" },
    { spec: "latency:latency=1.5", expect: "whole number" },
    { spec: "latency:latency=1,latency=2", expect: "given twice" },
    { spec: "latency:latency=1,rate=2", expect: 'unknown key "rate"' },
    { spec: "latency:downstream:latency", expect: "not key=value" },
    { spec: "latency:latency", expect: 'stream "latency"' },
    { spec: "latency:latency=3000000000", expect: "at most" },
    { spec: "bandwidth:rate=0", expect: "greater than 0" },
    { spec: "slicer:average_size=0", expect: "at least 1" },
    { spec: "slicer:average_size=8,size_variation=8", expect: "smaller than average_size" },
    { spec: "latency:latency=1,toxicity=1.5", expect: "toxicity" },
    { spec: "latency:latency=1,name=a/b", expect: "name" },
    { spec: "latency:up:stream:x", expect: "TYPE[:STREAM]" },
  ];
  for (const row of rows) {
    it(JSON.stringify(row.spec), () => {
      const r = parseToxicSpec(row.spec);
      if (typeof row.expect === "string") {
        if (row.expect === "") {
          expect(r.ok).toBe(true);
          return;
        }
        expect(r.ok).toBe(false);
        if (!r.ok) {
          expect(r.code).toBe("E_CHAOS_TOXIC");
          expect(r.reason).toContain(row.expect);
        }
      } else {
        expect(r).toEqual({ ok: true, value: row.expect });
      }
    });
  }

  it("random strings give a toxic or E_CHAOS_TOXIC, never an exception", () => {
    const alphabet = fc.constantFrom(
      ..."latencybandwidthslow_closetimeoutreset_peerslicerlimit_dataupdown:=,.-e0123456789 ".split(
        "",
      ),
    );
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: alphabet })), (s) => {
        const r = parseToxicSpec(s);
        expect(r.ok || r.code === "E_CHAOS_TOXIC").toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it("random JSON gives a toxic or E_CHAOS_TOXIC, never an exception", () => {
    const typed = fc.record(
      {
        type: fc.constantFrom(...TOXIC_TYPES, "nope"),
        latencyMs: fc.anything(),
        rateKBps: fc.anything(),
        averageSize: fc.anything(),
        sizeVariation: fc.anything(),
        toxicity: fc.anything(),
        stream: fc.anything(),
        name: fc.anything(),
      },
      { requiredKeys: ["type"] },
    );
    fc.assert(
      fc.property(fc.oneof(fc.anything(), typed), (v) => {
        const r = toxicFromJson(v);
        expect(r.ok || r.code === "E_CHAOS_TOXIC").toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  const anyToxic: fc.Arbitrary<Toxic> = fc
    .record({
      type: fc.constantFrom(...TOXIC_TYPES),
      stream: fc.constantFrom("upstream", "downstream"),
      toxicity: fc.oneof(fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true })),
      name: fc.option(fc.stringMatching(/^[a-z0-9_.-]{1,20}$/), { nil: undefined }),
      n: fc.array(fc.integer({ min: 1, max: 100_000 }), { minLength: 3, maxLength: 3 }),
    })
    .map(({ type, stream, toxicity, name, n }) => {
      const fields: Record<string, unknown> = { type, stream, toxicity };
      if (name) fields.name = name;
      TOXIC_PARAMS[type].forEach((p, i) => {
        fields[p.field] = p.integer ? n[i]! : n[i]! / 8;
      });
      if (type === "slicer") fields.sizeVariation = Math.floor(n[1]! % n[0]!);
      const r = toxicFromJson(fields);
      if (!r.ok) throw new Error(r.reason);
      return r.value;
    });

  it("parse(format(t)) == t", () => {
    fc.assert(
      fc.property(anyToxic, (t) => {
        expect(parseToxicSpec(formatToxicSpec(t))).toEqual({ ok: true, value: t });
      }),
    );
  });

  it("JSON refuses unknown fields (a typo must not be ignored)", () => {
    const r = toxicFromJson({ type: "latency", latency: 300 });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toContain('unknown field "latency"');
  });

  it("an update changes parameters and toxicity, never the identity", () => {
    const t = toxic("latency:latency=100");
    expect(updateToxicFields(t, { latencyMs: 5, toxicity: 0.5 })).toEqual({
      ok: true,
      value: { ...t, latencyMs: 5, toxicity: 0.5 },
    });
    expect(updateToxicFields(t, { name: t.name, latencyMs: 5 }).ok).toBe(true);
    for (const bad of [
      { stream: "upstream" },
      { type: "timeout" },
      { name: "x" },
      { latencyMs: -1 },
      [],
    ]) {
      const r = updateToxicFields(t, bad);
      expect(r.ok, JSON.stringify(bad)).toBe(false);
    }
  });
});

describe("what each toxic does to a chunk", () => {
  const random = prng(7);
  const run = (t: Toxic, item: Item, now = 0) => {
    const s = startToxic(t, now, random);
    return stepToxic(t, s, item, random);
  };

  it("latency: the chunk is due latency later; jitter stays within ±jitter", () => {
    expect(run(toxic("latency:latency=300"), data(10, 1000)).out).toEqual([
      { ...data(10), at: 1300 },
    ]);
    const t = toxic("latency:latency=100,jitter=40") as Extract<Toxic, { type: "latency" }>;
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (r) => {
        const d = latencyDelay(t, () => r);
        expect(d).toBeGreaterThanOrEqual(60);
        expect(d).toBeLessThanOrEqual(140);
      }),
    );
    // Jitter larger than the latency never makes a negative delay.
    expect(latencyDelay({ ...t, latencyMs: 10, jitterMs: 50 }, () => 0)).toBe(0);
  });

  it("latency: the end of the stream is not delayed by the toxic itself", () => {
    expect(run(toxic("latency:latency=300"), { kind: "eof", at: 5 }).out).toEqual([
      { kind: "eof", at: 5 },
    ]);
  });

  it("bandwidth: 100 ms pieces, each due when its last byte has crossed", () => {
    // 2 KB/s = 2 bytes/ms: 200-byte pieces, 500 bytes take 250 ms.
    const out = bandwidthPieces(data(500).data, 1000, 2) as Extract<Item, { kind: "data" }>[];
    expect(out.map((i) => [i.data.length, i.at])).toEqual([
      [200, 1100],
      [200, 1200],
      [100, 1250],
    ]);
    const t = toxic("bandwidth:rate=2");
    const s0 = startToxic(t, 0, random);
    const a = stepToxic(t, s0, data(500, 0), random);
    // A second chunk arriving while the first is on the wire waits for it.
    const b = stepToxic(t, a.state, data(100, 10), random);
    expect(b.out.map((i) => i.at)).toEqual([300]);
  });

  it("slicer: the same bytes, cut into pieces within the variation, delay apart", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 5000 }),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 0, max: 299 }),
        fc.integer(),
        (len, avg, v0, seed) => {
          const v = v0 % avg;
          const cuts = sliceOffsets(len, avg, v, prng(seed));
          expect(cuts[0]).toBe(0);
          expect(cuts.at(-1)).toBe(len);
          for (let i = 1; i < cuts.length; i++) {
            const size = cuts[i]! - cuts[i - 1]!;
            expect(size).toBeGreaterThan(0);
            expect(size).toBeLessThanOrEqual(avg + v);
          }
        },
      ),
    );
    const t = toxic("slicer:average_size=10,delay=2000");
    const out = run(t, data(40, 100)).out as Extract<Item, { kind: "data" }>[];
    expect(out.map((i) => [i.data.length, i.at])).toEqual([
      [10, 100],
      [10, 102],
      [10, 104],
      [10, 106],
    ]);
    expect(Buffer.concat(out.map((i) => i.data))).toEqual(Buffer.from(data(40).data));
    expect(() => sliceOffsets(10, 4, 4, random)).toThrow(RangeError);
  });

  it("limit_data: lets exactly `bytes` through, then closes", () => {
    const t = toxic("limit_data:bytes=25");
    let s = startToxic(t, 0, random);
    const a = stepToxic(t, s, data(10, 1), random);
    s = a.state;
    expect(a.out).toHaveLength(1);
    const b = stepToxic(t, s, data(20, 2), random);
    expect(b.out).toEqual([
      { kind: "data", at: 2, data: data(20).data.subarray(0, 15) },
      { kind: "close", at: 2 },
    ]);
    // bytes=0: the first chunk closes the connection and nothing passes.
    expect(run(toxic("limit_data:bytes=0"), data(5, 3)).out).toEqual([{ kind: "close", at: 3 }]);
    // An update keeps the count, as Toxiproxy keeps a toxic's state until it is removed.
    expect(startToxic(t, 0, random, b.state).bytes).toBe(25);
  });

  it("timeout: drops data, closes at its deadline; 0 never closes", () => {
    const t = toxic("timeout:timeout=500");
    const s = startToxic(t, 100, random);
    expect(s.deadline).toBe(600);
    const a = stepToxic(t, s, data(10, 200), random);
    expect(a.out).toEqual([]);
    expect(a.state.bytes).toBe(10);
    expect(expireToxic(t, a.state).out).toEqual([{ kind: "close", at: 600 }]);
    expect(startToxic(toxic("timeout"), 100, random).deadline).toBeUndefined();
    // Removed after dropping data: the stream has a hole, so the connection closes.
    expect(stopToxic(t, a.state, 300)).toEqual([{ kind: "close", at: 300 }]);
    expect(stopToxic(t, s, 300)).toEqual([]);
  });

  it("reset_peer: the first item starts the clock; nothing passes; then RST", () => {
    const t = toxic("reset_peer:timeout=50");
    const s = startToxic(t, 0, random);
    expect(s.deadline).toBeUndefined();
    const a = stepToxic(t, s, data(10, 1000), random);
    expect(a.out).toEqual([]);
    expect(a.state.deadline).toBe(1050);
    const b = stepToxic(t, a.state, data(10, 1010), random);
    expect(b.out).toEqual([]);
    expect(b.state.deadline).toBe(1050);
    expect(expireToxic(t, b.state).out).toEqual([{ kind: "reset", at: 1050 }]);
    expect(stopToxic(t, b.state, 1020)).toEqual([{ kind: "reset", at: 1020 }]);
  });

  it("slow_close: data passes, the end waits", () => {
    const t = toxic("slow_close:delay=400");
    expect(run(t, data(3, 10)).out).toEqual([{ ...data(3), at: 10 }]);
    expect(run(t, { kind: "eof", at: 10 }).out).toEqual([{ kind: "eof", at: 410 }]);
    expect(run(t, { kind: "close", at: 10 }).out).toEqual([{ kind: "close", at: 410 }]);
    expect(run(t, { kind: "reset", at: 10 }).out).toEqual([{ kind: "reset", at: 10 }]);
  });

  it("toxicity: a toxic that loses its roll lets everything through unchanged", () => {
    const t = toxic("latency:latency=300,toxicity=0.5");
    expect(startToxic(t, 0, () => 0.49).active).toBe(true);
    const off = startToxic(t, 0, () => 0.5);
    expect(off.active).toBe(false);
    expect(stepToxic(t, off, data(3, 7), random).out).toEqual([{ ...data(3), at: 7 }]);
    // toxicity 1 applies whatever the generator returns; 0 never does.
    expect(startToxic(toxic("latency:latency=1"), 0, () => 1).active).toBe(true);
    expect(startToxic(toxic("latency:latency=1,toxicity=0"), 0, () => 0).active).toBe(false);
  });
});

describe("addresses", () => {
  const rows: [string, boolean, string | undefined][] = [
    ["127.0.0.1:1883", false, "127.0.0.1:1883"],
    ["broker.local:8883", false, "broker.local:8883"],
    ["[::1]:80", false, "[::1]:80"],
    [":0", true, "127.0.0.1:0"],
    ["8080", false, "127.0.0.1:8080"],
    [":0", false, undefined],
    ["host:70000", false, undefined],
    ["host", false, undefined],
    ["a:b:1", false, undefined],
  ];
  for (const [text, zero, want] of rows) {
    it(`${text} (port 0 ${zero ? "allowed" : "refused"})`, () => {
      const r = parseHostPort(text, "127.0.0.1", zero);
      if (want === undefined) expect(r.ok).toBe(false);
      else expect(r.ok && formatHostPort(r.value)).toBe(want);
    });
  }
});

describe("docs/chaos.md", () => {
  it("documents every toxic type with each of its keys, fields and defaults", () => {
    const doc = readFileSync(new URL("../../docs/chaos.md", import.meta.url), "utf8");
    for (const type of TOXIC_TYPES) {
      const section = doc.split(`\n### ${type}\n`)[1]?.split("\n### ")[0];
      expect(section, type).toBeDefined();
      for (const p of TOXIC_PARAMS[type]) {
        const row = section!
          .split("\n")
          .find((l) => l.startsWith(`| \`${p.key}\` | \`${p.field}\``));
        expect(row, `${type}.${p.key}`).toBeDefined();
        const dflt = row!.split("|").at(-2)!.trim();
        expect(dflt, `${type}.${p.key}`).toMatch(
          p.default === undefined ? /^required$/ : new RegExp(`^${p.default}\\b`),
        );
      }
    }
  });
});
