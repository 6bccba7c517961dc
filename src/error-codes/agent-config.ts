import type { ErrorCodeTable } from "./types.js";

/**
 * The gateway agent's configuration file (agent/config.ts, docs/configuration.md) and its serial
 * port discovery (agent/ports.ts).
 */
export const agentConfigCodes = {
  E_CONFIG_READ: {
    meaning:
      "The gateway configuration file could not be read (missing, a directory, no permission).",
    action:
      "Check the --config path; `esp-ota agent init-config --out FILE` writes a commented starting point.",
  },
  E_CONFIG_INVALID: {
    meaning:
      "The gateway configuration file has errors: YAML syntax, an unknown key, a wrong type or range, or a file it names (trust policy, TLS certificate, password file) that is missing or unreadable. Every error is listed as FILE:LINE:COLUMN: key: problem.",
    action:
      "Fix each listed key (docs/configuration.md describes every key and its default), then run `esp-ota agent check-config --config FILE` until it prints ok.",
  },
  E_CONFIG_EXISTS: {
    meaning: "`agent init-config --out FILE` refused to overwrite an existing file.",
    action: "Choose another --out path, or move the existing configuration aside first.",
  },
  E_PORT_SCAN: {
    meaning:
      "Scanning for serial ports failed: a directory named by a `glob` selector exists but could not be listed, usually for lack of permission.",
    action:
      "Run the agent as a user that can read the directory and open the ports (on most Linux systems, a member of the `dialout` group), or select ports by `path`.",
  },
} as const satisfies ErrorCodeTable;
