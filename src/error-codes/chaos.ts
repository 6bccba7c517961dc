import type { ErrorCodeTable } from "./types.js";

/** The chaos proxy (src/chaos, docs/chaos.md): a TCP fault proxy for tests. */
export const chaosCodes = {
  E_CHAOS_TOXIC: {
    meaning:
      "A toxic is not valid: an unknown type or stream, a missing or negative parameter, a toxicity outside 0..1, or a spec string that is not `TYPE[:STREAM][:key=value,...]`.",
    action:
      "Check the toxic against docs/chaos.md (each type lists its parameters, units and defaults); the message names the part at fault.",
  },
  E_CHAOS_TOXIC_EXISTS: {
    meaning:
      "A toxic with this name is already on the proxy (the default name is TYPE_STREAM, so a second toxic of the same type and stream needs its own name).",
    action: "Give the new toxic another name (`name=...`), or update or remove the existing one.",
  },
  E_CHAOS_TOXIC_NOT_FOUND: {
    meaning: "No toxic with this name is on the proxy.",
    action: "List the toxics (`esp-ota chaos toxic list --api ADDR`) and use one of their names.",
  },
  E_CHAOS_LISTEN: {
    meaning:
      "The proxy or its control API could not listen on the address (in use, not a local address, or a privileged port).",
    action: "Pick another address or port; port 0 takes a free one and prints it.",
  },
  E_CHAOS_API: {
    meaning:
      "The chaos proxy's control API could not be reached, or answered with something that is not its JSON.",
    action:
      "Check --api against the address `esp-ota chaos proxy --api` printed, and that the proxy still runs.",
  },
  E_CHAOS_REQUEST: {
    meaning:
      "The control API refused a request: an unknown route or method, a body that is not JSON, or a body over 64 KiB.",
    action: "Use the routes docs/chaos.md lists, with a JSON body.",
  },
} as const satisfies ErrorCodeTable;
