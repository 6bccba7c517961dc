/**
 * The update runner (agent/update.ts) against fake ports: what it promises about every step,
 * whatever the step is (issue 12 "The agent's shape"). It records the step in the ledger before
 * the step acts and publishes its status; a cancel is let through only before ACTIVATE; a
 * device that goes away suspends the job; a job found past ACTIVATE is settled by asking the
 * device, on the injected clock; a failure of any kind ends in a final status with a code.
 *
 * The device's INFO comes from a simulated ESP32; the network and the link are fakes, so each
 * case runs in milliseconds.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type DevicePort,
  type NetPort,
  type RunResult,
  runUpdate,
  type UpdateSettings,
} from "../../agent/update.js";
import { toHex } from "../../src/bytes.js";
import { EspOtaError } from "../../src/errors.js";
import { OTA_STATE } from "../../src/esp/otadata.js";
import { deviceIdOf } from "../../src/gateway/device-view.js";
import { type DeviceLedger, newLedger, type StepName } from "../../src/gateway/ledger.js";
import type { DeviceStatus } from "../../src/mqtt/messages.js";
import { generateManifestKey, trustPolicyFromKeys } from "../../src/release/keyring.js";
import { signManifest } from "../../src/release/manifest.js";
import type { HostEvent, Outcome } from "../../src/uart/host-machine.js";
import type { Info } from "../../src/uart/messages.js";
import { makeDevice, security } from "../helpers/sim.js";
import { rig, runFlash } from "../uart/harness.js";

const OTA0 = 0x10000;
const OTA1 = 0x160000;
const NOW = new Date("2026-01-10T00:00:00Z");
const key = generateManifestKey("ed25519");
const trust = trustPolicyFromKeys([key], 1);
// The runner never looks inside the ciphertext: any bytes with the manifest's hash will do.
const cipher = new Uint8Array(randomBytes(8192));
const sha = createHash("sha256").update(cipher).digest("hex");

let info: Info;
let deviceId: string;
let staging: string;
let manifestText: string;

beforeAll(async () => {
  const dev = makeDevice("esp32", security("esp32"));
  dev.powerOn();
  const r = await runFlash(rig({ dev }), new Uint8Array(16), { mode: "info" });
  if (r.outcome?.kind !== "info") throw new Error("no INFO from the simulated device");
  info = r.outcome.info;
  deviceId = deviceIdOf(info);
  staging = mkdtempSync(join(tmpdir(), "esp-ota-runner-"));
  const variant = (slot: string, offset: number) => ({
    slot,
    offset,
    size: cipher.length,
    sha256: sha,
    urls: [`http://mirror.invalid/${slot}.bin`],
  });
  manifestText = JSON.stringify(
    signManifest(
      {
        format: 1,
        releaseId: "r1",
        deviceId,
        chip: "esp32",
        partitionTableSha256: toHex(info.partitionTableSha256!),
        project: "sim-test",
        version: "2.0.0",
        secureVersion: 0,
        counter: 4,
        issuedAt: "2026-01-01T00:00:00Z",
        expiresAt: "2026-02-01T00:00:00Z",
        variants: [variant("ota_0", OTA0), variant("ota_1", OTA1)],
      },
      [key],
    ),
  );
});
afterAll(() => rmSync(staging, { recursive: true, force: true }));

/** The device after the update: the new slot runs, in `state`. */
const infoOnNew = (state: number): Info => ({ ...info, runningOffset: OTA1, runningState: state });

interface Fake {
  /** What the link does when asked to flash (default: every phase, then confirmed). */
  flash?: (onEvent: (e: HostEvent) => void, signal: AbortSignal) => Promise<Outcome>;
  /** INFO answers, in turn (the last one repeats). */
  infos?: (Info | EspOtaError)[];
  ledger?: DeviceLedger;
  step?: StepName;
  stopping?: boolean;
  abortAt?: (ac: AbortController, e: HostEvent) => void;
}

const phases = async (onEvent: (e: HostEvent) => void, kinds: string[]) => {
  for (const phase of kinds) {
    onEvent({ kind: "phase", phase: phase as never });
    await new Promise((r) => setImmediate(r));
  }
};

async function run(f: Fake = {}) {
  const ledger = f.ledger ?? newLedger(deviceId);
  ledger.job ??= {
    notice: {
      format: 1,
      deviceId,
      releaseId: "r1",
      counter: 4,
      manifestUrls: ["http://mirror.invalid/manifest.json"],
      issuedAt: NOW.toISOString(),
    },
    step: f.step ?? "parseNotice",
    startedAt: NOW.toISOString(),
  };
  const job = ledger.job;
  const statuses: DeviceStatus[] = [];
  /** The job's step as the ledger had it each time a status went out. */
  const recorded: string[] = [];
  let sleeps = 0;
  const ac = new AbortController();
  const infos = [...(f.infos ?? [info])];
  const device: DevicePort = {
    info,
    readInfo: async () => {
      const x = infos.length > 1 ? infos.shift()! : infos[0]!;
      if (x instanceof EspOtaError) throw x;
      return x;
    },
    flash: (_img, _src, o) => {
      const onEvent = (e: HostEvent) => {
        o.onEvent?.(e);
        f.abortAt?.(ac, e);
      };
      return (
        f.flash ??
        (async (ev) => {
          await phases(ev, [
            "begin",
            "send",
            "end",
            "activate",
            "reboot",
            "await-boot",
            "await-confirm",
          ]);
          return { kind: "confirmed", info, slotOffset: OTA1, version: "2.0.0", resumedFrom: 0 };
        })
      )(onEvent, o.signal!);
    },
  };
  const net: NetPort = {
    fetchManifest: async () => new TextEncoder().encode(manifestText),
    download: async (_v, dest) => writeFile(dest, cipher),
  };
  const settings: UpdateSettings = {
    trust,
    policy: { allowDowngrade: false, confirmTimeoutMs: 10_000, maxManifestBytes: 65536 },
    download: {},
    stagingDir: staging,
    transferAttempts: 1,
  };
  let clock = NOW.getTime();
  const quiet = () => undefined;
  const result: RunResult = await runUpdate({
    deviceId,
    job,
    settings,
    ports: {
      device: () => device,
      ledger: { get: () => ledger, save: async (g) => g(ledger), saveNow: (g) => g(ledger) },
      publish: {
        status: async (state, extra = {}) => {
          statuses.push({ state, ...extra } as DeviceStatus);
          recorded.push(job.step);
        },
        progress: quiet,
      },
      clock: {
        now: () => new Date(clock),
        sleep: async (ms) => {
          sleeps++;
          clock += ms;
        },
      },
      net,
      log: { info: quiet, warn: quiet, error: quiet } as unknown as Logger,
    },
    signal: ac.signal,
    stopping: () => f.stopping === true,
  });
  return { result, statuses, recorded, ledger, sleeps };
}

describe("the update runner", () => {
  it("enters every step in order, recording it in the ledger before its status goes out", async () => {
    const r = await run();
    expect(r.result).toEqual({ kind: "final", state: "succeeded" });
    expect(r.statuses.map((s) => s.step)).toEqual([
      "parseNotice",
      "fetchManifest",
      "verifyManifest",
      "readDevice",
      "selectSlot",
      "download",
      "transfer",
      "verifyOnDevice",
      "activate",
      "reboot",
      "awaitConfirm",
      "report",
    ]);
    expect(r.recorded.slice(0, -1)).toEqual(r.statuses.slice(0, -1).map((s) => s.step));
    expect(r.ledger.highWater).toMatchObject({ counter: 4, releaseId: "r1" });
  });

  it("a cancel before ACTIVATE ends the job cancelled, with the reason's code and the step it reached", async () => {
    const reason = new EspOtaError("E_AGENT_CANCELLED", "cancelled by an operator", {});
    const r = await run({
      flash: (ev, signal) =>
        new Promise((_ok, no) => {
          void phases(ev, ["begin", "send"]);
          signal.addEventListener("abort", () =>
            no(new EspOtaError("E_UART_CANCELLED", String(signal.reason), {})),
          );
        }),
      abortAt: (ac, e) => {
        if (e.kind === "phase" && e.phase === "send") ac.abort(reason);
      },
    });
    expect(r.result).toEqual({ kind: "final", state: "cancelled" });
    expect(r.statuses.at(-1)?.error).toMatchObject({ code: "E_AGENT_CANCELLED", step: "transfer" });
  });

  it("from ACTIVATE on a cancel is not let through: the session runs to its end", async () => {
    let sawAbort = false;
    const r = await run({
      flash: async (ev, signal) => {
        signal.addEventListener("abort", () => {
          sawAbort = true;
        });
        await phases(ev, ["begin", "send", "end", "activate", "reboot", "await-confirm"]);
        return { kind: "confirmed", info, slotOffset: OTA1, version: "2.0.0", resumedFrom: 0 };
      },
      abortAt: (ac, e) => {
        if (e.kind === "phase" && e.phase === "activate")
          ac.abort(new EspOtaError("E_AGENT_CLEARED", "cleared", {}));
      },
    });
    expect(sawAbort).toBe(false);
    expect(r.result).toEqual({ kind: "final", state: "succeeded" });
  });

  it("the device unplugged mid-transfer suspends the job with an E_AGENT_DEVICE_GONE status; an agent stopping suspends it silently", async () => {
    const gone = () => Promise.reject(new EspOtaError("E_UART_DISCONNECTED", "unplugged", {}));
    const r = await run({ flash: gone });
    expect(r.result).toEqual({ kind: "suspended", code: "E_UART_DISCONNECTED" });
    expect(r.statuses.at(-1)).toMatchObject({
      state: "transferring",
      error: { code: "E_AGENT_DEVICE_GONE", step: "transfer" },
    });
    expect(r.ledger.job?.step).toBe("transfer");
    const quiet = await run({ flash: gone, stopping: true });
    expect(quiet.result.kind).toBe("suspended");
    expect(quiet.statuses.at(-1)?.error).toBeUndefined();
  });

  it("a job found past ACTIVATE is settled by asking the device, polling on the injected clock while the new app is still PENDING_VERIFY", async () => {
    // A restart found the job at awaitConfirm (the ledger's variant says which slot is new).
    const r = await run({
      ledger: {
        ...newLedger(deviceId),
        job: {
          notice: {
            format: 1,
            deviceId,
            releaseId: "r1",
            counter: 4,
            manifestUrls: ["http://mirror.invalid/manifest.json"],
            issuedAt: NOW.toISOString(),
          },
          step: "awaitConfirm",
          startedAt: NOW.toISOString(),
          variant: {
            slot: "ota_1",
            offset: OTA1,
            size: cipher.length,
            sha256: sha,
            urls: ["http://x/y"],
          },
        },
      },
      infos: [
        new EspOtaError("E_UART_TIMEOUT", "still booting", {}),
        infoOnNew(OTA_STATE.PENDING_VERIFY),
        infoOnNew(OTA_STATE.PENDING_VERIFY),
        infoOnNew(OTA_STATE.VALID),
      ],
    });
    expect(r.result).toEqual({ kind: "final", state: "succeeded" });
    expect(r.sleeps).toBe(3);
    expect(r.statuses.map((s) => s.state)).toEqual([
      "awaiting-confirm",
      "awaiting-confirm",
      "succeeded",
    ]);
  });

  it("a failure that is not an EspOtaError ends the job failed with E_INTERNAL at its step, not a crash", async () => {
    const r = await run({
      flash: () => Promise.reject(new TypeError("boom")),
    });
    expect(r.result).toEqual({ kind: "final", state: "failed" });
    expect(r.statuses.at(-1)?.error).toMatchObject({ code: "E_INTERNAL", step: "transfer" });
  });
});
