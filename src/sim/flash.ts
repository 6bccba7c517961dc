/**
 * A NOR flash chip: erase sets bytes to 0xFF (4 KB sectors, 64 KB blocks), programming can only
 * clear bits (new = old AND data), pages are 256 bytes. Storage is sparse: a sector that is
 * erased costs nothing, so thousands of 4 MB devices fit in memory (npm run bench:sim).
 *
 * Every erase and every page program is one numbered operation. A power cut scheduled at
 * operation N leaves that operation partly done — a prefix of the page programmed, a prefix of
 * the sector erased (real cells end up indeterminate; a prefix is the simplest model that is
 * still wrong in the ways that matter: neither the old nor the new contents) — and throws
 * E_SIM_POWER_CUT; the chip then refuses work until powered on again.
 */
import { EspOtaError } from "../errors.js";
import { type SimClock, VirtualClock } from "./clock.js";

export const SECTOR_SIZE = 0x1000;
export const BLOCK_SIZE = 0x10000;
export const PAGE_SIZE = 0x100;

export const FLASH_SIZES = {
  "2MB": 2 << 20,
  "4MB": 4 << 20,
  "8MB": 8 << 20,
  "16MB": 16 << 20,
} as const;
export type FlashSizeName = keyof typeof FLASH_SIZES;

export function parseFlashSize(name: string): number {
  const size = (FLASH_SIZES as Record<string, number>)[name.toUpperCase()];
  if (size === undefined) {
    throw new RangeError(
      `flash size "${name}" is not one of ${Object.keys(FLASH_SIZES).join(", ")}`,
    );
  }
  return size;
}

/**
 * Typical datasheet timings (esp32-facts §6.5: 4 KB erase ≈30–45 ms typ, 64 KB erase ≈150 ms
 * typ, 256-byte page program ≈0.4–0.8 ms typ; e.g. Winbond W25Q32JV tSE 45 ms, tBE2 150 ms).
 * The maxima are 5–10× higher; pass slower figures to test a host's timeouts.
 */
export interface FlashTiming {
  sectorEraseMs: number;
  blockEraseMs: number;
  pageProgramMs: number;
}
export const DEFAULT_FLASH_TIMING: FlashTiming = {
  sectorEraseMs: 45,
  blockEraseMs: 150,
  pageProgramMs: 0.7,
};

export type FlashOpKind = "erase-sector" | "erase-block" | "program";
export interface FlashOp {
  /** 1-based operation number since the chip was made. */
  n: number;
  kind: FlashOpKind;
  address: number;
  length: number;
}

export interface NorFlashOptions {
  size: number;
  clock?: SimClock;
  timing?: Partial<FlashTiming>;
}

const ERASED_SECTOR = new Uint8Array(SECTOR_SIZE).fill(0xff);

export class NorFlash {
  readonly size: number;
  readonly clock: SimClock;
  readonly timing: FlashTiming;
  private sectors = new Map<number, Uint8Array>();
  private ops = 0;
  private cut: { op: number; fraction: number } | undefined;
  private powered = true;
  /** Called after every completed operation (tracing, counting in the power-cut harness). */
  onOperation: ((op: FlashOp) => void) | undefined;

  constructor(opts: NorFlashOptions) {
    if (!Object.values(FLASH_SIZES).includes(opts.size as never)) {
      throw new RangeError(`NorFlash: size ${opts.size} is not 2, 4, 8 or 16 MB`);
    }
    this.size = opts.size;
    this.clock = opts.clock ?? new VirtualClock();
    this.timing = { ...DEFAULT_FLASH_TIMING, ...opts.timing };
  }

  /** Number of erase and program operations so far. */
  get operationCount(): number {
    return this.ops;
  }

  get isPowered(): boolean {
    return this.powered;
  }

  /** Sectors holding anything but 0xFF (the memory this chip costs is 4 KB each). */
  get usedSectors(): number {
    return this.sectors.size;
  }

  /**
   * Cut power during operation number `op` (1-based, absolute: compare operationCount). The
   * operation is done for `fraction` of its bytes (0 = not started, 0.5 = half).
   */
  schedulePowerCut(op: number, fraction = 0.5): void {
    if (!Number.isInteger(op) || op <= this.ops) {
      throw new RangeError(
        `schedulePowerCut: operation ${op} is not in the future (now at ${this.ops})`,
      );
    }
    if (!(fraction >= 0 && fraction <= 1))
      throw new RangeError(`schedulePowerCut: fraction ${fraction}`);
    this.cut = { op, fraction };
  }

  cancelPowerCut(): void {
    this.cut = undefined;
  }

  powerOff(): void {
    this.powered = false;
  }

  powerOn(): void {
    this.powered = true;
  }

  read(address: number, length: number): Uint8Array {
    this.checkRange(address, length);
    const out = new Uint8Array(length);
    forEachSectorSpan(address, length, (index, within, n, o) => {
      const sector = this.sectors.get(index) ?? ERASED_SECTOR;
      out.set(sector.subarray(within, within + n), o);
    });
    return out;
  }

  eraseSector(address: number): void {
    this.checkAligned(address, SECTOR_SIZE, "sector erase");
    this.checkRange(address, SECTOR_SIZE);
    this.operation("erase-sector", address, SECTOR_SIZE, this.timing.sectorEraseMs, (fraction) =>
      this.eraseBytes(address, Math.floor(SECTOR_SIZE * fraction)),
    );
  }

  eraseBlock(address: number): void {
    this.checkAligned(address, BLOCK_SIZE, "block erase");
    this.checkRange(address, BLOCK_SIZE);
    this.operation("erase-block", address, BLOCK_SIZE, this.timing.blockEraseMs, (fraction) =>
      this.eraseBytes(address, Math.floor(BLOCK_SIZE * fraction)),
    );
  }

  /**
   * Erase a 4 KB-aligned range the way ESP-IDF's esp_flash_erase_region does: 64 KB block
   * erases where the range covers a whole aligned block, sector erases elsewhere.
   */
  eraseRange(address: number, length: number): void {
    this.checkAligned(address, SECTOR_SIZE, "erase start");
    this.checkAligned(length, SECTOR_SIZE, "erase length");
    this.checkRange(address, length);
    let a = address;
    const end = address + length;
    while (a < end) {
      if (a % BLOCK_SIZE === 0 && end - a >= BLOCK_SIZE) {
        this.eraseBlock(a);
        a += BLOCK_SIZE;
      } else {
        this.eraseSector(a);
        a += SECTOR_SIZE;
      }
    }
  }

  /** Program bytes (AND with what is there), one operation per 256-byte page touched. */
  program(address: number, data: Uint8Array): void {
    this.checkRange(address, data.length);
    let o = 0;
    while (o < data.length) {
      const a = address + o;
      const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), data.length - o);
      const chunk = data.subarray(o, o + n);
      this.operation("program", a, n, this.timing.pageProgramMs, (fraction) =>
        this.programBytes(a, chunk.subarray(0, Math.floor(n * fraction))),
      );
      o += n;
    }
  }

  /** An independent copy (for the power-cut harness: run from the same starting state). */
  snapshot(clock: SimClock = this.clock): NorFlash {
    const copy = new NorFlash({ size: this.size, clock, timing: this.timing });
    for (const [i, s] of this.sectors) copy.sectors.set(i, s.slice());
    copy.ops = this.ops;
    return copy;
  }

  /** Sparse image: "ESPSIMF1", u32 size, u32 count, then count × (u32 sector index, 4096 bytes). */
  serialize(): Uint8Array {
    const out = new Uint8Array(16 + this.sectors.size * (4 + SECTOR_SIZE));
    const dv = new DataView(out.buffer);
    out.set(new TextEncoder().encode(FLASH_MAGIC), 0);
    dv.setUint32(8, this.size, true);
    dv.setUint32(12, this.sectors.size, true);
    let o = 16;
    for (const i of [...this.sectors.keys()].sort((a, b) => a - b)) {
      dv.setUint32(o, i, true);
      out.set(this.sectors.get(i)!, o + 4);
      o += 4 + SECTOR_SIZE;
    }
    return out;
  }

  static deserialize(bytes: Uint8Array, opts: Omit<NorFlashOptions, "size"> = {}): NorFlash {
    const bad = (why: string) => new EspOtaError("E_SIM_STATE_FILE", `flash image: ${why}`);
    if (bytes.length < 16 || new TextDecoder().decode(bytes.subarray(0, 8)) !== FLASH_MAGIC) {
      throw bad("no ESPSIMF1 header");
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const size = dv.getUint32(8, true);
    const count = dv.getUint32(12, true);
    if (bytes.length !== 16 + count * (4 + SECTOR_SIZE))
      throw bad("length does not match its sector count");
    let flash: NorFlash;
    try {
      flash = new NorFlash({ ...opts, size });
    } catch {
      throw bad(`flash size ${size} is not supported`);
    }
    let o = 16;
    for (let k = 0; k < count; k++) {
      const i = dv.getUint32(o, true);
      if (i >= size / SECTOR_SIZE) throw bad(`sector ${i} is beyond the chip`);
      flash.sectors.set(i, bytes.slice(o + 4, o + 4 + SECTOR_SIZE));
      o += 4 + SECTOR_SIZE;
    }
    return flash;
  }

  private operation(
    kind: FlashOpKind,
    address: number,
    length: number,
    ms: number,
    partial: (fraction: number) => void,
  ): void {
    if (!this.powered) {
      throw new EspOtaError(
        "E_SIM_POWERED_OFF",
        `flash ${kind} at 0x${address.toString(16)} while powered off`,
      );
    }
    const n = ++this.ops;
    if (this.cut && this.cut.op === n) {
      const { fraction } = this.cut;
      this.cut = undefined;
      partial(fraction);
      this.clock.spend(ms * fraction);
      this.powered = false;
      throw new EspOtaError(
        "E_SIM_POWER_CUT",
        `power cut during flash operation ${n} (${kind} at 0x${address.toString(16)}, ${Math.round(fraction * 100)}% done)`,
        { op: n, kind, address, fraction },
      );
    }
    partial(1);
    this.clock.spend(ms);
    this.onOperation?.({ n, kind, address, length });
  }

  private eraseBytes(address: number, length: number): void {
    forEachSectorSpan(address, length, (index, within, n) => {
      if (within === 0 && n === SECTOR_SIZE) {
        this.sectors.delete(index);
        return;
      }
      const s = this.sectors.get(index);
      if (s) {
        s.fill(0xff, within, within + n);
        if (s.every((b) => b === 0xff)) this.sectors.delete(index);
      }
    });
  }

  private programBytes(address: number, data: Uint8Array): void {
    forEachSectorSpan(address, data.length, (index, within, n, o) => {
      let s = this.sectors.get(index);
      for (let k = 0; k < n; k++) {
        const v = data[o + k]!;
        if (v === 0xff) continue;
        if (!s) {
          s = ERASED_SECTOR.slice();
          this.sectors.set(index, s);
        }
        s[within + k] = s[within + k]! & v;
      }
    });
  }

  private checkRange(address: number, length: number): void {
    if (
      !Number.isInteger(address) ||
      !Number.isInteger(length) ||
      address < 0 ||
      length < 0 ||
      address + length > this.size
    ) {
      throw new EspOtaError(
        "E_SIM_FLASH_RANGE",
        `flash access 0x${address.toString(16)}+0x${length.toString(16)} is outside the ${this.size >> 20} MB chip`,
        { address, length },
      );
    }
  }

  private checkAligned(value: number, alignment: number, what: string): void {
    if (value % alignment !== 0) {
      throw new EspOtaError(
        "E_SIM_FLASH_ALIGN",
        `${what} 0x${value.toString(16)} is not a multiple of 0x${alignment.toString(16)}`,
        { value, alignment },
      );
    }
  }
}

const FLASH_MAGIC = "ESPSIMF1";

/** Calls fn for each piece of [address, address+length) that lies in one 4 KB sector. */
function forEachSectorSpan(
  address: number,
  length: number,
  fn: (index: number, within: number, n: number, offset: number) => void,
): void {
  let o = 0;
  while (o < length) {
    const a = address + o;
    const within = a % SECTOR_SIZE;
    const n = Math.min(SECTOR_SIZE - within, length - o);
    fn(Math.floor(a / SECTOR_SIZE), within, n, o);
    o += n;
  }
}
