/**
 * The example exchange in docs/uart-protocol.md §4.1, made by the real codec and device side: a
 * simulated ESP32 flashed in virtual time, every frame on the wire recorded in order, plus an
 * ABORT while idle and an unsupported BAUD. `describeFrame` is the one-line summary the doc
 * prints above each frame's bytes; test/uart/doc-example.test.ts decodes the doc's bytes and
 * checks them against those lines. Print the block again with
 * `npx tsx test/tools/write-uart-example.ts`.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { toHex } from "../../src/bytes.js";
import { stateName } from "../../src/esp/otadata.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { encodeFrame, type Frame, FrameDecoder } from "../../src/uart/frame.js";
import { HostSession, memoryImage } from "../../src/uart/host.js";
import {
  decodeAck,
  decodeAnnounce,
  decodeBaud,
  decodeBegin,
  decodeData,
  decodeHello,
  decodeInfo,
  decodeResult,
  encodeBaud,
  MSG,
  msgName,
  statusName,
} from "../../src/uart/messages.js";
import { app, otaImage, security } from "../helpers/sim.js";
import { rig } from "./harness.js";

export interface WireFrame {
  /** "→" host to device, "←" device to host. */
  dir: "→" | "←";
  bytes: Uint8Array;
}

const hex = (n: number) => `0x${n.toString(16)}`;

/** One line saying what a frame carries, from its decoded payload; undefined if it does not decode. */
export function describeFrame(f: Frame): string | undefined {
  const p = f.payload;
  switch (f.type) {
    case MSG.HELLO: {
      const v = decodeHello(p);
      return v === undefined ? undefined : `HELLO version ${v}`;
    }
    case MSG.BAUD: {
      const b = decodeBaud(p);
      return b === undefined ? undefined : `BAUD ${b}`;
    }
    case MSG.BEGIN: {
      const m = decodeBegin(p);
      return m && `BEGIN offset ${hex(m.offset)}, size ${m.size}, sha256 ${toHex(m.sha256)}`;
    }
    case MSG.DATA: {
      const m = decodeData(p);
      return m && `DATA offset ${m.offset}, ${m.data.length} bytes`;
    }
    case MSG.END:
    case MSG.ACTIVATE:
    case MSG.REBOOT:
    case MSG.ABORT:
    case MSG.STATUS:
      return p.length === 0 ? msgName(f.type) : undefined;
    case MSG.RESULT: {
      const r = decodeResult(p);
      return (
        r &&
        `RESULT request ${msgName(r.request)}, status ${statusName(r.status)}, esp_err ${hex(r.espErr)}, value ${r.value}, detail "${r.detail}"`
      );
    }
    case MSG.ACK: {
      const a = decodeAck(p);
      return (
        a &&
        `ACK received ${a.received}, credit ${a.credit}, written ${a.written}, holdAt ${a.holdAt}, busyMs ${a.busyMs}, flags ${a.flags}`
      );
    }
    case MSG.INFO: {
      const i = decodeInfo(p);
      return (
        i &&
        `INFO ${p.length} bytes: ${i.chip} rev ${i.revision}, MAC ${toHex(i.mac)}, running ${hex(i.runningOffset)} (${stateName(i.runningState)}), slots ${i.slots.map((s) => `${s.label}@${hex(s.offset)}`).join(" ")}, resume ${i.resume ? "present" : "absent (flag 0)"}, partition-table SHA-256 ${i.partitionTableSha256 ? "present" : "absent"}`
      );
    }
    case MSG.ANNOUNCE: {
      const a = decodeAnnounce(p);
      return (
        a &&
        `ANNOUNCE phase ${a.phase}, running ${hex(a.runningOffset)} (${stateName(a.runningState)}), version "${a.version}"`
      );
    }
    default:
      return undefined;
  }
}

/**
 * The frames of one flash (HELLO to the new app's ANNOUNCE phase 1) at the console rate, then
 * ABORT while idle, BAUD 12345 (unsupported) and BAUD 921600. The image's last DATA frame is
 * the only one shown whole (a full one is 4110 bytes), so the app is sized for a short tail.
 */
export async function exampleExchange(): Promise<WireFrame[]> {
  const r = rig({ rx: RX_CONFIGS.iram });
  const image = otaImage("esp32", security("esp32"), app("esp32", "2.0.0", 0x2000), 0x160000);
  const frames: WireFrame[] = [];
  const fromDevice = new FrameDecoder();
  const host = r.link.host;
  const recorder = {
    get baud() {
      return host.baud;
    },
    // Both sides write one frame per write (src/uart/host.ts, device.ts), so a write is a frame.
    write(b: Uint8Array) {
      frames.push({ dir: "→", bytes: Uint8Array.from(b) });
      host.write(b);
    },
    onData(cb: (b: Uint8Array) => void) {
      host.onData((b) => {
        for (const ev of fromDevice.push(b))
          if (ev.kind === "frame")
            frames.push({ dir: "←", bytes: encodeFrame(ev.frame.type, ev.frame.payload) });
        cb(b);
      });
    },
    onClose: (cb: () => void) => host.onClose(cb),
    setBaud: (b: number) => host.setBaud(b),
    close: () => host.close(),
  };
  const s = new HostSession({
    port: recorder,
    timers: r.sched,
    job: {
      mode: "flash",
      image: { offset: 0x160000, size: image.length, sha256: sha256(image) },
    },
    image: memoryImage(image),
  });
  const done = s.start();
  r.sched.run({ until: () => s.phase === "done" });
  const out = await done;
  if (out.kind !== "confirmed") throw new Error(`example flash: ${out.kind}`);
  r.sched.run();
  // The session is over; the same link carries two more requests.
  host.onData((b) => {
    for (const ev of fromDevice.push(b))
      if (ev.kind === "frame")
        frames.push({ dir: "←", bytes: encodeFrame(ev.frame.type, ev.frame.payload) });
  });
  for (const f of [
    encodeFrame(MSG.ABORT),
    encodeFrame(MSG.BAUD, encodeBaud(12345)),
    encodeFrame(MSG.BAUD, encodeBaud(921600)),
  ]) {
    frames.push({ dir: "→", bytes: f });
    host.write(f);
    r.sched.run();
  }
  return frames;
}

/** Frames longer than this are summarised, not dumped: a full DATA frame is 4110 bytes. */
export const SHOWN_BYTES = 512;
export const NOT_SHOWN = "bytes not shown";

/** Frames as the doc shows them: a summary line, then the bytes, 16 to a line. */
export function renderExchange(frames: readonly WireFrame[]): string {
  const out: string[] = [];
  for (const f of frames) {
    const ev = new FrameDecoder().push(f.bytes);
    const frame = ev[0]?.kind === "frame" ? ev[0].frame : undefined;
    if (!frame) throw new Error("renderExchange: not a frame");
    out.push(`${f.dir} ${describeFrame(frame)}`);
    if (f.bytes.length > SHOWN_BYTES) {
      out.push(`(${f.bytes.length} ${NOT_SHOWN})`);
      continue;
    }
    for (let i = 0; i < f.bytes.length; i += 16)
      out.push(
        [...f.bytes.subarray(i, i + 16)].map((b) => b.toString(16).padStart(2, "0")).join(" "),
      );
  }
  return out.join("\n");
}
