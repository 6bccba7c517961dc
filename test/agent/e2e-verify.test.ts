/**
 * The gateway agent end to end (issue 6 "Must show"), on the embedded broker and on a real
 * Mosquitto: simulated secure ESP32s on pty pairs, the image server on loopback HTTP, the agent
 * as its own process. This file: an update that succeeds, a bad app rolled back, and every
 * release the gateway must refuse before the first byte reaches the device — a tampered
 * manifest, one signed by keys it does not trust, another device's manifest, an expired one, a
 * downgrade. Each scenario checks the final status the operator sees AND the device: the app it
 * runs, what it would boot into, and (for a refusal) that not one flash operation happened.
 *
 * One world per broker, both brokers at once; the scenarios run on different devices at once.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkStatus, gatewayIdentity, gatewayTrust } from "../../src/mqtt/status-auth.js";
import { generateManifestKey, parseManifestPrivateKeyPem } from "../../src/release/keyring.js";
import { type SignedManifest, signManifest } from "../../src/release/manifest.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { BROKER_KINDS } from "../helpers/brokers.js";
import { makeWorld, type Release, releaseHistory, type World } from "../helpers/gateway.js";

const haveSocat = socatAvailable();
if (!haveSocat && /^(true|1)$/i.test(process.env.CI ?? ""))
  throw new Error("CI=true and socat is missing: apt-get install -y socat (or run .ci/run)");

/** Flash operations so far: a refused release must not add one. */
const flashOps = (w: World, id: string) => w.device(id).device.flash.operationCount;

describe.concurrent("agent end to end: verify before touching the device", () => {
  for (const kind of BROKER_KINDS) {
    describe.skipIf(!kind.available || !haveSocat)(`on ${kind.name}`, () => {
      let w: World;
      let ids: string[];
      let r2: Release;
      beforeAll(async () => {
        w = await makeWorld(kind, {
          devices: 6,
          fleet: { devices: [{}, {}, {}, {}, {}, { behaviours: { "2.0.0": "refuses" } }] },
        });
        ids = w.ids;
        [r2] = await Promise.all([w.release("2.0.0"), w.startAgent()]);
      }, 120_000);
      afterAll(async () => w?.close(), 60_000);

      /** A refusal: the final status, and a device that runs, boots and stores what it did. */
      const refused = async (id: string, releaseId: string, code: string, ops: number) => {
        const s = await w.waitFinal(id, releaseId);
        expect(s.state).toBe("failed");
        expect(s.error?.code).toBe(code);
        releaseHistory(w, id, releaseId);
        expect(w.running(id)).toBe("1.0.0");
        expect(w.bootsInto(id)).toBe("1.0.0");
        expect(flashOps(w, id)).toBe(ops);
        return s;
      };

      it("updates a device, and reports a bad app's rollback as rolled back", async () => {
        const [a, , , , , b] = ids as [string, string, string, string, string, string];
        await w.notify(a, r2.dir);
        await w.notify(b, r2.dir);
        const [sa, sb] = await Promise.all([
          w.waitFinal(a, r2.index.releaseId),
          w.waitFinal(b, r2.index.releaseId),
        ]);
        expect(sa.state).toBe("succeeded");
        expect(sa.running?.version).toBe("2.0.0");
        expect(sa.previousVersion).toBe("1.0.0");
        expect(w.running(a)).toBe("2.0.0");
        expect(w.bootsInto(a)).toBe("2.0.0");
        expect(sb.state).toBe("rolled-back");
        expect(sb.error?.code).toBe("E_UART_ROLLED_BACK");
        expect(sb.running?.version).toBe("1.0.0");
        expect(w.running(b)).toBe("1.0.0");
        expect(w.bootsInto(b)).toBe("1.0.0");
        // Every status is signed by this gateway's key (docs/security.md G1).
        const key = parseManifestPrivateKeyPem(
          readFileSync(join(w.stagingDir, "..", "gateway-key.pem"), "utf8"),
        );
        const trust = gatewayTrust({ format: 1, gateways: [gatewayIdentity(sa.gatewayId, key)] });
        for (const st of w.statuses.get(a) ?? [])
          expect(checkStatus(st, trust)).toEqual({ ok: true });
        for (const id of [a, b]) {
          const h = releaseHistory(w, id, r2.index.releaseId);
          // Every step was reported on the way, in order.
          expect(h.map((s) => s.state)).toEqual(
            expect.arrayContaining(["queued", "downloading", "transferring", "activating"]),
          );
        }

        // Then 1.5.0, signed and valid and with the same secure_version (1): the device's
        // eFuse and the build would both take it; the gateway's downgrade policy refuses it.
        const r15 = await w.release("1.5.0");
        const ops = flashOps(w, a);
        await w.notify(a, r15.dir);
        const s = await w.waitFinal(a, r15.index.releaseId);
        expect(s.state).toBe("failed");
        expect(s.error).toMatchObject({ code: "E_AGENT_DOWNGRADE", step: "selectSlot" });
        releaseHistory(w, a, r15.index.releaseId);
        expect(w.running(a)).toBe("2.0.0");
        expect(w.bootsInto(a)).toBe("2.0.0");
        expect(flashOps(w, a)).toBe(ops);
      }, 120_000);

      it("refuses a tampered manifest and one signed by untrusted keys", async () => {
        const [, d1, d2] = ids as [string, string, string];
        const r = await w.release("2.0.1");
        // d1: a variant's hash changed after signing (an attacker pointing at another image).
        const f1 = r.manifestFile(d1);
        const m1 = JSON.parse(readFileSync(f1, "utf8")) as SignedManifest;
        m1.signed.variants[0]!.sha256 = "00".repeat(32);
        writeFileSync(f1, JSON.stringify(m1));
        // d2: the same content, signed by two fresh keys the gateway has never heard of.
        const f2 = r.manifestFile(d2);
        const m2 = JSON.parse(readFileSync(f2, "utf8")) as SignedManifest;
        const keys = [generateManifestKey("ecdsa-p256"), generateManifestKey("ed25519")];
        writeFileSync(f2, JSON.stringify(signManifest(m2.signed, keys)));
        const ops = [flashOps(w, d1), flashOps(w, d2)];
        await Promise.all([w.notify(d1, r.dir), w.notify(d2, r.dir)]);
        const [s1, s2] = await Promise.all([
          refused(d1, r.index.releaseId, "E_MANIFEST_SIGNATURE_INVALID", ops[0]!),
          refused(d2, r.index.releaseId, "E_MANIFEST_KEY_UNTRUSTED", ops[1]!),
        ]);
        expect(s1.error?.step).toBe("verifyManifest");
        expect(s2.error?.step).toBe("verifyManifest");
      }, 120_000);

      it("refuses another device's manifest and an expired one", async () => {
        const [d0, , , d3, d4] = ids as [string, string, string, string, string];
        // Built two days ago, valid for one: expired yesterday.
        const rx = await w.release("2.0.2", {
          now: new Date(Date.now() - 2 * 86_400_000),
          expiresInMs: 86_400_000,
        });
        const ops = [flashOps(w, d3), flashOps(w, d4)];
        // d3 gets d0's manifest of 2.0.0 (signed, valid, just not for d3).
        await Promise.all([w.notify(d3, r2.dir, { manifestFor: d0 }), w.notify(d4, rx.dir)]);
        const [s3, s4] = await Promise.all([
          refused(d3, r2.index.releaseId, "E_MANIFEST_DEVICE_MISMATCH", ops[0]!),
          refused(d4, rx.index.releaseId, "E_MANIFEST_EXPIRED", ops[1]!),
        ]);
        expect(s3.error?.step).toBe("verifyManifest");
        expect(s4.error?.step).toBe("verifyManifest");
      }, 120_000);
    });
  }
});
