import { Duplex } from "node:stream";
import { describe, expect, it } from "vitest";
import { FirmwareEndpoint } from "../../src/sim/firmware-device.js";
import { RX_CONFIGS } from "../../src/sim/rx-model.js";
import { VirtualLink } from "../../src/sim/virtual-link.js";
import { encodeFrame } from "../../src/uart/frame.js";
import { duplexPort, FrameParser } from "../../src/uart/frame-stream.js";
import { HostSession } from "../../src/uart/host.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { makeDevice, security } from "../helpers/sim.js";

describe("stream adapters", () => {
  it("FrameParser: a Transform from byte chunks to frames and console lines", async () => {
    const p = new FrameParser();
    const events: unknown[] = [];
    p.on("data", (e) => events.push(e));
    const bytes = Buffer.concat([
      Buffer.from("ets Jun  8 2016 00:22:57\r\n"),
      encodeFrame(0x90, Uint8Array.of(1, 2)),
      Buffer.from("tail without newline"),
    ]);
    for (let i = 0; i < bytes.length; i += 3) p.write(bytes.subarray(i, i + 3));
    p.end();
    await new Promise((r) => p.on("end", r));
    expect(events).toEqual([
      { kind: "log", line: "ets Jun  8 2016 00:22:57" },
      { kind: "frame", frame: { type: 0x90, payload: Uint8Array.of(1, 2) } },
      { kind: "log", line: "tail without newline" },
    ]);
  });

  it("a HostSession runs over a Node Duplex", async () => {
    const dev = makeDevice("esp32", security("esp32"));
    const sched = new VirtualScheduler();
    const link = new VirtualLink(sched, { baud: Number.POSITIVE_INFINITY });
    const ep = new FirmwareEndpoint(dev, link.device, sched, { rx: RX_CONFIGS.iram });
    ep.powerOn();
    sched.run();
    // The host end of the link as a Duplex stream, then back through duplexPort.
    const stream = new Duplex({
      read() {},
      write(chunk: Buffer, _e, done) {
        link.host.write(new Uint8Array(chunk));
        done();
      },
    });
    link.host.onData((b) => stream.push(Buffer.from(b)));
    const s = new HostSession({ port: duplexPort(stream), timers: sched, job: { mode: "info" } });
    const p = s.start();
    // Stream writes are delivered on the next tick; drive virtual time until the session is done.
    for (let i = 0; i < 50 && s.phase !== "done"; i++) {
      await new Promise((r) => setImmediate(r));
      sched.run({ until: () => s.phase === "done" });
    }
    const out = await p;
    expect(out.kind === "info" && out.info.chip).toBe("esp32");
  });
});
