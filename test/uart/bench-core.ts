/**
 * The UART OTA throughput model behind `npm run bench:uart` (and its quick test): one transfer
 * of a pre-encrypted image in virtual time, against the physical limit, and esptool's ROM
 * stop-and-wait shape on the same link and flash timing.
 */

import type { SimDevice } from "../../src/sim/device.js";
import { BLOCK_SIZE, DEFAULT_FLASH_TIMING, PAGE_SIZE, SECTOR_SIZE } from "../../src/sim/flash.js";
import type { RxConfig } from "../../src/sim/rx-model.js";
import { makeDevice, security } from "../helpers/sim.js";
import { rig, runFlash } from "./harness.js";

export interface BenchPoint {
  baud: number;
  latencyMs: number;
  rx: "iram" | "no-iram";
  bytes: number;
  /** Transfer time, first BEGIN to the last byte acknowledged in flash (ms). */
  ms: number;
  kbitPerS: number;
  limitMs: number;
  ratio: number;
  lost: number;
  stopAndWaitMs: number;
  stopAndWaitKbitPerS: number;
  stopAndWaitRatio: number;
}

/** Flash busy time for an image at a slot: 64 KB block erases where aligned, sectors else, pages. */
export function flashBusyMs(slotOffset: number, size: number, t = DEFAULT_FLASH_TIMING): number {
  const end = Math.ceil(size / SECTOR_SIZE) * SECTOR_SIZE;
  let ms = 0;
  for (let a = 0; a < end; ) {
    if ((slotOffset + a) % BLOCK_SIZE === 0 && a + BLOCK_SIZE <= end) {
      ms += t.blockEraseMs;
      a += BLOCK_SIZE;
    } else {
      ms += t.sectorEraseMs;
      a += SECTOR_SIZE;
    }
  }
  return ms + Math.ceil(size / PAGE_SIZE) * t.pageProgramMs;
}

/** The physical limit (issue 4): overlap when reception continues during flash, else the sum. */
export function limitMs(baud: number, size: number, flashMs: number, overlap: boolean): number {
  const wire = (size * 10_000) / baud;
  return overlap ? Math.max(wire, flashMs) : wire + flashMs;
}

/**
 * esptool's ROM flashing shape: FLASH_BEGIN erases the region first, then each 1 KB
 * FLASH_DATA (8-byte command header + 16-byte data header + data, SLIP-framed: two 0xC0 and
 * about 2/256 of bytes escaped) waits for its 12-byte response before the next is sent.
 */
export function stopAndWaitMs(
  baud: number,
  latencyMs: number,
  size: number,
  flashMs: number,
): number {
  const byte = 10_000 / baud;
  const blocks = Math.ceil(size / 1024);
  const req = Math.ceil((1024 + 24) * (1 + 2 / 256)) + 2;
  const resp = 12 + 2;
  const eraseMs = flashMs - Math.ceil(size / PAGE_SIZE) * DEFAULT_FLASH_TIMING.pageProgramMs;
  const perBlock = 2 * latencyMs + (req + resp) * byte + 4 * DEFAULT_FLASH_TIMING.pageProgramMs;
  return eraseMs + blocks * perBlock;
}

export async function benchPoint(
  baud: number,
  latencyMs: number,
  rxName: "iram" | "no-iram",
  rx: RxConfig,
  image: Uint8Array,
  dev?: SimDevice,
): Promise<BenchPoint> {
  const device = dev ?? makeDevice("esp32", security("esp32"));
  const r = rig({ dev: device, rx, link: { baud: 115200, latencyMs } });
  const res = await runFlash(r, image, baud === 115200 ? {} : { targetBaud: baud });
  if (res.outcome?.kind !== "confirmed")
    throw new Error(
      `bench ${baud}/${latencyMs}/${rxName}: ${res.error?.code} ${res.error?.message}`,
    );
  const ms = (res.phaseAt.get("end") ?? 0) - (res.phaseAt.get("begin") ?? 0);
  const flash = flashBusyMs(0x160000, image.length);
  const lim = limitMs(baud, image.length, flash, rx.isrInIram);
  const sw = stopAndWaitMs(baud, latencyMs, image.length, flash);
  return {
    baud,
    latencyMs,
    rx: rxName,
    bytes: image.length,
    ms,
    kbitPerS: (image.length * 8) / ms,
    limitMs: lim,
    ratio: lim / ms,
    lost: r.ep.rx.lost,
    stopAndWaitMs: sw,
    stopAndWaitKbitPerS: (image.length * 8) / sw,
    stopAndWaitRatio: lim / sw,
  };
}
