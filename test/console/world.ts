/**
 * The console tests' world: an aedes broker on loopback (test/rollout/harness.ts startTestAedes,
 * the embedded broker's engine without cross-broker de-duplication), a fake gateway that answers
 * notices as the agent does, a release directory with an index.json, users, and the console
 * server itself (src/console/server.ts) on a free port.
 *
 * The fake gateway, unlike test/rollout/harness.ts's, follows the ledger's rule for a release
 * that failed (src/gateway/ledger.ts decideNotice; docs/mqtt-api.md "Notice semantics" 1): a
 * re-issued notice (another issuedAt) runs it again, the same notice replayed does not. That is
 * what "retry failed" relies on. Each device has a list of outcomes, one per run.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { hashPassword } from "../../src/auth/users-file.js";
import { type ConsoleServer, startConsoleServer } from "../../src/console/server.js";
import { parseConsoleUsers, usersAuthenticator } from "../../src/console/users.js";
import { connectMqtt } from "../../src/mqtt/client.js";
import { type DeviceStatus, noticeEcho, type UpdateNotice } from "../../src/mqtt/messages.js";
import { topics as makeTopics } from "../../src/mqtt/topics.js";
import { checkIndex } from "../../src/rollout/plan.js";
import { startTestAedes } from "../rollout/harness.js";

export const PREFIX = "esp-ota/v1";
export const RELEASE = "app-1.2.0-0123456789ab";

export interface Run {
  final: "succeeded" | "failed" | "rolled-back";
  code?: string;
  /** Stop at this state until go(deviceId). */
  hold?: "queued" | "downloading";
}

/** A gateway with devices, publishing as the agent does (presence, inventory, status, progress, log). */
export class FakeGateway {
  private readonly seq = new Map<string, number>();
  private readonly job = new Map<string, { notice: UpdateNotice; state: string }>();
  private readonly lastFinal = new Map<
    string,
    { releaseId: string; state: string; issuedAt: string }
  >();
  private readonly runs = new Map<string, number>();
  private readonly held = new Map<string, () => void>();

  private constructor(
    readonly client: MqttClient,
    readonly gatewayId: string,
    private readonly scripts: Record<string, Run[]>,
  ) {}

  static async start(url: string, gatewayId: string, scripts: Record<string, Run[]>) {
    const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 });
    const gw = new FakeGateway(client, gatewayId, scripts);
    client.on("message", (t, p) => gw.onNotice(t, p));
    const ids = Object.keys(scripts);
    const at = new Date().toISOString();
    await gw.pub(
      `gateways/${gatewayId}/presence`,
      { format: 1, gatewayId, state: "online", version: "0.1.0", at },
      true,
    );
    await gw.pub(
      `gateways/${gatewayId}/inventory`,
      {
        format: 1,
        gatewayId,
        at,
        devices: ids.map((deviceId, i) => ({
          deviceId,
          port: `/dev/ttyUSB${i}`,
          chip: "esp32",
          running: {
            project: "app",
            version: "1.1.0",
            secureVersion: 0,
            slot: "ota_0",
            offset: 0x10000,
            state: "valid",
          },
          otadata: [
            { seq: 1, state: "valid" },
            { seq: null, state: "empty" },
          ],
          busy: false,
          attachedAt: at,
        })),
      },
      true,
    );
    for (const id of ids) await gw.status(id, { state: "idle" });
    await client.subscribeAsync(
      ids.map((id) => `${PREFIX}/devices/${id}/desired`),
      { qos: 1 },
    );
    return gw;
  }

  go(id: string): void {
    const g = this.held.get(id);
    if (!g) throw new Error(`go(${id}): not held`);
    this.held.delete(id);
    g();
  }
  isHeld(id: string): boolean {
    return this.held.has(id);
  }

  async log(id: string, lines: string[]): Promise<void> {
    await this.pub(
      `devices/${id}/log`,
      { format: 1, deviceId: id, lines, dropped: 0, at: new Date().toISOString() },
      false,
    );
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }

  private pub(topic: string, doc: object, retain: boolean) {
    return this.client.publishAsync(`${PREFIX}/${topic}`, JSON.stringify(doc), { qos: 1, retain });
  }

  private async status(
    id: string,
    s: {
      state: string;
      notice?: UpdateNotice;
      code?: string;
      progress?: { bytes: number; total: number };
    },
  ): Promise<void> {
    const seq = (this.seq.get(id) ?? 100) + 1;
    this.seq.set(id, seq);
    const st = {
      format: 1,
      deviceId: id,
      gatewayId: this.gatewayId,
      seq,
      state: s.state,
      ...(s.notice ? { ...noticeEcho(s.notice), targetVersion: "1.2.0" } : {}),
      ...(s.progress ? { progress: s.progress } : {}),
      ...(s.code
        ? {
            error: {
              code: s.code,
              message: `the device stopped answering <b>${id}</b>`,
              step: "transfer",
            },
          }
        : {}),
      ...(s.state === "succeeded"
        ? {
            running: {
              project: "app",
              version: "1.2.0",
              secureVersion: 0,
              slot: "ota_1",
              offset: 0x110000,
              state: "valid",
            },
          }
        : {}),
      updatedAt: new Date().toISOString(),
    } as DeviceStatus;
    await this.pub(`devices/${id}/status`, st, true);
  }

  private onNotice(topic: string, payload: Buffer): void {
    const id = /\/devices\/([^/]+)\/desired$/.exec(topic)?.[1];
    if (!id) return;
    const j = this.job.get(id);
    if (payload.byteLength === 0) {
      if (j && j.state === "queued") {
        j.state = "cancelled";
        this.held.delete(id);
        this.job.delete(id);
        this.lastFinal.set(id, {
          releaseId: j.notice.releaseId,
          state: "cancelled",
          issuedAt: j.notice.issuedAt,
        });
        void this.status(id, { state: "cancelled", notice: j.notice, code: "E_AGENT_CLEARED" });
      }
      return;
    }
    const n = JSON.parse(payload.toString("utf8")) as UpdateNotice;
    if (j?.notice.releaseId === n.releaseId) return; // in flight: a duplicate
    const last = this.lastFinal.get(id);
    if (last?.releaseId === n.releaseId) {
      // The ledger: only a re-issued notice runs a failed or cancelled release again.
      if (last.issuedAt === n.issuedAt || (last.state !== "failed" && last.state !== "cancelled"))
        return;
    }
    void this.run(id, n);
  }

  private async run(id: string, notice: UpdateNotice): Promise<void> {
    const k = this.runs.get(id) ?? 0;
    this.runs.set(id, k + 1);
    const script = this.scripts[id]!;
    const r = script[Math.min(k, script.length - 1)]!;
    const job = { notice, state: "queued" };
    this.job.set(id, job);
    const hold = (at: string) =>
      r.hold === at ? new Promise<void>((go) => this.held.set(id, go)) : undefined;
    await this.status(id, { state: "queued", notice });
    await hold("queued");
    if (job.state !== "queued") return;
    job.state = "transferring";
    await this.status(id, {
      state: "transferring",
      notice,
      progress: { bytes: 700_000, total: 1_000_000 },
    });
    await hold("downloading");
    this.job.delete(id);
    this.lastFinal.set(id, {
      releaseId: notice.releaseId,
      state: r.final,
      issuedAt: notice.issuedAt,
    });
    await this.status(id, {
      state: r.final,
      notice,
      ...(r.final === "succeeded" ? {} : { code: r.code ?? "E_FAKE" }),
    });
  }
}

/** A release directory as `release build` leaves it, as far as a rollout reads it. */
export function writeRelease(dir: string, ids: readonly string[]): string {
  const index = {
    format: 1,
    releaseId: RELEASE,
    version: "1.2.0",
    devices: ids.map((deviceId, i) => ({
      deviceId,
      counter: 200 + i,
      manifest: `${deviceId}/manifest.json`,
      variants: [{ file: `${deviceId}/ota_0.bin` }],
    })),
  };
  if (!checkIndex(index).ok) throw new Error("writeRelease: not an index");
  writeFileSync(join(dir, "index.json"), JSON.stringify(index));
  for (const id of ids) {
    mkdirSync(join(dir, id), { recursive: true });
    writeFileSync(
      join(dir, id, "manifest.json"),
      JSON.stringify({
        signed: { variants: [{ urls: [`http://rel.example/app/${id}/ota_0.bin`] }] },
      }),
    );
  }
  return dir;
}

export interface World {
  url: string;
  brokerUrl: string;
  server: ConsoleServer;
  gateway: FakeGateway;
  releaseDir: string;
  log: string[];
  /** Closes the broker (the console's connection goes away); close() copes. */
  stopBroker(): Promise<void>;
  close(): Promise<void>;
}

/** Cheap scrypt for tests (N = 2^10): the format and the check are the real ones. */
const TEST_SCRYPT = { N: 1024, r: 8, p: 1 };

export async function startWorld(scripts: Record<string, Run[]>): Promise<World> {
  const broker = await startTestAedes();
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-console-"));
  const releaseDir = writeRelease(dir, Object.keys(scripts));
  const users = parseConsoleUsers(
    [
      "# console users",
      `olga:${await hashPassword("olga-pass", TEST_SCRYPT)}:operator`,
      `victor:${await hashPassword("victor-pass", TEST_SCRYPT)}:viewer`,
    ].join("\n"),
  );
  if (!users.ok) throw new Error(users.reason);
  const gateway = await FakeGateway.start(broker.url, "gw-lab-1", scripts);
  const client = await connectMqtt({
    url: broker.url,
    protocolVersion: 4,
    clientId: `console-${process.pid}`,
  });
  const log: string[] = [];
  const server = await startConsoleServer({
    client,
    topics: makeTopics(PREFIX),
    authenticate: usersAuthenticator(users.users),
    host: "127.0.0.1",
    port: 0,
    pushMs: 50,
    readRelease: (d) => {
      const c = checkIndex(JSON.parse(readFileSync(join(d, "index.json"), "utf8")));
      if (!c.ok) throw new Error(c.reason);
      const index = c.index;
      return { dir: d, index, baseUrl: "http://rel.example/app" };
    },
    onLog: (l) => log.push(l),
  });
  await server.ready;
  let brokerClosed: Promise<void> | undefined;
  return {
    url: server.url,
    brokerUrl: broker.url,
    server,
    gateway,
    releaseDir,
    log,
    async stopBroker() {
      await gateway.close();
      brokerClosed ??= broker.close();
      await brokerClosed;
    },
    async close() {
      await server.close();
      await client.endAsync(true).catch(() => {});
      await gateway.close();
      brokerClosed ??= broker.close();
      await brokerClosed;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
