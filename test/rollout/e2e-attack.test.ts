/**
 * Issue 12 defect 4 end to end, on the embedded broker and a real Mosquitto: the real gateway
 * agent in its own process, simulated ESP32s on ptys, the image server over loopback HTTP, and
 * `esp-ota rollout start --gateways` in-process (test/helpers/gateway.ts for the world).
 *
 * The attack forges nothing. While the rollout runs, after its first wave, anyone who may publish
 * on the broker sends a notice for the same release (even with the rollout's id) with a manifest URL
 * that 404s to a device of the second wave. Its gateway runs it, fails, and signs a genuine
 * `failed`. Matching statuses by release id alone, the rollout counted that failure as soon as
 * the second wave started and aborted. Now it counts only the statuses that echo the digest of
 * the notice it published itself; the gateway runs the release again for the rollout's notice
 * (a re-issued notice after a failure: docs/mqtt-api.md "Notice semantics"), and the rollout
 * completes. The waves are ordered around the attack with `rollout start --no-wait` and `rollout
 * resume` (the documented way to leave a rollout and continue it), not by racing an update.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeMessage, noticeDigest } from "../../src/mqtt/messages.js";
import { checkStatus, gatewayIdentity, gatewayTrust } from "../../src/mqtt/status-auth.js";
import { topics } from "../../src/mqtt/topics.js";
import { parseManifestPrivateKeyPem } from "../../src/release/keyring.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { BROKER_KINDS } from "../helpers/brokers.js";
import { runCapture } from "../helpers/cli.js";
import { GATEWAY_ID, makeWorld, type Release, type World } from "../helpers/gateway.js";

const haveSocat = socatAvailable();
if (!haveSocat && /^(true|1)$/i.test(process.env.CI ?? ""))
  throw new Error("CI=true and socat is missing: apt-get install -y socat (or run .ci/run)");

describe.concurrent("rollout end to end: only the outcomes of its own notices count", () => {
  for (const kind of BROKER_KINDS) {
    describe.skipIf(!kind.available || !haveSocat)(`on ${kind.name}`, () => {
      let w: World;
      let rel: Release;
      let tmp: string;
      beforeAll(async () => {
        w = await makeWorld(kind, { devices: 2 });
        [rel] = await Promise.all([w.release("2.0.0"), w.startAgent()]);
        tmp = mkdtempSync(join(tmpdir(), "esp-ota-attack-"));
      }, 120_000);
      afterAll(async () => {
        await w?.close();
        if (tmp) rmSync(tmp, { recursive: true, force: true });
      }, 60_000);

      it("a notice of the same release that 404s, sent to a later wave, neither fails its device nor aborts the rollout", async () => {
        const [a, b] = w.ids as [string, string];
        const releaseId = rel.index.releaseId;
        // The operator's gateways file, from the gateway's key (as `esp-ota agent key` prints it).
        const key = parseManifestPrivateKeyPem(
          readFileSync(join(w.stagingDir, "..", "gateway-key.pem"), "utf8"),
        );
        const gatewaysFile = join(tmp, "gateways.json");
        const identity = gatewayIdentity(GATEWAY_ID, key);
        writeFileSync(gatewaysFile, JSON.stringify({ format: 1, gateways: [identity] }));
        const trust = gatewayTrust({ format: 1, gateways: [identity] });

        // The rollout runs wave 1 (a) and is left to run on its own (`--no-wait`, as
        // docs/rollouts.md shows); `rollout resume` continues it after the attack. That orders
        // the attack between the waves without racing a real update.
        const args = ["--gateways", gatewaysFile, "--broker", w.broker.url, "--mqtt-version", "4"];
        const started = await runCapture([
          "rollout",
          "start",
          "--release",
          rel.dir,
          "--id",
          "r-attack",
          "--waves",
          "50,100",
          "--max-failure-rate",
          "0",
          "--no-wait",
          ...args,
        ]);
        expect(started.code).toBe(0);
        expect((await w.waitFinal(a, releaseId)).state).toBe("succeeded");

        // The attacker: the rollout's own id and the release's counter, a URL that 404s.
        const entry = rel.index.devices.find((d) => d.deviceId === b)!;
        const forged = {
          format: 1 as const,
          deviceId: b,
          releaseId,
          counter: entry.counter,
          manifestUrls: [`${w.http.url}nowhere/${b}/manifest.json`],
          rolloutId: "r-attack",
          issuedAt: new Date().toISOString(),
        };
        await w.publishRaw(topics().desired(b), encodeMessage("notice", forged));
        const failed = await w.waitFinal(b, releaseId);
        // A genuine status, signed by the gateway: nothing was forged.
        expect(failed).toMatchObject({ state: "failed", rolloutId: "r-attack" });
        expect(checkStatus(failed, trust)).toEqual({ ok: true });
        expect(failed.noticeDigest).toBe(noticeDigest(forged));

        const r = await runCapture(["rollout", "resume", "r-attack", "--json", ...args]);
        expect(r.stderr).not.toContain("E_ROLLOUT_ABORTED");
        expect(r.code).toBe(0);
        expect(JSON.parse(r.stdout)).toMatchObject({
          state: "completed",
          counts: { succeeded: 2, failed: 0 },
        });
        // b was updated by the rollout's own notice after the attacker's failed.
        const last = await w.waitFor(
          b,
          (s) => s.releaseId === releaseId && s.state === "succeeded",
        );
        expect(last.noticeDigest).not.toBe(failed.noticeDigest);
        expect(w.running(b)).toBe("2.0.0");
        expect(w.running(a)).toBe("2.0.0");
      }, 120_000);
    });
  }
});
