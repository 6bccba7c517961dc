/**
 * What the gateway reports about a device, derived from its UART INFO (pure): the running app,
 * both otadata entries, and the slot the next update must be encrypted for.
 */
import { toHex } from "../bytes.js";
import { stateName } from "../esp/otadata.js";
import type { OtadataEntry, RunningApp } from "../mqtt/messages.js";
import { nextSlotOffset } from "../uart/host-machine.js";
import { describeInfo, type Info } from "../uart/messages.js";

export const deviceIdOf = (info: Info): string => toHex(info.mac);

export function runningAppOf(info: Info): RunningApp | undefined {
  const { app } = describeInfo(info);
  if (!app) return undefined;
  const slot = info.slots.find((s) => s.offset === info.runningOffset);
  return {
    project: app.projectName,
    version: app.version,
    secureVersion: app.secureVersion,
    slot: slot?.label ?? `0x${info.runningOffset.toString(16)}`,
    offset: info.runningOffset,
    state: info.runningState === 0xffffffff ? "UNDEFINED" : stateName(info.runningState),
  };
}

export function otadataOf(info: Info): OtadataEntry[] {
  return describeInfo(info).otadata.map((e) => ({
    seq: e.seq === 0xffffffff ? null : e.seq,
    state: e.seq === 0xffffffff ? "EMPTY" : stateName(e.state),
  }));
}

/** The OTA slot the device's otadata makes next (where an update must be written). */
export function nextSlotOf(
  info: Info,
): { label: string; offset: number; size: number } | undefined {
  const off = nextSlotOffset(info);
  const s = info.slots.find((p) => p.offset === off);
  return s && { label: s.label, offset: s.offset, size: s.size };
}
