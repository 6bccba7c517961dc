/**
 * The ESP ROM serial loader's packets (docs/rom-protocol.md), as esptool sends and reads them.
 * Pure: bytes in, plain objects out. Facts and their upstream files:
 *  - request `00, op, u16 len, u32 checksum, data`; response `01, op, u16 len, u32 value, data`
 *    [esptool v5.3.1 `esptool/loader.py` ESPLoader.command, `struct.pack("<BBHI", ...)`];
 *  - checksum = 0xEF XOR the data bytes after the 16-byte block header, sent only with
 *    FLASH_DATA / FLASH_DEFL_DATA / MEM_DATA [loader.py ESPLoader.checksum, flash_block];
 *  - the ROM (every chip but the ESP8266) ends a response with 4 status bytes {status, error,
 *    0, 0}; the stub with 2 [loader.py check_command, STATUS_BYTES_LENGTH and its comment];
 *  - op codes [loader.py ESPLoader.ESP_CMDS / ESP_* constants].
 */

export const OP = {
  FLASH_BEGIN: 0x02,
  FLASH_DATA: 0x03,
  FLASH_END: 0x04,
  MEM_BEGIN: 0x05,
  MEM_END: 0x06,
  MEM_DATA: 0x07,
  SYNC: 0x08,
  WRITE_REG: 0x09,
  READ_REG: 0x0a,
  SPI_SET_PARAMS: 0x0b,
  SPI_ATTACH: 0x0d,
  READ_FLASH_SLOW: 0x0e,
  CHANGE_BAUDRATE: 0x0f,
  FLASH_DEFL_BEGIN: 0x10,
  FLASH_DEFL_DATA: 0x11,
  FLASH_DEFL_END: 0x12,
  SPI_FLASH_MD5: 0x13,
  GET_SECURITY_INFO: 0x14,
  // Stub-only [loader.py ESP_ERASE_FLASH .. ESP_RUN_USER_CODE]: the ROM answers 0x05.
  ERASE_FLASH: 0xd0,
  ERASE_REGION: 0xd1,
  READ_FLASH: 0xd2,
  RUN_USER_CODE: 0xd3,
} as const;
export type OpName = keyof typeof OP;

export function opName(op: number): string {
  for (const [k, v] of Object.entries(OP)) if (v === op) return k;
  return `0x${op.toString(16).padStart(2, "0")}`;
}

/**
 * The ROM's error byte (the second status byte) [esptool v5.3.1
 * `docs/en/advanced-topics/serial-protocol.rst`, "ROM loader errors"].
 */
export const ROM_ERROR = {
  UNDEFINED: 0x00,
  INVALID_INPUT: 0x01,
  MALLOC: 0x02,
  SEND: 0x03,
  RECEIVE: 0x04,
  /** "The format of the received message is invalid": also an unsupported or refused command. */
  INVALID_MESSAGE: 0x05,
  /** "Message is ok, but the running result is wrong". */
  FAILED: 0x06,
  CHECKSUM: 0x07,
  FLASH_WRITE: 0x08,
  FLASH_READ: 0x09,
  FLASH_READ_LENGTH: 0x0a,
  DEFLATE: 0x0b,
  DEFLATE_ADLER32: 0x0c,
  DEFLATE_PARAM: 0x0d,
  RAM_SIZE: 0x0e,
  RAM_ADDRESS: 0x0f,
  INVALID_PARAMETER: 0x64,
  INVALID_FORMAT: 0x65,
  DESCRIPTION_TOO_LONG: 0x66,
} as const;

export function romErrorName(code: number): string {
  for (const [k, v] of Object.entries(ROM_ERROR)) if (v === code) return k;
  return `0x${code.toString(16).padStart(2, "0")}`;
}

/** Block size of FLASH_DATA with the ROM [loader.py ESPLoader.FLASH_WRITE_SIZE = 0x400]. */
export const ROM_FLASH_WRITE_SIZE = 0x400;
/** SYNC data [loader.py ESPLoader.sync: b"\x07\x07\x12\x20" + 32 * b"\x55"]. */
export const SYNC_DATA = Uint8Array.from([0x07, 0x07, 0x12, 0x20, ...new Array(32).fill(0x55)]);
/** Initial value of the data checksum [loader.py ESPLoader.ESP_CHECKSUM_MAGIC]. */
export const CHECKSUM_MAGIC = 0xef;
/** Number of status bytes the ROM appends (ESP32 and later; the ESP8266 ROM and stub send 2). */
export const ROM_STATUS_LEN = 4;

export function checksum(data: Uint8Array, state = CHECKSUM_MAGIC): number {
  let s = state;
  for (const b of data) s ^= b;
  return s;
}

export interface Request {
  op: number;
  checksum: number;
  data: Uint8Array;
}

export interface Response {
  op: number;
  value: number;
  /** Everything after the 8-byte header, status bytes included. */
  data: Uint8Array;
}

const u32s = (...words: number[]): Uint8Array => {
  const out = new Uint8Array(words.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < words.length; i++) v.setUint32(i * 4, words[i]! >>> 0, true);
  return out;
};
export const u32le = u32s;

export function readU32(b: Uint8Array, off: number): number {
  return ((b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>>
    0) as number;
}

export function encodeRequest(
  op: number,
  data: Uint8Array = new Uint8Array(0),
  chk = 0,
): Uint8Array {
  if (data.length > 0xffff)
    throw new RangeError(`request data is ${data.length} bytes (max 65535)`);
  const out = new Uint8Array(8 + data.length);
  out[0] = 0x00;
  out[1] = op;
  out[2] = data.length & 0xff;
  out[3] = data.length >> 8;
  out.set(u32s(chk), 4);
  out.set(data, 8);
  return out;
}

export function encodeResponse(op: number, value: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + data.length);
  out[0] = 0x01;
  out[1] = op;
  out[2] = data.length & 0xff;
  out[3] = data.length >> 8;
  out.set(u32s(value), 4);
  out.set(data, 8);
  return out;
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

/** A request as the ROM reads it; a frame that is not one is a value, not a throw. */
export function decodeRequest(frame: Uint8Array): Decoded<Request> {
  if (frame.length < 8) return { ok: false, reason: `request is ${frame.length} bytes (< 8)` };
  if (frame[0] !== 0x00) return { ok: false, reason: `direction byte 0x${frame[0]!.toString(16)}` };
  const len = frame[2]! | (frame[3]! << 8);
  if (len !== frame.length - 8)
    return { ok: false, reason: `length field ${len}, data ${frame.length - 8}` };
  return { ok: true, value: { op: frame[1]!, checksum: readU32(frame, 4), data: frame.slice(8) } };
}

/** A response as esptool reads it [loader.py command: len < 8 or resp != 1 is skipped]. */
export function decodeResponse(frame: Uint8Array): Decoded<Response> {
  if (frame.length < 8) return { ok: false, reason: `response is ${frame.length} bytes (< 8)` };
  if (frame[0] !== 0x01) return { ok: false, reason: `direction byte 0x${frame[0]!.toString(16)}` };
  return { ok: true, value: { op: frame[1]!, value: readU32(frame, 4), data: frame.slice(8) } };
}

/** Status of a ROM response: the 2 bytes after `dataLen` bytes of result [check_command]. */
export function responseStatus(
  r: Response,
  dataLen = 0,
): { ok: true; data: Uint8Array } | { ok: false; error: number } {
  if (r.data.length < dataLen + 2) {
    // esptool: too short for data + status, so the first two bytes are the status.
    const st = r.data[0] ?? 0;
    return st !== 0 ? { ok: false, error: r.data[1] ?? 0 } : { ok: false, error: -1 };
  }
  if (r.data[dataLen] !== 0) return { ok: false, error: r.data[dataLen + 1]! };
  return { ok: true, data: r.data.subarray(0, dataLen) };
}

// --- request data, one builder per command, as esptool's methods build them -----------------

export const req = {
  sync: () => encodeRequest(OP.SYNC, SYNC_DATA),
  readReg: (addr: number) => encodeRequest(OP.READ_REG, u32s(addr)),
  /** [loader.py write_reg: addr, value, mask, delay_us] */
  writeReg: (addr: number, value: number, mask = 0xffffffff, delayUs = 0) =>
    encodeRequest(OP.WRITE_REG, u32s(addr, value, mask, delayUs)),
  /** ROM form: u32 hspi_arg + is_legacy u8 + 3 zero bytes [loader.py flash_spi_attach]. */
  spiAttach: (hspiArg = 0) => encodeRequest(OP.SPI_ATTACH, u32s(hspiArg, 0)),
  /** [loader.py flash_set_parameters: id 0, total, 64K block, 4K sector, 256 page, 0xFFFF] */
  spiSetParams: (totalSize: number) =>
    encodeRequest(OP.SPI_SET_PARAMS, u32s(0, totalSize, 0x10000, 0x1000, 0x100, 0xffff)),
  /** [targets/esp32.py change_baud / loader.py change_baud: new, old (0 for the ROM)] */
  changeBaud: (baud: number, old = 0) => encodeRequest(OP.CHANGE_BAUDRATE, u32s(baud, old)),
  /** ESP32 ROM: 4 words; later chips' ROMs a 5th, the encrypt flag [loader.py flash_begin]. */
  flashBegin: (
    erase: number,
    blocks: number,
    blockSize: number,
    offset: number,
    encrypted?: boolean,
  ) =>
    encodeRequest(
      OP.FLASH_BEGIN,
      encrypted === undefined
        ? u32s(erase, blocks, blockSize, offset)
        : u32s(erase, blocks, blockSize, offset, encrypted ? 1 : 0),
    ),
  flashDeflBegin: (
    size: number,
    blocks: number,
    blockSize: number,
    offset: number,
    encrypted?: boolean,
  ) =>
    encodeRequest(
      OP.FLASH_DEFL_BEGIN,
      encrypted === undefined
        ? u32s(size, blocks, blockSize, offset)
        : u32s(size, blocks, blockSize, offset, encrypted ? 1 : 0),
    ),
  /** [loader.py flash_block: len, seq, 0, 0 + data, checksum of data] */
  flashData: (op: number, seq: number, block: Uint8Array) => {
    const d = new Uint8Array(16 + block.length);
    d.set(u32s(block.length, seq, 0, 0));
    d.set(block, 16);
    return encodeRequest(op, d, checksum(block));
  },
  /** [loader.py flash_finish: u32 0 = reboot, 1 = run user code (stay in loader? no: run)] */
  flashEnd: (runUserCode: boolean) => encodeRequest(OP.FLASH_END, u32s(runUserCode ? 1 : 0)),
  flashDeflEnd: (runUserCode: boolean) =>
    encodeRequest(OP.FLASH_DEFL_END, u32s(runUserCode ? 1 : 0)),
  /** [loader.py flash_md5sum: addr, size, 0, 0] */
  md5: (addr: number, size: number) => encodeRequest(OP.SPI_FLASH_MD5, u32s(addr, size, 0, 0)),
  securityInfo: () => encodeRequest(OP.GET_SECURITY_INFO),
  /** ESP32 ROM's slow read: offset, len (≤ 64) [loader.py read_flash_slow] */
  readFlashSlow: (addr: number, len: number) => encodeRequest(OP.READ_FLASH_SLOW, u32s(addr, len)),
};

/** GET_SECURITY_INFO reply [loader.py get_security_info: "<IBBBBBBBB" + optional "II"]. */
export interface SecurityInfo {
  flags: number;
  flashCryptCnt: number;
  keyPurposes: number[];
  chipId?: number;
  apiVersion?: number;
}

/** Flag bits [loader.py get_security_info / SECURITY_INFO_FLAG_MAP; esp32-facts §6.2]. */
export const SECURITY_FLAG = {
  SECURE_BOOT_EN: 1 << 0,
  SECURE_BOOT_AGGRESSIVE_REVOKE: 1 << 1,
  SECURE_DOWNLOAD_ENABLE: 1 << 2,
  SECURE_BOOT_KEY_REVOKE0: 1 << 3,
  SECURE_BOOT_KEY_REVOKE1: 1 << 4,
  SECURE_BOOT_KEY_REVOKE2: 1 << 5,
  SOFT_DIS_JTAG: 1 << 6,
  HARD_DIS_JTAG: 1 << 7,
  DIS_USB: 1 << 8,
  DIS_DOWNLOAD_DCACHE: 1 << 9,
  DIS_DOWNLOAD_ICACHE: 1 << 10,
} as const;

export function encodeSecurityInfo(s: SecurityInfo): Uint8Array {
  const withChip = s.chipId !== undefined;
  const out = new Uint8Array(withChip ? 20 : 12);
  out.set(u32s(s.flags), 0);
  out[4] = s.flashCryptCnt;
  for (let i = 0; i < 7; i++) out[5 + i] = s.keyPurposes[i] ?? 0;
  if (withChip) out.set(u32s(s.chipId!, s.apiVersion ?? 0), 12);
  return out;
}

export function decodeSecurityInfo(d: Uint8Array): Decoded<SecurityInfo> {
  if (d.length !== 12 && d.length !== 20)
    return { ok: false, reason: `security info is ${d.length} bytes (12 or 20)` };
  const s: SecurityInfo = {
    flags: readU32(d, 0),
    flashCryptCnt: d[4]!,
    keyPurposes: Array.from(d.subarray(5, 12)),
  };
  if (d.length === 20) {
    s.chipId = readU32(d, 12);
    s.apiVersion = readU32(d, 16);
  }
  return { ok: true, value: s };
}
