/**
 * A simulated ESP32: eFuses, NOR flash behind the flash-encryption block, ROM + bootloader, and
 * the running application, whose behaviour is a profile (STYLE.md §13: the simulator is a
 * product; behaviours can be overridden per device or test).
 *
 * Power and resets: `powerOn()` runs ROM → bootloader → app start, and follows resets the app
 * causes (a panic, a refused self-test) until the device settles: an app running, or nothing
 * bootable (the reset loop hardware shows). A scheduled power cut (flash.schedulePowerCut) can
 * strike in any flash operation, including the bootloader's own otadata rewrites.
 */

import { EspOtaError, isEspOtaError } from "../errors.js";
import { createFlashCipher, type FlashCipher } from "../esp/flash-encryption.js";
import type { AppDescriptor } from "../esp/image.js";
import { OTA_STATE, OTADATA_SIZE, runningState, stateName } from "../esp/otadata.js";
import {
  DATA_SUBTYPE,
  findPartition,
  isEncryptedPartition,
  PART_TYPE,
  type Partition,
} from "../esp/partition-table.js";
import type { AppCheck } from "./app-verify.js";
import {
  BOOTLOADER_OFFSET,
  type BootloaderConfig,
  type BootOutcome,
  type BootTarget,
  runBoot,
} from "./bootloader.js";
import { type SimClock, VirtualClock } from "./clock.js";
import { type EfuseSnapshot, Efuses, type SimChip } from "./efuse.js";
import { NorFlash } from "./flash.js";
import { EspOtaApi } from "./ota-api.js";
import { SpiFlash } from "./spi-flash.js";
import { type ResetCause, UartLog } from "./uart-log.js";

/**
 * What the running app does after it starts (issue: healthy, crash loop, hang, refuses).
 * - healthy: runs its self-test, then esp_ota_mark_app_valid_cancel_rollback.
 * - crash-loop: panics before marking itself valid, on every boot.
 * - hang: runs but never marks itself valid (a watchdog-less hang; the host must time out).
 * - refuses: its self-test fails; it calls esp_ota_mark_app_invalid_rollback_and_reboot.
 */
export type AppBehaviour = "healthy" | "crash-loop" | "hang" | "refuses";
export const APP_BEHAVIOURS: readonly AppBehaviour[] = ["healthy", "crash-loop", "hang", "refuses"];

export interface DeviceSpec {
  chip: SimChip;
  flashSize: number;
  bootloader: BootloaderConfig;
  partitionTableOffset: number;
  /** Behaviour per app version string; apps not listed get `defaultBehaviour`. */
  behaviours: Record<string, AppBehaviour>;
  defaultBehaviour: AppBehaviour;
  /** Simulated time an app's self-test takes before it marks itself valid (ms). */
  selfTestMs: number;
  /** ROM + bootloader time per boot (ms): order of magnitude of a real ESP32 with a 1 MB app. */
  bootMs: number;
}

export type DeviceState =
  | { kind: "off" }
  | {
      kind: "running";
      index: number;
      partition: Partition;
      app: AppDescriptor | undefined;
      behaviour: AppBehaviour;
      /** otadata state of the running slot when it started (undefined: factory or no entry). */
      bootState: number | undefined;
    }
  | { kind: "no-app"; reason: string }
  | { kind: "crash-loop"; partition: Partition; app: AppDescriptor | undefined };

/** Boots followed per powerOn before a device that keeps resetting is declared looping. */
const MAX_BOOTS = 8;

export class SimDevice {
  readonly spec: DeviceSpec;
  readonly efuses: Efuses;
  readonly flash: NorFlash;
  readonly clock: SimClock;
  readonly uart: UartLog;
  private cipher: FlashCipher | undefined;
  private _state: DeviceState = { kind: "off" };
  private _partitions: Partition[] = [];
  /** The last esp_image_verify result from the OTA API (why an update was refused). */
  lastImageCheck: AppCheck | undefined;
  /** Boots since the last powerOn (for tests and the CLI). */
  bootCount = 0;

  constructor(spec: DeviceSpec, efuses: Efuses, flash: NorFlash, clock: SimClock = flash.clock) {
    this.spec = spec;
    this.efuses = efuses;
    this.flash = flash;
    this.clock = clock;
    this.uart = new UartLog(clock);
  }

  get id(): string {
    return Buffer.from(this.efuses.mac).toString("hex");
  }

  get state(): DeviceState {
    return this.flash.isPowered ? this._state : { kind: "off" };
  }

  /** The partition table as the bootloader read it at the last boot. */
  get partitions(): Partition[] {
    return this._partitions;
  }

  /** Flash as software sees it (the flash-encryption block in front of the chip). */
  get spi(): SpiFlash {
    if (this.efuses.flashEncryptionEnabled && !this.cipher) {
      const key = this.efuses.flashEncryptionKey;
      if (!key)
        throw new EspOtaError(
          "E_SIM_PROVISION",
          "flash encryption is enabled in eFuse but no key is burned",
        );
      this.cipher =
        this.efuses.layout.flashEncryption === "esp32"
          ? createFlashCipher({
              scheme: "esp32",
              key,
              flashCryptConf: this.efuses.flashCryptConfig,
            })
          : createFlashCipher({ scheme: "xts", key });
    }
    return new SpiFlash(this.flash, this.efuses.flashEncryptionEnabled ? this.cipher : undefined);
  }

  /** The app-side ESP-IDF API (esp_partition_*, esp_ota_*), for the running app only. */
  get ota(): EspOtaApi {
    const s = this.state;
    if (s.kind !== "running") {
      throw new EspOtaError("E_SIM_POWERED_OFF", `no app is running (device is ${s.kind})`);
    }
    return new EspOtaApi(this, s.partition);
  }

  behaviourOf(app: AppDescriptor | undefined): AppBehaviour {
    return (app && this.spec.behaviours[app.version]) ?? this.spec.defaultBehaviour;
  }

  /** Power on (or reset) and follow the boot until the device settles. */
  powerOn(cause: ResetCause = "POWERON_RESET"): DeviceState {
    this.flash.powerOn();
    this.bootCount = 0;
    let next: ResetCause | undefined = cause;
    try {
      while (next) {
        if (this.bootCount >= MAX_BOOTS) break;
        next = this.bootOnce(next);
      }
    } catch (e) {
      // A power cut during boot (the bootloader rewrites otadata) leaves the device off.
      if (isEspOtaError(e) && e.code === "E_SIM_POWER_CUT") {
        this._state = { kind: "off" };
        this.uart.emit("");
        return this.state;
      }
      throw e;
    }
    if (next && this._state.kind === "running") {
      // Still resetting after MAX_BOOTS: the app panics on every boot and nothing rolls it back.
      this._state = { kind: "crash-loop", partition: this._state.partition, app: this._state.app };
    }
    return this.state;
  }

  /**
   * esp_restart, a watchdog, or a reset line pulled by the host. A chip whose power was cut
   * stays off: esp_restart and the watchdogs are code and timers of a chip that is not running
   * (this used to power the chip back on, so a restart or watchdog timer that outlived the cut
   * could revive it; test/sim/esp-idf-fidelity.test.ts), so only POWERON_RESET (power restored,
   * powerOn()) ends the latch.
   */
  reset(cause: ResetCause = "SW_RESET"): DeviceState {
    if (!this.flash.isPowered && cause !== "POWERON_RESET") return this.state;
    return this.powerOn(cause);
  }

  powerOff(): void {
    this.flash.powerOff();
    this._state = { kind: "off" };
  }

  /** One ROM → bootloader → app start; returns the cause of the next reset, if the app resets. */
  private bootOnce(cause: ResetCause): ResetCause | undefined {
    this.bootCount++;
    this.cipher = undefined;
    this.uart.romBanner(this.spec.chip, cause);
    this.clock.spend(this.spec.bootMs);
    const outcome: BootOutcome = runBoot({
      chip: this.spec.chip,
      spi: this.spi,
      efuses: this.efuses,
      uart: this.uart,
      config: this.spec.bootloader,
      partitionTableOffset: this.spec.partitionTableOffset,
      bootloaderOffset: BOOTLOADER_OFFSET[this.spec.chip],
    });
    if (outcome.kind === "no-app") {
      // The real chip resets and prints the same error forever; we stop after one round.
      this._state = { kind: "no-app", reason: outcome.reason };
      this._partitions = [];
      return undefined;
    }
    this._partitions = outcome.partitions;
    return this.startApp(outcome.target);
  }

  private startApp(target: BootTarget): ResetCause | undefined {
    const app = target.check.appDesc;
    const behaviour = this.behaviourOf(app);
    const bootState = this.runningOtaState(target.partition);
    this._state = {
      kind: "running",
      index: target.index,
      partition: target.partition,
      app,
      behaviour,
      bootState,
    };
    this.uart.log("I", "cpu_start", "Pro cpu start user code");
    this.uart.log("I", "app_init", "Application information:");
    this.uart.log("I", "app_init", `Project name:     ${app?.projectName ?? "?"}`);
    this.uart.log("I", "app_init", `App version:      ${app?.version ?? "?"}`);
    this.uart.log("I", "app_init", `Secure version:   ${app?.secureVersion ?? 0}`);
    if (bootState !== undefined) {
      this.uart.log(
        "I",
        "esp_ota_ops",
        `running partition ${target.partition.label} state ${stateName(bootState)}`,
      );
    }
    switch (behaviour) {
      case "healthy": {
        this.clock.spend(this.spec.selfTestMs);
        this.uart.log("I", "app", "self-test passed");
        if (bootState === OTA_STATE.PENDING_VERIFY) {
          const err = this.ota.markAppValidCancelRollback();
          this.uart.log(
            err === 0 ? "I" : "E",
            "app",
            err === 0 ? "app marked valid, rollback cancelled" : `mark valid failed: ${err}`,
          );
        }
        return undefined;
      }
      case "hang":
        this.uart.log("W", "app", "self-test never completes (app hangs)");
        return undefined;
      case "crash-loop":
        this.uart.emit(
          "Guru Meditation Error: Core  0 panic'ed (LoadProhibited). Exception was unhandled.",
        );
        this.uart.emit("Rebooting...");
        return "SW_CPU_RESET";
      case "refuses": {
        this.clock.spend(this.spec.selfTestMs);
        this.uart.log("E", "app", "self-test failed: marking app invalid and rolling back");
        const err = this.ota.markAppInvalidRollbackAndReboot();
        if (err !== 0) {
          this.uart.log("E", "app", `rollback not possible (${err}); staying on this app`);
          return undefined;
        }
        return "SW_RESET";
      }
    }
  }

  /** esp_ota_get_state_partition for the slot that just booted. */
  private runningOtaState(part: Partition): number | undefined {
    const otadataPart = findPartition(this._partitions, PART_TYPE.data, DATA_SUBTYPE.ota);
    const slotIndex = part.subtype - 0x10;
    if (!otadataPart || slotIndex < 0 || slotIndex > 15) return undefined;
    const spi = this.spi;
    const otadata = spi.read(
      otadataPart.offset,
      OTADATA_SIZE,
      spi.encryptionEnabled && isEncryptedPartition(otadataPart),
    );
    const slots = this._partitions.filter(
      (p) => p.type === PART_TYPE.app && p.subtype >= 0x10 && p.subtype <= 0x1f,
    ).length;
    return runningState(otadata, slotIndex, slots);
  }

  /** An independent copy in the same state (power-cut harness: every run starts from here). */
  clone(): SimDevice {
    const copy = new SimDevice(
      structuredClone(this.spec),
      Efuses.restore(this.efuses.snapshot()),
      this.flash.snapshot(new VirtualClock(this.clock.now())),
    );
    copy._state = this._state;
    copy._partitions = this._partitions;
    return copy;
  }

  /** State file: "ESPSIMD1", u32 JSON length, JSON {spec, efuses, clock}, then the sparse flash. */
  serialize(): Uint8Array {
    const json = new TextEncoder().encode(
      JSON.stringify({
        version: 1,
        spec: this.spec,
        efuses: this.efuses.snapshot(),
        clock: this.clock.now(),
      }),
    );
    const flash = this.flash.serialize();
    const out = new Uint8Array(12 + json.length + flash.length);
    out.set(new TextEncoder().encode(DEVICE_MAGIC), 0);
    new DataView(out.buffer).setUint32(8, json.length, true);
    out.set(json, 12);
    out.set(flash, 12 + json.length);
    return out;
  }

  static deserialize(bytes: Uint8Array, clock?: SimClock): SimDevice {
    const bad = (why: string) => new EspOtaError("E_SIM_STATE_FILE", `device state: ${why}`);
    if (bytes.length < 12 || new TextDecoder().decode(bytes.subarray(0, 8)) !== DEVICE_MAGIC)
      throw bad("not a simulator state file (no ESPSIMD1 header)");
    const n = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
    if (12 + n > bytes.length) throw bad("truncated");
    let meta: { version: number; spec: DeviceSpec; efuses: EfuseSnapshot; clock: number };
    try {
      meta = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + n)));
    } catch {
      throw bad("metadata is not JSON");
    }
    if (meta.version !== 1 || typeof meta.spec !== "object")
      throw bad(`version ${meta.version} is not supported`);
    const c = clock ?? new VirtualClock(meta.clock);
    const flash = NorFlash.deserialize(bytes.subarray(12 + n), { clock: c });
    if (flash.size !== meta.spec.flashSize) throw bad("flash size disagrees with the spec");
    return new SimDevice(meta.spec, Efuses.restore(meta.efuses), flash, c);
  }
}

const DEVICE_MAGIC = "ESPSIMD1";

export const DEFAULT_SPEC: Omit<DeviceSpec, "chip" | "flashSize"> = {
  bootloader: { rollback: true, antiRollback: false },
  partitionTableOffset: 0x8000,
  behaviours: {},
  defaultBehaviour: "healthy",
  selfTestMs: 500,
  bootMs: 300,
};
