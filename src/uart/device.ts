/**
 * The device side of the UART OTA protocol (docs/uart-protocol.md §6), written against the
 * simulator's ESP-IDF-like API the way firmware is written against ESP-IDF: one handler per
 * request type, one dispatcher that checks the transfer state allows it, one write path.
 *
 * Flash writes follow esp32-facts §4.3 (pre-encrypted image): esp_partition_erase_range just
 * ahead of the data (64 KB blocks where aligned, else 4 KB sectors, so erasing overlaps
 * reception), esp_partition_write_raw for the ciphertext, esp_ota_set_boot_partition to
 * activate (it verifies the decrypted image). Progress is kept durably (§6.4) so a transfer
 * resumes after a reset; END re-reads every byte from flash for the SHA-256.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { crc32, equalBytes, toHex } from "../bytes.js";
import { OTA_STATE } from "../esp/otadata.js";
import {
  DATA_SUBTYPE,
  findPartition,
  otaAppPartitions,
  PART_TYPE,
  PARTITION_TABLE_MAX_LEN,
  type Partition,
} from "../esp/partition-table.js";
import type { SimDevice } from "../sim/device.js";
import { ESP_ERR, espErrToName } from "../sim/esp-err.js";
import { BLOCK_SIZE, PAGE_SIZE, SECTOR_SIZE } from "../sim/flash.js";
import { encodeFrame, type Frame, frameSize } from "./frame.js";
import {
  type Ack,
  type AppSlot,
  DATA_CHUNK,
  decodeBaud,
  decodeBegin,
  decodeData,
  decodeHello,
  encodeAck,
  encodeAnnounce,
  encodeInfo,
  encodeResult,
  MSG,
  PROTOCOL_VERSION,
  type ResumeRecord,
  STATUS,
} from "./messages.js";
import { HW_FIFO, type RxConfig } from "./rx-model.js";

/** Rates the device accepts in BAUD (ESP32 UART and common USB-serial adapters). */
export const SUPPORTED_BAUDS = [115200, 230400, 460800, 921600, 1500000, 2000000] as const;
/** A new baud must be confirmed by a valid frame within this time, or the device reverts. */
export const BAUD_CONFIRM_MS = 1000;
/** Progress is recorded every 64 KB written (one flash block; ≤ 256 records per 16 MB slot). */
export const PROGRESS_EVERY = BLOCK_SIZE;

export interface DeviceSideConfig {
  rx: RxConfig;
}

export interface DeviceEnv {
  send(frameBytes: Uint8Array): void;
  setBaud(baud: number): void;
  readonly baud: number;
  after(ms: number, fn: () => void): { cancel(): void };
  /** esp_restart(). */
  restart(): void;
}

interface Transfer {
  slot: Partition;
  size: number;
  sha256: Uint8Array;
  /** Contiguous image bytes accepted into RAM. */
  received: number;
  /** Image bytes programmed into flash. */
  written: number;
  erasedTo: number;
  /** Image bytes the host may send up to (exclusive). */
  credit: number;
  staging: Uint8Array;
  stagingLen: number;
  /** A gap was reported for this `received` value (one gap ACK per loss, not one per frame). */
  gapReportedAt: number;
  sinceGapReport: number;
  /** ISR not in IRAM: the next image offset at which the device programs flash. */
  batchEnd: number;
}

type DeviceState =
  | { kind: "idle" }
  | { kind: "receiving"; t: Transfer }
  /** `version`: the verified image's esp_app_desc_t.version, END's answer (§4, RESULT). */
  | { kind: "verified"; t: Transfer; version: string }
  | { kind: "activated"; slot: Partition };

type Handler = (payload: Uint8Array) => void;

/** Which states each request is allowed in (docs/uart-protocol.md §6.1). */
const ALLOWED: Record<number, readonly DeviceState["kind"][] | "any"> = {
  [MSG.HELLO]: "any",
  [MSG.STATUS]: "any",
  [MSG.BAUD]: "any",
  [MSG.ABORT]: "any",
  [MSG.REBOOT]: "any",
  [MSG.BEGIN]: ["idle", "receiving", "verified"],
  [MSG.DATA]: ["receiving"],
  [MSG.END]: ["receiving", "verified"],
  [MSG.ACTIVATE]: ["verified", "activated"],
};

export class UartOtaDevice {
  private state: DeviceState = { kind: "idle" };
  private ackDue = false;
  private baudConfirm: { cancel(): void } | undefined;
  private readonly handlers: Record<number, Handler>;
  /** Image bytes per batch when the ISR is not in IRAM: what the ring holds. */
  private readonly window: number;

  constructor(
    private readonly dev: SimDevice,
    private readonly env: DeviceEnv,
    private readonly cfg: DeviceSideConfig,
  ) {
    // §7: the host may have `window` image bytes beyond what the device has parsed; they sit in
    // the ring and FIFO, 64 bytes spare for a control frame.
    const frames = Math.floor((cfg.rx.ringBytes + HW_FIFO - 64) / frameSize(4 + DATA_CHUNK));
    if (frames < 1)
      throw new RangeError(
        `UartOtaDevice: a ${cfg.rx.ringBytes}-byte ring cannot hold one ${frameSize(4 + DATA_CHUNK)}-byte DATA frame`,
      );
    this.window = frames * DATA_CHUNK;
    this.handlers = {
      [MSG.HELLO]: (p) => this.onHello(p),
      [MSG.BEGIN]: (p) => this.onBegin(p),
      [MSG.DATA]: (p) => this.onData(p),
      [MSG.END]: () => this.onEnd(),
      [MSG.ACTIVATE]: () => this.onActivate(),
      [MSG.REBOOT]: () => this.onReboot(),
      [MSG.ABORT]: () => this.onAbort(),
      [MSG.BAUD]: (p) => this.onBaud(p),
      [MSG.STATUS]: () => this.announce(1),
    };
  }

  get transferState(): DeviceState["kind"] {
    return this.state.kind;
  }

  /** The dispatcher: one frame in, at most a few frames out. */
  handle(frame: Frame): void {
    this.baudConfirm?.cancel();
    this.baudConfirm = undefined;
    const h = this.handlers[frame.type];
    if (!h) {
      this.result(
        frame.type,
        STATUS.BAD_REQUEST,
        0,
        0,
        `unknown request 0x${frame.type.toString(16)}`,
      );
      return;
    }
    const allowed = ALLOWED[frame.type]!;
    if (allowed !== "any" && !allowed.includes(this.state.kind)) {
      if (frame.type === MSG.DATA) {
        // A DATA frame after END/ABORT is a retransmission in flight: harmless, ignored (§4).
        return;
      }
      this.result(frame.type, STATUS.BAD_STATE, 0, 0, `not allowed while ${this.state.kind}`);
      return;
    }
    h(frame.payload);
  }

  /** Input ran dry: send the ACK the last frames earned (one per burst, not per frame). */
  drained(): void {
    if (this.state.kind !== "receiving") return;
    const t = this.state.t;
    if (this.ackDue) this.sendAck(0);
    // ISR in IRAM: use idle time to erase ahead (reception goes on meanwhile), so erasing
    // overlaps the wire instead of stalling it. Bounded: at most a window and a block ahead.
    const eraseEnd = Math.ceil(t.size / SECTOR_SIZE) * SECTOR_SIZE;
    if (
      this.cfg.rx.isrInIram &&
      t.erasedTo < eraseEnd &&
      t.erasedTo < t.received + this.window + BLOCK_SIZE
    )
      this.eraseTo(t, t.erasedTo + 1);
  }

  /** After boot: phase 0 with the otadata state the app started in, 1 after its self-test. */
  announce(phase: 0 | 1): void {
    const s = this.dev.state;
    if (s.kind !== "running") return;
    const ota = this.dev.ota;
    const st = phase === 0 ? s.bootState : ota.esp_ota_get_state_partition(s.partition).state;
    this.send(
      MSG.ANNOUNCE,
      encodeAnnounce({
        phase,
        runningOffset: s.partition.offset,
        runningState: st ?? OTA_STATE.UNDEFINED,
        version: s.app?.version ?? "",
      }),
    );
  }

  // ---- handlers (docs/uart-protocol.md §4) ----

  private onHello(p: Uint8Array): void {
    const v = decodeHello(p);
    if (v === undefined) {
      this.result(MSG.HELLO, STATUS.BAD_REQUEST, 0, 0, "bad HELLO");
      return;
    }
    this.send(MSG.INFO, encodeInfo(this.info()));
  }

  private info() {
    const s = this.dev.state;
    if (s.kind !== "running") throw new RangeError("UartOtaDevice: no app running");
    const ota = this.dev.ota;
    const ef = this.dev.efuses;
    const parts = this.dev.partitions;
    const otadataPart = findPartition(parts, PART_TYPE.data, DATA_SUBTYPE.ota);
    const otadata = new Uint8Array(64).fill(0xff);
    if (otadataPart) {
      otadata.set(ota.esp_partition_read(otadataPart, 0, 32), 0);
      otadata.set(ota.esp_partition_read(otadataPart, SECTOR_SIZE, 32), 32);
    }
    // esp_app_get_description(): the descriptor sits 32 bytes into the image, read decrypted.
    const appDesc = ota.esp_partition_read(s.partition, 32, 256);
    const slots: AppSlot[] = parts
      .filter((p) => p.type === PART_TYPE.app)
      .map((p) => ({ label: p.label, subtype: p.subtype, offset: p.offset, size: p.size }));
    const fe = ef.flashEncryptionMode;
    return {
      protocol: PROTOCOL_VERSION,
      chip: this.dev.spec.chip,
      // The simulator has no chip-revision eFuse; it reports an ESP32 v3.0 and an S3 v0.
      // Firmware: efuse_hal_chip_revision() (major × 100 + minor) / 100.
      revision: this.dev.spec.chip === "esp32" ? 3 : 0,
      mac: ef.mac,
      flashSize: this.dev.spec.flashSize,
      flashEncryption: fe === "disabled" ? 0 : fe === "development" ? 1 : 2,
      secureBootVersion: ef.secureBootVersion,
      efuseSecureVersion: ef.secureVersion,
      runningOffset: s.partition.offset,
      runningState: ota.esp_ota_get_state_partition(s.partition).state ?? OTA_STATE.UNDEFINED,
      maxPayload: 4 + DATA_CHUNK,
      rxBuffer: this.cfg.rx.ringBytes + HW_FIFO,
      isrInIram: this.cfg.rx.isrInIram ? 1 : 0,
      slots,
      otadata,
      appDesc,
      resume: this.readProgress(),
      // esp_partition_get_sha256 is for partitions; the table itself: esp_flash_read (decrypted
      // with flash encryption on, as the app's partition API reads it) into mbedtls_sha256.
      partitionTableSha256: sha256(
        this.dev.spi.read(
          this.dev.spec.partitionTableOffset,
          PARTITION_TABLE_MAX_LEN,
          this.dev.spi.encryptionEnabled,
        ),
      ),
    };
  }

  private onBegin(p: Uint8Array): void {
    const m = decodeBegin(p);
    if (!m) {
      this.result(MSG.BEGIN, STATUS.BAD_REQUEST, 0, 0, "bad BEGIN");
      return;
    }
    const ota = this.dev.ota;
    const running = ota.esp_ota_get_running_partition();
    const slot = otaAppPartitions(this.dev.partitions).find((s) => s.offset === m.offset);
    if (m.offset === running.offset) {
      this.result(
        MSG.BEGIN,
        STATUS.RUNNING_SLOT,
        ESP_ERR.ESP_ERR_OTA_PARTITION_CONFLICT,
        0,
        `0x${m.offset.toString(16)} is the running slot`,
      );
      return;
    }
    if (!slot) {
      this.result(
        MSG.BEGIN,
        STATUS.NOT_APP_SLOT,
        ESP_ERR.ESP_ERR_NOT_FOUND,
        0,
        `0x${m.offset.toString(16)} is not an OTA app slot`,
      );
      return;
    }
    if (m.size === 0 || m.size > slot.size) {
      this.result(
        MSG.BEGIN,
        STATUS.TOO_BIG,
        ESP_ERR.ESP_ERR_INVALID_SIZE,
        0,
        `${m.size} bytes do not fit ${slot.label} (${slot.size})`,
      );
      return;
    }
    if (this.dev.spec.bootloader.rollback) {
      const st = ota.esp_ota_get_state_partition(running);
      if (st.err === ESP_ERR.ESP_OK && st.state === OTA_STATE.PENDING_VERIFY) {
        this.result(
          MSG.BEGIN,
          STATUS.PENDING_VERIFY,
          ESP_ERR.ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
          0,
          "the running app has not confirmed itself yet",
        );
        return;
      }
    }
    const t: Transfer = {
      slot,
      size: m.size,
      sha256: m.sha256,
      received: 0,
      written: 0,
      erasedTo: 0,
      credit: 0,
      staging: new Uint8Array(this.cfg.rx.isrInIram ? DATA_CHUNK : this.window),
      stagingLen: 0,
      gapReportedAt: -1,
      sinceGapReport: 0,
      batchEnd: 0,
    };
    const rec = this.readProgress();
    if (
      rec &&
      rec.offset === m.offset &&
      rec.size === m.size &&
      equalBytes(rec.sha256, m.sha256) &&
      rec.written <= m.size
    ) {
      // §6.4 resume: everything before `written` is in flash; the unit holding `written` and
      // all after it are erased again before use (a cut may have left a page half-programmed).
      t.received = t.written = t.erasedTo = rec.written;
    } else {
      if (this.dev.spec.bootloader.rollback) {
        // esp32-facts §1.4: make sure otadata cannot point at the slot while it is half-written.
        const e = ota.esp_ota_invalidate_inactive_ota_data_slot();
        if (e !== ESP_ERR.ESP_OK && e !== ESP_ERR.ESP_ERR_NOT_FOUND) {
          this.result(MSG.BEGIN, STATUS.FLASH_ERROR, e, 0, "invalidate otadata");
          return;
        }
      }
      this.startProgress(m.offset, m.size, m.sha256);
    }
    this.state = { kind: "receiving", t };
    this.result(MSG.BEGIN, STATUS.OK, 0, t.received, `${slot.label}`);
    if (this.cfg.rx.isrInIram) {
      t.credit = Math.min(t.size, t.received + this.window);
      this.sendAck(0);
    } else this.grantBatch(t);
  }

  private onData(p: Uint8Array): void {
    if (this.state.kind !== "receiving") return;
    const t = this.state.t;
    const m = decodeData(p);
    if (!m || m.data.length === 0 || m.offset + m.data.length > t.size) {
      this.ackDue = true;
      return;
    }
    if (m.offset !== t.received) {
      // Earlier offset: a duplicate, already have it. Later: a frame was lost; say where to
      // resume once (§4.3, go-back-N), then drop the frames that follow the gap.
      // If the resent frame is lost too, report again once a window's worth of later frames
      // has gone by (the host has resent past the gap by then).
      if (m.offset > t.received) {
        if (t.gapReportedAt !== t.received || ++t.sinceGapReport >= this.window / DATA_CHUNK) {
          t.gapReportedAt = t.received;
          t.sinceGapReport = 0;
          this.sendAck(1);
        }
      } else this.ackDue = true;
      return;
    }
    if (t.stagingLen + m.data.length > t.staging.length) this.flush(t);
    t.staging.set(m.data, t.stagingLen);
    t.stagingLen += m.data.length;
    t.received += m.data.length;
    this.ackDue = true;
    if (this.cfg.rx.isrInIram) {
      t.credit = Math.min(t.size, Math.max(t.credit, t.received + this.window));
      if (t.stagingLen === t.staging.length || t.received === t.size) {
        // Tell the host about the credit before the flash keeps us busy (the ISR still fills
        // the ring meanwhile, so the host keeps sending).
        this.sendAck(0);
        this.flush(t);
      }
    } else if (t.received === t.batchEnd) {
      // Not in IRAM: program flash only at a batch boundary, where the host pauses (§7).
      this.flush(t);
      this.grantBatch(t);
    }
  }

  /**
   * ISR not in IRAM: credit runs one batch past the next boundary, and the ACK says how long
   * the flash will be busy at that boundary, so the host sends the batch after it to arrive
   * just as the flash finishes (the turnaround latency is hidden, §7).
   */
  private grantBatch(t: Transfer): void {
    t.batchEnd = Math.min(t.size, t.received + this.window);
    t.credit = Math.min(t.size, t.batchEnd + this.window);
    const busy = t.batchEnd < t.size ? this.estimateFlushMs(t, t.received, t.batchEnd) : 0;
    this.sendAck(0, t.batchEnd, busy);
  }

  private onEnd(): void {
    const st = this.state;
    if (st.kind === "verified") {
      // Idempotent: the same answer as the first END (§3.4).
      this.result(MSG.END, STATUS.OK, 0, st.t.size, st.version);
      return;
    }
    if (st.kind !== "receiving") return;
    const t = st.t;
    if (t.received !== t.size) {
      this.result(
        MSG.END,
        STATUS.INCOMPLETE,
        ESP_ERR.ESP_ERR_INVALID_SIZE,
        t.received,
        `${t.received} of ${t.size} bytes received`,
      );
      return;
    }
    this.flush(t);
    const ota = this.dev.ota;
    // Every byte, read back from flash (covers resumed transfers too).
    const h = sha256.create();
    for (let o = 0; o < t.size; o += SECTOR_SIZE)
      h.update(ota.esp_partition_read_raw(t.slot, o, Math.min(SECTOR_SIZE, t.size - o)));
    const got = h.digest();
    if (!equalBytes(got, t.sha256)) {
      this.state = { kind: "idle" };
      this.closeProgress();
      this.result(
        MSG.END,
        STATUS.HASH_MISMATCH,
        ESP_ERR.ESP_ERR_INVALID_CRC,
        0,
        `flash SHA-256 ${toHex(got).slice(0, 16)}… ≠ BEGIN's ${toHex(t.sha256).slice(0, 16)}…`,
      );
      return;
    }
    const check = ota.verifyImage(t.slot);
    if (!check.ok) {
      this.state = { kind: "idle" };
      this.closeProgress();
      this.result(
        MSG.END,
        STATUS.IMAGE_INVALID,
        ESP_ERR.ESP_ERR_OTA_VALIDATE_FAILED,
        0,
        check.log
          .map((l) => l.message)
          .join("; ")
          .slice(0, 255),
      );
      return;
    }
    const sv = check.appDesc?.secureVersion ?? 0;
    if (this.dev.spec.bootloader.antiRollback && sv < this.dev.efuses.secureVersion) {
      this.state = { kind: "idle" };
      this.closeProgress();
      this.result(
        MSG.END,
        STATUS.SMALL_SEC_VER,
        ESP_ERR.ESP_ERR_OTA_SMALL_SEC_VER,
        sv,
        `secure_version ${sv} < eFuse ${this.dev.efuses.secureVersion}`,
      );
      return;
    }
    const version = check.appDesc?.version ?? "";
    this.state = { kind: "verified", t, version };
    this.result(MSG.END, STATUS.OK, 0, t.size, version);
  }

  private onActivate(): void {
    const st = this.state;
    if (st.kind === "activated") {
      this.result(MSG.ACTIVATE, STATUS.OK, 0, 0, "already");
      return;
    }
    if (st.kind !== "verified") return;
    const err = this.dev.ota.esp_ota_set_boot_partition(st.t.slot);
    if (err !== ESP_ERR.ESP_OK) {
      this.state = { kind: "idle" };
      this.closeProgress();
      this.result(MSG.ACTIVATE, STATUS.IMAGE_INVALID, err, 0, espErrToName(err));
      return;
    }
    this.closeProgress();
    this.state = { kind: "activated", slot: st.t.slot };
    this.result(MSG.ACTIVATE, STATUS.OK, 0, 0, st.t.slot.label);
  }

  private onReboot(): void {
    this.result(MSG.REBOOT, STATUS.OK, 0, 0, "restarting");
    this.env.after(this.txMs(64), () => this.env.restart());
  }

  private onAbort(): void {
    if (this.state.kind === "receiving" || this.state.kind === "verified") this.closeProgress();
    // After ACTIVATE, ABORT cannot undo otadata; it says so (the host never aborts there).
    const activated = this.state.kind === "activated";
    if (!activated) this.state = { kind: "idle" };
    this.result(
      MSG.ABORT,
      activated ? STATUS.BAD_STATE : STATUS.OK,
      0,
      0,
      activated ? "already activated; REBOOT to run it" : "aborted",
    );
  }

  private onBaud(p: Uint8Array): void {
    const baud = decodeBaud(p);
    if (baud === undefined || !(SUPPORTED_BAUDS as readonly number[]).includes(baud)) {
      this.result(MSG.BAUD, STATUS.BAD_BAUD, ESP_ERR.ESP_ERR_INVALID_ARG, 0, `${baud}`);
      return;
    }
    const old = this.env.baud;
    this.result(MSG.BAUD, STATUS.OK, 0, baud, "switching");
    // uart_wait_tx_done, then uart_set_baudrate; back to the old rate unless confirmed (§3.3).
    this.env.after(this.txMs(32), () => {
      this.env.setBaud(baud);
      this.baudConfirm = this.env.after(BAUD_CONFIRM_MS, () => {
        this.baudConfirm = undefined;
        this.env.setBaud(old);
      });
    });
  }

  // ---- the one write path ----

  private send(type: number, payload: Uint8Array): void {
    this.env.send(encodeFrame(type, payload));
  }

  private result(request: number, status: number, espErr: number, value: number, detail: string) {
    this.send(MSG.RESULT, encodeResult({ request, status, espErr, value, detail }));
  }

  private sendAck(flags: number, holdAt = 0, busyMs = 0): void {
    const st = this.state;
    if (st.kind !== "receiving") return;
    const t = st.t;
    if (!this.cfg.rx.isrInIram && holdAt === 0 && t.batchEnd < t.size) {
      holdAt = t.batchEnd;
      busyMs = this.estimateFlushMs(t, t.batchEnd - this.window, t.batchEnd);
    }
    const ack: Ack = {
      received: t.received,
      credit: t.credit,
      written: t.written,
      holdAt,
      busyMs,
      flags,
    };
    this.ackDue = false;
    this.send(MSG.ACK, encodeAck(ack));
  }

  private txMs(bytes: number): number {
    return (bytes * 10_000) / this.env.baud + 1;
  }

  // ---- flash ----

  private flush(t: Transfer): void {
    if (t.stagingLen === 0) return;
    const start = t.received - t.stagingLen;
    const end = t.received;
    const ota = this.dev.ota;
    this.eraseTo(t, end);
    const err = ota.esp_partition_write_raw(t.slot, start, t.staging.subarray(0, t.stagingLen));
    t.stagingLen = 0;
    if (err !== ESP_ERR.ESP_OK)
      throw new RangeError(`esp_partition_write_raw: ${espErrToName(err)}`);
    const before = t.written;
    t.written = end;
    if (Math.floor(before / PROGRESS_EVERY) !== Math.floor(end / PROGRESS_EVERY))
      this.appendProgress(Math.floor(end / PROGRESS_EVERY) * PROGRESS_EVERY);
  }

  private eraseUnit(t: Transfer, at: number): number {
    const eraseEnd = Math.ceil(t.size / SECTOR_SIZE) * SECTOR_SIZE;
    return (t.slot.offset + at) % BLOCK_SIZE === 0 && at + BLOCK_SIZE <= eraseEnd
      ? BLOCK_SIZE
      : SECTOR_SIZE;
  }

  private eraseTo(t: Transfer, end: number): void {
    while (t.erasedTo < end) {
      const n = this.eraseUnit(t, t.erasedTo);
      const err = this.dev.ota.esp_partition_erase_range(t.slot, t.erasedTo, n);
      if (err !== ESP_ERR.ESP_OK)
        throw new RangeError(`esp_partition_erase_range: ${espErrToName(err)}`);
      t.erasedTo += n;
    }
  }

  /**
   * Flash time a flush of image bytes [start, end) will take once everything before `start` is
   * in flash, from the chip's timing (ceil to whole ms; a progress record adds one page).
   */
  private estimateFlushMs(t: Transfer, start: number, end: number): number {
    const timing = this.dev.flash.timing;
    let ms = 0;
    let a = t.erasedTo;
    while (a < start) a += this.eraseUnit(t, a);
    while (a < end) {
      const n = this.eraseUnit(t, a);
      ms += n === BLOCK_SIZE ? timing.blockEraseMs : timing.sectorEraseMs;
      a += n;
    }
    const first = Math.floor((t.slot.offset + start) / PAGE_SIZE);
    const last = Math.floor((t.slot.offset + end - 1) / PAGE_SIZE);
    ms += (last - first + 1) * timing.pageProgramMs;
    if (Math.floor(start / PROGRESS_EVERY) !== Math.floor(end / PROGRESS_EVERY))
      ms += timing.pageProgramMs;
    return Math.ceil(ms);
  }

  // ---- durable progress (§6.4): NVS blob on firmware; a raw sector in the simulator ----

  private progressPartition(): Partition | undefined {
    return findPartition(this.dev.partitions, PART_TYPE.data, DATA_SUBTYPE.nvs);
  }

  private progressBase(p: Partition): number {
    return p.size - SECTOR_SIZE;
  }

  private startProgress(offset: number, size: number, hash: Uint8Array): void {
    const p = this.progressPartition();
    if (!p) return;
    const ota = this.dev.ota;
    const base = this.progressBase(p);
    ota.esp_partition_erase_range(p, base, SECTOR_SIZE);
    const h = new Uint8Array(48);
    const v = new DataView(h.buffer);
    v.setUint32(0, PROGRESS_MAGIC, true);
    v.setUint32(4, offset, true);
    v.setUint32(8, size, true);
    h.set(hash, 12);
    v.setUint32(44, crc32of(h.subarray(0, 44)), true);
    ota.esp_partition_write_raw(p, base, h);
  }

  private appendProgress(written: number, magic = ENTRY_MAGIC): void {
    const p = this.progressPartition();
    if (!p) return;
    const ota = this.dev.ota;
    const base = this.progressBase(p);
    const all = ota.esp_partition_read_raw(p, base, SECTOR_SIZE);
    for (let o = 64; o + 16 <= SECTOR_SIZE; o += 16) {
      if (all[o] !== 0xff || all[o + 1] !== 0xff || all[o + 2] !== 0xff || all[o + 3] !== 0xff)
        continue;
      const e = new Uint8Array(12);
      const v = new DataView(e.buffer);
      v.setUint32(0, magic, true);
      v.setUint32(4, written, true);
      v.setUint32(8, crc32of(e.subarray(0, 8)), true);
      ota.esp_partition_write_raw(p, base + o, e);
      return;
    }
  }

  private closeProgress(): void {
    this.appendProgress(0, DONE_MAGIC);
  }

  private readProgress(): ResumeRecord | undefined {
    const p = this.progressPartition();
    if (!p) return undefined;
    const all = this.dev.ota.esp_partition_read_raw(p, this.progressBase(p), SECTOR_SIZE);
    const v = new DataView(all.buffer, all.byteOffset, all.byteLength);
    if (v.getUint32(0, true) !== PROGRESS_MAGIC) return undefined;
    if (crc32of(all.subarray(0, 44)) !== v.getUint32(44, true)) return undefined;
    let written = 0;
    for (let o = 64; o + 16 <= SECTOR_SIZE; o += 16) {
      const magic = v.getUint32(o, true);
      if (magic === 0xffffffff) break;
      // An entry cut short by a power cut fails its CRC: it and anything after are ignored.
      if (crc32of(all.subarray(o, o + 8)) !== v.getUint32(o + 8, true)) break;
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
}

const PROGRESS_MAGIC = 0x41544f55; // "UOTA"
const ENTRY_MAGIC = 0x474f5250; // "PROG"
const DONE_MAGIC = 0x454e4f44; // "DONE"

function crc32of(b: Uint8Array): number {
  return crc32(b);
}
