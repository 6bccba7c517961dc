/**
 * `esp-ota rollout start|status|pause|resume|abort|list`: staged rollouts of a release over MQTT
 * (docs/rollouts.md). A thin shell (STYLE.md §2): the decisions are in src/rollout/machine.ts,
 * the MQTT side in src/rollout/runner.ts; this file reads the release directory, connects, draws
 * the live view and maps the outcome to an exit code (0 completed, 1 aborted).
 */
import { join, resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { MqttClient } from "mqtt";
import { EspOtaError } from "../../errors.js";
import type { GatewayTrust } from "../../mqtt/status-auth.js";
import { topics as makeTopics, type Topics } from "../../mqtt/topics.js";
import { isBaseUrl } from "../../release/build-plan.js";
import { createRollout, type RolloutEvent, summarize } from "../../rollout/machine.js";
import { ownerLive, type RolloutState } from "../../rollout/messages.js";
import {
  baseUrlFromVariant,
  checkIndex,
  defaultRolloutId,
  isRolloutId,
  parseDurationMs,
  parsePercent,
  parseWaves,
  type RolloutIndex,
  selectDevices,
} from "../../rollout/plan.js";
import {
  applyUnowned,
  DEFAULT_HEARTBEAT_MS,
  listRollouts,
  loadRollout,
  type RolloutRunner,
  runRollout,
  sendControl,
  watchState,
} from "../../rollout/runner.js";
import { eventLine, renderList, renderLive, renderSummary } from "../../rollout/view.js";
import {
  addBrokerOptions,
  type BrokerCliOptions,
  connectFromCli,
  gatewaysFromCli,
} from "../broker-options.js";
import type { CliContext } from "../context.js";

const usage =
  <T>(parse: (s: string) => T | string) =>
  (value: string): T => {
    const v = parse(value);
    if (typeof v === "string") throw new InvalidArgumentError(v);
    return v;
  };

async function connect(
  ctx: CliContext,
  o: BrokerCliOptions,
): Promise<{ client: MqttClient; topics: Topics }> {
  const client = await connectFromCli(ctx, o, "rollout");
  return { client, topics: makeTopics(o.prefix) };
}

async function withBroker<T>(
  ctx: CliContext,
  o: BrokerCliOptions,
  f: (client: MqttClient, topics: Topics) => Promise<T>,
): Promise<T> {
  const { client, topics } = await connect(ctx, o);
  try {
    return await f(client, topics);
  } finally {
    await client.endAsync().catch(() => {});
  }
}

function rolloutIdArg(value: string): string {
  if (!isRolloutId(value))
    throw new InvalidArgumentError(`"${value}" is not a rollout id (1..64 of A-Z a-z 0-9 . _ -)`);
  return value;
}

async function mustLoad(client: MqttClient, topics: Topics, id: string): Promise<RolloutState> {
  const s = await loadRollout(client, topics, id);
  if (!s)
    throw new EspOtaError(
      "E_ROLLOUT_NOT_FOUND",
      `no rollout ${id} under ${topics.prefix} on this broker`,
      { rolloutId: id },
    );
  return s;
}

/** The live view: a redrawn block on a TTY, one line per change otherwise (stderr both). */
function liveView(ctx: CliContext): {
  event: (e: RolloutEvent, s: RolloutState) => void;
  warn: (m: string) => void;
} {
  if (!ctx.stderr.isTTY) {
    return {
      event: (e) => ctx.note(eventLine(e)),
      warn: (m) => ctx.note(`warning: ${m}`),
    };
  }
  let drawn = 0;
  const draw = (s: RolloutState, extra?: string) => {
    // Cursor up over the last block, clear to the end of the screen, draw again.
    if (drawn > 0) ctx.stderr.write(`\x1b[${drawn}A\x1b[0J`);
    if (extra) ctx.stderr.write(`${extra}\n`);
    const lines = renderLive(s);
    ctx.stderr.write(`${lines.join("\n")}\n`);
    drawn = lines.length;
  };
  return {
    event: (e, s) =>
      draw(s, e.kind === "device" || e.kind === "wave-started" ? undefined : eventLine(e)),
    warn: (m) => {
      if (drawn > 0) ctx.stderr.write(`\x1b[${drawn}A\x1b[0J`);
      drawn = 0;
      ctx.note(`warning: ${m}`);
    },
  };
}

/** Prints the outcome and turns an abort into exit code 1. */
function finish(ctx: CliContext, s: RolloutState, json: boolean | undefined): void {
  if (json) ctx.print(JSON.stringify(summarize(s), null, 2));
  else for (const line of renderSummary(s)) ctx.print(line);
  if (s.state === "aborted")
    throw new EspOtaError(
      "E_ROLLOUT_ABORTED",
      `rollout ${s.rolloutId} aborted (${s.reason?.kind}): ${s.reason?.message}`,
      { rolloutId: s.rolloutId },
    );
}

/** Runs the rollout in this process until it ends, detaches, or a signal stops it. */
async function drive(
  ctx: CliContext,
  client: MqttClient,
  topics: Topics,
  state: RolloutState,
  o: {
    resume?: boolean;
    wait: boolean;
    json?: boolean;
    heartbeatMs: number;
    gateways: GatewayTrust | undefined;
  },
): Promise<void> {
  if (!o.gateways)
    ctx.note(
      "note: device statuses are not authenticated: anyone who may publish on the broker can advance or abort this rollout; pass --gateways FILE (esp-ota agent key on each gateway, then esp-ota gateways add)",
    );
  const view = liveView(ctx);
  let runner: RolloutRunner | undefined;
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    void runner?.stop();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    runner = await runRollout({
      client,
      topics,
      state,
      heartbeatMs: o.heartbeatMs,
      ...(o.gateways ? { gateways: o.gateways } : {}),
      ...(o.resume ? { resume: true } : {}),
      ...(o.wait ? {} : { detach: true }),
      onEvent: view.event,
      onWarning: view.warn,
    });
    if (interrupted) await runner.stop();
    const end = await runner.done;
    if (end.state === "completed" || end.state === "aborted") return finish(ctx, end, o.json);
    if (!o.wait) {
      if (o.json) ctx.print(JSON.stringify(summarize(end), null, 2));
      ctx.note(
        `rollout ${end.rolloutId}: wave ${end.currentWave + 1} published; continue with \`esp-ota rollout resume ${end.rolloutId}\``,
      );
      return;
    }
    throw new EspOtaError(
      "E_ROLLOUT_DETACHED",
      `stopped following rollout ${end.rolloutId} (${end.state}, wave ${end.currentWave + 1}/${end.waves.length}); continue with \`esp-ota rollout resume ${end.rolloutId}\``,
      { rolloutId: end.rolloutId },
    );
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

function readIndex(ctx: CliContext, dir: string): RolloutIndex {
  let value: unknown;
  try {
    value = JSON.parse(ctx.readText(join(dir, "index.json")));
  } catch (e) {
    throw new EspOtaError(
      "E_ROLLOUT_INDEX",
      `cannot read ${join(dir, "index.json")}: ${(e as Error).message}`,
      { path: dir },
      e,
    );
  }
  const c = checkIndex(value);
  if (!c.ok) throw new EspOtaError(c.code, c.reason, { path: dir });
  return c.index;
}

/** The base URL `release build` was given, from the first manifest's first variant URL. */
function deriveBaseUrl(ctx: CliContext, dir: string, index: RolloutIndex): string {
  const first = index.devices[0];
  if (!first) throw new EspOtaError("E_ROLLOUT_DEVICES", `${dir}/index.json lists no devices`);
  let url: unknown;
  try {
    const m = JSON.parse(ctx.readText(join(dir, first.manifest))) as {
      signed?: { variants?: { urls?: unknown[] }[] };
    };
    url = m.signed?.variants?.[0]?.urls?.[0];
  } catch (e) {
    throw new EspOtaError(
      "E_ROLLOUT_INDEX",
      `cannot read ${join(dir, first.manifest)}: ${(e as Error).message}`,
      { path: dir },
      e,
    );
  }
  const base =
    typeof url === "string"
      ? first.variants.map((v) => baseUrlFromVariant(url as string, v.file)).find((b) => b)
      : undefined;
  if (!base)
    throw new EspOtaError(
      "E_ROLLOUT_BASE_URL",
      `cannot derive the base URL from ${first.manifest}'s variant URL ${JSON.stringify(url)}; pass --base-url`,
    );
  return base;
}

interface StartCliOptions extends BrokerCliOptions {
  release: string;
  id?: string;
  baseUrl?: string;
  devices?: string;
  all?: boolean;
  waves: number[];
  maxFailureRate: number;
  minSample: number;
  waveTimeout: number;
  heartbeat: number;
  wait: boolean;
  json?: boolean;
}

const heartbeatOption = () =>
  new Option(
    "--heartbeat <duration>",
    "how often the owning process refreshes its heartbeat in the retained state; 10s by default: another machine may take over after 3 missed beats (30 s)",
  )
    .argParser(usage(parseDurationMs))
    .default(DEFAULT_HEARTBEAT_MS, "10s");

export function registerRollout(parent: Command, ctx: CliContext): void {
  const rollout = parent
    .command("rollout")
    .description(
      "Staged rollouts of a release over MQTT: waves of devices, abort on a failure rate, pause/resume/abort from any machine (docs/rollouts.md).",
    );

  addBrokerOptions(
    rollout
      .command("start")
      .description(
        "Publish the release's update notices wave by wave and follow the devices' statuses until the rollout completes (exit 0) or aborts (exit 1). With --id of an existing rollout of the same release, continue it.",
      )
      .requiredOption("--release <dir>", "the release directory (`esp-ota release build --out`)")
      .option("--id <id>", "rollout id; default: the release id and the UTC time", rolloutIdArg)
      .option(
        "--base-url <url>",
        "where the release directory is published; default: derived from the first manifest's variant URL (the --base-url given to release build)",
      )
      .option(
        "--devices <ids>",
        "comma-separated device ids, in rollout order (canaries first); default: every device in index.json, in its order",
      )
      .option("--all", "every device in index.json (the default)")
      .option(
        "--waves <list>",
        "cumulative percentages of the devices per wave, the last 100%; default a canary of 1% (at least one device), then 10%, 50%, all",
        usage(parseWaves),
        [1, 10, 50, 100],
      )
      .option(
        "--max-failure-rate <pct>",
        "abort when (failed + rolled-back) / finished exceeds this; default 5%",
        usage(parsePercent),
        5,
      )
      .option(
        "--min-sample <n>",
        "judge the failure rate only once this many devices finished; default 1, so a failing canary stops the rollout",
        usage((v) => (/^[1-9]\d*$/.test(v) ? Number(v) : `"${v}" is not a whole number >= 1`)),
        1,
      )
      .addOption(
        new Option(
          "--wave-timeout <duration>",
          "pause (not advance) when a wave has not finished this long after it started; default 30m, an update over a slow UART plus a reboot and a confirmation",
        )
          .argParser(usage(parseDurationMs))
          .default(30 * 60_000, "30m"),
      )
      .addOption(heartbeatOption())
      .option("--no-wait", "publish the first wave and exit; `rollout resume ID` continues it")
      .option("--json", "print the final summary as JSON on stdout"),
  ).action(async (o: StartCliOptions) => {
    if (o.all && o.devices !== undefined)
      throw new EspOtaError("E_USAGE", "--devices and --all exclude each other");
    const dir = resolve(ctx.cwd, o.release);
    const index = readIndex(ctx, dir);
    const selection =
      o.devices === undefined
        ? ("all" as const)
        : o.devices
            .split(",")
            .map((s) => s.trim())
            .filter((s) => s !== "");
    const sel = selectDevices(index, selection);
    if (!sel.ok) throw new EspOtaError(sel.code, sel.reason);
    if (o.baseUrl !== undefined && !isBaseUrl(o.baseUrl))
      throw new EspOtaError("E_ROLLOUT_BASE_URL", `--base-url ${o.baseUrl} is not an http(s) URL`);
    const baseUrl = (o.baseUrl ?? deriveBaseUrl(ctx, dir, index)).replace(/\/+$/, "");
    const now = Date.now();
    const id = o.id ?? defaultRolloutId(index.releaseId, new Date(now));
    await withBroker(ctx, o, async (client, topics) => {
      let state = await loadRollout(client, topics, id);
      if (state) {
        if (state.releaseId !== index.releaseId)
          throw new EspOtaError(
            "E_ROLLOUT_MISMATCH",
            `rollout ${id} is for release ${state.releaseId}, not ${index.releaseId}`,
            { rolloutId: id },
          );
        if (state.state === "completed" || state.state === "aborted")
          throw new EspOtaError("E_ROLLOUT_FINISHED", `rollout ${id} already ${state.state}`, {
            rolloutId: id,
          });
        refuseIfOwned(state, Date.now());
        ctx.note(
          `rollout ${id}: continuing the existing rollout (${state.state}, wave ${state.currentWave + 1})`,
        );
      } else {
        state = createRollout(
          {
            rolloutId: id,
            releaseId: index.releaseId,
            version: index.version,
            releaseDir: dir,
            manifestBaseUrl: baseUrl,
            devices: sel.devices,
            waves: o.waves,
            maxFailureRate: o.maxFailureRate,
            minSample: o.minSample,
            waveTimeoutMs: o.waveTimeout,
          },
          now,
        );
        ctx.note(
          `rollout ${id}: ${index.releaseId} to ${sel.devices.length} device(s) in waves ${o.waves.join(",")}%`,
        );
      }
      await drive(ctx, client, topics, state, {
        wait: o.wait,
        ...(o.json ? { json: true } : {}),
        heartbeatMs: o.heartbeat,
        gateways: gatewaysFromCli(ctx, o),
      });
    });
  });

  addBrokerOptions(
    rollout
      .command("status")
      .description(
        "Print a rollout's retained state; with --watch, follow it until it ends (exit 1 if it aborts).",
      )
      .argument("<id>", "rollout id", rolloutIdArg)
      .option("--watch", "keep printing every change until the rollout ends (Ctrl-C to stop)")
      .option("--json", "the summary as JSON (with --watch: one JSON document per line)"),
  ).action(async (id: string, o: BrokerCliOptions & { watch?: boolean; json?: boolean }) => {
    await withBroker(ctx, o, async (client, topics) => {
      const state = await mustLoad(client, topics, id);
      if (!o.watch) {
        if (o.json) ctx.print(JSON.stringify(summarize(state), null, 2));
        else for (const line of renderSummary(state)) ctx.print(line);
        return;
      }
      const end = await watch(ctx, client, topics, state, o.json);
      if (!o.json) for (const line of ["", ...renderSummary(end)]) ctx.print(line);
      if (end.state === "aborted")
        throw new EspOtaError(
          "E_ROLLOUT_ABORTED",
          `rollout ${end.rolloutId} aborted (${end.reason?.kind}): ${end.reason?.message}`,
          { rolloutId: end.rolloutId },
        );
    });
  });

  for (const action of ["pause", "abort"] as const) {
    addBrokerOptions(
      rollout
        .command(action)
        .description(
          action === "pause"
            ? "Pause a rollout: no new wave starts; notices already out stay. Sent to the process that runs it; applied here if none does (its heartbeat is stale)."
            : "Abort a rollout: withdraw the notices of devices that have not started, leave the ones mid-update to finish. Sent to the process that runs it; applied here if none does.",
        )
        .argument("<id>", "rollout id", rolloutIdArg)
        .option("--reason <text>", "recorded in the rollout state")
        .addOption(controlTimeoutOption()),
    ).action(async (id: string, o: BrokerCliOptions & { reason?: string; timeout: number }) => {
      await withBroker(ctx, o, async (client, topics) => {
        const state = await mustLoad(client, topics, id);
        if (state.state === "completed" || state.state === "aborted")
          throw new EspOtaError("E_ROLLOUT_FINISHED", `rollout ${id} already ${state.state}`, {
            rolloutId: id,
          });
        if (action === "pause" && state.state === "paused") {
          ctx.print(`rollout ${id} is already paused (${state.reason?.kind})`);
          return;
        }
        const reached = (s: RolloutState) =>
          action === "pause" ? s.state !== "running" : s.state === "aborted";
        const after = await control(ctx, client, topics, state, {
          action,
          ...(o.reason === undefined ? {} : { reason: o.reason }),
          timeoutMs: o.timeout,
          reached,
        });
        ctx.print(
          `rollout ${id}: ${after.state}${after.reason ? ` (${after.reason.kind}: ${after.reason.message})` : ""}`,
        );
      });
    });
  }

  addBrokerOptions(
    rollout
      .command("resume")
      .description(
        "Resume a paused rollout, or continue one whose operator process stopped: sent to the process that runs it if one does; otherwise this process takes the rollout over and runs it until it ends (exit 0 completed, 1 aborted).",
      )
      .argument("<id>", "rollout id", rolloutIdArg)
      .addOption(controlTimeoutOption())
      .addOption(heartbeatOption())
      .option("--no-wait", "apply the resume, publish what is due, and exit")
      .option("--json", "print the final summary as JSON on stdout"),
  ).action(
    async (
      id: string,
      o: BrokerCliOptions & { timeout: number; heartbeat: number; wait: boolean; json?: boolean },
    ) => {
      await withBroker(ctx, o, async (client, topics) => {
        const state = await mustLoad(client, topics, id);
        if (state.state === "completed" || state.state === "aborted")
          throw new EspOtaError("E_ROLLOUT_FINISHED", `rollout ${id} already ${state.state}`, {
            rolloutId: id,
          });
        if (ownerLive(state, Date.now())) {
          if (state.state === "running") {
            ctx.print(
              `rollout ${id} is running (owned by ${state.owner!.host}:${state.owner!.pid})`,
            );
            return;
          }
          const after = await control(ctx, client, topics, state, {
            action: "resume",
            timeoutMs: o.timeout,
            reached: (s) => s.state !== "paused",
          });
          ctx.print(`rollout ${id}: ${after.state}`);
          return;
        }
        await drive(ctx, client, topics, state, {
          resume: true,
          wait: o.wait,
          ...(o.json ? { json: true } : {}),
          heartbeatMs: o.heartbeat,
          gateways: gatewaysFromCli(ctx, o),
        });
      });
    },
  );

  addBrokerOptions(
    rollout
      .command("list")
      .description("List the rollouts whose state the broker retains.")
      .option("--json", "one JSON array of summaries"),
  ).action(async (o: BrokerCliOptions & { json?: boolean }) => {
    await withBroker(ctx, o, async (client, topics) => {
      const { states, invalid } = await listRollouts(client, topics);
      for (const i of invalid) ctx.note(`warning: ${i.topic}: ${i.reason}`);
      if (o.json) {
        ctx.print(
          JSON.stringify(
            states.map((s) => {
              const { devices: _d, ...rest } = summarize(s);
              return { ...rest, owner: s.owner ?? null, ownerLive: ownerLive(s, Date.now()) };
            }),
            null,
            2,
          ),
        );
      } else for (const line of renderList(states, Date.now())) ctx.print(line);
    });
  });
}

function controlTimeoutOption(): Option {
  return new Option(
    "--timeout <duration>",
    "how long to wait for the owning process to apply it; 10s by default (it applies control messages as they arrive)",
  )
    .argParser(usage(parseDurationMs))
    .default(10_000, "10s");
}

function refuseIfOwned(state: RolloutState, now: number): void {
  if (ownerLive(state, now))
    throw new EspOtaError(
      "E_ROLLOUT_BUSY",
      `rollout ${state.rolloutId} is run by ${state.owner!.host} pid ${state.owner!.pid} (heartbeat ${state.owner!.heartbeatAt})`,
      { rolloutId: state.rolloutId },
    );
}

/**
 * Pause/resume/abort: to the owning process over the control topic, confirmed by its retained
 * state; when no process owns the rollout (stale heartbeat), applied here directly.
 */
async function control(
  ctx: CliContext,
  client: MqttClient,
  topics: Topics,
  state: RolloutState,
  o: {
    action: "pause" | "resume" | "abort";
    reason?: string;
    timeoutMs: number;
    reached: (s: RolloutState) => boolean;
  },
): Promise<RolloutState> {
  const now = Date.now();
  if (!ownerLive(state, now)) {
    const input =
      o.action === "resume"
        ? ({ type: "resume", now } as const)
        : ({
            type: o.action,
            now,
            ...(o.reason === undefined ? {} : { reason: o.reason }),
          } as const);
    const r = await applyUnowned(client, topics, state, input);
    for (const e of r.events) ctx.note(eventLine(e));
    ctx.note(`no process runs rollout ${state.rolloutId}: applied here`);
    return r.state;
  }
  const w = watchState(client, topics, state.rolloutId, o.reached, o.timeoutMs);
  await w.ready;
  await sendControl(client, topics, state.rolloutId, {
    format: 1,
    action: o.action,
    ...(o.reason === undefined ? {} : { reason: o.reason }),
    at: new Date(now).toISOString(),
  });
  const after = await w.result;
  if (!after) throw new TypeError("control: the watch ended without a state");
  return after;
}

/** `status --watch`: prints every retained change until the rollout ends or a signal stops it. */
async function watch(
  ctx: CliContext,
  client: MqttClient,
  topics: Topics,
  first: RolloutState,
  json: boolean | undefined,
): Promise<RolloutState> {
  let drawn = 0;
  let last = first;
  const show = (s: RolloutState) => {
    last = s;
    if (json) return ctx.print(JSON.stringify(summarize(s)));
    if (ctx.stdout.isTTY) {
      if (drawn > 0) ctx.stdout.write(`\x1b[${drawn}A\x1b[0J`);
      const lines = renderLive(s);
      ctx.stdout.write(`${lines.join("\n")}\n`);
      drawn = lines.length;
      return;
    }
    const sum = summarize(s);
    const counts = Object.entries(sum.counts)
      .filter(([, n]) => n > 0)
      .map(([b, n]) => `${b} ${n}`)
      .join(", ");
    ctx.print(`${s.updatedAt} ${s.state} wave ${s.currentWave + 1}/${s.waves.length}: ${counts}`);
  };
  show(first);
  const ended = (s: RolloutState) => s.state === "completed" || s.state === "aborted";
  if (ended(first)) return first;
  let lastUpdate = first.updatedAt;
  const w = watchState(
    client,
    topics,
    first.rolloutId,
    (s) => {
      // Heartbeat-only republishes carry the same updatedAt: nothing to show.
      if (s.updatedAt !== lastUpdate) {
        lastUpdate = s.updatedAt;
        show(s);
      }
      return ended(s);
    },
    Number.POSITIVE_INFINITY,
  );
  process.once("SIGINT", w.cancel);
  process.once("SIGTERM", w.cancel);
  try {
    await w.ready;
    return (await w.result) ?? last;
  } finally {
    process.removeListener("SIGINT", w.cancel);
    process.removeListener("SIGTERM", w.cancel);
  }
}
