/**
 * otadata (the data/ota partition) and the OTA boot-selection state machine, as ESP-IDF v5.0–v6.x
 * implements it. Pure: bytes and plain decisions in, bytes and plain decisions out. A device
 * simulator executes the decisions (erase a sector, write 32 bytes, try to load an image, burn an
 * eFuse) against its own flash, so power loss and image failures can be injected between steps.
 *
 * Sources (ESP-IDF v6.0.2, 7101770; the same logic since v5.0 unless noted):
 * - components/bootloader_support/include/esp_flash_partitions.h: esp_ota_select_entry_t, states.
 * - components/bootloader_support/src/bootloader_common_loader.c: bootloader_common_ota_select_crc,
 *   _invalid, _valid, bootloader_common_get_active_otadata, bootloader_common_select_otadata.
 * - components/bootloader_support/src/bootloader_utility.c:
 *   bootloader_utility_get_selected_boot_partition, bootloader_utility_load_boot_image,
 *   set_actual_ota_seq, check_anti_rollback, update_anti_rollback.
 * - components/bootloader/subproject/main/bootloader_start.c: selected_boot_partition (test pin).
 * - components/app_update/esp_ota_ops.c: esp_ota_set_boot_partition (esp_rewrite_ota_data,
 *   compute_ota_seq_for_target_slot, rewrite_ota_seq), esp_ota_current_ota_is_workable (mark
 *   valid/invalid), esp_ota_check_rollback_is_possible, esp_ota_get_state_partition,
 *   esp_ota_get_next_update_partition, esp_ota_invalidate_inactive_ota_data_slot.
 * - components/efuse/src/esp_efuse_fields.c: esp_efuse_check/update_secure_version.
 * - components/app_update/otatool.py: OtatoolTarget.switch_ota_partition.
 * Checked byte for byte against test/fixtures/otadata (the compiled bootloader C code and otatool).
 */
import { crc32, putU32le, toHex, u32le } from "../bytes.js";
import { EspOtaError } from "../errors.js";

export const OTADATA_SIZE = 0x2000;
/** One flash sector; copy i lives at i * OTADATA_SECTOR and every write erases its whole sector. */
export const OTADATA_SECTOR = 0x1000;
export const OTA_ENTRY_SIZE = 32;
export const OTA_SEQ_LABEL_SIZE = 20;
/** ota_seq of an erased entry; bootloader_common_ota_select_invalid treats it as empty. */
export const OTA_SEQ_EMPTY = 0xffffffff;
/** ota_0..ota_15 (bootloader_config.h MAX_OTA_SLOTS; app subtypes 0x10..0x1F). */
export const MAX_OTA_SLOTS = 16;

/** Boot indices as in bootloader_config.h: 0..N-1 are ota_0..ota_{N-1}. */
export const FACTORY_INDEX = -1;
export const TEST_APP_INDEX = -2;
export const INVALID_INDEX = -99;

/** esp_ota_img_states_t (esp_flash_partitions.h). */
export const OTA_STATE = {
  NEW: 0,
  PENDING_VERIFY: 1,
  VALID: 2,
  INVALID: 3,
  ABORTED: 4,
  UNDEFINED: 0xffffffff,
} as const;

/** esp_ota_select_entry_t: u32 ota_seq, u8 seq_label[20], u32 ota_state, u32 crc (little-endian). */
export interface OtaEntry {
  seq: number;
  /** 20 bytes; ESP-IDF never interprets it and writes back whatever it read (normally 0xFF). */
  label: Uint8Array;
  state: number;
  crc: number;
}

export type OtadataCopies = readonly [OtaEntry, OtaEntry];

export interface OtaLayout {
  /** Number of OTA app partitions, ota_0..ota_{N-1} without gaps (0..16). */
  otaSlotCount: number;
  hasFactory: boolean;
  hasTest: boolean;
}

/** CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK; it depends on CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE. */
export interface AntiRollbackConfig {
  /** The eFuse secure version: the number of set bits in the SECURE_VERSION field. */
  efuseSecureVersion: number;
  /**
   * `esp_app_desc_t.secure_version` of the app in a boot index (0..N-1, FACTORY_INDEX,
   * TEST_APP_INDEX), or undefined when its descriptor cannot be read (no 0xABCD5432 magic).
   */
  slotSecureVersion: (slot: number) => number | undefined;
  /**
   * CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD. Default 16, the Kconfig default for every
   * target except ESP32 (32), ESP32-C2 (4) and ESP32-C5 (9); an app version above it is never burnt.
   */
  secureVersionBits?: number;
}

export interface BootConfig {
  /** CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE. */
  rollback: boolean;
  antiRollback?: AntiRollbackConfig;
  /** CONFIG_BOOTLOADER_APP_TEST and its GPIO held at reset: boot the test app only. Default false. */
  testAppPin?: boolean;
}

/** Erase sector `copy` of otadata, then write the 32-byte entry at its start (write_otadata). */
export interface OtadataWrite {
  copy: 0 | 1;
  entry: OtaEntry;
}

export interface BootPlan {
  /** Writes made during selection, in order, before any image is loaded. */
  preWrites: OtadataWrite[];
  /** What bootloader_utility_get_selected_boot_partition (and the test pin) returns. */
  startIndex: number;
  /**
   * bootloader_utility_load_boot_image's walk over partitions that exist and pass the
   * anti-rollback check: start, down to factory, up over the remaining OTA slots, then test.
   * The simulator loads them in order and boots the first that verifies; none → reset.
   */
  attemptOrder: number[];
  /** ota_has_initial_contents: after an OTA slot loads, copy 0 is rewritten (see afterLoad). */
  initialContents: boolean;
  /** The messages the bootloader prints at the default INFO level, in order. */
  log: string[];
  /** Every log line with level and tag, ESP_LOGD ones included. */
  logLines?: BootLogLine[];
  /** The copy selection used after the pre-writes (-1: none), which may differ from activeCopy. */
  selectedCopy?: 0 | 1 | -1;
  /** Anti-rollback: eFuse secure version raised to this during selection (a VALID entry). */
  burnSecureVersion?: number;
  /** Anti-rollback: the eFuse secure version the load walk compares against. */
  efuseSecureVersion?: number;
  /** Anti-rollback: indices the walk skips (secure_version below eFuse, or no app descriptor). */
  antiRollbackRejected?: number[];
}

export type OtadataFailureCode = "E_OTADATA_NO_ACTIVE_ENTRY" | "E_OTA_ROLLBACK_FAILED";
export type OtadataFailure = { ok: false; code: OtadataFailureCode; reason: string };

// ---------------------------------------------------------------------------------------------
// Entries

function assertBytes(b: unknown, what: string): asserts b is Uint8Array {
  if (!(b instanceof Uint8Array)) throw new TypeError(`${what}: expected a Uint8Array`);
}

function assertU32(v: unknown, what: string): asserts v is number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`${what}: ${String(v)} is not a uint32`);
  }
}

function le32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  putU32le(b, 0, v);
  return b;
}

/** bootloader_common_ota_select_crc: esp_rom_crc32_le(0xFFFFFFFF, &ota_seq, 4), ota_seq only. */
export function otaSeqCrc(seq: number): number {
  assertU32(seq, "otaSeqCrc seq");
  return crc32(le32(seq), 0xffffffff);
}

/** An entry as ESP-IDF writes one: label 0xFF, crc computed. */
export function otaEntry(
  seq: number,
  state: number,
  label: Uint8Array = new Uint8Array(OTA_SEQ_LABEL_SIZE).fill(0xff),
): OtaEntry {
  assertU32(state, "otaEntry state");
  return { seq, label: label.slice(), state, crc: otaSeqCrc(seq) };
}

export function decodeOtaEntry(b: Uint8Array): OtaEntry {
  assertBytes(b, "decodeOtaEntry");
  if (b.length !== OTA_ENTRY_SIZE) {
    throw new EspOtaError(
      "E_OTADATA_ENTRY_SIZE",
      `an otadata entry is ${OTA_ENTRY_SIZE} bytes, got ${b.length}`,
      { length: b.length },
    );
  }
  return {
    seq: u32le(b, 0),
    label: b.slice(4, 4 + OTA_SEQ_LABEL_SIZE),
    state: u32le(b, 24),
    crc: u32le(b, 28),
  };
}

export function encodeOtaEntry(e: OtaEntry): Uint8Array {
  assertU32(e.seq, "OtaEntry.seq");
  assertU32(e.state, "OtaEntry.state");
  assertU32(e.crc, "OtaEntry.crc");
  assertBytes(e.label, "OtaEntry.label");
  if (e.label.length !== OTA_SEQ_LABEL_SIZE) {
    throw new RangeError(`OtaEntry.label: ${e.label.length} bytes, must be ${OTA_SEQ_LABEL_SIZE}`);
  }
  const b = new Uint8Array(OTA_ENTRY_SIZE);
  putU32le(b, 0, e.seq);
  b.set(e.label, 4);
  putU32le(b, 24, e.state);
  putU32le(b, 28, e.crc);
  return b;
}

function assertOtadataSize(b: Uint8Array): void {
  if (b.length !== OTADATA_SIZE) {
    throw new EspOtaError(
      "E_OTADATA_SIZE",
      `otadata must be 0x${OTADATA_SIZE.toString(16)} bytes (two 4 KB sectors), got ${b.length} (0x${b.length.toString(16)})`,
      { length: b.length },
    );
  }
}

/** Copy 0 at 0x0, copy 1 at 0x1000 (bootloader_common_read_otadata; the rest is ignored). */
export function decodeOtadata(b: Uint8Array): [OtaEntry, OtaEntry] {
  assertBytes(b, "decodeOtadata");
  assertOtadataSize(b);
  return [
    decodeOtaEntry(b.subarray(0, OTA_ENTRY_SIZE)),
    decodeOtaEntry(b.subarray(OTADATA_SECTOR, OTADATA_SECTOR + OTA_ENTRY_SIZE)),
  ];
}

/** Both entries at their sector starts, 0xFF (erased flash) everywhere else. */
export function encodeOtadata(entries: OtadataCopies): Uint8Array {
  const out = new Uint8Array(OTADATA_SIZE).fill(0xff);
  out.set(encodeOtaEntry(entries[0]), 0);
  out.set(encodeOtaEntry(entries[1]), OTADATA_SECTOR);
  return out;
}

/** bootloader_common_ota_select_invalid: empty seq or a rejected state. The CRC is not looked at. */
export function entryInvalid(e: OtaEntry): boolean {
  return e.seq === OTA_SEQ_EMPTY || e.state === OTA_STATE.INVALID || e.state === OTA_STATE.ABORTED;
}

export function entryCrcOk(e: OtaEntry): boolean {
  return e.crc === otaSeqCrc(e.seq);
}

/** bootloader_common_ota_select_valid: not invalid and the CRC matches. */
export function entryValid(e: OtaEntry): boolean {
  return !entryInvalid(e) && entryCrcOk(e);
}

/**
 * "Initial contents" as get_selected_boot_partition tests it: seq empty or CRC wrong. Unlike
 * entryInvalid this ignores the state and counts a bad CRC.
 */
function entryInitial(e: OtaEntry): boolean {
  return e.seq === OTA_SEQ_EMPTY || !entryCrcOk(e);
}

/** bootloader_common_select_otadata: both usable → larger seq (max) or smaller (min), tie → copy 0. */
function selectCopy(entries: OtadataCopies, usable: readonly [boolean, boolean], max = true) {
  if (usable[0] && usable[1]) {
    const pick = max
      ? Math.max(entries[0].seq, entries[1].seq)
      : Math.min(entries[0].seq, entries[1].seq);
    return pick === entries[0].seq ? 0 : 1;
  }
  if (usable[0]) return 0;
  if (usable[1]) return 1;
  return -1;
}

/** bootloader_common_get_active_otadata: the copy the app side treats as current. */
export function activeCopy(entries: OtadataCopies): 0 | 1 | -1 {
  return selectCopy(entries, [entryValid(entries[0]), entryValid(entries[1])]);
}

const STATE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(OTA_STATE).map(([k, v]) => [v, k]),
);

export function stateName(state: number): string {
  return STATE_NAMES[state] ?? `UNKNOWN(0x${(state >>> 0).toString(16).padStart(8, "0")})`;
}

/** The OTA slot an ota_seq selects: (ota_seq - 1) % N in uint32 arithmetic (seq 0 wraps). */
export function seqToSlot(seq: number, otaSlotCount: number): number {
  assertU32(seq, "seqToSlot seq");
  assertSlotCount(otaSlotCount, 1);
  return ((seq - 1) >>> 0) % otaSlotCount;
}

/** "ota_0", "factory", "test", "invalid". */
export function indexName(index: number): string {
  if (index === FACTORY_INDEX) return "factory";
  if (index === TEST_APP_INDEX) return "test";
  if (index >= 0) return `ota_${index}`;
  return "invalid";
}

function assertSlotCount(n: unknown, min: number): asserts n is number {
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > MAX_OTA_SLOTS) {
    throw new RangeError(
      `otaSlotCount: ${String(n)} is not an integer in ${min}..${MAX_OTA_SLOTS}`,
    );
  }
}

function assertSlot(slot: unknown, n: number): asserts slot is number {
  if (typeof slot !== "number" || !Number.isInteger(slot) || slot < 0 || slot >= n) {
    // esp_rewrite_ota_data returns ESP_ERR_INVALID_ARG for a slot past the table's OTA apps.
    throw new RangeError(`slot: ${String(slot)} is not an OTA slot of a ${n}-slot table`);
  }
}

function assertLayout(layout: OtaLayout): void {
  assertSlotCount(layout.otaSlotCount, 0);
  if (typeof layout.hasFactory !== "boolean" || typeof layout.hasTest !== "boolean") {
    throw new TypeError("OtaLayout: hasFactory and hasTest must be booleans");
  }
}

function assertConfig(cfg: BootConfig, layout?: OtaLayout): void {
  if (typeof cfg.rollback !== "boolean") throw new TypeError("BootConfig.rollback: boolean");
  const ar = cfg.antiRollback;
  if (ar === undefined) return;
  if (!cfg.rollback) {
    // Kconfig.app_rollback: BOOTLOADER_APP_ANTI_ROLLBACK depends on BOOTLOADER_APP_ROLLBACK_ENABLE.
    throw new RangeError("BootConfig: antiRollback requires rollback (Kconfig dependency)");
  }
  const bits = ar.secureVersionBits ?? DEFAULT_SECURE_VERSION_BITS;
  if (!Number.isInteger(bits) || bits < 1 || bits > 32) {
    throw new RangeError(`secureVersionBits: ${bits} is not in 1..32`);
  }
  if (!Number.isInteger(ar.efuseSecureVersion) || ar.efuseSecureVersion < 0) {
    throw new RangeError(`efuseSecureVersion: ${ar.efuseSecureVersion} is not a count of bits`);
  }
  if (ar.efuseSecureVersion > bits) {
    // esp_efuse_read_secure_version masks the field to `bits` bits before counting them.
    throw new RangeError(`efuseSecureVersion: ${ar.efuseSecureVersion} > field size ${bits} bits`);
  }
  if (typeof ar.slotSecureVersion !== "function") {
    throw new TypeError("antiRollback.slotSecureVersion must be a function");
  }
  if (layout && layout.otaSlotCount === 0) {
    // The anti-rollback branch computes `ota_seq % bs->app_count` with no app_count == 0 guard.
    throw new RangeError("antiRollback needs at least one OTA slot (ESP-IDF divides by app_count)");
  }
}

const DEFAULT_SECURE_VERSION_BITS = 16;

// ---------------------------------------------------------------------------------------------
// Bootloader

/** One ESP-IDF log line: ESP_LOGx(tag, ...) without the timestamp. */
export interface BootLogLine {
  level: "E" | "W" | "I" | "D";
  tag: string;
  message: string;
}

const logI = (tag: string, message: string): BootLogLine => ({ level: "I", tag, message });
const logW = (tag: string, message: string): BootLogLine => ({ level: "W", tag, message });
const logE = (tag: string, message: string): BootLogLine => ({ level: "E", tag, message });
const logD = (tag: string, message: string): BootLogLine => ({ level: "D", tag, message });

/** What a bootloader built with the default log level (INFO) prints: D lines dropped. */
function printed(lines: readonly BootLogLine[]): string[] {
  return lines.filter((l) => l.level !== "D").map((l) => l.message);
}

/** check_anti_rollback: the app's descriptor is readable and its secure_version >= eFuse. */
function antiRollbackAllows(
  ar: Pick<AntiRollbackConfig, "slotSecureVersion">,
  efuse: number,
  index: number,
): boolean {
  const v = ar.slotSecureVersion(index);
  return v !== undefined && v >= efuse;
}

/**
 * update_anti_rollback → esp_efuse_update_secure_version: burns up to the app's secure_version if
 * it is higher and fits the field. Returns the eFuse value afterwards.
 */
function antiRollbackUpdate(
  ar: AntiRollbackConfig,
  efuse: number,
  index: number,
  log: BootLogLine[],
): number {
  const v = ar.slotSecureVersion(index);
  if (v === undefined) {
    // bootloader_common_get_partition_description: ESP_ERR_NOT_FOUND (0x105) without the magic.
    log.push(logE("boot", "Failed to get partition description 261"));
    return efuse;
  }
  const bits = ar.secureVersionBits ?? DEFAULT_SECURE_VERSION_BITS;
  if (bits < v) {
    log.push(
      logE("efuse", `Max secure version is ${bits}. Given ${v} version can not be written.`),
    );
    return efuse;
  }
  if (efuse < v) {
    log.push(logI("efuse", `Anti-rollback is set. eFuse field is updated(${v}).`));
    return v;
  }
  if (efuse > v) {
    log.push(
      logE(
        "efuse",
        `Anti-rollback is not set. secure_version of app is lower that eFuse field(${efuse}).`,
      ),
    );
  }
  return efuse;
}

/**
 * The second-stage bootloader's decisions for one boot, before it loads any image:
 * get_selected_boot_partition (with the rollback rewrites and the anti-rollback burn it makes on
 * the way), selected_boot_partition's test-app pin, and the order load_boot_image will try.
 * `otadata` null means the partition table has no data/ota partition (→ factory).
 */
export function planBoot(otadata: Uint8Array | null, layout: OtaLayout, cfg: BootConfig): BootPlan {
  assertLayout(layout);
  assertConfig(cfg, layout);
  const n = layout.otaSlotCount;
  const ar = cfg.antiRollback;
  const log: BootLogLine[] = [];
  const preWrites: OtadataWrite[] = [];
  let startIndex = FACTORY_INDEX;
  let initialContents = false;
  let selectedCopy: 0 | 1 | -1 = -1;
  let efuse = ar?.efuseSecureVersion;
  let burnSecureVersion: number | undefined;

  if (otadata !== null) {
    const e = decodeOtadata(otadata) as OtaEntry[];
    const write = (copy: 0 | 1, entry: OtaEntry) => {
      e[copy] = entry;
      preWrites.push({ copy, entry });
    };
    if (cfg.rollback) {
      // An app still PENDING_VERIFY at reset never confirmed itself: abort it, for both copies.
      for (const i of [0, 1] as const) {
        if (e[i]!.state === OTA_STATE.PENDING_VERIFY) {
          log.push(logD("boot", `otadata[${i}] is marking as ABORTED`));
          write(i, { ...e[i]!, label: e[i]!.label.slice(), state: OTA_STATE.ABORTED });
        }
      }
    }
    const copies = [e[0]!, e[1]!] as const;
    let active: 0 | 1 | -1 = -1;
    let selectFromActive = false;
    if (ar === undefined) {
      if ((entryInvalid(copies[0]) && entryInvalid(copies[1])) || n === 0) {
        log.push(
          logD(
            "boot",
            `OTA sequence numbers both empty (all-0xFF) or partition table does not have bootable ota_apps (app_count=${n})`,
          ),
        );
        if (layout.hasFactory) {
          log.push(logI("boot", "Defaulting to factory image"));
          startIndex = FACTORY_INDEX;
        } else {
          log.push(logI("boot", "No factory image, trying OTA 0"));
          startIndex = 0;
          initialContents = entryInitial(copies[0]) && entryInitial(copies[1]);
        }
      } else {
        active = activeCopy(copies);
        selectFromActive = true;
      }
    } else {
      log.push(logI("boot", "Enabled a check secure version of app for anti rollback"));
      log.push(logI("boot", `Secure version (from eFuse) = ${efuse}`));
      if (entryInitial(copies[0]) && entryInitial(copies[1])) {
        // No factory fallback here: boot_index stays FACTORY_INDEX and the walk tries all slots.
        log.push(logI("boot", "otadata[0..1] in initial state"));
        initialContents = true;
      } else {
        // get_active_otadata_with_check_anti_rollback: a valid entry whose slot's app is below
        // the eFuse version (or has no descriptor) is not selectable.
        const usable = [0, 1].map((i) => {
          const c = copies[i]!;
          return entryValid(c) && antiRollbackAllows(ar, efuse!, seqToSlot(c.seq, n));
        }) as [boolean, boolean];
        active = selectCopy(copies, usable);
        selectFromActive = true;
      }
    }
    if (selectFromActive) {
      if (active !== -1) {
        selectedCopy = active;
        const entry = copies[active];
        startIndex = seqToSlot(entry.seq, n);
        log.push(logD("boot", `Active otadata[${active}]`));
        log.push(logD("boot", `Mapping seq ${(entry.seq - 1) >>> 0} -> OTA slot ${startIndex}`));
        if (cfg.rollback && entry.state === OTA_STATE.NEW) {
          // First boot of a new app: from now on a reset before it confirms means ABORTED.
          log.push(
            logD("boot", `otadata[${active}] is selected as new and marked PENDING_VERIFY state`),
          );
          write(active, { ...entry, label: entry.label.slice(), state: OTA_STATE.PENDING_VERIFY });
        }
        if (ar !== undefined && entry.state === OTA_STATE.VALID) {
          // Burnt during selection, before the image is loaded or verified.
          const after = antiRollbackUpdate(ar, efuse!, startIndex, log);
          if (after > efuse!) burnSecureVersion = after;
          efuse = after;
        }
      } else if (layout.hasFactory) {
        log.push(logE("boot", "ota data partition invalid, falling back to factory"));
        startIndex = FACTORY_INDEX;
      } else {
        log.push(
          logE("boot", "ota data partition invalid and no factory, will try all partitions"),
        );
        startIndex = FACTORY_INDEX;
      }
    }
  }

  // bootloader_start.c selected_boot_partition: the test pin is read after selection, so the
  // rewrites above have already happened.
  if (cfg.testAppPin) {
    log.push(logI("boot", "Detect a boot condition of the test firmware"));
    if (layout.hasTest) {
      startIndex = TEST_APP_INDEX;
    } else {
      log.push(logE("boot", "Test firmware is not found in partition table"));
      startIndex = INVALID_INDEX;
    }
  }

  const exists = (i: number) =>
    i === FACTORY_INDEX
      ? layout.hasFactory
      : i === TEST_APP_INDEX
        ? layout.hasTest
        : i >= 0 && i < n;
  const walk: number[] = [];
  if (startIndex === TEST_APP_INDEX) {
    walk.push(TEST_APP_INDEX);
  } else if (startIndex !== INVALID_INDEX) {
    for (let i = startIndex; i >= FACTORY_INDEX; i--) if (exists(i)) walk.push(i);
    for (let i = startIndex + 1; i < n; i++) if (exists(i)) walk.push(i);
    if (layout.hasTest) walk.push(TEST_APP_INDEX);
  }
  const attemptOrder: number[] = [];
  const antiRollbackRejected: number[] = [];
  for (const i of walk) {
    if (ar === undefined || antiRollbackAllows(ar, efuse!, i)) {
      attemptOrder.push(i);
      continue;
    }
    antiRollbackRejected.push(i);
    const v = ar.slotSecureVersion(i);
    log.push(
      logD(
        "boot",
        v === undefined
          ? `${indexName(i)}: no app descriptor, anti-rollback check fails`
          : `${indexName(i)}: secure_version ${v} < eFuse ${efuse}, anti-rollback check fails`,
      ),
    );
    if (i !== TEST_APP_INDEX) log.push(logE("boot", notBootable(i)));
  }

  const plan: BootPlan = {
    preWrites,
    startIndex,
    attemptOrder,
    initialContents,
    log: printed(log),
    logLines: log,
    selectedCopy,
    antiRollbackRejected,
  };
  if (burnSecureVersion !== undefined) plan.burnSecureVersion = burnSecureVersion;
  if (efuse !== undefined) plan.efuseSecureVersion = efuse;
  return plan;
}

/** log_invalid_app_partition. */
function notBootable(index: number): string {
  if (index === FACTORY_INDEX) return "Factory app partition is not bootable";
  if (index === TEST_APP_INDEX) return "Factory test app partition is not bootable";
  return `OTA app partition slot ${index} is not bootable`;
}

/**
 * What the bootloader does once the image at `loadedIndex` (one of plan.attemptOrder) loaded:
 * set_actual_ota_seq records the slot in copy 0 when otadata had initial contents, and with
 * anti-rollback raises the eFuse to that app's secure_version. `otadataAfterPreWrites` is the flash
 * content at that point; set_actual_ota_seq builds its entry from 0xFF and does not read it.
 */
export function afterLoad(
  plan: BootPlan,
  loadedIndex: number,
  otadataAfterPreWrites: Uint8Array,
  cfg: BootConfig,
): { writes: OtadataWrite[]; burnSecureVersion?: number; log: string[]; logLines: BootLogLine[] } {
  assertBytes(otadataAfterPreWrites, "afterLoad otadataAfterPreWrites");
  assertOtadataSize(otadataAfterPreWrites);
  assertConfig(cfg);
  if (!plan.attemptOrder.includes(loadedIndex)) {
    throw new RangeError(`afterLoad: index ${loadedIndex} is not in the plan's attemptOrder`);
  }
  const log: BootLogLine[] = [];
  const writes: OtadataWrite[] = [];
  let burnSecureVersion: number | undefined;
  if (loadedIndex === TEST_APP_INDEX && plan.startIndex !== TEST_APP_INDEX) {
    log.push(logW("boot", "Falling back to test app as only bootable partition"));
  }
  if (loadedIndex > FACTORY_INDEX && plan.initialContents) {
    const entry = otaEntry(loadedIndex + 1, OTA_STATE.VALID);
    writes.push({ copy: 0, entry });
    log.push(logI("boot", `Set actual ota_seq=${entry.seq} in otadata[0]`));
    const ar = cfg.antiRollback;
    if (ar !== undefined) {
      const efuse = plan.efuseSecureVersion ?? ar.efuseSecureVersion;
      const after = antiRollbackUpdate(ar, efuse, loadedIndex, log);
      if (after > efuse) burnSecureVersion = after;
    }
  }
  const result = { writes, log: printed(log), logLines: log };
  return burnSecureVersion === undefined ? result : { ...result, burnSecureVersion };
}

/** Each write erases the copy's 4 KB sector (to 0xFF) and writes the 32-byte entry at its start. */
export function applyWrites(otadata: Uint8Array, writes: readonly OtadataWrite[]): Uint8Array {
  assertBytes(otadata, "applyWrites");
  assertOtadataSize(otadata);
  const out = otadata.slice();
  for (const w of writes) {
    if (w.copy !== 0 && w.copy !== 1) throw new RangeError(`OtadataWrite.copy: ${String(w.copy)}`);
    const off = w.copy * OTADATA_SECTOR;
    out.fill(0xff, off, off + OTADATA_SECTOR);
    out.set(encodeOtaEntry(w.entry), off);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// App side (esp_ota_ops.c)

/**
 * compute_ota_seq_for_target_slot (v6.0+; the v5 inline loop is the same): the smallest
 * `base + i*n` >= current with base = (slot+1) % n, computed in uint32 so it can wrap. When no i
 * in 0..2^32-1 gives one, the C loop never ends; we throw instead.
 */
function nextSeqForSlot(current: number, slot: number, n: number): number {
  const base = (slot + 1) % n;
  const TWO32 = 2 ** 32;
  let i = 0;
  let start = base; // value at index i, already reduced mod 2^32
  // Each pass runs until the value would pass 2^32; the values then wrap and continue from
  // start - 2^32. After 2^32 steps of i the sequence repeats, so that bounds the search.
  while (i < TWO32) {
    if (start >= current) return start;
    const k = Math.ceil((current - start) / n);
    const v = start + k * n;
    if (i + k >= TWO32) break;
    if (v < TWO32) return v;
    // v overshoots 2^32: step to the first index whose value wraps, and continue from there.
    const kWrap = Math.ceil((TWO32 - start) / n);
    i += kWrap;
    start = start + kWrap * n - TWO32;
  }
  throw new EspOtaError(
    "E_OTADATA_SEQ_EXHAUSTED",
    `no ota_seq >= 0x${current.toString(16)} selects ota_${slot} of ${n} below 2^32 (ESP-IDF would loop forever)`,
    { current, slot, otaSlotCount: n },
  );
}

/**
 * esp_ota_set_boot_partition for ota_<slot>, after its image verified (esp_rewrite_ota_data):
 * - no valid copy → copy 0, seq = slot + 1;
 * - the active copy already selects the slot → rewrite that copy with the same seq (ESP-IDF v6.0+;
 *   `idfMajor` < 6 keeps the older behaviour: write the other copy with that same seq);
 * - else → the other copy, smallest seq >= current that selects the slot.
 * State NEW with rollback, UNDEFINED (0xFFFFFFFF) without; the copy keeps the label it had.
 * Anti-rollback (secure_version below eFuse → erase the slot, ESP_ERR_OTA_SMALL_SEC_VER) and the
 * factory case (setBootFactory) are decided before this.
 */
export function setBootPartition(
  otadata: Uint8Array,
  slot: number,
  otaSlotCount: number,
  cfg: { rollback: boolean; idfMajor?: number },
): { otadata: Uint8Array; write: OtadataWrite } {
  assertSlotCount(otaSlotCount, 1);
  assertSlot(slot, otaSlotCount);
  const e = decodeOtadata(otadata);
  const active = activeCopy(e);
  let copy: 0 | 1;
  let seq: number;
  if (active === -1) {
    copy = 0;
    seq = slot + 1;
  } else if (seqToSlot(e[active].seq, otaSlotCount) === slot && (cfg.idfMajor ?? 6) >= 6) {
    copy = active;
    seq = e[active].seq;
  } else {
    copy = active === 0 ? 1 : 0;
    seq = nextSeqForSlot(e[active].seq, slot, otaSlotCount);
  }
  const entry: OtaEntry = {
    seq,
    label: e[copy].label.slice(),
    state: cfg.rollback ? OTA_STATE.NEW : OTA_STATE.UNDEFINED,
    crc: otaSeqCrc(seq),
  };
  const write: OtadataWrite = { copy, entry };
  return { otadata: applyWrites(otadata, [write]), write };
}

/** esp_ota_set_boot_partition(factory): erases the whole otadata partition. */
export function setBootFactory(): Uint8Array {
  return new Uint8Array(OTADATA_SIZE).fill(0xff);
}

function noActiveEntry(): OtadataFailure {
  return {
    ok: false,
    code: "E_OTADATA_NO_ACTIVE_ENTRY",
    reason: "Running firmware is factory: no valid otadata entry to mark",
  };
}

/**
 * esp_ota_mark_app_valid_cancel_rollback: the active entry becomes VALID (same copy, same seq).
 * Already VALID → nothing is written (`write` absent). With anti-rollback the app then burns its
 * own secure_version (esp_ota_set_anti_rollback), returned as burnSecureVersion.
 */
export function markAppValid(
  otadata: Uint8Array,
  opts: {
    otaSlotCount?: number;
    antiRollback?: {
      efuseSecureVersion: number;
      runningSecureVersion: number | undefined;
      secureVersionBits?: number;
    };
  } = {},
):
  | {
      ok: true;
      otadata: Uint8Array;
      write?: OtadataWrite;
      burnSecureVersion?: number;
      log: string[];
    }
  | OtadataFailure {
  const e = decodeOtadata(otadata);
  const active = activeCopy(e);
  if (active === -1 || opts.otaSlotCount === 0) return noActiveEntry();
  const entry = e[active];
  if (entry.state === OTA_STATE.VALID) return { ok: true, otadata: otadata.slice(), log: [] };
  const write: OtadataWrite = {
    copy: active,
    entry: { ...entry, label: entry.label.slice(), state: OTA_STATE.VALID },
  };
  const result: {
    ok: true;
    otadata: Uint8Array;
    write: OtadataWrite;
    burnSecureVersion?: number;
    log: string[];
  } = { ok: true, otadata: applyWrites(otadata, [write]), write, log: [] };
  const ar = opts.antiRollback;
  if (ar !== undefined && ar.runningSecureVersion !== undefined) {
    // esp_ota_set_anti_rollback → esp_efuse_update_secure_version(running app's secure_version),
    // after the otadata write; a failure there is returned but the write stays.
    const running = ar.runningSecureVersion;
    const lines: BootLogLine[] = [];
    const arCfg: AntiRollbackConfig = {
      efuseSecureVersion: ar.efuseSecureVersion,
      slotSecureVersion: () => running,
      secureVersionBits: ar.secureVersionBits ?? DEFAULT_SECURE_VERSION_BITS,
    };
    const after = antiRollbackUpdate(arCfg, ar.efuseSecureVersion, 0, lines);
    if (after > ar.efuseSecureVersion) result.burnSecureVersion = after;
    result.log = printed(lines);
  }
  return result;
}

/**
 * esp_ota_mark_app_invalid_rollback: the active entry becomes INVALID (same copy, same seq), but
 * only when `rollbackPossible` (see checkRollbackIsPossible); otherwise nothing changes. The
 * caller then restarts (the _and_reboot variant).
 */
export function markAppInvalid(
  otadata: Uint8Array,
  rollbackPossible: boolean,
  opts: { otaSlotCount?: number } = {},
): { ok: true; otadata: Uint8Array; write: OtadataWrite } | OtadataFailure {
  const e = decodeOtadata(otadata);
  const active = activeCopy(e);
  if (active === -1 || opts.otaSlotCount === 0) return noActiveEntry();
  if (!rollbackPossible) {
    return {
      ok: false,
      code: "E_OTA_ROLLBACK_FAILED",
      reason: "Rollback is not possible, do not have any suitable apps in slots",
    };
  }
  const entry = e[active];
  const write: OtadataWrite = {
    copy: active,
    entry: { ...entry, label: entry.label.slice(), state: OTA_STATE.INVALID },
  };
  return { ok: true, otadata: applyWrites(otadata, [write]), write };
}

/**
 * esp_ota_check_rollback_is_possible: the other copy is valid and its slot's image verifies (and,
 * with anti-rollback, its secure_version >= eFuse); or, without anti-rollback and when the other
 * copy is not valid, a factory app verifies. `verifies(index)` is esp_image_verify of that app.
 */
export function checkRollbackIsPossible(
  otadata: Uint8Array,
  layout: Pick<OtaLayout, "otaSlotCount" | "hasFactory">,
  verifies: (index: number) => boolean,
  antiRollback?: Pick<AntiRollbackConfig, "efuseSecureVersion" | "slotSecureVersion">,
): boolean {
  const n = layout.otaSlotCount;
  assertSlotCount(n, 0);
  const e = decodeOtadata(otadata);
  if (n === 0) return false;
  const valid = [entryValid(e[0]), entryValid(e[1])] as const;
  const active = selectCopy(e, valid);
  if (active === -1) return false;
  const other = active === 0 ? 1 : 0;
  if (antiRollback === undefined && !valid[other] && layout.hasFactory) {
    if (verifies(FACTORY_INDEX)) return true;
  }
  if (valid[other]) {
    const slot = seqToSlot(e[other].seq, n);
    if (verifies(slot)) {
      if (antiRollback === undefined) return true;
      return antiRollbackAllows(antiRollback, antiRollback.efuseSecureVersion, slot);
    }
  }
  return false;
}

/**
 * esp_ota_get_state_partition(ota_<runningSlot>): the state of the first copy (0 then 1) whose
 * seq maps to that slot and whose CRC matches; the invalid/empty checks are not applied.
 * undefined = ESP_ERR_NOT_FOUND (or NOT_SUPPORTED for a non-OTA index).
 */
export function runningState(
  otadata: Uint8Array,
  runningSlot: number,
  otaSlotCount: number,
): number | undefined {
  assertSlotCount(otaSlotCount, 0);
  const e = decodeOtadata(otadata);
  if (otaSlotCount === 0 || runningSlot < 0 || runningSlot >= MAX_OTA_SLOTS) return undefined;
  for (const c of e) {
    if (seqToSlot(c.seq, otaSlotCount) === runningSlot && entryCrcOk(c)) return c.state;
  }
  return undefined;
}

/**
 * esp_ota_get_next_update_partition(NULL): the slot after the running one, else ota_0 (running
 * factory, test or the last slot). otadata is not consulted. ESP-IDF returns NULL without OTA
 * slots; that is a RangeError here.
 */
export function nextUpdateSlot(runningIndex: number, otaSlotCount: number): number {
  assertSlotCount(otaSlotCount, 1);
  return runningIndex >= 0 && runningIndex + 1 < otaSlotCount ? runningIndex + 1 : 0;
}

/**
 * esp_ota_invalidate_inactive_ota_data_slot (ESP-IDF v5.5+, called by esp_ota_begin on an OTA
 * slot when rollback is enabled): erase the inactive copy's sector so it cannot point at the slot
 * being rewritten. Nothing is erased (`skipped` says why) when there is no active copy, the
 * inactive copy is empty or has a bad CRC, or it maps to the running slot.
 */
export function invalidateInactiveCopy(
  otadata: Uint8Array,
  otaSlotCount: number,
  runningIndex: number,
): { otadata: Uint8Array; erasedCopy?: 0 | 1; skipped?: string } {
  assertSlotCount(otaSlotCount, 0);
  const e = decodeOtadata(otadata);
  const same = otadata.slice();
  const active = activeCopy(e);
  if (active === -1 || otaSlotCount === 0) return { otadata: same, skipped: "no active copy" };
  const inactive = active === 0 ? 1 : 0;
  const c = e[inactive];
  if (c.seq === OTA_SEQ_EMPTY || !entryCrcOk(c)) {
    return { otadata: same, skipped: `otadata[${inactive}] is empty or has a bad CRC` };
  }
  const slot = seqToSlot(c.seq, otaSlotCount);
  if (slot === runningIndex) {
    return { otadata: same, skipped: `otadata[${inactive}] selects the running slot ota_${slot}` };
  }
  same.fill(0xff, inactive * OTADATA_SECTOR, (inactive + 1) * OTADATA_SECTOR);
  return { otadata: same, erasedCopy: inactive };
}

/**
 * otatool.py switch_ota_partition, byte for byte: validity ignores ota_state (seq < 0xFFFFFFFF and
 * CRC ok), the base is the larger valid seq (tie → copy 0), the new seq is the smallest
 * ((slot+1) % n) + i*n >= base (no same-slot shortcut), written into copy 1 if the base is copy 0
 * and into copy 0 otherwise. Only seq and crc change; state, label and the rest of the sector
 * keep the bytes that were read.
 */
export function otatoolSwitch(
  otadata: Uint8Array,
  slot: number,
  otaSlotCount: number,
): { otadata: Uint8Array; copy: 0 | 1; seq: number } {
  assertSlotCount(otaSlotCount, 1);
  assertSlot(slot, otaSlotCount);
  const e = decodeOtadata(otadata);
  const ok = (c: OtaEntry) => c.seq < OTA_SEQ_EMPTY && entryCrcOk(c);
  let base: 0 | 1 | -1 = -1;
  if (ok(e[0]) && ok(e[1])) base = e[0].seq >= e[1].seq ? 0 : 1;
  else if (ok(e[0])) base = 0;
  else if (ok(e[1])) base = 1;
  const target = slot + 1;
  let seq = target;
  if (base !== -1) {
    const cur = e[base].seq;
    const first = target % otaSlotCount;
    const i = cur > first ? Math.ceil((cur - first) / otaSlotCount) : 0;
    seq = first + i * otaSlotCount; // Python int: no wrap
  }
  if (seq > 0xffffffff) {
    // struct.pack('I', seq) raises struct.error.
    throw new EspOtaError(
      "E_OTADATA_SEQ_EXHAUSTED",
      `otatool would need ota_seq 0x${seq.toString(16)} to select ota_${slot}, which does not fit in 32 bits`,
      { slot, otaSlotCount },
    );
  }
  const copy: 0 | 1 = base === 0 ? 1 : 0;
  const out = otadata.slice();
  putU32le(out, copy * OTADATA_SECTOR, seq);
  putU32le(out, copy * OTADATA_SECTOR + 28, otaSeqCrc(seq));
  return { otadata: out, copy, seq };
}

// ---------------------------------------------------------------------------------------------
// Report

export interface OtadataCopyReport {
  copy: 0 | 1;
  /** Offset inside the otadata partition. */
  offset: number;
  /** All 32 entry bytes are 0xFF (erased). */
  blank: boolean;
  seq: number;
  /** seq_label as hex. */
  label: string;
  state: number;
  stateName: string;
  crc: number;
  expectedCrc: number;
  crcOk: boolean;
  /** bootloader_common_ota_select_invalid. */
  invalid: boolean;
  /** bootloader_common_ota_select_valid. */
  valid: boolean;
  /** (seq - 1) % N; absent for an empty seq or without OTA slots. */
  slot?: number;
}

export interface PlannedOtadataWrite {
  copy: 0 | 1;
  offset: number;
  seq: number;
  state: number;
  stateName: string;
  entryHex: string;
  why: string;
}

export interface OtadataReport {
  copies: [OtadataCopyReport, OtadataCopyReport];
  /** bootloader_common_get_active_otadata on the bytes as given. */
  activeCopy: 0 | 1 | -1;
  layout: OtaLayout;
  rollback: boolean;
  antiRollback?: { efuseSecureVersion: number };
  /** The copy the bootloader selects from after its own rewrites (-1: none). */
  selectedCopy: 0 | 1 | -1;
  startIndex: number;
  start: string;
  /** The partition that boots if its image verifies; undefined when none can be tried. */
  boots?: string;
  attemptOrder: string[];
  antiRollbackRejected: string[];
  initialContents: boolean;
  writesBeforeLoad: PlannedOtadataWrite[];
  /** What the bootloader writes after `boots` loaded. */
  writesAfterLoad: PlannedOtadataWrite[];
  burnSecureVersion?: { duringSelection?: number; afterLoad?: number };
  log: string[];
  notes: string[];
  /** The report as text (the CLI's human output, and for logs). */
  lines: string[];
}

function planned(w: OtadataWrite, why: string): PlannedOtadataWrite {
  return {
    copy: w.copy,
    offset: w.copy * OTADATA_SECTOR,
    seq: w.entry.seq,
    state: w.entry.state,
    stateName: stateName(w.entry.state),
    entryHex: toHex(encodeOtaEntry(w.entry)),
    why,
  };
}

function copyReport(copy: 0 | 1, raw: Uint8Array, e: OtaEntry, n: number): OtadataCopyReport {
  const r: OtadataCopyReport = {
    copy,
    offset: copy * OTADATA_SECTOR,
    blank: raw.every((x) => x === 0xff),
    seq: e.seq,
    label: toHex(e.label),
    state: e.state,
    stateName: stateName(e.state),
    crc: e.crc,
    expectedCrc: otaSeqCrc(e.seq),
    crcOk: entryCrcOk(e),
    invalid: entryInvalid(e),
    valid: entryValid(e),
  };
  if (e.seq !== OTA_SEQ_EMPTY && n > 0) r.slot = seqToSlot(e.seq, n);
  return r;
}

/**
 * Everything `esp-ota otadata` shows: both copies decoded, which copy and slot the bootloader
 * boots under `cfg`, and what it would rewrite before and after loading (assuming the first image
 * it tries verifies). JSON-safe.
 */
export function describeOtadata(
  otadata: Uint8Array,
  layout: OtaLayout,
  cfg: BootConfig,
): OtadataReport {
  const e = decodeOtadata(otadata);
  const plan = planBoot(otadata, layout, cfg);
  const n = layout.otaSlotCount;
  const writesBeforeLoad = plan.preWrites.map((w) =>
    planned(
      w,
      w.entry.state === OTA_STATE.ABORTED
        ? "rollback: the app never confirmed itself (PENDING_VERIFY at reset) -> ABORTED"
        : "rollback: first boot of a new app, NEW -> PENDING_VERIFY",
    ),
  );
  const first = plan.attemptOrder[0];
  let after: ReturnType<typeof afterLoad> | undefined;
  if (first !== undefined) {
    after = afterLoad(plan, first, applyWrites(otadata, plan.preWrites), cfg);
  }
  const report: OtadataReport = {
    copies: [
      copyReport(0, otadata.subarray(0, OTA_ENTRY_SIZE), e[0], n),
      copyReport(1, otadata.subarray(OTADATA_SECTOR, OTADATA_SECTOR + OTA_ENTRY_SIZE), e[1], n),
    ],
    activeCopy: activeCopy(e),
    layout: { ...layout },
    rollback: cfg.rollback,
    selectedCopy: plan.selectedCopy ?? -1,
    startIndex: plan.startIndex,
    start: indexName(plan.startIndex),
    attemptOrder: plan.attemptOrder.map(indexName),
    antiRollbackRejected: (plan.antiRollbackRejected ?? []).map(indexName),
    initialContents: plan.initialContents,
    writesBeforeLoad,
    writesAfterLoad: (after?.writes ?? []).map((w) =>
      planned(w, "otadata had initial contents (empty or CRC-bad): record the slot that booted"),
    ),
    log: [...plan.log, ...(after?.log ?? [])],
    notes: [],
    lines: [],
  };
  if (first !== undefined) report.boots = indexName(first);
  if (cfg.antiRollback) {
    report.antiRollback = { efuseSecureVersion: cfg.antiRollback.efuseSecureVersion };
    const burn: { duringSelection?: number; afterLoad?: number } = {};
    if (plan.burnSecureVersion !== undefined) burn.duringSelection = plan.burnSecureVersion;
    if (after?.burnSecureVersion !== undefined) burn.afterLoad = after.burnSecureVersion;
    if (Object.keys(burn).length > 0) report.burnSecureVersion = burn;
  }
  const [c0, c1] = report.copies;
  if (!c0.blank && !c1.blank && !c0.crcOk && !c1.crcOk) {
    report.notes.push(
      "neither copy is erased and neither CRC matches: if flash encryption is on, this may be ciphertext read raw from flash (decrypt it first)",
    );
  }
  if (first === undefined) {
    report.notes.push("no partition can be tried: the bootloader resets");
  }
  report.lines = formatOtadataReport(report);
  return report;
}

const hex8 = (v: number) => `0x${(v >>> 0).toString(16).padStart(8, "0")}`;
const yesNo = (b: boolean) => (b ? "yes" : "no");

function formatWrite(w: PlannedOtadataWrite): string {
  const off = `0x${w.offset.toString(16).padStart(4, "0")}`;
  return `copy ${w.copy} @${off}: erase sector, write ota_seq ${w.seq} ${w.stateName} (${w.why})`;
}

/** Human-readable lines for an OtadataReport (what `esp-ota otadata` prints without --json). */
export function formatOtadataReport(r: OtadataReport): string[] {
  const rows: string[][] = [
    ["copy", "offset", "ota_seq", "slot", "state", "crc", "crc ok", "valid"],
  ];
  for (const c of r.copies) {
    const off = `0x${c.offset.toString(16).padStart(4, "0")}`;
    if (c.blank) {
      rows.push([String(c.copy), off, "(erased)", "-", "-", "-", "-", "no"]);
      continue;
    }
    rows.push([
      String(c.copy),
      off,
      c.seq === OTA_SEQ_EMPTY ? "0xffffffff (empty)" : String(c.seq),
      c.slot === undefined ? "-" : `ota_${c.slot}`,
      c.stateName,
      hex8(c.crc),
      c.crcOk ? "yes" : `no (want ${hex8(c.expectedCrc)})`,
      yesNo(c.valid),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const L = rows.map((row) =>
    row
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join("  ")
      .trimEnd(),
  );
  const lay = r.layout;
  const parts = [
    `${lay.otaSlotCount} OTA slot${lay.otaSlotCount === 1 ? "" : "s"}`,
    lay.hasFactory ? "factory" : "no factory",
    lay.hasTest ? "test" : "no test",
    `rollback ${r.rollback ? "on" : "off"}`,
    r.antiRollback
      ? `anti-rollback on (eFuse secure version ${r.antiRollback.efuseSecureVersion})`
      : "anti-rollback off",
  ];
  L.push("");
  L.push(`active copy (as read): ${r.activeCopy === -1 ? "none" : r.activeCopy}`);
  L.push(`bootloader (${parts.join(", ")}):`);
  const via = r.selectedCopy === -1 ? "no copy selected" : `copy ${r.selectedCopy}`;
  L.push(`  selects ${r.start} (${via}, start index ${r.startIndex})`);
  L.push(
    r.boots === undefined
      ? "  boots nothing: no partition can be tried, the bootloader resets"
      : `  boots ${r.boots} if its image verifies; try order ${r.attemptOrder.join(", ")}`,
  );
  if (r.antiRollbackRejected.length > 0) {
    L.push(`  skipped by anti-rollback: ${r.antiRollbackRejected.join(", ")}`);
  }
  if (r.writesBeforeLoad.length === 0) L.push("  writes before loading: none");
  else for (const w of r.writesBeforeLoad) L.push(`  writes before loading: ${formatWrite(w)}`);
  if (r.boots !== undefined) {
    if (r.writesAfterLoad.length === 0) L.push(`  writes after ${r.boots} loads: none`);
    else
      for (const w of r.writesAfterLoad)
        L.push(`  writes after ${r.boots} loads: ${formatWrite(w)}`);
  }
  if (r.burnSecureVersion?.duringSelection !== undefined) {
    L.push(
      `  burns eFuse secure version to ${r.burnSecureVersion.duringSelection} during selection`,
    );
  }
  if (r.burnSecureVersion?.afterLoad !== undefined) {
    L.push(`  burns eFuse secure version to ${r.burnSecureVersion.afterLoad} after loading`);
  }
  if (r.log.length > 0) {
    L.push("  log:");
    for (const l of r.log) L.push(`    ${l}`);
  }
  for (const n of r.notes) L.push(`note: ${n}`);
  return L;
}
