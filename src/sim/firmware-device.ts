/**
 * The shipped C device side (src/firmware, compiled to WebAssembly by npm run build:firmware)
 * running inside the simulator: the one device side `sim serve`, `sim fleet`, the demo and the
 * tests use. `FirmwareEndpoint` puts it on the end of a byte port with the receive path
 * (rx-model.ts), the console on the same wire and the virtual-time flash waits; the wasm
 * module's imports (the C core's port, port_wasm.c) are bound here to the simulator's
 * ESP-IDF-like API (ota-api.ts). (Until issue 14's second session a TypeScript device side,
 * src/uart/device.ts behind SimEndpoint, stood beside it; test/firmware/differential.test.ts
 * keeps what it answered.)
 *
 * One WebAssembly instance per boot: a reset or a power cut is a fresh instance, as a rebooted
 * chip starts its firmware afresh (and a JS exception from an import, a power cut in a flash
 * operation, unwinds the wasm stack without restoring its stack pointer).
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { sha256 } from "@noble/hashes/sha2.js";
import { crc32 } from "../bytes.js";
import { EspOtaError, isEspOtaError } from "../errors.js";
import { OTA_STATE } from "../esp/otadata.js";
import {
  DATA_SUBTYPE,
  findPartition,
  PART_TYPE,
  PARTITION_TABLE_MAX_LEN,
  type Partition,
} from "../esp/partition-table.js";
import { FRAME_GAP_MS, FRAME_OVERHEAD, FrameDecoder, MAX_PAYLOAD } from "../uart/frame.js";
import type { BytePort } from "../uart/port.js";
import type { Timers } from "../uart/scheduler.js";
import { RealClock } from "./clock.js";
import type { SimDevice } from "./device.js";
import { ESP_ERR } from "./esp-err.js";
import { SECTOR_SIZE } from "./flash.js";
import { type RxConfig, RxModel } from "./rx-model.js";
import type { ResetCause } from "./uart-log.js";

/** Bytes the receiver task reads per uart_read_bytes call. */
const READ_CHUNK = 64;
/** The longest frame on the wire. */
const MAX_FRAME = MAX_PAYLOAD + FRAME_OVERHEAD;

/** Where the committed module sits, from src/sim (tsx) or dist/src/sim (the built package). */
const WASM_CANDIDATES = [
  "../firmware/prebuilt/esp_ota_uart.wasm",
  "../../../src/firmware/prebuilt/esp_ota_uart.wasm",
];

/*
 * The few WebAssembly JS API members used here. The project's TypeScript lib (ES2023, no DOM)
 * has no WebAssembly declarations; Node has the API.
 */
interface WasmModule {
  readonly __wasmModule?: never;
}
interface WasmApi {
  Module: (new (
    bytes: Uint8Array,
  ) => WasmModule) & {
    imports(m: WasmModule): { module: string; name: string; kind: string }[];
  };
  Instance: new (
    m: WasmModule,
    imports: Record<string, Record<string, (...a: number[]) => number | undefined>>,
  ) => { exports: Record<string, unknown> };
}
export const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
export type { WasmModule };

let cachedModule: WasmModule | undefined;

/** The compiled firmware module (compiled once per process). */
export function firmwareModule(): WasmModule {
  if (cachedModule) return cachedModule;
  for (const rel of WASM_CANDIDATES) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(fileURLToPath(new URL(rel, import.meta.url)));
    } catch {
      continue;
    }
    const m = new Wasm.Module(bytes);
    cachedModule = m;
    return m;
  }
  throw new EspOtaError(
    "E_INTERNAL",
    "the firmware module src/firmware/prebuilt/esp_ota_uart.wasm is missing (npm run build:firmware)",
  );
}

/** Test hook: use another build of the module (the reproducibility test's fresh build). */
export function setFirmwareModule(m: WasmModule | undefined): void {
  cachedModule = m;
}

interface Exports {
  memory: { buffer: ArrayBuffer };
  uota_wasm_init(
    ring: number,
    iram: number,
    baud: number,
    sectorUs: number,
    blockUs: number,
    pageUs: number,
    rollback: number,
    antiRollback: number,
  ): number;
  uota_wasm_in_buf(): number;
  uota_wasm_in_cap(): number;
  uota_wasm_feed(off: number, len: number, nowMs: number): number;
  uota_wasm_gap(): void;
  uota_wasm_idle(): void;
  uota_wasm_tick(nowMs: number): void;
  uota_wasm_next_deadline(nowMs: number): number;
  uota_wasm_announce(phase: number): void;
  uota_wasm_self_test_done(ok: number): number;
  uota_wasm_state(): number;
  uota_wasm_ctx_size(): number;
  uota_wasm_frames(): number;
  uota_wasm_crc_errors(): number;
}

const STATE_NAMES = ["idle", "receiving", "verified", "activated"] as const;

export interface FirmwareEndpointOptions {
  /** The receive path: ring size and whether the UART ISR is in IRAM (RX_CONFIGS). */
  rx: RxConfig;
  /** Print the boot log over the port (UART0 shared with the console; default true). */
  console?: boolean;
}

/** What the core needs from the platform it runs on (the simulator side of port_wasm.c). */
export interface FirmwareHost {
  /** The one write path to the wire. */
  write(bytes: Uint8Array): void;
  /** Switch the UART rate once what was written has left. */
  setBaud(baud: number): void;
  /** esp_restart once what was written has left. */
  restart(): void;
}

/**
 * One boot of the C firmware: a wasm instance whose imports are the simulator's ESP-IDF API on
 * `dev`. Exceptions from the simulator (E_SIM_POWER_CUT) pass through unchanged.
 */
export class FirmwareCore {
  private readonly x: Exports;
  private readonly mem: Uint8Array;
  private readonly inBuf: number;
  readonly inCap: number;

  constructor(
    private readonly dev: SimDevice,
    private readonly host: FirmwareHost,
    cfg: FirmwareEndpointOptions & { consoleBaud: number },
  ) {
    const instance = new Wasm.Instance(firmwareModule(), { uota_port: this.imports() });
    this.x = instance.exports as unknown as Exports;
    this.mem = new Uint8Array(this.x.memory.buffer);
    this.inBuf = this.x.uota_wasm_in_buf();
    this.inCap = this.x.uota_wasm_in_cap();
    const t = dev.flash.timing;
    const us = (ms: number) => Math.round(ms * 1000);
    const rc = this.x.uota_wasm_init(
      cfg.rx.ringBytes,
      cfg.rx.isrInIram ? 1 : 0,
      cfg.consoleBaud,
      us(t.sectorEraseMs),
      us(t.blockEraseMs),
      us(t.pageProgramMs),
      dev.spec.bootloader.rollback ? 1 : 0,
      dev.spec.bootloader.antiRollback ? 1 : 0,
    );
    if (rc !== 0)
      throw new RangeError(
        `FirmwareCore: a ${cfg.rx.ringBytes}-byte ring (ISR ${cfg.rx.isrInIram ? "in" : "not in"} IRAM) does not fit the firmware's buffers`,
      );
  }

  /** sizeof(uota_ctx_t) in this build (docs/firmware.md's RAM table). */
  get contextBytes(): number {
    return this.x.uota_wasm_ctx_size();
  }

  /** Linear memory of this instance (the module's fixed one page: docs/firmware.md). */
  get memoryBytes(): number {
    return this.x.memory.buffer.byteLength;
  }

  get transferState(): string {
    return STATE_NAMES[this.x.uota_wasm_state()] ?? "?";
  }

  get frames(): number {
    return this.x.uota_wasm_frames();
  }

  /** Copy bytes into the core's input buffer (at most inCap). */
  load(bytes: Uint8Array): void {
    if (bytes.length > this.inCap)
      throw new RangeError(`FirmwareCore.load: ${bytes.length} > ${this.inCap}`);
    this.mem.set(bytes, this.inBuf);
  }

  /** Feed input buffer bytes [off, off+len): how many were taken, and whether it stopped after a frame. */
  feed(off: number, len: number, nowMs: number): { used: number; more: boolean } {
    const r = this.x.uota_wasm_feed(off, len, Math.floor(nowMs) >>> 0) >>> 0;
    return { used: r & 0x7fffffff, more: (r & 0x80000000) !== 0 };
  }

  gap(): void {
    this.x.uota_wasm_gap();
  }
  idle(): void {
    this.x.uota_wasm_idle();
  }
  tick(nowMs: number): void {
    this.x.uota_wasm_tick(Math.floor(nowMs) >>> 0);
  }
  nextDeadline(nowMs: number): number {
    return this.x.uota_wasm_next_deadline(Math.floor(nowMs) >>> 0);
  }
  announce(phase: 0 | 1): void {
    this.x.uota_wasm_announce(phase);
  }
  selfTestDone(ok: boolean): number {
    return this.x.uota_wasm_self_test_done(ok ? 1 : 0);
  }

  // ---- the port (port_wasm.c's imports), byte layouts as documented there ----

  private part(offset: number): Partition | undefined {
    return this.dev.partitions.find((p) => p.offset === offset >>> 0);
  }

  private bytes(ptr: number, len: number): Uint8Array {
    return this.mem.slice(ptr >>> 0, (ptr >>> 0) + (len >>> 0));
  }

  private putStr(at: number, s: string, max: number): void {
    const b = new TextEncoder().encode(s).subarray(0, max);
    this.mem[at] = b.length;
    this.mem.fill(0, at + 1, at + 1 + max);
    this.mem.set(b, at + 1);
  }

  private put32(at: number, v: number): void {
    new DataView(this.mem.buffer).setUint32(at, v >>> 0, true);
  }

  private imports(): Record<string, (...a: number[]) => number | undefined> {
    const dev = this.dev;
    const NOT_FOUND = ESP_ERR.ESP_ERR_NOT_FOUND;
    return {
      erase: (part, off, len) => {
        const p = this.part(part);
        return p ? dev.ota.esp_partition_erase_range(p, off! >>> 0, len! >>> 0) : NOT_FOUND;
      },
      write_raw: (part, off, ptr, len) => {
        const p = this.part(part);
        return p
          ? dev.ota.esp_partition_write_raw(p, off! >>> 0, this.bytes(ptr!, len!))
          : NOT_FOUND;
      },
      read_raw: (part, off, ptr, len) => {
        const p = this.part(part);
        if (!p) return NOT_FOUND;
        // esp_partition_read_raw refuses a range beyond the partition (ESP_ERR_INVALID_SIZE).
        if ((off! >>> 0) + (len! >>> 0) > p.size) return ESP_ERR.ESP_ERR_INVALID_SIZE;
        this.mem.set(dev.ota.esp_partition_read_raw(p, off! >>> 0, len! >>> 0), ptr! >>> 0);
        return ESP_ERR.ESP_OK;
      },
      verify_image: (part, out) => {
        const p = this.part(part);
        const o = out! >>> 0;
        this.mem.fill(0, o, o + 297);
        if (!p) return NOT_FOUND;
        const check = dev.ota.verifyImage(p);
        this.putStr(o, check.appDesc?.version ?? "", 32);
        this.put32(o + 33, check.appDesc?.secureVersion ?? 0);
        this.put32(o + 37, dev.efuses.secureVersion);
        if (check.ok) return ESP_ERR.ESP_OK;
        // The same text the TypeScript device side sends (the check's log, cut at 255).
        const detail = check.log
          .map((l) => l.message)
          .join("; ")
          .slice(0, 255);
        this.putStr(o + 41, detail, 255);
        return ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED;
      },
      set_boot: (part) => {
        const p = this.part(part);
        return p ? dev.ota.esp_ota_set_boot_partition(p) : NOT_FOUND;
      },
      invalidate_otadata: () => dev.ota.esp_ota_invalidate_inactive_ota_data_slot(),
      running: (out) => {
        const o = out! >>> 0;
        const s = dev.state;
        if (s.kind !== "running")
          throw new EspOtaError("E_SIM_POWERED_OFF", "firmware: no app is running");
        const st = dev.ota.esp_ota_get_state_partition(s.partition).state ?? OTA_STATE.UNDEFINED;
        this.put32(o, s.partition.offset);
        this.put32(o + 4, st);
        this.put32(o + 8, s.bootState ?? OTA_STATE.UNDEFINED);
        this.putStr(o + 12, s.app?.version ?? "", 32);
        return undefined;
      },
      app_slots: (out, max) => {
        const slots = dev.partitions.filter((p) => p.type === PART_TYPE.app).slice(0, max! >>> 0);
        slots.forEach((s, i) => {
          const o = (out! >>> 0) + 26 * i;
          this.putStr(o, s.label, 16);
          this.mem[o + 17] = s.subtype;
          this.put32(o + 18, s.offset);
          this.put32(o + 22, s.size);
        });
        return slots.length;
      },
      identity: (out) => {
        this.identity(out! >>> 0);
        return undefined;
      },
      mark_valid: () => dev.ota.esp_ota_mark_app_valid_cancel_rollback(),
      mark_invalid: () => {
        const err = dev.ota.markAppInvalidRollbackAndReboot();
        // esp_ota_mark_app_invalid_rollback_and_reboot restarts the chip when it succeeds.
        if (err === ESP_ERR.ESP_OK) this.host.restart();
        return err;
      },
      record_get: (out) => {
        const rec = readProgress(dev);
        if (!rec) return 0;
        const o = out! >>> 0;
        this.put32(o, rec.offset);
        this.put32(o + 4, rec.size);
        this.mem.set(rec.sha256, o + 8);
        this.put32(o + 40, rec.written);
        return 1;
      },
      record_open: (part, size, sha) => {
        startProgress(dev, part! >>> 0, size! >>> 0, this.bytes(sha!, 32));
        return undefined;
      },
      record_progress: (written) => {
        appendProgress(dev, written! >>> 0, ENTRY_MAGIC);
        return undefined;
      },
      record_close: () => {
        appendProgress(dev, 0, DONE_MAGIC);
        return undefined;
      },
      uart_write: (ptr, len) => {
        this.host.write(this.bytes(ptr!, len!));
        return undefined;
      },
      set_baud: (baud) => {
        this.host.setBaud(baud! >>> 0);
        return undefined;
      },
      restart: () => {
        this.host.restart();
        return undefined;
      },
      log: (level, ptr, len) => {
        const text = new TextDecoder().decode(this.bytes(ptr!, len!));
        // ESP_LOGx through the same writer as the frames: a console line between frames.
        dev.uart.log(level === 1 ? "E" : level === 2 ? "W" : "I", "esp_ota_uart", text);
        return undefined;
      },
    };
  }

  private identity(o: number): void {
    const dev = this.dev;
    const ef = dev.efuses;
    const s = dev.state;
    if (s.kind !== "running")
      throw new EspOtaError("E_SIM_POWERED_OFF", "firmware: no app is running");
    const ota = dev.ota;
    this.mem.fill(0, o, o + 384);
    this.putStr(o, dev.spec.chip, 16);
    // The simulator has no chip-revision eFuse: an ESP32 v3.0 and an S3 v0 (as device.ts).
    this.mem[o + 17] = dev.spec.chip === "esp32" ? 3 : 0;
    this.mem.set(ef.mac.subarray(0, 6), o + 18);
    this.put32(o + 24, dev.spec.flashSize);
    const fe = ef.flashEncryptionMode;
    this.mem[o + 28] = fe === "disabled" ? 0 : fe === "development" ? 1 : 2;
    this.mem[o + 29] = ef.secureBootVersion;
    this.mem[o + 30] = ef.secureVersion;
    const otadata = new Uint8Array(64).fill(0xff);
    const otadataPart = findPartition(dev.partitions, PART_TYPE.data, DATA_SUBTYPE.ota);
    if (otadataPart) {
      otadata.set(ota.esp_partition_read(otadataPart, 0, 32), 0);
      otadata.set(ota.esp_partition_read(otadataPart, SECTOR_SIZE, 32), 32);
    }
    this.mem.set(otadata, o + 31);
    // esp_app_get_description(): the descriptor 32 bytes into the image, read decrypted.
    this.mem.set(ota.esp_partition_read(s.partition, 32, 256), o + 95);
    this.mem[o + 351] = 1;
    this.mem.set(
      sha256(
        dev.spi.read(
          dev.spec.partitionTableOffset,
          PARTITION_TABLE_MAX_LEN,
          dev.spi.encryptionEnabled,
        ),
      ),
      o + 352,
    );
  }
}

// ---- the durable progress record (§6.4): NVS on firmware; here, as device.ts keeps it, the
// last 4 KB sector of the nvs partition, append-only. Kept byte-identical with device.ts so a
// state file written by either device side resumes under the other.

const PROGRESS_MAGIC = 0x41544f55; // "UOTA"
const ENTRY_MAGIC = 0x474f5250; // "PROG"
const DONE_MAGIC = 0x454e4f44; // "DONE"

function progressPartition(dev: SimDevice): Partition | undefined {
  return findPartition(dev.partitions, PART_TYPE.data, DATA_SUBTYPE.nvs);
}

function startProgress(dev: SimDevice, offset: number, size: number, hash: Uint8Array): void {
  const p = progressPartition(dev);
  if (!p) return;
  const ota = dev.ota;
  const base = p.size - SECTOR_SIZE;
  ota.esp_partition_erase_range(p, base, SECTOR_SIZE);
  const h = new Uint8Array(48);
  const v = new DataView(h.buffer);
  v.setUint32(0, PROGRESS_MAGIC, true);
  v.setUint32(4, offset, true);
  v.setUint32(8, size, true);
  h.set(hash, 12);
  v.setUint32(44, crc32(h.subarray(0, 44)), true);
  ota.esp_partition_write_raw(p, base, h);
}

function appendProgress(dev: SimDevice, written: number, magic: number): void {
  const p = progressPartition(dev);
  if (!p) return;
  const ota = dev.ota;
  const base = p.size - SECTOR_SIZE;
  const all = ota.esp_partition_read_raw(p, base, SECTOR_SIZE);
  for (let o = 64; o + 16 <= SECTOR_SIZE; o += 16) {
    if (all[o] !== 0xff || all[o + 1] !== 0xff || all[o + 2] !== 0xff || all[o + 3] !== 0xff)
      continue;
    const e = new Uint8Array(12);
    const v = new DataView(e.buffer);
    v.setUint32(0, magic, true);
    v.setUint32(4, written, true);
    v.setUint32(8, crc32(e.subarray(0, 8)), true);
    ota.esp_partition_write_raw(p, base + o, e);
    return;
  }
}

function readProgress(
  dev: SimDevice,
): { offset: number; size: number; sha256: Uint8Array; written: number } | undefined {
  const p = progressPartition(dev);
  if (!p) return undefined;
  const all = dev.ota.esp_partition_read_raw(p, p.size - SECTOR_SIZE, SECTOR_SIZE);
  const v = new DataView(all.buffer, all.byteOffset, all.byteLength);
  if (v.getUint32(0, true) !== PROGRESS_MAGIC) return undefined;
  if (crc32(all.subarray(0, 44)) !== v.getUint32(44, true)) return undefined;
  let written = 0;
  for (let o = 64; o + 16 <= SECTOR_SIZE; o += 16) {
    const magic = v.getUint32(o, true);
    if (magic === 0xffffffff) break;
    // An entry cut short by a power cut fails its CRC: it and anything after are ignored.
    if (crc32(all.subarray(o, o + 8)) !== v.getUint32(o + 8, true)) break;
    if (magic === DONE_MAGIC) return undefined;
    if (magic === ENTRY_MAGIC) written = v.getUint32(o + 4, true);
  }
  return {
    offset: v.getUint32(4, true),
    size: v.getUint32(8, true),
    sha256: all.slice(12, 44),
    written,
  };
}

/**
 * A simulated ESP32 running the C firmware on the end of a byte port: its UART receive path
 * (rx-model.ts), the console (every boot and app log line goes out as text between frames, as
 * on UART0), the wasm core, and resets. In virtual time the flash keeps the device busy for
 * exactly the time the flash timing model spends; with a RealClock it waits that time out.
 */
export class FirmwareEndpoint {
  readonly rx: RxModel;
  private core: FirmwareCore | undefined;
  private wake: ReturnType<Timers["setTimer"]> | undefined;
  private settling = false;
  private offset: number;
  private readonly consoleBaud: number;
  private txQueued = 0;
  private lastArrival = Number.NEGATIVE_INFINITY;
  /**
   * Silences on the line: the byte count (of bytes stored) at which one preceded the next byte,
   * and the bytes that came together after it (their first frame's worth), which may be the
   * rest of a frame read late (completesHeld). The bursts are prefixes of bytes held in the
   * ring, so they never hold more than the ring does.
   */
  private gaps: { pos: number; burst: Uint8Array }[] = [];
  /** The last MAX_FRAME bytes handed to the core, a ring (the late-read check at a gap). */
  private readonly recent = new Uint8Array(MAX_FRAME);
  private recentTotal = 0;
  private arrived = 0;
  private consumed = 0;
  /** Input loaded into the core but not yet taken, and whether it holds frames still to decode. */
  private inOff = 0;
  private inLen = 0;
  private rescan = false;
  private tickTimer: ReturnType<Timers["setTimer"]> | undefined;
  /** Bumped at every boot, so a timer of an earlier boot does nothing. */
  private boot = 0;
  framesHandled = 0;

  constructor(
    readonly dev: SimDevice,
    readonly port: BytePort,
    private readonly timers: Timers,
    private readonly opts: FirmwareEndpointOptions,
  ) {
    this.rx = new RxModel(opts.rx);
    this.offset = dev.clock.now() - timers.now();
    this.consoleBaud = port.baud;
    port.onData((b, at) => {
      // The gap is measured on the wire: from the end of the last byte to the start of these.
      // With wall-clock delivery times instead, a simulated wire whose timer fired late on a
      // busy machine looked like silence in the middle of a DATA frame: the frame was given up
      // and the transfer crawled on retransmissions (855 frames given up in one e2e-restart run
      // beside three busy loops, 97 s instead of 11 s; docs/benchmarks.md "Tests under load").
      const end = at ?? this.timers.now();
      const start = end - (b.length * 10_000) / this.port.baud;
      if (start - this.lastArrival > FRAME_GAP_MS)
        this.gaps.push({ pos: this.arrived, burst: b.slice(0, MAX_FRAME) });
      this.lastArrival = end;
      const before = this.rx.lost;
      this.rx.arrive(b, this.busy());
      this.arrived += b.length - (this.rx.lost - before);
      this.kick();
    });
    if (opts.console ?? true) dev.uart.onLine = (line) => this.transmit(textBytes(line));
    this.attach();
  }

  reset(cause: ResetCause = "POWERON_RESET"): void {
    this.core = undefined;
    this.boot++;
    this.timers.clearTimer(this.tickTimer);
    this.tickTimer = undefined;
    this.rx.clear();
    this.gaps = [];
    this.recentTotal = 0;
    this.arrived = this.consumed = 0;
    this.inOff = this.inLen = 0;
    this.rescan = false;
    try {
      this.dev.reset(cause);
    } catch (e) {
      if (!(isEspOtaError(e) && e.code === "E_SIM_POWER_CUT")) throw e;
    }
    this.port.setBaud(this.consoleBaud);
    this.attach();
  }

  powerOn(): void {
    this.reset("POWERON_RESET");
  }

  get transferState(): string {
    return this.core?.transferState ?? "down";
  }

  get up(): boolean {
    return this.core !== undefined;
  }

  /**
   * The app's self-test hook (esp_ota_uart_self_test_done): ok marks a PENDING_VERIFY app
   * valid and sends ANNOUNCE phase 1; !ok marks it invalid and reboots into the previous app.
   * The simulator's app profiles (device.ts) run their own self-test at boot; this is for an
   * app that leaves it to the firmware (the "hang" profile stands for one that never calls it).
   */
  selfTestDone(ok: boolean): number | undefined {
    let err: number | undefined;
    this.guard((c) => {
      err = c.selfTestDone(ok);
    });
    return err;
  }

  /** sizeof(uota_ctx_t) of the running build (undefined while the device is down). */
  get contextBytes(): number | undefined {
    return this.core?.contextBytes;
  }

  /** WebAssembly memory this device holds while up (one page). */
  get memoryBytes(): number | undefined {
    return this.core?.memoryBytes;
  }

  private attach(): void {
    this.syncClock();
    if (this.dev.state.kind !== "running") return;
    const boot = this.boot;
    const txMs = (bytes: number) => (bytes * 10_000) / this.port.baud + 1;
    this.core = new FirmwareCore(
      this.dev,
      {
        write: (b) => this.transmit(b),
        // uart_wait_tx_done then uart_set_baudrate: the RESULT leaves at the old rate.
        setBaud: (baud) => {
          this.timers.setTimer(txMs(32), () => {
            if (this.boot === boot) this.port.setBaud(baud);
          });
        },
        restart: () => {
          this.timers.setTimer(txMs(64), () => {
            if (this.boot === boot) this.reset("SW_RESET");
          });
        },
      },
      { ...this.opts, consoleBaud: this.port.baud },
    );
    this.afterBusy(() => {
      this.guard((c) => {
        c.announce(0);
        c.announce(1);
      });
    });
  }

  /** Run a call into the core; a power cut in a flash operation leaves the chip off. */
  private guard(fn: (c: FirmwareCore) => void): boolean {
    const c = this.core;
    if (!c) return false;
    try {
      fn(c);
    } catch (e) {
      // An exception through the wasm frames leaves the module's stack pointer where it was:
      // this instance is done either way. A power cut leaves the chip off until powerOn().
      this.core = undefined;
      this.timers.clearTimer(this.tickTimer);
      this.tickTimer = undefined;
      if (isEspOtaError(e) && e.code === "E_SIM_POWER_CUT") return false;
      throw e;
    }
    this.armTick();
    return this.core === c;
  }

  /** The core's timers (the baud confirmation, §3.3) as one scheduler timer. */
  private armTick(): void {
    const c = this.core;
    this.timers.clearTimer(this.tickTimer);
    this.tickTimer = undefined;
    if (!c) return;
    const d = c.nextDeadline(this.timers.now());
    if (d < 0) return;
    this.tickTimer = this.timers.setTimer(d, () => {
      this.tickTimer = undefined;
      this.guard((core) => core.tick(this.timers.now()));
    });
  }

  private transmit(b: Uint8Array): void {
    const wait = this.dev.clock instanceof RealClock ? 0 : this.devNow() - this.timers.now();
    if (wait <= 0 && this.txQueued === 0) {
      this.port.write(b);
      return;
    }
    this.txQueued++;
    this.timers.setTimer(Math.max(0, wait), () => {
      this.txQueued--;
      this.port.write(b);
    });
  }

  private devNow(): number {
    return this.dev.clock.now() - this.offset;
  }

  private busy(): boolean {
    return this.settling || this.devNow() > this.timers.now() + 1e-9;
  }

  private syncClock(): void {
    const lag = this.timers.now() - this.devNow();
    if (lag > 0 && !(this.dev.clock instanceof RealClock)) this.dev.clock.spend(lag);
  }

  private afterBusy(fn: () => void): void {
    if (this.dev.clock instanceof RealClock) {
      this.settling = true;
      void this.dev.clock.settle().then(() => {
        this.settling = false;
        this.rx.idle();
        fn();
      });
      return;
    }
    const wait = this.devNow() - this.timers.now();
    if (wait <= 0) {
      fn();
      return;
    }
    this.timers.setTimer(wait, () => {
      this.rx.idle();
      fn();
    });
  }

  private kick(): void {
    if (this.wake) return;
    if (this.busy()) {
      this.wake = { id: -1 };
      this.afterBusy(() => this.process());
      return;
    }
    this.process();
  }

  private remember(b: Uint8Array): void {
    const src = b.length > MAX_FRAME ? b.subarray(b.length - MAX_FRAME) : b;
    const at = this.recentTotal % MAX_FRAME;
    const first = Math.min(src.length, MAX_FRAME - at);
    this.recent.set(src.subarray(0, first), at);
    this.recent.set(src.subarray(first), 0);
    this.recentTotal += b.length;
  }

  /**
   * Whether the frame the core holds, plus `burst`, is a whole frame whose CRCs check. The core
   * does not expose what it holds, so the shell finds it the way the core did: the same §2.2
   * parser run over the last MAX_FRAME bytes handed to it ends holding the same partial frame
   * (a frame is at most MAX_FRAME bytes, and what precedes it in the window is skipped as
   * noise or completed frames). Rare (once per silence) and bounded (one frame's worth).
   */
  private completesHeld(burst: Uint8Array): boolean {
    if (this.recentTotal === 0) return false;
    let window: Uint8Array;
    if (this.recentTotal < MAX_FRAME) window = this.recent.subarray(0, this.recentTotal);
    else {
      const end = this.recentTotal % MAX_FRAME;
      window = new Uint8Array(MAX_FRAME);
      window.set(this.recent.subarray(end), 0);
      window.set(this.recent.subarray(0, end), MAX_FRAME - end);
    }
    const d = new FrameDecoder();
    d.push(window);
    return d.completesPending(burst);
  }

  /**
   * The receiver task's loop: read the ring a chunk at a time into the core's parser, which
   * stops after each frame it handles; silences become uota_line_gap calls at their byte.
   */
  private process(): void {
    this.wake = undefined;
    for (;;) {
      if (!this.core) {
        this.rx.clear();
        this.gaps = [];
        this.consumed = this.arrived;
        this.inOff = this.inLen = 0;
        this.rescan = false;
        return;
      }
      this.syncClock();
      if (this.busy()) {
        this.wake = { id: -1 };
        this.afterBusy(() => this.process());
        return;
      }
      if (this.inOff < this.inLen || this.rescan) {
        let r = { used: 0, more: false };
        if (
          !this.guard((c) => (r = c.feed(this.inOff, this.inLen - this.inOff, this.timers.now())))
        )
          continue;
        this.inOff += r.used;
        this.rescan = r.more;
        if (r.more) this.framesHandled++;
        continue;
      }
      while (this.gaps.length > 0 && this.gaps[0]!.pos <= this.consumed) {
        const g = this.gaps.shift()!;
        // A pty read late on a busy machine (the rest of a frame the host wrote at once, read
        // more than 50 ms after its start) is no silence on a wire: when the bytes after the
        // "silence" complete the frame held and its CRC-32 holds, the core keeps it (§2.3;
        // test/firmware/frame-gap.test.ts).
        if (this.completesHeld(g.burst)) continue;
        this.guard((c) => c.gap());
        this.rescan = true;
      }
      if (this.rescan) continue;
      const upTo = this.gaps.length > 0 ? this.gaps[0]!.pos - this.consumed : READ_CHUNK;
      const bytes = this.rx.read(Math.min(READ_CHUNK, upTo));
      if (bytes.length === 0) {
        this.guard((c) => c.idle());
        return;
      }
      this.consumed += bytes.length;
      this.remember(bytes);
      this.core.load(bytes);
      this.inOff = 0;
      this.inLen = bytes.length;
    }
  }
}

function textBytes(line: string): Uint8Array {
  return new TextEncoder().encode(`${line}\r\n`);
}
