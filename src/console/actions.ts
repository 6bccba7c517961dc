/**
 * What the console's buttons do, through the same rollout code as `esp-ota rollout`
 * (docs/console.md "Actions"): a start creates the rollout (machine.ts createRollout) and this
 * process runs it (runner.ts runRollout), as `rollout start` would; pause, resume, abort,
 * retry-failed and next-wave go to the process that owns the rollout over its control topic, or
 * are applied here when none does (runner.ts controlRollout), and a rollout applied here that
 * runs again is then run here. The console acts with its own broker connection and credentials,
 * never the user's; every action is logged with the user who asked.
 */
import { hostname } from "node:os";
import { EspOtaError } from "../errors.js";
import type { MqttClient } from "../mqtt/client.js";
import type { GatewayTrust } from "../mqtt/status-auth.js";
import type { Topics } from "../mqtt/topics.js";
import { createRollout, notApplicable } from "../rollout/machine.js";
import { type ControlAction, ownerLive, type RolloutState } from "../rollout/messages.js";
import {
  defaultRolloutId,
  isRolloutId,
  parseDurationMs,
  parsePercent,
  parseWaves,
  type RolloutIndex,
  selectDevices,
} from "../rollout/plan.js";
import { controlRollout, loadRollout, type RolloutRunner, runRollout } from "../rollout/runner.js";
import { eventLine } from "../rollout/view.js";

/** Reads a release directory on this machine (the CLI's readIndex and deriveBaseUrl). */
export type ReleaseReader = (dir: string) => { dir: string; index: RolloutIndex; baseUrl: string };

export interface StartRequest {
  release?: unknown;
  devices?: unknown;
  waves?: unknown;
  maxFailureRate?: unknown;
  minSample?: unknown;
  waveTimeout?: unknown;
  id?: unknown;
}

export interface ActionsOptions {
  client: MqttClient;
  topics: Topics;
  gateways?: GatewayTrust;
  readRelease?: ReleaseReader;
  /** How long an owner has to apply a control message; 10 s as `rollout pause --timeout`. */
  controlTimeoutMs?: number;
  heartbeatMs?: number;
  /**
   * The rollout's retained state as the console already holds it (its subscription to every
   * rollout state): spares an action the retained read's settle time. Absent: read from the broker.
   */
  lookup?: (id: string) => RolloutState | undefined;
  onLog: (line: string) => void;
}

/** At most this many devices in one start request (the retained state's size bound is 40 000). */
const MAX_START_DEVICES = 20_000;

const usage = (message: string) => new EspOtaError("E_USAGE", message);

export class ConsoleActions {
  /** The rollouts this process runs. */
  readonly runners = new Map<string, RolloutRunner>();

  constructor(private readonly o: ActionsOptions) {}

  /**
   * An owner that names this process but is not among the runners here is gone (it ended or
   * failed); any other is judged by its heartbeat. The rollouts run here are asked directly.
   */
  private readonly probe = (owner: { host: string; pid: number }) =>
    owner.host === hostname() && owner.pid === process.pid ? false : undefined;

  describeRelease(dir: string): {
    dir: string;
    releaseId: string;
    version: string;
    baseUrl: string;
    devices: string[];
  } {
    const r = this.reader()(dir);
    return {
      dir: r.dir,
      releaseId: r.index.releaseId,
      version: r.index.version,
      baseUrl: r.baseUrl,
      devices: r.index.devices.map((d) => d.deviceId),
    };
  }

  private reader(): ReleaseReader {
    if (!this.o.readRelease)
      throw usage("this console cannot read release directories (started without one)");
    return this.o.readRelease;
  }

  async start(req: StartRequest, user: string): Promise<RolloutState> {
    if (typeof req !== "object" || req === null) throw usage("expected a JSON object");
    if (typeof req.release !== "string" || req.release === "") throw usage("release: a directory");
    const r = this.reader()(req.release);
    const str = (v: unknown, dflt: string) => (v === undefined || v === "" ? dflt : String(v));
    const waves = parseWaves(str(req.waves, "1,10,50,100"));
    if (typeof waves === "string") throw usage(`waves: ${waves}`);
    const rate = parsePercent(str(req.maxFailureRate, "5"));
    if (typeof rate === "string") throw usage(`maxFailureRate: ${rate}`);
    const minSample = Number(str(req.minSample, "1"));
    if (!Number.isSafeInteger(minSample) || minSample < 1)
      throw usage("minSample: a whole number >= 1");
    const timeout = parseDurationMs(str(req.waveTimeout, "30m"), 2 ** 31 - 1);
    if (typeof timeout === "string") throw usage(`waveTimeout: ${timeout}`);
    let selection: "all" | string[] = "all";
    if (req.devices !== undefined) {
      if (
        !Array.isArray(req.devices) ||
        req.devices.length > MAX_START_DEVICES ||
        !req.devices.every((d) => typeof d === "string")
      )
        throw usage(`devices: a list of at most ${MAX_START_DEVICES} device ids`);
      selection = req.devices as string[];
    }
    const sel = selectDevices(r.index, selection);
    if (!sel.ok) throw new EspOtaError(sel.code, sel.reason);
    const now = Date.now();
    const id =
      req.id === undefined || req.id === ""
        ? defaultRolloutId(r.index.releaseId, new Date(now))
        : String(req.id);
    if (!isRolloutId(id)) throw usage("id: 1..64 of A-Z a-z 0-9 . _ -");
    if (await this.load(id))
      throw new EspOtaError(
        "E_ROLLOUT_NOT_APPLICABLE",
        `a rollout ${id} exists already; continue it with \`esp-ota rollout resume ${id}\` or pick another id`,
        { rolloutId: id },
      );
    const state = createRollout(
      {
        rolloutId: id,
        releaseId: r.index.releaseId,
        version: r.index.version,
        releaseDir: r.dir,
        manifestBaseUrl: r.baseUrl,
        devices: sel.devices,
        waves,
        maxFailureRate: rate,
        minSample,
        waveTimeoutMs: timeout,
      },
      now,
    );
    this.o.onLog(
      `${user}: start rollout ${id} of ${r.index.releaseId} to ${sel.devices.length} device(s) in waves ${waves.join(",")}%`,
    );
    return (await this.own(state)).state();
  }

  /** Runs the rollout in this process (the console is its owner until it ends or closes). */
  private async own(state: RolloutState): Promise<RolloutRunner> {
    const id = state.rolloutId;
    const runner = await runRollout({
      client: this.o.client,
      topics: this.o.topics,
      state,
      ...(this.o.gateways ? { gateways: this.o.gateways } : {}),
      ...(this.o.heartbeatMs ? { heartbeatMs: this.o.heartbeatMs } : {}),
      onEvent: (e) => this.o.onLog(`rollout ${id}: ${eventLine(e)}`),
      onWarning: (m) => this.o.onLog(`rollout ${id}: warning: ${m}`),
    });
    this.runners.set(id, runner);
    runner.done
      .catch((e) => this.o.onLog(`rollout ${id}: stopped: ${(e as Error).message}`))
      .finally(() => {
        if (this.runners.get(id) === runner) this.runners.delete(id);
      });
    return runner;
  }

  async control(
    id: string,
    action: ControlAction,
    user: string,
    reason?: string,
  ): Promise<RolloutState> {
    const { client, topics } = this.o;
    // The runner's own state has no owner field (the runner adds it when it saves): a rollout
    // run here is owned, whatever that state says.
    const local = this.runners.get(id);
    const state = local ? local.state() : await this.load(id);
    if (!state)
      throw new EspOtaError("E_ROLLOUT_NOT_FOUND", `no rollout ${id} under ${topics.prefix}`, {
        rolloutId: id,
      });
    const why = notApplicable(action, state);
    if (why)
      throw new EspOtaError("E_ROLLOUT_NOT_APPLICABLE", `rollout ${id}: ${action}: ${why}`, {
        rolloutId: id,
      });
    this.o.onLog(`${user}: ${action} rollout ${id}${reason ? ` (${reason})` : ""}`);
    const r = await controlRollout(client, topics, state, {
      action,
      // The audit trail in the retained state names who asked, through which tool.
      reason: reason ?? `${action} by ${user} (console)`,
      timeoutMs: this.o.controlTimeoutMs ?? 10_000,
      owned: local !== undefined || ownerLive(state, Date.now(), this.probe),
    });
    for (const e of r.events) this.o.onLog(`rollout ${id}: ${eventLine(e)}`);
    if (r.appliedHere && r.state.state === "running" && !this.runners.has(id))
      return (await this.own(r.state)).state();
    return r.state;
  }

  private async load(id: string): Promise<RolloutState | undefined> {
    return this.o.lookup ? this.o.lookup(id) : loadRollout(this.o.client, this.o.topics, id);
  }

  /** Lets go of the rollouts run here: saved without an owner, `rollout resume` continues them. */
  async close(): Promise<void> {
    await Promise.all([...this.runners.values()].map((r) => r.stop().catch(() => undefined)));
    this.runners.clear();
  }
}
