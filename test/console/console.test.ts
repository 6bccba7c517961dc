/**
 * The console in a real browser (issue 16 "Must show"): headless Chromium against the console
 * server, a real aedes broker on loopback and a fake gateway that answers notices as the agent
 * does. One operator starts a rollout from the page, watches a device fail with its error code
 * and what to do, aborts it from the page, retries the failed device; a viewer sees it all and is
 * refused every action by the server (403). Network text reaches the DOM as text only.
 */
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, requireChromium } from "./browser.js";
import { startWorld, type World } from "./world.js";

const have = requireChromium("the console browser tests");

async function login(page: Page, url: string, user: string, password: string): Promise<void> {
  await page.goto(url);
  await page.fill("#login input[name=username]", user);
  await page.fill("#login input[name=password]", password);
  await page.click("#login button[type=submit]");
  await page.waitForSelector("#view .card");
}

describe.skipIf(!have)("operator console in Chromium", () => {
  let world: World;
  let chrome: Awaited<ReturnType<typeof launchChromium>>;

  beforeAll(async () => {
    [world, chrome] = await Promise.all([
      startWorld({
        d1: [{ final: "succeeded" }],
        // Held until the abort withdraws its notice: it reports cancelled.
        d2: [{ final: "succeeded", hold: "queued" }],
        // Fails the first time, succeeds when retried (a re-issued notice).
        d3: [{ final: "failed", code: "E_UART_TIMEOUT" }, { final: "succeeded" }],
        // Mid-transfer when the abort comes: left to finish.
        d4: [{ final: "succeeded", hold: "downloading" }],
      }),
      launchChromium(),
    ]);
  }, 20_000);

  afterAll(async () => {
    await chrome?.close();
    await world?.close();
  });

  it("start from a release directory, watch a failure, abort, retry the failed; a viewer is refused", async () => {
    const page = await chrome.context.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await login(page, world.url, "olga", "olga-pass");
    await expect(page.textContent("#who")).resolves.toContain("olga · operator");
    await world.gateway.log("d3", ["I (123) uota: <img src=x onerror=alert(1)> transfer 70%"]);

    // Start: the dialog loads the release's devices, then the confirmation.
    await page.click("#start-open");
    await page.fill("#start-release", world.releaseDir);
    await page.click("#start-load");
    await page.waitForSelector("#start-devices input[value=d4]");
    await page.fill("#start-form input[name=waves]", "25,100");
    await page.fill("#start-form input[name=maxFailureRate]", "100");
    await page.fill("#start-form input[name=id]", "r-lab");
    await page.click("#start-ok");
    await page.click("#confirm-ok");
    await page.waitForSelector("[data-rollout=r-lab]");

    // Watched: wave 2 has d3 failed with its code and the docs/errors.md action.
    const card = page.locator("[data-rollout=r-lab]");
    await card.locator("table.failures td code", { hasText: "E_UART_TIMEOUT" }).waitFor();
    await expect(card.locator("table.failures").textContent()).resolves.toContain(
      "try a lower --baud",
    );
    // (Locators, not waitForFunction: the page's CSP forbids the string eval that would need.)
    await card.locator(".bar .seg-succeeded").first().waitFor();
    expect(world.gateway.isHeld("d4")).toBe(true);

    // Abort from the page, through the confirmation dialog.
    await card.locator("button[data-action=abort]").click();
    await page.fill("#confirm-reason", "d3 keeps timing out");
    await page.click("#confirm-ok");
    await card.locator(".badge.aborted").waitFor();
    await expect(card.locator(".reason").textContent()).resolves.toContain("d3 keeps timing out");
    // d2 had not started: its notice is withdrawn (the rollout records its gateway's
    // `cancelled` when it runs again: nobody runs an aborted rollout).
    await card.locator(".waves", { hasText: "1 withdrawn" }).waitFor();

    // A viewer: watches the same rollout, every action refused by the server.
    const viewer = await chrome.context.browser()?.newContext();
    const vpage = viewer ? await viewer.newPage() : await chrome.context.newPage();
    if (!viewer) await chrome.context.clearCookies();
    await login(vpage, world.url, "victor", "victor-pass");
    await expect(vpage.textContent("#who")).resolves.toContain("read-only");
    const vbutton = vpage.locator("[data-rollout=r-lab] button[data-action=retry-failed]");
    await expect(vbutton.isDisabled()).resolves.toBe(true);
    const refused = await vpage.evaluate(async () => {
      const s = (await (await fetch("/api/session")).json()) as { csrf: string };
      const r = await fetch("/api/rollouts/r-lab/retry-failed", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": s.csrf },
        body: "{}",
      });
      return { status: r.status, body: await r.json() };
    });
    expect(refused).toEqual({
      status: 403,
      body: { error: "E_CONSOLE_FORBIDDEN", message: "victor may watch, not act (viewer)" },
    });
    await vpage.close();
    if (viewer) await viewer.close();
    else await login(page, world.url, "olga", "olga-pass");

    // Retry only the failed: d3 is notified again and succeeds; d4 finishes; the rollout completes.
    await card.locator("button[data-action=retry-failed]").click();
    await page.click("#confirm-ok");
    await card.locator(".badge.running, .badge.completed").first().waitFor();
    world.gateway.go("d4");
    await card.locator(".badge.completed").waitFor();
    await card.locator(".waves", { hasText: "1 cancelled" }).waitFor();
    await expect(card.locator("h3").first().textContent()).resolves.toBe("No failing devices");

    // The device view: history of d3's two runs, its log line as text (no element made of it).
    await page.click("[data-view=devices]");
    await page.click("tr[data-device=d3]");
    await page.waitForSelector(".detail pre.log");
    await page.locator(".detail table tr").nth(2).waitFor();
    await expect(page.textContent(".detail pre.log")).resolves.toContain(
      "<img src=x onerror=alert(1)>",
    );
    expect(await page.locator("img").count()).toBe(0);
    await expect(page.textContent(".detail")).resolves.toContain("<b>d3</b>");

    // The audit trail names who did what; CSRF: a POST without the token is refused.
    expect(world.log.some((l) => l.startsWith("olga: abort rollout r-lab"))).toBe(true);
    expect(world.log.some((l) => l.startsWith("olga: retry-failed rollout r-lab"))).toBe(true);
    expect(world.log.some((l) => l.startsWith("refused retry-failed for victor"))).toBe(true);
    const noToken = await page.evaluate(
      async () => (await fetch("/api/rollouts/r-lab/pause", { method: "POST" })).status,
    );
    expect(noToken).toBe(403);

    // The gateways view: the health summary of the retained presence (docs/mqtt-api.md).
    await world.gateway.client.publishAsync(
      "esp-ota/v1/gateways/gw-lab-1/presence",
      JSON.stringify({
        format: 1,
        gatewayId: "gw-lab-1",
        state: "online",
        version: "0.1.0",
        at: new Date().toISOString(),
        health: {
          ready: true,
          devices: { attached: 3, updating: 0, identifying: 0, failed: 1, conflict: 0 },
          updates: { started: 5, succeeded: 4, failed: 1, rolledBack: 0, cancelled: 0 },
          lastFailure: { code: "E_UART_TIMEOUT", at: new Date().toISOString() },
          uartFrameErrors: 7,
          mqttReconnects: 2,
          stagingBytes: 0,
          eventLoopDelayMs: 250,
          uptimeSec: 90_000,
        },
      }),
      { qos: 1, retain: true },
    );
    await page.click("[data-view=gateways]");
    const gwRow = page.locator("tr[data-gateway=gw-lab-1]");
    await gwRow.locator(".hbadge.degraded").waitFor();
    await expect(gwRow.locator(".hbadge").getAttribute("title")).resolves.toContain(
      "1 port(s) failed to attach",
    );
    const cells = await gwRow.locator("td").allTextContents();
    expect(cells).toEqual(
      expect.arrayContaining([
        "3 attached · 1 failed",
        "5 started · 4 ok · 1 failed",
        "250 ms",
        "1d 1h",
      ]),
    );
    expect(cells.some((c) => c.startsWith("E_UART_TIMEOUT"))).toBe(true);
    expect(pageErrors).toEqual([]);
  }, 15_000);
});
