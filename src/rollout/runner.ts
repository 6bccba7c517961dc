/**
 * The rollout's MQTT adapter (STYLE.md §1): feeds the pure machine (machine.ts) with device
 * statuses, control messages and the clock, and carries out its effects — retained notices on
 * `devices/<id>/desired`, withdrawals (empty retained payload), and the retained state at
 * `rollouts/<id>/state`, which is the rollout's only durable copy (docs/rollouts.md).
 *
 * Ordering: the notices an input produced are acknowledged (QoS 1) before the state that records
 * them is saved. A crash in between republishes those notices on resume — harmless, the gateway
 * ignores a notice for the release it already runs or ran (docs/mqtt-api.md "Notice
 * semantics") — whereas the other order could record a notice that was never sent, and that
 * device would hold its wave until it timed out.
 */

import { hostname } from "node:os";
import type { MqttClient } from "mqtt";
import { EspOtaError } from "../errors.js";
import { readRetained } from "../mqtt/client.js";
import { encodeMessage, parseMessage } from "../mqtt/messages.js";
import { checkStatus, type GatewayTrust } from "../mqtt/status-auth.js";
import { parseTopic, type Topics } from "../mqtt/topics.js";
import { printable } from "../text.js";
import {
  type RolloutEffect,
  type RolloutEvent,
  type RolloutInput,
  transition,
  waveDeadline,
} from "./machine.js";
import {
  type ControlAction,
  encodeRolloutControl,
  encodeRolloutState,
  parseRolloutControl,
  parseRolloutState,
  type RolloutControl,
  type RolloutState,
} from "./messages.js";
import { noticeFor } from "./plan.js";

/** Default heartbeat: often enough that a takeover waits at most 30 s (3 missed beats). */
export const DEFAULT_HEARTBEAT_MS = 10_000;

/** Subscriptions per SUBSCRIBE packet: keeps each packet small for brokers with packet limits. */
const SUBSCRIBE_BATCH = 200;

const bytes = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** The state as retained: with the owner's heartbeat while it runs, without once it let go. */
async function publishState(
  client: MqttClient,
  topics: Topics,
  s: RolloutState,
  owner: RolloutState["owner"] | undefined,
): Promise<void> {
  const { owner: _old, ...rest } = s;
  const doc: RolloutState = owner ? { ...rest, owner } : rest;
  await client.publishAsync(topics.rolloutState(s.rolloutId), bytes(encodeRolloutState(doc)), {
    qos: 1,
    retain: true,
  });
}

/** Publishes the notices and withdrawals among `effects`, concurrently (one wave at once). */
async function publishNotices(
  client: MqttClient,
  topics: Topics,
  s: RolloutState,
  effects: readonly RolloutEffect[],
  now: number,
): Promise<void> {
  const sends: Promise<unknown>[] = [];
  for (const e of effects) {
    if (e.type === "publish-notice" || e.type === "republish-notice") {
      const notice = encodeMessage("notice", noticeFor(s, e.deviceId, now));
      sends.push(
        client.publishAsync(topics.desired(e.deviceId), bytes(notice), { qos: 1, retain: true }),
      );
    } else if (e.type === "clear-notice") {
      // An empty retained payload deletes the retained notice (MQTT 3.1.1 §3.3.1.3).
      sends.push(
        client.publishAsync(topics.desired(e.deviceId), Buffer.alloc(0), { qos: 1, retain: true }),
      );
    }
  }
  await Promise.all(sends);
}

/** The retained state of rollout `id`, or undefined when the broker holds none. */
export async function loadRollout(
  client: MqttClient,
  topics: Topics,
  id: string,
  settleMs?: number,
): Promise<RolloutState | undefined> {
  const topic = topics.rolloutState(id);
  const got = (await readRetained(client, topic, settleMs)).get(topic);
  if (!got || got.byteLength === 0) return undefined;
  const p = parseRolloutState(got);
  if (!p.ok)
    throw new EspOtaError(
      "E_ROLLOUT_STATE_INVALID",
      `the retained state of rollout ${id} is unusable: ${p.reason}`,
      { rolloutId: id, cause: p.code },
    );
  if (p.value.rolloutId !== id)
    throw new EspOtaError(
      "E_ROLLOUT_STATE_INVALID",
      `the state retained for rollout ${id} names rollout ${p.value.rolloutId}`,
      { rolloutId: id },
    );
  return p.value;
}

/** Every retained rollout state under the prefix; unusable ones are reported, not fatal. */
export async function listRollouts(
  client: MqttClient,
  topics: Topics,
  settleMs?: number,
): Promise<{ states: RolloutState[]; invalid: { topic: string; reason: string }[] }> {
  const states: RolloutState[] = [];
  const invalid: { topic: string; reason: string }[] = [];
  for (const [topic, payload] of await readRetained(client, topics.allRollouts, settleMs)) {
    if (payload.byteLength === 0) continue;
    const p = parseRolloutState(payload);
    if (p.ok) states.push(p.value);
    else invalid.push({ topic, reason: p.reason });
  }
  states.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0));
  return { states, invalid };
}

/** Publishes a control message for the process that owns the rollout (QoS 1, not retained). */
export async function sendControl(
  client: MqttClient,
  topics: Topics,
  rolloutId: string,
  control: RolloutControl,
): Promise<void> {
  await client.publishAsync(
    topics.rolloutControl(rolloutId),
    bytes(encodeRolloutControl(control)),
    {
      qos: 1,
    },
  );
}

/**
 * Follows the retained state of `rolloutId` until `onState` returns true for one (then `result`
 * resolves with it); rejects with E_ROLLOUT_CONTROL_TIMEOUT after `timeoutMs`. Await `ready`
 * (subscribed) before sending a control message, so its effect cannot be missed. `cancel`
 * resolves `result` with undefined and unsubscribes.
 */
export function watchState(
  client: MqttClient,
  topics: Topics,
  rolloutId: string,
  onState: (s: RolloutState) => boolean,
  timeoutMs: number,
): { ready: Promise<void>; result: Promise<RolloutState | undefined>; cancel: () => void } {
  const topic = topics.rolloutState(rolloutId);
  let onMessage: (t: string, payload: Buffer) => void = () => {};
  let cancel: () => void = () => {};
  let timer: NodeJS.Timeout | undefined;
  const result = new Promise<RolloutState | undefined>((resolve, reject) => {
    onMessage = (t, payload) => {
      if (t !== topic || payload.byteLength === 0) return;
      const p = parseRolloutState(payload);
      if (p.ok && onState(p.value)) resolve(p.value);
    };
    cancel = () => resolve(undefined);
    client.on("message", onMessage);
    if (Number.isFinite(timeoutMs))
      timer = setTimeout(
        () =>
          reject(
            new EspOtaError(
              "E_ROLLOUT_CONTROL_TIMEOUT",
              `rollout ${rolloutId}: the owning process did not apply it within ${timeoutMs} ms`,
              { rolloutId },
            ),
          ),
        timeoutMs,
      );
  }).finally(() => {
    clearTimeout(timer);
    client.off("message", onMessage);
    void client.unsubscribeAsync(topic).catch(() => {});
  });
  const ready = client.subscribeAsync(topic, { qos: 1 }).then(() => {});
  return { ready, result, cancel };
}

/**
 * Applies one operator input to a rollout no process owns (its heartbeat is stale): transition,
 * publish the withdrawals/notices it produced, save the state without an owner.
 */
export async function applyUnowned(
  client: MqttClient,
  topics: Topics,
  state: RolloutState,
  input: RolloutInput,
): Promise<{ state: RolloutState; events: RolloutEvent[] }> {
  const r = transition(state, input);
  await publishNotices(client, topics, r.state, r.effects, input.now);
  if (r.effects.some((e) => e.type === "save-state"))
    await publishState(client, topics, r.state, undefined);
  return {
    state: r.state,
    events: r.effects.flatMap((e) => (e.type === "event" ? [e.event] : [])),
  };
}

/** The machine input a control action stands for. */
export function controlInput(
  action: ControlAction,
  reason: string | undefined,
  now: number,
): RolloutInput {
  switch (action) {
    case "pause":
    case "abort":
      return { type: action, ...(reason ? { reason } : {}), now };
    case "resume":
    case "retry-failed":
    case "next-wave":
      return { type: action, now };
  }
}

/**
 * Whether `after` shows `action` applied to `before` (the owner's retained state confirms it).
 * retry-failed: every device that had failed was notified again (its notifiedAt moved) or the
 * rollout ended; next-wave: a later wave is current.
 */
export function controlReached(
  action: ControlAction,
  before: RolloutState,
): (after: RolloutState) => boolean {
  switch (action) {
    case "pause":
      return (s) => s.state !== "running";
    case "abort":
      return (s) => s.state === "aborted";
    case "resume":
      return (s) => s.state !== "paused";
    case "next-wave":
      return (s) =>
        s.currentWave > before.currentWave || s.state === "aborted" || s.state === "completed";
    case "retry-failed": {
      const failed = before.devices.filter((id) => before.perDevice[id]!.state === "failed");
      return (s) =>
        failed.every((id) => s.perDevice[id]?.notifiedAt !== before.perDevice[id]!.notifiedAt);
    }
  }
}

/**
 * One operator action on a rollout, as `esp-ota rollout pause|resume|abort|retry-failed|
 * next-wave` and the console send it: to the owning process over the control topic, confirmed
 * by its retained state (E_ROLLOUT_CONTROL_TIMEOUT when it does not come); when no process owns
 * the rollout (`owned` false: stale heartbeat, or it ended), applied here (applyUnowned). A
 * rollout applied here that runs afterwards (resume, retry, next wave) has no owner yet: the
 * caller takes it over (runRollout) or leaves it for `rollout resume`.
 */
export async function controlRollout(
  client: MqttClient,
  topics: Topics,
  state: RolloutState,
  o: { action: ControlAction; reason?: string; timeoutMs: number; owned: boolean; now?: number },
): Promise<{ state: RolloutState; appliedHere: boolean; events: RolloutEvent[] }> {
  const now = o.now ?? Date.now();
  if (!o.owned) {
    const r = await applyUnowned(client, topics, state, controlInput(o.action, o.reason, now));
    return { ...r, appliedHere: true };
  }
  const w = watchState(
    client,
    topics,
    state.rolloutId,
    controlReached(o.action, state),
    o.timeoutMs,
  );
  await w.ready;
  await sendControl(client, topics, state.rolloutId, {
    format: 1,
    action: o.action,
    ...(o.reason === undefined ? {} : { reason: o.reason }),
    at: new Date(now).toISOString(),
  });
  const after = await w.result;
  if (!after) throw new TypeError("controlRollout: the watch ended without a state");
  return { state: after, appliedHere: false, events: [] };
}

export interface RunnerOptions {
  /** Connected (src/mqtt/client.ts connectMqtt). The runner neither connects nor ends it. */
  client: MqttClient;
  topics: Topics;
  /**
   * The gateways whose signed statuses count (`--gateways FILE`): any other status is ignored
   * with a warning, so a forgery can neither advance nor abort the rollout (docs/security.md G1).
   * Absent: every well-formed status counts.
   */
  gateways?: GatewayTrust;
  /** A new rollout (machine.ts createRollout) or one loaded from the broker (loadRollout). */
  state: RolloutState;
  /**
   * Also apply `resume` when the rollout is paused, after a `tick` (the operator asked to go on;
   * an overdue wave pauses on the tick and resumes with a fresh clock).
   */
  resume?: boolean;
  /** Stop once the current wave's notices are out and saved (`rollout start --no-wait`). */
  detach?: boolean;
  /** Milliseconds since the epoch; Date.now by default (tests inject their own). */
  clock?: () => number;
  /** Heartbeat period; DEFAULT_HEARTBEAT_MS. Also the period of the `tick` input. */
  heartbeatMs?: number;
  owner?: { host: string; pid: number };
  /** Every event the machine emits, with the state it led to. */
  onEvent?: (event: RolloutEvent, state: RolloutState) => void;
  /** A message on a status or control topic that could not be used (bad JSON, wrong device). */
  onWarning?: (message: string) => void;
}

export interface RolloutRunner {
  /** Resolves with the last state when the rollout ended, or the runner stopped or detached. */
  readonly done: Promise<RolloutState>;
  state(): RolloutState;
  /** Feeds an input (the CLI's signals; tests). */
  send(input: RolloutInput): void;
  /** Stops following the rollout and releases ownership (the state is saved without an owner). */
  stop(): Promise<RolloutState>;
}

/**
 * Runs a rollout until it completes, aborts, detaches or is stopped. Resolves once subscribed
 * and once `start` was applied (the first wave's notices are out).
 */
export async function runRollout(o: RunnerOptions): Promise<RolloutRunner> {
  const { client, topics } = o;
  const clock = o.clock ?? Date.now;
  const heartbeatMs = o.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  const ownerId = o.owner ?? { host: hostname(), pid: process.pid };
  const rolloutId = o.state.rolloutId;
  const controlTopic = topics.rolloutControl(rolloutId);
  const statusTopics = o.state.devices.map((d) => topics.status(d));

  let state = o.state;
  const inbox: RolloutInput[] = [];
  let pumping: Promise<void> | undefined;
  let dirty = false;
  let ended = false;
  let deadline: number | undefined;
  let deadlineTimer: NodeJS.Timeout | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  let resolveDone!: (s: RolloutState) => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<RolloutState>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  // The caller may only await start-up; a failure must still reach `done` without an unhandled
  // rejection in between.
  done.catch(() => {});

  const owner = () => ({
    ...ownerId,
    heartbeatAt: new Date(clock()).toISOString(),
    heartbeatMs,
  });

  const armDeadline = () => {
    const due = waveDeadline(state);
    if (due === deadline) return;
    clearTimeout(deadlineTimer);
    deadline = due;
    if (due === undefined) return;
    const wave = state.currentWave;
    deadlineTimer = setTimeout(
      () => enqueue({ type: "wave-timeout", wave, now: clock() }),
      Math.max(0, due - clock()),
    );
  };

  const apply = async (input: RolloutInput) => {
    const r = transition(state, input);
    state = r.state;
    await publishNotices(client, topics, state, r.effects, input.now);
    if (r.effects.some((e) => e.type === "save-state")) dirty = true;
    for (const e of r.effects) if (e.type === "event") o.onEvent?.(e.event, state);
    armDeadline();
    if (r.effects.some((e) => e.type === "finish")) await shutdown();
  };

  const save = async () => {
    dirty = false;
    const ending = ended || state.state === "aborted" || state.state === "completed";
    await publishState(client, topics, state, ending ? undefined : owner());
  };

  // One input at a time, in arrival order; saves are coalesced over a burst of inputs (a wave's
  // worth of statuses arriving together makes one retained write, not one per status).
  const pump = async () => {
    while (inbox.length > 0 && !ended) {
      await apply(inbox.shift()!);
      if (inbox.length === 0 && dirty && !ended) await save();
    }
  };
  const kick = () => {
    if (pumping || ended || inbox.length === 0) return;
    pumping = pump()
      .catch(fail)
      .finally(() => {
        pumping = undefined;
        kick();
      });
  };
  const enqueue = (input: RolloutInput) => {
    if (ended) return;
    inbox.push(input);
    kick();
  };
  const idle = async () => {
    while (pumping) await pumping;
  };

  const onMessage = (topic: string, payload: Buffer) => {
    const t = parseTopic(topics.prefix, topic);
    if (!t || payload.byteLength === 0) return;
    if (t.kind === "status") {
      if (!Object.hasOwn(state.perDevice, t.id)) return;
      const p = parseMessage("status", payload);
      if (!p.ok) return o.onWarning?.(`status of ${t.id} ignored: ${p.code} ${p.reason}`);
      if (p.value.deviceId !== t.id)
        return o.onWarning?.(`status on ${topic} names device ${p.value.deviceId}; ignored`);
      if (o.gateways) {
        const auth = checkStatus(p.value, o.gateways);
        if (!auth.ok)
          return o.onWarning?.(`status of ${t.id} ignored: ${auth.code} ${auth.reason}`);
        // A signed status that does not name the notice it answers is from an agent before
        // noticeDigest, which echoes whatever rolloutId a publisher wrote: it could be the
        // outcome of anyone's notice (machine.ts statusAnswers; issue 12 defect 4).
        if (p.value.releaseId === state.releaseId && p.value.noticeDigest === undefined)
          return o.onWarning?.(
            `status of ${t.id} ignored: it does not name the notice it answers (noticeDigest; the gateway's agent is older than this rollout tool)`,
          );
      }
      enqueue({ type: "status", status: p.value, now: clock() });
    } else if (t.kind === "rollout-control" && t.id === rolloutId) {
      const p = parseRolloutControl(payload);
      if (!p.ok) return o.onWarning?.(`control message ignored: ${p.code} ${printable(p.reason)}`);
      const c = p.value;
      enqueue(controlInput(c.action, c.reason, clock()));
    }
  };

  const unsubscribe = async () => {
    client.off("message", onMessage);
    const all = [controlTopic, ...statusTopics];
    for (let i = 0; i < all.length; i += SUBSCRIBE_BATCH)
      await client.unsubscribeAsync(all.slice(i, i + SUBSCRIBE_BATCH)).catch(() => {});
  };

  let shuttingDown: Promise<void> | undefined;
  const shutdown = () => {
    shuttingDown ??= (async () => {
      ended = true;
      clearInterval(heartbeat);
      clearTimeout(deadlineTimer);
      // Let go of the rollout: saved without an owner, so `rollout resume` anywhere may continue.
      await save();
      await unsubscribe();
      resolveDone(state);
    })().catch((e) => rejectDone(e));
    return shuttingDown;
  };

  const fail = (e: unknown) => {
    ended = true;
    clearInterval(heartbeat);
    clearTimeout(deadlineTimer);
    client.off("message", onMessage);
    rejectDone(e);
  };

  client.on("message", onMessage);
  const all = [controlTopic, ...statusTopics];
  for (let i = 0; i < all.length; i += SUBSCRIBE_BATCH)
    await client.subscribeAsync(all.slice(i, i + SUBSCRIBE_BATCH), { qos: 1 });

  heartbeat = setInterval(() => {
    // The heartbeat itself is a save: other machines judge ownership by its age.
    dirty = true;
    enqueue({ type: "tick", now: clock() });
  }, heartbeatMs);

  // Claim the rollout at once (saved with the owner even when `start` changes nothing).
  dirty = true;
  enqueue({ type: "start", now: clock() });
  if (o.resume) {
    // The operator asked to go on: an overdue wave (the process was down) pauses first, then the
    // resume restarts its clock, instead of the wave timing out right after the resume. A
    // rollout still running (taken over from a process that died) has nothing to resume: the
    // input would only report itself ignored while this process runs it (issue 13 item 11).
    enqueue({ type: "tick", now: clock() });
    await idle();
    if (state.state === "paused") enqueue({ type: "resume", now: clock() });
  }
  await idle();
  if (o.detach || state.state === "aborted" || state.state === "completed") await shutdown();

  return {
    done,
    state: () => state,
    send: enqueue,
    stop: async () => {
      // Finish what is in flight first: an input half-applied would lose its notices' record.
      await idle();
      await shutdown();
      return done;
    },
  };
}
