/** The MQTT API's messages (src/mqtt/messages.ts): codecs, bounds, generated JSON Schemas. */
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  encodeMessage,
  FINAL_STATES,
  isFinalState,
  MAX_MESSAGE_BYTES,
  MESSAGE_KINDS,
  type MessageKind,
  type MessageTypes,
  mqttJsonSchemas,
  parseMessage,
  UPDATE_STATES,
} from "../../src/mqtt/messages.js";

const id = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
const releaseId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
const at = fc
  .date({
    min: new Date("1970-01-01T00:00:00Z"),
    max: new Date("9999-12-31T23:59:59Z"),
    noInvalidDate: true,
  })
  .map((d) => d.toISOString());
const count = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const u32 = fc.nat({ max: 0xffff_ffff });
/** Any UTF-16 text (lone surrogates too) of at most n code units. */
const text = (n: number) =>
  fc.string({ unit: "binary", maxLength: n }).filter((s) => s.length <= n);
const url = fc
  .webUrl({ validSchemes: ["http", "https"] })
  .filter((u) => u.length <= 2048 && /^https?:\/\/[!-~]+$/.test(u));
const errorCode = fc.stringMatching(/^E_[A-Z0-9_]{1,20}$/);
const step = text(64);

const running = fc.record({
  project: text(32),
  version: text(32),
  secureVersion: u32,
  slot: text(16),
  offset: u32,
  state: text(32),
});
const otadata = fc.array(fc.record({ seq: fc.option(u32, { nil: null }), state: text(32) }), {
  maxLength: 2,
});
const deviceState = fc.constantFrom("idle", "offline", ...UPDATE_STATES);
const command = fc.constantFrom("info", "cancel", "retry", "reboot" as const);

const ARB: { [K in MessageKind]: fc.Arbitrary<MessageTypes[K]> } = {
  notice: fc.record(
    {
      format: fc.constant(1 as const),
      deviceId: id,
      releaseId,
      counter: count,
      manifestUrls: fc.array(url, { minLength: 1, maxLength: 8 }),
      rolloutId: id,
      issuedAt: at,
    },
    { requiredKeys: ["format", "deviceId", "releaseId", "counter", "manifestUrls", "issuedAt"] },
  ),
  status: fc.record(
    {
      format: fc.constant(1 as const),
      deviceId: id,
      gatewayId: id,
      seq: count,
      state: deviceState,
      step,
      releaseId,
      counter: count,
      rolloutId: id,
      targetVersion: text(32),
      targetSlot: fc.record({ label: text(16), offset: u32 }),
      progress: fc.record({ bytes: count, total: count }),
      running,
      previousVersion: text(32),
      otadata,
      error: fc.record({ code: errorCode, message: text(300), step }),
      startedAt: at,
      finishedAt: at,
      updatedAt: at,
    },
    { requiredKeys: ["format", "deviceId", "gatewayId", "seq", "state", "updatedAt"] },
  ),
  progress: fc.record({
    format: fc.constant(1 as const),
    deviceId: id,
    releaseId,
    step,
    bytes: count,
    total: count,
    at,
  }),
  log: fc.record({
    format: fc.constant(1 as const),
    deviceId: id,
    lines: fc.array(text(200), { maxLength: 20 }),
    dropped: count,
    at,
  }),
  presence: fc.record({
    format: fc.constant(1 as const),
    gatewayId: id,
    state: fc.constantFrom("online", "offline" as const),
    version: text(64),
    at,
  }),
  inventory: fc.record({
    format: fc.constant(1 as const),
    gatewayId: id,
    devices: fc.array(
      fc.record(
        {
          deviceId: id,
          port: text(256),
          chip: text(32),
          running,
          otadata,
          busy: fc.boolean(),
          attachedAt: at,
        },
        { requiredKeys: ["deviceId", "port", "chip", "otadata", "busy", "attachedAt"] },
      ),
      { maxLength: 5 },
    ),
    at,
  }),
  command: fc.record(
    {
      format: fc.constant(1 as const),
      command,
      deviceId: id,
      replyTo: fc.stringMatching(/^[a-z0-9/_-]{1,100}$/),
      correlationId: text(128).filter((s) => s.length > 0),
    },
    { requiredKeys: ["format", "command"] },
  ),
  response: fc.record(
    {
      format: fc.constant(1 as const),
      gatewayId: id,
      command,
      ok: fc.boolean(),
      result: fc.dictionary(
        fc.string().filter((k) => k !== "__proto__"),
        // Through JSON once, so -0 and the like are what the wire carries.
        fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown),
        { maxKeys: 5 },
      ),
      error: fc.record({ code: errorCode, message: text(300) }),
      correlationId: text(128).filter((s) => s.length > 0),
    },
    { requiredKeys: ["format", "gatewayId", "command", "ok"] },
  ),
};

function sample<K extends MessageKind>(kind: K): MessageTypes[K] {
  return fc.sample(ARB[kind], { numRuns: 1, seed: 42 })[0]!;
}

const CODES = ["E_MQTT_MESSAGE_JSON", "E_MQTT_MESSAGE_SCHEMA"];

describe("MQTT messages", () => {
  it.each(MESSAGE_KINDS)("%s: parseMessage(encodeMessage(x)) == x (property)", (kind) => {
    fc.assert(
      fc.property(ARB[kind], (m) => {
        const bytes = encodeMessage(kind, m);
        const p = parseMessage(kind, bytes);
        expect(p).toEqual({ ok: true, value: m });
        // Text parses the same as its UTF-8 bytes.
        expect(parseMessage(kind, new TextDecoder().decode(bytes))).toEqual(p);
      }),
      { numRuns: 60 },
    );
  });

  it("random bytes never throw: a coded failure", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...MESSAGE_KINDS),
        fc.uint8Array({ maxLength: 300 }),
        (kind, b) => {
          const p = parseMessage(kind, b);
          expect(p.ok).toBe(false);
          if (!p.ok) expect(CODES).toContain(p.code);
        },
      ),
    );
  });

  it("random JSON never throws: E_MQTT_MESSAGE_SCHEMA", () => {
    fc.assert(
      fc.property(fc.constantFrom(...MESSAGE_KINDS), fc.jsonValue(), (kind, v) => {
        const p = parseMessage(kind, JSON.stringify(v) ?? "null");
        expect(p.ok).toBe(false);
        if (!p.ok) expect(p.code).toBe("E_MQTT_MESSAGE_SCHEMA");
      }),
    );
  });

  it("a valid message with one field broken is E_MQTT_MESSAGE_SCHEMA naming the field (property)", () => {
    const breakers: [string, unknown][] = [
      ["format", 2],
      ["deviceId", "a/b"],
      ["gatewayId", "+"],
      ["seq", -1],
      ["counter", 1.5],
      ["state", "exploded"],
      ["updatedAt", "yesterday"],
      ["at", "2025-01-01 00:00:00"],
      ["manifestUrls", ["ftp://x/y"]],
      ["releaseId", "-leading-dash"],
      ["command", "format-flash"],
      ["ok", "yes"],
      ["devices", [{}]],
      ["lines", [42]],
      ["bytes", Number.MAX_SAFE_INTEGER + 2],
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...MESSAGE_KINDS),
        fc.constantFrom(...breakers),
        (kind, [key, bad]) => {
          const m = { ...sample(kind) } as Record<string, unknown>;
          if (!(key in m)) return;
          m[key] = bad;
          const p = parseMessage(kind, JSON.stringify(m));
          expect(p.ok).toBe(false);
          if (!p.ok) {
            expect(p.code).toBe("E_MQTT_MESSAGE_SCHEMA");
            expect(p.reason).toContain(key);
          }
          expect(() => encodeMessage(kind, m as never)).toThrow(TypeError);
        },
      ),
    );
  });

  it("refuses a missing required field, and ignores unknown ones (newer writers)", () => {
    const { seq: _, ...noSeq } = sample("status");
    const p = parseMessage("status", JSON.stringify(noSeq));
    expect(p.ok === false && p.reason).toMatch(/seq/);
    const extra = { ...sample("presence"), addedLater: { x: 1 } };
    expect(parseMessage("presence", JSON.stringify(extra)).ok).toBe(true);
  });

  it("bounds: 1..8 manifest URLs, 2 otadata entries, 256 KiB, UTF-8 only", () => {
    const n = sample("notice");
    expect(parseMessage("notice", JSON.stringify({ ...n, manifestUrls: [] })).ok).toBe(false);
    const nine = Array.from({ length: 9 }, (_, i) => `https://m${i}.example/x`);
    expect(parseMessage("notice", JSON.stringify({ ...n, manifestUrls: nine })).ok).toBe(false);
    const s = { ...sample("status"), otadata: [0, 1, 2].map((seq) => ({ seq, state: "VALID" })) };
    expect(parseMessage("status", JSON.stringify(s)).ok).toBe(false);

    const big = { ...sample("log"), lines: Array.from({ length: 100 }, () => "x".repeat(3000)) };
    const p = parseMessage("log", JSON.stringify(big));
    expect(p.ok === false && p.code).toBe("E_MQTT_MESSAGE_JSON");
    expect(JSON.stringify(big).length).toBeGreaterThan(MAX_MESSAGE_BYTES);
    expect(() => encodeMessage("log", big)).toThrow(TypeError);

    const bad = new Uint8Array([0x7b, 0xff, 0x7d]);
    const q = parseMessage("presence", bad);
    expect(q.ok === false && q.code).toBe("E_MQTT_MESSAGE_JSON");
  });

  it("misuse throws: an unknown kind", () => {
    expect(() => parseMessage("nope" as MessageKind, "{}")).toThrow(TypeError);
    expect(() => encodeMessage("nope" as MessageKind, {} as never)).toThrow(TypeError);
  });

  it("states: the update order, the final four", () => {
    expect(UPDATE_STATES.indexOf("activating")).toBeLessThan(UPDATE_STATES.indexOf("succeeded"));
    expect(FINAL_STATES).toEqual(["succeeded", "rolled-back", "failed", "cancelled"]);
    expect(UPDATE_STATES.slice(-4)).toEqual(FINAL_STATES);
    expect(FINAL_STATES.every(isFinalState)).toBe(true);
    expect(["idle", "offline", "activating", "x"].some(isFinalState)).toBe(false);
  });

  it("docs/schemas/mqtt-*.schema.json are generated from the schemas (npm run docs:schemas)", () => {
    const schemas = mqttJsonSchemas();
    expect(Object.keys(schemas)).toEqual([...MESSAGE_KINDS]);
    for (const kind of MESSAGE_KINDS) {
      const file = readFileSync(
        new URL(`../../docs/schemas/mqtt-${kind}.schema.json`, import.meta.url),
        "utf8",
      );
      expect(JSON.parse(file), kind).toEqual(schemas[kind]);
    }
  });
});
