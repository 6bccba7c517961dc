/** Option value parsers shared by commands; each throws InvalidArgumentError, shown as E_USAGE. */
import { InvalidArgumentError } from "commander";

/** An integer as esptool takes it: decimal, 0x hex, or with a K/M suffix (1024-based). */
export function parseIntArg(value: string): number {
  const m = /^(0x[0-9a-f]+|\d+)([km]?)$/i.exec(value.trim());
  if (!m)
    throw new InvalidArgumentError(`"${value}" is not a number (decimal, 0x hex, or with K/M).`);
  const n = Number.parseInt(m[1]!, m[1]!.toLowerCase().startsWith("0x") ? 16 : 10);
  const mult = m[2]!.toLowerCase() === "k" ? 1024 : m[2]!.toLowerCase() === "m" ? 1024 * 1024 : 1;
  const v = n * mult;
  if (!Number.isSafeInteger(v)) throw new InvalidArgumentError(`"${value}" is out of range.`);
  return v;
}

export function choice<T extends string>(allowed: readonly T[]) {
  return (value: string): T => {
    if (!(allowed as readonly string[]).includes(value)) {
      throw new InvalidArgumentError(`"${value}" is not one of ${allowed.join(", ")}.`);
    }
    return value as T;
  };
}
