/** Power-cut runs of a UART OTA against the C firmware (wasm), the simulator's device side. */

import { OTA_STATE } from "../../src/esp/otadata.js";
import type { SimDevice } from "../../src/sim/device.js";
import type { SimChip } from "../../src/sim/efuse.js";
import { type Rig, rig, runFlash } from "../uart/harness.js";

/**
 * One power-cut run (test/firmware/power-cut.test.ts, test/tools/sweep-firmware-power-cut.ts):
 * from a clone of `base`, a UART OTA of `img` to 0x160000 with the wasm device side, power cut
 * half-way through flash operation `cutAt` (counted from the start of the OTA), power back,
 * and the host retrying sessions as the gateway does: after a failed session it first looks
 * at what the device runs, since a cut after ACTIVATE (the bootloader's or the new app's
 * otadata writes) leaves the update already in effect, and a BEGIN to the new, running slot
 * would be refused (test/uart/faults.test.ts does the same). Returns what a user needs to know.
 */
export async function powerCutRun(
  base: SimDevice,
  chip: SimChip,
  img: Uint8Array,
  cutAt: number | undefined,
): Promise<{
  codes: string[];
  confirmed: boolean;
  runsNew: boolean;
  slotOk: boolean;
  ops: number;
}> {
  const r = rig({ chip, dev: base.clone(), link: { baud: 2000000 } });
  const start = r.dev.flash.operationCount;
  if (cutAt !== undefined) r.dev.flash.schedulePowerCut(start + cutAt, 0.5);
  const codes: string[] = [];
  let confirmed = false;
  for (let i = 0; i < 4 && !confirmed; i++) {
    if (!r.ep.up) {
      r.sched.run({ limitMs: r.sched.now() + 1000 });
      if (!r.ep.up) r.ep.powerOn();
      r.sched.run({ limitMs: r.sched.now() + 2000 });
    }
    const res = await runFlash(r, img, { timeouts: { ackMs: 1000, responseMs: 1000 } });
    if (res.outcome?.kind === "confirmed") confirmed = true;
    else {
      codes.push(res.error?.code ?? res.outcome?.kind ?? "?");
      r.sched.run({ limitMs: r.sched.now() + 2000 });
      if (!r.ep.up) r.ep.powerOn();
      r.sched.run({ limitMs: r.sched.now() + 2000 });
      confirmed = runsNewValid(r);
    }
  }
  const st = r.dev.state;
  return {
    codes,
    confirmed,
    runsNew: st.kind === "running" && st.partition.offset === 0x160000,
    slotOk: Buffer.from(r.dev.flash.read(0x160000, img.length)).equals(Buffer.from(img)),
    ops: r.dev.flash.operationCount - start,
  };
}

/** The new app (0x160000) runs and otadata says VALID: the update took effect. */
function runsNewValid(r: Rig): boolean {
  const st = r.dev.state;
  if (st.kind !== "running" || st.partition.offset !== 0x160000) return false;
  return r.dev.ota.esp_ota_get_state_partition(st.partition).state === OTA_STATE.VALID;
}
