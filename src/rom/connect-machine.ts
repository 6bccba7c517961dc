/**
 * esptool's connect procedure as data (STYLE.md §3): a pure `connectTransition(state, input)`
 * returning the next state and the effects to perform. The driver (RomHost.connect in host.ts)
 * performs the effects in order; the last one of a step, if it waits (`set-lines`, `sleep`,
 * `await-sync`), produces the next input. Nothing here touches a port or a timer.
 *
 * [esptool v5.3.1 loader.py connect / _connect_attempt / sync]: per attempt, a reset sequence
 * (none with --before no-reset), then up to 5 SYNCs; each waits SYNC_TIMEOUT (100 ms) for a
 * reply, and a failed one is followed by a 50 ms sleep. After the reply, the ROM's 7 further
 * SYNC replies are read off (here: until 7 arrive or one read waits 100 ms in vain).
 */
import type { ModemLines, ResetStep } from "./reset.js";

export interface ConnectConfig {
  /** Reset sequences, one per attempt, cycled (empty: no reset). */
  strategies: readonly (readonly ResetStep[])[];
  attempts: number;
  syncsPerAttempt: number;
  syncTimeoutMs: number;
  retrySleepMs: number;
  extraReplies: number;
}

export type ConnectState =
  | { kind: "idle" }
  | ({ kind: "resetting"; step: number } & Attempt)
  | ({ kind: "syncing" } & Attempt)
  | ({ kind: "backoff" } & Attempt)
  | { kind: "draining"; remaining: number }
  | { kind: "synced" }
  | { kind: "failed"; noisy: boolean };

/** Where a connect is: attempt and SYNC number, the modem lines as last set, what was seen. */
interface Attempt {
  attempt: number;
  sync: number;
  lines: ModemLines;
  /** The no-modem-lines warning was given. */
  warned: boolean;
  /** Bytes that were not frames arrived (a boot log: an app runs, not the ROM). */
  noisy: boolean;
}

export type ConnectInput =
  | { kind: "start"; lines: ModemLines }
  | { kind: "lines-set" }
  /** The port has no modem lines (a pty): esptool warns once and goes on without a reset. */
  | { kind: "lines-unsupported" }
  | { kind: "slept" }
  | { kind: "sync-reply" }
  /** An await-sync ran out; `noisy`: bytes that were not frames arrived meanwhile. */
  | { kind: "no-reply"; noisy: boolean };

export type ConnectEffect =
  | { kind: "set-lines"; lines: ModemLines }
  | { kind: "sleep"; ms: number }
  | { kind: "flush-input" }
  | { kind: "send-sync" }
  | { kind: "await-sync"; ms: number }
  | { kind: "warn"; message: string }
  | { kind: "done"; ok: boolean };

export interface ConnectStep {
  state: ConnectState;
  effects: ConnectEffect[];
}

export const NO_MODEM_LINES_WARNING =
  "setting RTS/DTR lines is not supported on this port: chip was NOT reset (use --before no-reset and enter download mode by hand)";

export function connectTransition(
  cfg: ConnectConfig,
  s: ConnectState,
  input: ConnectInput,
): ConnectStep {
  switch (s.kind) {
    case "idle":
      if (input.kind !== "start") return { state: s, effects: [] };
      return beginAttempt(cfg, {
        attempt: 0,
        sync: 0,
        lines: input.lines,
        warned: false,
        noisy: false,
      });
    case "resetting": {
      if (input.kind === "lines-unsupported") {
        // No lines to drive: skip the rest of this sequence (and warn once), as esptool does.
        const effects: ConnectEffect[] = s.warned
          ? []
          : [{ kind: "warn", message: NO_MODEM_LINES_WARNING }];
        const next = startSync(cfg, { ...s, sync: 0, warned: true });
        return { state: next.state, effects: [...effects, ...next.effects] };
      }
      if (input.kind !== "lines-set" && input.kind !== "slept") return { state: s, effects: [] };
      return resetStep(cfg, { ...s, step: s.step + 1 });
    }
    case "syncing":
      if (input.kind === "sync-reply")
        return cfg.extraReplies > 0
          ? {
              state: { kind: "draining", remaining: cfg.extraReplies },
              effects: [{ kind: "await-sync", ms: cfg.syncTimeoutMs }],
            }
          : { state: { kind: "synced" }, effects: [{ kind: "done", ok: true }] };
      if (input.kind === "no-reply")
        return {
          state: { ...s, kind: "backoff", noisy: s.noisy || input.noisy },
          effects: [{ kind: "sleep", ms: cfg.retrySleepMs }],
        };
      return { state: s, effects: [] };
    case "backoff": {
      if (input.kind !== "slept") return { state: s, effects: [] };
      if (s.sync + 1 < cfg.syncsPerAttempt) return startSync(cfg, { ...s, sync: s.sync + 1 });
      if (s.attempt + 1 < cfg.attempts)
        return beginAttempt(cfg, { ...s, attempt: s.attempt + 1, sync: 0 });
      return { state: { kind: "failed", noisy: s.noisy }, effects: [{ kind: "done", ok: false }] };
    }
    case "draining":
      if (input.kind === "sync-reply" && s.remaining > 1)
        return {
          state: { ...s, remaining: s.remaining - 1 },
          effects: [{ kind: "await-sync", ms: cfg.syncTimeoutMs }],
        };
      if (input.kind === "sync-reply" || input.kind === "no-reply")
        return { state: { kind: "synced" }, effects: [{ kind: "done", ok: true }] };
      return { state: s, effects: [] };
    case "synced":
    case "failed":
      return { state: s, effects: [] };
  }
}

function beginAttempt(cfg: ConnectConfig, a: Attempt): ConnectStep {
  if (cfg.strategies.length === 0) return startSync(cfg, a);
  return resetStep(cfg, { ...a, kind: "resetting", step: 0 });
}

function resetStep(
  cfg: ConnectConfig,
  s: Extract<ConnectState, { kind: "resetting" }>,
): ConnectStep {
  const seq = cfg.strategies[s.attempt % cfg.strategies.length]!;
  const step = seq[s.step];
  if (!step) return startSync(cfg, s);
  if ("waitMs" in step) return { state: s, effects: [{ kind: "sleep", ms: step.waitMs }] };
  const lines = { dtr: step.dtr ?? s.lines.dtr, rts: step.rts ?? s.lines.rts };
  return { state: { ...s, lines }, effects: [{ kind: "set-lines", lines }] };
}

function startSync(cfg: ConnectConfig, a: Attempt): ConnectStep {
  const { attempt, sync, lines, warned, noisy } = a;
  return {
    state: { kind: "syncing", attempt, sync, lines, warned, noisy },
    effects: [
      { kind: "flush-input" },
      { kind: "send-sync" },
      { kind: "await-sync", ms: cfg.syncTimeoutMs },
    ],
  };
}
