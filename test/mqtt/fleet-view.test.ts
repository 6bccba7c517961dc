/** The pure part of `esp-ota status` (src/mqtt/fleet-view.ts): folding messages into rows. */
import { describe, expect, it } from "vitest";
import {
  applyMessage,
  changeLine,
  diffViews,
  emptyFleet,
  type FleetState,
  fleetView,
  formatAge,
  renderTable,
} from "../../src/mqtt/fleet-view.js";
import {
  type DeviceStatus,
  encodeMessage,
  type Inventory,
  type MessageKind,
  type MessageTypes,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";

const t = topics();
const T0 = Date.parse("2025-06-01T12:00:00.000Z");
const iso = (ms: number) => new Date(T0 + ms).toISOString();
const running = {
  project: "app",
  version: "1.0.0",
  secureVersion: 0,
  slot: "ota_0",
  offset: 0x10000,
  state: "VALID",
};

function put<K extends MessageKind>(s: FleetState, topic: string, kind: K, m: MessageTypes[K]) {
  return applyMessage(s, topic, encodeMessage(kind, m));
}
function status(deviceId: string, seq: number, extra: Partial<DeviceStatus> = {}): DeviceStatus {
  return {
    format: 1,
    deviceId,
    gatewayId: "gw1",
    seq,
    state: "idle",
    updatedAt: iso(seq * 1000),
    ...extra,
  };
}
function inventory(gatewayId: string, ids: string[], at = iso(0)): Inventory {
  return {
    format: 1,
    gatewayId,
    devices: ids.map((deviceId) => ({
      deviceId,
      port: `/dev/ttyUSB-${deviceId}`,
      chip: "esp32",
      running,
      otadata: [],
      busy: false,
      attachedAt: at,
    })),
    at,
  };
}

function world(): FleetState {
  const s = emptyFleet(t.prefix);
  put(s, t.presence("gw1"), "presence", {
    format: 1,
    gatewayId: "gw1",
    state: "online",
    version: "0.1.0",
    at: iso(0),
  });
  put(s, t.presence("gw2"), "presence", {
    format: 1,
    gatewayId: "gw2",
    state: "offline",
    version: "0.1.0",
    at: iso(0),
  });
  put(s, t.inventory("gw1"), "inventory", inventory("gw1", ["d1", "d2"]));
  put(
    s,
    t.status("d1"),
    "status",
    status("d1", 5, {
      state: "transferring",
      step: "transfer",
      releaseId: "r2",
      targetVersion: "2.0.0",
      progress: { bytes: 250, total: 1000 },
      running,
    }),
  );
  put(
    s,
    t.status("d3"),
    "status",
    status("d3", 9, {
      gatewayId: "gw2",
      state: "failed",
      releaseId: "r2",
      error: { code: "E_AGENT_DOWNGRADE", message: "older", step: "verifyManifest" },
      running: { ...running, slot: "ota_1" },
    }),
  );
  const notice = (deviceId: string, releaseId: string) => ({
    format: 1 as const,
    deviceId,
    releaseId,
    counter: 3,
    manifestUrls: ["https://u.example/m.json"],
    issuedAt: iso(0),
  });
  put(s, t.desired("d1"), "notice", notice("d1", "r2"));
  put(s, t.desired("d4"), "notice", notice("d4", "r3"));
  return s;
}

describe("fleet view", () => {
  it("rows: gateways with presence and inventory count; devices with state, release, progress, running, error", () => {
    const v = fleetView(world(), T0 + 65_000);
    expect(v.gateways).toEqual([
      {
        gatewayId: "gw1",
        state: "online",
        version: "0.1.0",
        devices: 2,
        since: iso(0),
        ageMs: 65_000,
      },
      { gatewayId: "gw2", state: "offline", version: "0.1.0", since: iso(0), ageMs: 65_000 },
    ]);
    expect(v.devices.map((d) => d.deviceId)).toEqual(["d1", "d2", "d3", "d4"]);
    expect(v.devices[0]).toEqual({
      deviceId: "d1",
      gatewayId: "gw1",
      gatewayOnline: true,
      state: "transferring",
      step: "transfer",
      releaseId: "r2",
      targetVersion: "2.0.0",
      desiredReleaseId: "r2",
      progress: 25,
      runningVersion: "1.0.0",
      runningSlot: "ota_0",
      updatedAt: iso(5000),
      ageMs: 60_000,
    });
    // Attached, no status yet: idle, running app from the inventory.
    expect(v.devices[1]).toMatchObject({
      deviceId: "d2",
      state: "idle",
      gatewayId: "gw1",
      runningVersion: "1.0.0",
    });
    expect(v.devices[2]).toMatchObject({
      deviceId: "d3",
      state: "failed",
      gatewayOnline: false,
      errorCode: "E_AGENT_DOWNGRADE",
      runningSlot: "ota_1",
    });
    expect(v.devices[2]!.progress).toBeUndefined();
    // Only a desired update names it.
    expect(v.devices[3]).toEqual({
      deviceId: "d4",
      state: "unknown",
      desiredReleaseId: "r3",
      updatedAt: iso(0),
      ageMs: 65_000,
    });
  });

  it("status never goes backwards: a duplicate or older seq from the same gateway is ignored", () => {
    const s = world();
    expect(put(s, t.status("d1"), "status", status("d1", 5, { state: "succeeded" })).kind).toBe(
      "ignored",
    );
    expect(put(s, t.status("d1"), "status", status("d1", 4, { state: "queued" })).kind).toBe(
      "ignored",
    );
    expect(fleetView(s, T0).devices[0]!.state).toBe("transferring");
    expect(put(s, t.status("d1"), "status", status("d1", 6, { state: "succeeded" })).kind).toBe(
      "applied",
    );
    expect(fleetView(s, T0).devices[0]!.state).toBe("succeeded");
    // Another gateway (the device was moved) has its own sequence.
    expect(put(s, t.status("d1"), "status", status("d1", 1, { gatewayId: "gw2" })).kind).toBe(
      "applied",
    );
  });

  it("live progress events update the percentage of the running release only", () => {
    const s = world();
    const ev = (releaseId: string, bytes: number, at: number) =>
      put(s, t.progress("d1"), "progress", {
        format: 1,
        deviceId: "d1",
        releaseId,
        step: "transfer",
        bytes,
        total: 1000,
        at: iso(at),
      });
    ev("r2", 500, 6000);
    expect(fleetView(s, T0).devices[0]!.progress).toBe(50);
    ev("r1", 900, 7000);
    expect(fleetView(s, T0).devices[0]!.progress).toBe(25);
  });

  it("an empty payload clears; bad and mismatched messages are reported, not applied", () => {
    const s = world();
    expect(applyMessage(s, t.desired("d4"), new Uint8Array()).kind).toBe("applied");
    expect(fleetView(s, T0).devices.map((d) => d.deviceId)).toEqual(["d1", "d2", "d3"]);
    const bad = applyMessage(s, t.status("d2"), new TextEncoder().encode("{"));
    expect(bad).toMatchObject({ kind: "invalid", code: "E_MQTT_MESSAGE_JSON" });
    const wrong = put(s, t.status("d2"), "status", status("d9", 99));
    expect(wrong).toMatchObject({ kind: "invalid", code: "E_MQTT_MESSAGE_SCHEMA" });
    expect(applyMessage(s, "elsewhere/x", new Uint8Array([1])).kind).toBe("ignored");
    expect(applyMessage(s, t.rolloutState("r"), new Uint8Array([1])).kind).toBe("ignored");
  });

  it("--device keeps that device and its gateway", () => {
    const v = fleetView(world(), T0, { deviceId: "d3" });
    expect(v.devices.map((d) => d.deviceId)).toEqual(["d3"]);
    expect(v.gateways.map((g) => g.gatewayId)).toEqual(["gw2"]);
    expect(fleetView(world(), T0, { deviceId: "nope" })).toEqual({ gateways: [], devices: [] });
  });

  it("a device moved to another gateway shows where its newest inventory lists it", () => {
    const s = world();
    put(s, t.inventory("gw2"), "inventory", inventory("gw2", ["d1"], iso(10_000)));
    expect(fleetView(s, T0).devices[0]).toMatchObject({
      deviceId: "d1",
      gatewayId: "gw2",
      gatewayOnline: false,
    });
  });

  it("renders aligned tables", () => {
    const lines = renderTable(fleetView(world(), T0 + 65_000));
    expect(lines[0]).toMatch(/^GATEWAY\s+PRESENCE\s+DEVICES\s+VERSION\s+SINCE$/);
    expect(lines[1]).toMatch(/^gw1\s+online\s+2\s+0\.1\.0\s+1m$/);
    const header = lines.find((l) => l.startsWith("DEVICE"))!;
    const d1 = lines.find((l) => l.startsWith("d1 "))!;
    expect(d1.indexOf("transferring")).toBe(header.indexOf("STATE"));
    expect(d1.indexOf("25%")).toBe(header.indexOf("PROGRESS"));
    expect(lines.find((l) => l.startsWith("d3 "))).toMatch(
      /gw2 \(offline\)\s+failed .*E_AGENT_DOWNGRADE/,
    );
    expect(renderTable({ gateways: [], devices: [] })).toEqual(["no gateways", "", "no devices"]);
  });

  it("diffs views into change lines, ignoring age", () => {
    const s = world();
    const a = fleetView(s, T0);
    expect(diffViews(a, fleetView(s, T0 + 99_000))).toEqual([]);
    put(
      s,
      t.status("d1"),
      "status",
      status("d1", 6, { state: "succeeded", releaseId: "r2", targetVersion: "2.0.0" }),
    );
    put(s, t.presence("gw2"), "presence", {
      format: 1,
      gatewayId: "gw2",
      state: "online",
      version: "0.2.0",
      at: iso(1),
    });
    applyMessage(s, t.desired("d4"), new Uint8Array());
    const lines = diffViews(a, fleetView(s, T0)).map(changeLine);
    expect(lines).toEqual([
      "gateway gw2 online, agent 0.2.0",
      "device d1 succeeded, release r2 (2.0.0), running 1.0.0 from ota_0, on gw1",
      "device d3 failed, release r2, error E_AGENT_DOWNGRADE, running 1.0.0 from ota_1, on gw2",
      "device d4 removed",
    ]);
  });

  it("escape sequences in retained statuses and presence are printed escaped, never raw (issue 12, defect 8)", () => {
    // A device's own app descriptor carries the version; a publisher writes the presence.
    const clear = "\x1b[2J\x1b]0;owned\x07";
    const s = world();
    put(s, t.presence("gw1"), "presence", {
      format: 1,
      gatewayId: "gw1",
      state: "online",
      version: `0.1${clear}`,
      at: iso(1),
    });
    put(
      s,
      t.status("d1"),
      "status",
      status("d1", 7, {
        state: "failed",
        releaseId: "r2",
        targetVersion: `2.0${clear}`,
        running: { ...running, version: "1.0\r\nd9 succeeded\u202e" },
      }),
    );
    const v = fleetView(s, T0);
    const printed = [
      ...renderTable(v),
      ...diffViews(fleetView(world(), T0), v).map(changeLine),
    ].join("\n");
    const raw = [...printed].filter((c) => {
      const n = c.codePointAt(0)!;
      return (n < 0x20 && n !== 0x0a) || (n >= 0x7f && n <= 0x9f) || n === 0x202e;
    });
    expect(raw).toEqual([]);
    // One printed line per row: a CR LF in a version does not forge a row.
    expect(printed.split("\n").some((l) => l.startsWith("d9 "))).toBe(false);
    expect(printed).toContain("2.0\\x1b[2J\\x1b]0;owned\\x07");
    expect(printed).toContain("agent 0.1\\x1b[2J");
  });

  it("formats ages", () => {
    expect([undefined, 0, 59_999, 60_000, 3_600_000, 86_400_000 * 3].map(formatAge)).toEqual([
      "-",
      "0s",
      "59s",
      "1m",
      "1h",
      "3d",
    ]);
  });
});
