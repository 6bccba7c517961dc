/**
 * `npm run bench:console`: what the console costs while it shows a rollout of 1,000 devices
 * (issue 16). In one process, as `esp-ota console` runs: the console server and the rollout it
 * runs, with a headless Chromium page following the event stream; the broker and four fake
 * gateways of 250 devices each (test/console/world.ts) run in the same process, so the CPU
 * figure is an upper bound for the console alone. Prints the RSS and CPU over the rollout and
 * while idle afterwards, and the size of one snapshot.
 */

import { snapshot } from "../../src/console/model.js";
import { launchChromium, requireChromium } from "../console/browser.js";
import { FakeGateway, type Run, startWorld, writeRelease } from "../console/world.js";

const N = 1000;
const PER_GATEWAY = 250;
if (!requireChromium("bench:console")) process.exit(1);
const ids = Array.from({ length: N }, (_, i) => `dev-${String(i).padStart(4, "0")}`);
const scripts = (from: number) =>
  Object.fromEntries(
    ids
      .slice(from, from + PER_GATEWAY)
      .map((id, i): [string, Run[]] => [
        id,
        [i % 97 === 5 ? { final: "failed", code: "E_UART_TIMEOUT" } : { final: "succeeded" }],
      ]),
  );
const w = await startWorld(scripts(0));
const more: FakeGateway[] = [];
for (let g = 1; g < N / PER_GATEWAY; g++)
  more.push(await FakeGateway.start(w.brokerUrl, `gw-${g}`, scripts(g * PER_GATEWAY)));
writeRelease(w.releaseDir, ids);
const chrome = await launchChromium();
const page = await chrome.context.newPage();
await page.goto(w.url);
await page.fill("#login input[name=username]", "olga");
await page.fill("#login input[name=password]", "olga-pass");
await page.click("#login button[type=submit]");
await page.waitForSelector("#view .card");

const mb = (b: number) => (b / 2 ** 20).toFixed(0);
const sample = () => ({
  t: performance.now(),
  cpu: process.cpuUsage(),
  rss: process.memoryUsage().rss,
});
const before = sample();
let peak = before.rss;
const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 100);
const login = await fetch(`${w.url}/api/login`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ username: "olga", password: "olga-pass" }),
});
const csrf = ((await login.json()) as { csrf: string }).csrf;
const r = await fetch(`${w.url}/api/rollouts`, {
  method: "POST",
  headers: {
    "content-type": "application/json",
    cookie: login.headers.get("set-cookie")!.split(";")[0]!,
    "x-csrf-token": csrf,
  },
  body: JSON.stringify({
    release: w.releaseDir,
    id: "bench",
    waves: "1,10,50,100",
    maxFailureRate: "50",
  }),
});
if (r.status !== 200) throw new Error(`start: ${r.status} ${await r.text()}`);
while (!["completed", "aborted"].includes(w.server.model.rollouts.get("bench")?.state ?? ""))
  await new Promise((res) => setTimeout(res, 50));
await page.locator(".badge.completed, .badge.aborted").first().waitFor();
const after = sample();
const cpu = process.cpuUsage(before.cpu);
const secs = (after.t - before.t) / 1000;
// Idle: the page stays open, nothing changes; measured over 10 s after 2 s to settle.
await new Promise((res) => setTimeout(res, 2000));
const idle0 = sample();
await new Promise((res) => setTimeout(res, 10_000));
const idleCpu = process.cpuUsage(idle0.cpu);
clearInterval(timer);
const snap = JSON.stringify(snapshot(w.server.model, Date.now(), true));
console.log(
  `rollout of ${N} devices over ${N / PER_GATEWAY} gateways: ${w.server.model.rollouts.get("bench")?.state} in ${secs.toFixed(1)} s`,
);
console.log(
  `  CPU (user+system) while it ran: ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s = ${(((cpu.user + cpu.system) / 1e6 / secs) * 100).toFixed(0)}% of one core (broker and gateways included)`,
);
console.log(`  RSS: ${mb(before.rss)} MB before, peak ${mb(peak)} MB, ${mb(after.rss)} MB after`);
console.log(
  `  idle with the page open: ${(((idleCpu.user + idleCpu.system) / 1e6 / 10) * 100).toFixed(1)}% of one core`,
);
console.log(`  one snapshot: ${(snap.length / 1024).toFixed(0)} KiB of JSON`);
await chrome.close();
for (const g of more) await g.close();
await w.close();
