/**
 * Headless Chromium for the console tests: Debian's `chromium` (apt-get install chromium;
 * .ci/run installs it) driven by playwright-core, which downloads nothing: it is pointed at the
 * installed binary. Without it the tests say so and skip locally; under CI=true a missing one
 * fails the run (as socat and Mosquitto do: test/helpers/sim-serve.ts, brokers.ts).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

export function requireChromium(what: string): boolean {
  const have = existsSync(CHROMIUM);
  if (!have && /^(true|1)$/i.test(process.env.CI ?? ""))
    throw new Error(`${CHROMIUM} is required in CI for ${what} (apt-get install chromium)`);
  if (!have)
    console.warn(`${what}: ${CHROMIUM} is not installed (apt-get install chromium); not run here`);
  return have;
}

/**
 * A fresh profile each launch (playwright takes the --user-data-dir as launchPersistentContext's
 * first argument), removed on close.
 */
export async function launchChromium(): Promise<{
  context: BrowserContext;
  close(): Promise<void>;
}> {
  const profile = mkdtempSync(join(tmpdir(), "esp-ota-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
