/**
 * UART OTA messages (docs/uart-protocol.md §3): one codec per message type, little-endian,
 * fixed layouts a firmware engineer can mirror with packed C structs. Decoders of device input
 * return `undefined` for a payload of the wrong shape (the device answers BAD_REQUEST); they
 * never throw on bytes from the wire.
 */

import { type AppDescriptor, decodeAppDesc } from "../esp/image.js";
import { decodeOtadata, type OtaEntry } from "../esp/otadata.js";

export const PROTOCOL_VERSION = 1;
/** Image bytes per DATA frame (the frame adds a 4-byte offset): one flash sector. */
export const DATA_CHUNK = 4096;
/** The rate the ESP-IDF console (and so the device after any reset) starts at. */
export const CONSOLE_BAUD = 115200;

/** Host → device requests have the top bit clear; device → host messages have it set. */
export const MSG = {
  HELLO: 0x01,
  BEGIN: 0x02,
  DATA: 0x03,
  END: 0x04,
  ACTIVATE: 0x05,
  REBOOT: 0x06,
  ABORT: 0x07,
  BAUD: 0x08,
  STATUS: 0x09,
  INFO: 0x81,
  RESULT: 0x80,
  ACK: 0x83,
  ANNOUNCE: 0x90,
} as const;
export type MsgType = (typeof MSG)[keyof typeof MSG];

export function msgName(type: number): string {
  for (const [k, v] of Object.entries(MSG)) if (v === type) return k;
  return `0x${type.toString(16).padStart(2, "0")}`;
}

/** RESULT status codes (docs/uart-protocol.md §5); the host maps them to E_UART_* codes. */
export const STATUS = {
  OK: 0,
  RUNNING_SLOT: 1,
  NOT_APP_SLOT: 2,
  TOO_BIG: 3,
  PENDING_VERIFY: 4,
  NO_TRANSFER: 5,
  HASH_MISMATCH: 6,
  IMAGE_INVALID: 7,
  FLASH_ERROR: 8,
  BAD_STATE: 9,
  BAD_BAUD: 10,
  BAD_REQUEST: 11,
  INCOMPLETE: 12,
  SMALL_SEC_VER: 13,
  NOT_ACTIVATED: 14,
} as const;
export type Status = (typeof STATUS)[keyof typeof STATUS];

export function statusName(s: number): string {
  for (const [k, v] of Object.entries(STATUS)) if (v === s) return k;
  return `STATUS_${s}`;
}

class Writer {
  private parts: number[] = [];
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    return this.u8(v).u8(v >>> 8);
  }
  u32(v: number): this {
    return this.u16(v & 0xffff).u16((v >>> 16) & 0xffff);
  }
  bytes(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  /** u8 length + UTF-8, cut at 255 bytes. */
  str(s: string): this {
    const b = new TextEncoder().encode(s).subarray(0, 255);
    return this.u8(b.length).bytes(b);
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

class Reader {
  private p = 0;
  constructor(private readonly b: Uint8Array) {}
  private need(n: number): void {
    if (this.p + n > this.b.length) throw new ShortPayload();
  }
  u8(): number {
    this.need(1);
    return this.b[this.p++]!;
  }
  u16(): number {
    return this.u8() | (this.u8() << 8);
  }
  u32(): number {
    return (this.u16() | (this.u16() << 16)) >>> 0;
  }
  i32(): number {
    return this.u32() | 0;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const out = this.b.slice(this.p, this.p + n);
    this.p += n;
    return out;
  }
  str(): string {
    return new TextDecoder().decode(this.bytes(this.u8()));
  }
  rest(): Uint8Array {
    const out = this.b.subarray(this.p);
    this.p = this.b.length;
    return out;
  }
  end(): void {
    if (this.p !== this.b.length) throw new ShortPayload();
  }
  get remaining(): number {
    return this.b.length - this.p;
  }
}

class ShortPayload extends Error {}

function tryRead<T>(b: Uint8Array, f: (r: Reader) => T): T | undefined {
  try {
    const r = new Reader(b);
    const v = f(r);
    r.end();
    return v;
  } catch (e) {
    if (e instanceof ShortPayload) return undefined;
    throw e;
  }
}

// ---- requests (host → device) ----

export interface Begin {
  /** Absolute flash offset of the target app slot. */
  offset: number;
  /** Ciphertext size in bytes. */
  size: number;
  /** SHA-256 of the ciphertext exactly as it will sit in flash. */
  sha256: Uint8Array;
}
export const encodeBegin = (m: Begin) =>
  new Writer().u32(m.offset).u32(m.size).bytes(m.sha256).done();
export const decodeBegin = (b: Uint8Array): Begin | undefined =>
  tryRead(b, (r) => ({ offset: r.u32(), size: r.u32(), sha256: r.bytes(32) }));

export interface Data {
  /** Offset of this chunk within the image (not the flash address). */
  offset: number;
  data: Uint8Array;
}
export const encodeData = (m: Data) => new Writer().u32(m.offset).bytes(m.data).done();
export const decodeData = (b: Uint8Array): Data | undefined =>
  tryRead(b, (r) => ({ offset: r.u32(), data: r.rest() }));

export const encodeBaud = (baud: number) => new Writer().u32(baud).done();
export const decodeBaud = (b: Uint8Array): number | undefined => tryRead(b, (r) => r.u32());

export const encodeHello = () => new Writer().u8(PROTOCOL_VERSION).done();
export const decodeHello = (b: Uint8Array): number | undefined => tryRead(b, (r) => r.u8());

// ---- device → host ----

export interface Result {
  /** The request type this answers. */
  request: number;
  status: number;
  /** esp_err_t of the ESP-IDF call that decided (0 = ESP_OK). */
  espErr: number;
  /** Per request: BEGIN → resume offset; END → bytes checked; otherwise 0. */
  value: number;
  detail: string;
}
export const encodeResult = (m: Result) =>
  new Writer()
    .u8(m.request)
    .u8(m.status)
    .u32(m.espErr >>> 0)
    .u32(m.value)
    .str(m.detail)
    .done();
export const decodeResult = (b: Uint8Array): Result | undefined =>
  tryRead(b, (r) => ({
    request: r.u8(),
    status: r.u8(),
    espErr: r.i32(),
    value: r.u32(),
    detail: r.str(),
  }));

export interface Ack {
  /** Contiguous image bytes accepted (in RAM or flash): the host resends from here. */
  received: number;
  /** The host may send DATA up to this image offset (exclusive). */
  credit: number;
  /** Image bytes safely in flash (what a resume would start from). */
  written: number;
  /**
   * ISR not in IRAM (§7): when the byte before image offset `holdAt` has left the host's wire,
   * the device programs flash for `busyMs` ms and cannot receive; the host pauses that long.
   * busyMs 0: no pause (ISR in IRAM).
   */
  holdAt: number;
  busyMs: number;
  /** Bit 0: a frame was lost (DATA arrived beyond `received`); resend from `received`. */
  flags: number;
}
export const encodeAck = (m: Ack) =>
  new Writer()
    .u32(m.received)
    .u32(m.credit)
    .u32(m.written)
    .u32(m.holdAt)
    .u16(Math.min(0xffff, Math.ceil(m.busyMs)))
    .u8(m.flags)
    .done();
export const decodeAck = (b: Uint8Array): Ack | undefined =>
  tryRead(b, (r) => ({
    received: r.u32(),
    credit: r.u32(),
    written: r.u32(),
    holdAt: r.u32(),
    busyMs: r.u16(),
    flags: r.u8(),
  }));

export interface AppSlot {
  label: string;
  subtype: number;
  offset: number;
  size: number;
}

export interface ResumeRecord {
  offset: number;
  size: number;
  sha256: Uint8Array;
  /** Bytes of the image known to be in flash. */
  written: number;
}

export interface Info {
  protocol: number;
  chip: string;
  revision: number;
  mac: Uint8Array;
  flashSize: number;
  /** 0 off, 1 development, 2 release. */
  flashEncryption: number;
  secureBootVersion: number;
  efuseSecureVersion: number;
  runningOffset: number;
  /** esp_ota_get_state_partition of the running slot (0xFFFFFFFF: none, e.g. factory). */
  runningState: number;
  /** Largest DATA payload the device takes (its offset field included). */
  maxPayload: number;
  /** Receive buffer (hardware FIFO + ring) in bytes: the host's window is bounded by it. */
  rxBuffer: number;
  /** 1 when the UART ISR is in IRAM (reception continues during flash operations). */
  isrInIram: number;
  slots: AppSlot[];
  /** Both otadata copies, raw (64 bytes: 2 × esp_ota_select_entry_t). */
  otadata: Uint8Array;
  /** The running app's esp_app_desc_t, raw (256 bytes). */
  appDesc: Uint8Array;
  resume: ResumeRecord | undefined;
  /**
   * SHA-256 of the partition table as the app reads it (PARTITION_TABLE_MAX_LEN bytes at
   * CONFIG_PARTITION_TABLE_OFFSET, decrypted), the value a release manifest's
   * partitionTableSha256 names. Optional and last, so INFO without it still decodes.
   */
  partitionTableSha256?: Uint8Array;
}

export function encodeInfo(m: Info): Uint8Array {
  const w = new Writer()
    .u8(m.protocol)
    .str(m.chip)
    .u8(m.revision)
    .bytes(m.mac)
    .u32(m.flashSize)
    .u8(m.flashEncryption)
    .u8(m.secureBootVersion)
    .u8(m.efuseSecureVersion)
    .u32(m.runningOffset)
    .u32(m.runningState)
    .u16(m.maxPayload)
    .u32(m.rxBuffer)
    .u8(m.isrInIram)
    .u8(m.slots.length);
  for (const s of m.slots) w.str(s.label).u8(s.subtype).u32(s.offset).u32(s.size);
  w.bytes(m.otadata).bytes(m.appDesc);
  if (m.resume)
    w.u8(1).u32(m.resume.offset).u32(m.resume.size).bytes(m.resume.sha256).u32(m.resume.written);
  else w.u8(0);
  if (m.partitionTableSha256) w.bytes(m.partitionTableSha256);
  return w.done();
}

export function decodeInfo(b: Uint8Array): Info | undefined {
  return tryRead(b, (r) => {
    const head = {
      protocol: r.u8(),
      chip: r.str(),
      revision: r.u8(),
      mac: r.bytes(6),
      flashSize: r.u32(),
      flashEncryption: r.u8(),
      secureBootVersion: r.u8(),
      efuseSecureVersion: r.u8(),
      runningOffset: r.u32(),
      runningState: r.u32(),
      maxPayload: r.u16(),
      rxBuffer: r.u32(),
      isrInIram: r.u8(),
    };
    const n = r.u8();
    const slots: AppSlot[] = [];
    for (let i = 0; i < n; i++)
      slots.push({ label: r.str(), subtype: r.u8(), offset: r.u32(), size: r.u32() });
    const otadata = r.bytes(64);
    const appDesc = r.bytes(256);
    const resume =
      r.u8() === 1
        ? { offset: r.u32(), size: r.u32(), sha256: r.bytes(32), written: r.u32() }
        : undefined;
    const partitionTableSha256 = r.remaining > 0 ? r.bytes(32) : undefined;
    return {
      ...head,
      slots,
      otadata,
      appDesc,
      resume,
      ...(partitionTableSha256 ? { partitionTableSha256 } : {}),
    };
  });
}

/** The running app's descriptor and both otadata entries, decoded with src/esp. */
export function describeInfo(info: Info): {
  app: AppDescriptor | undefined;
  otadata: [OtaEntry, OtaEntry];
} {
  const otadata = new Uint8Array(0x2000).fill(0xff);
  otadata.set(info.otadata.subarray(0, 32), 0);
  otadata.set(info.otadata.subarray(32, 64), 0x1000);
  return { app: decodeAppDesc(info.appDesc), otadata: decodeOtadata(otadata) };
}

export interface Announce {
  /** 0: just booted; 1: after the app's self-test (it marked itself valid, or not). */
  phase: number;
  runningOffset: number;
  runningState: number;
  version: string;
}
export const encodeAnnounce = (m: Announce) =>
  new Writer().u8(m.phase).u32(m.runningOffset).u32(m.runningState).str(m.version).done();
export const decodeAnnounce = (b: Uint8Array): Announce | undefined =>
  tryRead(b, (r) => ({
    phase: r.u8(),
    runningOffset: r.u32(),
    runningState: r.u32(),
    version: r.str(),
  }));
