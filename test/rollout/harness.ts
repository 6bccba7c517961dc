/**
 * The rollout tests' harness: an in-process aedes broker, and a fake gateway agent: subscribes to its devices' desired topics and
 * answers each notice with a scripted DeviceStatus sequence (queued, downloading, then a final
 * state), retained, with a per-device seq and naming the notice it answers (noticeEcho), as
 * docs/mqtt-api.md says a gateway does. It speaks to
 * the broker with the mqtt package directly, so the rollout code under test is the only user of
 * src/mqtt here. Like the real agent (src/gateway/ledger.ts decideNotice) it ignores a notice for
 * the release it already runs or ran, and reports `cancelled` when a notice it has not started
 * on is withdrawn.
 */

import net, { type AddressInfo } from "node:net";
import { Aedes } from "aedes";
import mqtt, { type MqttClient } from "mqtt";
import { type DeviceStatus, noticeEcho, type UpdateNotice } from "../../src/mqtt/messages.js";
import { signStatus } from "../../src/mqtt/status-auth.js";
import type { ManifestSigningKey } from "../../src/release/keyring.js";

/**
 * A bare aedes broker on a free loopback port. Its broker id is emptied, which turns off aedes's
 * cross-broker de-duplication (lib/client.js `dedupe`): that drops a QoS 1 message delivered to a
 * client after one with a higher `brokerCounter`, and retained publishes (stored first, then
 * forwarded) do overtake each other. With it on, the rollout lost statuses and notices in about
 * 4 runs out of 10 against broker/broker.ts (aedes issue #994, open). One broker has no peers to
 * de-duplicate against.
 */
export async function startTestAedes(): Promise<{ url: string; close(): Promise<void> }> {
  const aedes = await Aedes.createBroker();
  (aedes as unknown as { id: string }).id = "";
  const server = net.createServer(aedes.handle);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    async close() {
      await new Promise<void>((r) => aedes.close(() => r()));
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

export interface Script {
  final: "succeeded" | "failed" | "rolled-back";
  /** Error code of a failed / rolled-back final status. */
  code?: string;
  /** Stop at this state until release(deviceId) is called. */
  hold?: "queued" | "downloading";
  /**
   * Refuse every notice with this code, as a gateway refuses one below the device's
   * high-water mark (issue 12 defect 16): one final `failed` that answers it, nothing before.
   */
  refuse?: string;
  /** An agent from before noticeDigest: its statuses name the notice's release and rollout only. */
  legacy?: boolean;
}

export interface AgentLogEntry {
  kind: "notice" | "clear" | "status";
  deviceId: string;
  state?: string;
}

interface Job {
  notice: UpdateNotice;
  releaseId: string;
  state: string;
  gate?: () => void;
}

export class FakeAgent {
  /** Notices received per device (each delivery counts: a republished notice counts twice). */
  readonly notices = new Map<
    string,
    { releaseId: string; counter: number; manifestUrls: string[]; rolloutId?: string }[]
  >();
  readonly clears = new Map<string, number>();
  readonly log: AgentLogEntry[] = [];
  private readonly seq = new Map<string, number>();
  private readonly jobs = new Map<string, Job>();
  private readonly waiting = new Map<string, () => void>();

  private constructor(
    private readonly client: MqttClient,
    private readonly prefix: string,
    private readonly scripts: Record<string, Script>,
    /** Signs its statuses as a real agent does (src/mqtt/status-auth.ts); unsigned without. */
    private readonly signWith?: ManifestSigningKey,
  ) {}

  static async start(
    url: string,
    prefix: string,
    scripts: Record<string, Script>,
    o: { oldRelease?: string; signWith?: ManifestSigningKey } = {},
  ): Promise<FakeAgent> {
    const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 });
    const agent = new FakeAgent(client, prefix, scripts, o.signWith);
    client.on("message", (topic, payload) => agent.onMessage(topic, payload));
    // What a gateway reports on attach: idle, on the release it ran before (another release:
    // the rollout must not count it).
    for (const id of Object.keys(scripts))
      await agent.publish(
        id,
        o.oldRelease ? { state: "idle", releaseId: o.oldRelease } : { state: "idle" },
      );
    await client.subscribeAsync(
      Object.keys(scripts).map((id) => `${prefix}/devices/${id}/desired`),
      { qos: 1 },
    );
    return agent;
  }

  noticeCount(id: string): number {
    return this.notices.get(id)?.length ?? 0;
  }

  /** Lets a held device go on to its final state. */
  release(id: string): void {
    const go = this.waiting.get(id);
    if (!go) throw new Error(`release(${id}): nothing held`);
    this.waiting.delete(id);
    go();
  }

  isHeld(id: string): boolean {
    return this.waiting.has(id);
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }

  private async publish(
    id: string,
    s: { state: string; releaseId?: string; notice?: UpdateNotice; code?: string },
  ): Promise<void> {
    const seq = (this.seq.get(id) ?? 100) + 1;
    this.seq.set(id, seq);
    const at = new Date().toISOString();
    const unsigned: DeviceStatus = {
      format: 1,
      deviceId: id,
      gatewayId: "gw-test",
      seq,
      state: s.state,
      ...(s.releaseId ? { releaseId: s.releaseId } : {}),
      // As the agent does (agent.ts status): the job's statuses name its notice.
      ...(s.notice && this.scripts[id]?.legacy
        ? {
            releaseId: s.notice.releaseId,
            ...(s.notice.rolloutId ? { rolloutId: s.notice.rolloutId } : {}),
          }
        : s.notice
          ? noticeEcho(s.notice)
          : {}),
      ...(s.code ? { error: { code: s.code, message: `fake ${s.state}`, step: "transfer" } } : {}),
      updatedAt: at,
    } as DeviceStatus;
    const status = this.signWith ? signStatus(unsigned, this.signWith) : unsigned;
    this.log.push({ kind: "status", deviceId: id, state: s.state });
    await this.client.publishAsync(`${this.prefix}/devices/${id}/status`, JSON.stringify(status), {
      qos: 1,
      retain: true,
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    const m = /\/devices\/([^/]+)\/desired$/.exec(topic);
    if (!m) return;
    const id = m[1]!;
    if (payload.byteLength === 0) {
      this.clears.set(id, (this.clears.get(id) ?? 0) + 1);
      this.log.push({ kind: "clear", deviceId: id });
      const job = this.jobs.get(id);
      if (job && job.state === "queued") {
        job.state = "cancelled";
        this.waiting.delete(id);
        void this.publish(id, {
          state: "cancelled",
          notice: job.notice,
          code: "E_AGENT_CLEARED",
        });
      }
      return;
    }
    const n = JSON.parse(payload.toString("utf8"));
    const list = this.notices.get(id) ?? [];
    list.push(n);
    this.notices.set(id, list);
    this.log.push({ kind: "notice", deviceId: id });
    if (this.jobs.get(id)?.releaseId === n.releaseId) return; // duplicate: already runs or ran it
    void this.run(id, n);
  }

  private async run(id: string, notice: UpdateNotice): Promise<void> {
    const script = this.scripts[id]!;
    if (script.refuse) {
      await this.publish(id, { state: "failed", notice, code: script.refuse });
      return;
    }
    const job: Job = { notice, releaseId: notice.releaseId, state: "queued" };
    this.jobs.set(id, job);
    const step = async (state: string, code?: string) => {
      job.state = state;
      await this.publish(id, { state, notice, ...(code ? { code } : {}) });
    };
    const hold = (at: string) =>
      script.hold === at ? new Promise<void>((go) => this.waiting.set(id, go)) : undefined;
    await step("queued");
    await hold("queued");
    if (job.state !== "queued") return; // withdrawn while held
    await step("downloading");
    await hold("downloading");
    await step(script.final, script.final === "succeeded" ? undefined : (script.code ?? "E_FAKE"));
  }
}

/** Polls `check` until it returns true (a bound, not an assertion on time). */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 5000,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
