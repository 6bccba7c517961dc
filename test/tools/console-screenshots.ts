/**
 * `npm run docs:console-screenshots`: the PNGs of docs/console.md, made by driving the real
 * console in headless Chromium (test/console/browser.ts) against a broker, two fake gateways and
 * a rollout of 36 devices caught mid-way: canary and wave 2 done with a few failures, wave 3
 * transferring. Writes docs/console/{rollouts,devices,gateways,confirm}.png.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { launchChromium, requireChromium } from "../console/browser.js";
import { FakeGateway, type Run, startWorld } from "../console/world.js";

if (!requireChromium("docs:console-screenshots")) process.exit(1);
const OUT = join(import.meta.dirname, "../../docs/console");
mkdirSync(OUT, { recursive: true });

const ids = Array.from({ length: 36 }, (_, i) => `esp32-${String(i + 1).padStart(3, "0")}`);
const script: Record<string, Run[]> = {};
ids.forEach((id, i) => {
  if (i === 5) script[id] = [{ final: "failed", code: "E_UART_TIMEOUT" }];
  else if (i === 9) script[id] = [{ final: "rolled-back", code: "E_UART_ROLLED_BACK" }];
  else if (i === 13) script[id] = [{ final: "failed", code: "E_DOWNLOAD_FAILED" }];
  else if (i >= 20 && i % 3 === 0) script[id] = [{ final: "succeeded", hold: "downloading" }];
  else if (i >= 20 && i % 3 === 1) script[id] = [{ final: "succeeded", hold: "queued" }];
  else script[id] = [{ final: "succeeded" }];
});
const first = Object.fromEntries(ids.slice(0, 18).map((id) => [id, script[id]!]));
const second = Object.fromEntries(ids.slice(18).map((id) => [id, script[id]!]));
const w = await startWorld(first);
const gw2 = await FakeGateway.start(w.brokerUrl, "gw-line-2", second);
// The release directory must list every device.
const { writeRelease } = await import("../console/world.js");
writeRelease(w.releaseDir, ids);
// Each agent's health summary in its retained presence (docs/mqtt-api.md "presence"): one
// healthy, one degraded by a slow event loop and a port that failed to attach, and one gone
// offline whose last summary shows stale.
// The counters as each agent would have them since it started: gw-lab-1's canary and wave 2
// (2 failed, 1 rolled back), gw-line-2's wave 3 in flight with one port that failed to attach.
const health = (o: {
  ports: [attached: number, updating: number, failed: number];
  updates: [started: number, succeeded: number, failed: number, rolledBack: number];
  loop: number;
  uptime: number;
  frames: number;
  staging: number;
}) => ({
  ready: true,
  devices: {
    attached: o.ports[0],
    updating: o.ports[1],
    identifying: 0,
    failed: o.ports[2],
    conflict: 0,
  },
  updates: {
    started: o.updates[0],
    succeeded: o.updates[1],
    failed: o.updates[2],
    rolledBack: o.updates[3],
    cancelled: 0,
  },
  ...(o.updates[2] + o.updates[3] > 0
    ? {
        lastFailure: { code: "E_DOWNLOAD_FAILED", at: new Date(Date.now() - 90_000).toISOString() },
      }
    : {}),
  uartFrameErrors: o.frames,
  mqttReconnects: o.ports[2],
  stagingBytes: o.staging,
  eventLoopDelayMs: o.loop,
  uptimeSec: o.uptime,
});
const presence = (gatewayId: string, state: "online" | "offline", h?: object, ageMs = 0) =>
  w.gateway.client.publishAsync(
    `esp-ota/v1/gateways/${gatewayId}/presence`,
    JSON.stringify({
      format: 1,
      gatewayId,
      state,
      version: "0.1.0",
      at: new Date(Date.now() - ageMs).toISOString(),
      ...(h ? { health: h } : {}),
    }),
    { qos: 1, retain: true },
  );
await presence(
  "gw-lab-1",
  "online",
  health({
    ports: [18, 0, 0],
    updates: [18, 15, 2, 1],
    loop: 14,
    uptime: 9 * 86_400 + 7200,
    frames: 3,
    staging: 0,
  }),
);
await presence(
  "gw-line-2",
  "online",
  health({
    ports: [7, 10, 1],
    updates: [10, 0, 0, 0],
    loop: 180,
    uptime: 5400,
    frames: 23,
    staging: 10 * 1_100_000,
  }),
);
await presence(
  "gw-line-3",
  "online",
  health({
    ports: [12, 0, 0],
    updates: [0, 0, 0, 0],
    loop: 22,
    uptime: 2 * 86_400,
    frames: 0,
    staging: 0,
  }),
  7_200_000,
);
await presence("gw-line-3", "offline", undefined, 5_400_000);
const chrome = await launchChromium();
try {
  const page = await chrome.context.newPage();
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.goto(w.url);
  await page.fill("#login input[name=username]", "olga");
  await page.fill("#login input[name=password]", "olga-pass");
  await page.click("#login button[type=submit]");
  await page.waitForSelector("#view .card");
  const post = (path: string, body: object) =>
    page.evaluate(
      async ([p, b]) => {
        const s = (await (await fetch("/api/session")).json()) as { csrf: string };
        const r = await fetch(p as string, {
          method: "POST",
          headers: { "content-type": "application/json", "x-csrf-token": s.csrf },
          body: JSON.stringify(b),
        });
        return r.status;
      },
      [path, body] as const,
    );
  // An earlier rollout, finished, for the list.
  const status = await post("/api/rollouts", {
    release: w.releaseDir,
    devices: ids,
    waves: "5,50,100",
    maxFailureRate: "25",
    minSample: "5",
    waveTimeout: "45m",
    id: "app-1.2.0-line-1",
  });
  if (status !== 200) throw new Error(`start: ${status}`);
  for (const [i, id] of ids.entries())
    await (i < 18 ? w.gateway : gw2).log(id, [
      `I (1021) uota: rx offset 0x${(i * 4096).toString(16)} window 8`,
      "I (1022) uota: sha256 ok, setting boot partition ota_1",
      i === 5 ? "E (1490) uota: no ACK from host after 3 retries" : "I (1500) app: 1.2.0 running",
    ]);
  await page.waitForSelector('[data-rollout="app-1.2.0-line-1"] .bar .seg-updating');
  await page.waitForTimeout(600);
  await page.screenshot({ path: join(OUT, "rollouts.png"), fullPage: false });
  await page.click('[data-rollout="app-1.2.0-line-1"] button[data-action=abort]');
  await page.fill("#confirm-reason", "E_UART_TIMEOUT on line 1: checking the cables");
  await page.screenshot({ path: join(OUT, "confirm.png") });
  await page.click("#confirm button[value=cancel]");
  await page.click("[data-view=devices]");
  await page.click("tr[data-device=esp32-006]");
  await page.waitForSelector(".detail pre.log");
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(OUT, "devices.png") });
  await page.click("[data-view=gateways]");
  await page.waitForTimeout(200);
  await page.screenshot({ path: join(OUT, "gateways.png") });
  console.log(
    `wrote ${["rollouts", "confirm", "devices", "gateways"].map((n) => join(OUT, `${n}.png`)).join(", ")}`,
  );
} finally {
  await chrome.close();
  await gw2.close();
  await w.close();
}
