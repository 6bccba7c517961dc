/**
 * `status` and `rollout` against a broker that requires mutual TLS and a password (issue 13 item
 * 10): the embedded broker with requestClientCert and a users file, reached with --ca, --cert,
 * --key and the password from --password-env, as the agent's mqtt section allows.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningBroker, startBroker } from "../../broker/broker.js";
import { hashPassword } from "../../src/auth/users-file.js";
import { mqttOptionsFromCli } from "../../src/cli/broker-options.js";
import { createContext } from "../../src/cli/context.js";
import { selfSignedCert } from "../helpers/brokers.js";
import { codeOf, runCapture } from "../helpers/cli.js";

const cert = selfSignedCert();
if (!cert)
  console.warn("broker-tls.test: openssl is not installed; the mutual-TLS runs are skipped");
// Cheap scrypt parameters: the password check is what is tested, not its cost.
const FAST = { N: 1024, r: 8, p: 1 };
const ENV = "ESP_OTA_TEST_BROKER_PASSWORD";

describe("broker options: client certificates and the password", () => {
  const ctx = createContext({ write: () => true }, { write: () => true });
  const base = { broker: "mqtts://127.0.0.1:1", prefix: "esp-ota/v1" };

  it("refuse a certificate without its key, two password sources, an unset variable", () => {
    expect(codeOf(() => mqttOptionsFromCli(ctx, { ...base, cert: "c.pem" }, "t"))).toBe("E_USAGE");
    expect(
      codeOf(() =>
        mqttOptionsFromCli(ctx, { ...base, passwordFile: "p", passwordEnv: ENV }, "t", {}),
      ),
    ).toBe("E_USAGE");
    expect(codeOf(() => mqttOptionsFromCli(ctx, { ...base, passwordEnv: ENV }, "t", {}))).toBe(
      "E_USAGE",
    );
    expect(
      codeOf(() => mqttOptionsFromCli(ctx, { ...base, passwordEnv: ENV }, "t", { [ENV]: "" })),
    ).toBe("E_USAGE");
    expect(
      mqttOptionsFromCli(ctx, { ...base, username: "u", passwordEnv: ENV }, "t", { [ENV]: "pw" }),
    ).toMatchObject({ username: "u", password: "pw" });
  });
});

describe.runIf(cert !== undefined)("status and rollout against a mutual-TLS broker", () => {
  let broker: RunningBroker;
  beforeAll(async () => {
    broker = await startBroker({
      port: 0,
      // The self-signed certificate is its own CA, so it also serves as the client's.
      tls: { cert: cert!.cert, key: cert!.key, ca: cert!.cert, requestClientCert: true },
      users: { operator: await hashPassword("s3cret", FAST) },
    });
    process.env[ENV] = "s3cret";
  });
  afterAll(async () => {
    delete process.env[ENV];
    await broker?.close();
  });

  const tls = () => ["--ca", cert!.certPath, "--cert", cert!.certPath, "--key", cert!.keyPath];
  // The embedded broker speaks 3.1.1: skip the MQTT 5 attempt it would refuse.
  const login = ["--username", "operator", "--password-env", ENV, "--mqtt-version", "4"];

  it("connect with --cert/--key and --password-env", async () => {
    const status = await runCapture(["status", "--broker", broker.url, ...tls(), ...login]);
    expect(status.code, status.stderr).toBe(0);
    const list = await runCapture(["rollout", "list", "--broker", broker.url, ...tls(), ...login]);
    expect(list.code, list.stderr).toBe(0);
  });

  it("without the client certificate, or with a wrong password, the broker refuses", async () => {
    const noCert = await runCapture([
      ...["status", "--broker", broker.url, "--ca", cert!.certPath],
      ...login,
    ]);
    expect([noCert.code, noCert.stderr]).toEqual([1, expect.stringContaining("E_MQTT_CONNECT")]);
    process.env[ENV] = "wrong";
    try {
      const wrong = await runCapture(["status", "--broker", broker.url, ...tls(), ...login]);
      expect([wrong.code, wrong.stderr]).toEqual([1, expect.stringContaining("E_MQTT")]);
    } finally {
      process.env[ENV] = "s3cret";
    }
  });
});
