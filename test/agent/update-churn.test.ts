/**
 * Notice churn and flash wear (issue 12 defect 6), in process and in virtual time: the update
 * runner (agent/update.ts) over a DeviceLink to a simulated secure ESP32 on an in-memory UART, a
 * real HTTP server on loopback for the signed manifests and ciphertexts.
 *
 * Before the fix, a release superseded mid-transfer and issued again started over at byte 0: the
 * supersede sent ABORT (which closes the device's progress record), the staged download was
 * deleted, and every new BEGIN erased otadata's inactive sector again, as often as anyone cared
 * to publish (about every 2 s). Now a supersede leaves the device's record and the staged image
 * alone, the same image resumes, and fresh starts are bounded by a per-device erase budget kept in
 * the ledger.
 */
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeviceLink } from "../../agent/link.js";
import { httpNet, type RunResult, runUpdate, type UpdateSettings } from "../../agent/update.js";
import { toHex } from "../../src/bytes.js";
import { EspOtaError } from "../../src/errors.js";
import { deviceIdOf } from "../../src/gateway/device-view.js";
import { type DeviceLedger, newLedger } from "../../src/gateway/ledger.js";
import type { DeviceStatus, UpdateNotice } from "../../src/mqtt/messages.js";
import { generateManifestKey, trustPolicyFromKeys } from "../../src/release/keyring.js";
import { type ReleaseManifest, signManifest } from "../../src/release/manifest.js";
import { createStaticServer } from "../../src/release/serve.js";
import type { Info } from "../../src/uart/messages.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";
import { type Rig, rig, runFlash } from "../uart/harness.js";

const OTA0 = 0x10000;
const OTA1 = 0x160000;
/** otadata in twoOtaLayout (test/helpers/sim.ts): two 4 KB sectors. */
const OTADATA = { start: 0xd000, end: 0xf000 };
const T0 = Date.parse("2026-01-10T00:00:00Z");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const key = generateManifestKey("ed25519");
const trust = trustPolicyFromKeys([key], 1);
const sec = security("esp32");
const image = (version: string, slot: number) =>
  otaImage("esp32", sec, app("esp32", version, 0x20000), slot);
/** Past the device's first 64 KB progress entry (uart-protocol.md §6.4): a resume starts there. */
const CUT_AT = 80 * 1024;
const images = {
  "2.0.0": { ota0: image("2.0.0", OTA0), ota1: image("2.0.0", OTA1) },
  "2.1.0": { ota0: image("2.1.0", OTA0), ota1: image("2.1.0", OTA1) },
  "2.2.0": { ota0: image("2.2.0", OTA0), ota1: image("2.2.0", OTA1) },
};

let root: string;
let server: Server;
let base: string;
let r: Rig;
let info: Info;
let deviceId: string;
/** GET requests per URL path. */
const gets = new Map<string, number>();
/**
 * Erases before ACTIVATE of what only a fresh BEGIN erases: otadata's sectors
 * (esp_ota_invalidate_inactive_ota_data_slot, when the inactive copy holds an entry) and the
 * first 64 KB of either slot (a resume past it re-erases only from the unit holding its byte
 * count, uart-protocol.md §6.4).
 */
let freshErases = 0;
/** Off from ACTIVATE on, whose otadata writes (and the bootloader's) every update makes. */
let beforeActivate = true;
/** The agent's link to the device, open for the whole file (opening a port resets boards). */
let link: DeviceLink;

function publish(releaseId: string, version: keyof typeof images, counter: number): void {
  const im = images[version];
  const m: ReleaseManifest = {
    format: 1,
    releaseId,
    deviceId,
    chip: "esp32",
    partitionTableSha256: toHex(info.partitionTableSha256!),
    project: "sim-test",
    version,
    secureVersion: 0,
    counter,
    issuedAt: "2026-01-01T00:00:00Z",
    expiresAt: "2026-02-01T00:00:00Z",
    variants: [
      {
        slot: "ota_0",
        offset: OTA0,
        size: im.ota0.length,
        sha256: sha(im.ota0),
        urls: [`${base}${releaseId}/ota_0.bin`],
      },
      {
        slot: "ota_1",
        offset: OTA1,
        size: im.ota1.length,
        sha256: sha(im.ota1),
        urls: [`${base}${releaseId}/ota_1.bin`],
      },
    ],
  };
  mkdirSync(join(root, releaseId), { recursive: true });
  writeFileSync(join(root, releaseId, "manifest.json"), JSON.stringify(signManifest(m, [key])));
  writeFileSync(join(root, releaseId, "ota_0.bin"), im.ota0);
  writeFileSync(join(root, releaseId, "ota_1.bin"), im.ota1);
}

/**
 * Runs the virtual clock in small slices on real macrotasks while `p` is pending, so the
 * simulated device and the host session move on while the runner awaits files and HTTP.
 * `between` runs after each slice, outside the scheduler (where a test may cancel).
 */
async function pumped<T>(p: Promise<T>, between?: () => void): Promise<T> {
  let done = false;
  const out = p.finally(() => {
    done = true;
  });
  while (!done) {
    r.sched.run({ limitMs: r.sched.now() + 50 });
    between?.();
    await new Promise((ok) => setImmediate(ok));
  }
  return out;
}

interface Run {
  result: RunResult;
  statuses: DeviceStatus[];
  resumedFrom: number | undefined;
}

async function run(
  ledger: DeviceLedger,
  releaseId: string,
  o: { cancelAt?: number; cancelWith?: EspOtaError; issuedAt?: string } = {},
): Promise<Run> {
  const notice: UpdateNotice = {
    format: 1,
    deviceId,
    releaseId,
    counter: 8,
    manifestUrls: [`${base}${releaseId}/manifest.json`],
    issuedAt: o.issuedAt ?? new Date(T0).toISOString(),
  };
  ledger.job = { notice, step: "parseNotice", startedAt: new Date(T0).toISOString() };
  const statuses: DeviceStatus[] = [];
  const ac = new AbortController();
  let transferred = 0;
  let resumedFrom: number | undefined;
  const now = () => new Date(T0 + r.sched.now());
  const settings: UpdateSettings = {
    trust,
    policy: { allowDowngrade: false, confirmTimeoutMs: 30_000, maxManifestBytes: 65536 },
    download: { retries: 0, backoffBaseMs: 1, backoffMaxMs: 1, totalTimeoutMs: 20_000 },
    stagingDir: join(root, ".staging"),
    transferAttempts: 1,
    eraseBudget: { cycles: 3, windowMs: 3_600_000 },
  };
  beforeActivate = true;
  const log = {
    info: (obj: { from?: number }, msg?: string) => {
      if (msg?.startsWith("transfer resumes")) resumedFrom = obj.from;
    },
    warn: () => undefined,
    error: () => undefined,
  } as unknown as Logger;
  const result = await pumped(
    runUpdate({
      deviceId,
      job: ledger.job,
      settings,
      ports: {
        device: () => link,
        ledger: {
          get: () => ledger,
          save: async (f) => f(ledger),
          // Called as ACTIVATE is about to leave the port (the point of no return).
          saveNow: (f) => {
            f(ledger);
            beforeActivate = false;
          },
        },
        publish: {
          status: async (state, extra = {}) => {
            const st = { deviceId, state, ...extra } as DeviceStatus;
            statuses.push(st);
            if (state === "succeeded" || state === "failed" || state === "cancelled") {
              ledger.lastFinal = { releaseId, state, at: now().toISOString() };
              ledger.job = undefined;
            }
          },
          progress: (step, bytes) => {
            if (step === "transfer") transferred = bytes;
          },
        },
        clock: { now, sleep: async () => undefined },
        net: httpNet(settings, (f) => f()),
        log,
      },
      signal: ac.signal,
    }),
    () => {
      if (o.cancelAt !== undefined && transferred >= o.cancelAt && !ac.signal.aborted)
        ac.abort(o.cancelWith);
    },
  );
  return { result, statuses, resumedFrom };
}

const superseded = () =>
  new EspOtaError("E_AGENT_SUPERSEDED", "r-a was replaced by r-b at transfer", {});

beforeAll(async () => {
  const dev = makeDevice("esp32", sec);
  dev.powerOn();
  r = rig({ dev });
  const first = await runFlash(r, new Uint8Array(16), { mode: "info" });
  if (first.outcome?.kind !== "info") throw new Error("no INFO from the simulated device");
  info = first.outcome.info;
  deviceId = deviceIdOf(info);
  const inHead = (a: number, slot: number) => a >= slot && a < slot + 0x10000;
  dev.flash.onOperation = (op) => {
    if (op.kind === "program" || !beforeActivate) return;
    const a = op.address;
    if ((a >= OTADATA.start && a < OTADATA.end) || inHead(a, OTA0) || inHead(a, OTA1))
      freshErases++;
  };
  // Transfers at 921600: a session cut short leaves the device there until its next reset, so
  // the next job's INFO must ask at that rate too (DeviceLink.readInfo's probeBaud; it asked only
  // at the console rate and the job after a supersede failed with E_UART_NO_DEVICE).
  link = DeviceLink.over("memory:dut", r.link.host, {
    consoleBaud: 115200,
    transferBaud: 921600,
    timers: r.sched,
  });
  root = mkdtempSync(join(tmpdir(), "esp-ota-churn-"));
  mkdirSync(join(root, ".staging"));
  server = createStaticServer(root);
  server.prependListener("request", (req) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    gets.set(path, (gets.get(path) ?? 0) + 1);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  publish("r-a", "2.0.0", 8);
  publish("r-b", "2.1.0", 9);
  publish("r-c", "2.2.0", 10);
}, 30_000);

afterAll(async () => {
  await new Promise((ok) => server?.close(ok));
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("notice churn (issue 12 defect 6)", () => {
  const ledger = newLedger("000000000000");

  it("a release superseded mid-transfer and issued again resumes where the device stopped, without erasing otadata again or downloading again", async () => {
    ledger.deviceId = deviceId;
    const cut = await run(ledger, "r-a", { cancelAt: CUT_AT, cancelWith: superseded() });
    expect(cut.result).toEqual({ kind: "final", state: "cancelled" });
    expect(cut.statuses.at(-1)?.error?.code).toBe("E_AGENT_SUPERSEDED");
    const worn = freshErases;
    expect(worn).toBeGreaterThan(0);
    // The staged image is kept for the notice that may follow.
    expect(readdirSync(join(root, ".staging")).some((n) => n.endsWith(".bin"))).toBe(true);
    const again = await run(ledger, "r-a", { issuedAt: new Date(T0 + 60_000).toISOString() });
    expect(again.result).toEqual({ kind: "final", state: "succeeded" });
    expect(again.resumedFrom).toBeGreaterThanOrEqual(64 * 1024);
    expect(freshErases).toBe(worn);
    expect(gets.get("/r-a/ota_1.bin")).toBe(1);
    // One fresh start was counted; the resume was not.
    expect(ledger.erases).toHaveLength(1);
    // A job that ends other than superseded leaves nothing staged.
    expect(readdirSync(join(root, ".staging"))).toEqual([]);
  }, 30_000);

  it("a clear (or an operator's cancel) still ABORTs: the next transfer of the same image starts afresh", async () => {
    const cleared = new EspOtaError("E_AGENT_CLEARED", "cleared", {});
    const cut = await run(ledger, "r-b", { cancelAt: CUT_AT, cancelWith: cleared });
    expect(cut.statuses.at(-1)?.error?.code).toBe("E_AGENT_CLEARED");
    const worn = freshErases;
    const again = await run(ledger, "r-b", { cancelAt: CUT_AT, cancelWith: superseded() });
    expect(again.statuses.at(-1)?.error?.code).toBe("E_AGENT_SUPERSEDED");
    expect(again.resumedFrom).toBeUndefined();
    expect(freshErases).toBeGreaterThan(worn);
    expect(ledger.erases).toHaveLength(3);
  }, 30_000);

  it("beyond the erase budget a fresh start is refused with E_AGENT_ERASE_BUDGET before anything is downloaded or sent; resuming the image on the device is not", async () => {
    const erasesBefore = freshErases;
    // The budget (3 an hour) is used up, but the device holds r-b's open record (the supersede
    // above): r-b resumes, at no erase.
    expect(ledger.erases).toHaveLength(3);
    const resumed = await run(ledger, "r-b", { issuedAt: new Date(T0 + 120_000).toISOString() });
    expect(resumed.result).toEqual({ kind: "final", state: "succeeded" });
    expect(resumed.resumedFrom).toBeGreaterThanOrEqual(64 * 1024);
    expect(freshErases).toBe(erasesBefore);
    // Another image would start afresh: refused at selectSlot, nothing fetched, nothing flashed.
    const opsBefore = r.dev.flash.operationCount;
    const refused = await run(ledger, "r-c");
    expect(refused.result).toEqual({ kind: "final", state: "failed" });
    expect(refused.statuses.at(-1)?.error).toMatchObject({
      code: "E_AGENT_ERASE_BUDGET",
      step: "selectSlot",
    });
    expect(r.dev.flash.operationCount).toBe(opsBefore);
    expect((gets.get("/r-c/ota_0.bin") ?? 0) + (gets.get("/r-c/ota_1.bin") ?? 0)).toBe(0);
  }, 30_000);
});
