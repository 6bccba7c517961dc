import type { ErrorCodeTable } from "./types.js";

/** Operator rollouts over MQTT (src/rollout, `esp-ota rollout`; docs/rollouts.md). */
export const rolloutCodes = {
  E_ROLLOUT_ABORTED: {
    meaning:
      "The rollout aborted: the failure rate ((failed + rolled-back) / finished) exceeded --max-failure-rate, or an operator aborted it. Devices that had not started were withdrawn; devices mid-update were left to finish.",
    action:
      "Read the failing devices and their error codes in the summary (`esp-ota rollout status ID`), fix the cause, then start a new rollout (docs/rollouts.md).",
  },
  E_ROLLOUT_DETACHED: {
    meaning:
      "The operator process stopped (Ctrl-C, SIGTERM) before the rollout ended. The rollout itself is intact: its state is retained on the broker and the published notices stay.",
    action: "Run `esp-ota rollout resume ID` (on this or any machine) to continue it.",
  },
  E_ROLLOUT_NOT_FOUND: {
    meaning: "The broker holds no retained state for this rollout id under this topic prefix.",
    action:
      "Check the id with `esp-ota rollout list`, and that --broker and --prefix are the ones the rollout was started with.",
  },
  E_ROLLOUT_STATE_INVALID: {
    meaning:
      "The retained rollout state on the broker is not a rollout state this version understands (not JSON, not the schema, or inconsistent).",
    action:
      "Check what else publishes to `<prefix>/rollouts/<id>/state`; the format is docs/schemas/rollout-state.schema.json.",
  },
  E_ROLLOUT_MISMATCH: {
    meaning:
      "A rollout with this id already exists for another release, so `rollout start --id` cannot continue it with this release.",
    action: "Pick another --id (or leave it out: the default is the release id and the time).",
  },
  E_ROLLOUT_BUSY: {
    meaning:
      "Another operator process owns this rollout: its heartbeat in the retained state is fresh. Two processes driving one rollout would overwrite each other's state.",
    action:
      "Use `rollout pause|resume|abort ID` (they go to the running process), or stop that process and run `rollout resume ID` again.",
  },
  E_ROLLOUT_FINISHED: {
    meaning: "The rollout already ended (completed or aborted); it cannot be paused or resumed.",
    action: "Start a new rollout to install the release on the remaining devices.",
  },
  E_ROLLOUT_CONTROL_TIMEOUT: {
    meaning:
      "The operator process that owns the rollout did not apply the pause/resume/abort within the timeout (its retained state did not change).",
    action:
      "Check that process (is it connected to the broker?). If it is gone, wait until its heartbeat is stale (3 heartbeats) and run the command again: it then applies the change itself.",
  },
  E_ROLLOUT_NOT_APPLICABLE: {
    meaning:
      "The operator input does not apply to the rollout as it is: retry-failed with no failed device, next-wave at the last wave or on a rollout that ended, or a start before the rollout began.",
    action:
      "Look at the rollout (`esp-ota rollout status ID` or the console) and pick the input that applies: resume, abort, or a new rollout.",
  },
  E_CONSOLE_USERS_FILE: {
    meaning:
      "The console's users file (--users) is not usable: a line is not `username:scrypt$N$r$p$salt$key:role` with role operator or viewer, or it lists no user.",
    action:
      'Make each hash with `esp-ota broker passwd --file F USER` and add `:operator` or `:viewer` to its line (docs/console.md "Users").',
  },
  E_CONSOLE_AUTH: {
    meaning:
      "The console refused the request: no session (not logged in, or the session expired after 12 hours), or a wrong user name, password or token.",
    action: 'Log in again; the users are in the console\'s --users file (docs/console.md "Users").',
  },
  E_CONSOLE_FORBIDDEN: {
    meaning: "A viewer asked the console for an action: viewers may watch, not act.",
    action:
      'Ask an operator, or give the user the operator role in the console\'s users file (docs/console.md "Users").',
  },
  E_CONSOLE_CSRF: {
    meaning:
      "A console action came without the session's CSRF token (x-csrf-token), as a request forged by another site would.",
    action:
      "Act from the console's own page (reload it); scripts log in first and send the token, or use the bearer token (--token-env).",
  },
  E_CONSOLE_ORIGIN: {
    meaning:
      "A console action came from a page of another origin (its Origin header names another host).",
    action:
      "Use the console's own page. Behind a reverse proxy, pass the Host and Origin headers through unchanged.",
  },
  E_CONSOLE_BUSY: {
    meaning:
      "The console is at a limit: too many password checks at once (2 running, 16 waiting) or too many live pages (64).",
    action: "Try again in a moment; close console tabs nobody watches.",
  },
  E_ROLLOUT_INDEX: {
    meaning:
      "The release directory has no usable index.json (the file `esp-ota release build --out DIR` writes), or a manifest it names cannot be read.",
    action:
      "Pass the directory `release build` wrote, with its index.json and <device>/manifest.json.",
  },
  E_ROLLOUT_DEVICES: {
    meaning:
      "The device selection is empty, names a device the release has no manifest for, or has an id that cannot be an MQTT topic level ([A-Za-z0-9._-], 1..64).",
    action: "List devices from the release's index.json, or use --all.",
  },
  E_ROLLOUT_BASE_URL: {
    meaning:
      "The manifests' base URL could not be derived from the first manifest's variant URL (it does not end in <device>/<slot>.bin), or --base-url is not an http(s) URL.",
    action:
      "Pass --base-url: the URL the release directory is published under (the --base-url given to `release build`).",
  },
} as const satisfies ErrorCodeTable;
