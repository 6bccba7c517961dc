/**
 * Toxics: the faults the chaos proxy puts on a TCP connection, with the semantics of Toxiproxy's
 * toxics (github.com/Shopify/toxiproxy, README "Toxics" and toxics/*.go), re-derived here as
 * pure functions: no socket, timer or clock. Time is a number of milliseconds the caller passes
 * in, randomness a `() => number` in [0, 1), so every decision is reproducible in a unit test.
 *
 * A toxic sits in one direction of a connection (`upstream` = client to server, `downstream` =
 * server to client) and sees that direction's stream as a sequence of items: chunks of data and
 * the end of the stream. `stepToxic` turns one item into the items the toxic lets out, each with
 * the time it is due; src/chaos/pipe.ts chains toxics and src/chaos/proxy.ts moves the bytes.
 */

export type ToxicStream = "upstream" | "downstream";
export const TOXIC_STREAMS: readonly ToxicStream[] = ["upstream", "downstream"];

interface ToxicBase {
  /** Unique on a proxy; `[A-Za-z0-9_.-]{1,64}` (it appears in the control API's URLs). */
  readonly name: string;
  readonly stream: ToxicStream;
  /** Probability (0..1) that the toxic applies to a given connection; 1 = always. */
  readonly toxicity: number;
}

/** Every chunk waits latencyMs ± jitterMs (uniform) before it goes on; order is kept. */
export interface LatencyToxic extends ToxicBase {
  readonly type: "latency";
  readonly latencyMs: number;
  readonly jitterMs: number;
}

/** Throughput capped at rateKBps kilobytes (1000 bytes) per second, in 100 ms pieces. */
export interface BandwidthToxic extends ToxicBase {
  readonly type: "bandwidth";
  readonly rateKBps: number;
}

/** The end of the stream (FIN, or a close another toxic makes) is held back delayMs. */
export interface SlowCloseToxic extends ToxicBase {
  readonly type: "slow_close";
  readonly delayMs: number;
}

/** Nothing passes (data is dropped); the connection closes timeoutMs after the toxic starts (0 = never). */
export interface TimeoutToxic extends ToxicBase {
  readonly type: "timeout";
  readonly timeoutMs: number;
}

/** From the first item it sees nothing passes, and timeoutMs later both sides get a TCP RST. */
export interface ResetPeerToxic extends ToxicBase {
  readonly type: "reset_peer";
  readonly timeoutMs: number;
}

/** Each chunk is cut into pieces of about averageSize ± sizeVariation bytes, delayUs apart. */
export interface SlicerToxic extends ToxicBase {
  readonly type: "slicer";
  readonly averageSize: number;
  readonly sizeVariation: number;
  readonly delayUs: number;
}

/** The connection closes once `bytes` bytes have passed in this direction. */
export interface LimitDataToxic extends ToxicBase {
  readonly type: "limit_data";
  readonly bytes: number;
}

export type Toxic =
  | LatencyToxic
  | BandwidthToxic
  | SlowCloseToxic
  | TimeoutToxic
  | ResetPeerToxic
  | SlicerToxic
  | LimitDataToxic;

export type ToxicType = Toxic["type"];

/** What a pure function here returns for bad input (docs/errors.md, E_CHAOS_TOXIC). */
export type ToxicResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly code: "E_CHAOS_TOXIC"; readonly reason: string };

// ---------------------------------------------------------------------------------------------
// Parameters, as data: parsing, validation, formatting and docs/chaos.md all read this table.

/** Longest delay a Node timer can wait; setTimeout turns anything longer into 1 ms. */
export const MAX_DELAY_MS = 2_147_483_647;

export interface ToxicParam {
  /** Field of the toxic object (and of its JSON in the control API). */
  readonly field: string;
  /** Key in the compact spec: Toxiproxy's attribute name, so its docs read across. */
  readonly key: string;
  readonly unit: string;
  /** Absent = required. */
  readonly default?: number;
  readonly integer: boolean;
  /** Smallest allowed value; `positive` excludes it (rate > 0). */
  readonly min: number;
  readonly positive?: boolean;
  readonly max: number;
}

const ms = (field: string, key: string, dflt?: number): ToxicParam => ({
  field,
  key,
  unit: "ms",
  integer: true,
  min: 0,
  max: MAX_DELAY_MS,
  ...(dflt === undefined ? {} : { default: dflt }),
});

export const TOXIC_PARAMS: Readonly<Record<ToxicType, readonly ToxicParam[]>> = {
  latency: [ms("latencyMs", "latency"), ms("jitterMs", "jitter", 0)],
  // Fractional rates are allowed: a collapsed link of 0.5 KB/s is a case worth testing. Rate 0
  // is refused (Toxiproxy loops forever on it; "no data at all" is the timeout toxic).
  bandwidth: [
    {
      field: "rateKBps",
      key: "rate",
      unit: "KB/s (1 KB = 1000 bytes)",
      integer: false,
      min: 0,
      positive: true,
      max: 1e9,
    },
  ],
  slow_close: [ms("delayMs", "delay")],
  timeout: [ms("timeoutMs", "timeout", 0)],
  reset_peer: [ms("timeoutMs", "timeout", 0)],
  slicer: [
    {
      field: "averageSize",
      key: "average_size",
      unit: "bytes",
      integer: true,
      min: 1,
      max: 1 << 30,
    },
    {
      field: "sizeVariation",
      key: "size_variation",
      unit: "bytes",
      default: 0,
      integer: true,
      min: 0,
      max: 1 << 30,
    },
    {
      field: "delayUs",
      key: "delay",
      unit: "µs",
      default: 0,
      integer: true,
      min: 0,
      max: MAX_DELAY_MS * 1000,
    },
  ],
  limit_data: [
    {
      field: "bytes",
      key: "bytes",
      unit: "bytes",
      integer: true,
      min: 0,
      max: Number.MAX_SAFE_INTEGER,
    },
  ],
};

export const TOXIC_TYPES = Object.keys(TOXIC_PARAMS) as readonly ToxicType[];

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

const fail = (reason: string): { ok: false; code: "E_CHAOS_TOXIC"; reason: string } => ({
  ok: false,
  code: "E_CHAOS_TOXIC",
  reason,
});

function isToxicType(s: unknown): s is ToxicType {
  return typeof s === "string" && Object.hasOwn(TOXIC_PARAMS, s);
}

function checkParam(p: ToxicParam, v: unknown, type: ToxicType): string | undefined {
  if (typeof v !== "number" || !Number.isFinite(v))
    return `${type}: ${p.key} must be a number (${p.unit})`;
  if (p.integer && !Number.isInteger(v)) return `${type}: ${p.key} must be a whole number`;
  if (p.positive ? v <= p.min : v < p.min)
    return `${type}: ${p.key} must be ${p.positive ? "greater than" : "at least"} ${p.min}`;
  if (v > p.max) return `${type}: ${p.key} must be at most ${p.max} ${p.unit}`;
  return undefined;
}

/**
 * Builds a complete, checked toxic from loose fields (the control API's JSON, or a parsed spec):
 * defaults filled in, unknown fields refused (a typo like `latency` for `latencyMs` must not be
 * silently ignored), the key order fixed so two equal toxics serialise the same.
 */
export function toxicFromJson(input: unknown): ToxicResult<Toxic> {
  if (typeof input !== "object" || input === null || Array.isArray(input))
    return fail("a toxic is a JSON object with at least a type");
  const o = input as Record<string, unknown>;
  if (!isToxicType(o.type))
    return fail(`type ${JSON.stringify(o.type)}: expected one of ${TOXIC_TYPES.join(", ")}`);
  const type = o.type;
  const params = TOXIC_PARAMS[type];
  const known = new Set(["type", "name", "stream", "toxicity", ...params.map((p) => p.field)]);
  for (const k of Object.keys(o)) {
    if (!known.has(k))
      return fail(
        `${type}: unknown field "${k}"; expected ${[...known].filter((x) => x !== "type").join(", ")}`,
      );
  }
  const stream = o.stream ?? "downstream";
  if (stream !== "upstream" && stream !== "downstream")
    return fail(`stream ${JSON.stringify(stream)}: expected upstream or downstream`);
  const name = o.name ?? `${type}_${stream}`;
  if (typeof name !== "string" || !NAME_RE.test(name))
    return fail(`name ${JSON.stringify(name)}: expected 1-64 of A-Z a-z 0-9 _ . -`);
  const toxicity = o.toxicity ?? 1;
  if (typeof toxicity !== "number" || !(toxicity >= 0 && toxicity <= 1))
    return fail(`toxicity ${JSON.stringify(toxicity)}: expected a number from 0 to 1`);
  const out: Record<string, unknown> = { type, name, stream, toxicity };
  for (const p of params) {
    const v = o[p.field] ?? p.default;
    if (v === undefined) return fail(`${type}: ${p.key} (${p.field}, ${p.unit}) is required`);
    const bad = checkParam(p, v, type);
    if (bad) return fail(bad);
    out[p.field] = v;
  }
  const toxic = out as unknown as Toxic;
  // Toxiproxy's slicer recursion does not end when the variation reaches the average size.
  if (toxic.type === "slicer" && toxic.sizeVariation >= toxic.averageSize)
    return fail("slicer: size_variation must be smaller than average_size");
  return { ok: true, value: toxic };
}

/**
 * A change to a toxic (PATCH /toxics/:name, `updateToxic`): its parameters and toxicity. The
 * type, name and stream identify the toxic and cannot change; give them only to repeat them.
 */
export function updateToxicFields(toxic: Toxic, partial: unknown): ToxicResult<Toxic> {
  if (typeof partial !== "object" || partial === null || Array.isArray(partial))
    return fail("an update is a JSON object of the fields to change");
  const p = partial as Record<string, unknown>;
  for (const k of ["type", "name", "stream"] as const) {
    if (k in p && p[k] !== toxic[k])
      return fail(`${toxic.name}: ${k} cannot change; remove the toxic and add a new one`);
  }
  return toxicFromJson({ ...toxic, ...p });
}

// ---------------------------------------------------------------------------------------------
// The compact spec of the CLI: TYPE[:STREAM][:key=value,...]

const NUMBER_RE = /^(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/i;

/**
 * `key=value,...` of one toxic type (spec keys: Toxiproxy's attribute names, plus `toxicity`
 * and `name`) → the toxic's fields. Used for a whole spec and for `chaos toxic update`.
 */
export function parseToxicAttributes(
  type: ToxicType,
  text: string,
): ToxicResult<Record<string, number | string>> {
  const params = TOXIC_PARAMS[type];
  const out: Record<string, number | string> = {};
  const seen = new Set<string>();
  for (const raw of text.split(",")) {
    const part = raw.trim();
    if (part === "") continue;
    const eq = part.indexOf("=");
    if (eq < 0) return fail(`${type}: "${part}" is not key=value`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (seen.has(key)) return fail(`${type}: ${key} given twice`);
    seen.add(key);
    if (key === "name") {
      out.name = value;
      continue;
    }
    const param = key === "toxicity" ? undefined : params.find((p) => p.key === key);
    if (key !== "toxicity" && !param)
      return fail(
        `${type}: unknown key "${key}"; expected ${[...params.map((p) => p.key), "toxicity", "name"].join(", ")}`,
      );
    if (!NUMBER_RE.test(value)) return fail(`${type}: ${key}=${value} is not a number`);
    out[param ? param.field : "toxicity"] = Number(value);
  }
  return { ok: true, value: out };
}

/** `latency:downstream:latency=300,jitter=50` → a toxic. The stream defaults to downstream. */
export function parseToxicSpec(spec: string): ToxicResult<Toxic> {
  const parts = spec.trim().split(":");
  if (parts.length > 3)
    return fail(
      `"${spec}": expected TYPE[:STREAM][:key=value,...], e.g. latency:downstream:latency=300`,
    );
  const type = parts[0]!.trim();
  if (!isToxicType(type))
    return fail(`"${spec}": type "${type}" is not one of ${TOXIC_TYPES.join(", ")}`);
  let stream: string | undefined;
  let attrs = "";
  if (parts.length === 3) {
    stream = parts[1]!.trim();
    attrs = parts[2]!;
  } else if (parts.length === 2) {
    // One part after the type: a stream, or the attributes with the default stream.
    if (parts[1]!.includes("=")) attrs = parts[1]!;
    else stream = parts[1]!.trim();
  }
  const fields = parseToxicAttributes(type, attrs);
  if (!fields.ok) return fields;
  return toxicFromJson({ type, ...(stream === undefined ? {} : { stream }), ...fields.value });
}

/** The spec that parses back to this toxic (defaults included, so it reads in full). */
export function formatToxicSpec(t: Toxic): string {
  const fields = t as unknown as Record<string, number>;
  const attrs = TOXIC_PARAMS[t.type].map((p) => `${p.key}=${fields[p.field]}`);
  if (t.toxicity !== 1) attrs.push(`toxicity=${t.toxicity}`);
  if (t.name !== `${t.type}_${t.stream}`) attrs.push(`name=${t.name}`);
  return `${t.type}:${t.stream}:${attrs.join(",")}`;
}

export function sameToxic(a: Toxic, b: Toxic): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

// ---------------------------------------------------------------------------------------------
// What a toxic does to the stream.

/** One item of a direction's stream, due at `at` (ms on the caller's clock). */
export type Item =
  | { readonly kind: "data"; readonly at: number; readonly data: Uint8Array }
  /** The source ended its side (FIN): end the destination's side after everything before it. */
  | { readonly kind: "eof"; readonly at: number }
  /** A toxic cut the connection (timeout, limit_data): close the destination, then the source. */
  | { readonly kind: "close"; readonly at: number }
  /** reset_peer: abort both sides with a TCP RST. */
  | { readonly kind: "reset"; readonly at: number };

/** A toxic's memory on one connection. */
export interface ToxicState {
  /** Whether the toxicity roll made the toxic apply to this connection. */
  readonly active: boolean;
  /** bandwidth, slicer: when the previous chunk has finished going out (ms). */
  readonly busyUntil: number;
  /** limit_data: bytes let through; timeout: bytes dropped. */
  readonly bytes: number;
  /** reset_peer: it has seen its first item (and drops everything from then on). */
  readonly triggered: boolean;
  /** When `expireToxic` must run (timeout's close, reset_peer's reset); undefined = never. */
  readonly deadline: number | undefined;
}

export interface ToxicStep {
  readonly state: ToxicState;
  readonly out: readonly Item[];
}

/**
 * The toxic starts on a connection: when the connection opens, or when the toxic is added or
 * updated while it is open (Toxiproxy restarts a toxic's goroutine then, rolling toxicity again).
 * `previous` carries limit_data's and timeout's byte counts across an update, as Toxiproxy keeps
 * a toxic's state until it is removed.
 */
export function startToxic(
  t: Toxic,
  now: number,
  random: () => number,
  previous?: ToxicState,
): ToxicState {
  const active = t.toxicity >= 1 || (t.toxicity > 0 && random() < t.toxicity);
  const deadline =
    active && t.type === "timeout" && t.timeoutMs > 0 ? now + t.timeoutMs : undefined;
  return {
    active,
    busyUntil: now,
    bytes: previous?.bytes ?? 0,
    triggered: false,
    deadline,
  };
}

/** One item enters the toxic at `item.at`; returns what leaves it and when. */
export function stepToxic(t: Toxic, s: ToxicState, item: Item, random: () => number): ToxicStep {
  if (!s.active || item.kind === "reset") return { state: s, out: [item] };
  switch (t.type) {
    case "latency":
      return {
        state: s,
        out: [item.kind === "data" ? { ...item, at: item.at + latencyDelay(t, random) } : item],
      };
    case "bandwidth": {
      if (item.kind !== "data") return { state: s, out: [item] };
      const start = Math.max(item.at, s.busyUntil);
      const out = bandwidthPieces(item.data, start, t.rateKBps);
      return { state: { ...s, busyUntil: start + item.data.length / t.rateKBps }, out };
    }
    case "slow_close":
      return {
        state: s,
        out: [item.kind === "data" ? item : { ...item, at: item.at + t.delayMs }],
      };
    case "timeout":
      // Data is dropped on the floor (Toxiproxy's timeout.go); the end of the stream passes.
      if (item.kind === "data")
        return { state: { ...s, bytes: s.bytes + item.data.length }, out: [] };
      return { state: { ...s, deadline: undefined }, out: [item] };
    case "reset_peer":
      // Toxiproxy's reset toxic takes the first item off its input, waits, then closes with
      // SO_LINGER 0 (an RST); nothing else passes meanwhile.
      if (s.triggered) return { state: s, out: [] };
      return { state: { ...s, triggered: true, deadline: item.at + t.timeoutMs }, out: [] };
    case "slicer": {
      if (item.kind !== "data") return { state: s, out: [item] };
      const start = Math.max(item.at, s.busyUntil);
      const cuts = sliceOffsets(item.data.length, t.averageSize, t.sizeVariation, random);
      const gap = t.delayUs / 1000;
      const out: Item[] = [];
      for (let i = 1; i < cuts.length; i++)
        out.push({
          kind: "data",
          at: start + (i - 1) * gap,
          data: item.data.subarray(cuts[i - 1], cuts[i]),
        });
      // Toxiproxy sleeps after each piece, the last included, before it reads the next chunk.
      return { state: { ...s, busyUntil: start + (cuts.length - 1) * gap }, out };
    }
    case "limit_data": {
      if (item.kind !== "data") return { state: s, out: [item] };
      const take = Math.max(0, Math.min(item.data.length, t.bytes - s.bytes));
      const out: Item[] = take > 0 ? [{ ...item, data: item.data.subarray(0, take) }] : [];
      const bytes = s.bytes + take;
      if (bytes >= t.bytes) out.push({ kind: "close", at: item.at });
      return { state: { ...s, bytes }, out };
    }
  }
}

/** The toxic's deadline has come (`state.deadline <= now`). */
export function expireToxic(t: Toxic, s: ToxicState): ToxicStep {
  const at = s.deadline;
  if (at === undefined) return { state: s, out: [] };
  const state = { ...s, deadline: undefined };
  if (t.type === "timeout") return { state, out: [{ kind: "close", at }] };
  if (t.type === "reset_peer") return { state, out: [{ kind: "reset", at }] };
  return { state, out: [] };
}

/**
 * The toxic is removed from a live connection. One that has dropped data ends the connection,
 * as bytes are missing from the middle of the stream and no protocol above can recover: a
 * timeout closes it, a triggered reset_peer resets it now rather than at its deadline. Toxiproxy
 * closes on removing a timeout whatever it dropped, and lets a triggered reset run its course;
 * here a timeout that dropped nothing lets the connection go on, so a toxic added and removed on
 * an idle link leaves no mark.
 */
export function stopToxic(t: Toxic, s: ToxicState, now: number): readonly Item[] {
  if (!s.active) return [];
  if (t.type === "timeout" && s.bytes > 0) return [{ kind: "close", at: now }];
  if (t.type === "reset_peer" && s.triggered && s.deadline !== undefined)
    return [{ kind: "reset", at: now }];
  return [];
}

/** latency ± jitter, uniform, never below zero (Toxiproxy: latency + rand(2·jitter) − jitter). */
export function latencyDelay(t: LatencyToxic, random: () => number): number {
  if (t.jitterMs <= 0) return t.latencyMs;
  return Math.max(0, t.latencyMs + (unit(random) * 2 - 1) * t.jitterMs);
}

/**
 * A chunk at `rateKBps` starting at `start`: pieces of 100 ms worth of bytes, each due when its
 * last byte would have crossed the link (Toxiproxy's bandwidth.go sends 100 ms slices so a
 * slow rate still trickles instead of stalling for the whole chunk).
 */
export function bandwidthPieces(data: Uint8Array, start: number, rateKBps: number): Item[] {
  // rateKBps kilobytes per second is rateKBps bytes per millisecond.
  const piece = Math.max(1, Math.floor(rateKBps * 100));
  const out: Item[] = [];
  for (let off = 0; off < data.length; off += piece) {
    const end = Math.min(data.length, off + piece);
    out.push({ kind: "data", at: start + end / rateKBps, data: data.subarray(off, end) });
  }
  if (data.length === 0) out.push({ kind: "data", at: start, data });
  return out;
}

/**
 * Where the slicer cuts a chunk of `length` bytes: the offsets [0, …, length]. Halves the chunk
 * around its middle ± sizeVariation until each piece is within sizeVariation of averageSize, so
 * pieces vary evenly with no bias to a small first or last one (Toxiproxy's slicer.go).
 * Requires averageSize ≥ 1 and sizeVariation < averageSize, which keeps every piece non-empty.
 */
export function sliceOffsets(
  length: number,
  averageSize: number,
  sizeVariation: number,
  random: () => number,
): number[] {
  if (!(averageSize >= 1) || !(sizeVariation >= 0) || sizeVariation >= averageSize)
    throw new RangeError(
      "sliceOffsets: need averageSize >= 1 and 0 <= sizeVariation < averageSize",
    );
  const cuts = [0];
  const split = (start: number, end: number): void => {
    if (end - start - averageSize <= sizeVariation) {
      cuts.push(end);
      return;
    }
    let mid = start + Math.floor((end - start) / 2);
    if (sizeVariation > 0) mid += Math.floor(unit(random) * 2 * sizeVariation) - sizeVariation;
    split(start, mid);
    split(mid, end);
  };
  if (length > 0) split(0, length);
  return cuts;
}

/** A caller's random() kept inside [0, 1) so a generator returning 1 cannot step out of range. */
function unit(random: () => number): number {
  const r = random();
  return r >= 0 && r < 1 ? r : 0;
}
