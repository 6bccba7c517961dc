/**
 * The gateway agent end to end (issue 6 "Must show"), on the embedded broker and on a real
 * Mosquitto: simulated secure ESP32s on pty pairs, the image server on loopback HTTP, the agent
 * as its own process. Each scenario checks the final status the operator sees AND the device:
 * nobody is left unbootable, and the app that runs is the one the status names.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { socatAvailable } from "../../src/uart/socat.js";
import { BROKER_KINDS } from "../helpers/brokers.js";
import { makeWorld, type World } from "../helpers/gateway.js";

const haveSocat = socatAvailable();
if (!haveSocat && /^(true|1)$/i.test(process.env.CI ?? ""))
  throw new Error("CI=true and socat is missing: apt-get install -y socat (or run .ci/run)");

const runningVersion = (w: World, id: string) => {
  const d = w.devices.devices.find((x) => x.deviceId === id)!.device;
  const s = d.state;
  return s.kind === "running" ? s.app?.version : s.kind;
};

for (const kind of BROKER_KINDS) {
  describe.skipIf(!kind.available || !haveSocat)(`agent end to end on ${kind.name}`, () => {
    let w: World;
    beforeAll(async () => {
      w = await makeWorld(kind, {
        devices: 2,
        fleet: { devices: [{}, { behaviours: { "2.0.0": "refuses" } }] },
      });
      await w.startAgent();
    }, 120_000);
    afterAll(async () => w?.close(), 60_000);

    it("updates a device, and reports a bad app's rollback as rolled back", async () => {
      const [a, b] = w.fleet.devices.map((d) => d.deviceId) as [string, string];
      const r = await w.release("2.0.0");
      await w.notify(a, r.dir);
      await w.notify(b, r.dir);
      const sa = await w.waitFinal(a, r.index.releaseId);
      const sb = await w.waitFinal(b, r.index.releaseId);
      expect(sa.state).toBe("succeeded");
      expect(sa.running?.version).toBe("2.0.0");
      expect(runningVersion(w, a)).toBe("2.0.0");
      expect(sb.state).toBe("rolled-back");
      expect(sb.error?.code).toBe("E_UART_ROLLED_BACK");
      expect(runningVersion(w, b)).toBe("1.0.0");
      // Statuses of one release never go backwards, and there is exactly one final one.
      for (const id of [a, b]) {
        const seqs = (w.statuses.get(id) ?? []).map((s) => s.seq);
        expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
        const finals = (w.statuses.get(id) ?? []).filter(
          (s) =>
            s.releaseId === r.index.releaseId &&
            ["succeeded", "rolled-back", "failed", "cancelled"].includes(s.state),
        );
        expect(finals).toHaveLength(1);
      }
    }, 120_000);
  });
}
