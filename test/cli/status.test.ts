/** `esp-ota status` in-process against a real (aedes) broker holding retained fleet messages. */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ESP_OTA_PLUGINS } from "../../agent/plugins.js";
import { runCli } from "../../src/cli/program.js";
import {
  type DeviceStatus,
  encodeMessage,
  type MessageKind,
  type MessageTypes,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import { runCapture } from "../helpers/cli.js";
import { type LocalBroker, startLocalBroker } from "../mqtt/local-broker.js";

const t = topics();
const now = () => new Date().toISOString();
const running = {
  project: "app",
  version: "1.0.0",
  secureVersion: 0,
  slot: "ota_0",
  offset: 0x10000,
  state: "VALID",
};

let broker: LocalBroker;
let pub: mqtt.MqttClient;

async function retain<K extends MessageKind>(
  topic: string,
  kind: K,
  m: MessageTypes[K],
): Promise<void> {
  await pub.publishAsync(topic, Buffer.from(encodeMessage(kind, m)), { qos: 1, retain: true });
}
function status(deviceId: string, seq: number, extra: Partial<DeviceStatus> = {}): DeviceStatus {
  return {
    format: 1,
    deviceId,
    gatewayId: "gw1",
    seq,
    state: "idle",
    updatedAt: now(),
    running,
    ...extra,
  };
}

/** Resolves when the `status --watch` client has made its long-lived subscription. */
function watchSubscribed(): Promise<void> {
  return new Promise((resolve) => {
    const on = (subs: { topic: string }[]) => {
      // readRetained subscribes one filter at a time; the watch subscribes all of them at once.
      if (subs.length < 4) return;
      broker.aedes.off("subscribe", on);
      resolve();
    };
    broker.aedes.on("subscribe", on);
  });
}

beforeAll(async () => {
  broker = await startLocalBroker();
  pub = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
  await retain(t.presence("gw1"), "presence", {
    format: 1,
    gatewayId: "gw1",
    state: "online",
    version: "0.1.0",
    at: now(),
  });
  await retain(t.presence("gw2"), "presence", {
    format: 1,
    gatewayId: "gw2",
    state: "offline",
    version: "0.1.0",
    at: now(),
  });
  await retain(t.inventory("gw1"), "inventory", {
    format: 1,
    gatewayId: "gw1",
    devices: ["d1", "d2"].map((deviceId) => ({
      deviceId,
      port: `/dev/ttyUSB-${deviceId}`,
      chip: "esp32",
      running,
      otadata: [],
      busy: deviceId === "d1",
      attachedAt: now(),
    })),
    at: now(),
  });
  await retain(
    t.status("d1"),
    "status",
    status("d1", 3, {
      state: "downloading",
      step: "download",
      releaseId: "r2",
      targetVersion: "2.0.0",
      progress: { bytes: 40, total: 100 },
    }),
  );
  await retain(
    t.status("d2"),
    "status",
    status("d2", 7, {
      state: "rolled-back",
      releaseId: "r2",
      error: { code: "E_AGENT_NO_ROLLBACK_INFO", message: "x", step: "awaitConfirm" },
    }),
  );
  // Someone else's junk on our topic: reported on stderr, not fatal.
  await pub.publishAsync(t.status("junk"), "not json", { qos: 1, retain: true });
});

afterAll(async () => {
  await pub.endAsync(true);
  await broker.close();
});

describe("esp-ota status", () => {
  it("prints the gateways and devices the broker holds", async () => {
    const r = await runCapture(["status", "--broker", broker.url]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(/^GATEWAY\s+PRESENCE\s+DEVICES/);
    expect(r.stdout).toMatch(/\ngw1\s+online\s+2\s+0\.1\.0/);
    expect(r.stdout).toMatch(/\ngw2\s+offline\s+-/);
    expect(r.stdout).toMatch(/\nd1\s+gw1\s+downloading\s+r2\s+2\.0\.0\s+40%\s+1\.0\.0\s+ota_0\s+-/);
    expect(r.stdout).toMatch(
      /\nd2\s+gw1\s+rolled-back\s+r2\s+-\s+-\s+1\.0\.0\s+ota_0\s+E_AGENT_NO_ROLLBACK_INFO/,
    );
    expect(r.stderr).toMatch(/ignored 1 message .*devices\/junk\/status: E_MQTT_MESSAGE_JSON/);
  });

  it("--json prints one document {gateways, devices}", async () => {
    const r = await runCapture(["status", "--broker", broker.url, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as {
      gateways: { gatewayId: string }[];
      devices: Record<string, unknown>[];
    };
    expect(Object.keys(doc)).toEqual(["gateways", "devices"]);
    expect(doc.gateways.map((g) => g.gatewayId)).toEqual(["gw1", "gw2"]);
    expect(doc.devices.map((d) => d.deviceId)).toEqual(["d1", "d2"]);
    expect(doc.devices[0]).toMatchObject({
      state: "downloading",
      progress: 40,
      gatewayOnline: true,
      runningSlot: "ota_0",
    });
  });

  it("--device shows one device; an unknown one is E_MQTT_UNKNOWN_DEVICE", async () => {
    const r = await runCapture(["status", "--broker", broker.url, "--device", "d2", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { gateways: unknown[]; devices: { deviceId: string }[] };
    expect(doc.devices.map((d) => d.deviceId)).toEqual(["d2"]);
    expect(doc.gateways).toHaveLength(1);
    const missing = await runCapture(["status", "--broker", broker.url, "--device", "nope"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("E_MQTT_UNKNOWN_DEVICE");
  });

  it("usage errors exit 2; an unreachable broker is E_MQTT_CONNECT", async () => {
    expect((await runCapture(["status", "--prefix", "a/#"])).code).toBe(2);
    expect((await runCapture(["status", "--device", "a/b"])).code).toBe(2);
    expect((await runCapture(["status", "--duration", "5ms"])).code).toBe(2);
    const bad = await runCapture(["status", "--broker", "http://127.0.0.1:1"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("E_MQTT_CONNECT");
  });

  it("reads the password from --password-file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-status-"));
    writeFileSync(join(dir, "pw"), "s3cret\n");
    const locked = await startLocalBroker({
      authenticate: (_c, username, password, done) =>
        done(null, username === "ops" && password?.toString() === "s3cret"),
    });
    try {
      const ok = await runCapture(
        ["status", "--broker", locked.url, "--username", "ops", "--password-file", "pw"],
        dir,
      );
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toContain("no gateways");
      writeFileSync(join(dir, "pw"), "wrong\n");
      const refused = await runCapture(
        ["status", "--broker", locked.url, "--username", "ops", "--password-file", "pw"],
        dir,
      );
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("E_MQTT_CONNECT");
      expect(refused.stderr).not.toContain("wrong");
    } finally {
      await locked.close();
    }
  });

  it("--watch prints one line per change until --duration ends", async () => {
    const subscribed = watchSubscribed();
    const watching = runCapture([
      "status",
      "--broker",
      broker.url,
      "--watch",
      "--duration",
      "600ms",
    ]);
    await subscribed;
    await retain(
      t.status("d1"),
      "status",
      status("d1", 4, {
        state: "transferring",
        step: "transfer",
        releaseId: "r2",
        targetVersion: "2.0.0",
      }),
    );
    await retain(t.status("d1"), "status", status("d1", 3, { state: "queued", releaseId: "r2" })); // older: ignored
    await retain(t.presence("gw2"), "presence", {
      format: 1,
      gatewayId: "gw2",
      state: "online",
      version: "0.2.0",
      at: now(),
    });
    const r = await watching;
    expect(r.code, r.stderr).toBe(0);
    const changes = r.stdout.split("\n").filter((l) => /^\d{4}-\d\d-\d\dT/.test(l));
    expect(changes.map((l) => l.replace(/^\S+ /, ""))).toEqual([
      "device d1 transferring, step transfer, release r2 (2.0.0), running 1.0.0 from ota_0, on gw1",
      "gateway gw2 online, agent 0.2.0",
    ]);
    // The snapshot came first, as a table.
    expect(r.stdout.indexOf("GATEWAY")).toBe(0);
  });

  it("--watch --json prints the snapshot then one JSON line per change", async () => {
    const subscribed = watchSubscribed();
    const watching = runCapture([
      "status",
      "--broker",
      broker.url,
      "--watch",
      "--json",
      "--duration",
      "600ms",
    ]);
    await subscribed;
    await retain(t.status("d2"), "status", status("d2", 8, { state: "queued", releaseId: "r3" }));
    const r = await watching;
    expect(r.code, r.stderr).toBe(0);
    const [snapshot, ...rest] = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(Object.keys(snapshot!)).toEqual(["gateways", "devices"]);
    expect(rest).toHaveLength(1);
    expect(rest[0]).toMatchObject({ device: { deviceId: "d2", state: "queued", releaseId: "r3" } });
  });

  it("--watch on a terminal clears and redraws the table", async () => {
    let out = "";
    const subscribed = watchSubscribed();
    const watching = runCli(
      ["status", "--broker", broker.url, "--watch", "--duration", "400ms"],
      { write: (s: string) => (out += s), isTTY: true },
      { write: () => true },
      process.cwd(),
      ESP_OTA_PLUGINS,
    );
    await subscribed;
    await retain(
      t.status("d2"),
      "status",
      status("d2", 9, { state: "fetching-manifest", releaseId: "r3" }),
    );
    expect(await watching).toBe(0);
    const frames = out.split("\u001b[2J\u001b[H").filter(Boolean);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    expect(frames[0]).toMatch(/esp-ota status {2}esp-ota\/v1/);
    expect(frames.at(-1)).toMatch(/\nd2\s+gw1\s+fetching-manifest\s+r3/);
  });
});
