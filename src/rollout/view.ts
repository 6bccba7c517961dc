/**
 * What the operator sees (docs/rollouts.md "Output"), as pure functions of the state: the live
 * block a TTY redraws, one line per change otherwise, and the final tables. The CLI writes them.
 */

// What a rollout shows comes from retained messages (versions, owners, reasons): never printed raw.
import { printable } from "../text.js";
import {
  BUCKETS,
  type RolloutEvent,
  type RolloutSummary,
  summarize,
  type WaveSummary,
} from "./machine.js";
import { type OwnerProbe, ownerLive, type RolloutState } from "./messages.js";

const BAR = 24;

function bar(done: number, total: number): string {
  const n = total === 0 ? BAR : Math.round((done / total) * BAR);
  return `${"█".repeat(n)}${"░".repeat(BAR - n)}`;
}

function headline(s: RolloutSummary): string {
  // Summary wave numbers are 1-based, 0 before the first (machine.ts WaveSummary).
  const wave = s.currentWave < 1 ? "not started" : `wave ${s.currentWave}/${s.waves.length}`;
  return `rollout ${s.rolloutId}: ${s.releaseId} (${s.version}) ${s.state}, ${wave}`;
}

function waveLine(w: WaveSummary, current: number): string {
  const mark = w.wave === current ? ">" : " ";
  const fails = w.failed > 0 ? `, ${w.failed} failed` : "";
  const pct = `${w.percent}%`.padStart(4);
  return `${mark} wave ${w.wave} ${pct} ${bar(w.finished, w.devices)} ${w.finished}/${w.devices} finished${fails}`;
}

function countsLine(s: RolloutSummary): string {
  return BUCKETS.filter((b) => s.counts[b] > 0)
    .map((b) => `${b} ${s.counts[b]}`)
    .join(" · ");
}

function rateLine(s: RolloutSummary): string {
  const r = s.failureRate;
  return `failure rate ${r.failed}/${r.finished} = ${r.percent}% (abort above ${r.max}%)`;
}

/** The block a TTY redraws on every change. */
export function renderLive(state: RolloutState): string[] {
  const s = summarize(state);
  const lines = [headline(s), ...s.waves.map((w) => waveLine(w, s.currentWave)), countsLine(s)];
  lines.push(rateLine(s));
  for (const f of s.failures.slice(0, 8))
    lines.push(`  ${f.deviceId} ${f.state}${f.errorCode ? ` ${f.errorCode}` : ""}`);
  if (s.failures.length > 8) lines.push(`  ... and ${s.failures.length - 8} more`);
  if (s.reason) lines.push(`${s.reason.kind}: ${s.reason.message}`);
  return lines.map(printable);
}

/**
 * `rollout status --watch` where output is not a terminal: one line per change of what the line
 * says. Every retained change has a new `updatedAt`, but most (a device going from downloading
 * to transferring, an idle status's seq) leave the line as it was; printing those repeated
 * identical lines (issue 13 item 11). Returns the line to print, or undefined.
 */
export function watchLinePrinter(): (state: RolloutState) => string | undefined {
  let last: string | undefined;
  return (state) => {
    const s = summarize(state);
    const counts = BUCKETS.filter((b) => s.counts[b] > 0)
      .map((b) => `${b} ${s.counts[b]}`)
      .join(", ");
    const wave = s.currentWave < 1 ? "not started" : `wave ${s.currentWave}/${s.waves.length}`;
    const rate = s.failureRate.failed > 0 ? `; ${rateLine(s)}` : "";
    const line = `${s.state} ${wave}: ${counts}${rate}`;
    if (line === last) return undefined;
    last = line;
    return printable(`${state.updatedAt} ${line}`);
  };
}

/** One line per change, for logs and pipes. */
export function eventLine(e: RolloutEvent): string {
  return printable(eventText(e));
}

function eventText(e: RolloutEvent): string {
  switch (e.kind) {
    case "wave-started":
      return `wave ${e.wave + 1} started: ${e.devices.length} device(s)${e.devices.length > 0 ? ` (${e.devices.slice(0, 8).join(", ")}${e.devices.length > 8 ? ", ..." : ""})` : ""}`;
    case "device":
      return `${e.deviceId}: ${e.state}${e.errorCode ? ` ${e.errorCode}` : ""}`;
    case "paused":
      return `paused (${e.reason.kind}): ${e.reason.message}`;
    case "resumed":
      return e.republished.length > 0
        ? `resumed; republished the notice of ${e.republished.length} device(s) that had not started (${e.republished.slice(0, 8).join(", ")}${e.republished.length > 8 ? ", ..." : ""})`
        : "resumed";
    case "aborted":
      return `aborted (${e.reason.kind}): ${e.reason.message}${e.cleared.length > 0 ? `; withdrew ${e.cleared.length} notice(s)` : ""}`;
    case "completed":
      return "completed";
    case "retried":
      return `retrying ${e.devices.length} failed device(s) (${e.devices.slice(0, 8).join(", ")}${e.devices.length > 8 ? ", ..." : ""})`;
    case "advanced":
      return `wave ${e.wave + 1} started by the operator`;
    case "ignored":
      return `${e.input} ignored: ${e.why}`;
  }
}

function table(header: string[], rows: (string | number)[][]): string[] {
  const cells = [header, ...rows.map((r) => r.map((c) => printable(String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd(),
  );
}

/** The final summary: waves, counts per state, failing devices, reason. */
export function renderSummary(state: RolloutState): string[] {
  const s = summarize(state);
  const lines = [headline(s), ""];
  lines.push(
    ...table(
      ["wave", "percent", "devices", "finished", "failed"],
      s.waves.map((w) => [w.wave, `${w.percent}%`, w.devices, w.finished, w.failed]),
    ),
    "",
  );
  lines.push(
    ...table(
      ["state", "devices"],
      BUCKETS.filter((b) => s.counts[b] > 0).map((b) => [b, s.counts[b]]),
    ),
    "",
    rateLine(s),
  );
  if (s.failures.length > 0) {
    lines.push(
      "",
      ...table(
        ["device", "state", "error"],
        s.failures.map((f) => [f.deviceId, f.state, f.errorCode ?? "-"]),
      ),
    );
  }
  if (s.reason) lines.push("", `${s.reason.kind}: ${s.reason.message}`);
  return lines.map(printable);
}

/** `rollout list`: one row per retained rollout. */
export function renderList(
  states: readonly RolloutState[],
  now: number,
  probe?: OwnerProbe,
): string[] {
  if (states.length === 0) return ["no rollouts"];
  return table(
    ["rollout", "release", "version", "state", "wave", "done", "failed", "owner"],
    states.map((st) => {
      const s = summarize(st);
      const finished = s.waves.reduce((a, w) => a + w.finished, 0);
      const owner = st.owner
        ? `${st.owner.host}:${st.owner.pid}${ownerLive(st, now, probe) ? "" : " (gone)"}`
        : "-";
      return [
        s.rolloutId,
        s.releaseId,
        s.version,
        s.state,
        s.currentWave < 1 ? "-" : `${s.currentWave}/${s.waves.length}`,
        `${finished}/${st.devices.length}`,
        s.failureRate.failed,
        owner,
      ];
    }),
  );
}
