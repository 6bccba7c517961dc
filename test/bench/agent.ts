/**
 * `npm run bench:agent` (issue 6): 16 simulated ESP32s (secure boot + flash encryption) updated
 * at once at 921600 baud by one gateway agent. The devices run in their own process
 * (`esp-ota sim fleet serve`, real time on socat pty pairs), the agent in its own
 * (`esp-ota agent`), the broker and the image server in this one. Measured on the agent's
 * process only, from /proc: peak RSS (VmHWM) and CPU time over the update window.
 *
 * Targets: peak RSS under 150 MB; CPU per device under 5% of a core.
 * Last line: `agent-bench: rss = N MB, cpu per device = X%`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt from "mqtt";
import { startBroker } from "../../broker/broker.js";
import { type DeviceStatus, encodeMessage, parseMessage } from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import { buildRelease } from "../../src/release/build.js";
import type { ReleaseIndex } from "../../src/release/build-plan.js";
import { loadKeyring } from "../../src/release/keyring-fs.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import { createStaticServer } from "../../src/release/serve.js";
import { createFleet, fleetApp } from "../../src/sim/fleet.js";
import { socatAvailable } from "../../src/uart/socat.js";

const DEVICES = Number(process.env.DEVICES ?? 16);
const APP_SIZE = Number(process.env.APP_SIZE ?? 0x80000);
const BAUD = 921600;
const ROOT = new URL("../..", import.meta.url).pathname;
const MAIN = join(ROOT, "dist/agent/main.js");
const TICK_HZ = 100; // Linux USER_HZ: /proc/<pid>/stat times are in these ticks.

function procStatus(pid: number): { rssKb: number; hwmKb: number } {
  const s = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(s)?.[1] ?? 0);
  return { rssKb: kb("VmRSS"), hwmKb: kb("VmHWM") };
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of stat(5); index 11 and 12 after "(comm) ".
  return (Number(fields[11]) + Number(fields[12])) / TICK_HZ;
}

function spawnLines(
  args: string[],
  onLine: (l: string) => void,
  nodeFlags: string[] = [],
): ChildProcess {
  const child = spawn(process.execPath, [...nodeFlags, MAIN, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let buf = "";
  const feed = (c: Buffer) => {
    buf += c.toString();
    let i = buf.indexOf("\n");
    while (i >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
      i = buf.indexOf("\n");
    }
  };
  child.stdout!.on("data", feed);
  child.stderr!.on("data", feed);
  return child;
}

async function main() {
  if (!socatAvailable()) throw new Error("socat is needed (apt-get install -y socat)");
  const dir = mkdtempSync(join(tmpdir(), "bench-agent-"));
  try {
    const t0 = Date.now();
    const fleet = createFleet({
      dir: join(dir, "fleet"),
      devices: Array.from({ length: DEVICES }, () => ({ chip: "esp32" as const })),
    });
    const broker = await startBroker({ port: 0 });
    mkdirSync(join(dir, "release"));
    const server = createStaticServer(join(dir, "release"));
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const now = new Date();
    await buildRelease({
      keyring: loadKeyring(fleet.keysDir),
      registry: openRegistry(fleet.registryDir),
      app: fleetApp("esp32", "2.0.0", { size: APP_SIZE }),
      version: "2.0.0",
      devices: "all",
      baseUrl: base,
      outDir: join(dir, "release"),
      expiresInMs: 86_400_000,
      now: () => now,
    });
    const index = JSON.parse(
      readFileSync(join(dir, "release", "index.json"), "utf8"),
    ) as ReleaseIndex;
    const imageBytes = index.devices[0]!.variants[0]!.size;
    console.log(
      `bench:agent: ${DEVICES} devices, image ${imageBytes} bytes, ${BAUD} baud (setup ${Date.now() - t0} ms)`,
    );

    // The devices, in their own process.
    const links = join(dir, "links");
    let ready = 0;
    const sims = spawnLines(
      ["sim", "fleet", "serve", "--dir", fleet.dir, "--links", links],
      (l) => {
        if (/tty-[0-9a-f]{12}/.test(l)) ready++;
      },
    );
    while (ready < DEVICES) await new Promise((r) => setTimeout(r, 100));

    writeFileSync(
      join(dir, "gateway.yaml"),
      `gatewayId: bench-gw
mqtt:
  url: ${broker.url}
trust:
  policy: ${fleet.trustFile}
serial:
  ports:
    - glob: ${links}/tty-*
  transferBaud: ${BAUD}
stateDir: ${join(dir, "state")}
policy:
  maxConcurrentUpdates: ${DEVICES}
download:
  maxConcurrent: ${DEVICES}
log:
  level: warn
  deviceLines: false
`,
    );
    let started = false;
    const agentLines: string[] = [];
    // The agent runs as docs/operations.md's systemd unit runs it: NODE_OPTIONS
    // --max-semi-space-size=2 caps V8's young generation, which otherwise grows to 32 MB under
    // the allocation of 16 transfers (measured: peak RSS 149-159 MB without, 123 MB with).
    // AGENT_NODE_FLAGS overrides ("" for Node's defaults).
    const flags = (process.env.AGENT_NODE_FLAGS ?? "--max-semi-space-size=2")
      .split(" ")
      .filter(Boolean);
    console.log(`agent node flags: ${flags.join(" ") || "(none)"}`);
    const agent = spawnLines(
      ["agent", "--config", join(dir, "gateway.yaml"), "--log-level", "info"],
      (l) => {
        agentLines.push(l);
        if (l.includes("agent started")) started = true;
      },
      flags,
    );
    const pid = agent.pid!;

    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    const t = topics();
    const finals = new Map<string, DeviceStatus>();
    client.on("message", (_topic, payload) => {
      const p = parseMessage("status", payload);
      if (
        p.ok &&
        p.value.releaseId === index.releaseId &&
        ["succeeded", "rolled-back", "failed", "cancelled"].includes(p.value.state)
      )
        finals.set(p.value.deviceId, p.value);
    });
    await client.subscribeAsync(t.allStatus, { qos: 1 });
    while (!started) await new Promise((r) => setTimeout(r, 100));
    // Every device attached (its idle status published) before the clock starts.
    await new Promise((r) => setTimeout(r, 3000));

    let peakRss = 0;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, procStatus(pid).rssKb);
    }, 100);
    const cpu0 = cpuSeconds(pid);
    const w0 = Date.now();
    for (const d of index.devices) {
      const notice = {
        format: 1 as const,
        deviceId: d.deviceId,
        releaseId: index.releaseId,
        counter: d.counter,
        manifestUrls: [`${base}${d.manifest}`],
        issuedAt: new Date().toISOString(),
      };
      await client.publishAsync(
        t.desired(d.deviceId),
        Buffer.from(encodeMessage("notice", notice)),
        {
          qos: 1,
          retain: true,
        },
      );
    }
    const deadline = Date.now() + 10 * 60_000;
    while (finals.size < DEVICES && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    const wall = (Date.now() - w0) / 1000;
    const cpu = cpuSeconds(pid) - cpu0;
    clearInterval(sampler);
    const hwm = procStatus(pid).hwmKb;

    const ok = [...finals.values()].filter((s) => s.state === "succeeded").length;
    const physical = (imageBytes * 10) / BAUD; // 10 bits per byte on the wire (8N1)
    console.log(
      `succeeded ${ok}/${DEVICES}; wall ${wall.toFixed(1)} s for the whole fleet (one image on the wire alone: ${physical.toFixed(1)} s)`,
    );
    console.log(
      `agent CPU ${cpu.toFixed(2)} s over ${wall.toFixed(1)} s = ${((cpu / wall) * 100).toFixed(1)}% of a core`,
    );
    console.log(
      `agent RSS peak ${(Math.max(hwm, peakRss) / 1024).toFixed(0)} MB (VmHWM ${(hwm / 1024).toFixed(0)} MB)`,
    );
    if (ok < DEVICES) {
      console.log(agentLines.slice(-40).join("\n"));
      process.exitCode = 1;
    }
    agent.kill("SIGTERM");
    sims.kill("SIGTERM");
    await client.endAsync();
    await broker.close();
    server.closeAllConnections();
    server.close();
    await new Promise((r) => setTimeout(r, 500));
    const perDevice = (cpu / wall / DEVICES) * 100;
    console.log(
      `agent-bench: rss = ${(Math.max(hwm, peakRss) / 1024).toFixed(0)} MB, cpu per device = ${perDevice.toFixed(2)}%`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
