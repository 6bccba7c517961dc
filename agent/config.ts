/**
 * The gateway agent's configuration file (docs/configuration.md): YAML, validated against a
 * TypeBox schema plus the cross-key checks a schema cannot say, with every problem reported at
 * once as FILE:LINE:COLUMN: key: message — the way a compiler reports, so the operator fixes
 * the whole file in one pass instead of one error per restart.
 *
 * parseAgentConfig is the core: text in, config and problems out, never throws on bad input.
 * Its only I/O (the trust policy, a password file, whether TLS files exist) goes through
 * injectable `deps`, so tests need no files. loadAgentConfig is the thin fs edge.
 */
import { accessSync, constants as fsConstants, mkdirSync, readFileSync, statSync } from "node:fs";
import { hostname as osHostname, userInfo } from "node:os";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { type TSchema, Type } from "@sinclair/typebox";
import { type ValueError, ValueErrorType } from "@sinclair/typebox/errors";
import { Value } from "@sinclair/typebox/value";
import picomatch from "picomatch";
import {
  type Document,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type Node as YamlNode,
} from "yaml";
import {
  allowListEntryProblem,
  DEFAULT_LIMITS,
  type DownloadLimits,
} from "../src/download/policy.js";
import { EspOtaError } from "../src/errors.js";
import { isLoopback, type ListenAddress, listenProblem, parseListen } from "../src/metrics/http.js";
import { KEY_ID_PATTERN, parseTrustPolicy, type TrustPolicy } from "../src/release/keyring.js";
import { quote } from "../src/text.js";

// ---- the resolved configuration (what the agent consumes) ---------------------------------------

/** Which serial ports the agent drives. Exactly one of path | glob | vid (pid, serialNumber narrow vid). */
export interface PortSelector {
  path?: string;
  glob?: string;
  vid?: string;
  pid?: string;
  serialNumber?: string;
  /**
   * The rescue path for the ports this selects (agent/rescue.ts, docs/operations.md "Rescue").
   * Absent: off, no reset lines (RESCUE_DEFAULTS).
   */
  rescue?: { enabled: boolean; resetLines: boolean };
}

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

export interface AgentConfig {
  /** Absolute path of the config file (for messages). */
  file: string;
  gatewayId: string;
  mqtt: {
    url: string;
    prefix: string;
    clientId?: string;
    username?: string;
    /** Resolved from passwordFile, passwordCredential, passwordEnv or a literal password. Never log it. */
    password?: string;
    /**
     * Absent: MQTT 5, falling back to 3.1.1 when the broker refuses it (the default). 5: MQTT 5
     * only (E_MQTT_CONNECT when refused); 4: MQTT 3.1.1 only.
     */
    protocolVersion?: 4 | 5;
    keepaliveSec: number;
    /** File paths, absolute; their contents are read by the agent, not here. */
    tls?: { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean };
  };
  trust: {
    /** Absolute path of trust.json (`esp-ota keys export`); it exists and parses. */
    policy: string;
    /** Raises the trust policy's threshold (never lowers it); see effectiveTrustPolicy. */
    threshold?: number;
    /** Extra revoked manifest key ids (32 lowercase hex), on top of trust.json's own list. */
    revoked: string[];
  };
  serial: {
    /** Paths and globs absolute; vid/pid lowercase hex without 0x. */
    ports: PortSelector[];
    rescanMs: number;
    consoleBaud: number;
    transferBaud: number;
  };
  stateDir: string;
  stagingDir: string;
  /** The downloader's limits (src/download/policy.ts), plus how many run at once and a pinned CA. */
  download: DownloadLimits & {
    maxConcurrent: number;
    ca?: string;
    /** URL prefixes manifests and images may come from (urlAllowed); empty: any http(s) URL. */
    allowedUrls: string[];
  };
  policy: {
    allowDowngrade: boolean;
    confirmTimeoutMs: number;
    maxConcurrentUpdates: number;
    maxManifestBytes: number;
  };
  log: { level: LogLevel; deviceLines: boolean; deviceLinesPerSec: number };
  /** /metrics, /healthz and /readyz (docs/metrics.md); served only when `enabled`. */
  metrics: { enabled: boolean; listen: ListenAddress };
}

export interface ConfigProblem {
  /** The key, e.g. "mqtt.url" or "serial.ports[1].glob"; "" for the whole file. */
  path: string;
  /** 1-based, when the problem has a place in the file. */
  line?: number;
  column?: number;
  message: string;
  severity: "error" | "warning";
}

export interface ConfigDeps {
  /** For mqtt.passwordEnv. Default: process.env. */
  env?: Record<string, string | undefined>;
  /** For trust.policy and mqtt.passwordFile (UTF-8 text). Default: fs.readFileSync. */
  readFile?: (path: string) => string;
  /** For the default gatewayId. Default: os.hostname(). */
  hostname?: string;
  /** Whether a file named by tls.* or download.ca exists (their contents are not read here). */
  isFile?: (path: string) => boolean;
  /**
   * What to do when mqtt.passwordCredential is set but $CREDENTIALS_DIRECTORY is not: "error"
   * (the agent: it cannot log in) or "warn" (`check-config` run by hand, outside the service
   * that systemd gives the credential to). Default "error".
   */
  missingCredentials?: "error" | "warn";
}

// ---- defaults (each one's reason is in docs/configuration.md and gateway.example.yaml) ----------

export const CONFIG_DEFAULTS = {
  mqtt: {
    /** The embedded broker (`esp-ota broker`) on the same machine. */
    url: "mqtt://127.0.0.1:1883",
    prefix: "esp-ota/v1",
    keepaliveSec: 30,
    rejectUnauthorized: true,
  },
  serial: {
    rescanMs: 2000,
    /** ESP-IDF's default console rate (CONFIG_ESP_CONSOLE_UART_BAUDRATE). */
    consoleBaud: 115200,
    transferBaud: 921600,
  },
  stateDir: "./state",
  // The downloader's own defaults (their reasons are in src/download/policy.ts).
  // allowedUrls: [] keeps a first configuration working with any image server; the agent warns
  // at start that notices can then make it fetch any URL (docs/security.md, G6).
  download: { ...DEFAULT_LIMITS, maxConcurrent: 4, allowedUrls: [] as string[] },
  policy: {
    allowDowngrade: false,
    confirmTimeoutMs: 60_000,
    maxConcurrentUpdates: 8,
    maxManifestBytes: 65_536,
  },
  log: { level: "info" as LogLevel, deviceLines: true, deviceLinesPerSec: 20 },
  // Off unless asked for (docs/configuration.md "metrics"): most gateways sit behind NAT where
  // nothing scrapes them (their presence carries a health summary instead), and a fixed port
  // open by default collides when several agents share a host. 9477: not in Prometheus's
  // default-port allocations as taken by an exporter a gateway is likely to run.
  metrics: { enabled: false, listen: "127.0.0.1:9477" },
} as const;

/**
 * Baud rates the agent accepts: Linux termios's named rates (asm-generic/termbits.h, B9600 to
 * B3000000). USB-serial bridges reach others only approximately, and a mistyped 92160 should be
 * caught here, not as a silent garbled link.
 */
export const STANDARD_BAUDS: readonly number[] = [
  9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000,
  1500000, 2000000, 2500000, 3000000,
];

export const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error"];

/** The URL schemes the MQTT client adapter (src/mqtt/client.ts) connects with. */
const MQTT_SCHEMES = ["mqtt:", "mqtts:", "ws:", "wss:"];
const URL_MESSAGE = "expected an mqtt://, mqtts://, ws:// or wss:// URL";

/** Node's timers hold at most 2^31-1 ms (~24.8 days); a longer delay fires at once (with a warning). */
const MAX_TIMER_MS = 2_147_483_647;

// ---- the file's schema ------------------------------------------------------------------------

// Non-standard keywords we read back when reporting: `errorMessage` replaces the generic type
// message (the ajv-errors convention), `missingMessage` says what a required key is for. JSON
// Schema 2020-12 ignores unknown keywords, so the generated schema stays valid for editors.
const ms = (description: string, dflt?: number) =>
  Type.Integer({
    minimum: 1,
    maximum: MAX_TIMER_MS,
    description,
    ...(dflt === undefined ? {} : { default: dflt }),
  });
const count = (description: string, dflt: number, minimum: number, maximum: number) =>
  Type.Integer({ minimum, maximum, description, default: dflt });
const filePath = (description: string) => Type.String({ minLength: 1, description });
const baud = (description: string, dflt: number, rates: readonly number[] = STANDARD_BAUDS) =>
  Type.Union(
    rates.map((b) => Type.Literal(b)),
    {
      description,
      default: dflt,
      errorMessage: `expected one of ${rates.join(", ")}`,
    },
  );
/**
 * The rates the UART OTA protocol's BAUD request may ask for (docs/uart-protocol.md §3.3; the
 * device side's accepted rates, `supported_baud` in src/firmware/uota_core.c): any other is refused with BAD_BAUD and
 * the whole transfer silently stays at 115200.
 */
export const TRANSFER_BAUDS: readonly number[] = [115200, 230400, 460800, 921600, 1500000, 2000000];
const USB_ID = "^(0[xX])?[0-9a-fA-F]{4}$";

const PortSelectorSchema = Type.Object(
  {
    path: Type.Optional(filePath("A port path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/…")),
    glob: Type.Optional(
      filePath("Wildcards in the last path component only, e.g. /dev/ttyUSB* or /tmp/sims/tty-*"),
    ),
    vid: Type.Optional(
      Type.String({
        pattern: USB_ID,
        description:
          "USB vendor id, 4 hex digits (10c4 CP210x, 1a86 CH340, 0403 FTDI, 303a Espressif)",
        errorMessage: "expected a USB vendor id: 4 hex digits such as 10c4",
      }),
    ),
    pid: Type.Optional(
      Type.String({
        pattern: USB_ID,
        description: "USB product id, 4 hex digits; only with vid",
        errorMessage: "expected a USB product id: 4 hex digits such as ea60",
      }),
    ),
    serialNumber: Type.Optional(
      Type.String({ minLength: 1, description: "USB serial number string; only with vid" }),
    ),
    rescue: Type.Optional(
      Type.Object(
        {
          // Off by default: a rescue overwrites a slot and otadata through the ROM loader
          // without asking the app, which only an operator who knows the board should allow.
          enabled: Type.Optional(
            Type.Boolean({
              default: false,
              description:
                "Allow the rescue path on these ports: a known-good release written raw through the ROM loader (docs/operations.md)",
            }),
          ),
          // Off by default: on a board without esptool's auto-reset circuit, toggling DTR/RTS
          // does nothing useful, and on some it holds the chip in reset.
          resetLines: Type.Optional(
            Type.Boolean({
              default: false,
              description:
                "DTR/RTS are wired to EN/GPIO0 (esptool's auto-reset): the gateway enters download mode and resets the chip itself; otherwise strap GPIO0 by hand",
            }),
          ),
        },
        {
          additionalProperties: false,
          errorMessage: "expected rescue: a mapping with enabled: and resetLines:",
        },
      ),
    ),
  },
  {
    additionalProperties: false,
    errorMessage: "expected a port selector: a mapping with path:, glob: or vid: (and pid:)",
  },
);

const ConfigFileSchema = Type.Object(
  {
    gatewayId: Type.Optional(
      Type.String({
        pattern: "^[A-Za-z0-9._-]{1,64}$",
        description:
          "This gateway's id in MQTT topics; default: the host name with other characters replaced by -",
        errorMessage:
          "expected 1 to 64 characters of A-Z a-z 0-9 . _ - (it is one MQTT topic level)",
      }),
    ),
    mqtt: Type.Optional(
      Type.Object(
        {
          url: Type.Optional(
            Type.String({ description: "Broker URL", default: CONFIG_DEFAULTS.mqtt.url }),
          ),
          prefix: Type.Optional(
            Type.String({
              minLength: 1,
              description: "Topic prefix shared by every gateway and tool of one deployment",
              default: CONFIG_DEFAULTS.mqtt.prefix,
            }),
          ),
          clientId: Type.Optional(
            Type.String({
              minLength: 1,
              maxLength: 256,
              description: "MQTT client id; default esp-ota-gw-<gatewayId>",
            }),
          ),
          username: Type.Optional(Type.String({ minLength: 1 })),
          password: Type.Optional(
            Type.String({ description: "Discouraged: prefer passwordFile or passwordEnv" }),
          ),
          passwordFile: Type.Optional(
            filePath("File holding the broker password (trailing newline removed)"),
          ),
          passwordCredential: Type.Optional(
            Type.String({
              pattern: "^[A-Za-z0-9_.-]{1,255}$",
              description:
                "Name of a systemd credential (LoadCredential=NAME:FILE) holding the broker password, read from $CREDENTIALS_DIRECTORY/NAME",
              errorMessage:
                "expected a credential name such as mqtt-password (letters, digits, _ . -; no /)",
            }),
          ),
          passwordEnv: Type.Optional(
            Type.String({
              pattern: "^[A-Za-z_][A-Za-z0-9_]*$",
              description: "Environment variable holding the broker password",
              errorMessage: "expected an environment variable name such as ESP_OTA_MQTT_PASSWORD",
            }),
          ),
          protocolVersion: Type.Optional(
            Type.Union([Type.Literal(4), Type.Literal(5)], {
              description:
                "5 = MQTT 5 only; 4 = MQTT 3.1.1 only; unset = MQTT 5, falling back to 3.1.1 when the broker refuses it",
              errorMessage: "expected 5 (MQTT 5) or 4 (MQTT 3.1.1)",
            }),
          ),
          keepaliveSec: Type.Optional(
            // MQTT keep alive is a 16-bit count of seconds (MQTT 5 §3.1.2.10); 0 would turn it off,
            // so a half-open connection would never be noticed and the last will never published.
            count("MQTT keep alive, seconds", CONFIG_DEFAULTS.mqtt.keepaliveSec, 1, 65535),
          ),
          tls: Type.Optional(
            Type.Object(
              {
                ca: Type.Optional(filePath("CA certificate(s), PEM")),
                cert: Type.Optional(filePath("Client certificate, PEM (with key)")),
                key: Type.Optional(filePath("Client private key, PEM (with cert)")),
                rejectUnauthorized: Type.Optional(
                  Type.Boolean({ default: true, description: "Verify the broker's certificate" }),
                ),
              },
              { additionalProperties: false },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    trust: Type.Object(
      {
        policy: Type.String({
          minLength: 1,
          description: "trust.json as written by `esp-ota keys export`",
          missingMessage:
            "required: the trust policy (trust.json from `esp-ota keys export`) manifests are verified against",
        }),
        threshold: Type.Optional(
          Type.Integer({
            minimum: 1,
            description: "Require more signatures than trust.json does (never fewer)",
          }),
        ),
        revoked: Type.Optional(
          Type.Array(
            Type.String({
              pattern: KEY_ID_PATTERN,
              errorMessage: "expected a manifest key id: 32 lowercase hex digits",
            }),
            { description: "Manifest key ids to refuse, on top of trust.json's revoked list" },
          ),
        ),
      },
      {
        additionalProperties: false,
        missingMessage: "required: the trust section (at least trust.policy)",
      },
    ),
    serial: Type.Object(
      {
        ports: Type.Array(PortSelectorSchema, {
          minItems: 1,
          description: "Which serial ports to drive",
          missingMessage: "required: at least one port selector (path:, glob: or vid:)",
        }),
        rescanMs: Type.Optional(
          // Below 100 ms the scan (a directory listing, sysfs, maybe udevadm) is pure overhead:
          // a USB-serial adapter takes longer than that to enumerate.
          Type.Integer({
            minimum: 100,
            maximum: MAX_TIMER_MS,
            default: CONFIG_DEFAULTS.serial.rescanMs,
            description: "Hot-plug rescan interval, ms",
          }),
        ),
        consoleBaud: Type.Optional(baud("Console baud rate", CONFIG_DEFAULTS.serial.consoleBaud)),
        transferBaud: Type.Optional(
          baud(
            "Baud rate negotiated for the transfer",
            CONFIG_DEFAULTS.serial.transferBaud,
            TRANSFER_BAUDS,
          ),
        ),
      },
      {
        additionalProperties: false,
        missingMessage: "required: the serial section (at least serial.ports)",
      },
    ),
    stateDir: Type.Optional(filePath("Ledgers and per-device state; relative to the config file")),
    stagingDir: Type.Optional(filePath("Downloaded images; default <stateDir>/staging")),
    download: Type.Optional(
      Type.Object(
        {
          connectTimeoutMs: Type.Optional(
            ms("TCP+TLS connect timeout", CONFIG_DEFAULTS.download.connectTimeoutMs),
          ),
          idleTimeoutMs: Type.Optional(
            ms("No byte for this long aborts the attempt", CONFIG_DEFAULTS.download.idleTimeoutMs),
          ),
          totalTimeoutMs: Type.Optional(
            ms("One attempt's whole budget", CONFIG_DEFAULTS.download.totalTimeoutMs),
          ),
          minRateBytesPerSec: Type.Optional(
            count(
              "Abort an attempt slower than this over minRateWindowMs; 0 turns the check off",
              CONFIG_DEFAULTS.download.minRateBytesPerSec,
              0,
              1 << 30,
            ),
          ),
          minRateWindowMs: Type.Optional(
            ms("Window for minRateBytesPerSec", CONFIG_DEFAULTS.download.minRateWindowMs),
          ),
          retries: Type.Optional(
            count("Attempts after the first", CONFIG_DEFAULTS.download.retries, 0, 100),
          ),
          backoffBaseMs: Type.Optional(
            ms("First retry delay (doubles, with jitter)", CONFIG_DEFAULTS.download.backoffBaseMs),
          ),
          backoffMaxMs: Type.Optional(
            ms("Largest retry delay", CONFIG_DEFAULTS.download.backoffMaxMs),
          ),
          maxConcurrent: Type.Optional(
            count("Downloads at once", CONFIG_DEFAULTS.download.maxConcurrent, 1, 64),
          ),
          ca: Type.Optional(filePath("Extra CA certificate(s) for https image/manifest URLs")),
          allowedUrls: Type.Optional(
            Type.Array(Type.String({ minLength: 1 }), {
              default: [],
              description:
                "URL prefixes (scheme, host, port and path start) manifests, images and their redirects may come from; any other URL is never requested (E_DOWNLOAD_URL_NOT_ALLOWED). Empty: any http(s) URL",
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    policy: Type.Optional(
      Type.Object(
        {
          allowDowngrade: Type.Optional(
            Type.Boolean({
              default: CONFIG_DEFAULTS.policy.allowDowngrade,
              description: "Install a release older than the running one",
            }),
          ),
          confirmTimeoutMs: Type.Optional(
            ms(
              "How long a rebooted app has to confirm itself",
              CONFIG_DEFAULTS.policy.confirmTimeoutMs,
            ),
          ),
          maxConcurrentUpdates: Type.Optional(
            count("Devices updated at once", CONFIG_DEFAULTS.policy.maxConcurrentUpdates, 1, 256),
          ),
          maxManifestBytes: Type.Optional(
            count(
              "Largest manifest fetched",
              CONFIG_DEFAULTS.policy.maxManifestBytes,
              1024,
              1 << 20,
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    log: Type.Optional(
      Type.Object(
        {
          level: Type.Optional(
            Type.Union(
              LOG_LEVELS.map((l) => Type.Literal(l)),
              {
                default: CONFIG_DEFAULTS.log.level,
                errorMessage: `expected one of ${LOG_LEVELS.join(", ")}`,
              },
            ),
          ),
          deviceLines: Type.Optional(
            Type.Boolean({
              default: CONFIG_DEFAULTS.log.deviceLines,
              description: "Publish the devices' console lines",
            }),
          ),
          deviceLinesPerSec: Type.Optional(
            count(
              "Console lines per second per device, beyond which lines are dropped (counted)",
              CONFIG_DEFAULTS.log.deviceLinesPerSec,
              1,
              10_000,
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    metrics: Type.Optional(
      Type.Object(
        {
          enabled: Type.Optional(
            Type.Boolean({
              description:
                "Serve /metrics, /healthz and /readyz (docs/metrics.md); default: true when listen is given, else false",
            }),
          ),
          listen: Type.Optional(
            Type.String({
              minLength: 1,
              default: CONFIG_DEFAULTS.metrics.listen,
              description:
                "host:port to serve them on ([::1]:9477 for IPv6; port 0 picks a free one); loopback by default",
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

/** JSON Schema (draft 2020-12) of the file, for docs/schemas and YAML editors. */
export function agentConfigJsonSchema(): object {
  const plain = JSON.parse(JSON.stringify(ConfigFileSchema)) as Record<string, unknown>;
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "urn:esp-ota-gateway:schema:agent-config:1",
    title: "esp-ota gateway agent configuration",
    description:
      "The gateway agent's YAML configuration. Generated from agent/config.ts by `npm run docs:schemas`; docs/configuration.md describes every key. `esp-ota agent check-config` also checks what a schema cannot (files exist, URLs, thresholds).",
    ...plain,
  };
}

/** Every key of the file, as dotted paths with `[]` for list items ("serial.ports[].vid"). */
export function configKeyPaths(): string[] {
  const out: string[] = [];
  const walk = (s: TSchema, prefix: string) => {
    if (s.type === "object" && s.properties) {
      for (const [k, v] of Object.entries(s.properties as Record<string, TSchema>)) {
        const p = prefix ? `${prefix}.${k}` : k;
        out.push(p);
        walk(v, p);
      }
    } else if (s.type === "array" && s.items) {
      walk(s.items as TSchema, `${prefix}[]`);
    }
  };
  walk(ConfigFileSchema, "");
  return out;
}

// ---- parsing ----------------------------------------------------------------------------------

type Seg = string | number;

/** "serial.ports[1].glob" from ["serial", "ports", 1, "glob"]. */
export function formatKeyPath(segs: readonly Seg[]): string {
  let s = "";
  for (const seg of segs) s += typeof seg === "number" ? `[${seg}]` : s ? `.${seg}` : seg;
  return s;
}

/** `gateway.yaml:12:5: mqtt.url: message`; warnings say so after the position. */
export function formatProblem(file: string, p: ConfigProblem): string {
  let where = file;
  if (p.line !== undefined) where += `:${p.line}${p.column !== undefined ? `:${p.column}` : ""}`;
  const sev = p.severity === "warning" ? " warning:" : "";
  return `${where}:${sev} ${p.path ? `${p.path}: ` : ""}${p.message}`;
}

/**
 * Parses and validates a configuration file's text. `file` is the file's path: relative paths in
 * the file resolve against its directory. Returns the resolved config only when there is no error;
 * problems (errors and warnings) come sorted by position. Never throws on bad input.
 */
export function parseAgentConfig(
  text: string,
  file: string,
  deps: ConfigDeps = {},
): { config?: AgentConfig; problems: ConfigProblem[] } {
  if (typeof text !== "string") throw new TypeError("parseAgentConfig: text must be a string");
  if (typeof file !== "string" || file === "")
    throw new TypeError("parseAgentConfig: file must be a path");
  const v = new Validation(text, resolve(file), deps);
  const config = v.run();
  return { ...(config ? { config } : {}), problems: v.sorted() };
}

/** Thrown by loadAgentConfig; `problems` holds every error and warning. */
export class AgentConfigError extends EspOtaError {
  readonly problems: readonly ConfigProblem[];
  constructor(file: string, problems: readonly ConfigProblem[]) {
    const errors = problems.filter((p) => p.severity === "error");
    super(
      "E_CONFIG_INVALID",
      [
        `${file} has ${errors.length} error${errors.length === 1 ? "" : "s"}:`,
        ...errors.map((p) => formatProblem(file, p)),
      ].join("\n"),
      { file, problems: errors.length },
    );
    this.problems = problems;
  }
}

/**
 * Reads and validates the configuration file at `path` (relative to `opts.cwd`, default the
 * process's). Throws E_CONFIG_READ when it cannot be read and AgentConfigError (E_CONFIG_INVALID)
 * listing every error; messages name the file as `path` was given. Warnings are returned.
 */
export function loadAgentConfig(
  path: string,
  opts: ConfigDeps & { cwd?: string } = {},
): { config: AgentConfig; warnings: ConfigProblem[] } {
  const abs = resolve(opts.cwd ?? process.cwd(), path);
  let text: string;
  try {
    if (statSync(abs).isDirectory()) throw new Error("it is a directory");
    text = readFileSync(abs, "utf8");
  } catch (e) {
    throw new EspOtaError(
      "E_CONFIG_READ",
      `cannot read ${path}: ${(e as Error).message}`,
      { file: path },
      e,
    );
  }
  const { config, problems } = parseAgentConfig(text, abs, opts);
  if (!config) throw new AgentConfigError(path, problems);
  return { config, warnings: problems.filter((p) => p.severity === "warning") };
}

/**
 * The trust policy the agent enforces: trust.json with the config's extra revocations added and
 * its threshold raised to `trust.threshold` if that is higher. A gateway may demand more
 * signatures than the signers' policy but never fewer: lowering it would let one stolen key (or
 * one edited config file) accept manifests the operators meant to need k signatures.
 */
export function effectiveTrustPolicy(
  fromFile: TrustPolicy,
  trust: Pick<AgentConfig["trust"], "threshold" | "revoked">,
): TrustPolicy {
  const revoked = [...new Set([...fromFile.revoked, ...trust.revoked])];
  return {
    keys: fromFile.keys.filter((k) => !revoked.includes(k.keyId)),
    revoked,
    threshold: Math.max(fromFile.threshold, trust.threshold ?? 0),
  };
}

// ---- the directories the agent writes ---------------------------------------------------------

/** Every directory the agent writes, the key that sets it, and what it holds (for messages). */
export function agentWriteDirs(
  c: Pick<AgentConfig, "stateDir" | "stagingDir">,
): { key: "stateDir" | "stagingDir"; path: string; what: string }[] {
  return [
    { key: "stateDir", path: c.stateDir, what: "the gateway's key and state" },
    { key: "stateDir", path: join(c.stateDir, "devices"), what: "the device ledgers" },
    { key: "stagingDir", path: c.stagingDir, what: "downloads in progress" },
  ];
}

/** The filesystem calls the directory checks make (injectable, for tests). */
export interface DirDeps {
  /** "dir", "other" (exists, not a directory) or "missing". Default: fs.statSync. */
  kind?: (path: string) => "dir" | "other" | "missing";
  /** access(2) with W_OK|X_OK for the real user: why not, as an errno code, or undefined if allowed. */
  cannotWrite?: (path: string) => string | undefined;
  /** For messages. Default: os.userInfo(). */
  user?: string;
}

function dirDeps(d: DirDeps): Required<DirDeps> {
  return {
    kind:
      d.kind ??
      ((p) => {
        try {
          return statSync(p).isDirectory() ? "dir" : "other";
        } catch {
          return "missing";
        }
      }),
    cannotWrite:
      d.cannotWrite ??
      ((p) => {
        try {
          accessSync(p, fsConstants.W_OK | fsConstants.X_OK);
          return undefined;
        } catch (e) {
          return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
        }
      }),
    user: d.user ?? currentUser(),
  };
}

function currentUser(): string {
  const uid = process.getuid?.();
  try {
    return `${userInfo().username} (uid ${uid})`;
  } catch {
    // A uid without a passwd entry (containers): the number is all there is.
    return uid === undefined ? "this user" : `uid ${uid}`;
  }
}

/**
 * `check-config`: every directory the agent writes must be writable by the user running the
 * check (run it as the agent's user: `sudo -u esp-ota`), or, when it does not exist yet,
 * creatable in its nearest existing parent. access(2) answers for the real user and reports a
 * read-only mount (EROFS) even to root. Changes nothing on disk.
 */
export function stateDirProblems(
  c: Pick<AgentConfig, "stateDir" | "stagingDir">,
  deps: DirDeps = {},
): ConfigProblem[] {
  const d = dirDeps(deps);
  const out: ConfigProblem[] = [];
  const seen = new Set<string>();
  for (const w of agentWriteDirs(c)) {
    if (seen.has(w.path)) continue;
    seen.add(w.path);
    let at = w.path;
    while (d.kind(at) === "missing" && dirname(at) !== at) at = dirname(at);
    const kind = d.kind(at);
    const problem = (message: string) =>
      out.push({ path: w.key, message: `${w.path} (${w.what}): ${message}`, severity: "error" });
    if (kind !== "dir") {
      problem(`${at} exists and is not a directory`);
      continue;
    }
    const why = d.cannotWrite(at);
    if (why === undefined) continue;
    problem(
      at === w.path
        ? `not writable by ${d.user} (${why}); make it the agent user's (chown) or set ${w.key} to a directory it owns`
        : `does not exist, and ${at} is not writable by ${d.user} (${why}), so the agent cannot create it; create it owned by the agent's user (install -d -o USER -m 0700 ${w.path})`,
    );
  }
  return out;
}

/**
 * At agent start: creates every directory the agent writes (0700: the gateway key and the
 * ledgers are private) and checks it is writable, so a wrong stateDir or stagingDir is one coded
 * error naming the directory (E_AGENT_STATE), not an EACCES from deep inside the first download.
 */
export function prepareStateDirs(
  c: Pick<AgentConfig, "stateDir" | "stagingDir">,
  deps: DirDeps = {},
): void {
  const d = dirDeps(deps);
  for (const w of agentWriteDirs(c)) {
    let why: string | undefined;
    try {
      mkdirSync(w.path, { recursive: true, mode: 0o700 });
      why = d.cannotWrite(w.path);
    } catch (e) {
      why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    }
    if (why !== undefined)
      throw new EspOtaError(
        "E_AGENT_STATE",
        `cannot write ${w.path} (${w.key}: ${w.what}) as ${d.user}: ${why}; run \`esp-ota agent check-config\` as the agent's user, and check the service's ReadWritePaths=/StateDirectory= (docs/operations.md)`,
        { path: w.path, key: w.key },
      );
  }
}

/** The host name as a topic id: [A-Za-z0-9._-] kept, anything else "-", at most 64; "gateway" if empty. */
export function gatewayIdFromHostname(hostname: string): string {
  const id = hostname.replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 64);
  return id === "" ? "gateway" : id;
}

/** Levenshtein distance, case-insensitive (keys differ from the intended one by a typo). */
export function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++) {
      cur[j] = Math.min(
        prev[j]! + 1,
        cur[j - 1]! + 1,
        prev[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1),
      );
    }
    prev = cur;
  }
  return prev[y.length]!;
}

// Fields whose values are secrets: never echoed back in a message.
const SECRET_KEYS = new Set(["password"]);

interface FileShape {
  gatewayId?: string;
  mqtt?: {
    url?: string;
    prefix?: string;
    clientId?: string;
    username?: string;
    password?: string;
    passwordFile?: string;
    passwordCredential?: string;
    passwordEnv?: string;
    protocolVersion?: 4 | 5;
    keepaliveSec?: number;
    tls?: { ca?: string; cert?: string; key?: string; rejectUnauthorized?: boolean };
  };
  trust: { policy: string; threshold?: number; revoked?: string[] };
  serial: { ports: PortSelector[]; rescanMs?: number; consoleBaud?: number; transferBaud?: number };
  stateDir?: string;
  stagingDir?: string;
  download?: Partial<AgentConfig["download"]>;
  policy?: Partial<AgentConfig["policy"]>;
  log?: Partial<AgentConfig["log"]>;
  metrics?: { enabled?: boolean; listen?: string };
}

/** One validation run: collects problems, then resolves the config if there were no errors. */
class Validation {
  private readonly problems: ConfigProblem[] = [];
  private readonly lines = new LineCounter();
  private doc: Document | undefined;
  private readonly dir: string;
  private readonly env: Record<string, string | undefined>;
  private readonly readFile: (p: string) => string;
  private readonly isFile: (p: string) => boolean;

  constructor(
    private readonly text: string,
    private readonly file: string,
    private readonly deps: ConfigDeps,
  ) {
    this.dir = dirname(file);
    this.env = deps.env ?? process.env;
    this.readFile = deps.readFile ?? ((p) => readFileSync(p, "utf8"));
    this.isFile =
      deps.isFile ??
      ((p) => {
        try {
          return statSync(p).isFile();
        } catch {
          return false;
        }
      });
  }

  sorted(): ConfigProblem[] {
    return [...this.problems].sort(
      (a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0),
    );
  }

  private hasError(): boolean {
    return this.problems.some((p) => p.severity === "error");
  }

  private errorAt(segs: readonly Seg[]): boolean {
    const path = quote(formatKeyPath(segs), 200);
    return this.problems.some((p) => p.severity === "error" && p.path === path);
  }

  /** Records a problem at a key; `at: "key"` points at the key itself (unknown keys). */
  private add(
    severity: "error" | "warning",
    segs: readonly Seg[],
    message: string,
    at: "key" | "value" = "value",
  ): void {
    // Bounded and escaped: a key in the path is the author's text (see unknownKeyMessage).
    const path = quote(formatKeyPath(segs), 200);
    // One error per key: the first (the schema's) is the one to fix first.
    if (severity === "error" && this.errorAt(segs)) return;
    const offset = this.offsetOf(segs, at);
    const pos = offset === undefined ? undefined : this.lines.linePos(offset);
    this.problems.push({
      path,
      ...(pos ? { line: pos.line, column: pos.col } : {}),
      message,
      severity,
    });
  }

  private error(segs: readonly Seg[], message: string, at: "key" | "value" = "value"): void {
    this.add("error", segs, message, at);
  }

  private warn(segs: readonly Seg[], message: string): void {
    // A key that is wrong needs no advice about how it combines with others.
    if (this.errorAt(segs)) return;
    this.add("warning", segs, message);
  }

  /**
   * Where a key is in the text: its value (or the key, for unknown keys), else the nearest
   * ancestor that exists (a missing key is reported at its section).
   */
  private offsetOf(segs: readonly Seg[], at: "key" | "value"): number | undefined {
    let node: unknown = this.doc?.contents;
    let best: number | undefined;
    for (let i = 0; i < segs.length; i++) {
      const seg = segs[i]!;
      const last = i === segs.length - 1;
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) return best;
        const keyStart = (pair.key as YamlNode).range?.[0];
        if (last && at === "key") return keyStart ?? best;
        best = keyStart ?? best;
        node = pair.value;
        if (last) return (node as YamlNode | null)?.range?.[0] ?? best;
      } else if (isSeq(node) && typeof seg === "number") {
        const item = node.items[seg] as YamlNode | undefined;
        if (!item) return best;
        best = item.range?.[0] ?? best;
        node = item;
      } else {
        return best;
      }
    }
    return segs.length === 0 ? (this.doc?.contents?.range?.[0] ?? undefined) : best;
  }

  run(): AgentConfig | undefined {
    const value = this.parseYaml();
    if (value === undefined) return undefined;
    this.checkSchema(value);
    const f = value as FileShape;
    // Cross-key checks run even after schema errors, guarded by type, so one run lists every
    // problem; a key that already has an error is not reported twice (see add()).
    const password = this.checkMqtt(f);
    this.checkTrust(f);
    this.checkSerial(f);
    this.checkPaths(f);
    this.checkDownload(f);
    this.checkPolicy(f);
    this.checkMetrics(f);
    if (this.hasError()) return undefined;
    return this.resolveConfig(f, password);
  }

  private parseYaml(): unknown {
    const doc = parseDocument(this.text, {
      lineCounter: this.lines,
      prettyErrors: false,
      uniqueKeys: true,
      strict: true,
    });
    this.doc = doc;
    for (const w of doc.warnings) this.atOffset("warning", w.pos[0], w.message);
    if (doc.errors.length > 0) {
      // A broken tree would give misleading schema errors: report the syntax first.
      for (const e of doc.errors) this.atOffset("error", e.pos[0], `YAML: ${e.message}`);
      return undefined;
    }
    this.keepStringsAsWritten(doc.contents, ConfigFileSchema);
    let value: unknown;
    try {
      // maxAliasCount bounds alias expansion ("billion laughs").
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      this.error([], `YAML: ${(e as Error).message}`);
      return undefined;
    }
    if (value === null || value === undefined) {
      this.error(
        [],
        "the file is empty; at least trust.policy and serial.ports are required (`esp-ota agent init-config` writes an example)",
      );
      return undefined;
    }
    if (typeof value !== "object" || Array.isArray(value)) {
      this.error([], "expected a mapping of keys (gatewayId:, mqtt:, trust:, serial:, …)");
      return undefined;
    }
    // A section whose keys are all commented out is null in YAML: treat it as empty.
    const v = value as Record<string, unknown>;
    for (const k of ["mqtt", "trust", "serial", "download", "policy", "log", "metrics"]) {
      if (k in v && v[k] === null) v[k] = {};
    }
    const mqtt = v.mqtt as Record<string, unknown> | undefined;
    if (mqtt && typeof mqtt === "object" && mqtt.tls === null) mqtt.tls = {};
    return value;
  }

  private atOffset(severity: "error" | "warning", offset: number, message: string): void {
    const pos = this.lines.linePos(offset);
    this.problems.push({ path: "", line: pos.line, column: pos.col, message, severity });
  }

  /**
   * YAML 1.2 reads `pid: 6001` as the number 6001 and `vid: 0403` as 403 (FTDI's vendor id, lost),
   * `serialNumber: 0001` as 1. Where the schema wants a string, keep the text as written.
   */
  private keepStringsAsWritten(node: unknown, schema: TSchema | undefined): void {
    if (!schema) return;
    if (isMap(node) && schema.type === "object") {
      for (const pair of node.items) {
        if (!isPair(pair) || !isScalar(pair.key)) continue;
        const sub = (schema.properties as Record<string, TSchema> | undefined)?.[
          String(pair.key.value)
        ];
        this.keepStringsAsWritten(pair.value, sub);
      }
    } else if (isSeq(node) && schema.type === "array") {
      for (const item of node.items) this.keepStringsAsWritten(item, schema.items as TSchema);
    } else if (isScalar(node) && schema.type === "string") {
      const v = node.value;
      if ((typeof v === "number" || typeof v === "boolean") && node.source !== undefined) {
        node.value = node.source;
      }
    }
  }

  private checkSchema(value: unknown): void {
    for (const e of Value.Errors(ConfigFileSchema, value)) {
      const segs = pointerToSegs(e.path, value);
      if (e.type === ValueErrorType.ObjectAdditionalProperties) {
        this.error(segs, this.unknownKeyMessage(segs, e), "key");
        continue;
      }
      this.error(segs, schemaMessage(e, segs));
    }
  }

  private unknownKeyMessage(segs: readonly Seg[], e: ValueError): string {
    const key = String(segs[segs.length - 1]);
    const known = Object.keys((e.schema.properties as Record<string, unknown> | undefined) ?? {});
    let best: string | undefined;
    let bestD = 3;
    for (const k of known) {
      const d = editDistance(key, k);
      if (d < bestD) {
        best = k;
        bestD = d;
      }
    }
    // A unit suffix left off ("keepalive" for keepaliveSec, "rescan" for rescanMs).
    best ??= known.find((k) => key.length >= 4 && k.toLowerCase().startsWith(key.toLowerCase()));
    // The key is the config author's text: quoted bounded and escaped (a 60,000-character or
    // escape-laden key made a 60 KB message that check-config printed raw).
    const shown = quote(key, 64);
    if (best !== undefined) return `unknown key "${shown}"; did you mean "${best}"?`;
    // The right key in the wrong section (`url:` at the top instead of under mqtt:).
    const elsewhere = configKeyPaths().find((p) => p.split(/[.[\]]+/).pop() === key);
    if (elsewhere)
      return `unknown key "${shown}" here; did you mean ${elsewhere.replace("[]", "[n]")}?`;
    return `unknown key "${shown}" (known here: ${known.join(", ")})`;
  }

  private checkMqtt(f: FileShape): string | undefined {
    const m = f.mqtt;
    if (!isObj(m)) return undefined;
    if (typeof m.url === "string") this.checkUrl(m);
    if (typeof m.prefix === "string") {
      const why = prefixProblem(m.prefix);
      if (why) this.error(["mqtt", "prefix"], why);
    }
    if (m.tls !== undefined && isObj(m.tls)) this.checkTls(m, m.tls);

    const sources = (
      ["password", "passwordFile", "passwordCredential", "passwordEnv"] as const
    ).filter((k) => m[k] !== undefined);
    if (sources.length > 1) {
      this.error(
        ["mqtt", sources[1]!],
        `give only one of ${sources.join(", ")} (which one is the password?)`,
        "key",
      );
      return undefined;
    }
    let password: string | undefined;
    if (typeof m.password === "string") {
      password = m.password;
      this.warn(
        ["mqtt", "password"],
        "a password in the configuration file is readable by anyone who can read the file or its backups; prefer passwordFile (mode 0600) or passwordEnv",
      );
    } else if (typeof m.passwordFile === "string") {
      const p = this.fileArg(["mqtt", "passwordFile"], m.passwordFile);
      try {
        if (p !== undefined) {
          // `echo secret > file` ends it with a newline that is not part of the password.
          password = this.readFile(p).replace(/[\r\n]+$/, "");
          if (password === "") this.error(["mqtt", "passwordFile"], `${p} is empty`);
        }
      } catch (e) {
        this.error(["mqtt", "passwordFile"], readProblem(p!, e));
      }
    } else if (typeof m.passwordCredential === "string") {
      password = this.readCredential(m.passwordCredential);
    } else if (typeof m.passwordEnv === "string") {
      password = this.env[m.passwordEnv];
      if (password === undefined)
        this.error(["mqtt", "passwordEnv"], `environment variable ${m.passwordEnv} is not set`);
      else if (password === "")
        this.error(["mqtt", "passwordEnv"], `environment variable ${m.passwordEnv} is empty`);
    }
    if (sources.length === 1 && m.username === undefined && m.protocolVersion === 4) {
      // MQTT 3.1.1 §3.1.2.9 [MQTT-3.1.2-22]: no password without a user name (MQTT 5 allows it).
      this.error(
        ["mqtt", sources[0]!],
        "MQTT 3.1.1 (protocolVersion 4) sends a password only with a username; set mqtt.username",
        "key",
      );
    }
    return password;
  }

  /**
   * systemd's LoadCredential=NAME:FILE (systemd.exec(5), "Credentials") gives the service a copy
   * of FILE at $CREDENTIALS_DIRECTORY/NAME, readable by the service's user only, while FILE
   * itself stays root-only: the password is neither in the environment nor readable by the
   * agent's user outside the service.
   */
  private readCredential(name: string): string | undefined {
    const at = ["mqtt", "passwordCredential"];
    const dir = this.env.CREDENTIALS_DIRECTORY;
    if (dir === undefined || dir === "") {
      const why = `$CREDENTIALS_DIRECTORY is not set: the credential "${name}" exists only inside the systemd service that loads it (LoadCredential=${name}:FILE)`;
      if (this.deps.missingCredentials === "warn") this.warn(at, `not checked here: ${why}`);
      else this.error(at, why);
      return undefined;
    }
    const p = join(dir, name);
    try {
      const password = this.readFile(p).replace(/[\r\n]+$/, "");
      if (password === "") this.error(at, `${p} is empty`);
      return password;
    } catch (e) {
      this.error(at, readProblem(p, e));
      return undefined;
    }
  }

  private checkUrl(m: NonNullable<FileShape["mqtt"]>): void {
    const at = ["mqtt", "url"];
    const s = m.url!;
    // URL() rejects ports above 65535 with a bare "Invalid URL"; say which part is wrong.
    const port = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#]*):(\d+)/.exec(s);
    if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) {
      this.error(at, `${URL_MESSAGE}: port ${port[1]} is outside 1..65535`);
      return;
    }
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      this.error(at, `${URL_MESSAGE}, e.g. mqtt://127.0.0.1:1883`);
      return;
    }
    if (!MQTT_SCHEMES.includes(u.protocol)) {
      const hint =
        u.protocol === "tcp:"
          ? "; did you mean mqtt://?"
          : u.protocol === "ssl:" || u.protocol === "tls:"
            ? "; did you mean mqtts://?"
            : "";
      this.error(at, `${URL_MESSAGE}${hint}`);
      return;
    }
    if (u.hostname === "") {
      this.error(at, `${URL_MESSAGE} with a host`);
      return;
    }
    if (u.password !== "") {
      this.warn(
        at,
        "the URL holds a password; move it to passwordFile or passwordEnv (and the user name to username)",
      );
    }
  }

  private checkTls(
    m: NonNullable<FileShape["mqtt"]>,
    tls: NonNullable<NonNullable<FileShape["mqtt"]>["tls"]>,
  ): void {
    for (const k of ["ca", "cert", "key"] as const) {
      const p = tls[k];
      if (typeof p === "string") this.checkFileExists(["mqtt", "tls", k], p);
    }
    if (tls.cert !== undefined && tls.key === undefined)
      this.error(["mqtt", "tls", "cert"], "a client certificate needs its key: set mqtt.tls.key");
    if (tls.key !== undefined && tls.cert === undefined)
      this.error(["mqtt", "tls", "key"], "a client key needs its certificate: set mqtt.tls.cert");
    if (tls.rejectUnauthorized === false) {
      this.warn(
        ["mqtt", "tls", "rejectUnauthorized"],
        "the broker's certificate is not verified: anyone on the path can impersonate the broker (manifests stay signed, but notices and status do not)",
      );
    }
    const url = m.url ?? CONFIG_DEFAULTS.mqtt.url;
    if (typeof url === "string" && /^(mqtt|ws):/i.test(url)) {
      this.warn(
        ["mqtt", "tls"],
        `ignored: ${url} is not encrypted; use mqtts:// or wss:// to connect with TLS`,
      );
    }
  }

  private checkTrust(f: FileShape): void {
    const t = f.trust;
    if (!isObj(t) || typeof t.policy !== "string") return;
    const p = this.fileArg(["trust", "policy"], t.policy);
    if (p === undefined) return;
    let policy: TrustPolicy;
    try {
      policy = parseTrustPolicy(this.readFile(p));
    } catch (e) {
      this.error(
        ["trust", "policy"],
        e instanceof EspOtaError ? `${p}: ${e.message}` : readProblem(p, e),
      );
      return;
    }
    const revoked = Array.isArray(t.revoked) ? t.revoked.filter((r) => typeof r === "string") : [];
    const threshold = Number.isSafeInteger(t.threshold) ? t.threshold : undefined;
    if (threshold !== undefined && threshold < policy.threshold) {
      this.error(
        ["trust", "threshold"],
        `${threshold} is below trust.json's threshold (${policy.threshold}); a gateway may require more signatures than the signers' policy, never fewer`,
      );
      return;
    }
    const eff = effectiveTrustPolicy(policy, { revoked, ...(threshold ? { threshold } : {}) });
    if (eff.keys.length < eff.threshold) {
      this.error(
        threshold !== undefined && eff.keys.length >= policy.threshold
          ? ["trust", "threshold"]
          : ["trust", "revoked"],
        `${eff.keys.length} of trust.json's keys remain after revocation, but ${eff.threshold} signatures are required: no manifest could be accepted`,
      );
    }
  }

  private checkSerial(f: FileShape): void {
    const s = f.serial;
    if (!isObj(s)) return;
    if (Array.isArray(s.ports)) {
      const seen = new Map<string, number>();
      s.ports.forEach((sel, i) => {
        if (!isObj(sel)) return;
        const at = ["serial", "ports", i];
        const kinds = (["path", "glob", "vid"] as const).filter((k) => sel[k] !== undefined);
        if (kinds.length === 0) {
          this.error(at, "give one of path:, glob: or vid: (pid: and serialNumber: narrow vid:)");
        } else if (kinds.length > 1) {
          this.error(
            [...at, kinds[1]!],
            `give only one of ${kinds.join(", ")} per selector (use two selectors for both)`,
            "key",
          );
        }
        for (const k of ["pid", "serialNumber"] as const) {
          if (sel[k] !== undefined && sel.vid === undefined)
            this.error([...at, k], `${k} selects together with vid: add vid:`, "key");
        }
        for (const k of ["path", "glob"] as const) {
          if (typeof sel[k] === "string" && sel[k].startsWith("~"))
            this.error([...at, k], TILDE_MESSAGE);
        }
        if (typeof sel.glob === "string" && !sel.glob.startsWith("~")) {
          const g = this.abs(sel.glob);
          if (picomatch.scan(dirname(g)).isGlob) {
            this.error(
              [...at, "glob"],
              "wildcards are allowed in the last path component only (the directory is listed, not searched), e.g. /dev/serial/by-id/usb-Silicon_Labs*",
            );
          } else if (!picomatch.scan(basename(g)).isGlob) {
            this.warn([...at, "glob"], "has no wildcard, so it matches only itself; use path:");
          }
        }
        const key = JSON.stringify(normaliseSelector(sel, (p) => this.abs(p)));
        const first = seen.get(key);
        if (first !== undefined)
          this.warn(at, `the same selector as serial.ports[${first}]; one is enough`);
        else seen.set(key, i);
      });
    }
    const c =
      typeof s.consoleBaud === "number" ? s.consoleBaud : CONFIG_DEFAULTS.serial.consoleBaud;
    if (typeof s.transferBaud === "number" && s.transferBaud < c) {
      this.warn(
        ["serial", "transferBaud"],
        `is below consoleBaud (${c}): the transfer would be slower than the console`,
      );
    }
  }

  private checkPaths(f: FileShape): void {
    for (const k of ["stateDir", "stagingDir"] as const) {
      if (typeof f[k] === "string" && f[k].startsWith("~")) this.error([k], TILDE_MESSAGE);
    }
  }

  private checkDownload(f: FileShape): void {
    const d = f.download;
    if (!isObj(d)) return;
    if (typeof d.ca === "string") this.checkFileExists(["download", "ca"], d.ca);
    if (Array.isArray(d.allowedUrls))
      d.allowedUrls.forEach((prefix, i) => {
        const problem = typeof prefix === "string" ? allowListEntryProblem(prefix) : undefined;
        if (problem) this.error(["download", "allowedUrls", i], problem);
      });
    const num = (k: keyof AgentConfig["download"]) => {
      const v = d[k] ?? CONFIG_DEFAULTS.download[k as keyof typeof CONFIG_DEFAULTS.download];
      return typeof v === "number" ? v : undefined;
    };
    const base = num("backoffBaseMs");
    const max = num("backoffMaxMs");
    if (base !== undefined && max !== undefined && base > max) {
      this.error(
        ["download", d.backoffBaseMs !== undefined ? "backoffBaseMs" : "backoffMaxMs"],
        `backoffBaseMs (${base}) is above backoffMaxMs (${max})`,
      );
    }
    const total = num("totalTimeoutMs");
    for (const k of ["connectTimeoutMs", "idleTimeoutMs", "minRateWindowMs"] as const) {
      const v = num(k);
      if (d[k] !== undefined && v !== undefined && total !== undefined && v >= total) {
        this.warn(
          ["download", k],
          `is not below totalTimeoutMs (${total}), so totalTimeoutMs ends an attempt first`,
        );
      }
    }
  }

  private checkPolicy(f: FileShape): void {
    if (isObj(f.policy) && f.policy.allowDowngrade === true) {
      this.warn(
        ["policy", "allowDowngrade"],
        "an older signed release may replace a newer one, so a fixed vulnerability can be reinstalled; keep it false outside a lab (a device's secure_version still refuses what its eFuses forbid)",
      );
    }
  }

  private checkMetrics(f: FileShape): void {
    const m = f.metrics;
    if (!isObj(m) || typeof m.listen !== "string") return;
    const problem = listenProblem(m.listen);
    if (problem) {
      this.error(["metrics", "listen"], problem);
      return;
    }
    const { host } = parseListen(m.listen);
    if (m.enabled !== false && !isLoopback(host))
      this.warn(
        ["metrics", "listen"],
        `${host} is not loopback: /metrics and /readyz are served without authentication to whoever reaches it; prefer 127.0.0.1 behind a local Prometheus or a TLS proxy (docs/metrics.md)`,
      );
  }

  private checkFileExists(segs: readonly Seg[], p: string): void {
    const abs = this.fileArg(segs, p);
    if (abs !== undefined && !this.isFile(abs)) this.error(segs, `no such file: ${abs}`);
  }

  /** A file path from the config, absolute; undefined (and an error) for a "~/…" path. */
  private fileArg(segs: readonly Seg[], p: string): string | undefined {
    if (p.startsWith("~")) {
      this.error(segs, TILDE_MESSAGE);
      return undefined;
    }
    return this.abs(p);
  }

  private abs(p: string): string {
    return isAbsolute(p) ? p : resolve(this.dir, p);
  }

  private resolveConfig(f: FileShape, password: string | undefined): AgentConfig {
    const D = CONFIG_DEFAULTS;
    const m = f.mqtt ?? {};
    const gatewayId = f.gatewayId ?? gatewayIdFromHostname(this.deps.hostname ?? osHostname());
    const tls = m.tls;
    const stateDir = this.abs(f.stateDir ?? D.stateDir);
    return {
      file: this.file,
      gatewayId,
      mqtt: {
        url: m.url ?? D.mqtt.url,
        prefix: m.prefix ?? D.mqtt.prefix,
        clientId: m.clientId ?? `esp-ota-gw-${gatewayId}`,
        ...(m.username !== undefined ? { username: m.username } : {}),
        ...(password !== undefined ? { password } : {}),
        ...(m.protocolVersion !== undefined ? { protocolVersion: m.protocolVersion } : {}),
        keepaliveSec: m.keepaliveSec ?? D.mqtt.keepaliveSec,
        ...(tls
          ? {
              tls: {
                ...(tls.ca ? { ca: this.abs(tls.ca) } : {}),
                ...(tls.cert ? { cert: this.abs(tls.cert) } : {}),
                ...(tls.key ? { key: this.abs(tls.key) } : {}),
                rejectUnauthorized: tls.rejectUnauthorized ?? D.mqtt.rejectUnauthorized,
              },
            }
          : {}),
      },
      trust: {
        policy: this.abs(f.trust.policy),
        ...(f.trust.threshold !== undefined ? { threshold: f.trust.threshold } : {}),
        revoked: [...new Set(f.trust.revoked ?? [])],
      },
      serial: {
        ports: f.serial.ports.map((s) => normaliseSelector(s, (p) => this.abs(p))),
        rescanMs: f.serial.rescanMs ?? D.serial.rescanMs,
        consoleBaud: f.serial.consoleBaud ?? D.serial.consoleBaud,
        transferBaud: f.serial.transferBaud ?? D.serial.transferBaud,
      },
      stateDir,
      // Relative to the config file like every other path, not to stateDir.
      stagingDir: f.stagingDir !== undefined ? this.abs(f.stagingDir) : join(stateDir, "staging"),
      download: {
        ...D.download,
        ...withoutUndefined(f.download ?? {}),
        ...(f.download?.ca !== undefined ? { ca: this.abs(f.download.ca) } : {}),
      },
      policy: { ...D.policy, ...withoutUndefined(f.policy ?? {}) },
      log: { ...D.log, ...withoutUndefined(f.log ?? {}) },
      metrics: {
        enabled: f.metrics?.enabled ?? f.metrics?.listen !== undefined,
        listen: parseListen(f.metrics?.listen ?? D.metrics.listen),
      },
    };
  }
}

const TILDE_MESSAGE =
  "paths are not shell-expanded: ~ is not the home directory here; write the absolute path";

function isObj<T>(v: T | undefined | null): v is T & object {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The selector as the agent uses it: paths absolute, USB ids lowercase without 0x. */
function normaliseSelector(s: PortSelector, abs: (p: string) => string): PortSelector {
  const hex = (x: string) => x.toLowerCase().replace(/^0x/, "");
  return {
    ...(typeof s.path === "string" ? { path: abs(s.path) } : {}),
    ...(typeof s.glob === "string" ? { glob: abs(s.glob) } : {}),
    ...(typeof s.vid === "string" ? { vid: hex(s.vid) } : {}),
    ...(typeof s.pid === "string" ? { pid: hex(s.pid) } : {}),
    ...(typeof s.serialNumber === "string" ? { serialNumber: s.serialNumber } : {}),
    ...(isObj(s.rescue)
      ? {
          rescue: {
            enabled: s.rescue.enabled === true,
            resetLines: s.rescue.resetLines === true,
          },
        }
      : {}),
  };
}

/**
 * Why `prefix` cannot be a topic prefix (the rules of checkPrefix in the MQTT contract,
 * docs/mqtt.md): no wildcards (MQTT 5 §4.7.1, they are not allowed in topic names), no empty
 * levels, no leading or trailing "/".
 */
function prefixProblem(prefix: string): string | undefined {
  if (/[+#]/.test(prefix)) return "must not contain the MQTT wildcards + or #";
  if (prefix.includes("\u0000")) return "must not contain a NUL character";
  if (prefix.startsWith("/") || prefix.endsWith("/"))
    return 'must not start or end with "/" (an empty topic level)';
  if (prefix.split("/").some((l) => l === "")) return 'must not contain an empty level ("//")';
  return undefined;
}

function readProblem(p: string, e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === "ENOENT") return `no such file: ${p}`;
  if (code === "EACCES") return `permission denied reading ${p}`;
  if (code === "EISDIR") return `${p} is a directory`;
  return `cannot read ${p}: ${(e as Error)?.message ?? String(e)}`;
}

/** TypeBox's JSON pointer ("/serial/ports/1/glob") as path segments, numbers for list indexes. */
function pointerToSegs(pointer: string, root: unknown): Seg[] {
  if (pointer === "") return [];
  const segs: Seg[] = [];
  let cur: unknown = root;
  for (const raw of pointer.slice(1).split("/")) {
    const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (Array.isArray(cur)) {
      const i = Number(key);
      segs.push(i);
      cur = cur[i];
    } else {
      segs.push(key);
      cur = isObj(cur) ? (cur as Record<string, unknown>)[key] : undefined;
    }
  }
  return segs;
}

/** An error in our words, with the value found when it helps (never a secret's). */
function schemaMessage(e: ValueError, segs: readonly Seg[]): string {
  const s = e.schema as TSchema & { errorMessage?: string; missingMessage?: string };
  if (e.type === ValueErrorType.ObjectRequiredProperty)
    return s.missingMessage ?? "required key is missing";
  const secret = SECRET_KEYS.has(String(segs[segs.length - 1]));
  const got = secret || e.value === undefined ? "" : `, got ${shortJson(e.value)}`;
  if (s.errorMessage) return `${s.errorMessage}${got}`;
  switch (e.type) {
    case ValueErrorType.String:
      return `expected a string${got}`;
    case ValueErrorType.StringMinLength:
      return s.minLength === 1
        ? "must not be empty"
        : `expected at least ${s.minLength} characters`;
    case ValueErrorType.StringMaxLength:
      return `expected at most ${s.maxLength} characters`;
    case ValueErrorType.StringPattern:
      return `expected text matching ${s.pattern}${got}`;
    case ValueErrorType.Integer:
    case ValueErrorType.Number:
      return `expected a whole number${got}`;
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.NumberMinimum:
      return `expected at least ${s.minimum}${got}`;
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.NumberMaximum:
      return `expected at most ${s.maximum}${s.maximum === MAX_TIMER_MS ? " (the longest timer Node.js can set)" : ""}${got}`;
    case ValueErrorType.Boolean:
      return `expected true or false${got}`;
    case ValueErrorType.Object:
      return `expected a mapping (indented key: value lines)${got}`;
    case ValueErrorType.Array:
      return `expected a list (lines starting with "- ")${got}`;
    case ValueErrorType.ArrayMinItems:
      return `expected at least ${s.minItems} entr${s.minItems === 1 ? "y" : "ies"}`;
    default:
      return e.message;
  }
}

function shortJson(v: unknown): string {
  const t = JSON.stringify(v) ?? String(v);
  return t.length > 60 ? `${t.slice(0, 57)}...` : t;
}
