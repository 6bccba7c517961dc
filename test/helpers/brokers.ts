/**
 * The brokers integration tests run against (STYLE.md §14): the embedded aedes broker, always,
 * and a real Mosquitto. Usage:
 *
 *   describe.each(BROKER_KINDS)("$name", (kind) => {
 *     it.skipIf(!kind.available)("...", async () => { const b = await kind.start(); ... });
 *   });
 *
 * Both speak MQTT 3.1.1 (aedes 1.2 refuses MQTT 5), so connect with protocolVersion 4 to test
 * against both. Both keep state in a data directory across restart().
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningBroker, startBroker } from "../../broker/broker.js";
import { mosquittoPath, startMosquitto, type TestBroker } from "./mosquitto.js";

export type { TestBroker } from "./mosquitto.js";

export interface BrokerKind {
  name: "aedes" | "mosquitto";
  available: boolean;
  skipReason?: string;
  start(o?: { dataDir?: string }): Promise<TestBroker>;
}

/**
 * The embedded broker on a free loopback port with persistence in dataDir (a temporary one,
 * removed by close(), when omitted). restart() closes it and starts it again on the SAME port
 * with the same dataDir.
 */
export async function startAedesForTest(o: { dataDir?: string } = {}): Promise<TestBroker> {
  const tempDir =
    o.dataDir === undefined ? mkdtempSync(join(tmpdir(), "esp-ota-aedes-")) : undefined;
  const dataDir = o.dataDir ?? tempDir!;
  // Bind port 0 once and keep the port the kernel chose: no window for another process to take it.
  // ESP_OTA_TEST_BROKER_LOG=1 prints the broker's connection log (debugging integration tests).
  const onLog = process.env.ESP_OTA_TEST_BROKER_LOG
    ? (l: string) => console.log(`aedes: ${l}`)
    : undefined;
  let broker: RunningBroker | undefined = await startBroker({
    port: 0,
    dataDir,
    ...(onLog ? { onLog } : {}),
  });
  const port = broker.port;
  let closed = false;
  return {
    kind: "aedes",
    url: broker.url,
    port,
    async restart() {
      await broker?.close();
      broker = undefined;
      broker = await startBroker({ port, dataDir, ...(onLog ? { onLog } : {}) });
    },
    async close() {
      if (closed) return;
      closed = true;
      await broker?.close();
      broker = undefined;
      if (tempDir) rmSync(tempDir, { recursive: true, force: true });
    },
  };
}

const isCi = /^(true|1)$/i.test(process.env.CI ?? "");
const MISSING =
  "mosquitto is not installed: apt-get install -y mosquitto (or run .ci/run, which installs it)";

function mosquittoKind(): BrokerKind {
  if (mosquittoPath() !== undefined)
    return { name: "mosquitto", available: true, start: startMosquitto };
  // In CI a missing system package must fail loudly, never turn into silently skipped tests.
  if (isCi) throw new Error(`CI=true and ${MISSING}`);
  console.warn(`skipping the Mosquitto variants of the broker tests: ${MISSING}`);
  return {
    name: "mosquitto",
    available: false,
    skipReason: MISSING,
    start: () => Promise.reject(new Error(MISSING)),
  };
}

export const BROKER_KINDS: BrokerKind[] = [
  { name: "aedes", available: true, start: startAedesForTest },
  mosquittoKind(),
];

export interface TestCert {
  /** PEM; self-signed, so it is also its own CA (pass it as `ca` to trust it). */
  cert: Uint8Array;
  key: Uint8Array;
  certPath: string;
  keyPath: string;
}

/**
 * A fresh self-signed P-256 certificate for CN=localhost and IP 127.0.0.1, valid one day, made
 * with `openssl req -x509` in a temporary directory; undefined when openssl is not installed
 * (callers skip their TLS tests and say so).
 */
export function selfSignedCert(): TestCert | undefined {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-cert-"));
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  try {
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
        ...["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        ...["-keyout", keyPath, "-out", certPath],
      ],
      { stdio: "ignore" },
    );
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return {
    cert: new Uint8Array(readFileSync(certPath)),
    key: new Uint8Array(readFileSync(keyPath)),
    certPath,
    keyPath,
  };
}
