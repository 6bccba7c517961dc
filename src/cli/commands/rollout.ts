/**
 * `esp-ota rollout start|status|pause|resume|abort|list`: staged rollouts of a release over MQTT
 * (docs/rollouts.md). A thin shell (STYLE.md §2): the decisions are in src/rollout/machine.ts,
 * the MQTT side in src/rollout/runner.ts; this file reads the release directory, connects, draws
 * the live view and maps the outcome to an exit code (0 completed, 1 aborted).
 */
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { MqttClient } from "mqtt";
import { TIMER_MAX_MS } from "../../duration.js";
import { EspOtaError } from "../../errors.js";
import type { GatewayTrust } from "../../mqtt/status-auth.js";
import { topics as makeTopics, type Topics } from "../../mqtt/topics.js";
import { isBaseUrl } from "../../release/build-plan.js";
import {
  createRollout,
  notApplicable,
  type RolloutEvent,
  summarize,
} from "../../rollout/machine.js";
import {
  type ControlAction,
  type OwnerProbe,
  ownerGone,
  ownerLive,
  type RolloutOwner,
  type RolloutState,
} from "../../rollout/messages.js";
import {
  baseUrlFromVariant,
  checkIndex,
  defaultRolloutId,
  isRolloutId,
  parsePercent,
  parseWaves,
  type RolloutIndex,
  selectDevices,
} from "../../rollout/plan.js";
import {
  controlRollout,
  DEFAULT_HEARTBEAT_MS,
  listRollouts,
  loadRollout,
  type RolloutRunner,
  runRollout,
  watchState,
} from "../../rollout/runner.js";
import {
  eventLine,
  renderList,
  renderLive,
  renderSummary,
  watchLinePrinter,
} from "../../rollout/view.js";
import { printable } from "../../text.js";
import { durationArg } from "../args.js";
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

export function readIndex(ctx: CliContext, dir: string): RolloutIndex {
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
export function deriveBaseUrl(ctx: CliContext, dir: string, index: RolloutIndex): string {
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

interface ControlCliOptions extends BrokerCliOptions {
  reason?: string;
  timeout: number;
  json?: boolean;
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
    "how often the owning process refreshes its heartbeat in the retained state; another machine may take over after 3 missed beats",
  )
    .argParser(durationArg(TIMER_MAX_MS))
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
      .addOption(
        new Option(
          "--waves <list>",
          "cumulative percentages of the devices per wave, the last 100%; the first wave is the canary (at least one device)",
        )
          .argParser(usage(parseWaves))
          .default([1, 10, 50, 100], "1%,10%,50%,100%"),
      )
      .addOption(
        new Option(
          "--max-failure-rate <pct>",
          "abort when (failed + rolled-back) / finished exceeds this percentage",
        )
          .argParser(usage(parsePercent))
          .default(5, "5%"),
      )
      .option(
        "--min-sample <n>",
        "judge the failure rate only once this many devices finished; 1 so that a failing canary stops the rollout",
        usage((v) => (/^[1-9]\d*$/.test(v) ? Number(v) : `"${v}" is not a whole number >= 1`)),
        1,
      )
      .addOption(
        new Option(
          "--wave-timeout <duration>",
          "pause (not advance) when a wave has not finished this long after it started; long enough for an update over a slow UART plus a reboot and a confirmation",
        )
          .argParser(durationArg(TIMER_MAX_MS))
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
        .option(
          "--json",
          "print the rollout's summary afterwards as JSON (as `rollout status --json`)",
        )
        .addOption(controlTimeoutOption()),
    ).action(async (id: string, o: ControlCliOptions) => {
      await withBroker(ctx, o, async (client, topics) => {
        const state = await mustLoad(client, topics, id);
        if (state.state === "completed" || state.state === "aborted")
          throw new EspOtaError("E_ROLLOUT_FINISHED", `rollout ${id} already ${state.state}`, {
            rolloutId: id,
          });
        if (action === "pause" && state.state === "paused") {
          if (o.json) ctx.print(JSON.stringify(summarize(state), null, 2));
          else ctx.print(`rollout ${id} is already paused (${state.reason?.kind})`);
          return;
        }
        const { state: after } = await control(ctx, client, topics, state, {
          action,
          ...(o.reason === undefined ? {} : { reason: o.reason }),
          timeoutMs: o.timeout,
        });
        if (o.json) ctx.print(JSON.stringify(summarize(after), null, 2));
        else
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
        const gone = ownerGone(state, Date.now(), processAlive);
        if (gone === undefined) {
          if (state.state === "running") {
            const owned = `rollout ${id} is running (owned by ${state.owner!.host}:${state.owner!.pid})`;
            if (o.json) {
              ctx.note(owned);
              ctx.print(JSON.stringify(summarize(state), null, 2));
            } else ctx.print(owned);
            return;
          }
          const { state: after } = await control(ctx, client, topics, state, {
            action: "resume",
            timeoutMs: o.timeout,
          });
          if (o.json) ctx.print(JSON.stringify(summarize(after), null, 2));
          else ctx.print(`rollout ${id}: ${after.state}`);
          return;
        }
        // Say what this process does: it resumes a paused rollout, or it takes over a running
        // one whose owner is gone (the runner applies `resume` only to a paused one).
        ctx.note(
          state.state === "paused"
            ? `rollout ${id}: resuming it here (${gone})`
            : `rollout ${id}: taking it over (${gone})`,
        );
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

  for (const action of ["retry-failed", "next-wave"] as const) {
    addBrokerOptions(
      rollout
        .command(action)
        .description(
          action === "retry-failed"
            ? 'Notify again, with a re-issued notice, only the devices whose last status for the rollout is failed; the rollout runs again even if it aborted (docs/rollouts.md "Retry the failed"). Sent to the process that runs it; if none does, this process applies it and runs the rollout until it ends.'
            : "Start the next wave now, without waiting for the current one to finish (a paused rollout runs again). Sent to the process that runs it; if none does, this process applies it and runs the rollout until it ends.",
        )
        .argument("<id>", "rollout id", rolloutIdArg)
        .addOption(controlTimeoutOption())
        .addOption(heartbeatOption())
        .option("--no-wait", "apply it, publish what is due, and exit")
        .option("--json", "print the summary afterwards as JSON on stdout"),
    ).action(
      async (
        id: string,
        o: BrokerCliOptions & { timeout: number; heartbeat: number; wait: boolean; json?: boolean },
      ) => {
        await withBroker(ctx, o, async (client, topics) => {
          const state = await mustLoad(client, topics, id);
          const why = notApplicable(action, state);
          if (why)
            throw new EspOtaError("E_ROLLOUT_NOT_APPLICABLE", `rollout ${id}: ${why}`, {
              rolloutId: id,
            });
          const r = await control(ctx, client, topics, state, { action, timeoutMs: o.timeout });
          if (!r.appliedHere || r.state.state !== "running") {
            if (o.json) ctx.print(JSON.stringify(summarize(r.state), null, 2));
            else
              ctx.print(
                `rollout ${id}: ${r.state.state}, wave ${r.state.currentWave + 1}/${r.state.waves.length}`,
              );
            return;
          }
          // Applied here and running again: nobody else runs it, so this process does.
          await drive(ctx, client, topics, r.state, {
            wait: o.wait,
            ...(o.json ? { json: true } : {}),
            heartbeatMs: o.heartbeat,
            gateways: gatewaysFromCli(ctx, o),
          });
        });
      },
    );
  }

  addBrokerOptions(
    rollout
      .command("list")
      .description("List the rollouts whose state the broker retains.")
      .option("--json", "one JSON array of summaries"),
  ).action(async (o: BrokerCliOptions & { json?: boolean }) => {
    await withBroker(ctx, o, async (client, topics) => {
      const { states, invalid } = await listRollouts(client, topics);
      // Topic and reason come from whoever published there: printed escaped (src/text.ts).
      for (const i of invalid) ctx.note(`warning: ${printable(i.topic)}: ${printable(i.reason)}`);
      if (o.json) {
        ctx.print(
          JSON.stringify(
            states.map((s) => {
              const { devices: _d, ...rest } = summarize(s);
              return {
                ...rest,
                owner: s.owner ?? null,
                ownerLive: ownerLive(s, Date.now(), processAlive),
              };
            }),
            null,
            2,
          ),
        );
      } else for (const line of renderList(states, Date.now(), processAlive)) ctx.print(line);
    });
  });
}

function controlTimeoutOption(): Option {
  return new Option(
    "--timeout <duration>",
    "how long to wait for the owning process to apply it (it applies control messages as they arrive)",
  )
    .argParser(durationArg(TIMER_MAX_MS))
    .default(10_000, "10s");
}

/**
 * An owner on this host, looked at directly: signal 0 checks that the pid exists without
 * signalling it (kill(2)); EPERM means it exists under another user. An owner on another host
 * is judged by its heartbeat alone (undefined).
 */
const processAlive: OwnerProbe = (owner: RolloutOwner) => {
  if (owner.host !== hostname() || owner.pid <= 0) return undefined;
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
};

function refuseIfOwned(state: RolloutState, now: number): void {
  if (ownerLive(state, now, processAlive))
    throw new EspOtaError(
      "E_ROLLOUT_BUSY",
      `rollout ${state.rolloutId} is run by ${state.owner!.host} pid ${state.owner!.pid} (heartbeat ${state.owner!.heartbeatAt})`,
      { rolloutId: state.rolloutId },
    );
}

/**
 * An operator action: to the owning process over the control topic, confirmed by its retained
 * state; when no process owns the rollout (stale heartbeat), applied here directly
 * (runner.ts controlRollout, which the console uses too).
 */
async function control(
  ctx: CliContext,
  client: MqttClient,
  topics: Topics,
  state: RolloutState,
  o: { action: ControlAction; reason?: string; timeoutMs: number },
): Promise<{ state: RolloutState; appliedHere: boolean }> {
  const r = await controlRollout(client, topics, state, {
    action: o.action,
    ...(o.reason === undefined ? {} : { reason: o.reason }),
    timeoutMs: o.timeoutMs,
    owned: ownerLive(state, Date.now(), processAlive),
  });
  if (r.appliedHere) {
    for (const e of r.events) ctx.note(eventLine(e));
    ctx.note(`no process runs rollout ${state.rolloutId}: applied here`);
  }
  return r;
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
  // Each form is written only when what it shows changed (issue 13 item 11): most retained
  // changes (a device's next step, an idle status's seq) leave the pipe's line, or a summary
  // but for its updatedAt, as it was.
  const pipeLine = watchLinePrinter();
  let shown: string | undefined;
  const show = (s: RolloutState) => {
    last = s;
    if (json) {
      const sum = summarize(s);
      const { updatedAt: _, ...doc } = sum;
      const key = JSON.stringify(doc);
      if (key !== shown) ctx.print(JSON.stringify(sum));
      shown = key;
      return;
    }
    if (ctx.stdout.isTTY) {
      const lines = renderLive(s);
      const key = lines.join("\n");
      if (key === shown) return;
      shown = key;
      if (drawn > 0) ctx.stdout.write(`\x1b[${drawn}A\x1b[0J`);
      ctx.stdout.write(`${key}\n`);
      drawn = lines.length;
      return;
    }
    const line = pipeLine(s);
    if (line !== undefined) ctx.print(line);
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
