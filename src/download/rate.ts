/**
 * The minimum transfer rate over a sliding window (the slow-retrieval defence of TUF: a server
 * that sends a byte now and then never trips an idle timeout, yet would hold a download for
 * hours). Pure: the caller samples the byte count with its own clock, at least a few times per
 * window; `sample` says whether the rate over the last window fell below the floor.
 */
export class RateFloor {
  /** (time, total bytes) samples; the first is the newest one at least one window old. */
  private readonly samples: { t: number; bytes: number }[] = [];

  constructor(
    private readonly minBytesPerSec: number,
    private readonly windowMs: number,
    private readonly startMs: number,
  ) {
    if (!(minBytesPerSec >= 0) || !(windowMs > 0)) throw new RangeError("bad rate floor");
    this.samples.push({ t: startMs, bytes: 0 });
  }

  /**
   * Records `totalBytes` received by `nowMs`. Returns the rate in bytes per second over the last
   * window (at least `windowMs` long, at most one sampling interval longer) when it is below the
   * floor, else undefined. Nothing is judged before one whole window has passed.
   */
  sample(nowMs: number, totalBytes: number): number | undefined {
    this.samples.push({ t: nowMs, bytes: totalBytes });
    const edge = nowMs - this.windowMs;
    while (this.samples.length > 1 && this.samples[1]!.t <= edge) this.samples.shift();
    const base = this.samples[0]!;
    if (nowMs - this.startMs < this.windowMs || base.t > edge || this.minBytesPerSec === 0)
      return undefined;
    const rate = ((totalBytes - base.bytes) * 1000) / (nowMs - base.t);
    return rate < this.minBytesPerSec ? rate : undefined;
  }
}
