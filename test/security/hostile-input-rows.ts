/**
 * The hostile-input table (issue 12 "Must show"): for every input the gateway takes, the kinds of
 * bad input tried and the coded outcome, one row each. test/security/hostile-input.test.ts runs
 * every row; `npm run docs:hostile-input` writes the same rows into docs/security.md ("Hostile
 * input"), and the test checks the page holds them. Every bug found at a boundary adds a row.
 *
 * Rows call the pure boundary functions (decoders, validators, decideNotice, verifyManifest,
 * checkDeviceInfo, the ledger store's load); the download rows that need real HTTP use a loopback
 * server. `fuzz` rows run random input (fast-check, on the suite's fixed seed: test/setup.ts)
 * through a decoder: every sample must give one of the listed outcomes.
 *
 * An outcome is an error code, or one of these refusal values where the boundary refuses without
 * an error (docs/security.md explains each).
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { parseAgentConfig } from "../../agent/config.js";
import { loadOrCreateGatewayKey } from "../../agent/gateway-key.js";
import { LedgerStore } from "../../agent/store.js";
import { downloadImage, fetchDocument } from "../../src/download/download.js";
import {
  decideDocumentResponse,
  decideImageResponse,
  type HeaderMap,
  redirectTarget,
} from "../../src/download/policy.js";
import { StagingFile } from "../../src/download/staging.js";
import { EspOtaError } from "../../src/errors.js";
import { checkLedger, decideNotice, newLedger, recordMark } from "../../src/gateway/ledger.js";
import { checkDeviceInfo } from "../../src/gateway/port-state.js";
import { commandResponder } from "../../src/mqtt/client.js";
import { applyMessage, emptyFleet, fleetView, renderTable } from "../../src/mqtt/fleet-view.js";
import {
  type DeviceStatus,
  MESSAGE_KINDS,
  type MessageKind,
  noticeDigest,
  parseMessage,
  type UpdateNotice,
} from "../../src/mqtt/messages.js";
import { topics } from "../../src/mqtt/topics.js";
import {
  generateManifestKey,
  parseManifestPrivateKeyPem,
  toPublicKey,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import { signManifest, verifyManifest } from "../../src/release/manifest.js";
import { createRollout, statusAnswers } from "../../src/rollout/machine.js";
import { parseRolloutControl, parseRolloutState } from "../../src/rollout/messages.js";
import { noticeFor } from "../../src/rollout/plan.js";
import { encodeFrame, FrameDecoder, MAX_LINE, MAX_PAYLOAD } from "../../src/uart/frame.js";
import { initialHostState, transition } from "../../src/uart/host-machine.js";
import { encodeInfo, encodeResult, type Info, MSG } from "../../src/uart/messages.js";
import { startServer } from "../download/harness.js";

/**
 * What no message, and no line printed from the network, may hold raw: C0 (a newline too), DEL,
 * C1, the line separators and the bidi controls (what printable() in src/text.ts escapes).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
export const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** Outcomes that are refusals without an error. */
export const REFUSALS = {
  ignored: "not one of the gateway's inputs (another topic, a frame that was not sent): dropped",
  foreign: "the outcome of a notice the rollout did not issue: counted for nothing",
  escaped: "accepted as data, printed with every control character escaped (printable)",
  distrusted: "a staging sidecar not trusted: the staged bytes are started over from 0",
  restart: "the staged bytes do not fit the response: discarded, asked again from 0",
  dropped: "an ETag that is not a strong quoted tag: not used for If-Range",
  accepted:
    "valid, and nothing else changed (an unknown field is ignored; a random sample that happened to be valid)",
} as const;
export type Refusal = keyof typeof REFUSALS;

/** What one row (or one fuzz sample) gave: its code and the message a user or log would see. */
export interface Outcome {
  code: string;
  message: string;
}

export type InputKind =
  | "MQTT topic"
  | "MQTT notice"
  | "MQTT command"
  | "retained status / presence"
  | "retained rollout state"
  | "manifest"
  | "HTTP response"
  | "UART frame"
  | "UART INFO"
  | "ledger file"
  | "staging sidecar"
  | "gateway key"
  | "config";

interface RowBase {
  input: InputKind;
  /** The kind of bad input (a short class: "too long", "wrong type", "escape sequences"). */
  kind: string;
  /** What exactly is sent, in words. */
  bad: string;
  /** The outcome (a code, or a refusal value); fuzz rows list every outcome a sample may give. */
  expect: string | readonly string[];
  /** The issue and defect this row comes from, when a bug found it. */
  found?: string;
}
export interface CaseRow extends RowBase {
  run(ctx: RowContext): Outcome | Promise<Outcome>;
}
export interface FuzzRow<T = unknown> extends RowBase {
  fuzz: { arb: fc.Arbitrary<T>; numRuns: number; run(x: T, ctx: RowContext): Outcome };
}
export type Row = CaseRow | FuzzRow;

export interface RowContext {
  /** A fresh empty directory for this row. */
  dir(): string;
}

// ---- shared fixtures -----------------------------------------------------------------------------

const DEV = "esp32-aabbccddeeff";
const NOW = new Date("2026-11-15T12:00:00Z");
const t = topics();
const ESC = "\x1b[2J\x1b]0;owned\x07";
const enc = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));

const notice = (o: Partial<UpdateNotice> = {}): UpdateNotice => ({
  format: 1,
  deviceId: DEV,
  releaseId: "blink-1.2.0",
  counter: 7,
  manifestUrls: ["http://rel.example/blink-1.2.0/esp32-aabbccddeeff.json"],
  issuedAt: NOW.toISOString(),
  ...o,
});

const status = (o: Partial<DeviceStatus> = {}): DeviceStatus => ({
  format: 1,
  deviceId: DEV,
  gatewayId: "gw1",
  seq: 3,
  state: "failed",
  releaseId: "blink-1.2.0",
  updatedAt: NOW.toISOString(),
  ...o,
});

/** A parse result as an outcome. */
function parsed(p: { ok: true } | { ok: false; code: string; reason: string }): Outcome {
  return p.ok ? { code: "accepted", message: "" } : { code: p.code, message: p.reason };
}

// A genuine signed manifest for this device, its key and trust policy.
const key = generateManifestKey("ed25519");
const policy = trustPolicyFromKeys([key], 1);
const manifest = {
  format: 1 as const,
  releaseId: "blink-1.2.0",
  deviceId: DEV,
  chip: "esp32",
  partitionTableSha256: "11".repeat(32),
  project: "blink",
  version: "1.2.0",
  secureVersion: 0,
  counter: 7,
  issuedAt: "2026-11-01T12:00:00Z",
  expiresAt: "2026-12-01T12:00:00Z",
  variants: [
    {
      slot: "ota_1",
      offset: 0x160000,
      size: 0x2000,
      sha256: "aa".repeat(32),
      urls: ["https://cdn.example/r/ota_1.bin"],
    },
  ],
};
const signed = signManifest(manifest, [key]);
const verify = (input: unknown): Outcome =>
  parsed(verifyManifest(input, policy, { now: NOW, deviceId: DEV, chip: "esp32" }));

/** A minimal INFO (no running app, otadata erased), as a device sends it. */
function info(o: { chip?: string; label?: string; appDesc?: Uint8Array } = {}): Info {
  return {
    protocol: 1,
    chip: o.chip ?? "esp32",
    revision: 3,
    mac: Uint8Array.of(0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff),
    flashSize: 4 << 20,
    flashEncryption: 2,
    secureBootVersion: 2,
    efuseSecureVersion: 0,
    runningOffset: 0x10000,
    runningState: 0xffffffff,
    maxPayload: 4100,
    rxBuffer: 4096,
    isrInIram: 1,
    slots: [
      { label: o.label ?? "ota_0", subtype: 0x10, offset: 0x10000, size: 0x150000 },
      { label: "ota_1", subtype: 0x11, offset: 0x160000, size: 0x150000 },
    ],
    otadata: new Uint8Array(64).fill(0xff),
    appDesc: o.appDesc ?? new Uint8Array(256),
    resume: undefined,
  };
}

/** An esp_app_desc_t (256 bytes) whose version and project name are `text` (cut to 31 bytes). */
function appDesc(text: string): Uint8Array {
  const d = new Uint8Array(256);
  const v = new DataView(d.buffer);
  v.setUint32(0, 0xabcd5432, true); // ESP_APP_DESC_MAGIC_WORD
  const b = new TextEncoder().encode(text).subarray(0, 31);
  d.set(b, 16); // version[32]
  d.set(b, 48); // project_name[32]
  return d;
}

/** What the host state machine makes of one frame from the device during the handshake. */
function hostFrame(type: number, payload: Uint8Array): Outcome {
  const s0 = initialHostState({ mode: "info" });
  const started = transition(s0, { kind: "start", now: 0 });
  const r = transition(started.state, { kind: "frame", now: 1, type, payload });
  const fail = r.effects.find((e) => e.kind === "fail");
  if (fail) return { code: fail.code, message: fail.message };
  const done = r.effects.find((e) => e.kind === "finish");
  if (done && done.outcome.kind === "info") {
    // The INFO decoded: the agent's check where it enters decides (the same path the agent takes).
    const c = checkDeviceInfo(done.outcome.info, 0);
    return c.ok ? { code: "accepted", message: "" } : { code: c.code, message: c.reason };
  }
  return { code: "ignored", message: "" };
}

/** The decoder's events for `bytes`: a CRC error's code, else ignored; log lines stay bounded. */
function frames(bytes: Uint8Array): Outcome {
  const d = new FrameDecoder();
  const events = [...d.push(bytes), ...d.expire(), ...d.flushLine()];
  for (const e of events) {
    if (e.kind === "frame")
      return { code: "E_TEST_FRAME_NOT_SENT", message: `a frame of type ${e.frame.type}` };
    if (e.kind === "log" && e.line.length > MAX_LINE)
      return { code: "E_TEST_LINE_TOO_LONG", message: `${e.line.length} characters` };
  }
  const err = events.find((e) => e.kind === "error");
  return err ? { code: err.code, message: err.detail } : { code: "ignored", message: "" };
}

/** What the fleet view makes of one retained message; printed lines must hold no raw control. */
function retained(topic: string, payload: Uint8Array, gateways = false): Outcome {
  const s = emptyFleet(t.prefix, gateways ? new Map([["gw1", toPublicKey(key)]]) : undefined);
  const r = applyMessage(s, topic, payload);
  if (r.kind === "invalid") return { code: r.code, message: r.reason };
  if (r.kind === "ignored") return { code: "ignored", message: "" };
  const printed = renderTable(fleetView(s, NOW.getTime())).join("\n");
  // The table's own line breaks are its rows; anything else raw would be the attacker's.
  const raw = printed.replaceAll("\n", "").match(RAW_CONTROL);
  return raw
    ? { code: "E_TEST_RAW_CONTROL", message: JSON.stringify(raw[0]) }
    : { code: "escaped", message: "" };
}

/** What the gateway's command responder does with one request whose reply it refuses. */
function command(payload: unknown, responseTopic?: string): Outcome {
  const refusals: Outcome[] = [];
  const listener = commandResponder(
    t.commands("gw1"),
    async () => {
      throw new Error("the handler must not run for a refused request");
    },
    { onRefused: (r) => refusals.push({ code: r.code, message: r.reason }) },
  );
  // A refused request never reaches the client: it is neither answered nor handled.
  const client = new Proxy({} as never, {
    get: () => {
      throw new Error("the responder used the client for a refused request");
    },
  });
  listener(client, t.commands("gw1"), Buffer.from(enc(payload)), {
    cmd: "publish",
    topic: t.commands("gw1"),
    payload: Buffer.alloc(0),
    qos: 1,
    dup: false,
    retain: false,
    ...(responseTopic ? { properties: { responseTopic } } : {}),
  } as never);
  return refusals[0] ?? { code: "E_TEST_NOT_REFUSED", message: "" };
}

/** The ledger store's load of a file with `text` in it; the coded log line is the outcome. */
function ledgerFile(ctx: RowContext, text: string): Outcome {
  const dir = ctx.dir();
  mkdirSync(join(dir, "devices"));
  writeFileSync(join(dir, "devices", `${DEV}.json`), text);
  const lines: Outcome[] = [];
  const log = {
    info() {},
    warn() {},
    error: (obj: object, msg: string) =>
      lines.push({ code: String((obj as { code?: unknown }).code), message: msg }),
  };
  const store = new LedgerStore(dir, { log });
  const l = store.load(DEV);
  if (l.deviceId !== DEV || l.job !== undefined)
    return { code: "E_TEST_LEDGER_USED", message: "the bad ledger was used" };
  if (!readdirSync(join(dir, "devices")).includes(`${DEV}.json.corrupt`))
    return { code: "E_TEST_NOT_KEPT", message: "the bad ledger was not kept as *.corrupt" };
  return lines[0] ?? { code: "E_TEST_NO_LOG", message: "" };
}

/** StagingFile.open over 100 staged bytes and a sidecar with `text` in it. */
async function sidecar(ctx: RowContext, text: string): Promise<Outcome> {
  const path = join(ctx.dir(), "img.bin");
  writeFileSync(path, new Uint8Array(100));
  writeFileSync(`${path}.json`, text);
  const f = await StagingFile.open(path, { size: 4096, sha256: "cd".repeat(32) });
  try {
    return f.offset === 0
      ? { code: "distrusted", message: "" }
      : { code: "E_TEST_TRUSTED", message: `resumed at ${f.offset}` };
  } finally {
    await f.close("keep");
  }
}

const CONFIG = `trust:
  policy: trust.json
serial:
  ports:
    - glob: /dev/ttyUSB*
`;
/** parseAgentConfig's first error, as the agent reports it (E_CONFIG_INVALID). */
function config(text: string): Outcome {
  const r = parseAgentConfig(text, "/etc/esp-ota/gateway.yaml", {
    readFile: () => '{"format":1,"threshold":1,"keys":[],"revoked":[]}',
    isFile: () => true,
    env: {},
    hostname: "gw1",
  });
  const e = r.problems.find((p) => p.severity === "error");
  if (r.config || !e) return { code: "accepted", message: "" };
  return { code: "E_CONFIG_INVALID", message: `${e.path}: ${e.message}` };
}

const img = (status: number, headers: HeaderMap, offset = 0): Outcome => {
  const d = decideImageResponse(4096, offset, status, headers, NOW.getTime());
  if (d.kind === "fail") return { code: d.code, message: d.reason };
  if (d.kind === "restart") return { code: "restart", message: d.reason };
  if (d.kind === "accept" && d.etag === undefined && headers.etag !== undefined)
    return { code: "dropped", message: "" };
  return { code: "accepted", message: "" };
};

/**
 * The error a download rejects with, as an outcome (anything else is a crash). downloadImage and
 * fetchDocument say E_DOWNLOAD_FAILED with each mirror's code in `context.codes`; when every
 * mirror failed the same way the agent's status carries that one code (agent/update.ts), so the
 * row names it.
 */
async function rejects(p: Promise<unknown>): Promise<Outcome> {
  try {
    await p;
    return { code: "accepted", message: "" };
  } catch (e) {
    if (!(e instanceof EspOtaError)) throw e;
    const codes = new Set(
      String(e.context.codes ?? "")
        .split(",")
        .filter(Boolean),
    );
    const code = e.code === "E_DOWNLOAD_FAILED" && codes.size === 1 ? [...codes][0]! : e.code;
    return { code, message: e.message };
  }
}

const bytesArb = fc.uint8Array({ maxLength: 2048 });
const json = fc.jsonValue({ maxDepth: 4 });

// ---- the table ----------------------------------------------------------------------------------

export const ROWS: readonly Row[] = [
  // MQTT topics: anything not exactly one of ours is not read at all.
  {
    input: "MQTT topic",
    kind: "foreign level",
    bad: "a status on `<prefix>/devices/<id>/status/extra`",
    expect: "ignored",
    run: () => retained(`${t.status(DEV)}/extra`, enc(status())),
  },
  {
    input: "MQTT topic",
    kind: "too long",
    bad: "a device id of 200 characters in the topic",
    expect: "ignored",
    run: () => retained(`${t.prefix}/devices/${"d".repeat(200)}/status`, enc(status())),
  },
  {
    input: "MQTT topic",
    kind: "escape sequences",
    bad: "a device id level holding ESC sequences",
    expect: "ignored",
    run: () => retained(`${t.prefix}/devices/d${ESC}/status`, enc(status())),
  },

  // Notices.
  {
    input: "MQTT notice",
    kind: "not UTF-8",
    bad: "bytes 0xff 0xfe",
    expect: "E_MQTT_MESSAGE_JSON",
    run: () => parsed(parseMessage("notice", Uint8Array.of(0xff, 0xfe))),
  },
  {
    input: "MQTT notice",
    kind: "not JSON",
    bad: "text with ESC sequences and CR LF",
    expect: "E_MQTT_MESSAGE_JSON",
    run: () => parsed(parseMessage("notice", `{"a": ${ESC}\r\n}`)),
  },
  {
    input: "MQTT notice",
    kind: "too big",
    bad: "a payload over 256 KiB",
    expect: "E_MQTT_MESSAGE_JSON",
    run: () => parsed(parseMessage("notice", new Uint8Array(300 * 1024).fill(0x20))),
  },
  {
    input: "MQTT notice",
    kind: "deep nesting",
    bad: "100,000 nested arrays (200 KB)",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () => parsed(parseMessage("notice", `${"[".repeat(100_000)}${"]".repeat(100_000)}`)),
  },
  {
    input: "MQTT notice",
    kind: "wrong type",
    bad: "`counter` a string, `manifestUrls` an object",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () =>
      parsed(parseMessage("notice", enc({ ...notice(), counter: "7", manifestUrls: { a: 1 } }))),
  },
  {
    input: "MQTT notice",
    kind: "prototype key",
    bad: '`"__proto__": {"polluted": 1}` (an unknown field: ignored, pollutes nothing)',
    expect: "accepted",
    run: () => {
      const o = parsed(
        parseMessage(
          "notice",
          JSON.stringify(notice()).replace("{", '{"__proto__":{"polluted":1},'),
        ),
      );
      return ({} as Record<string, unknown>).polluted === undefined
        ? o
        : { code: "E_TEST_POLLUTED", message: "" };
    },
  },
  {
    input: "MQTT notice",
    kind: "too long",
    bad: "a mirror URL of 2,049 characters, and one with a CR LF",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () => {
      const long = parsed(
        parseMessage("notice", enc(notice({ manifestUrls: [`http://m/${"p".repeat(2040)}`] }))),
      );
      return long.code === "E_MQTT_MESSAGE_SCHEMA"
        ? parsed(parseMessage("notice", enc(notice({ manifestUrls: ["http://m/a\r\nb"] }))))
        : long;
    },
  },
  {
    input: "MQTT notice",
    kind: "too many",
    bad: "9 mirror URLs",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () =>
      parsed(
        parseMessage(
          "notice",
          enc(notice({ manifestUrls: Array.from({ length: 9 }, (_, i) => `http://m${i}/a`) })),
        ),
      ),
  },
  {
    input: "MQTT notice",
    kind: "out of range",
    bad: "a counter of 2^53",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () => parsed(parseMessage("notice", enc(notice({ counter: 2 ** 53 })))),
  },
  {
    input: "MQTT notice",
    kind: "mismatched",
    bad: "a notice naming another device than its topic",
    expect: "E_AGENT_NOTICE_INVALID",
    found: "issue 12 defect 16",
    run: () => {
      const d = decideNotice(newLedger(DEV), notice({ deviceId: "esp32-000000000001" }));
      return d.action === "refuse"
        ? { code: d.code, message: d.reason }
        : { code: "E_TEST_NOT_REFUSED", message: d.action };
    },
  },
  {
    input: "MQTT notice",
    kind: "replayed",
    bad: "a counter hint below the device's high-water mark",
    expect: "E_MANIFEST_COUNTER",
    found: "issue 12 defect 16",
    run: () => {
      const l = newLedger(DEV);
      recordMark(l, { counter: 10, releaseId: "blink-1.3.0" });
      const d = decideNotice(l, notice({ counter: 9 }));
      return d.action === "refuse"
        ? { code: d.code, message: d.reason }
        : { code: "E_TEST_NOT_REFUSED", message: d.action };
    },
  },
  {
    input: "MQTT notice",
    kind: "cleared",
    bad: "an empty retained desired topic (a cancel) with nothing in flight",
    expect: "ignored",
    run: () => {
      const d = decideNotice(newLedger(DEV), null);
      return d.action === "ignore"
        ? { code: "ignored", message: d.reason }
        : { code: "E_TEST_NOT_IGNORED", message: d.action };
    },
  },

  // Commands: the responder refuses before the handler runs.
  {
    input: "MQTT command",
    kind: "outside the prefix",
    bad: "`replyTo` another application's topic",
    expect: "E_MQTT_REPLY_REFUSED",
    found: "issue 12 defect 12",
    run: () => command({ format: 1, command: "info", replyTo: "factory/plc/write" }),
  },
  {
    input: "MQTT command",
    kind: "own topics",
    bad: "`replyTo` a device's status topic (inside the prefix)",
    expect: "E_MQTT_REPLY_REFUSED",
    found: "issue 12 defect 12",
    run: () => command({ format: 1, command: "info", replyTo: t.status(DEV) }),
  },
  {
    input: "MQTT command",
    kind: "outside the prefix",
    bad: "an MQTT 5 Response Topic outside the reply space",
    expect: "E_MQTT_REPLY_REFUSED",
    found: "issue 12 defect 12",
    run: () => command({ format: 1, command: "cancel", deviceId: DEV }, t.desired(DEV)),
  },
  {
    input: "MQTT command",
    kind: "not JSON",
    bad: "ESC sequences, no reply address",
    expect: "E_MQTT_MESSAGE_JSON",
    run: () => command(ESC),
  },
  {
    input: "MQTT command",
    kind: "wildcard",
    bad: "an unknown command with `replyTo` `#`",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () => command({ format: 1, command: `wipe${ESC}`, replyTo: "#" }),
  },

  // Retained statuses and presence as `esp-ota status` and `esp-ota rollout` see them.
  {
    input: "retained status / presence",
    kind: "escape sequences",
    bad: "ESC, OSC, CR LF and a bidi override in a status's versions and error message",
    expect: "escaped",
    found: "issue 12 defect 8",
    run: () =>
      retained(
        t.status(DEV),
        enc(
          status({
            targetVersion: `2.0${ESC}`,
            error: { code: "E_DOWNLOAD_HTTP", message: `x${ESC}\r\nd9 ok\u202e`, step: "download" },
          }),
        ),
      ),
  },
  {
    input: "retained status / presence",
    kind: "escape sequences",
    bad: "ESC sequences in a presence's agent version",
    expect: "escaped",
    found: "issue 12 defect 8",
    run: () =>
      retained(
        t.presence("gw1"),
        enc({
          format: 1,
          gatewayId: "gw1",
          state: "online",
          version: `0.1${ESC}`,
          at: NOW.toISOString(),
        }),
      ),
  },
  {
    input: "retained status / presence",
    kind: "mismatched",
    bad: "a status whose deviceId is not its topic's",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () => retained(t.status("esp32-000000000001"), enc(status())),
  },
  {
    input: "retained status / presence",
    kind: "forged",
    bad: "an unsigned status where `--gateways` names the gateway",
    expect: "E_MQTT_STATUS_UNSIGNED",
    run: () => retained(t.status(DEV), enc(status()), true),
  },
  {
    input: "retained status / presence",
    kind: "foreign notice",
    bad: "a genuine `failed` answering a notice of the same release someone else published",
    expect: "foreign",
    found: "issue 12 defect 4",
    run: () => {
      const s = createRollout(
        {
          rolloutId: "r1",
          releaseId: "blink-1.2.0",
          version: "1.2.0",
          manifestBaseUrl: "http://rel.example/blink-1.2.0",
          devices: [{ deviceId: DEV, counter: 7 }],
          waves: [100],
          maxFailureRate: 0,
          minSample: 1,
          waveTimeoutMs: 60_000,
        },
        NOW.getTime(),
      );
      const theirs = { ...noticeFor(s, DEV, 0), manifestUrls: ["http://attacker.example/404"] };
      const whose = statusAnswers(
        s,
        status({ rolloutId: "r1", noticeDigest: noticeDigest(theirs) }),
      );
      return { code: whose, message: "" };
    },
  },
  {
    input: "retained rollout state",
    kind: "wrong type",
    bad: "a rollout state whose `perDevice` is an array",
    expect: "E_MQTT_MESSAGE_SCHEMA",
    run: () => parsed(parseRolloutState(enc({ format: 1, rolloutId: "r1", perDevice: [] }))),
  },
  {
    input: "retained rollout state",
    kind: "not JSON",
    bad: "a payload of ESC sequences (V8's JSON error quoted it raw; G14a)",
    expect: "E_MQTT_MESSAGE_JSON",
    run: () => parsed(parseRolloutState(new TextEncoder().encode(`${ESC}{`.repeat(4000)))),
  },
  // Manifests (verifyManifest: JSON, schema, signatures, then content).
  {
    input: "manifest",
    kind: "not UTF-8",
    bad: "bytes 0xc3 0x28",
    expect: "E_MANIFEST_JSON",
    run: () => verify(Uint8Array.of(0xc3, 0x28)),
  },
  {
    input: "manifest",
    kind: "not JSON",
    bad: "an HTML page with ESC sequences (a notice pointing at an internal page)",
    expect: "E_MANIFEST_JSON",
    run: () => verify(`<html>${ESC}secret</html>`),
  },
  {
    input: "manifest",
    kind: "deep nesting",
    bad: "100,000 nested arrays",
    expect: "E_MANIFEST_SCHEMA",
    run: () => verify(`${"[".repeat(100_000)}${"]".repeat(100_000)}`),
  },
  {
    input: "manifest",
    kind: "unknown field",
    bad: "a 60 KB unknown key of ESC sequences inside the signed part",
    expect: "E_MANIFEST_SCHEMA",
    found: "issue 12 defect 1",
    run: () =>
      verify({ ...signed, signed: { ...signed.signed, [`k${"\x1b[2J".repeat(15_000)}`]: 1 } }),
  },
  {
    input: "manifest",
    kind: "wrong type",
    bad: "`counter` a string, `variants` an object",
    expect: "E_MANIFEST_SCHEMA",
    run: () => verify({ ...signed, signed: { ...signed.signed, counter: "7", variants: {} } }),
  },
  {
    input: "manifest",
    kind: "unsigned",
    bad: "every signature removed",
    expect: "E_MANIFEST_UNSIGNED",
    run: () => verify({ ...signed, signatures: [] }),
  },
  {
    input: "manifest",
    kind: "forged",
    bad: "a signature of random bytes by the trusted key's id",
    expect: "E_MANIFEST_SIGNATURE_INVALID",
    run: () =>
      verify({
        ...signed,
        signatures: [
          { ...signed.signatures[0]!, signature: Buffer.alloc(64, 7).toString("base64") },
        ],
      }),
  },
  {
    input: "manifest",
    kind: "changed",
    bad: "a signed field changed after signing",
    expect: "E_MANIFEST_SIGNATURE_INVALID",
    run: () => verify({ ...signed, signed: { ...signed.signed, counter: 8 } }),
  },

  // HTTP responses (the download policy's decisions, then real HTTP on loopback).
  {
    input: "HTTP response",
    kind: "status",
    bad: "404",
    expect: "E_DOWNLOAD_HTTP",
    run: () => img(404, {}),
  },
  {
    input: "HTTP response",
    kind: "status",
    bad: "503 with a Retry-After of ESC sequences",
    expect: "E_DOWNLOAD_SERVER",
    run: () => img(503, { "retry-after": ESC }),
  },
  {
    input: "HTTP response",
    kind: "header lie",
    bad: "Content-Length `12abc` with ESC sequences",
    expect: "E_DOWNLOAD_RESPONSE",
    run: () => img(200, { "content-length": `12abc${ESC}` }),
  },
  {
    input: "HTTP response",
    kind: "oversize",
    bad: "Content-Length of 40 digits",
    expect: "E_DOWNLOAD_RESPONSE",
    run: () => img(200, { "content-length": "9".repeat(40) }),
  },
  {
    input: "HTTP response",
    kind: "header lie",
    bad: "Content-Length other than the signed size",
    expect: "E_DOWNLOAD_SIZE",
    run: () => img(200, { "content-length": "4097" }),
  },
  {
    input: "HTTP response",
    kind: "encoding",
    bad: "Content-Encoding of 10,000 characters",
    expect: "E_DOWNLOAD_RESPONSE",
    run: () => img(200, { "content-encoding": `gzip${"x".repeat(10_000)}` }),
  },
  {
    input: "HTTP response",
    kind: "Range lie",
    bad: "206 to a request without Range",
    expect: "E_DOWNLOAD_RESPONSE",
    run: () => img(206, { "content-range": "bytes 0-99/4096" }),
  },
  {
    input: "HTTP response",
    kind: "Range lie",
    bad: "206 starting elsewhere than asked",
    expect: "restart",
    run: () => img(206, { "content-range": "bytes 0-99/4096" }, 100),
  },
  {
    input: "HTTP response",
    kind: "Range lie",
    bad: "206 with bytes past the signed size",
    expect: "E_DOWNLOAD_SIZE",
    run: () => img(206, { "content-range": "bytes 100-5000/*" }, 100),
  },
  {
    input: "HTTP response",
    kind: "Range lie",
    bad: "206 with a Content-Range of garbage",
    expect: "E_DOWNLOAD_RESPONSE",
    run: () => img(206, { "content-range": `bytes ${ESC}` }, 100),
  },
  {
    input: "HTTP response",
    kind: "ETag lie",
    bad: "a weak ETag, and one with CR LF",
    expect: "dropped",
    run: () => {
      const weak = img(200, { etag: 'W/"v1"' });
      return weak.code === "dropped" ? img(200, { etag: '"v1"\r\nX-Evil: 1' }) : weak;
    },
  },
  {
    input: "HTTP response",
    kind: "oversize",
    bad: "a manifest whose Content-Length is over the limit",
    expect: "E_DOWNLOAD_TOO_LARGE",
    run: () => {
      const d = decideDocumentResponse(65536, 200, { "content-length": "65537" }, 0);
      return d.kind === "fail"
        ? { code: d.code, message: d.reason }
        : { code: "accepted", message: "" };
    },
  },
  {
    input: "HTTP response",
    kind: "redirect",
    bad: "to `file:///etc/shadow`",
    expect: "E_DOWNLOAD_REDIRECT",
    run: () => {
      const d = redirectTarget(302, "file:///etc/shadow", "http://rel.example/a", 0);
      return d.kind === "fail"
        ? { code: d.code, message: d.reason }
        : { code: d.kind, message: "" };
    },
  },
  {
    input: "HTTP response",
    kind: "redirect",
    bad: "from https to http",
    expect: "E_DOWNLOAD_REDIRECT",
    run: () => {
      const d = redirectTarget(301, "http://rel.example/a", "https://rel.example/a", 0);
      return d.kind === "fail"
        ? { code: d.code, message: d.reason }
        : { code: d.kind, message: "" };
    },
  },
  {
    input: "HTTP response",
    kind: "redirect",
    bad: "a 4th redirect",
    expect: "E_DOWNLOAD_REDIRECT",
    run: () => {
      const d = redirectTarget(307, "/next", "http://rel.example/a", 3);
      return d.kind === "fail"
        ? { code: d.code, message: d.reason }
        : { code: d.kind, message: "" };
    },
  },
  {
    input: "HTTP response",
    kind: "redirect",
    bad: "a Location of ESC sequences that is not a URL",
    expect: "E_DOWNLOAD_REDIRECT",
    run: () => {
      const d = redirectTarget(302, `http://[${ESC}`, "http://rel.example/a", 0);
      return d.kind === "fail"
        ? { code: d.code, message: d.reason }
        : { code: d.kind, message: "" };
    },
  },
  {
    input: "HTTP response",
    kind: "redirect",
    bad: "(loopback) a redirect out of `download.allowedUrls`",
    expect: "E_DOWNLOAD_URL_NOT_ALLOWED",
    run: async () => {
      const s = await startServer((_req, res) => {
        res.writeHead(302, { location: "http://127.0.0.2:9/internal" });
        res.end();
      });
      try {
        return await rejects(
          fetchDocument([s.url("/m.json")], {
            allowedUrls: [s.url("/")],
            limits: { retries: 0 },
          }),
        );
      } finally {
        await s.close();
      }
    },
  },
  {
    input: "HTTP response",
    kind: "too long",
    bad: "(loopback) 8 mirror URLs of 2,000 characters that all 404: one message names all 8",
    expect: "E_DOWNLOAD_HTTP",
    found: "issue 12 defect 1",
    run: async (ctx) => {
      const s = await startServer((_req, res) => {
        res.writeHead(404, { "content-length": "0" });
        res.end();
      });
      try {
        return await rejects(
          downloadImage(
            {
              urls: Array.from({ length: 8 }, (_, i) => s.url(`/${i}/${"p".repeat(2000)}`)),
              size: 1000,
              sha256: "ab".repeat(32),
              dest: join(ctx.dir(), "img.bin"),
            },
            { retries: 0, minRateBytesPerSec: 0 },
          ),
        );
      } finally {
        await s.close();
      }
    },
  },
  {
    input: "HTTP response",
    kind: "oversize",
    bad: "(loopback) a body longer than the signed size, no Content-Length",
    expect: "E_DOWNLOAD_TOO_LARGE",
    run: async (ctx) => {
      const s = await startServer((_req, res) => {
        res.writeHead(200);
        res.end(Buffer.alloc(5000));
      });
      try {
        return await rejects(
          downloadImage(
            { urls: [s.url()], size: 1000, sha256: "ab".repeat(32), dest: join(ctx.dir(), "i") },
            { retries: 0, minRateBytesPerSec: 0 },
          ),
        );
      } finally {
        await s.close();
      }
    },
  },
  {
    input: "HTTP response",
    kind: "slow",
    bad: "(loopback) headers, then no byte for the idle timeout (150 ms here)",
    expect: "E_DOWNLOAD_STALLED",
    run: async (ctx) => {
      const s = await startServer((_req, res) => {
        res.writeHead(200, { "content-length": "1000" });
        res.write(Buffer.alloc(10));
      });
      try {
        return await rejects(
          downloadImage(
            { urls: [s.url()], size: 1000, sha256: "ab".repeat(32), dest: join(ctx.dir(), "i") },
            { retries: 0, minRateBytesPerSec: 0, idleTimeoutMs: 150 },
          ),
        );
      } finally {
        await s.close();
      }
    },
  },

  // UART frames and INFO fields.
  {
    input: "UART frame",
    kind: "corrupted",
    bad: "a frame whose CRC-32 does not match",
    expect: "E_UART_FRAME_CRC",
    run: () => {
      const f = encodeFrame(MSG.INFO, encodeInfo(info()));
      f[f.length - 1]! ^= 0x01;
      return frames(f);
    },
  },
  {
    input: "UART frame",
    kind: "oversize",
    bad: `a header announcing ${MAX_PAYLOAD + 1} bytes (over the largest payload)`,
    expect: "ignored",
    run: () => {
      const h = Uint8Array.of(
        0xa5,
        0x5a,
        MSG.INFO,
        (MAX_PAYLOAD + 1) & 0xff,
        (MAX_PAYLOAD + 1) >> 8,
        0,
      );
      return frames(h);
    },
  },
  {
    input: "UART frame",
    kind: "too long",
    bad: "a console line of 100,000 bytes with no newline",
    expect: "ignored",
    run: () => frames(new Uint8Array(100_000).fill(0x41)),
  },
  {
    input: "UART frame",
    kind: "truncated",
    bad: "an INFO payload cut at 20 bytes",
    expect: "E_UART_PROTOCOL",
    run: () => hostFrame(MSG.INFO, encodeInfo(info()).subarray(0, 20)),
  },
  {
    input: "UART frame",
    kind: "truncated",
    bad: "a RESULT payload of 3 bytes",
    expect: "E_UART_PROTOCOL",
    run: () =>
      hostFrame(
        MSG.RESULT,
        encodeResult({ request: MSG.HELLO, status: 0, espErr: 0, value: 0, detail: "" }).subarray(
          0,
          3,
        ),
      ),
  },
  {
    input: "UART INFO",
    kind: "too long",
    bad: "a chip name of 33 characters",
    expect: "E_AGENT_DEVICE_INFO",
    found: "issue 12 defect 3",
    run: () => hostFrame(MSG.INFO, encodeInfo(info({ chip: "c".repeat(33) }))),
  },
  {
    input: "UART INFO",
    kind: "too long",
    bad: "a slot label of 17 characters",
    expect: "E_AGENT_DEVICE_INFO",
    found: "issue 12 defect 3",
    run: () => hostFrame(MSG.INFO, encodeInfo(info({ label: "l".repeat(17) }))),
  },
  {
    input: "UART INFO",
    kind: "escape sequences",
    bad: "a 255-byte chip name of ESC sequences",
    expect: "E_AGENT_DEVICE_INFO",
    found: "issue 12 defect 3",
    run: () => hostFrame(MSG.INFO, encodeInfo(info({ chip: "\x1b[2J".repeat(60) }))),
  },
  {
    input: "UART INFO",
    kind: "too many",
    bad: "a 257th device on one gateway",
    expect: "E_AGENT_TOO_MANY_DEVICES",
    found: "issue 12 defect 3",
    run: () => {
      const c = checkDeviceInfo(info(), 256);
      return c.ok ? { code: "accepted", message: "" } : { code: c.code, message: c.reason };
    },
  },

  // Files in the state directory.
  {
    input: "ledger file",
    kind: "not JSON",
    bad: "a torn file of ESC sequences",
    expect: "E_AGENT_LEDGER_CORRUPT",
    run: (ctx) => ledgerFile(ctx, `{"deviceId": "${ESC}`),
  },
  {
    input: "ledger file",
    kind: "wrong type",
    bad: "valid JSON: `seq` a string, `job` a number",
    expect: "E_AGENT_LEDGER_CORRUPT",
    found: "issue 12 defect 9",
    run: (ctx) => ledgerFile(ctx, JSON.stringify({ ...newLedger(DEV), seq: "3", job: 1 })),
  },
  {
    input: "ledger file",
    kind: "mismatched",
    bad: "another device's ledger under this device's name",
    expect: "E_AGENT_LEDGER_CORRUPT",
    run: (ctx) => ledgerFile(ctx, JSON.stringify(newLedger("esp32-000000000001"))),
  },
  {
    input: "ledger file",
    kind: "too long",
    bad: "a 60 KB release id of ESC sequences in the high-water mark",
    expect: "E_AGENT_LEDGER_CORRUPT",
    run: (ctx) =>
      ledgerFile(
        ctx,
        JSON.stringify({
          ...newLedger(DEV),
          highWater: { counter: 3, releaseId: ESC.repeat(6000) },
        }),
      ),
  },
  {
    input: "staging sidecar",
    kind: "wrong type",
    bad: "valid JSON: `size` a string",
    expect: "distrusted",
    run: (ctx) =>
      sidecar(ctx, JSON.stringify({ url: "u", etag: null, size: "4096", sha256: "cd".repeat(32) })),
  },
  {
    input: "staging sidecar",
    kind: "mismatched",
    bad: "a sidecar for another image's SHA-256",
    expect: "distrusted",
    run: (ctx) =>
      sidecar(ctx, JSON.stringify({ url: "u", etag: null, size: 4096, sha256: "ef".repeat(32) })),
  },
  {
    input: "staging sidecar",
    kind: "header injection",
    bad: "an ETag with CR LF and a header after it (sent back as If-Range; G14c)",
    expect: "distrusted",
    run: (ctx) =>
      sidecar(
        ctx,
        JSON.stringify({ url: "u", etag: '"a"\r\nX-Evil: 1', size: 4096, sha256: "cd".repeat(32) }),
      ),
  },
  {
    input: "staging sidecar",
    kind: "not JSON",
    bad: "a torn sidecar",
    expect: "distrusted",
    run: (ctx) => sidecar(ctx, '{"url": "u", "et'),
  },
  {
    input: "gateway key",
    kind: "not a key",
    bad: "a PEM file of garbage",
    expect: "E_KEY_PARSE",
    run: (ctx) => {
      const dir = ctx.dir();
      writeFileSync(join(dir, "gateway-key.pem"), `-----BEGIN PRIVATE KEY-----\n${ESC}\n`);
      return keyOutcome(dir);
    },
  },
  {
    input: "gateway key",
    kind: "wrong type",
    bad: "an X25519 private key (not a signing key)",
    expect: "E_KEY_UNSUPPORTED",
    run: (ctx) => {
      const dir = ctx.dir();
      writeFileSync(join(dir, "gateway-key.pem"), X25519_PEM);
      return keyOutcome(dir);
    },
  },

  // Config.
  {
    input: "config",
    kind: "not YAML",
    bad: "an unclosed flow mapping with ESC sequences",
    expect: "E_CONFIG_INVALID",
    run: () => config(`trust: {policy: ${ESC}`),
  },
  {
    input: "config",
    kind: "unknown field",
    bad: "a 60 KB unknown key",
    expect: "E_CONFIG_INVALID",
    run: () => config(`${CONFIG}${"k".repeat(60_000)}: 1\n`),
  },
  {
    input: "config",
    kind: "unknown field",
    bad: "an explicit (`? `) 60 KB key (quoted whole; G14b)",
    expect: "E_CONFIG_INVALID",
    run: () => config(`${CONFIG}? ${"k".repeat(60_000)}\n: 1\n`),
  },
  {
    input: "config",
    kind: "unknown field",
    bad: "a key of ESC sequences (printed raw by check-config; G14b)",
    expect: "E_CONFIG_INVALID",
    run: () => config(`${CONFIG}"${ESC}k": 2\n`),
  },
  {
    input: "config",
    kind: "wrong type",
    bad: "`serial.ports` a string, `mqtt.url` a number",
    expect: "E_CONFIG_INVALID",
    run: () => config("trust:\n  policy: trust.json\nserial:\n  ports: all\nmqtt:\n  url: 5\n"),
  },
  {
    input: "config",
    kind: "alias bomb",
    bad: "a YAML billion-laughs of nested aliases",
    expect: "E_CONFIG_INVALID",
    run: () => {
      let y = `${CONFIG}a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n`;
      for (let i = 1; i < 9; i++)
        y += `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(", ")}]\n`;
      return config(y);
    },
  },
  {
    input: "config",
    kind: "scheme",
    bad: "`mqtt.url` with a `javascript:` scheme",
    expect: "E_CONFIG_INVALID",
    run: () => config(`${CONFIG}mqtt:\n  url: "javascript:alert(1)"\n`),
  },

  // Random input through every decoder (the suite's fixed seed; FC_SEED=random explores).
  ...MESSAGE_KINDS.map(
    (k): FuzzRow<Uint8Array> => ({
      input:
        k === "notice"
          ? "MQTT notice"
          : k === "command"
            ? "MQTT command"
            : "retained status / presence",
      kind: "random bytes",
      bad: `random bytes as a ${k} message`,
      expect: ["E_MQTT_MESSAGE_JSON", "E_MQTT_MESSAGE_SCHEMA"],
      fuzz: { arb: bytesArb, numRuns: 100, run: (b) => parsed(parseMessage(k as MessageKind, b)) },
    }),
  ),
  {
    input: "MQTT notice",
    kind: "random JSON",
    bad: "random JSON values as a notice",
    expect: ["E_MQTT_MESSAGE_SCHEMA"],
    fuzz: {
      arb: json,
      numRuns: 200,
      run: (v) => parsed(parseMessage("notice", JSON.stringify(v))),
    },
  } satisfies FuzzRow<unknown>,
  {
    input: "retained status / presence",
    kind: "random bytes",
    bad: "random bytes on random topics under the prefix, through the fleet view",
    expect: ["ignored", "E_MQTT_MESSAGE_JSON", "E_MQTT_MESSAGE_SCHEMA"],
    fuzz: {
      arb: fc.tuple(
        fc.constantFrom(
          t.status(DEV),
          t.presence("gw1"),
          t.inventory("gw1"),
          t.desired(DEV),
          t.progress(DEV),
          `${t.prefix}/x`,
        ),
        fc.uint8Array({ minLength: 1, maxLength: 512 }),
      ),
      numRuns: 200,
      run: ([topic, b]) => retained(topic, b),
    },
  } satisfies FuzzRow<[string, Uint8Array]>,
  {
    input: "MQTT topic",
    kind: "random levels",
    bad: "a valid status on random topic levels under the prefix",
    expect: ["ignored", "escaped", "E_MQTT_MESSAGE_SCHEMA"],
    fuzz: {
      arb: fc.array(
        fc.oneof(
          fc.string({ maxLength: 70, unit: "binary" }),
          fc.constantFrom("devices", "status", DEV, "+", "#"),
        ),
        { minLength: 1, maxLength: 4 },
      ),
      numRuns: 200,
      run: (levels) => retained(`${t.prefix}/${levels.join("/")}`, enc(status())),
    },
  } satisfies FuzzRow<string[]>,
  {
    input: "retained rollout state",
    kind: "random JSON",
    bad: "random JSON values as a rollout state and a rollout control",
    expect: ["E_MQTT_MESSAGE_SCHEMA"],
    fuzz: {
      arb: fc.tuple(fc.boolean(), json),
      numRuns: 200,
      run: ([state, v]) =>
        parsed(
          state ? parseRolloutState(JSON.stringify(v)) : parseRolloutControl(JSON.stringify(v)),
        ),
    },
  } satisfies FuzzRow<[boolean, unknown]>,
  {
    input: "manifest",
    kind: "random bytes",
    bad: "random bytes as a manifest",
    expect: ["E_MANIFEST_JSON", "E_MANIFEST_SCHEMA"],
    fuzz: { arb: bytesArb, numRuns: 200, run: (b) => verify(b) },
  } satisfies FuzzRow<Uint8Array>,
  {
    input: "manifest",
    kind: "random JSON",
    bad: "random JSON in place of any part of a signed manifest",
    expect: ["E_MANIFEST_SCHEMA", "E_MANIFEST_SIGNATURE_INVALID", "E_MANIFEST_UNSIGNED"],
    fuzz: {
      arb: fc.tuple(fc.constantFrom("signed", "signatures", "counter", "variants", "chip"), json),
      numRuns: 200,
      run: ([where, v]) =>
        verify(
          where === "signed" || where === "signatures"
            ? { ...signed, [where]: v }
            : { ...signed, signed: { ...signed.signed, [where]: v } },
        ),
    },
  } satisfies FuzzRow<[string, unknown]>,
  {
    input: "HTTP response",
    kind: "random headers",
    bad: "random statuses and header values for an image and a resumed image",
    expect: [
      "accepted",
      "restart",
      "dropped",
      "E_DOWNLOAD_HTTP",
      "E_DOWNLOAD_SERVER",
      "E_DOWNLOAD_RESPONSE",
      "E_DOWNLOAD_SIZE",
    ],
    fuzz: {
      arb: fc.tuple(
        fc.integer({ min: 100, max: 599 }),
        fc.dictionary(
          fc.constantFrom(
            "content-length",
            "content-range",
            "content-encoding",
            "etag",
            "retry-after",
          ),
          fc.string({ maxLength: 60, unit: "binary" }),
        ),
        fc.constantFrom(0, 100),
      ),
      numRuns: 300,
      run: ([st, h, offset]) => (st === 416 && offset === 0 ? img(404, h) : img(st, h, offset)),
    },
  } satisfies FuzzRow<[number, Record<string, string>, number]>,
  {
    input: "UART frame",
    kind: "random bytes",
    bad: "random bytes on the serial line (any chunking)",
    expect: ["ignored", "E_UART_FRAME_CRC"],
    fuzz: { arb: fc.uint8Array({ maxLength: 4096 }), numRuns: 200, run: (b) => frames(b) },
  } satisfies FuzzRow<Uint8Array>,
  {
    input: "UART frame",
    kind: "random bytes",
    bad: "random payloads of INFO, RESULT and ANNOUNCE frames during the handshake",
    expect: ["ignored", "accepted", "E_UART_PROTOCOL", "E_AGENT_DEVICE_INFO"],
    fuzz: {
      arb: fc.tuple(fc.constantFrom(MSG.INFO, MSG.RESULT, MSG.ANNOUNCE), bytesArb),
      numRuns: 300,
      run: ([type, b]) => hostFrame(type, b),
    },
  } satisfies FuzzRow<[number, Uint8Array]>,
  {
    input: "UART INFO",
    kind: "random fields",
    bad: "random chip names, slot labels and app descriptors (strings up to 255 bytes)",
    expect: ["accepted", "E_AGENT_DEVICE_INFO"],
    fuzz: {
      arb: fc.record({
        chip: fc.string({ maxLength: 80, unit: "binary" }),
        label: fc.string({ maxLength: 40, unit: "binary" }),
        desc: fc.string({ maxLength: 40, unit: "binary" }),
      }),
      numRuns: 300,
      run: (r) =>
        hostFrame(
          MSG.INFO,
          encodeInfo(info({ chip: r.chip, label: r.label, appDesc: appDesc(r.desc) })),
        ),
    },
  } satisfies FuzzRow<{ chip: string; label: string; desc: string }>,
  {
    input: "ledger file",
    kind: "random JSON",
    bad: "random JSON, and random JSON in place of a ledger field",
    expect: ["accepted", "E_AGENT_LEDGER_CORRUPT"],
    fuzz: {
      arb: fc.tuple(
        fc.constantFrom("", "seq", "job", "marks", "highWater", "lastStatus", "refused"),
        json,
      ),
      numRuns: 300,
      run: ([field, v]) => {
        const c = checkLedger(field === "" ? v : { ...newLedger(DEV), [field]: v }, DEV);
        return c.ok
          ? { code: "accepted", message: "" }
          : { code: "E_AGENT_LEDGER_CORRUPT", message: c.reason };
      },
    },
  } satisfies FuzzRow<[string, unknown]>,
  {
    input: "gateway key",
    kind: "random text",
    bad: "random text, and random bytes base64 in a PEM frame, as the key file",
    expect: ["E_KEY_PARSE", "E_KEY_UNSUPPORTED"],
    fuzz: {
      arb: fc.oneof(
        fc.string({ maxLength: 200, unit: "binary" }),
        fc
          .uint8Array({ maxLength: 120 })
          .map(
            (b) =>
              `-----BEGIN PRIVATE KEY-----\n${Buffer.from(b).toString("base64")}\n-----END PRIVATE KEY-----\n`,
          ),
      ),
      numRuns: 200,
      run: (pem) => {
        try {
          parseManifestPrivateKeyPem(pem);
          return { code: "accepted", message: "" };
        } catch (e) {
          if (e instanceof EspOtaError) return { code: e.code, message: e.message };
          throw e;
        }
      },
    },
  } satisfies FuzzRow<string>,
  {
    input: "config",
    kind: "random text",
    bad: "random text, and random YAML scalars under every top-level section",
    expect: ["accepted", "E_CONFIG_INVALID"],
    fuzz: {
      arb: fc.oneof(
        fc.string({ maxLength: 200, unit: "binary" }),
        fc
          .tuple(
            fc.constantFrom("mqtt", "serial", "download", "policy", "trust", "log", "stateDir"),
            fc.string({ maxLength: 40 }),
          )
          .map(([k, v]) => `${CONFIG}${k}: ${JSON.stringify(v)}\n`),
      ),
      numRuns: 200,
      run: (text) => config(text),
    },
  } satisfies FuzzRow<string>,
];

function keyOutcome(dir: string): Outcome {
  try {
    loadOrCreateGatewayKey(dir);
    return { code: "accepted", message: "" };
  } catch (e) {
    if (e instanceof EspOtaError) return { code: e.code, message: e.message };
    throw e;
  }
}

/** An X25519 key: valid PKCS#8, but not one that can sign manifests or statuses. */
const X25519_PEM = generateKeyPairSync("x25519")
  .privateKey.export({ type: "pkcs8", format: "pem" })
  .toString();

/** A row's name as the test runner prints it (the table a reader sees). */
export function rowName(r: Row): string {
  const expect = typeof r.expect === "string" ? r.expect : r.expect.join(" | ");
  return `${r.input} · ${r.kind}: ${r.bad}${r.found ? ` (${r.found})` : ""} → ${expect}`;
}

/** A temporary-directory factory for the rows. */
export function rowContext(): { ctx: RowContext; root: string } {
  const root = mkdtempSync(join(tmpdir(), "hostile-input-"));
  let n = 0;
  return {
    root,
    ctx: {
      dir: () => {
        const d = join(root, String(n++));
        mkdirSync(d);
        return d;
      },
    },
  };
}

// ---- the docs table -----------------------------------------------------------------------------

export const DOC_BEGIN = "<!-- hostile-input:begin (npm run docs:hostile-input) -->";
export const DOC_END = "<!-- hostile-input:end -->";

const cell = (s: string) => s.replaceAll("|", "\\|").replaceAll("\n", " ");

/** The "Hostile input" table of docs/security.md, generated from ROWS. */
export function renderHostileInputMarkdown(): string {
  const out = [
    DOC_BEGIN,
    "| input | kind of bad input | what is sent | outcome |",
    "|---|---|---|---|",
  ];
  for (const r of ROWS) {
    const expect = (typeof r.expect === "string" ? [r.expect] : r.expect)
      .map((c) => `\`${c}\``)
      .join(", ");
    const bad = "fuzz" in r ? `${r.bad} (${r.fuzz.numRuns} samples)` : r.bad;
    const found = r.found ? ` (${r.found})` : "";
    out.push(`| ${cell(r.input)} | ${cell(r.kind)} | ${cell(bad)}${found} | ${expect} |`);
  }
  out.push("", "Refusal values (no error: the input is refused or neutralised without one):", "");
  for (const [k, v] of Object.entries(REFUSALS)) out.push(`- \`${k}\`: ${v}.`);
  out.push(DOC_END);
  return out.join("\n");
}
