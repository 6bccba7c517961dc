/**
 * esptool's reset sequences as data (esptool v5.3.1 `esptool/reset.py`): each a list of line
 * changes and waits that a driver plays on a serial port's modem lines. Wiring on Espressif's
 * boards: DTR → GPIO0 (boot strap), RTS → EN; a line set true pulls its pin low, and the two-
 * transistor circuit ignores both asserted together (esp32-facts §6.4).
 */

export type ResetStep = { dtr?: boolean; rts?: boolean } | { waitMs: number };

/** reset.py DEFAULT_RESET_DELAY (50 ms), and the "extra" delay loader.py tries every other time. */
export const DEFAULT_RESET_DELAY_MS = 50;
export const EXTRA_RESET_DELAY_MS = DEFAULT_RESET_DELAY_MS + 500;

/**
 * ClassicReset: DTR and RTS one after the other [reset.py ClassicReset.reset]. esptool's _setRTS
 * also re-writes DTR unchanged (a usbser.sys work-around); a driver that sets both lines in one
 * call (serialport's `set`) does that by construction.
 */
export function classicReset(resetDelayMs = DEFAULT_RESET_DELAY_MS): ResetStep[] {
  return [
    { dtr: false }, // IO0 high
    { rts: true }, // EN low: chip in reset
    { waitMs: 100 },
    { dtr: true }, // IO0 low
    { rts: false }, // EN high: chip out of reset, samples IO0 low → download mode
    { waitMs: resetDelayMs },
    { dtr: false }, // IO0 high again
  ];
}

/** UnixTightReset: both lines at once [reset.py UnixTightReset.reset]. */
export function unixTightReset(resetDelayMs = DEFAULT_RESET_DELAY_MS): ResetStep[] {
  return [
    { dtr: false, rts: false },
    { dtr: true, rts: true },
    { dtr: false, rts: true }, // IO0 high, EN low: in reset
    { waitMs: 100 },
    { dtr: true, rts: false }, // IO0 low, EN high: out of reset into download mode
    { waitMs: resetDelayMs },
    { dtr: false, rts: false },
    { dtr: false },
  ];
}

/** USBJTAGSerialReset: the USB-Serial/JTAG peripheral's own sequence [reset.py]. */
export function usbJtagSerialReset(): ResetStep[] {
  return [
    { rts: false },
    { dtr: false }, // idle
    { waitMs: 100 },
    { dtr: true }, // set IO0
    { rts: false },
    { waitMs: 100 },
    { rts: true }, // reset; through (1,1), not (0,0)
    { dtr: false },
    { rts: true },
    { waitMs: 100 },
    { dtr: false },
    { rts: false }, // out of reset
  ];
}

/** HardReset (`--after hard-reset`): pulse EN [reset.py HardReset, hold 100 ms]. */
export function hardReset(): ResetStep[] {
  return [{ rts: true }, { waitMs: 100 }, { rts: false }];
}

export type BeforeMode = "default-reset" | "usb-reset" | "no-reset";

/**
 * The sequences connect attempts cycle through [loader.py _construct_reset_strategy_sequence]:
 * USB-Serial/JTAG gets its own; otherwise (POSIX) UnixTight and Classic, each with the default
 * and the extra delay. Attempt n uses entry n mod length.
 */
export function resetStrategies(before: BeforeMode): ResetStep[][] {
  if (before === "no-reset") return [];
  if (before === "usb-reset") return [usbJtagSerialReset()];
  return [
    unixTightReset(DEFAULT_RESET_DELAY_MS),
    unixTightReset(EXTRA_RESET_DELAY_MS),
    classicReset(DEFAULT_RESET_DELAY_MS),
    classicReset(EXTRA_RESET_DELAY_MS),
  ];
}

export interface ModemLines {
  dtr: boolean;
  rts: boolean;
}

/** Plays a sequence: every step sets both lines (unchanged ones kept), waits between. */
export async function playReset(
  steps: readonly ResetStep[],
  set: (lines: ModemLines) => Promise<void>,
  sleep: (ms: number) => Promise<void>,
  lines: ModemLines = { dtr: false, rts: false },
): Promise<ModemLines> {
  const cur = { ...lines };
  for (const s of steps) {
    if ("waitMs" in s) await sleep(s.waitMs);
    else {
      if (s.dtr !== undefined) cur.dtr = s.dtr;
      if (s.rts !== undefined) cur.rts = s.rts;
      await set({ ...cur });
    }
  }
  return cur;
}
