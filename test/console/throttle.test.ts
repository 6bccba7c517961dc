/**
 * The console's snapshot throttle (src/console/throttle.ts) in virtual time. The bug it fixes:
 * the 5 s refresh pushed without cancelling a throttled push still pending, so each refresh in
 * a busy stretch started another chain and pages got 4.4-4.9 snapshots a second, not 2.
 */
import { describe, expect, it } from "vitest";
import { PushThrottle } from "../../src/console/throttle.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";

/** Changes every 10 ms and a refresh every 5 s for `ms`; the push times. */
function busy(ms: number, everyMs = 500, refreshMs = 5000): number[] {
  const t = new VirtualScheduler();
  const pushes: number[] = [];
  const th = new PushThrottle(t, everyMs, () => pushes.push(t.now()));
  for (let at = 0; at < ms; at += 10) t.at(at, () => th.changed());
  for (let at = refreshMs; at < ms; at += refreshMs) t.at(at, () => th.now());
  t.run({ limitMs: ms });
  th.stop();
  return pushes;
}

describe("PushThrottle", () => {
  it("a busy fleet with refreshes gets at most one push per interval (2 a second at 500 ms)", () => {
    const pushes = busy(30_000);
    for (let i = 1; i < pushes.length; i++)
      expect(pushes[i]! - pushes[i - 1]!, `push ${i} at ${pushes[i]}`).toBeGreaterThanOrEqual(490);
    // 30 s at 2 a second, give or take the refreshes that reset the interval.
    expect(pushes.length).toBeLessThanOrEqual(61);
    expect(pushes.length).toBeGreaterThanOrEqual(55);
  });

  it("one change pushes once; a refresh pushes however quiet the fleet", () => {
    const t = new VirtualScheduler();
    const pushes: number[] = [];
    const th = new PushThrottle(t, 500, () => pushes.push(t.now()));
    th.changed();
    th.changed();
    t.run({ limitMs: 2000 });
    expect(pushes).toEqual([0]);
    t.at(3000, () => th.now());
    t.run({ limitMs: 4000 });
    expect(pushes).toEqual([0, 3000]);
    th.changed();
    t.run({ limitMs: 5000 });
    expect(pushes).toEqual([0, 3000, 3500]);
  });

  it("nothing after stop; misuse throws", () => {
    const t = new VirtualScheduler();
    let n = 0;
    const th = new PushThrottle(t, 500, () => n++);
    th.changed();
    th.stop();
    th.now();
    th.changed();
    t.run({ limitMs: 2000 });
    expect(n).toBe(0);
    expect(() => new PushThrottle(t, Number.NaN, () => {})).toThrow(RangeError);
  });
});
