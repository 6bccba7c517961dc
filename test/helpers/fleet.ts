/**
 * Simulated fleets for integration tests (src/sim/fleet.ts): a fleet in its own temporary
 * directory, and releases built for it with the fleet's own keyring and registry, exactly as
 * `esp-ota release build` builds them. Nothing is cached between calls: each fleet has fresh
 * keys, so tests never share state through it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BuildSummary, buildRelease } from "../../src/release/build.js";
import { loadKeyring } from "../../src/release/keyring-fs.js";
import { openRegistry } from "../../src/release/registry-fs.js";
import type { AppBehaviour } from "../../src/sim/device.js";
import type { SimChip } from "../../src/sim/efuse.js";
import {
  type CreateFleetOptions,
  createFleet,
  type Fleet,
  type FleetDeviceSpec,
  fleetApp,
  setFleetBehaviour,
} from "../../src/sim/fleet.js";

export interface TestFleetOptions extends Omit<CreateFleetOptions, "dir" | "devices"> {
  /** Chip of every device, or "mixed" (even indexes esp32, odd esp32s3); default esp32 (V1: fastest keys). */
  chip?: SimChip | "mixed";
  /** Per-index overrides (behaviours, MAC, chip) merged over the default spec. */
  devices?: Partial<FleetDeviceSpec>[];
}

/** `n` devices in a new temporary directory (`fleet.dir`; remove it with removeTestFleet). */
export function makeTestFleet(n: number, o: TestFleetOptions = {}): Fleet {
  const { chip = "esp32", devices: overrides = [], ...rest } = o;
  const devices = Array.from({ length: n }, (_, i) => ({
    chip: chip === "mixed" ? (i % 2 === 0 ? "esp32" : "esp32s3") : chip,
    ...overrides[i],
  })) as FleetDeviceSpec[];
  return createFleet({
    ...rest,
    dir: join(mkdtempSync(join(tmpdir(), "esp-ota-test-fleet-")), "fleet"),
    devices,
  });
}

export function removeTestFleet(fleet: Fleet): void {
  rmSync(join(fleet.dir, ".."), { recursive: true, force: true });
}

export interface FleetReleaseOptions {
  baseUrl: string;
  outDir: string;
  /** How given devices (by id) behave when they run this version; written to their state files. */
  behaviours?: Record<string, AppBehaviour>;
  /** Default "all" (every device of the release's chip). */
  devices?: "all" | string[];
  /** The app's chip; default the one chip of the selected devices (a release is for one chip). */
  chip?: SimChip;
  /** Default the fleet's secure_version. */
  secureVersion?: number;
  appSize?: number;
  /** Default 30 days. */
  expiresInMs?: number;
  now?: Date;
}

/**
 * buildRelease with the fleet's keyring and registry, one thread (tests run in parallel files on
 * two cores). Set `behaviours` only while the fleet is not being served: a server holds its own
 * copy of each device and writes it back on close.
 */
export function buildFleetRelease(
  fleet: Fleet,
  version: string,
  o: FleetReleaseOptions,
): Promise<BuildSummary> {
  const selected =
    o.devices === undefined || o.devices === "all"
      ? fleet.devices
      : fleet.devices.filter((d) => o.devices!.includes(d.deviceId));
  const chips = [...new Set(selected.map((d) => d.chip))];
  const chip = o.chip ?? chips[0];
  if (!chip || (o.chip === undefined && chips.length > 1))
    throw new RangeError(
      `buildFleetRelease: the devices are ${chips.join(" and ")}; a release is for one chip, pass chip`,
    );
  for (const [id, b] of Object.entries(o.behaviours ?? {}))
    setFleetBehaviour(fleet, id, version, b);
  const now = o.now ?? new Date();
  return buildRelease({
    keyring: loadKeyring(fleet.keysDir),
    registry: openRegistry(fleet.registryDir),
    app: fleetApp(chip, version, {
      secureVersion: o.secureVersion ?? fleet.secureVersion,
      ...(o.appSize !== undefined ? { size: o.appSize } : {}),
    }),
    version,
    devices: o.devices ?? "all",
    baseUrl: o.baseUrl,
    outDir: o.outDir,
    expiresInMs: o.expiresInMs ?? 30 * 86_400_000,
    jobs: 1,
    now: () => now,
  });
}
