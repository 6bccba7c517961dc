/**
 * `esp-ota demo` (`npm run demo`, the README's first command): the whole system on one machine
 * with nothing to set up. It starts the embedded broker, three simulated ESP32s with secure boot
 * and flash encryption on pseudo-terminals (socat; without it, on in-memory UART links paced at
 * the baud rate, src/sim/fleet-memory.ts), the gateway agent on those ports, builds a
 * release from a bundled synthetic app (signed once, encrypted per device and per OTA slot),
 * serves it over HTTP, and rolls it out over MQTT in two waves with a live view. One device's
 * new app fails its self-test and the bootloader rolls it back; the other two succeed. It ends
 * with the rollout summary and what each device runs, and leaves nothing running or on disk.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Command, Option } from "commander";
import { startBroker } from "../broker/broker.js";
import { parseSizeArg } from "../src/cli/args.js";
import type { CliContext } from "../src/cli/context.js";
import { EspOtaError } from "../src/errors.js";
import { connectMqtt } from "../src/mqtt/client.js";
import { parseMessage } from "../src/mqtt/messages.js";
import { gatewayIdentity, gatewayTrust } from "../src/mqtt/status-auth.js";
import { topics } from "../src/mqtt/topics.js";
import { buildRelease } from "../src/release/build.js";
import type { ReleaseIndex } from "../src/release/build-plan.js";
import { loadKeyring } from "../src/release/keyring-fs.js";
import { openRegistry } from "../src/release/registry-fs.js";
import { createStaticServer } from "../src/release/serve.js";
import { createRollout } from "../src/rollout/machine.js";
import { runRollout } from "../src/rollout/runner.js";
import { eventLine, renderSummary } from "../src/rollout/view.js";
import type { SimDevice } from "../src/sim/device.js";
import { createFleet, fleetApp } from "../src/sim/fleet.js";
import { serveFleetInMemory } from "../src/sim/fleet-memory.js";
import { serveFleet } from "../src/sim/fleet-serve.js";
import { socatAvailable } from "../src/uart/socat.js";
import { Agent, type AgentOptions } from "./agent.js";
import { parseAgentConfig } from "./config.js";
import { loadOrCreateGatewayKey } from "./gateway-key.js";
import { createLogger } from "./log.js";
import { memoryPorts } from "./memory-ports.js";

const NEW_VERSION = "2.0.0";

export interface DemoOptions {
  /** Size of the demo app (default 256 KB: a few seconds per device at 921600 baud). */
  appSize: number;
  keep: boolean;
  /**
   * How the simulated ESP32s are attached: "pty" (pseudo-terminals through socat and serialport,
   * as USB-serial adapters appear), "memory" (in-memory UART links paced at the baud rate, no
   * socat), or "auto" (the default: pty when socat is installed, else memory).
   */
  links: "auto" | "pty" | "memory";
}

const SOCAT_INSTALL = "apt-get install -y socat (Debian/Ubuntu) or brew install socat";

export async function runDemo(ctx: CliContext, o: DemoOptions): Promise<{ ok: boolean }> {
  const say = (s: string) => ctx.print(s);
  let links: "pty" | "memory" = o.links === "memory" ? "memory" : "pty";
  if (links === "pty" && !socatAvailable()) {
    if (o.links === "pty")
      throw new EspOtaError(
        "E_UART_SOCAT_MISSING",
        `--links pty attaches the simulated ESP32s to pseudo-terminals with socat, which is not installed: ${SOCAT_INSTALL}; or run the demo with --links memory`,
      );
    links = "memory";
    ctx.note(
      `note: socat is not installed, so the simulated ESP32s are attached over in-memory UART links (same protocol, paced at the baud rate). To see them on real pseudo-terminals: ${SOCAT_INSTALL}`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-demo-"));
  const stops: (() => Promise<unknown>)[] = [];
  try {
    say("esp-ota demo: broker, image server, 3 secure ESP32s, gateway agent, one rollout");
    say("");
    // 1. The fleet: three ESP32s, secure boot V1 + flash encryption (release mode), running 1.0.0.
    const fleet = createFleet({
      dir: join(dir, "fleet"),
      devices: [
        { chip: "esp32" },
        { chip: "esp32" },
        // This device's 2.0.0 fails its self-test and calls esp_ota_mark_app_invalid_rollback_and_reboot.
        { chip: "esp32", behaviours: { [NEW_VERSION]: "refuses" } },
      ],
    });
    const ids = fleet.devices.map((d) => d.deviceId);
    say(
      `1. provisioned ${ids.length} simulated ESP32s (secure boot ${fleet.secureBoot}, flash encryption on), all running 1.0.0`,
    );

    // 2. The embedded broker.
    const broker = await startBroker({ port: 0, dataDir: join(dir, "broker") });
    stops.push(() => broker.close());
    say(`2. embedded MQTT broker at ${broker.url}`);

    // 3. The devices on pseudo-terminals, as USB-serial adapters would appear, or in memory.
    const ttyDir = join(dir, "tty");
    let devices: { devices: readonly { deviceId: string; device: SimDevice }[] };
    let ports: AgentOptions["ports"];
    if (links === "pty") {
      const served = await serveFleet(fleet.devices, { linkDir: ttyDir });
      stops.push(() => served.close());
      devices = served;
      say(`3. devices attached on ${ttyDir}/tty-<id> (real ptys through serialport)`);
    } else {
      const served = serveFleetInMemory(fleet.devices);
      stops.push(async () => served.close());
      devices = served;
      ports = memoryPorts(served);
      say("3. devices attached over in-memory UART links (paced at the baud rate)");
    }

    // 4. The release: sign once, encrypt per device and per OTA slot, signed manifests.
    const out = join(dir, "release");
    mkdirSync(out);
    const server = createStaticServer(out);
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    stops.push(
      () =>
        new Promise<void>((ok) => {
          server.closeAllConnections();
          server.close(() => ok());
        }),
    );
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const built = await buildRelease({
      keyring: loadKeyring(fleet.keysDir),
      registry: openRegistry(fleet.registryDir),
      app: fleetApp("esp32", NEW_VERSION, { size: o.appSize }),
      version: NEW_VERSION,
      devices: "all",
      baseUrl,
      outDir: out,
      expiresInMs: 7 * 86_400_000,
    });
    const index = JSON.parse(readFileSync(join(out, "index.json"), "utf8")) as ReleaseIndex;
    say(
      `4. release ${index.releaseId}: ${built.built.length} devices x 2 slots, signed then encrypted; served at ${baseUrl}`,
    );

    // 5. The gateway agent on those ports.
    const parsed = parseAgentConfig(
      `gatewayId: demo-gateway
mqtt:
  url: ${broker.url}
trust:
  policy: ${fleet.trustFile}
serial:
  ports:
    - glob: ${ttyDir}/tty-*
  rescanMs: 500
stateDir: ${join(dir, "agent-state")}
policy:
  confirmTimeoutMs: 20000
`,
      join(dir, "gateway.yaml"),
    );
    if (!parsed.config)
      throw new EspOtaError(
        "E_INTERNAL",
        `demo config: ${parsed.problems.map((p) => p.message).join("; ")}`,
      );
    const agent = new Agent({
      config: parsed.config,
      log: createLogger("warn", { pretty: false }),
      ...(ports ? { ports } : {}),
    });
    await agent.start();
    stops.push(() => agent.stop());
    const t = topics();
    const client = await connectMqtt({ url: broker.url, clientId: `esp-ota-demo-${process.pid}` });
    stops.push(() => client.endAsync());
    // Wait until the agent has identified every device over the UART.
    const attachedBy = Date.now() + 20_000;
    while (agent.attached().length < ids.length && Date.now() < attachedBy)
      await new Promise((r) => setTimeout(r, 100));
    say(
      `5. gateway agent: ${agent.attached().length} devices identified over the UART OTA protocol`,
    );
    say("");

    // Live per-device view from the agent's messages: every status state, and the download and
    // the UART transfer in quarters from the progress events.
    const last = new Map<string, string>();
    const show = (deviceId: string, line: string) => {
      if (last.get(deviceId) === line) return;
      last.set(deviceId, line);
      say(`   ${deviceId}  ${line}`);
    };
    client.on("message", (topic, payload) => {
      if (topic.endsWith("/progress")) {
        const p = parseMessage("progress", payload);
        if (!p.ok || p.value.releaseId !== index.releaseId || p.value.total === 0) return;
        const q = Math.floor((p.value.bytes * 4) / p.value.total) * 25;
        if (q > 0) show(p.value.deviceId, `${p.value.step} ${q}%`);
        return;
      }
      const p = parseMessage("status", payload);
      if (!p.ok || p.value.releaseId !== index.releaseId) return;
      const s = p.value;
      show(s.deviceId, `${s.state}${s.error ? ` (${s.error.code}: ${s.error.message})` : ""}`);
    });
    await client.subscribeAsync(`${t.prefix}/devices/+/progress`, { qos: 0 });
    await client.subscribeAsync(t.allStatus, { qos: 1 });

    // 6. The rollout: a canary wave (1 device), then the rest; abort above 50% failures.
    say(
      "6. rollout: wave 1 = 1 device (canary), wave 2 = the rest; abort if more than 50% fail; only statuses signed by the gateway count",
    );
    const state = createRollout(
      {
        rolloutId: `demo-${Date.now().toString(36)}`,
        releaseId: index.releaseId,
        version: index.version,
        manifestBaseUrl: baseUrl,
        devices: index.devices.map((d) => ({ deviceId: d.deviceId, counter: d.counter })),
        waves: [1, 100],
        maxFailureRate: 50,
        minSample: 1,
        waveTimeoutMs: 5 * 60_000,
      },
      Date.now(),
    );
    // The gateway's status-signing identity, registered as an operator would (`esp-ota agent
    // key`, `esp-ota gateways add`): the rollout counts only statuses the gateway signed.
    const gatewayKey = loadOrCreateGatewayKey(parsed.config.stateDir).key;
    const gateways = gatewayTrust({
      format: 1,
      gateways: [gatewayIdentity(parsed.config.gatewayId, gatewayKey)],
    });
    const runner = await runRollout({
      client,
      topics: t,
      state,
      gateways,
      heartbeatMs: 2000,
      onEvent: (e) => {
        if (e.kind !== "device") say(` * ${eventLine(e)}`);
      },
    });
    const end = await runner.done;
    say("");
    for (const line of renderSummary(end)) say(line);
    say("");
    say("what each device runs now (read from the simulated chips):");
    let ok = true;
    for (const d of devices.devices) {
      const s = d.device.state;
      const running =
        s.kind === "running" ? `${s.app?.version ?? "?"} from ${s.partition.label}` : s.kind;
      const expected = d.deviceId === ids[2] ? "1.0.0" : NEW_VERSION;
      const good = s.kind === "running" && s.app?.version === expected;
      ok &&= good;
      say(
        `  ${d.deviceId}  ${running}${d.deviceId === ids[2] ? "  (its 2.0.0 failed the self-test: rolled back, still bootable)" : ""}${good ? "" : "  UNEXPECTED"}`,
      );
    }
    say("");
    say(
      ok && end.state === "completed"
        ? "demo: as expected — two updated, one rolled back safely."
        : "demo: something did not go as expected (see above).",
    );
    return { ok: ok && end.state === "completed" };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    if (o.keep) say(`(kept ${dir})`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

export function registerDemo(program: Command, ctx: CliContext): void {
  program
    .command("demo")
    .description(
      "The whole system on this machine: embedded broker, image server, 3 simulated secure ESP32s (on ptys, or in-memory UART links without socat), the gateway agent, a release and a rollout (one device rolls back). Leaves nothing running.",
    )
    .option("--app-size <bytes>", "size of the demo app (K/M suffixes)", parseSizeArg, 0x40000)
    .option("--keep", "keep the temporary directory (keys, release, state) for inspection", false)
    .addOption(
      new Option(
        "--links <how>",
        "attach the simulated ESP32s on pseudo-terminals (pty, needs socat) or in-memory UART links (memory); auto: pty when socat is installed",
      )
        .choices(["auto", "pty", "memory"])
        .default("auto"),
    )
    .action(async (o: DemoOptions) => {
      const r = await runDemo(ctx, o);
      if (!r.ok) throw new EspOtaError("E_INTERNAL", "the demo did not end as expected");
    });
}
