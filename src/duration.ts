/**
 * Durations as people write them on a command line or in a plan: a number and a unit, `500ms`,
 * `10s`, `30m`, `2h`, `30d`, a decimal fraction allowed (`1.5s`). One parser for every duration
 * the tools take (issue 13 item 8: `status --duration` took bare milliseconds while
 * `rollout pause --timeout` took only units). A bare number is refused: `--timeout 5000` could
 * mean seconds or milliseconds, and guessing wrong waits 1000 times too long or too short.
 * Pure: the CLI wraps it (src/cli/args.ts durationArg).
 */

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** The longest delay setTimeout honours (2^31 - 1 ms, about 24.8 days); beyond it, it fires at once. */
export const TIMER_MAX_MS = 2 ** 31 - 1;

/**
 * "30m", "2h", "90s", "500ms", "1d", "1.5s" -> whole milliseconds (rounded); a string saying what
 * is wrong otherwise (the caller decides whether that is a usage error). Above zero, at most
 * `maxMs` (default Number.MAX_SAFE_INTEGER).
 */
export function parseDurationMs(
  text: string,
  maxMs: number = Number.MAX_SAFE_INTEGER,
): number | string {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t))
    return `"${text}" has no unit: add one, e.g. ${t}ms or ${t}s (units ms, s, m, h, d)`;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(t);
  if (!m) return `"${text}" is not a duration like 30m, 2h, 90s or 500ms`;
  const v = Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
  if (!(v > 0)) return `"${text}" must be above zero`;
  if (!(v <= maxMs)) return `"${text}" is too long: at most ${formatDurationMs(maxMs)}`;
  return v;
}

/** The largest whole unit that divides ms exactly: 1800000 -> "30m", 1500 -> "1500ms". */
export function formatDurationMs(ms: number): string {
  for (const [unit, size] of [
    ["d", UNIT_MS.d],
    ["h", UNIT_MS.h],
    ["m", UNIT_MS.m],
    ["s", UNIT_MS.s],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
