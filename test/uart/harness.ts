/** Builds a simulated ESP32 running the C firmware on a virtual link with a host session, all in virtual time. */
import { sha256 } from "@noble/hashes/sha2.js";
import type { SimDevice } from "../../src/sim/device.js";
import type { SimChip } from "../../src/sim/efuse.js";
import { FirmwareEndpoint } from "../../src/sim/firmware-device.js";
import type { RxConfig } from "../../src/sim/rx-model.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { type LinkOptions, VirtualLink } from "../../src/sim/virtual-link.js";
import { HostSession, memoryImage } from "../../src/uart/host.js";
import type { HostEvent, HostJob, Outcome } from "../../src/uart/host-machine.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";

export interface Rig {
  sched: VirtualScheduler;
  link: VirtualLink;
  dev: SimDevice;
  ep: FirmwareEndpoint;
}

export function rig(
  opts: { chip?: SimChip; link?: LinkOptions; rx?: RxConfig; dev?: SimDevice } = {},
): Rig {
  const chip = opts.chip ?? "esp32";
  const dev = opts.dev ?? makeDevice(chip, security(chip));
  const sched = new VirtualScheduler();
  const link = new VirtualLink(sched, opts.link);
  const ep = new FirmwareEndpoint(dev, link.device, sched, { rx: opts.rx ?? RX_CONFIGS.iram });
  if (dev.state.kind !== "running") ep.powerOn();
  // The power-on boot log and announcements are not part of what the tests look at.
  sched.run();
  return { sched, link, dev, ep };
}

/** The next OTA image for a rig's device, encrypted for ota_1 (0x160000). */
export function nextImage(chip: SimChip, version: string, size = 0x8000): Uint8Array {
  return otaImage(chip, security(chip), app(chip, version, size), 0x160000);
}

export interface RunResult {
  outcome?: Outcome;
  error?: { code: string; message: string };
  session: HostSession;
  events: HostEvent[];
  logs: string[];
  ms: number;
  /** Virtual time each phase was entered (the last time, if entered more than once). */
  phaseAt: Map<string, number>;
}

export async function runFlash(
  r: Rig,
  image: Uint8Array,
  job: Partial<HostJob> = {},
  during?: (r: Rig, s: HostSession) => void,
  signal?: AbortSignal,
): Promise<RunResult> {
  const events: HostEvent[] = [];
  const logs: string[] = [];
  const phaseAt = new Map<string, number>();
  const t0 = r.sched.now();
  const session = new HostSession({
    port: r.link.host,
    timers: r.sched,
    job: {
      mode: "flash",
      image: { offset: 0x160000, size: image.length, sha256: sha256(image) },
      ...job,
    },
    image: memoryImage(image),
    ...(signal ? { signal } : {}),
    onEvent: (e) => {
      events.push(e);
      if (e.kind === "phase") phaseAt.set(e.phase, r.sched.now());
    },
    onLog: (l) => logs.push(l),
  });
  const p = session.start();
  during?.(r, session);
  // The session settles synchronously inside the scheduler (its promise resolves later).
  r.sched.run({ until: () => session.phase === "done" });
  await Promise.resolve();
  await Promise.resolve();
  const res: RunResult = { session, events, logs, ms: r.sched.now() - t0, phaseAt };
  try {
    res.outcome = await p;
  } catch (e) {
    const err = e as { code: string; message: string };
    res.error = { code: err.code, message: err.message };
  }
  return res;
}
