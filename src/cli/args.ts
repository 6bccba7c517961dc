/** Option value parsers shared by commands; each throws InvalidArgumentError, shown as E_USAGE. */
import { InvalidArgumentError } from "commander";
import { parseDurationMs } from "../duration.js";

/** An integer as esptool takes it: decimal, 0x hex, or with a K/M suffix (1024-based). */
export function parseIntArg(value: string): number {
  const m = /^(0x[0-9a-f]+|\d+)([km]?)$/i.exec(value.trim());
  if (!m)
    throw new InvalidArgumentError(`"${value}" is not a number (decimal, 0x hex, or with K/M).`);
  const n = Number.parseInt(m[1]!, m[1]!.toLowerCase().startsWith("0x") ? 16 : 10);
  const v = n * suffixMultiplier(m[2]!);
  if (!Number.isSafeInteger(v)) throw new InvalidArgumentError(`"${value}" is out of range.`);
  return v;
}

/**
 * A size in bytes where an approximate figure is fine (`sim make-app --size 1.3M`): what
 * parseIntArg takes, plus a decimal fraction before a K/M suffix, rounded to a whole byte.
 * Addresses and offsets keep parseIntArg: a fraction of a byte there is a mistake, not a size.
 */
export function parseSizeArg(value: string): number {
  const m = /^(\d+\.\d+)([km])$/i.exec(value.trim());
  if (!m) {
    try {
      return parseIntArg(value);
    } catch {
      throw new InvalidArgumentError(
        `"${value}" is not a size (decimal, 0x hex, or with K/M, e.g. 64K or 1.3M).`,
      );
    }
  }
  const v = Math.round(Number(m[1]) * suffixMultiplier(m[2]!));
  if (!Number.isSafeInteger(v)) throw new InvalidArgumentError(`"${value}" is out of range.`);
  return v;
}

function suffixMultiplier(suffix: string): number {
  const s = suffix.toLowerCase();
  return s === "k" ? 1024 : s === "m" ? 1024 * 1024 : 1;
}

/**
 * A duration option's parser (src/duration.ts): `500ms`, `10s`, `30m`, `2h`, `30d`; a bare
 * number is refused with a message saying to add a unit. `maxMs` bounds it, TIMER_MAX_MS for a
 * duration that becomes a timer.
 */
export function durationArg(maxMs?: number): (value: string) => number {
  return (value) => {
    const r = parseDurationMs(value, maxMs);
    if (typeof r === "string") throw new InvalidArgumentError(`${r}.`);
    return r;
  };
}

export function choice<T extends string>(allowed: readonly T[]) {
  return (value: string): T => {
    if (!(allowed as readonly string[]).includes(value)) {
      throw new InvalidArgumentError(`"${value}" is not one of ${allowed.join(", ")}.`);
    }
    return value as T;
  };
}
