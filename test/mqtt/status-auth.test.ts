/** Signed statuses (docs/security.md G1): signing, every way a status fails, the gateways file. */
import { describe, expect, it } from "vitest";
import { applyMessage, emptyFleet } from "../../src/mqtt/fleet-view.js";
import { type DeviceStatus, encodeMessage } from "../../src/mqtt/messages.js";
import {
  checkStatus,
  encodeGatewaysFile,
  gatewayIdentity,
  gatewayTrust,
  parseGatewaysFile,
  signStatus,
} from "../../src/mqtt/status-auth.js";
import { topics } from "../../src/mqtt/topics.js";
import { generateManifestKey } from "../../src/release/keyring.js";

const gw1 = generateManifestKey("ed25519");
const gw2 = generateManifestKey("ed25519");
const file = parseGatewaysFile(
  encodeGatewaysFile({
    format: 1,
    gateways: [gatewayIdentity("gw-1", gw1), gatewayIdentity("gw-2", gw2)],
  }),
);
const trust = gatewayTrust(file);

const status = (over: Partial<DeviceStatus> = {}): DeviceStatus => ({
  format: 1,
  deviceId: "240ac4fe0001",
  gatewayId: "gw-1",
  seq: 7,
  state: "succeeded",
  releaseId: "r1",
  updatedAt: "2026-11-24T00:00:00.000Z",
  ...over,
});

describe("signed statuses", () => {
  it("a status signed by the gateway it names verifies", () => {
    expect(checkStatus(signStatus(status(), gw1), trust)).toEqual({ ok: true });
  });

  it("each forgery has its code: unknown gateway, unsigned, another key, a changed byte", () => {
    const code = (st: DeviceStatus) => {
      const r = checkStatus(st, trust);
      return r.ok ? "ok" : r.code;
    };
    expect(code(signStatus(status({ gatewayId: "gw-9" }), gw1))).toBe(
      "E_MQTT_STATUS_GATEWAY_UNKNOWN",
    );
    expect(code(status())).toBe("E_MQTT_STATUS_UNSIGNED");
    // gw-2's key signing a status that names gw-1.
    expect(code(signStatus(status(), gw2))).toBe("E_MQTT_STATUS_SIGNATURE");
    const good = signStatus(status(), gw1);
    for (const over of [
      { seq: 2 ** 40 },
      { state: "failed" as const },
      { gatewayId: "gw-2" },
      { releaseId: "r2" },
    ])
      expect(code({ ...good, ...over })).not.toBe("ok");
    expect(code({ ...good, sig: { keyId: gw1.keyId, signature: "AAAA" } })).toBe(
      "E_MQTT_STATUS_SIGNATURE",
    );
  });

  it("the fleet view with a gateways file keeps the genuine status and refuses a forged one", () => {
    const t = topics("esp-ota/v1");
    const fleet = emptyFleet(t.prefix, trust);
    const put = (st: DeviceStatus) =>
      applyMessage(fleet, t.status(st.deviceId), encodeMessage("status", st));
    expect(put(signStatus(status(), gw1)).kind).toBe("applied");
    const forged = put(status({ seq: 2 ** 40, state: "failed" }));
    expect(forged).toMatchObject({ kind: "invalid", code: "E_MQTT_STATUS_UNSIGNED" });
    expect(fleet.status.get("240ac4fe0001")?.state).toBe("succeeded");
  });
});

describe("gateways file", () => {
  it("round-trips, sorted by gateway id", () => {
    expect(file.gateways.map((g) => g.gatewayId)).toEqual(["gw-1", "gw-2"]);
    expect(parseGatewaysFile(encodeGatewaysFile(file))).toEqual(file);
  });

  it("refuses what cannot be trusted, with E_MQTT_GATEWAYS_FILE", () => {
    const id = gatewayIdentity("gw-1", gw1);
    const bad = [
      "not json",
      JSON.stringify({ format: 2, gateways: [] }),
      JSON.stringify({ format: 1, gateways: [{ ...id, keyId: "0".repeat(32) }] }),
      JSON.stringify({ format: 1, gateways: [{ ...id, publicKey: "00".repeat(32) }] }),
      JSON.stringify({ format: 1, gateways: [id, id] }),
      JSON.stringify({ format: 1, gateways: [{ ...id, extra: 1 }] }),
    ];
    for (const text of bad)
      expect(() => parseGatewaysFile(text)).toThrow(
        expect.objectContaining({ code: "E_MQTT_GATEWAYS_FILE" }),
      );
  });
});
