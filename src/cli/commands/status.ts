/**
 * `esp-ota status`: the fleet as the broker sees it (docs/mqtt-api.md, docs/cli.md). A snapshot
 * of the retained presence, inventory, status and desired messages (readRetained), rendered by
 * src/mqtt/fleet-view.ts; with --watch, every later change too. This file only connects, feeds
 * messages to the view and prints.
 */
import { type Command, InvalidArgumentError } from "commander";
import { TIMER_MAX_MS } from "../../duration.js";
import { EspOtaError } from "../../errors.js";
import { type MqttClient, readRetained } from "../../mqtt/client.js";
import {
  type ApplyResult,
  applyMessage,
  changeLine,
  diffViews,
  emptyFleet,
  type FleetView,
  fleetView,
  renderTable,
} from "../../mqtt/fleet-view.js";
import { isTopicId, type Topics, topics } from "../../mqtt/topics.js";
import { quote } from "../../text.js";
import { durationArg } from "../args.js";
import {
  addBrokerOptions,
  type BrokerCliOptions,
  connectFromCli,
  gatewaysFromCli,
} from "../broker-options.js";
import type { CliContext } from "../context.js";

interface StatusOptions extends BrokerCliOptions {
  device?: string;
  json?: boolean;
  watch?: boolean;
  duration?: number;
}

/** A TTY redraw also refreshes the AGE column this often. */
const REDRAW_MS = 1000;

export function registerStatus(parent: Command, ctx: CliContext): void {
  const cmd = parent.command("status");
  addBrokerOptions(cmd)
    .description(
      "Show the fleet as the broker sees it: gateways (presence, attached devices) and devices (update state, release, progress, running app, error).",
    )
    .option("--device <id>", "only this device and its gateway", (v: string) => {
      if (!isTopicId(v))
        throw new InvalidArgumentError(`"${v}" is not a device id (1..64 of A-Z a-z 0-9 . _ -)`);
      return v;
    })
    .option(
      "--json",
      "one JSON document {gateways, devices}; with --watch one JSON line per change",
    )
    .option(
      "--watch",
      "keep watching: redraw on a terminal, else one line per change; until Ctrl-C / SIGTERM",
    )
    .option(
      "--duration <time>",
      "with --watch: stop after watching this long (10s, 500ms; without it, until SIGINT or SIGTERM)",
      durationArg(TIMER_MAX_MS),
    )
    .action(async (o: StatusOptions) => {
      if (o.duration !== undefined && !o.watch)
        throw new EspOtaError("E_USAGE", "--duration only applies with --watch");
      const t = topics(o.prefix);
      const client = await connectFromCli(ctx, o, "status");
      try {
        await run(ctx, o, client, t);
      } finally {
        await client.endAsync().catch(() => undefined);
      }
    });
}

/** What to subscribe to: everything, or with --device only what can mention that device. */
function filters(t: Topics, deviceId: string | undefined): string[] {
  const device =
    deviceId === undefined
      ? [t.allStatus, t.allDesired]
      : [t.status(deviceId), t.desired(deviceId)];
  return [t.allPresence, t.allInventory, ...device];
}

async function run(
  ctx: CliContext,
  o: StatusOptions,
  client: MqttClient,
  t: Topics,
): Promise<void> {
  const fleet = emptyFleet(t.prefix, gatewaysFromCli(ctx, o));
  const problems: string[] = [];
  const feed = (topic: string, payload: Uint8Array): ApplyResult => {
    const r = applyMessage(fleet, topic, payload);
    // What a publisher sent, bounded and escaped before it reaches a terminal (issue 12, defect 8).
    if (r.kind === "invalid") problems.push(`${quote(topic)}: ${r.code} ${quote(r.reason, 300)}`);
    return r;
  };
  const snapshots = await Promise.all(filters(t, o.device).map((f) => readRetained(client, f)));
  for (const snap of snapshots) for (const [topic, payload] of snap) feed(topic, payload);
  flushProblems(ctx, problems);

  const view = (now: number) =>
    fleetView(fleet, now, o.device === undefined ? {} : { deviceId: o.device });
  const first = view(Date.now());
  if (o.device !== undefined && first.devices.length === 0) {
    throw new EspOtaError(
      "E_MQTT_UNKNOWN_DEVICE",
      `nothing under ${t.prefix} on the broker mentions device ${o.device}`,
      { deviceId: o.device },
    );
  }
  if (!o.watch) {
    if (o.json) ctx.print(JSON.stringify(first, null, 2));
    else for (const line of renderTable(first)) ctx.print(line);
    return;
  }
  await watch(ctx, o, client, t, feed, problems, view, first);
}

function flushProblems(ctx: CliContext, problems: string[]): void {
  if (problems.length === 0) return;
  ctx.note(
    `ignored ${problems.length} message${problems.length === 1 ? "" : "s"} that are not what the topic carries; first: ${problems[0]}`,
  );
  problems.length = 0;
}

async function watch(
  ctx: CliContext,
  o: StatusOptions,
  client: MqttClient,
  t: Topics,
  feed: (topic: string, payload: Uint8Array) => ApplyResult,
  problems: string[],
  view: (now: number) => FleetView,
  first: FleetView,
): Promise<void> {
  const tty = ctx.stdout.isTTY === true;
  const draw = (v: FleetView) => {
    // Clear the screen and home the cursor (ECMA-48 ED 2 + CUP), then the tables.
    ctx.stdout.write("\u001b[2J\u001b[H");
    ctx.print(`esp-ota status  ${t.prefix}  ${new Date().toISOString()}  (Ctrl-C to stop)`);
    ctx.print();
    for (const line of renderTable(v)) ctx.print(line);
  };
  if (tty && !o.json) draw(first);
  else if (o.json) ctx.print(JSON.stringify(first));
  else for (const line of renderTable(first)) ctx.print(line);

  let last = first;
  const onMessage = (topic: string, payload: Buffer) => {
    if (feed(topic, payload).kind !== "applied") {
      flushProblems(ctx, problems);
      return;
    }
    const now = Date.now();
    const next = view(now);
    const changes = diffViews(last, next);
    last = next;
    if (changes.length === 0) return;
    if (tty && !o.json) return draw(next);
    const at = new Date(now).toISOString();
    for (const c of changes) {
      if (o.json)
        ctx.print(JSON.stringify({ at, [c.kind]: c.row, ...(c.removed ? { removed: true } : {}) }));
      else ctx.print(`${at} ${changeLine(c)}`);
    }
  };
  const subs = filters(t, o.device);
  // Live byte progress only feeds the redrawn table; as lines it would be a flood.
  if (tty && !o.json) subs.push(`${t.prefix}/devices/${o.device ?? "+"}/progress`);
  client.on("message", onMessage);
  const onOffline = () => ctx.note("broker connection lost; reconnecting");
  const onReconnect = () => ctx.note("broker connection restored");
  client.on("offline", onOffline);
  client.on("connect", onReconnect);
  const timer = tty && !o.json ? setInterval(() => draw(view(Date.now())), REDRAW_MS) : undefined;
  try {
    // Subscribing again resends the retained messages: whatever changed since the snapshot is
    // applied now; the rest is the same state and prints nothing.
    const granted = await client.subscribeAsync(subs, { qos: 1 });
    if (granted.some((g) => g.qos >= 0x80)) {
      throw new EspOtaError(
        "E_MQTT_SUBSCRIBE",
        `the broker refused a subscription to ${subs.join(", ")}`,
      );
    }
    await new Promise<void>((done) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        clearTimeout(limit);
        done();
      };
      // Counted from here, not from the start: connecting and the snapshot take what they take.
      const limit = o.duration === undefined ? undefined : setTimeout(stop, o.duration);
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
  } finally {
    clearInterval(timer);
    client.off("message", onMessage);
    client.off("offline", onOffline);
    client.off("connect", onReconnect);
  }
}
