/**
 * The host side of the ROM serial loader, with esptool's behaviour (esptool v5.3.1 `--no-stub`;
 * docs/rom-protocol.md): connect (reset, SYNC retries), chip detection, SPI attach,
 * CHANGE_BAUDRATE, write-flash with compression and MD5 verification, erase by FLASH_BEGIN.
 *
 * Time is injected (`Timers`): a command's timeout, the 50 ms between SYNCs and the reset waits
 * all run on it, so a whole session runs in virtual time over an in-memory link in the tests and
 * on the wall clock over a serial port. Each command is one exchange, `command()`: send, then read
 * frames until a response with the same op (others are skipped, as esptool does), a timeout, or
 * the ROM's "invalid message" status (the command is unsupported here).
 */
import { createHash } from "node:crypto";
import { deflate } from "pako";
import { EspOtaError } from "../errors.js";
import type { SimChip } from "../sim/efuse.js";
import type { BytePort } from "../uart/port.js";
import type { Timers } from "../uart/scheduler.js";
import {
  CHIP_DETECT_MAGIC_REG,
  ESP32_APB_CTL_DATE,
  ESP32_EFUSE_BASE,
  ESP32_UART_CLKDIV_REG,
  formatMac,
  macFromWords,
  ROM_CHIPS,
  type RomChip,
} from "./chips.js";
import { type ConnectConfig, type ConnectInput, connectTransition } from "./connect-machine.js";
import {
  decodeResponse,
  decodeSecurityInfo,
  OP,
  opName,
  type Response,
  ROM_ERROR,
  ROM_FLASH_WRITE_SIZE,
  req,
  responseStatus,
  romErrorName,
  SECURITY_FLAG,
  type SecurityInfo,
} from "./protocol.js";
import {
  type BeforeMode,
  hardReset,
  type ModemLines,
  playReset,
  resetStrategies,
} from "./reset.js";
import { SlipDecoder, slipEncode } from "./slip.js";

/** [loader.py] DEFAULT_TIMEOUT 3 s, SYNC_TIMEOUT 0.1 s, DEFAULT_CONNECT_ATTEMPTS 7. */
export const DEFAULT_TIMEOUT_MS = 3000;
export const SYNC_TIMEOUT_MS = 100;
export const DEFAULT_CONNECT_ATTEMPTS = 7;
/** SYNCs per attempt, and the sleep after a failed one [loader.py _connect_attempt]. */
const SYNCS_PER_ATTEMPT = 5;
const SYNC_RETRY_SLEEP_MS = 50;
/** [loader.py] ERASE_WRITE_TIMEOUT_PER_MB 40 s, MD5_TIMEOUT_PER_MB 8 s. */
const ERASE_WRITE_MS_PER_MB = 40_000;
const MD5_MS_PER_MB = 8000;
/** esptool sleeps 200 ms and drains after an "invalid message" reply [loader.py command]. */
const UNSUPPORTED_DRAIN_MS = 200;
/** RTCCALICFG1 on the ESP32 [targets/esp32.py]. */
const ESP32_RTCCALICFG1 = 0x3ff5f06c;

export function timeoutPerMb(msPerMb: number, bytes: number): number {
  return Math.max(DEFAULT_TIMEOUT_MS, Math.ceil((msPerMb * bytes) / 1e6));
}

/** Status 1, error 0x05: the ROM does not support the command, or refuses it here (SDM). */
export class UnsupportedCommand extends EspOtaError {
  constructor(readonly op: number) {
    super(
      "E_ROM_COMMAND",
      `the ROM refused ${opName(op)} (error 0x05: invalid message or unsupported command)`,
      { op, romError: ROM_ERROR.INVALID_MESSAGE },
    );
  }
}

export interface RomHostOptions {
  timers: Timers;
  /** Sets the modem lines (serialport's `set({dtr, rts})`); absent: a pty, no reset possible. */
  setSignals?: (lines: ModemLines) => Promise<void>;
  log?: (line: string) => void;
}

export interface ConnectOptions {
  before?: BeforeMode;
  attempts?: number;
  /** Expected chip; detected when absent. */
  chip?: SimChip;
}

export interface ChipInfo {
  chip: RomChip;
  secureDownload: boolean;
  securityInfo?: SecurityInfo;
  /** undefined under Secure Download Mode (registers are not readable). */
  mac?: Uint8Array;
  description: string;
  crystalMhz?: number;
}

/** One exchange at a time over SLIP. */
export class RomLink {
  private readonly decoder = new SlipDecoder();
  private readonly frames: Uint8Array[] = [];
  private wake: (() => void) | undefined;

  constructor(
    readonly port: BytePort,
    readonly timers: Timers,
  ) {
    port.onData((b) => {
      for (const f of this.decoder.push(b)) this.frames.push(f);
      if (this.frames.length > 0) this.wake?.();
    });
  }

  /** Bytes seen outside frames (a boot log: the chip is running an app, not the ROM). */
  get noiseBytes(): number {
    return this.decoder.stats.noiseBytes;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((r) => this.timers.setTimer(ms, r));
  }

  flushInput(): void {
    this.frames.length = 0;
    this.decoder.reset();
    this.decoder.takeNoise();
  }

  /** The next frame, or undefined after `timeoutMs` of nothing. */
  read(timeoutMs: number): Promise<Uint8Array | undefined> {
    const f = this.frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => {
      const t = this.timers.setTimer(timeoutMs, () => {
        this.wake = undefined;
        resolve(undefined);
      });
      this.wake = () => {
        this.wake = undefined;
        this.timers.clearTimer(t);
        resolve(this.frames.shift());
      };
    });
  }

  /** Send a request; resolve with the response to the same op [loader.py command]. */
  async command(frame: Uint8Array, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Response> {
    const op = frame[1]!;
    this.port.write(slipEncode(frame));
    for (let i = 0; i < 100; i++) {
      const f = await this.read(timeoutMs);
      if (!f)
        throw new EspOtaError("E_ROM_TIMEOUT", `no response to ${opName(op)} in ${timeoutMs} ms`, {
          op,
        });
      const d = decodeResponse(f);
      if (!d.ok) continue;
      if (d.value.op === op) return d.value;
      if (d.value.data[0] !== 0 && d.value.data[1] === ROM_ERROR.INVALID_MESSAGE) {
        await this.sleep(UNSUPPORTED_DRAIN_MS);
        this.flushInput();
        throw new UnsupportedCommand(op);
      }
    }
    throw new EspOtaError("E_ROM_COMMAND", `response to ${opName(op)} doesn't match the request`);
  }

  /** command() and the status check [loader.py check_command]; returns value and result data. */
  async check(
    what: string,
    frame: Uint8Array,
    opts: { dataLen?: number; timeoutMs?: number } = {},
  ): Promise<{ value: number; data: Uint8Array }> {
    const r = await this.command(frame, opts.timeoutMs);
    const st = responseStatus(r, opts.dataLen ?? 0);
    if (!st.ok) {
      if (st.error === ROM_ERROR.INVALID_MESSAGE) throw new UnsupportedCommand(r.op);
      throw new EspOtaError(
        "E_ROM_COMMAND",
        `${what} failed: ROM error 0x${st.error.toString(16).padStart(2, "0")} (${romErrorName(st.error)})`,
        { op: r.op, romError: st.error },
      );
    }
    return { value: r.value, data: st.data };
  }
}

export class RomHost {
  readonly link: RomLink;
  info: ChipInfo | undefined;
  private lines: ModemLines = { dtr: false, rts: false };

  constructor(
    port: BytePort,
    private readonly o: RomHostOptions,
  ) {
    this.link = new RomLink(port, o.timers);
  }

  private log(s: string): void {
    this.o.log?.(s);
  }

  /**
   * Reset into download mode (unless no-reset) and SYNC: src/rom/connect-machine.ts decides,
   * this performs its effects [loader.py connect, _connect_attempt, sync].
   */
  async connect(opts: ConnectOptions = {}): Promise<ChipInfo> {
    const cfg: ConnectConfig = {
      strategies: resetStrategies(opts.before ?? "default-reset"),
      attempts: opts.attempts ?? DEFAULT_CONNECT_ATTEMPTS,
      syncsPerAttempt: SYNCS_PER_ATTEMPT,
      syncTimeoutMs: SYNC_TIMEOUT_MS,
      retrySleepMs: SYNC_RETRY_SLEEP_MS,
      extraReplies: 7,
    };
    let step = connectTransition(cfg, { kind: "idle" }, { kind: "start", lines: this.lines });
    // Noise counted from the SYNC's send: a running app's log may answer it at once.
    let noiseMark = this.link.noiseBytes;
    for (;;) {
      let next: ConnectInput | undefined;
      for (const e of step.effects) {
        switch (e.kind) {
          case "set-lines":
            next = await this.setLines(e.lines);
            break;
          case "sleep":
            await this.link.sleep(e.ms);
            next = { kind: "slept" };
            break;
          case "flush-input":
            this.link.flushInput();
            noiseMark = this.link.noiseBytes;
            break;
          case "send-sync":
            this.link.port.write(slipEncode(req.sync()));
            break;
          case "await-sync":
            next = await this.awaitSync(e.ms, noiseMark);
            break;
          case "warn":
            this.log(`warning: ${e.message}`);
            break;
          case "done":
            if (!e.ok) {
              const noisy = step.state.kind === "failed" && step.state.noisy;
              throw new EspOtaError(
                "E_ROM_NO_ANSWER",
                `failed to connect to the ROM loader: ${noisy ? "serial data received, but no SYNC reply (is the chip running an app?)" : "no serial data received"}`,
                { attempts: cfg.attempts },
              );
            }
            this.info = await this.detect(opts.chip);
            return this.info;
        }
      }
      if (!next) throw new Error(`connect: no input after ${step.state.kind}`);
      step = connectTransition(cfg, step.state, next);
    }
  }

  private async setLines(lines: ModemLines): Promise<ConnectInput> {
    if (!this.o.setSignals) return { kind: "lines-unsupported" };
    try {
      await this.o.setSignals(lines);
      this.lines = lines;
      return { kind: "lines-set" };
    } catch {
      // A pty or an RFC2217 port has no modem lines (ENOTTY/EINVAL).
      return { kind: "lines-unsupported" };
    }
  }

  /** Frames until a SYNC response, or `ms` without one [loader.py command: others are skipped]. */
  private async awaitSync(ms: number, noiseBefore: number): Promise<ConnectInput> {
    const deadline = this.o.timers.now() + ms;
    for (;;) {
      const left = deadline - this.o.timers.now();
      const f = left > 0 ? await this.link.read(left) : undefined;
      if (!f) return { kind: "no-reply", noisy: this.link.noiseBytes > noiseBefore };
      const d = decodeResponse(f);
      if (d.ok && d.value.op === OP.SYNC) return { kind: "sync-reply" };
    }
  }

  /** GET_SECURITY_INFO, then the magic register or the chip id [loader.py detect_chip]. */
  private async detect(expected: SimChip | undefined): Promise<ChipInfo> {
    let sec: SecurityInfo | undefined;
    // esptool asks twice (once in detection, once when checking for Secure Download Mode).
    for (let i = 0; i < 2; i++) {
      try {
        const r = await this.link.command(req.securityInfo());
        const st = responseStatus(r, r.data.length - 4);
        if (st.ok) {
          const d = decodeSecurityInfo(st.data);
          if (d.ok) sec = d.value;
        }
      } catch (e) {
        if (!(e instanceof UnsupportedCommand)) throw e;
      }
    }
    const secureDownload =
      sec !== undefined && (sec.flags & SECURITY_FLAG.SECURE_DOWNLOAD_ENABLE) !== 0;
    let chip: RomChip | undefined;
    if (sec?.chipId !== undefined)
      chip = Object.values(ROM_CHIPS).find((c) => c.chipId === sec!.chipId);
    if (!chip && !secureDownload) {
      const magic = await this.readReg(CHIP_DETECT_MAGIC_REG);
      chip = Object.values(ROM_CHIPS).find((c) => c.magic === magic);
      if (!chip)
        throw new EspOtaError(
          "E_ROM_CHIP_MISMATCH",
          `unknown chip: magic 0x${magic.toString(16).padStart(8, "0")} at 0x40001000`,
        );
    }
    if (!chip)
      throw new EspOtaError(
        "E_ROM_CHIP_MISMATCH",
        `unknown chip id ${sec?.chipId} in GET_SECURITY_INFO`,
      );
    if (expected && chip.name !== expected)
      throw new EspOtaError(
        "E_ROM_CHIP_MISMATCH",
        `this chip is ${chip.description}, not ${ROM_CHIPS[expected].description}`,
        { detected: chip.name, expected },
      );
    const info: ChipInfo = {
      chip,
      secureDownload,
      securityInfo: sec,
      description: chip.description,
    };
    if (secureDownload) {
      this.log(`${chip.description} in Secure Download Mode: registers and flash are not readable`);
      return info;
    }
    if (chip.name === "esp32") await this.describeEsp32(info);
    else {
      const [hi, lo] = [await this.readReg(chip.macRegs[0]), await this.readReg(chip.macRegs[1])];
      info.mac = macFromWords(hi, lo);
    }
    return info;
  }

  /**
   * What esptool reads for its connect banner, in its order: package and revision (words 3 and 5,
   * APB_CTL_DATE), features (words 3, 4, 6), the crystal (UART_CLKDIV), the MAC (words 2, 1)
   * [targets/esp32.py get_chip_description, get_chip_features, get_crystal_freq, read_mac].
   */
  private async describeEsp32(info: ChipInfo): Promise<void> {
    const w = (n: number) => this.readReg(ESP32_EFUSE_BASE + 4 * n);
    const w3 = await w(3); // pkg version
    await w(3); // major revision, bit 0
    const w5 = await w(5); // major revision, bit 1
    const apb = await this.readReg(ESP32_APB_CTL_DATE); // major revision, bit 2
    await w(5); // minor revision
    await w(3); // features: single core, no BT
    await w(3);
    await w(3);
    await w(4); // VDD_SPI
    await w(6); // secure boot / encryption features
    const clkdiv = (await this.readReg(ESP32_UART_CLKDIV_REG)) & 0xfffff;
    const hi = await w(2);
    const lo = await w(1);
    const rev0 = (w3 >> 15) & 1;
    const rev1 = (w5 >> 20) & 1;
    const rev2 = (apb >>> 31) & 1;
    const major = rev0 === 0 ? 0 : rev1 === 0 ? 1 : rev2 === 0 ? 2 : 3;
    const minor = (w5 >> 24) & 3;
    const xtal = (this.link.port.baud * clkdiv) / 1e6;
    info.crystalMhz = xtal > 33 ? 40 : 26;
    info.description = `ESP32 (revision v${major}.${minor})`;
    info.mac = macFromWords(hi, lo);
  }

  async readReg(addr: number): Promise<number> {
    try {
      return (await this.link.check("READ_REG", req.readReg(addr))).value;
    } catch (e) {
      if (e instanceof UnsupportedCommand && this.info?.secureDownload)
        throw sdm("READ_REG is refused");
      throw e;
    }
  }

  async readMac(): Promise<Uint8Array> {
    const info = this.need();
    if (info.secureDownload || !info.mac) throw sdm("the MAC cannot be read");
    // read-mac reads the words again after the banner [esptool cmds.py read_mac].
    const [hi, lo] = [
      await this.readReg(info.chip.macRegs[0]),
      await this.readReg(info.chip.macRegs[1]),
    ];
    return macFromWords(hi, lo);
  }

  /**
   * CHANGE_BAUDRATE. The ESP32 ROM gets the rate scaled by its own crystal estimate (a work-
   * around for CK8M drift) [targets/esp32.py change_baud, get_rom_cal_crystal_freq]; then the
   * host switches, waits 50 ms and flushes.
   */
  async changeBaud(baud: number): Promise<void> {
    const info = this.need();
    let romBaud = baud;
    if (info.chip.name === "esp32" && !info.secureDownload) {
      const cali = ((await this.readReg(ESP32_RTCCALICFG1)) >>> 7) & 0x01ffffff;
      const ck8m = (await this.readReg(ESP32_EFUSE_BASE + 0x10)) & 0xff;
      const romFreq = (cali * 15625 * ck8m) / 40;
      const valid = romFreq > 33_000_000 ? 40_000_000 : 26_000_000;
      romBaud = Math.floor((baud * romFreq) / valid);
    }
    this.log(`changing baud rate to ${baud}`);
    await this.link.command(req.changeBaud(romBaud, 0));
    this.link.port.setBaud(baud);
    await this.link.sleep(50);
    this.link.flushInput();
  }

  /** SPI_ATTACH (ROM form, 8 bytes); esptool reads eFuse words 5 and 3 first (its --trace). */
  async spiAttach(): Promise<void> {
    const info = this.need();
    if (info.chip.name === "esp32" && !info.secureDownload) {
      await this.readReg(ESP32_EFUSE_BASE + 0x14);
      await this.readReg(ESP32_EFUSE_BASE + 0x0c);
    }
    await this.link.check("SPI_ATTACH", req.spiAttach(0));
  }

  async spiSetParams(flashSize: number): Promise<void> {
    await this.link.check("SPI_SET_PARAMS", req.spiSetParams(flashSize));
  }

  /** Flash encryption or secure boot on, from the eFuse registers. */
  async securityActive(): Promise<boolean> {
    const info = this.need();
    if (info.chip.name === "esp32") {
      const w6 = await this.readReg(ESP32_EFUSE_BASE + 0x18);
      if ((w6 & 0x30) !== 0) return true;
    } else if (info.securityInfo && (info.securityInfo.flags & SECURITY_FLAG.SECURE_BOOT_EN) !== 0)
      return true;
    return (await this.flashEncryptionEnabled()) === true;
  }

  /** Flash encryption on (an odd FLASH_CRYPT_CNT) as far as registers tell (ESP32). */
  async flashEncryptionEnabled(): Promise<boolean | undefined> {
    const info = this.need();
    if (info.secureDownload)
      return info.securityInfo ? popcount(info.securityInfo.flashCryptCnt) % 2 === 1 : undefined;
    if (info.chip.name !== "esp32")
      return info.securityInfo ? popcount(info.securityInfo.flashCryptCnt) % 2 === 1 : undefined;
    const w0 = await this.readReg(ESP32_EFUSE_BASE);
    return popcount((w0 >>> 20) & 0x7f) % 2 === 1;
  }

  /**
   * write-flash [esptool cmds.py write_flash, loader.py flash_begin/flash_block/flash_defl_*]:
   * pad to 4 bytes with 0xFF; ROM blocks of 0x400; compressed: a zlib stream (level 9) whose
   * FLASH_DEFL_BEGIN size is the uncompressed size rounded up to whole blocks; then SPI_FLASH_MD5
   * over the padded data. Under Secure Download Mode: no compression, no MD5 (both refused).
   */
  async writeFlash(
    offset: number,
    image: Uint8Array,
    opts: {
      compress?: boolean;
      verify?: boolean;
      encrypt?: boolean;
      onProgress?: (done: number, total: number) => void;
    } = {},
  ): Promise<{ written: number; compressed?: number; verified: boolean; md5: string }> {
    const info = this.need();
    let compress = opts.compress ?? false;
    let verify = opts.verify ?? true;
    if (info.secureDownload) {
      if (compress)
        this.log("Secure Download Mode: compressed writes are refused; writing uncompressed");
      if (verify)
        this.log("Secure Download Mode: MD5 is refused; the write cannot be verified here");
      compress = false;
      verify = false;
    }
    if (opts.encrypt && verify) {
      // The ROM's MD5 covers the ciphertext it wrote; esptool skips verification of encrypted
      // writes for the same reason.
      this.log("encrypted write: the flash holds ciphertext, so MD5 verification is skipped");
      verify = false;
    }
    if (offset % 4 !== 0)
      throw new EspOtaError("E_USAGE", `offset 0x${offset.toString(16)} is not 4-byte aligned`);
    // The ROM erases whole 4 KB sectors at FLASH_BEGIN, so esptool starts a ROM write at the
    // sector and prepends 0xFF up to the offset [esptool cmds.py write_flash: "It is not possible to write to not aligned addresses without stub"]: the
    // bytes before the offset in that sector are erased either way; this says so in the frames.
    const lead = offset % 0x1000;
    if (lead !== 0) {
      this.log(
        `offset 0x${offset.toString(16)} is not 4 KB-aligned: starting at the sector, 0x${lead.toString(16)} bytes before it are erased`,
      );
      const aligned = new Uint8Array(lead + image.length).fill(0xff);
      aligned.set(image, lead);
      image = aligned;
      offset -= lead;
    }
    const padded = padTo(image, 4);
    const md5 = createHash("md5").update(padded).digest("hex");
    const bs = ROM_FLASH_WRITE_SIZE;
    const enc = info.chip.flashBeginEncryptWord ? (opts.encrypt ?? false) : undefined;
    let compressedLen: number | undefined;
    if (compress) {
      // pako, not node:zlib: pako reproduces reference zlib's output byte for byte, as Python's
      // zlib.compress(data, 9) in esptool makes it (checked against the traces); Node's bundled
      // zlib is Chromium's fork, whose level-9 stream differs (134 bytes for pt_brief.bin, not 130).
      const z = deflate(padded, { level: 9 });
      compressedLen = z.length;
      const blocks = Math.ceil(z.length / bs);
      const writeSize = Math.ceil(padded.length / bs) * bs;
      await this.link.check(
        "FLASH_DEFL_BEGIN",
        req.flashDeflBegin(writeSize, blocks, bs, offset, enc),
        {
          timeoutMs: timeoutPerMb(ERASE_WRITE_MS_PER_MB, writeSize),
        },
      );
      for (let seq = 0; seq < blocks; seq++) {
        const block = z.subarray(seq * bs, (seq + 1) * bs);
        await this.link.check("FLASH_DEFL_DATA", req.flashData(OP.FLASH_DEFL_DATA, seq, block), {
          timeoutMs: timeoutPerMb(ERASE_WRITE_MS_PER_MB, bs * 4),
        });
        opts.onProgress?.(
          Math.min(padded.length, (seq + 1) * bs * (padded.length / z.length)),
          padded.length,
        );
      }
    } else {
      const blocks = Math.ceil(padded.length / bs);
      await this.link.check("FLASH_BEGIN", req.flashBegin(padded.length, blocks, bs, offset, enc), {
        timeoutMs: timeoutPerMb(ERASE_WRITE_MS_PER_MB, padded.length),
      });
      for (let seq = 0; seq < blocks; seq++) {
        const block = new Uint8Array(bs).fill(0xff);
        block.set(padded.subarray(seq * bs, (seq + 1) * bs));
        await this.link.check("FLASH_DATA", req.flashData(OP.FLASH_DATA, seq, block));
        opts.onProgress?.(Math.min(padded.length, (seq + 1) * bs), padded.length);
      }
    }
    if (verify) {
      const r = await this.link.check("SPI_FLASH_MD5", req.md5(offset, padded.length), {
        dataLen: 32,
        timeoutMs: timeoutPerMb(MD5_MS_PER_MB, padded.length),
      });
      const got = new TextDecoder().decode(r.data);
      if (got !== md5)
        throw new EspOtaError(
          "E_ROM_VERIFY",
          `MD5 of flash at 0x${offset.toString(16)} is ${got}, expected ${md5}`,
          {
            offset,
          },
        );
    }
    return { written: padded.length, compressed: compressedLen, verified: verify, md5 };
  }

  /**
   * Erase a 4 KB-aligned region. The ROM has no ERASE_REGION (a stub command); FLASH_BEGIN with
   * no blocks erases the range it names, which is how esptool erases in Secure Download Mode
   * (esp32-facts §6.3).
   */
  async eraseRegion(offset: number, size: number, opts: { force?: boolean } = {}): Promise<void> {
    const info = this.need();
    if (offset % 0x1000 !== 0 || size % 0x1000 !== 0 || size === 0)
      throw new EspOtaError(
        "E_USAGE",
        "erase-region: offset and size must be multiples of 4096 (0x1000)",
      );
    // esptool refuses to erase with flash encryption or secure boot on, unless forced (an
    // erased bootloader or partition table cannot be replaced by plaintext) [cmds.py
    // erase_region]; under Secure Download Mode it cannot tell, and does not check.
    if (!opts.force && !info.secureDownload && (await this.securityActive()))
      throw new EspOtaError(
        "E_ROM_REFUSED",
        "active security features detected (flash encryption or secure boot): erasing is refused as a safety measure; --force overrides",
      );
    // The ROM assumes 2 MB until told; esptool sets the size first (16 MB under SDM) so that
    // an erase past 2 MB is not refused [cmds.py erase_region, _set_flash_parameters].
    if (info.secureDownload) await this.spiSetParams(16 * 1024 * 1024);
    const enc = info.chip.flashBeginEncryptWord ? false : undefined;
    await this.link.check(
      "FLASH_BEGIN",
      req.flashBegin(size, 0, ROM_FLASH_WRITE_SIZE, offset, enc),
      {
        timeoutMs: timeoutPerMb(ERASE_WRITE_MS_PER_MB, size),
      },
    );
  }

  /** `--after soft-reset` with the ROM: FLASH_BEGIN(0,0) then FLASH_END(run user code). */
  async softReset(): Promise<void> {
    const info = this.need();
    const enc = info.chip.flashBeginEncryptWord ? false : undefined;
    await this.link.check("FLASH_BEGIN", req.flashBegin(0, 0, ROM_FLASH_WRITE_SIZE, 0, enc));
    await this.link.check("FLASH_END", req.flashEnd(true));
  }

  /** `--after hard-reset`: pulse EN through RTS; without modem lines, nothing can be done. */
  async hardReset(): Promise<boolean> {
    if (!this.o.setSignals) return false;
    this.lines = await playReset(
      hardReset(),
      this.o.setSignals,
      (ms) => this.link.sleep(ms),
      this.lines,
    );
    return true;
  }

  private need(): ChipInfo {
    if (!this.info) throw new Error("RomHost: connect() first");
    return this.info;
  }
}

function sdm(what: string): EspOtaError {
  return new EspOtaError("E_ROM_SECURE_DOWNLOAD", `Secure Download Mode: ${what}`);
}

function padTo(b: Uint8Array, n: number): Uint8Array {
  if (b.length % n === 0) return b;
  const out = new Uint8Array(b.length + (n - (b.length % n))).fill(0xff);
  out.set(b);
  return out;
}

function popcount(v: number): number {
  let n = 0;
  for (let x = v >>> 0; x; x &= x - 1) n++;
  return n;
}

export { formatMac };
