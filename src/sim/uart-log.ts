/**
 * UART0 as the simulator prints it: ROM banner, ESP-IDF log lines ("I (123) boot: ...") with the
 * milliseconds since reset taken from the simulated clock. These lines are what a user reads to
 * learn why a device did not boot, so the wording follows ESP-IDF's (bootloader_utility.c,
 * esp_image_format.c) wherever the simulator models the same event.
 */
import type { SimClock } from "./clock.js";
import type { SimChip } from "./efuse.js";

export type LogLevel = "E" | "W" | "I" | "D";

export type ResetCause =
  | "POWERON_RESET"
  | "SW_RESET"
  | "RTCWDT_RTC_RESET"
  | "SW_CPU_RESET"
  | "TG1WDT_SYS_RESET";

/** ESP32 ROM reset reason numbers (rtc_cntl reset cause register), as printed after "rst:". */
const ESP32_RESET_CODE: Record<ResetCause, number> = {
  POWERON_RESET: 0x1,
  SW_RESET: 0x3,
  SW_CPU_RESET: 0xc,
  RTCWDT_RTC_RESET: 0x10,
  TG1WDT_SYS_RESET: 0x8,
};

export class UartLog {
  private resetAt = 0;
  readonly lines: string[] = [];
  /** Called for each line as it is "transmitted" (the UART OTA device side forwards these). */
  onLine: ((line: string) => void) | undefined;
  /** Keep at most this many lines in `lines` (a device that loops in reset prints forever). */
  maxLines = 2000;

  constructor(private readonly clock: SimClock) {}

  emit(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
    this.onLine?.(line);
  }

  log(level: LogLevel, tag: string, message: string): void {
    const ms = Math.floor(this.clock.now() - this.resetAt);
    this.emit(`${level} (${ms}) ${tag}: ${message}`);
  }

  /** The ROM's banner after a reset (ESP32: ets banner; S3: ESP-ROM banner). */
  romBanner(chip: SimChip, cause: ResetCause): void {
    this.resetAt = this.clock.now();
    if (chip === "esp32") {
      this.emit("ets Jun  8 2016 00:22:57");
      this.emit("");
      this.emit(
        `rst:0x${ESP32_RESET_CODE[cause].toString(16)} (${cause}),boot:0x13 (SPI_FAST_FLASH_BOOT)`,
      );
    } else {
      this.emit("ESP-ROM:esp32s3-20210327");
      this.emit("Build:Mar 27 2021");
      this.emit(
        `rst:0x${ESP32_RESET_CODE[cause].toString(16)} (${cause.replace("_RESET", "")}),boot:0x8 (SPI_FAST_FLASH_BOOT)`,
      );
    }
  }

  /** Lines since the last ROM banner (the current boot). */
  sinceLastReset(): string[] {
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const l = this.lines[i]!;
      if (l.startsWith("ets ") || l.startsWith("ESP-ROM:")) return this.lines.slice(i);
    }
    return [...this.lines];
  }
}
