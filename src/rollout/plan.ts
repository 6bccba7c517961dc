/**
 * From a release directory's index.json and the operator's options to a rollout plan (pure):
 * which devices, in which order, in which waves, with which manifest URL and counter. The CLI
 * reads the files; everything that decides is here. docs/rollouts.md.
 */
import { Type } from "@sinclair/typebox";
import type { ErrorCode } from "../errors.js";
import type { UpdateNotice } from "../mqtt/messages.js";
import { isBaseUrl, variantUrl } from "../release/build-plan.js";
import { firstSchemaError } from "../schema.js";
import type { RolloutState } from "./messages.js";

export type PlanCheck<T> = ({ ok: true } & T) | { ok: false; code: ErrorCode; reason: string };

/** One id level of a topic (docs/mqtt-api.md): what device and rollout ids must be. */
const TOPIC_ID = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * "1,10,50,100%" -> [1, 10, 50, 100]. Each entry may carry its own "%". Cumulative percentages
 * of the selected devices: strictly increasing, each in (0, 100], the last 100 (otherwise some
 * devices would never be updated). A problem is a string, for the CLI's usage error.
 */
export function parseWaves(text: string): number[] | string {
  const parts = text.split(",").map((p) => p.trim().replace(/%$/, ""));
  const waves: number[] = [];
  for (const p of parts) {
    if (!/^\d+(?:\.\d+)?$/.test(p))
      return `"${text}" is not a list of percentages like 1,10,50,100%`;
    const v = Number(p);
    if (!(v > 0 && v <= 100)) return `wave ${p}% is not in (0, 100]`;
    if (waves.length > 0 && v <= waves.at(-1)!)
      return `waves are cumulative and must increase: ${p}% after ${waves.at(-1)}%`;
    waves.push(v);
  }
  if (waves.at(-1) !== 100) return "the last wave must be 100% (every selected device)";
  return waves;
}

/** "5%" or "5" -> 5 (percent, 0..100). */
export function parsePercent(text: string): number | string {
  const p = text.trim().replace(/%$/, "");
  if (!/^\d+(?:\.\d+)?$/.test(p)) return `"${text}" is not a percentage like 5%`;
  const v = Number(p);
  return v <= 100 ? v : `"${text}" is above 100%`;
}

/**
 * Where each wave ends in the device list: wave k covers devices [ends[k-1], ends[k]).
 * ceil, so "1%" of 40 devices is 1 device, and at least 1 device so the first wave is never
 * empty. Later waves can be empty when two percentages round to the same count (1% and 10% of
 * 10 devices are both 1); the machine skips an empty wave at once.
 */
export function waveEnds(n: number, waves: readonly number[]): number[] {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`waveEnds: ${n} devices`);
  // The epsilon keeps 10% of 30 at 3: 10 * 30 / 100 is exact, but 0.1-ish products are not.
  return waves.map((p) => Math.min(n, Math.max(1, Math.ceil((p * n) / 100 - 1e-9))));
}

/** `<base>/<deviceId>/manifest.json`: where `release build` put the device's signed manifest. */
export function manifestUrl(baseUrl: string, deviceId: string): string {
  return variantUrl(baseUrl, `${deviceId}/manifest.json`);
}

/**
 * The base URL the release was built for, from one variant URL: `release build` makes every
 * variant URL `<base>/<file>` (build-plan.ts variantUrl), so stripping the file gives the base.
 */
export function baseUrlFromVariant(url: string, file: string): string | undefined {
  const tail = `/${file}`;
  if (!url.endsWith(tail)) return undefined;
  const base = url.slice(0, -tail.length);
  return isBaseUrl(base) ? base : undefined;
}

/** The default id: the release id and the UTC time to the second, cut to one topic level. */
export function defaultRolloutId(releaseId: string, now: Date): string {
  const stamp = now
    .toISOString()
    .replace(/\.\d+Z$/, "Z")
    .replace(/[-:]/g, "");
  // No `.`: NATS maps MQTT topic levels to subject tokens and closes the connection of a client
  // that publishes to a topic with a `.` in it (docs/scaling.md); the version in a release id
  // has them. The id names the rollout; the release id itself is carried in its state.
  const name = releaseId.replace(/\./g, "-");
  return `${name.slice(0, 64 - stamp.length - 1)}-${stamp}`;
}

export function isRolloutId(id: string): boolean {
  return TOPIC_ID.test(id);
}

/** The fields of index.json (build-plan.ts ReleaseIndex) a rollout reads; others are ignored. */
const IndexSchema = Type.Object({
  format: Type.Literal(1),
  releaseId: Type.String({ pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$" }),
  version: Type.String({ pattern: "^[ -~]{1,31}$" }),
  devices: Type.Array(
    Type.Object({
      deviceId: Type.String({ minLength: 1 }),
      counter: Type.Integer({ minimum: 0 }),
      manifest: Type.String({ minLength: 1 }),
      variants: Type.Array(Type.Object({ file: Type.String({ minLength: 1 }) })),
    }),
  ),
});

export interface IndexDevice {
  deviceId: string;
  counter: number;
  manifest: string;
  variants: { file: string }[];
}
export interface RolloutIndex {
  releaseId: string;
  version: string;
  devices: IndexDevice[];
}

export function checkIndex(value: unknown): PlanCheck<{ index: RolloutIndex }> {
  const first = firstSchemaError(IndexSchema, value);
  if (first)
    return {
      ok: false,
      code: "E_ROLLOUT_INDEX",
      reason: `index.json ${first.path || "/"}: ${first.message}`,
    };
  return { ok: true, index: value as RolloutIndex };
}

export interface PlannedDevice {
  deviceId: string;
  counter: number;
}

/**
 * The devices to roll out to, in order: `"all"` is the index's order (sorted by id), a list
 * keeps the operator's order (put the canaries first). Duplicates are dropped.
 */
export function selectDevices(
  index: RolloutIndex,
  selection: "all" | readonly string[],
): PlanCheck<{ devices: PlannedDevice[] }> {
  const byId = new Map(index.devices.map((d) => [d.deviceId, d]));
  const ids = selection === "all" ? index.devices.map((d) => d.deviceId) : [...new Set(selection)];
  if (ids.length === 0)
    return { ok: false, code: "E_ROLLOUT_DEVICES", reason: "no devices selected" };
  const devices: PlannedDevice[] = [];
  for (const id of ids) {
    const d = byId.get(id);
    if (!d)
      return {
        ok: false,
        code: "E_ROLLOUT_DEVICES",
        reason: `release ${index.releaseId} has no manifest for device ${id}`,
      };
    if (!TOPIC_ID.test(id))
      return {
        ok: false,
        code: "E_ROLLOUT_DEVICES",
        reason: `device id ${JSON.stringify(id)} cannot be an MQTT topic level ([A-Za-z0-9._-], 1..64)`,
      };
    devices.push({ deviceId: id, counter: d.counter });
  }
  return { ok: true, devices };
}

/** 1_800_000 -> "30m", 5_400_000 -> "1h30m", 250 -> "250ms": for messages and the live view. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let s = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ["d", 86_400],
    ["h", 3600],
    ["m", 60],
  ] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  if (s > 0 || parts.length === 0) parts.push(`${s}s`);
  return parts.join("");
}

/**
 * The retained UpdateNotice for one device of a rollout (docs/mqtt-api.md): everything comes from
 * the state, so any machine can publish it. issuedAt is when the machine marked it notified.
 */
export function noticeFor(s: RolloutState, deviceId: string, now: number): UpdateNotice {
  const e = s.perDevice[deviceId];
  if (!e) throw new RangeError(`noticeFor: ${deviceId} is not in rollout ${s.rolloutId}`);
  return {
    format: 1,
    deviceId,
    releaseId: s.releaseId,
    counter: e.counter,
    manifestUrls: [manifestUrl(s.manifestBaseUrl, deviceId)],
    rolloutId: s.rolloutId,
    issuedAt: e.notifiedAt ?? new Date(now).toISOString(),
  };
}

/** "30m", "2h", "90s", "500ms", "1d" -> milliseconds: the one duration parser (src/duration.ts). */
export { parseDurationMs } from "../duration.js";
