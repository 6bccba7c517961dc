/**
 * The lifecycle of one serial port of a gateway (STYLE.md §19; issue 12 "The agent's shape"):
 * one state per port, as a discriminated union, and a pure `transition(state, input, ctx)` that
 * returns the next state and the effects the agent carries out. Before this the lifecycle was a
 * set of flags (`identifying`, `closedPorts`, `reattached`, `byPath`, `link.closed`,
 * `stopping`), and three bugs lived in their combinations:
 *  - an attach that failed after the device was listed closed the link but left it listed, so
 *    every later notice hung at E_AGENT_DEVICE_GONE (issue 12 defect 1): here "attach failed"
 *    always ends `failed`, detached, with a retry scheduled;
 *  - a device whose INFO broke the inventory schema stayed half attached (defect 3): its INFO
 *    is checked before it is attached (checkDeviceInfo) and refused as `attachFailed`;
 *  - a second port reporting an attached device's MAC evicted the genuine one for good
 *    (defect 5): here the second port is in `conflict`, the first stays attached, and when
 *    either leaves, the other is identified again (`peerLeft`).
 *
 *   absent --seen--> identifying --identified--> attached --jobStarted--> updating
 *                        |    \--identified(held)--> conflict --peerLeft--> identifying
 *                        \--attachFailed--> failed(code, retryAt) --retryDue--> identifying
 *   attached/updating --closed--> failed(E_AGENT_DEVICE_GONE)   any --removed/stop--> gone
 *
 * Pure: no timers, no I/O; the clock comes in `ctx.now`.
 */
import type { ErrorCode } from "../errors.js";
import {
  type InventoryDevice,
  inventoryDeviceProblem,
  MAX_INVENTORY_DEVICES,
} from "../mqtt/messages.js";
import type { Info } from "../uart/messages.js";
import { deviceIdOf, otadataOf, runningAppOf } from "./device-view.js";

export type PortState =
  /** Not listed by the port watcher (yet). */
  | { kind: "absent" }
  /**
   * The link is being opened and the device asked for its INFO; `attempt` counts from 1.
   * `afterClose`: a retry after the link closed under an attached device (see `viaRetry`).
   */
  | { kind: "identifying"; attempt: number; afterClose?: boolean }
  /**
   * Identified and serving `deviceId`. `viaRetry`: attached by our own retry after its link
   * closed while the watcher still listed the old node (a pty number reused at once); the
   * watcher then reports that node "removed" (another inode) although our link is the new one.
   */
  | { kind: "attached"; deviceId: string; viaRetry: boolean }
  /** As attached, with an update running on it. */
  | { kind: "updating"; deviceId: string; viaRetry: boolean }
  /** Reports the MAC of a device another port (`heldBy`) serves: not attached, reported. */
  | { kind: "conflict"; deviceId: string; heldBy: string }
  /** Detached after a failure; identified again at `retryAt` (ms, ctx.now's clock). */
  | { kind: "failed"; code: ErrorCode; retryAt: number; attempt: number }
  /** Left for good (unplugged, or the agent stops): the agent forgets the port. */
  | { kind: "gone" };

/** Every kind of PortState, in lifecycle order (the agent's devices-by-state gauge lists each). */
export const PORT_STATE_KINDS = [
  "absent",
  "identifying",
  "attached",
  "updating",
  "conflict",
  "failed",
  "gone",
] as const satisfies readonly PortState["kind"][];

export type PortInput =
  /** The watcher lists the port (again: a replug with a new node). */
  | { kind: "seen" }
  /** The watcher no longer lists it; `exists`: a node of that name is there now. */
  | { kind: "removed"; exists: boolean }
  /** Our link to it closed underneath us. */
  | { kind: "closed" }
  /** Its INFO was read and checked. `heldBy`: another port already serves that device id. */
  | { kind: "identified"; deviceId: string; heldBy?: string }
  /** Opening, identifying or finishing the attach failed (or the INFO was refused). */
  | { kind: "attachFailed"; code: ErrorCode }
  /** The retry timer of a `failed` port fired. */
  | { kind: "retryDue" }
  | { kind: "jobStarted" }
  | { kind: "jobEnded" }
  /** The port a `conflict` port's device was held by detached. */
  | { kind: "peerLeft" }
  /** The agent stops. */
  | { kind: "stop" };

export type PortEffect =
  /** Open the link (if not open) and read the device's INFO; answer identified / attachFailed. */
  | { kind: "identify" }
  /** List the device, subscribe to its notices, publish inventory and status. */
  | { kind: "attach"; deviceId: string }
  /** Unlist the device (inventory, notices); `peers` in conflict with it are identified again. */
  | { kind: "detach"; deviceId: string; why: string }
  | { kind: "closeLink" }
  | { kind: "scheduleRetry"; at: number }
  /** A log line and the inventory's conflict list, with a code (docs/errors.md). */
  | { kind: "report"; code: ErrorCode; deviceId?: string; heldBy?: string };

export interface PortContext {
  /** Milliseconds on the agent's clock. */
  now: number;
  /** First retry delay after a failure (the agent: two rescans). */
  retryBaseMs: number;
  /** Retry delays double up to this. */
  retryMaxMs: number;
}

export interface PortStep {
  state: PortState;
  effects: PortEffect[];
}

/** Delay before retry number `attempt` (1-based): base, 2·base, 4·base, … up to max. */
export function retryDelay(attempt: number, ctx: PortContext): number {
  const n = Math.max(1, Math.min(attempt, 30));
  return Math.min(ctx.retryMaxMs, ctx.retryBaseMs * 2 ** (n - 1));
}

const same = (state: PortState): PortStep => ({ state, effects: [] });

function fail(code: ErrorCode, attempt: number, ctx: PortContext, pre: PortEffect[]): PortStep {
  const at = ctx.now + retryDelay(attempt, ctx);
  return {
    state: { kind: "failed", code, retryAt: at, attempt },
    effects: [...pre, { kind: "scheduleRetry", at }],
  };
}

/** The next state of a port and what the agent must do; never throws on any (state, input). */
export function transition(state: PortState, input: PortInput, ctx: PortContext): PortStep {
  if (input.kind === "stop") {
    const served = state.kind === "attached" || state.kind === "updating";
    return {
      state: { kind: "gone" },
      effects:
        state.kind === "absent" || state.kind === "gone"
          ? []
          : [
              ...(served
                ? [{ kind: "detach", deviceId: state.deviceId, why: "agent stopping" } as const]
                : []),
              { kind: "closeLink" },
            ],
    };
  }
  switch (state.kind) {
    case "absent":
    case "gone":
      return input.kind === "seen"
        ? { state: { kind: "identifying", attempt: 1 }, effects: [{ kind: "identify" }] }
        : same(state);

    case "identifying":
      switch (input.kind) {
        case "identified":
          if (input.heldBy !== undefined)
            return {
              state: { kind: "conflict", deviceId: input.deviceId, heldBy: input.heldBy },
              effects: [
                {
                  kind: "report",
                  code: "E_AGENT_DEVICE_CONFLICT",
                  deviceId: input.deviceId,
                  heldBy: input.heldBy,
                },
              ],
            };
          return {
            state: {
              kind: "attached",
              deviceId: input.deviceId,
              viaRetry: state.afterClose === true,
            },
            effects: [{ kind: "attach", deviceId: input.deviceId }],
          };
        case "attachFailed":
          return fail(input.code, state.attempt, ctx, [{ kind: "closeLink" }]);
        case "closed":
          return fail("E_AGENT_DEVICE_GONE", state.attempt, ctx, [{ kind: "closeLink" }]);
        case "removed":
          return { state: { kind: "gone" }, effects: [{ kind: "closeLink" }] };
        default:
          // seen (a rescan while INFO is in flight), a stray retry timer: identifying already.
          return same(state);
      }

    case "attached":
    case "updating": {
      const detach = (why: string): PortEffect => ({
        kind: "detach",
        deviceId: state.deviceId,
        why,
      });
      switch (input.kind) {
        case "jobStarted":
          return same({ kind: "updating", deviceId: state.deviceId, viaRetry: state.viaRetry });
        case "jobEnded":
          return same({ kind: "attached", deviceId: state.deviceId, viaRetry: state.viaRetry });
        case "removed":
          // The replug case of `viaRetry` (see PortState): our open link is the new node.
          if (state.viaRetry && input.exists) return same({ ...state, viaRetry: false });
          return {
            state: { kind: "gone" },
            effects: [detach("port removed"), { kind: "closeLink" }],
          };
        case "closed":
          // Unplugged and plugged back within one rescan, a tty can come back as the same node,
          // and the watcher then sees no change and never reports it again: look ourselves.
          return fail("E_AGENT_DEVICE_GONE", 1, ctx, [
            detach("port closed"),
            { kind: "closeLink" },
          ]);
        case "attachFailed":
          // A step of the attach after listing (status, subscription) failed: never stay listed
          // with a link nobody serves (issue 12 defect 1).
          return fail(input.code, 1, ctx, [
            detach(`attach failed: ${input.code}`),
            { kind: "closeLink" },
          ]);
        default:
          return same(state);
      }
    }

    case "conflict":
      switch (input.kind) {
        case "peerLeft":
          return { state: { kind: "identifying", attempt: 1 }, effects: [{ kind: "identify" }] };
        case "removed":
          return { state: { kind: "gone" }, effects: [{ kind: "closeLink" }] };
        case "closed":
          return fail("E_AGENT_DEVICE_GONE", 1, ctx, [{ kind: "closeLink" }]);
        default:
          return same(state);
      }

    case "failed":
      switch (input.kind) {
        case "retryDue":
          // Early (a timer can fire a millisecond before the wall clock says): wait again. Without
          // the new timer the port stayed failed for good (found by test/agent/agent-ports).
          if (ctx.now < state.retryAt)
            return { state, effects: [{ kind: "scheduleRetry", at: state.retryAt }] };
          return {
            state: {
              kind: "identifying",
              attempt: state.attempt + 1,
              ...(state.code === "E_AGENT_DEVICE_GONE" ? { afterClose: true } : {}),
            },
            effects: [{ kind: "identify" }],
          };
        case "seen":
          // A new node under the name (replugged): no reason to wait for the backoff.
          return {
            state: { kind: "identifying", attempt: state.attempt + 1 },
            effects: [{ kind: "identify" }],
          };
        case "removed":
          return same({ kind: "gone" });
        default:
          return same(state);
      }
  }
}

/** The device a port serves now (attached or updating), else undefined. */
export function servedDevice(s: PortState): string | undefined {
  return s.kind === "attached" || s.kind === "updating" ? s.deviceId : undefined;
}

// ---- the device's INFO, checked where it enters -------------------------------------------------

export type InfoCheck =
  | { ok: true; deviceId: string; entry: Omit<InventoryDevice, "busy" | "attachedAt" | "port"> }
  | { ok: false; code: ErrorCode; reason: string };

/** Longest INFO text quoted in a refusal (the device's own text is untrusted, STYLE.md §20). */
const QUOTE_MAX = 40;

const quote = (s: string) => JSON.stringify(s.length > QUOTE_MAX ? `${s.slice(0, QUOTE_MAX)}…` : s);

/**
 * Everything the gateway republishes from a device's INFO (chip name, slot labels, the running
 * app's descriptor, otadata) must fit the MQTT schemas (docs/mqtt-api.md): checked once here,
 * at the boundary, so a lying device is refused (E_AGENT_DEVICE_INFO) instead of making every
 * later inventory fail to encode (issue 12 defect 3). `attachedCount` devices are already
 * attached: past MAX_INVENTORY_DEVICES the device is refused with E_AGENT_TOO_MANY_DEVICES.
 */
export function checkDeviceInfo(info: Info, attachedCount: number): InfoCheck {
  const deviceId = deviceIdOf(info);
  // The status's targetSlot.label and the running app's slot: 16 characters (the partition
  // table's own limit, esp_partition_info_t.label is 16 bytes).
  const badSlot = info.slots.find((s) => s.label.length > 16);
  if (badSlot)
    return {
      ok: false,
      code: "E_AGENT_DEVICE_INFO",
      reason: `slot label ${quote(badSlot.label)} is over 16 characters`,
    };
  let entry: Omit<InventoryDevice, "busy" | "attachedAt" | "port">;
  try {
    const running = runningAppOf(info);
    entry = {
      deviceId,
      chip: info.chip,
      ...(running ? { running } : {}),
      otadata: otadataOf(info),
    };
  } catch (e) {
    return {
      ok: false,
      code: "E_AGENT_DEVICE_INFO",
      reason: `INFO cannot be read: ${String((e as Error)?.message ?? e).slice(0, 200)}`,
    };
  }
  const problem = inventoryDeviceProblem({
    ...entry,
    port: "x",
    busy: false,
    attachedAt: "1970-01-01T00:00:00Z",
  });
  if (problem)
    return {
      ok: false,
      code: "E_AGENT_DEVICE_INFO",
      reason: `${problem.slice(0, 200)} (chip ${quote(info.chip)})`,
    };
  if (attachedCount >= MAX_INVENTORY_DEVICES)
    return {
      ok: false,
      code: "E_AGENT_TOO_MANY_DEVICES",
      reason: `${attachedCount} devices are attached already, the most one gateway serves`,
    };
  return { ok: true, deviceId, entry };
}
