/**
 * The gateway agent end to end (issue 6 "Must show"), on the embedded broker and on a real
 * Mosquitto: a misbehaving image server, notices replaced or withdrawn in the middle of an
 * update, and an operator's commands over MQTT. See e2e-verify.test.ts for the world.
 *
 * The image server misbehaves per file (test/helpers/gateway.ts HttpFault): a body cut short
 * for good (failed, the device untouched), a body longer than the manifest says (failed, never
 * more than the manifest's size staged), connections reset mid-body (resumed with Range, and
 * the update succeeds), a response that stalls (so that a notice or a command arrives while the
 * download is in flight, deterministically).
 */
import type { IPublishPacket, MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CommandResponse, parseMessage } from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import { socatAvailable } from "../../src/uart/socat.js";
import { BROKER_KINDS } from "../helpers/brokers.js";
import {
  GATEWAY_ID,
  makeWorld,
  type Release,
  releaseHistory,
  sampleBoots,
  type World,
  watchSizes,
} from "../helpers/gateway.js";

const haveSocat = socatAvailable();
if (!haveSocat && /^(true|1)$/i.test(process.env.CI ?? ""))
  throw new Error("CI=true and socat is missing: apt-get install -y socat (or run .ci/run)");

const flashOps = (w: World, id: string) => w.device(id).device.flash.operationCount;

/**
 * An `info` request written by hand: with MQTT 5 the reply address and correlation only as
 * properties, with 3.1.1 only in the payload (requestCommand writes both, which would not show
 * which one the gateway used).
 */
async function rawInfo(
  client: MqttClient,
  replyTopic: string,
  v5: boolean,
): Promise<{ id: string; response: CommandResponse; correlationData: string | undefined }> {
  const id = `raw-${process.pid}-${Date.now()}`;
  // A reply topic of its own: requestCommand may still be unsubscribing from the shared one.
  replyTopic = `${replyTopic}-raw`;
  await client.subscribeAsync(replyTopic, { qos: 1 });
  try {
    return await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error("no answer to the raw info request")), 10_000);
      const onMessage = (topic: string, payload: Buffer, packet: IPublishPacket) => {
        if (topic !== replyTopic) return;
        const p = parseMessage("response", payload);
        const data = packet.properties?.correlationData?.toString();
        if (!p.ok || (data !== id && p.value.correlationId !== id)) return;
        clearTimeout(timer);
        client.off("message", onMessage);
        ok({ id, response: p.value, correlationData: data });
      };
      client.on("message", onMessage);
      const body = v5
        ? { format: 1, command: "info" }
        : { format: 1, command: "info", replyTo: replyTopic, correlationId: id };
      client.publish(topics().commands(GATEWAY_ID), JSON.stringify(body), {
        qos: 1,
        ...(v5
          ? { properties: { responseTopic: replyTopic, correlationData: Buffer.from(id) } }
          : {}),
      });
    });
  } finally {
    await client.unsubscribeAsync(replyTopic);
  }
}

describe.concurrent("agent end to end: downloads, notices and commands", () => {
  for (const kind of BROKER_KINDS) {
    describe.skipIf(!kind.available || !haveSocat)(`on ${kind.name}`, () => {
      let w: World;
      let ids: string[];
      let rd: Release;
      let re: Release;
      let rbig: Release;
      beforeAll(async () => {
        w = await makeWorld(kind, { devices: 7 });
        ids = w.ids;
        const built = (async () => {
          rd = await w.release("2.1.0");
          // For the last device only: big enough (384 KB, 4.5 s over the UART) to replace in the
          // middle of its transfer, and built before 2.2.0, which must have the higher counter.
          rbig = await w.release("2.1.5", { appSize: 0x60000, devices: [ids[6]!] });
          re = await w.release("2.2.0");
        })();
        await Promise.all([built, w.startAgent()]);
      }, 120_000);
      afterAll(async () => w?.close(), 60_000);

      it("fails a download the server cuts short or makes too long; resumes one it resets", async () => {
        const [c0, c1, c2] = ids as [string, string, string];
        const size = rd.index.devices.find((d) => d.deviceId === c0)!.variants[0]!.size;
        for (const p of rd.paths(c0)) w.http.fault(p, { kind: "truncate", at: size >> 1 });
        for (const p of rd.paths(c1)) w.http.fault(p, { kind: "oversize", extra: 10_000 });
        // Each reset once the bytes before it are staged (a RST drops what is not read yet).
        const stagedTo = (end: number) => w.staged(c2) >= end;
        for (const p of rd.paths(c2))
          w.http.fault(p, { kind: "reset", after: 20_000, times: 2, when: stagedTo });
        const ops = [flashOps(w, c0), flashOps(w, c1)];
        const staged = watchSizes(w.stagingDir);
        await Promise.all([c0, c1, c2].map((id) => w.notify(id, rd.dir)));
        const [s0, s1, s2] = await Promise.all(
          [c0, c1, c2].map((id) => w.waitFinal(id, rd.index.releaseId)),
        );
        const sizes = staged.stop();

        // Cut short: retried (Range from where it stopped), then failed; the device untouched.
        expect(s0!.state).toBe("failed");
        expect(s0!.error).toMatchObject({ code: "E_DOWNLOAD_TRUNCATED", step: "download" });
        const asked0 = w.http.requests.filter((r) => rd.paths(c0).includes(r.path));
        expect(asked0.length).toBeGreaterThan(1);
        // Once bytes were staged, a retry asked for the rest only (the cut comes after them,
        // though a client may lose what was in flight when the connection died).
        expect(asked0.some((r) => r.range === `bytes=${size >> 1}-` && r.status === 206)).toBe(
          true,
        );
        expect(
          asked0.every((r) => r.range === undefined || r.range === `bytes=${size >> 1}-`),
        ).toBe(true);
        // Too long: refused, and never more than the manifest's size on disk.
        expect(s1!.state).toBe("failed");
        expect(s1!.error).toMatchObject({ code: "E_DOWNLOAD_TOO_LARGE", step: "download" });
        const staged1 = [...sizes].filter(([name]) => name.startsWith(c1) && name.endsWith(".bin"));
        expect(staged1.length).toBeGreaterThan(0);
        for (const [, n] of staged1) expect(n).toBeLessThanOrEqual(size);
        for (const [id, n] of [
          [c0, ops[0]],
          [c1, ops[1]],
        ] as const) {
          expect(w.running(id)).toBe("1.0.0");
          expect(w.bootsInto(id)).toBe("1.0.0");
          expect(flashOps(w, id)).toBe(n);
        }
        // Reset twice mid-body: each retry asked for the rest (Range), and the update went on.
        expect(s2!.state).toBe("succeeded");
        const asked2 = w.http.requests.filter((r) => rd.paths(c2).includes(r.path));
        expect(asked2.map((r) => [r.range, r.status])).toEqual([
          [undefined, 200],
          ["bytes=20000-", 206],
          ["bytes=40000-", 206],
        ]);
        expect(w.running(c2)).toBe("2.1.0");
        expect(w.bootsInto(c2)).toBe("2.1.0");
        for (const id of [c0, c1, c2]) releaseHistory(w, id, rd.index.releaseId);
      }, 120_000);

      it("cancels an update whose notice is replaced or cleared before activation", async () => {
        const [, , , c3, c4, , c6] = ids as [
          string,
          string,
          string,
          string,
          string,
          string,
          string,
        ];
        for (const id of [c3, c4])
          for (const p of rd.paths(id)) w.http.fault(p, { kind: "stall", after: 1000 });
        const boots6 = sampleBoots(w, c6);
        await Promise.all([w.notify(c3, rd.dir), w.notify(c4, rd.dir), w.notify(c6, rbig.dir)]);
        await Promise.all([
          ...[c3, c4].map((id) =>
            w.waitFor(id, (s) => s.releaseId === rd.index.releaseId && s.state === "downloading"),
          ),
          w.waitProgress(
            c6,
            (p) =>
              p.releaseId === rbig.index.releaseId &&
              p.step === "transfer" &&
              p.bytes > 0.2 * p.total,
          ),
        ]);
        // c3 (downloading) and c6 (transferring): a newer release replaces theirs; c4: the
        // update is withdrawn.
        await Promise.all([w.notify(c3, re.dir), w.clearDesired(c4), w.notify(c6, re.dir)]);
        const [old3, new3, old4, old6, new6] = await Promise.all([
          w.waitFinal(c3, rd.index.releaseId),
          w.waitFinal(c3, re.index.releaseId),
          w.waitFinal(c4, rd.index.releaseId),
          w.waitFinal(c6, rbig.index.releaseId),
          w.waitFinal(c6, re.index.releaseId),
        ]);
        expect(old6.state).toBe("cancelled");
        expect(old6.error).toMatchObject({ code: "E_AGENT_SUPERSEDED", step: "transfer" });
        expect(new6.state).toBe("succeeded");
        expect(w.running(c6)).toBe("2.2.0");
        expect(w.bootsInto(c6)).toBe("2.2.0");
        // Never anything but the old app or the new one, never 2.1.5 (aborted before activation).
        expect([...boots6.stop()].sort()).toEqual(["1.0.0", "2.2.0"]);
        releaseHistory(w, c6, rbig.index.releaseId);
        releaseHistory(w, c6, re.index.releaseId);
        expect(old3.state).toBe("cancelled");
        expect(old3.error?.code).toBe("E_AGENT_SUPERSEDED");
        expect(new3.state).toBe("succeeded");
        expect(new3.seq).toBeGreaterThan(old3.seq);
        expect(w.running(c3)).toBe("2.2.0");
        expect(w.bootsInto(c3)).toBe("2.2.0");
        expect(old4.state).toBe("cancelled");
        expect(old4.error?.code).toBe("E_AGENT_CLEARED");
        expect(w.running(c4)).toBe("1.0.0");
        expect(w.bootsInto(c4)).toBe("1.0.0");
        releaseHistory(w, c3, rd.index.releaseId);
        releaseHistory(w, c3, re.index.releaseId);
        releaseHistory(w, c4, rd.index.releaseId);
      }, 120_000);

      it("answers info, cancel, retry and reboot over MQTT", async () => {
        const c5 = ids[5]!;
        // info: the gateway and every device; then one device, asked over the UART.
        const all = await w.command({ command: "info" });
        expect(all.ok).toBe(true);
        expect(all.gatewayId).toBe("test-gw");
        const listed = ((all.result?.devices ?? []) as { deviceId: string }[]).map(
          (d) => d.deviceId,
        );
        expect(listed.sort()).toEqual([...ids].sort());
        const one = await w.command({ command: "info", deviceId: c5 });
        expect(one.ok).toBe(true);
        expect(one.result).toMatchObject({ busy: false, running: { version: "1.0.0" } });
        // The reply address travels as the protocol allows: on Mosquitto (MQTT 5) only in the
        // Response Topic and Correlation Data properties, on aedes (3.1.1, no properties) only
        // in the payload; the gateway answers either way, echoing what it got.
        const { client, replyTopic } = await w.operator();
        const v5 = client.options.protocolVersion === 5;
        expect(v5).toBe(kind.name === "mosquitto");
        const raw = await rawInfo(client, replyTopic, v5);
        expect(raw.response).toMatchObject({ ok: true, command: "info" });
        if (v5) expect(raw.correlationData).toBe(raw.id);
        else expect(raw.response.correlationId).toBe(raw.id);
        const unknown = await w.command({ command: "info", deviceId: "000000000000" });
        expect(unknown).toMatchObject({ ok: false, error: { code: "E_AGENT_UNKNOWN_DEVICE" } });

        // cancel: an update in flight (its download stalls) ends cancelled by the operator.
        for (const p of rd.paths(c5)) w.http.fault(p, { kind: "stall", after: 1000 });
        await w.notify(c5, rd.dir);
        await w.waitFor(c5, (s) => s.releaseId === rd.index.releaseId && s.state === "downloading");
        const cancel = await w.command({ command: "cancel", deviceId: c5 });
        expect(cancel.error).toBeUndefined();
        expect(cancel).toMatchObject({ ok: true, result: { cancelled: rd.index.releaseId } });
        const cancelled = await w.waitFinal(c5, rd.index.releaseId);
        expect(cancelled.state).toBe("cancelled");
        expect(cancelled.error?.code).toBe("E_AGENT_CANCELLED");
        expect(w.running(c5)).toBe("1.0.0");
        releaseHistory(w, c5, rd.index.releaseId);

        // retry: the same release runs again (the server is fine now) and succeeds.
        for (const p of rd.paths(c5)) w.http.fault(p, undefined);
        const retry = await w.command({ command: "retry", deviceId: c5 });
        expect(retry.error).toBeUndefined();
        expect(retry).toMatchObject({ ok: true, result: { retrying: rd.index.releaseId } });
        const done = await w.waitFor(
          c5,
          (s) =>
            s.releaseId === rd.index.releaseId && s.seq > cancelled.seq && s.state === "succeeded",
        );
        expect(done.running?.version).toBe("2.1.0");
        expect(w.running(c5)).toBe("2.1.0");

        // reboot: the device restarts and comes back on the same app.
        const resets = () => (w.console.get(c5) ?? []).filter((l) => l.startsWith("rst:")).length;
        const before = resets();
        const reboot = await w.command({ command: "reboot", deviceId: c5 });
        expect(reboot.error).toBeUndefined();
        expect(reboot).toMatchObject({
          ok: true,
          result: { rebooted: true, running: { version: "2.1.0" } },
        });
        expect(resets()).toBe(before + 1);
        expect(w.running(c5)).toBe("2.1.0");

        // Nothing to act on is not "not attached" (issue 12 defect 16): E_AGENT_NO_JOB.
        const idle = await w.command({ command: "cancel", deviceId: c5 });
        expect(idle).toMatchObject({ ok: false, error: { code: "E_AGENT_NO_JOB" } });
      }, 120_000);
    });
  }
});
