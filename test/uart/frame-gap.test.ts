/**
 * The frame gap (docs/uart-protocol.md §2.3) on a busy machine. Under load (npm test beside busy
 * loops) a simulated wire's timer fired late in the middle of a DATA frame, the device side saw
 * "silence", gave the frame up and the transfer crawled on retransmissions: 855 DATA frames given
 * up in one test/agent/e2e-restart.test.ts run, 97 s instead of 11 s. Two fixes: the device side
 * measures the gap on the wire's clock (`at` from the port), and a reader keeps a frame whose
 * rest arrives late but whole (FrameDecoder.pushAfterSilence, tested here; the device side's
 * use of both is in test/firmware/frame-gap.test.ts).
 */
import { describe, expect, it } from "vitest";
import { encodeFrame, FrameDecoder } from "../../src/uart/frame.js";
import { encodeHello, MSG } from "../../src/uart/messages.js";

describe("FrameDecoder.pushAfterSilence", () => {
  const frame = encodeFrame(
    0x03,
    Uint8Array.from({ length: 4100 }, (_, i) => (i * 7) & 0xff),
  );

  it("keeps a frame whose rest arrives late but whole", () => {
    const d = new FrameDecoder();
    expect(d.push(frame.subarray(0, 4000))).toEqual([]);
    const evs = d.pushAfterSilence(frame.subarray(4000));
    expect(evs.map((e) => e.kind)).toEqual(["frame"]);
    expect(d.stats.noiseBytes).toBe(0);
  });

  it("gives up a frame cut short and finds the frame that follows (§2.3)", () => {
    const d = new FrameDecoder();
    d.push(frame.subarray(0, 1000));
    const next = encodeFrame(0x01, Uint8Array.of(1, 2, 3));
    const evs = d.pushAfterSilence(next);
    expect(
      evs.filter((e) => e.kind === "frame").map((e) => e.kind === "frame" && e.frame.type),
    ).toEqual([0x01]);
  });

  it("gives up a frame whose continuation does not check, and decodes those bytes afresh", () => {
    const d = new FrameDecoder();
    d.push(frame.subarray(0, 4000));
    const bad = Uint8Array.from(frame.subarray(4000));
    bad[5] = bad[5]! ^ 0xff;
    const hello = encodeFrame(MSG.HELLO, encodeHello());
    const evs = d.pushAfterSilence(Buffer.concat([bad, hello]));
    const frames = evs.filter((e) => e.kind === "frame");
    expect(frames.length).toBe(1);
    expect(frames[0]!.kind === "frame" && frames[0]!.frame.type).toBe(MSG.HELLO);
  });

  it("with nothing held it is push", () => {
    const d = new FrameDecoder();
    const evs = d.pushAfterSilence(frame);
    expect(evs.map((e) => e.kind)).toEqual(["frame"]);
  });
});
