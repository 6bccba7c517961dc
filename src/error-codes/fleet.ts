import type { ErrorCodeTable } from "./types.js";

/** Simulated fleets (src/sim/fleet.ts, src/sim/fleet-serve.ts, `esp-ota sim fleet`). */
export const fleetCodes = {
  E_FLEET_EXISTS: {
    meaning:
      "The directory given for a new fleet already exists and is not empty: creating a fleet there would mix its keys, registry and devices with what is already there.",
    action: "Give a new or empty directory to `esp-ota sim fleet create --dir`.",
  },
  E_FLEET_MISSING: {
    meaning:
      "The directory is not a simulated fleet: it has no fleet.json (never created, or its creation did not finish).",
    action:
      "Check the --dir path, or create the fleet with `esp-ota sim fleet create --dir DIR --count N`.",
  },
  E_FLEET_INVALID: {
    meaning:
      "A fleet's files disagree: fleet.json is damaged, or a device state file holds another device than the one fleet.json names.",
    action:
      "Fleets are test fixtures: delete the directory and create the fleet again rather than repair it by hand.",
  },
  E_FLEET_DEVICE_UNKNOWN: {
    meaning: "A device id or index names no device of this fleet (or no device being served).",
    action:
      "List the fleet with `esp-ota sim fleet list --dir DIR` and use one of its device ids (12 hex digits) or indexes (0-based).",
  },
} as const satisfies ErrorCodeTable;
