import type { ErrorCodeTable } from "./types.js";

/** Codes shared by every command: arguments, files, and the catch-all for bugs. */
export const commonCodes = {
  E_USAGE: {
    meaning:
      "The command line is wrong: an unknown option, a missing argument, or a value that is not of the form the option takes.",
    action: "Read the command's `--help` and call it again with the arguments corrected.",
  },
  E_FILE_READ: {
    meaning: "An input file could not be read (missing, a directory, or no permission).",
    action: "Check the path and its permissions.",
  },
  E_FILE_WRITE: {
    meaning: "An output file could not be written.",
    action:
      "Check that the directory exists, that there is free space and that you may write there.",
  },
  E_METRICS_LISTEN: {
    meaning:
      "A daemon (the gateway agent's `metrics.listen`, the broker's `--metrics-listen`) could not serve /metrics, /healthz and /readyz on the address and port: another program holds the port, or the address is not one of this machine's.",
    action:
      "Pick another port (`ss -ltnp 'sport = :9477'` names what holds it; port 0 chooses a free one) or fix the host (docs/metrics.md).",
  },
  E_INTERNAL: {
    meaning: "A bug: something happened that the code believed impossible.",
    action:
      "Report it with the full command line and output; the message names the broken assumption.",
  },
} as const satisfies ErrorCodeTable;
