/**
 * The gateway's rescue path (issue 15; docs/operations.md "Rescue"): a device that no longer
 * answers our UART protocol, on a port whose reset lines are wired (or that an operator strapped
 * into download mode), gets a known-good release's pre-encrypted image written raw to a slot and
 * pre-encrypted otadata selecting that slot, through the ROM serial loader (src/rom/rescue.ts);
 * then it boots and is asked over our protocol what it runs.
 *
 * Named steps, as an update's (STYLE.md §4): checkPort, verifyManifest, selectSlot, verifyImage,
 * verifyOtadata, romWrite, awaitBoot, report. Everything is verified before the first byte goes
 * to the ROM, exactly as an update verifies it: the manifest's signatures, trust, expiry,
 * counter, device and chip (verifyManifest); the slot's ciphertext by its SHA-256 and size in the
 * signed manifest. Under Secure Download Mode nothing can be read back or checksummed, so
 * success is only what the booted app reports: the manifest's version, from the rescued slot.
 *
 * An expected failure is a value (`RescueOutcome` with a code and the step); nothing here throws
 * for what the device, the network or the operator got wrong.
 */
import { createHash } from "node:crypto";
import { type ErrorCode, EspOtaError, isEspOtaError } from "../src/errors.js";
import { OTADATA_SIZE } from "../src/esp/otadata.js";
import { runningAppOf } from "../src/gateway/device-view.js";
import type { RunningApp } from "../src/mqtt/messages.js";
import type { TrustPolicy } from "../src/release/keyring.js";
import { type ManifestVariant, verifyManifest } from "../src/release/manifest.js";
import { RomHost } from "../src/rom/host.js";
import { rescueSlot } from "../src/rom/rescue.js";
import type { ModemLines } from "../src/rom/reset.js";
import type { SimChip } from "../src/sim/efuse.js";
import type { Info } from "../src/uart/messages.js";
import type { BytePort } from "../src/uart/port.js";
import type { Timers } from "../src/uart/scheduler.js";

export type RescueStepName =
  | "checkPort"
  | "verifyManifest"
  | "selectSlot"
  | "verifyImage"
  | "verifyOtadata"
  | "romWrite"
  | "awaitBoot"
  | "report";

/** A port's rescue settings (serial.rescue in agent/config.ts; docs/configuration.md). */
export interface PortRescueSettings {
  /** Off by default: a rescue overwrites a slot and otadata without asking the app. */
  enabled: boolean;
  /**
   * DTR/RTS wired to EN/GPIO0 (esptool's auto-reset circuit): the gateway itself puts the chip
   * into download mode and resets it after. Without them an operator straps GPIO0 and resets.
   */
  resetLines: boolean;
}

export const RESCUE_DEFAULTS: PortRescueSettings = Object.freeze({
  enabled: false,
  resetLines: false,
});

/** What an operator's rescue request names (the `rescue` command's arguments). */
export interface RescueRequest {
  deviceId: string;
  /** The chip the registry says this is; the ROM's answer must agree. */
  chip: SimChip;
  /** The signed manifest of the known-good release, as fetched (untrusted until verified). */
  manifestText: string;
  /** The slot to write (a variant of that manifest), e.g. "ota_0". */
  slot: string;
  /** The slot's pre-encrypted image, as fetched from the variant's URLs (untrusted). */
  image: Uint8Array;
  /** The otadata partition (0x2000 bytes) selecting the slot, pre-encrypted (untrusted). */
  otadata: Uint8Array;
  /** SHA-256 (hex) the release side published for that otadata (docs/release.md). */
  otadataSha256: string;
  otadataOffset: number;
  /** The slot's size in the device's partition table (the image must fit it). */
  slotSize: number;
  /** The lowest counter the gateway accepts for this device (the ledger's high-water mark). */
  minCounter?: number;
}

export interface RescuePorts {
  /** The ROM side of the device's port (the same wire the UART protocol uses). */
  rom: { port: BytePort; setSignals?: (l: ModemLines) => Promise<void> };
  timers: Timers;
  now(): Date;
  /** After the reset: our protocol's INFO from the booted app (DeviceLink.readInfo). */
  readInfo(): Promise<Info>;
  log?: (step: RescueStepName, line: string) => void;
}

export type RescueOutcome =
  | {
      ok: true;
      version: string;
      running: RunningApp;
      /** Both writes checked by SPI_FLASH_MD5 (false under Secure Download Mode). */
      verified: boolean;
      steps: RescueStepName[];
    }
  | { ok: false; step: RescueStepName; code: ErrorCode; message: string; steps: RescueStepName[] };

class Refused extends Error {
  constructor(
    readonly step: RescueStepName,
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const sha256Hex = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/**
 * Runs the rescue. `settings` are the port's; `trust` the agent's effective trust policy (the
 * one every update verifies with).
 */
export async function runRescue(
  req: RescueRequest,
  settings: PortRescueSettings,
  trust: TrustPolicy,
  ports: RescuePorts,
): Promise<RescueOutcome> {
  const steps: RescueStepName[] = [];
  const log = (s: RescueStepName, line: string) => ports.log?.(s, line);
  let step: RescueStepName = "checkPort";
  const enter = (s: RescueStepName) => {
    step = s;
    log(s, `step ${s}`);
  };
  const done = () => steps.push(step);
  try {
    enter("checkPort");
    if (!settings.enabled)
      throw new Refused(
        step,
        "E_AGENT_RESCUE_DISABLED",
        "rescue is off for this port (serial.rescue.enabled: false, the default)",
      );
    done();

    enter("verifyManifest");
    const check = verifyManifest(req.manifestText, trust, {
      now: ports.now(),
      deviceId: req.deviceId,
      chip: req.chip,
      ...(req.minCounter !== undefined ? { minCounter: req.minCounter } : {}),
    });
    if (!check.ok) throw new Refused(step, check.code, check.reason);
    const manifest = check.manifest;
    done();

    enter("selectSlot");
    const variant: ManifestVariant | undefined = manifest.variants.find((v) => v.slot === req.slot);
    if (!variant)
      throw new Refused(
        step,
        "E_AGENT_SLOT_MISMATCH",
        `the manifest of ${manifest.releaseId} has no variant for ${req.slot}`,
      );
    if (variant.size > req.slotSize)
      throw new Refused(
        step,
        "E_AGENT_SLOT_MISMATCH",
        `the ${variant.size}-byte image does not fit the ${req.slotSize}-byte ${req.slot}`,
      );
    done();

    enter("verifyImage");
    // The same check a download makes before a byte goes to the device: size, then SHA-256.
    if (req.image.length !== variant.size || sha256Hex(req.image) !== variant.sha256)
      throw new Refused(
        step,
        "E_DOWNLOAD_HASH_MISMATCH",
        `the image for ${req.slot} is not the signed manifest's (${req.image.length} bytes, SHA-256 differs or size is not ${variant.size})`,
      );
    done();

    enter("verifyOtadata");
    if (req.otadata.length !== OTADATA_SIZE || sha256Hex(req.otadata) !== req.otadataSha256)
      throw new Refused(
        step,
        "E_AGENT_RESCUE_OTADATA",
        `the otadata is not the release side's for ${req.slot} (${req.otadata.length} bytes, SHA-256 differs)`,
      );
    done();

    enter("romWrite");
    const host = new RomHost(ports.rom.port, {
      timers: ports.timers,
      ...(ports.rom.setSignals ? { setSignals: ports.rom.setSignals } : {}),
      log: (l) => log("romWrite", l),
    });
    let written: Awaited<ReturnType<typeof rescueSlot>>;
    try {
      // Wired lines: esptool's classic DTR/RTS sequence puts the chip in download mode; without
      // them the operator has strapped it and the ROM is already waiting.
      await host.connect({
        before: settings.resetLines ? "default-reset" : "no-reset",
        chip: req.chip,
      });
      written = await rescueSlot(host, {
        image: req.image,
        slotOffset: variant.offset,
        slotSize: req.slotSize,
        otadata: req.otadata,
        otadataOffset: req.otadataOffset,
        resetLines: settings.resetLines,
      });
    } finally {
      // The port goes back to our protocol: the ROM host must not read its frames.
      host.link.flushInput();
    }
    done();

    enter("awaitBoot");
    const info = await ports.readInfo();
    const running = runningAppOf(info);
    if (!running || info.runningOffset !== variant.offset || running.version !== manifest.version)
      throw new Refused(
        step,
        "E_AGENT_RESCUE_NOT_BOOTED",
        `after the rescue the device runs ${running?.version ?? "no app we know"} from 0x${info.runningOffset.toString(16)}, not ${manifest.version} from ${variant.slot} (0x${variant.offset.toString(16)})`,
      );
    done();
    enter("report");
    done();
    return { ok: true, version: running.version, running, verified: written.verified, steps };
  } catch (e) {
    if (e instanceof Refused) {
      log(e.step, `${e.code}: ${e.message}`);
      return { ok: false, step: e.step, code: e.code, message: e.message, steps };
    }
    if (isEspOtaError(e)) {
      log(step, `${e.code}: ${e.message}`);
      return { ok: false, step, code: e.code, message: e.message, steps };
    }
    const err = new EspOtaError("E_INTERNAL", e instanceof Error ? e.message : String(e));
    return { ok: false, step, code: err.code, message: err.message, steps };
  }
}

/** The rescue settings of the selector that selected a port (serial.ports[].rescue). */
export function rescueSettingsOf(
  selector: { rescue?: Partial<PortRescueSettings> } | undefined,
): PortRescueSettings {
  const r = selector?.rescue;
  return { enabled: r?.enabled === true, resetLines: r?.resetLines === true };
}
