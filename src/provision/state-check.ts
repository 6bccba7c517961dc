/**
 * The device-state gate between irreversible steps: `espefuse summary --format json` (espefuse
 * base_operations.py: one object per field with `value`, `readable`, `writeable`) compared with
 * what the plan says the chip must show. Pure; the JSON is hostile until checked (bounded size,
 * shape checked field by field).
 */
import type { Expectation } from "./plan.js";

export const MAX_SUMMARY_BYTES = 1 << 20;

export interface SummaryField {
  value: unknown;
  readable?: boolean;
  writeable?: boolean;
}

export type ParsedSummary =
  | { ok: true; fields: Map<string, SummaryField> }
  | { ok: false; reason: string };

export function parseEfuseSummary(text: string): ParsedSummary {
  if (text.length > MAX_SUMMARY_BYTES)
    return { ok: false, reason: `summary is ${text.length} bytes, more than ${MAX_SUMMARY_BYTES}` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, reason: "summary is not JSON (espefuse summary --format json)" };
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    return { ok: false, reason: "summary is not a JSON object of eFuse fields" };
  const fields = new Map<string, SummaryField>();
  for (const [name, v] of Object.entries(json)) {
    if (typeof v !== "object" || v === null || !("value" in v)) continue;
    const o = v as Record<string, unknown>;
    fields.set(name, {
      value: o.value,
      ...(typeof o.readable === "boolean" ? { readable: o.readable } : {}),
      ...(typeof o.writeable === "boolean" ? { writeable: o.writeable } : {}),
    });
  }
  return { ok: true, fields };
}

/**
 * espefuse prints booleans as true/false, integers as numbers, and fields with a meaning table
 * (KEY_PURPOSE_n) as their name; a count may come as "Enable (0b111)"-style text on some
 * versions. Numbers compare by value, `1`/`0` also match true/false, names match case-blind.
 */
export function valueMatches(actual: unknown, expected: number | string): boolean {
  if (typeof expected === "string") {
    return (
      typeof actual === "string" && actual.trim().toUpperCase().startsWith(expected.toUpperCase())
    );
  }
  if (typeof actual === "number") return actual === expected;
  if (typeof actual === "boolean") return (expected !== 0) === actual;
  if (typeof actual === "string") {
    const bits = /\(0b([01]+)\)/.exec(actual);
    if (bits) return Number.parseInt(bits[1]!, 2) === expected;
    const n = Number(actual.trim());
    return Number.isFinite(n) && n === expected;
  }
  return false;
}

export interface StateMismatch {
  field: string;
  expected: string;
  actual: string;
}

export function checkState(
  fields: Map<string, SummaryField>,
  expect: readonly Expectation[],
): { ok: boolean; mismatches: StateMismatch[] } {
  const mismatches: StateMismatch[] = [];
  for (const e of expect) {
    const f = fields.get(e.field);
    if (!f) {
      mismatches.push({ field: e.field, expected: "present", actual: "absent from the summary" });
      continue;
    }
    if (e.value !== undefined && !valueMatches(f.value, e.value))
      mismatches.push({
        field: e.field,
        expected: String(e.value),
        actual: cut(JSON.stringify(f.value)),
      });
    if (e.readable !== undefined && f.readable !== e.readable)
      mismatches.push({
        field: e.field,
        expected: e.readable ? "readable" : "read-protected",
        actual: f.readable ? "readable" : "read-protected",
      });
    if (e.writeable !== undefined && f.writeable !== e.writeable)
      mismatches.push({
        field: e.field,
        expected: e.writeable ? "writeable" : "write-protected",
        actual: f.writeable ? "writeable" : "write-protected",
      });
  }
  return { ok: mismatches.length === 0, mismatches };
}

/** `--expect` syntax: FIELD=VALUE, FIELD:readable=true|false, FIELD:writeable=true|false. */
export function parseExpectation(s: string): Expectation | undefined {
  const m = /^([A-Z0-9_]{1,64})(?::(readable|writeable))?=([A-Za-z0-9_]{1,40})$/.exec(s);
  if (!m) return undefined;
  const [, field, attr, raw] = m as unknown as [string, string, string | undefined, string];
  if (attr) {
    if (raw !== "true" && raw !== "false") return undefined;
    return { field, [attr]: raw === "true" };
  }
  const n = /^(0x[0-9a-fA-F]+|\d+)$/.test(raw) ? Number(raw) : undefined;
  return { field, value: n ?? raw };
}

export function formatExpectation(e: Expectation): string[] {
  const out: string[] = [];
  if (e.value !== undefined) out.push(`${e.field}=${e.value}`);
  if (e.readable !== undefined) out.push(`${e.field}:readable=${e.readable}`);
  if (e.writeable !== undefined) out.push(`${e.field}:writeable=${e.writeable}`);
  return out;
}

/** Later expectations for a field override earlier ones (the state after several steps). */
export function mergeExpectations(list: readonly Expectation[]): Expectation[] {
  const by = new Map<string, Expectation>();
  for (const e of list) by.set(e.field, { ...by.get(e.field), ...e });
  return [...by.values()];
}

const cut = (s: string) => (s.length > 80 ? `${s.slice(0, 77)}...` : s);
