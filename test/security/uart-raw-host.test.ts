/**
 * A host that does not follow the protocol (a compromised gateway, or anything else on the
 * UART) sends raw frames to a simulated secure ESP32. Whatever order it sends them in, the
 * device switches otadata only after END checked every byte in flash against BEGIN's SHA-256
 * and verified the image (signature, secure_version); a refused image never boots
 * (docs/uart-protocol.md §6.1, docs/security.md "compromised gateway").
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { describe, expect, it } from "vitest";
import { decodeOtadata, OTADATA_SIZE } from "../../src/esp/otadata.js";
import type { SimDevice } from "../../src/sim/device.js";
import { encryptForAddress, signImage } from "../../src/sim/provision.js";
import { encodeFrame, FrameDecoder } from "../../src/uart/frame.js";
import {
  DATA_CHUNK,
  decodeResult,
  encodeBegin,
  encodeData,
  encodeHello,
  MSG,
  type Result,
  STATUS,
} from "../../src/uart/messages.js";
import { app, keys, otaImage, security } from "../helpers/sim.js";
import { type Rig, rig } from "../uart/harness.js";

const OTA0 = 0x10000;
const OTA1 = 0x160000;
const sec = security("esp32");

/** Raw frames in, RESULTs out, in virtual time: no host state machine, no checks of our own. */
function rawHost(r: Rig) {
  const dec = new FrameDecoder();
  const results: Result[] = [];
  r.link.host.onData((b) => {
    for (const ev of dec.push(b))
      if (ev.kind === "frame" && ev.frame.type === MSG.RESULT) {
        const res = decodeResult(ev.frame.payload);
        if (res) results.push(res);
      }
  });
  const send = (type: number, payload?: Uint8Array): Result | undefined => {
    const before = results.length;
    r.link.host.write(encodeFrame(type, payload));
    r.sched.run({ until: () => results.length > before, limitMs: 5000 });
    return results[before];
  };
  /** One DATA frame at a time, each after the last was taken (no flow-control games). */
  const sendImage = (bytes: Uint8Array) => {
    for (let o = 0; o < bytes.length; o += DATA_CHUNK) {
      r.link.host.write(
        encodeFrame(MSG.DATA, encodeData({ offset: o, data: bytes.subarray(o, o + DATA_CHUNK) })),
      );
      r.sched.run({ limitMs: 2000 });
    }
  };
  return { send, sendImage };
}

const otadataSeqs = (d: SimDevice) =>
  decodeOtadata(d.spi.read(0xd000, OTADATA_SIZE, d.spi.encryptionEnabled)).map((e) => e.seq);

function setup() {
  const r = rig({ chip: "esp32" });
  const h = rawHost(r);
  expect(h.send(MSG.HELLO, encodeHello())).toBeUndefined(); // HELLO is answered by INFO
  return { r, h, otadataBefore: otadataSeqs(r.dev) };
}

const begin = (bytes: Uint8Array, declared = sha256(bytes), offset = OTA1) =>
  encodeBegin({ offset, size: bytes.length, sha256: declared });

describe("a raw host on the UART cannot activate what the device has not verified", () => {
  it("ACTIVATE before any transfer, and in the middle of one, is BAD_STATE", () => {
    const { r, h, otadataBefore } = setup();
    expect(h.send(MSG.ACTIVATE)?.status).toBe(STATUS.BAD_STATE);
    const img = otaImage("esp32", sec, app("esp32", "2.0.0"), OTA1);
    expect(h.send(MSG.BEGIN, begin(img))?.status).toBe(STATUS.OK);
    h.sendImage(img.subarray(0, DATA_CHUNK));
    expect(h.send(MSG.ACTIVATE)?.status).toBe(STATUS.BAD_STATE);
    expect(h.send(MSG.END)?.status).toBe(STATUS.INCOMPLETE);
    expect(h.send(MSG.ACTIVATE)?.status).toBe(STATUS.BAD_STATE);
    expect(otadataSeqs(r.dev)).toEqual(otadataBefore);
  });

  it("bytes that are not what BEGIN declared: END is HASH_MISMATCH, ACTIVATE is BAD_STATE, the old app boots", () => {
    const { r, h, otadataBefore } = setup();
    const img = otaImage("esp32", sec, app("esp32", "2.0.0"), OTA1);
    const tampered = img.slice();
    tampered[img.length >> 1]! ^= 0x01;
    expect(h.send(MSG.BEGIN, begin(tampered, sha256(img)))?.status).toBe(STATUS.OK);
    h.sendImage(tampered);
    expect(h.send(MSG.END)?.status).toBe(STATUS.HASH_MISMATCH);
    expect(h.send(MSG.ACTIVATE)?.status).toBe(STATUS.BAD_STATE);
    expect(otadataSeqs(r.dev)).toEqual(otadataBefore);
    h.send(MSG.REBOOT);
    r.sched.run({ limitMs: 5000 });
    expect(r.dev.state.kind === "running" && r.dev.state.app?.version).toBe("1.0.0");
  });

  it.each([
    [
      "signed with another secure boot key",
      () => signImage(app("esp32", "6.6.6"), { version: 1, keys: [keys.sbv1Other()] }),
    ],
    ["not signed at all", () => app("esp32", "6.6.6")],
  ])(
    "an image %s, with its true SHA-256 declared: END is IMAGE_INVALID, ACTIVATE is BAD_STATE",
    (_n, image) => {
      const { r, h, otadataBefore } = setup();
      const forged = encryptForAddress("esp32", sec.flashEncryption, OTA1, image());
      expect(h.send(MSG.BEGIN, begin(forged))?.status).toBe(STATUS.OK);
      h.sendImage(forged);
      expect(h.send(MSG.END)?.status).toBe(STATUS.IMAGE_INVALID);
      expect(h.send(MSG.ACTIVATE)?.status).toBe(STATUS.BAD_STATE);
      expect(otadataSeqs(r.dev)).toEqual(otadataBefore);
      h.send(MSG.REBOOT);
      r.sched.run({ limitMs: 5000 });
      expect(r.dev.state.kind === "running" && r.dev.state.app?.version).toBe("1.0.0");
    },
  );

  it("BEGIN at the running slot, the bootloader, the partition table or otadata is refused", () => {
    const { h } = setup();
    const img = new Uint8Array(0x1000);
    expect(h.send(MSG.BEGIN, begin(img, undefined, OTA0))?.status).toBe(STATUS.RUNNING_SLOT);
    for (const offset of [0x1000, 0x8000, 0xd000])
      expect(h.send(MSG.BEGIN, begin(img, undefined, offset))?.status).toBe(STATUS.NOT_APP_SLOT);
  });

  it("control: the same raw host with a genuine image gets OK at every step and the device runs it", () => {
    const { r, h, otadataBefore } = setup();
    const img = otaImage("esp32", sec, app("esp32", "2.0.0"), OTA1);
    expect(h.send(MSG.BEGIN, begin(img))?.status).toBe(STATUS.OK);
    h.sendImage(img);
    expect(h.send(MSG.END)?.status).toBe(STATUS.OK);
    expect(h.send(MSG.ACTIVATE)?.status).toBe(STATUS.OK);
    expect(otadataSeqs(r.dev)).not.toEqual(otadataBefore);
    h.send(MSG.REBOOT);
    r.sched.run({ limitMs: 5000 });
    expect(r.dev.state.kind === "running" && r.dev.state.app?.version).toBe("2.0.0");
  });
});
