/**
 * The gateway agent end to end (issue 6 "Must show"), on the embedded broker and on a real
 * Mosquitto: the things that stop in the middle of a transfer — the agent killed (SIGKILL) and
 * restarted, the broker restarted, a device unplugged and plugged back. Each update resumes
 * where it stopped and succeeds; the device boots an app at every moment (its flash is copied
 * and booted every few hundred ms while the update runs); statuses never go backwards and end
 * in one final status. See e2e-verify.test.ts for the world.
 *
 * The images are bigger here (256 KB: 3 s over the UART at 921600 baud), so that "in the
 * middle" lasts long enough to act on. One test, in phases: the agent is killed during one
 * device's transfer; the broker restart and the unplug happen to the other two while it resumes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { socatAvailable } from "../../src/uart/socat.js";
import { BROKER_KINDS } from "../helpers/brokers.js";
import {
  makeWorld,
  type Release,
  releaseHistory,
  sampleBoots,
  type World,
} from "../helpers/gateway.js";

const haveSocat = socatAvailable();
if (!haveSocat && /^(true|1)$/i.test(process.env.CI ?? ""))
  throw new Error("CI=true and socat is missing: apt-get install -y socat (or run .ci/run)");

/** 256 KB: 3 s over the UART at 921600 baud. */
const APP_SIZE = 0x40000;
/** Where each disruption strikes: half the image acknowledged by the device. */
const MIDWAY = 0.5;
/**
 * The device's progress record gains an entry per 64 KB in flash (docs/uart-protocol.md §6.4),
 * and a transfer half done (128 KB acknowledged; at most the 48 KB receive window is not yet in
 * flash) has at least one: a resume starts there or later, never at 0.
 */
const RECORD_UNIT = 0x10000;

/** The transfer's progress of the current run passed `fraction` of the image. */
const transferPast = (w: World, id: string, releaseId: string, fraction: number) =>
  w.waitProgress(
    id,
    (p) => p.releaseId === releaseId && p.step === "transfer" && p.bytes > fraction * p.total,
  );

/** The agent's log lines of one device that say a transfer resumed, with the byte it resumed at. */
const resumes = (lines: string[], id: string) =>
  lines
    .filter((l) => l.includes(`"deviceId":"${id}"`) && l.includes("transfer resumes at byte"))
    .map((l) => (JSON.parse(l) as { from: number }).from);

describe.concurrent("agent end to end: restarts, unplugs and broker outages", () => {
  for (const kind of BROKER_KINDS) {
    describe.skipIf(!kind.available || !haveSocat)(`on ${kind.name}`, () => {
      let w: World;
      let ids: string[];
      let rb: Release;
      beforeAll(async () => {
        w = await makeWorld(kind, { devices: 3 });
        ids = w.ids;
        [rb] = await Promise.all([w.release("3.0.0", { appSize: APP_SIZE }), w.startAgent()]);
      }, 120_000);
      afterAll(async () => w?.close(), 60_000);

      it("resumes transfers after the agent is killed, the broker restarts and an unplug", async () => {
        const [d0, d1, d2] = ids as [string, string, string];
        const rel = rb.index.releaseId;
        const boots = ids.map((id) => sampleBoots(w, id));

        // d0: the agent is killed (SIGKILL) in the middle of the transfer and started again.
        await w.notify(d0, rb.dir);
        await transferPast(w, d0, rel, MIDWAY);
        await w.stopAgent("SIGKILL");
        const restarted = w.agentLogMark();
        await w.startAgent();

        // While d0's transfer goes on: d2 is unplugged in the middle of its transfer and plugged
        // back once the gateway has reported it gone; then the broker restarts in the middle of
        // d1's. One after the other: progress comes over MQTT, and during the broker's restart
        // it comes late (d2 had finished by the time "half done" arrived).
        await w.notify(d2, rb.dir);
        await transferPast(w, d2, rel, MIDWAY);
        await w.devices.unplug(d2);
        // Unplugged: no power, and the flash still boots the old app.
        expect(w.running(d2)).toBe("off");
        expect(w.bootsInto(d2)).toBe("1.0.0");
        await w.waitFor(d2, (s) => s.releaseId === rel && s.error?.code === "E_AGENT_DEVICE_GONE");
        await w.devices.plug(d2);
        await w.notify(d1, rb.dir);
        await transferPast(w, d1, rel, MIDWAY);
        await w.broker.restart();
        const [s0, s1, s2] = await Promise.all([
          w.waitFinal(d0, rel),
          w.waitFinal(d1, rel),
          w.waitFinal(d2, rel),
        ]);
        const seen = boots.map((b) => [...b.stop()].sort());

        for (const [i, s] of [s0, s1, s2].entries()) {
          const id = ids[i]!;
          expect(s.state).toBe("succeeded");
          expect(s.running?.version).toBe("3.0.0");
          expect(w.running(id)).toBe("3.0.0");
          expect(w.bootsInto(id)).toBe("3.0.0");
          // Bootable at every moment: the old app until the switch, the new one after.
          expect(seen[i]).toEqual(["1.0.0", "3.0.0"]);
          releaseHistory(w, id, rel);
        }
        // The final status is in the broker: what a client connecting now reads.
        expect(await w.retainedStatus(d1)).toMatchObject({ state: "succeeded", releaseId: rel });
        // The new agent process resumed d0's transfer, and the plugged-back d2's, from the
        // device's progress record: at a 64 KB record entry, never from 0 (no second transfer).
        const log = w.agentLogSince(restarted);
        for (const id of [d0, d2]) {
          const from = resumes(log, id);
          expect(from.length).toBe(1);
          expect(from[0]).toBeGreaterThanOrEqual(RECORD_UNIT);
          expect(from[0]! % RECORD_UNIT).toBe(0);
        }
        expect(resumes(log, d1)).toEqual([]);
      }, 180_000);
    });
  }
});
