/**
 * One error class with stable string codes (STYLE.md §6). Retry, abort and report decisions read
 * `err.code`, never the message. Every code lives in a per-area table under `src/error-codes/`,
 * and docs/errors.md is generated from those tables (`npm run docs:errors`), so it cannot drift:
 * test/errors.test.ts fails when the file and the tables disagree.
 */
import { agentCodes } from "./error-codes/agent.js";
import { agentConfigCodes } from "./error-codes/agent-config.js";
import { brokerCodes } from "./error-codes/broker.js";
import { chaosCodes } from "./error-codes/chaos.js";
import { commonCodes } from "./error-codes/common.js";
import { downloadCodes } from "./error-codes/download.js";
import { flashEncryptionCodes } from "./error-codes/flash-encryption.js";
import { fleetCodes } from "./error-codes/fleet.js";
import { imageCodes } from "./error-codes/image.js";
import { mqttCodes } from "./error-codes/mqtt.js";
import { otadataCodes } from "./error-codes/otadata.js";
import { partitionCodes } from "./error-codes/partition.js";
import { provisionCodes } from "./error-codes/provision.js";
import { releaseCodes } from "./error-codes/release.js";
import { releaseBuildCodes } from "./error-codes/release-build.js";
import { rolloutCodes } from "./error-codes/rollout.js";
import { romCodes } from "./error-codes/rom.js";
import { secureBootCodes } from "./error-codes/secure-boot.js";
import { simCodes } from "./error-codes/sim.js";
import type { ErrorCodeInfo } from "./error-codes/types.js";
import { uartCodes } from "./error-codes/uart.js";

/** Areas in the order docs/errors.md lists them. */
export const ERROR_AREAS = [
  { title: "General", codes: commonCodes },
  { title: "Partition table", codes: partitionCodes },
  { title: "otadata", codes: otadataCodes },
  { title: "App image", codes: imageCodes },
  { title: "Secure boot signatures", codes: secureBootCodes },
  { title: "Flash encryption", codes: flashEncryptionCodes },
  { title: "Device simulator", codes: simCodes },
  { title: "Simulated fleets", codes: fleetCodes },
  { title: "Provisioning", codes: provisionCodes },
  { title: "UART OTA protocol", codes: uartCodes },
  { title: "ROM serial loader", codes: romCodes },
  { title: "Release manifests and keys", codes: releaseCodes },
  { title: "Release build, device registry, image server", codes: releaseBuildCodes },
  { title: "Gateway agent", codes: agentCodes },
  { title: "Gateway configuration and serial ports", codes: agentConfigCodes },
  { title: "Downloads", codes: downloadCodes },
  { title: "MQTT API", codes: mqttCodes },
  { title: "Rollouts", codes: rolloutCodes },
  { title: "Embedded MQTT broker", codes: brokerCodes },
  { title: "Chaos proxy", codes: chaosCodes },
] as const;

export const ERROR_CODES = Object.assign(
  {},
  ...ERROR_AREAS.map((a) => a.codes),
) as UnionToIntersection<(typeof ERROR_AREAS)[number]["codes"]>;

export type ErrorCode = keyof typeof ERROR_CODES;

type UnionToIntersection<U> = (U extends unknown ? (x: U) => void : never) extends (
  x: infer I,
) => void
  ? I
  : never;

/** Context that helps the user find the fault: a partition label, an offset, a device id, a cause. */
export type ErrorContext = Readonly<Record<string, string | number | boolean | undefined>>;

/**
 * The longest message an EspOtaError carries. Messages bound what they quote where they are made
 * (quote() in src/text.ts); this is the last line of defence for one that does not: a device
 * status's `error.message` may hold 4096 characters (docs/mqtt-api.md), and one over it made the
 * status unencodable and locked the device out (issue 12, defect 1).
 */
export const MAX_ERROR_MESSAGE = 4000;

export { printable, QUOTE_MAX, quote } from "./text.js";

export class EspOtaError extends Error {
  override readonly name = "EspOtaError";
  readonly code: ErrorCode;
  readonly context: ErrorContext;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}, cause?: unknown) {
    super(
      message.length > MAX_ERROR_MESSAGE
        ? `${message.slice(0, MAX_ERROR_MESSAGE - 40)}…(cut, ${message.length} characters)`
        : message,
      cause === undefined ? undefined : { cause },
    );
    this.code = code;
    this.context = context;
  }

  /** What the user should do, from docs/errors.md's table. */
  get action(): string {
    return (ERROR_CODES[this.code] as ErrorCodeInfo).action;
  }

  toJSON(): { code: ErrorCode; message: string; context: ErrorContext } {
    return { code: this.code, message: this.message, context: this.context };
  }
}

export function isEspOtaError(e: unknown): e is EspOtaError {
  return e instanceof EspOtaError;
}

/** docs/errors.md, generated from the code tables. */
export function renderErrorsMarkdown(): string {
  const lines = [
    "# Error codes",
    "",
    "<!-- Generated from src/error-codes/*.ts by `npm run docs:errors`; test/errors.test.ts checks it. -->",
    "",
    "Every failure `esp-ota` reports carries one of these codes. The CLI prints it as",
    "`error E_CODE: message`, then what to do, and exits non-zero:",
    "",
    "| exit code | meaning |",
    "|---|---|",
    "| 0 | success (for `verify-signature`: the signature is valid) |",
    "| 1 | the command ran and failed with one of the codes below |",
    "| 2 | usage error (`E_USAGE`): nothing was done |",
    "",
    "Programs built on the library read `err.code`, never the message.",
    "",
  ];
  for (const area of ERROR_AREAS) {
    lines.push(`## ${area.title}`, "", "| code | meaning | what to do |", "|---|---|---|");
    for (const [code, info] of Object.entries(area.codes) as [string, ErrorCodeInfo][]) {
      lines.push(`| \`${code}\` | ${info.meaning} | ${info.action} |`);
    }
    lines.push("");
  }
  return lines.join("\n");
}
