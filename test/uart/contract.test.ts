/**
 * One contract suite over every link (STYLE.md §9): the in-memory pair, the fault layer
 * (paced, latency, bit errors, dropped frames), and a real pseudo-terminal pair through
 * `serialport`, where the simulated device runs in real time behind a paced port.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { afterAll, describe, expect, it } from "vitest";
import { RealClock } from "../../src/sim/clock.js";
import type { SimDevice } from "../../src/sim/device.js";
import { FirmwareEndpoint } from "../../src/sim/firmware-device.js";
import { PacedLink } from "../../src/sim/paced-link.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { type LinkOptions, VirtualLink } from "../../src/sim/virtual-link.js";
import { HostSession, memoryImage } from "../../src/uart/host.js";
import type { HostJob, Outcome } from "../../src/uart/host-machine.js";
import type { BytePort } from "../../src/uart/port.js";
import { realTimers, type Timers, VirtualScheduler } from "../../src/uart/scheduler.js";
import { SerialBytePort } from "../../src/uart/serial-port.js";
import { openPtyPair, socatAvailable } from "../../src/uart/socat.js";
import { makeDevice, security } from "../helpers/sim.js";
import { nextImage } from "./harness.js";

interface Env {
  dev: SimDevice;
  ep: FirmwareEndpoint;
  run(job: HostJob, image?: Uint8Array): Promise<RunOut>;
  close(): Promise<void>;
}

interface RunOut {
  outcome?: Outcome;
  code?: string;
  ms: number;
  /** When each phase was entered (ms on the session's clock). */
  phaseAt: Map<string, number>;
}

async function session(
  port: BytePort,
  timers: Timers,
  job: HostJob,
  image: Uint8Array | undefined,
  drive: (s: HostSession) => void,
) {
  const t0 = timers.now();
  const phaseAt = new Map<string, number>();
  const s = new HostSession({
    port,
    timers,
    job,
    ...(image ? { image: memoryImage(image) } : {}),
    onEvent: (e) => {
      if (e.kind === "phase") phaseAt.set(e.phase, timers.now());
    },
  });
  const p = s.start();
  drive(s);
  try {
    return { outcome: await p, ms: timers.now() - t0, phaseAt };
  } catch (e) {
    return { code: (e as { code: string }).code, ms: timers.now() - t0, phaseAt };
  }
}

function virtualEnv(link: LinkOptions): Env {
  const dev = makeDevice("esp32", security("esp32"));
  const sched = new VirtualScheduler();
  const l = new VirtualLink(sched, link);
  const ep = new FirmwareEndpoint(dev, l.device, sched, { rx: RX_CONFIGS.iram });
  ep.powerOn();
  sched.run();
  return {
    dev,
    ep,
    run: (job, image) =>
      session(l.host, sched, job, image, (s) => sched.run({ until: () => s.phase === "done" })),
    close: async () => undefined,
  };
}

async function ptyEnv(baud: number): Promise<Env> {
  const pair = await openPtyPair();
  const dev = makeDevice("esp32", security("esp32"), { clock: new RealClock() });
  const devPort = new PacedLink(await SerialBytePort.open(pair.device, baud), realTimers);
  const ep = new FirmwareEndpoint(dev, devPort, realTimers, { rx: RX_CONFIGS.iram });
  ep.powerOn();
  await (dev.clock as RealClock).settle();
  const host = await SerialBytePort.open(pair.host, baud);
  return {
    dev,
    ep,
    run: (job, image) => session(host, realTimers, job, image, () => undefined),
    close: async () => {
      host.close();
      devPort.close();
      pair.close();
    },
  };
}

const img = nextImage("esp32", "2.0.0", 0x10000);
const flashJob = (image: Uint8Array, offset = 0x160000): HostJob => ({
  mode: "flash",
  image: { offset, size: image.length, sha256: sha256(image) },
});

function contract(name: string, make: () => Promise<Env>) {
  describe(`contract: ${name}`, () => {
    let env: Env | undefined;
    const get = async () => {
      env ??= await make();
      return env;
    };
    afterAll(async () => env?.close());

    it("HELLO → INFO describes the device", async () => {
      const e = await get();
      const r = await e.run({ mode: "info" });
      expect(r.code).toBeUndefined();
      const info = r.outcome?.kind === "info" ? r.outcome.info : undefined;
      expect(info?.chip).toBe("esp32");
      expect(info?.runningOffset).toBe(0x10000);
      expect(info?.secureBootVersion).toBe(1);
      expect(info?.flashEncryption).toBeGreaterThan(0);
      expect(info?.slots.map((s) => s.offset)).toEqual([0x10000, 0x160000]);
    });

    it("reboot mode: REBOOT, the device boots again, then its fresh INFO", async () => {
      const e = await get();
      const r = await e.run({ mode: "reboot" });
      expect(r.code).toBeUndefined();
      const info = r.outcome?.kind === "info" ? r.outcome.info : undefined;
      expect(info?.runningOffset).toBe(0x10000);
      expect(r.phaseAt.has("await-boot")).toBe(true);
    });

    it("refuses the running slot with a coded error", async () => {
      const e = await get();
      const r = await e.run(flashJob(img, 0x10000), img);
      expect(r.code).toBe("E_UART_SLOT_REFUSED");
    });

    it("flashes, reboots and confirms; the slot is byte-identical", async () => {
      const e = await get();
      const r = await e.run(flashJob(img), img);
      expect(r.code).toBeUndefined();
      expect(r.outcome?.kind).toBe("confirmed");
      expect(e.dev.flash.read(0x160000, img.length)).toEqual(img);
    }, 30_000);
  });
}

contract("in-memory link", async () => virtualEnv({ baud: Number.POSITIVE_INFINITY }));
contract("fault layer", async () =>
  virtualEnv({
    baud: 921600,
    latencyMs: 8,
    faults: { bitErrorRate: 1e-6, dropWriteRate: 0.01 },
    seed: 11,
  }),
);

const haveSocat = socatAvailable();
if (!haveSocat && process.env.CI === "true")
  throw new Error(
    "socat is required in CI for the serial-port contract tests (apt-get install socat)",
  );
if (!haveSocat)
  console.warn("contract: socat is not installed; the pty contract suite is not run here");
if (haveSocat) contract("real pty pair through serialport", () => ptyEnv(921600));

describe.runIf(haveSocat)("real time over a pty at 921600", () => {
  // The ratio is a figure for docs/benchmarks.md (bench:uart), not an assertion: wall-clock
  // time under a loaded test run says nothing about the code.
  it("a 128 KB transfer completes in real time and is confirmed (ratio to the model printed)", async () => {
    const big = nextImage("esp32", "3.0.0", 0x20000);
    // Virtual: the same device configuration, no turnaround latency.
    const v = virtualEnv({ baud: 921600 });
    const vr = await timedTransfer(v, big);
    const p = await ptyEnv(921600);
    try {
      const pr = await timedTransfer(p, big);
      const ratio = pr / vr;
      console.log(
        `pty 921600: real ${pr.toFixed(0)} ms, virtual ${vr.toFixed(0)} ms, ratio ${ratio.toFixed(2)}`,
      );
      expect(Number.isFinite(ratio) && ratio > 0).toBe(true);
    } finally {
      await p.close();
    }
  }, 60_000);
});

/** BEGIN → all data acknowledged, from the session's phase events. */
async function timedTransfer(env: Env, image: Uint8Array): Promise<number> {
  const r = await env.run(flashJob(image), image);
  expect(r.outcome?.kind).toBe("confirmed");
  return (r.phaseAt.get("end") ?? 0) - (r.phaseAt.get("begin") ?? 0);
}
