/**
 * The simulated chip's ROM download mode: esptool's serial protocol (docs/rom-protocol.md) on top
 * of a SimDevice's flash and eFuses, so esptool itself, or `esp-ota rom`, can flash it.
 *
 * `RomLoaderCore.handle` is the protocol: one request frame in, response frames out, no I/O. The
 * ROM writes what it is given, raw (esp32-facts §4: the ROM encrypts a write only when the
 * FLASH_BEGIN encrypt word asks for it, on chips whose ROM takes that word, and never when
 * DIS_DOWNLOAD_MANUAL_ENCRYPT is burned); an ESP32 ROM always writes raw. `attachRomLoader` is the
 * thin edge: SLIP over a BytePort.
 *
 * eFuse-driven modes (esp32-facts §6.3): UART_DOWNLOAD_DIS / DIS_DOWNLOAD_MODE burned, the chip
 * never answers; ENABLE_SECURITY_DOWNLOAD burned (S2 and later), Secure Download Mode accepts only
 * SYNC, SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE, FLASH_BEGIN/DATA/END and GET_SECURITY_INFO,
 * and refuses the rest (no register reads, no MD5, no reads, no compressed writes).
 *
 * Not modelled: the flash's busy time delaying answers (the ROM answers at once here; erase and
 * write time are still spent on the device's clock), the SPI peripheral behind WRITE_REG /
 * READ_REG (esptool's flash-id probe reads 0, as from a chip with no readable id), and the
 * progressive write of FLASH_DEFL_DATA (the stream is inflated when its last block arrives).
 */
import { createHash } from "node:crypto";
import { inflateSync } from "node:zlib";
import { isEspOtaError } from "../errors.js";
import {
  CHIP_DETECT_MAGIC_REG,
  ESP32_APB_CTL_DATE,
  ESP32_EFUSE_BASE,
  ESP32_UART_CLKDIV_REG,
  ESP32S3_EFUSE_BASE,
  macToWords,
  ROM_CHIPS,
  type RomChip,
} from "../rom/chips.js";
import {
  checksum as dataChecksum,
  decodeRequest,
  encodeResponse,
  encodeSecurityInfo,
  OP,
  ROM_ERROR,
  readU32,
  SECURITY_FLAG,
  SYNC_DATA,
} from "../rom/protocol.js";
import { SlipDecoder, slipEncode } from "../rom/slip.js";
import type { BytePort } from "../uart/port.js";
import type { SimDevice } from "./device.js";
import { SECTOR_SIZE } from "./flash.js";

/** Commands Secure Download Mode accepts [esptool docs/en/troubleshooting.rst, sdm-limitations]. */
const SDM_ALLOWED: ReadonlySet<number> = new Set([
  OP.SYNC,
  OP.SPI_ATTACH,
  OP.SPI_SET_PARAMS,
  OP.CHANGE_BAUDRATE,
  OP.FLASH_BEGIN,
  OP.FLASH_DATA,
  OP.FLASH_END,
  OP.GET_SECURITY_INFO,
]);

/** SYNC replies the ROM sends: esptool reads 1 and then drains 7 more [loader.py sync]. */
const SYNC_REPLIES = 8;
/** The ROM's default flash size until SPI_SET_PARAMS (esp32-facts §6.2). */
const ROM_DEFAULT_FLASH_SIZE = 2 * 1024 * 1024;
/** The ROM's SPI_FLASH_MD5 and FLASH_BEGIN use 24-bit addresses (esp32-facts §6.2). */
const ROM_ADDRESS_LIMIT = 16 * 1024 * 1024;

const ESP32_RTCCALICFG1 = 0x3ff5f06c;
const CK8M_FREQ = 0x80;
const RTC_CALI_VALUE = 800;

interface Write {
  kind: "plain" | "deflate";
  offset: number;
  eraseSize: number;
  blocks: number;
  blockSize: number;
  encrypt: boolean;
  nextSeq: number;
  compressed: Uint8Array[];
}

export type RomExit = { kind: "run-user-code" } | { kind: "reboot" };

export interface RomResult {
  /** Response payloads, in order (unescaped; SLIP-encode to send). */
  replies: Uint8Array[];
  /** After the replies are sent: switch the UART to this rate. */
  baud?: number;
  /** After the replies are sent: the ROM leaves the loader. */
  exit?: RomExit;
}

export class RomLoaderCore {
  readonly chip: RomChip;
  private attached = false;
  private flashSize = ROM_DEFAULT_FLASH_SIZE;
  private write: Write | undefined;
  /** UART rate the ROM runs at (for UART_CLKDIV). */
  baud: number;

  constructor(
    readonly dev: SimDevice,
    baud = 115200,
  ) {
    this.chip = ROM_CHIPS[dev.spec.chip];
    this.baud = baud;
  }

  /** The chip answers at all (UART_DOWNLOAD_DIS / DIS_DOWNLOAD_MODE not burned). */
  get listening(): boolean {
    return !this.dev.efuses.downloadModeDisabled;
  }

  get secureDownload(): boolean {
    return this.dev.efuses.secureDownloadMode;
  }

  handle(frame: Uint8Array): RomResult {
    if (!this.listening) return { replies: [] };
    try {
      return this.dispatch(frame);
    } catch (e) {
      // A scheduled power cut in a flash operation: the chip is off and answers nothing.
      if (isEspOtaError(e) && e.code === "E_SIM_POWER_CUT") return { replies: [] };
      // Any other refusal of the flash model (range, alignment) is the ROM's flash write error.
      if (isEspOtaError(e)) return { replies: [this.fail(frame[1] ?? 0, ROM_ERROR.FLASH_WRITE)] };
      throw e;
    }
  }

  private dispatch(frame: Uint8Array): RomResult {
    const d = decodeRequest(frame);
    // A frame that is not a request: the ROM answers with an invalid-message status, op echoed.
    if (!d.ok) return { replies: [this.fail(frame[1] ?? 0, ROM_ERROR.INVALID_MESSAGE)] };
    const { op, data } = d.value;
    if (this.secureDownload && !SDM_ALLOWED.has(op))
      return { replies: [this.fail(op, ROM_ERROR.INVALID_MESSAGE)] };
    switch (op) {
      case OP.SYNC:
        if (data.length !== SYNC_DATA.length || !data.every((b, i) => b === SYNC_DATA[i]))
          return { replies: [this.fail(op, ROM_ERROR.INVALID_MESSAGE)] };
        return {
          replies: Array.from({ length: SYNC_REPLIES }, () => this.ok(op, readU32(SYNC_DATA, 0))),
        };
      case OP.READ_REG:
        if (data.length !== 4) return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
        return this.one(this.ok(op, this.readReg(readU32(data, 0))));
      case OP.WRITE_REG:
        // Accepted, not modelled: esptool's SPI-peripheral pokes; a read-back gives 0.
        if (data.length % 16 !== 0 || data.length === 0)
          return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
        return this.one(this.ok(op));
      case OP.SPI_ATTACH:
        if (data.length !== 8 && data.length !== 4)
          return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
        this.attached = true;
        return this.one(this.ok(op));
      case OP.SPI_SET_PARAMS: {
        if (data.length !== 24) return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
        const total = readU32(data, 4);
        // The ROM takes the size on trust (it cannot see the chip); past the real chip, the
        // flash operations themselves fail (0x08 here).
        if (total === 0 || total > ROM_ADDRESS_LIMIT)
          return this.one(this.fail(op, ROM_ERROR.INVALID_PARAMETER));
        this.flashSize = total;
        return this.one(this.ok(op));
      }
      case OP.CHANGE_BAUDRATE: {
        if (data.length !== 8) return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
        const baud = readU32(data, 0);
        if (baud < 300 || baud > 5_000_000)
          return this.one(this.fail(op, ROM_ERROR.INVALID_PARAMETER));
        this.baud = baud;
        return { replies: [this.ok(op)], baud };
      }
      case OP.FLASH_BEGIN:
      case OP.FLASH_DEFL_BEGIN:
        return this.one(this.begin(op, data));
      case OP.FLASH_DATA:
      case OP.FLASH_DEFL_DATA:
        return this.one(this.data(op, d.value.checksum, data));
      case OP.FLASH_END:
      case OP.FLASH_DEFL_END: {
        if (data.length !== 4) return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
        this.write = undefined;
        const run = readU32(data, 0) === 1;
        return {
          replies: [this.ok(op)],
          exit: run ? { kind: "run-user-code" } : { kind: "reboot" },
        };
      }
      case OP.SPI_FLASH_MD5:
        return this.one(this.md5(data));
      case OP.READ_FLASH_SLOW:
        return this.one(this.readSlow(data));
      case OP.GET_SECURITY_INFO:
        if (!this.chip.hasSecurityInfo) return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
        return this.one(this.ok(op, 0, encodeSecurityInfo(this.securityInfo())));
      default:
        // MEM_* (stub upload), and the stub-only ERASE_FLASH/ERASE_REGION/READ_FLASH: not here.
        return this.one(this.fail(op, ROM_ERROR.INVALID_MESSAGE));
    }
  }

  /** Register reads esptool makes: chip detection, eFuse words, the UART divider. */
  readReg(addr: number): number {
    const e = this.dev.efuses;
    if (addr === CHIP_DETECT_MAGIC_REG) return this.chip.magic ?? 0;
    const [hiReg, loReg] = this.chip.macRegs;
    const [hi, lo] = macToWords(e.mac);
    if (addr === hiReg) return hi;
    if (addr === loReg) return lo;
    if (this.chip.name === "esp32") {
      // Word 0: FLASH_CRYPT_CNT bits 20–26 (esp32.py EFUSE_SPI_BOOT_CRYPT_CNT_MASK).
      if (addr === ESP32_EFUSE_BASE) return (e.flashCryptCnt << 20) >>> 0;
      // Word 5: FLASH_CRYPT_CONFIG bits 28–31 (esp32.py get_flash_crypt_config).
      if (addr === ESP32_EFUSE_BASE + 0x14) return (e.flashCryptConfig << 28) >>> 0;
      // Word 6: ABS_DONE_0 bit 4, ABS_DONE_1 bit 5, DISABLE_DL_ENCRYPT bit 7.
      if (addr === ESP32_EFUSE_BASE + 0x18)
        return (
          (e.secureBootVersion === 1 ? 1 << 4 : 0) |
          (e.secureBootVersion === 2 ? 1 << 5 : 0) |
          (e.flashEncryptionMode === "release" ? 1 << 7 : 0)
        );
      // 40 MHz crystal: the ROM's divider for the current rate (esp32.py get_crystal_freq).
      if (addr === ESP32_UART_CLKDIV_REG) return Math.round(40_000_000 / this.baud);
      if (addr === ESP32_APB_CTL_DATE) return 0;
      // Word 4 bits 0–7: EFUSE_RD_CK8M_FREQ; RTCCALICFG1: the ROM's RTC calibration. Chosen so
      // that esptool's estimate of the ROM's crystal (esp32.py get_rom_cal_crystal_freq:
      // cali × 15625 × ck8m / 40) is exactly 40 MHz and CHANGE_BAUDRATE carries the rate asked.
      if (addr === ESP32_EFUSE_BASE + 0x10) return CK8M_FREQ;
      if (addr === ESP32_RTCCALICFG1) return RTC_CALI_VALUE << 7;
    }
    if (this.chip.name === "esp32s3") {
      // SPI_BOOT_CRYPT_CNT bits 18–20 of 0x60007034; SECURE_BOOT_EN bit 20 of 0x60007038
      // (esp32s3.py EFUSE_SPI_BOOT_CRYPT_CNT_REG/_MASK, EFUSE_SECURE_BOOT_EN_REG/_MASK).
      if (addr === ESP32S3_EFUSE_BASE + 0x34) return (e.flashCryptCnt << 18) >>> 0;
      if (addr === ESP32S3_EFUSE_BASE + 0x38) return e.secureBootVersion === 2 ? 1 << 20 : 0;
    }
    return 0;
  }

  securityInfo() {
    const e = this.dev.efuses;
    const revoked = e.sbv2Revoked;
    const flags =
      (e.secureBootVersion !== 0 ? SECURITY_FLAG.SECURE_BOOT_EN : 0) |
      (e.secureDownloadMode ? SECURITY_FLAG.SECURE_DOWNLOAD_ENABLE : 0) |
      (revoked[0] ? SECURITY_FLAG.SECURE_BOOT_KEY_REVOKE0 : 0) |
      (revoked[1] ? SECURITY_FLAG.SECURE_BOOT_KEY_REVOKE1 : 0) |
      (revoked[2] ? SECURITY_FLAG.SECURE_BOOT_KEY_REVOKE2 : 0);
    return {
      flags,
      flashCryptCnt: e.flashCryptCnt,
      keyPurposes: [0, 0, 0, 0, 0, 0, 0],
      chipId: this.chip.chipId,
      apiVersion: 0,
    };
  }

  private begin(op: number, data: Uint8Array): Uint8Array {
    const words = data.length / 4;
    // ESP32 ROM: 4 words; later ROMs: 5, the last the encrypt flag [loader.py flash_begin].
    if (words !== (this.chip.flashBeginEncryptWord ? 5 : 4) || data.length % 4 !== 0)
      return this.fail(op, ROM_ERROR.INVALID_MESSAGE);
    if (!this.attached) return this.fail(op, ROM_ERROR.FAILED);
    const size = readU32(data, 0);
    const blocks = readU32(data, 4);
    const blockSize = readU32(data, 8);
    const offset = readU32(data, 12);
    const encrypt = words === 5 && readU32(data, 16) === 1;
    if (blockSize === 0 || blockSize > 0x4000) return this.fail(op, ROM_ERROR.INVALID_PARAMETER);
    if (offset >= ROM_ADDRESS_LIMIT || offset + size > this.flashSize)
      return this.fail(op, ROM_ERROR.INVALID_PARAMETER);
    if (op === OP.FLASH_DEFL_BEGIN && blocks * blockSize > this.flashSize)
      return this.fail(op, ROM_ERROR.INVALID_PARAMETER);
    if (encrypt) {
      const e = this.dev.efuses;
      if (!e.flashEncryptionKey || e.flashEncryptionMode === "release")
        return this.fail(op, ROM_ERROR.FAILED);
      // Encrypted writes go in 16-byte units at 16-byte offsets (esp_flash_write_encrypted).
      if (offset % 16 !== 0 || blockSize % 16 !== 0)
        return this.fail(op, ROM_ERROR.INVALID_PARAMETER);
    }
    // The ROM erases the whole range at FLASH_BEGIN (esp32-facts §6.2), in 4 KB sectors.
    const start = offset - (offset % SECTOR_SIZE);
    const end = Math.min(
      this.dev.flash.size,
      Math.ceil((offset + size) / SECTOR_SIZE) * SECTOR_SIZE,
    );
    if (end > start) this.dev.flash.eraseRange(start, end - start);
    this.write = {
      kind: op === OP.FLASH_BEGIN ? "plain" : "deflate",
      offset,
      eraseSize: size,
      blocks,
      blockSize,
      encrypt,
      nextSeq: 0,
      compressed: [],
    };
    return this.ok(op);
  }

  private data(op: number, chk: number, data: Uint8Array): Uint8Array {
    const w = this.write;
    if (!w || (op === OP.FLASH_DATA) !== (w.kind === "plain"))
      return this.fail(op, ROM_ERROR.FAILED);
    if (data.length < 16) return this.fail(op, ROM_ERROR.INVALID_MESSAGE);
    const len = readU32(data, 0);
    const seq = readU32(data, 4);
    const block = data.subarray(16);
    if (len !== block.length) return this.fail(op, ROM_ERROR.INVALID_MESSAGE);
    if (dataChecksum(block) !== chk) return this.fail(op, ROM_ERROR.CHECKSUM);
    if (seq !== w.nextSeq || seq >= w.blocks) return this.fail(op, ROM_ERROR.FAILED);
    w.nextSeq++;
    if (w.kind === "plain") {
      if (block.length !== w.blockSize) return this.fail(op, ROM_ERROR.INVALID_MESSAGE);
      const at = w.offset + seq * w.blockSize;
      // The host pads the last block with 0xFF past the image; only what fits the flash is kept.
      const n = Math.max(0, Math.min(block.length, this.dev.flash.size - at));
      this.program(at, block.subarray(0, n), w.encrypt);
      return this.ok(op);
    }
    w.compressed.push(Uint8Array.from(block));
    if (seq !== w.blocks - 1) return this.ok(op);
    let plain: Uint8Array;
    try {
      plain = new Uint8Array(
        inflateSync(Buffer.concat(w.compressed), { maxOutputLength: w.eraseSize }),
      );
    } catch {
      return this.fail(op, ROM_ERROR.DEFLATE);
    }
    w.compressed = [];
    this.program(w.offset, plain, w.encrypt);
    return this.ok(op);
  }

  private program(at: number, bytes: Uint8Array, encrypt: boolean): void {
    if (bytes.length === 0) return;
    if (encrypt) this.dev.spi.writeEncrypted(at, bytes);
    else this.dev.flash.program(at, bytes);
  }

  private md5(data: Uint8Array): Uint8Array {
    const op = OP.SPI_FLASH_MD5;
    if (data.length !== 16) return this.fail(op, ROM_ERROR.INVALID_MESSAGE);
    if (!this.attached) return this.fail(op, ROM_ERROR.FAILED);
    const addr = readU32(data, 0);
    const size = readU32(data, 4);
    if (addr + size > this.flashSize) return this.fail(op, ROM_ERROR.INVALID_PARAMETER);
    const hex = createHash("md5").update(this.dev.flash.read(addr, size)).digest("hex");
    // The ROM answers 32 ASCII hex digits; the stub 16 raw bytes [loader.py flash_md5sum].
    return this.ok(op, 0, new TextEncoder().encode(hex));
  }

  private readSlow(data: Uint8Array): Uint8Array {
    const op = OP.READ_FLASH_SLOW;
    if (!this.chip.readFlashSlow) return this.fail(op, ROM_ERROR.INVALID_MESSAGE);
    if (data.length !== 8) return this.fail(op, ROM_ERROR.INVALID_MESSAGE);
    const addr = readU32(data, 0);
    const len = readU32(data, 4);
    if (len > 64) return this.fail(op, ROM_ERROR.FLASH_READ_LENGTH);
    if (addr + 64 > this.flashSize) return this.fail(op, ROM_ERROR.INVALID_PARAMETER);
    // Always 64 bytes; the host keeps the first `len` [loader.py read_flash_slow].
    return this.ok(op, 0, this.dev.flash.read(addr, 64));
  }

  private one(reply: Uint8Array): RomResult {
    return { replies: [reply] };
  }

  private ok(op: number, value = 0, body: Uint8Array = new Uint8Array(0)): Uint8Array {
    const d = new Uint8Array(body.length + 4);
    d.set(body);
    return encodeResponse(op, value, d);
  }

  private fail(op: number, error: number): Uint8Array {
    return encodeResponse(op, 0, Uint8Array.from([1, error, 0, 0]));
  }
}

export interface AttachedRomLoader {
  readonly core: RomLoaderCore;
  readonly decoder: SlipDecoder;
  /** Stop answering (the port stays open for whoever takes it next). */
  detach(): void;
}

export interface AttachOptions {
  /** Print the ROM's download-mode banner first (a real chip does, at reset). Default false. */
  banner?: boolean;
  /** The loader left download mode (FLASH_END); the caller boots the app. */
  onExit?: (exit: RomExit) => void;
}

/** SLIP over a BytePort: the ROM side of a link. */
export function attachRomLoader(
  dev: SimDevice,
  port: BytePort,
  opts: AttachOptions = {},
): AttachedRomLoader {
  dev.flash.powerOn();
  const core = new RomLoaderCore(dev, port.baud);
  const decoder = new SlipDecoder();
  let live = true;
  if (opts.banner && core.listening) {
    // What each chip prints when GPIO0 is low at reset (its boot-mode line, then the prompt).
    const mode =
      core.chip.name === "esp32"
        ? "rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
        : "rst:0x1 (POWERON),boot:0x0 (DOWNLOAD(USB/UART0))";
    port.write(new TextEncoder().encode(`${mode}\r\nwaiting for download\r\n`));
  }
  port.onData((bytes) => {
    if (!live) return;
    for (const frame of decoder.push(bytes)) {
      const r = core.handle(frame);
      for (const reply of r.replies) port.write(slipEncode(reply));
      if (r.baud !== undefined) port.setBaud(r.baud);
      if (r.exit) {
        live = false;
        opts.onExit?.(r.exit);
        return;
      }
    }
  });
  return {
    core,
    decoder,
    detach() {
      live = false;
    },
  };
}
