/**
 * The end-to-end chaos suite (issue 7; docs/chaos.md "Chaos suite"): three gateways — each an
 * `esp-ota agent` process with its own config, gateway id and simulated secure ESP32s on ptys —
 * one broker, the image server behind the chaos proxy, and rollouts run in-process by
 * runRollout (src/rollout/runner.ts). Faults land together, each at a point of the rollout:
 *
 *   - HTTP: every connection cut after 48 KB (limit_data; images are 64 KB, so each arrives in
 *     pieces, resumed with Range), throttled to 32 KB/s, then reset mid-download (reset_peer),
 *     then collapsed to 0.4 KB/s (below the agent's minimum rate) and recovered;
 *   - UART noise on every link of gateway gw-a (bit errors, lost frames, garbage bursts);
 *   - a power cut in the middle of a flash write while a device is transferring;
 *   - the broker restarted while the second wave downloads;
 *   - gateway gw-b killed with SIGKILL while one of its devices is transferring, and restarted;
 *   - a device whose new app fails its self-test (it rolls back).
 *
 * Rollout 1 (waves 34,100%, abort above 30%) must complete: its one injected failure (the app
 * that refuses) stays under the threshold. Rollout 2 (waves 50,100%, abort above 20%) sends the
 * first wave to two devices whose app refuses it and to the two devices of a gateway that is
 * down: the first rollback crosses the threshold, the rollout aborts, the notices of the devices
 * that had not started are withdrawn, and the second wave is never sent.
 *
 * Invariants at the end of each rollout, checked on the simulated chips themselves: no device is
 * unbootable; each runs either the old or the new release, and its final status says which
 * (succeeded: the new one; rolled-back, failed, cancelled: the old one).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isFinalState } from "../../src/mqtt/messages.js";
import { createRollout, failureTally } from "../../src/rollout/machine.js";
import type { RolloutState } from "../../src/rollout/messages.js";
import { type RolloutRunner, runRollout } from "../../src/rollout/runner.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { BROKER_KINDS } from "../helpers/brokers.js";
import { type ChaosWorld, makeChaosWorld, type Release } from "../helpers/chaos-world.js";

const haveSocat = socatAvailable();
if (!haveSocat && /^(true|1)$/i.test(process.env.CI ?? ""))
  throw new Error("CI=true and socat is missing: apt-get install -y socat (or run .ci/run)");

/**
 * Which brokers: ESP_OTA_CHAOS_BROKERS = a comma list of aedes, mosquitto, or "all"; default
 * aedes only. One run costs 40-55 s of wall time on this shared 2-core machine, so the default
 * test run pays for one broker (test/agent/e2e.test.ts runs the agent on both).
 */
const WANTED = (process.env.ESP_OTA_CHAOS_BROKERS ?? "aedes").split(",").map((x) => x.trim());
const KINDS = BROKER_KINDS.filter((k) => WANTED.includes("all") || WANTED.includes(k.name));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `p`, or a rejection with `what()` after `ms` (a bound on a wait, not a timed assertion). */
async function within<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, fail) => {
        timer = setTimeout(() => fail(new Error(what())), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a rollout to its end (completed or aborted), bounded so a hang fails with diagnostics. */
async function rollout(
  w: ChaosWorld,
  r: Release,
  order: string[],
  o: { id: string; waves: number[]; maxFailureRate: number },
): Promise<RolloutState> {
  const counter = new Map(r.index.devices.map((d) => [d.deviceId, d.counter]));
  const state = createRollout(
    {
      rolloutId: o.id,
      releaseId: r.index.releaseId,
      version: r.index.version,
      manifestBaseUrl: r.baseUrl,
      devices: order.map((deviceId) => ({ deviceId, counter: counter.get(deviceId)! })),
      waves: o.waves,
      maxFailureRate: o.maxFailureRate,
      minSample: 1,
      waveTimeoutMs: 120_000,
    },
    Date.now(),
  );
  const runner: RolloutRunner = await runRollout({
    client: w.operator,
    topics: w.t,
    state,
    onEvent: (e) => {
      if (e.kind === "device") return;
      w.note(`rollout ${o.id}: ${e.kind}${"wave" in e ? ` ${e.wave}` : ""}`);
    },
  });
  try {
    return await within(
      runner.done,
      90_000,
      () => `rollout ${o.id} did not end in 90 s\n${w.diagnostics()}`,
    );
  } finally {
    await runner.stop().catch(() => undefined);
  }
}

/**
 * The invariants, on each device: it runs (not unbootable), and it runs the release its final
 * status names — the new one after `succeeded`, the one it ran before otherwise; a device that
 * never started this release runs what it ran before.
 */
function checkDevices(
  w: ChaosWorld,
  releaseId: string,
  newVersion: string,
  before: Map<string, string>,
): void {
  for (const [id, old] of before) {
    const runs = w.runningVersion(id);
    const final = w.finalOf(id, releaseId);
    const why = `${id}: runs ${runs}, final status ${final?.state ?? "none"}\n${w.diagnostics(10)}`;
    expect(runs, why).not.toMatch(/^(off|no-app|crash-loop)$/);
    if (final?.state === "succeeded") expect(runs, why).toBe(newVersion);
    else expect(runs, why).toBe(old);
    // The final status says which app runs (its `running` field is read from the device).
    if (final) expect(final.running?.version, why).toBe(runs);
  }
}

for (const kind of KINDS) {
  describe.skipIf(!kind.available || !haveSocat)(`chaos suite on ${kind.name}`, () => {
    let w: ChaosWorld;
    let r1: Release;
    let r2: Release;
    // Device ids by gateway: gw-a (noisy UART) 0..2, gw-b (killed) 3..5, gw-c (down in rollout 2) 6..7.
    let A: string[];
    let B: string[];
    let C: string[];

    beforeAll(async () => {
      w = await makeChaosWorld(kind, {
        gateways: [
          // About one frame in 300 lost or preceded by garbage, and 1 bit in 10^5 flipped: the
          // protocol must retransmit and resynchronise, and still finish (docs/uart-protocol.md §9).
          {
            id: "gw-a",
            devices: 3,
            faults: { bitErrorRate: 1e-5, dropWriteRate: 0.003, garbageRate: 0.003 },
          },
          { id: "gw-b", devices: 3 },
          { id: "gw-c", devices: 2 },
        ],
        behaviours: {
          5: { "2.0.0": "refuses" },
          1: { "3.0.0": "refuses" },
          3: { "3.0.0": "refuses" },
        },
        // Every HTTP connection is cut after 48 KB; throttled to 32 KB/s until the collapse.
        toxics: ["limit_data:downstream:bytes=49152", "bandwidth:downstream:rate=32"],
      });
      const ids = w.fleet.devices.map((d) => d.deviceId);
      A = ids.slice(0, 3);
      B = ids.slice(3, 6);
      C = ids.slice(6, 8);
      [r1, r2] = await Promise.all([w.release("2.0.0"), w.release("3.0.0")]);
      await Promise.all(w.gateways.map((g) => g.start()));
    }, 120_000);

    afterAll(async () => {
      // ESP_OTA_CHAOS_VERBOSE=1 prints what happened when (and each agent's last lines).
      if (process.env.ESP_OTA_CHAOS_VERBOSE && w)
        console.log(w.diagnostics(Number(process.env.ESP_OTA_CHAOS_VERBOSE) || 60));
      await w?.close();
    }, 60_000);

    it("completes a rollout through HTTP faults, UART noise, a power cut, a broker restart and a killed gateway", async () => {
      const rel = r1.index.releaseId;
      const before = new Map(
        w.fleet.devices.map((d) => [d.deviceId, w.runningVersion(d.deviceId)]),
      );
      expect([...before.values()]).toEqual(Array(8).fill("1.0.0"));
      // Wave 1 (34% of 8 = 3): one device per gateway. B[2] refuses 2.0.0: wave 2, so the
      // canaries cannot trip the threshold by themselves (1 failure in 4 finished = 25% < 30%).
      const order = [A[0]!, B[0]!, C[0]!, A[1]!, B[1]!, C[1]!, A[2]!, B[2]!];
      const wave2 = new Set(order.slice(3));
      const of = (s: { releaseId?: string }) => s.releaseId === rel;

      const faults = [
        // Reset mid-download, then a bandwidth collapse below the agent's minimum rate, then recovery.
        w.when(
          (s) => of(s) && s.state === "downloading",
          "HTTP: reset mid-download, then bandwidth collapse",
          async () => {
            await sleep(300);
            w.http.addToxic("reset_peer:downstream:timeout=0");
            w.note(`HTTP reset_peer added (${w.http.stats.active} connections open)`);
            await sleep(150);
            w.http.removeToxic("reset_peer_downstream");
            w.http.updateToxic("bandwidth_downstream", { rateKBps: 0.4 });
            w.note("HTTP bandwidth collapsed to 0.4 KB/s");
            await sleep(2500);
            w.http.updateToxic("bandwidth_downstream", { rateKBps: 5000 });
            w.note("HTTP bandwidth back to 5000 KB/s");
          },
        ),
        // A power cut in the middle of the 60th flash operation from here: part-way into the image.
        w.when(
          (s) => of(s) && s.deviceId === C[0] && s.state === "transferring",
          "power cut armed on C0",
          async () => {
            const served = w.gatewayOf(C[0]!).server.devices.find((d) => d.deviceId === C[0])!;
            const from = served.device.flash.operationCount;
            w.gatewayOf(C[0]!).server.powerCut(C[0]!, 60);
            // The chip stays off for 200 ms (POWER_CUT_OFF_MS): polling every 10 ms sees it.
            while (served.powered) await sleep(10);
            w.note(
              `C0 lost power (flash op ${served.device.flash.operationCount - from} of the transfer)`,
            );
          },
        ),
        // The broker goes down and comes back while the second wave downloads.
        w.when(
          (s) => of(s) && wave2.has(s.deviceId) && s.state === "downloading",
          "broker restart",
          async () => {
            await w.broker.restart();
            w.note("broker back");
          },
        ),
        // gw-b crashes mid-transfer and comes back.
        w.when(
          (s) => of(s) && s.deviceId === B[1] && s.state === "transferring",
          "gw-b SIGKILL mid-transfer",
          async () => {
            await sleep(300);
            await w.gatewayOf(B[1]!).stop("SIGKILL");
            await sleep(500);
            await w.gatewayOf(B[1]!).start();
          },
        ),
      ];
      // Awaited after the rollout; a fault that throws early must not be an unhandled rejection.
      for (const f of faults) f.catch(() => undefined);

      const end = await rollout(w, r1, order, {
        id: "chaos-r1",
        waves: [34, 100],
        maxFailureRate: 30,
      });
      expect(end.state, w.diagnostics()).toBe("completed");
      // Each fault really happened during the rollout: the rollout is over, so a trigger that has
      // not fired by now never will (10 s for the last one still acting, e.g. gw-b restarting).
      await within(Promise.all(faults), 10_000, () => `a fault never fired\n${w.diagnostics()}`);

      for (const id of order) expect(w.finalOf(id, rel), `${id}\n${w.diagnostics()}`).toBeDefined();
      expect(w.finalOf(B[2]!, rel)?.state).toBe("rolled-back");
      expect(w.finalOf(B[2]!, rel)?.error?.code).toBe("E_UART_ROLLED_BACK");
      for (const id of order.filter((x) => x !== B[2]))
        expect(w.finalOf(id, rel)?.state, `${id}\n${w.diagnostics()}`).toBe("succeeded");
      const tally = failureTally(end);
      expect(tally).toEqual({ finished: 8, failed: 1 });
      checkDevices(w, rel, "2.0.0", before);
      // Statuses never went backwards (seq grows per device), across the gateway's crash too.
      for (const id of order) {
        const seqs = (w.statuses.get(id) ?? []).map((s) => s.seq);
        expect(seqs, id).toEqual([...seqs].sort((a, b) => a - b));
      }
    }, 150_000);

    it("aborts a rollout whose failures cross the threshold, withdrawing what had not started", async () => {
      const rel = r2.index.releaseId;
      const before = new Map(
        w.fleet.devices.map((d) => [d.deviceId, w.runningVersion(d.deviceId)]),
      );
      // gw-c is down: its devices are notified but cannot start.
      await w.gatewayOf(C[0]!).stop("SIGTERM");
      // Wave 1 (50% of 8 = 4): the two devices whose 3.0.0 refuses, and gw-c's two.
      const order = [A[1]!, B[0]!, C[0]!, C[1]!, A[0]!, A[2]!, B[1]!, B[2]!];
      const end = await rollout(w, r2, order, {
        id: "chaos-r2",
        waves: [50, 100],
        maxFailureRate: 20,
      });
      expect(end.state, w.diagnostics()).toBe("aborted");
      expect(end.reason?.kind).toBe("failure-rate");
      // The notified devices that had not started were withdrawn; the second wave never went out.
      for (const id of C) expect(end.perDevice[id]?.clearedAt, id).toBeDefined();
      for (const id of order.slice(4)) expect(end.perDevice[id]?.notifiedAt, id).toBeUndefined();

      // gw-c comes back (started now, while the rest finishes): no notice waits for its devices.
      const back = w.gatewayOf(C[0]!).start();
      // Devices mid-update are left to finish: both refusers roll back.
      for (const id of [A[1]!, B[0]!]) {
        const s = await w.waitFor(
          id,
          (x) => x.releaseId === rel && isFinalState(x.state),
          "final status of 3.0.0",
        );
        expect(s.state, id).toBe("rolled-back");
      }
      await back;
      const retained = await w.retainedDesired();
      for (const id of C) expect(retained.has(id), `${id} notice still retained`).toBe(false);
      const g = w.gatewayOf(C[0]!);
      const attached = async () =>
        C.every((id) => g.log.some((l) => l.includes('"device attached"') && l.includes(id)));
      for (let i = 0; i < 100 && !(await attached()); i++) await sleep(100);
      expect(await attached(), w.diagnostics()).toBe(true);
      // A queued copy of the withdrawn notice may still reach gw-c: then it must end cancelled.
      await sleep(1000);
      for (const id of C) {
        const seen = (w.statuses.get(id) ?? []).filter((s) => s.releaseId === rel);
        if (seen.length > 0) {
          const f = await w.waitFor(
            id,
            (x) => x.releaseId === rel && isFinalState(x.state),
            "withdrawn update ends",
          );
          expect(f.state, id).toBe("cancelled");
        }
      }
      checkDevices(w, rel, "3.0.0", before);
      for (const id of order) expect(w.finalOf(id, rel)?.state).not.toBe("succeeded");
    }, 150_000);
  });
}
