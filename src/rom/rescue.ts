/**
 * The rescue path's ROM part (issue 15): a device that no longer answers our UART protocol but can
 * be put into download mode gets a known-good image written raw to a slot, and otadata that
 * selects it, both as the release side made them (pre-encrypted for their addresses when flash
 * encryption is on: the ROM writes raw, docs/rom-protocol.md §8), then is reset to boot it.
 * Whether it worked is what the booted app then says over our protocol; under Secure Download
 * Mode nothing can be read back or checksummed here, so the write is reported unverified.
 *
 * Not here: the gateway's per-port configuration (whether the reset lines are wired; off by
 * default) and the follow-up INFO over the UART protocol, which belong to the agent.
 */
import { EspOtaError } from "../errors.js";
import { OTADATA_SIZE } from "../esp/otadata.js";
import type { RomHost } from "./host.js";

export interface RescuePlan {
  /** The image for the slot, exactly as it must lie in flash (ciphertext when encryption is on). */
  image: Uint8Array;
  slotOffset: number;
  slotSize: number;
  /** The whole otadata partition (0x2000 bytes) selecting that slot, as it must lie in flash. */
  otadata: Uint8Array;
  otadataOffset: number;
  /** SPI_SET_PARAMS before writing (needed past 2 MB under Secure Download Mode). */
  flashSize?: number;
  /** Reset with RTS when the port's lines are wired; otherwise FLASH_END "run user code". */
  resetLines: boolean;
}

export type RescueStep = "attach" | "write-slot" | "write-otadata" | "reset";

export interface RescueResult {
  steps: RescueStep[];
  /** Both writes checked by SPI_FLASH_MD5 (false under Secure Download Mode). */
  verified: boolean;
  reset: "hard-reset" | "soft-reset";
}

/** Checks the plan before anything is written: a refused plan writes nothing. */
export function checkRescuePlan(p: RescuePlan): string | undefined {
  if (p.slotOffset % 0x10000 !== 0)
    return `slot offset 0x${p.slotOffset.toString(16)} is not 64 KB-aligned`;
  if (p.image.length === 0 || p.image.length > p.slotSize)
    return `image of ${p.image.length} bytes does not fit the ${p.slotSize}-byte slot`;
  if (p.otadata.length !== OTADATA_SIZE) return `otadata is ${p.otadata.length} bytes, not 0x2000`;
  if (p.otadataOffset % 0x1000 !== 0)
    return `otadata offset 0x${p.otadataOffset.toString(16)} is not 4 KB-aligned`;
  const overlap =
    p.otadataOffset < p.slotOffset + p.slotSize && p.slotOffset < p.otadataOffset + OTADATA_SIZE;
  if (overlap) return "otadata overlaps the slot";
  return undefined;
}

/** Runs on a connected host (RomHost.connect done). Each step's name is in its error. */
export async function rescueSlot(host: RomHost, p: RescuePlan): Promise<RescueResult> {
  const bad = checkRescuePlan(p);
  if (bad) throw new EspOtaError("E_USAGE", `rescue plan: ${bad}`);
  const steps: RescueStep[] = [];
  const step = async <T>(name: RescueStep, f: () => Promise<T>): Promise<T> => {
    try {
      const r = await f();
      steps.push(name);
      return r;
    } catch (e) {
      if (e instanceof EspOtaError)
        throw new EspOtaError(
          e.code,
          `rescue ${name}: ${e.message}`,
          { ...e.context, step: name },
          e,
        );
      throw e;
    }
  };
  await step("attach", async () => {
    await host.spiAttach();
    if (p.flashSize !== undefined) await host.spiSetParams(p.flashSize);
  });
  // Raw writes: the bytes are final. Compressed where the ROM allows it (not in Secure Download
  // Mode, where writeFlash falls back to plain and unverified by itself).
  const slot = await step("write-slot", () =>
    host.writeFlash(p.slotOffset, p.image, { compress: true }),
  );
  const ota = await step("write-otadata", () =>
    host.writeFlash(p.otadataOffset, p.otadata, { compress: true }),
  );
  let reset: RescueResult["reset"] = "soft-reset";
  await step("reset", async () => {
    if (p.resetLines && (await host.hardReset())) reset = "hard-reset";
    else await host.softReset();
  });
  return { steps, verified: slot.verified && ota.verified, reset };
}
