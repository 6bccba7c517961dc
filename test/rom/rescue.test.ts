/**
 * The rescue path's ROM part on a simulated ESP32 with Secure Boot V1 and flash encryption:
 * a release-side image (signed, then encrypted for ota_1) and otadata (encrypted for its
 * address) written raw through the ROM; the chip then boots the rescued app.
 */
import { describe, expect, it } from "vitest";
import { encodeOtadata, OTA_SEQ_LABEL_SIZE, OTA_STATE, otaEntry } from "../../src/esp/otadata.js";
import { RomHost } from "../../src/rom/host.js";
import { checkRescuePlan, rescueSlot } from "../../src/rom/rescue.js";
import { memoryPair } from "../../src/sim/paced-link.js";
import { encryptForAddress } from "../../src/sim/provision.js";
import { attachRomLoader } from "../../src/sim/rom-loader.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { app, makeDevice, otaImage, security } from "../helpers/sim.js";
import { drive } from "./helpers.js";

const OTA1 = 0x160000;
const OTADATA = 0xd000;

describe("rescue through the ROM loader", () => {
  it("writes a pre-encrypted slot and otadata raw; the chip boots it", async () => {
    const sec = security("esp32");
    const dev = makeDevice("esp32", sec);
    dev.powerOn();
    expect(dev.state.kind === "running" && dev.state.app?.version).toBe("1.0.0");
    const image = otaImage("esp32", sec, app("esp32", "3.0.0"), OTA1);
    const empty = {
      seq: 0xffffffff,
      label: new Uint8Array(OTA_SEQ_LABEL_SIZE).fill(0xff),
      state: 0xffffffff,
      crc: 0xffffffff,
    };
    // seq 2 selects ota_1 ((2 - 1) % 2); NEW: the bootloader tries it, the app confirms it.
    const otadata = encryptForAddress(
      "esp32",
      sec.flashEncryption,
      OTADATA,
      encodeOtadata([otaEntry(2, OTA_STATE.NEW), empty]),
    );
    const sched = new VirtualScheduler();
    const pair = memoryPair(115200);
    let exited = false;
    attachRomLoader(dev, pair.device, { onExit: () => (exited = true) });
    const host = new RomHost(pair.host, { timers: sched });
    const r = await drive(
      sched,
      (async () => {
        await host.connect({ before: "no-reset", chip: "esp32" });
        return rescueSlot(host, {
          image,
          slotOffset: OTA1,
          slotSize: 0x150000,
          otadata,
          otadataOffset: OTADATA,
          resetLines: false,
        });
      })(),
    );
    expect(r).toEqual({
      steps: ["attach", "write-slot", "write-otadata", "reset"],
      verified: true,
      reset: "soft-reset",
    });
    expect(exited).toBe(true);
    dev.powerOn();
    expect(
      dev.state.kind === "running" && [dev.state.partition.label, dev.state.app?.version],
    ).toEqual(["ota_1", "3.0.0"]);
  });

  it("refuses a plan that cannot be right before writing anything", () => {
    const base = {
      image: new Uint8Array(16),
      slotOffset: OTA1,
      slotSize: 0x150000,
      otadata: new Uint8Array(0x2000),
      otadataOffset: OTADATA,
      resetLines: false,
    };
    expect(checkRescuePlan(base)).toBeUndefined();
    expect(checkRescuePlan({ ...base, slotOffset: 0x161000 })).toMatch(/64 KB/);
    expect(checkRescuePlan({ ...base, otadata: new Uint8Array(0x1000) })).toMatch(/0x2000/);
    expect(checkRescuePlan({ ...base, otadataOffset: OTA1 + 0x1000 })).toMatch(/overlaps/);
    expect(checkRescuePlan({ ...base, image: new Uint8Array(0x150001) })).toMatch(/does not fit/);
  });
});
