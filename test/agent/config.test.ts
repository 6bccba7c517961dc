import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import {
  AgentConfigError,
  agentConfigJsonSchema,
  agentWriteDirs,
  CONFIG_DEFAULTS,
  type ConfigDeps,
  type ConfigProblem,
  configKeyPaths,
  editDistance,
  effectiveTrustPolicy,
  formatProblem,
  gatewayIdFromHostname,
  loadAgentConfig,
  parseAgentConfig,
  prepareStateDirs,
  stateDirProblems,
} from "../../agent/config.js";
import {
  customiseExample,
  redactedConfig,
  redactUrl,
  registerAgentConfigCommands,
} from "../../agent/config-command.js";
import { runCli } from "../../src/cli/program.js";
import {
  encodeTrustPolicy,
  generateManifestKey,
  type TrustPolicy,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import { runCapture } from "../helpers/cli.js";

const KEYS = [
  generateManifestKey("ed25519"),
  generateManifestKey("ed25519"),
  generateManifestKey("ed25519"),
];
/** A key from another keyring: revoking it here is allowed (it may sign old releases). */
const OTHER = generateManifestKey("ecdsa-p256");
const POLICY: TrustPolicy = trustPolicyFromKeys(KEYS, 2, []);
const TRUST_JSON = encodeTrustPolicy(POLICY);
const FILE = "/etc/esp-ota/gateway.yaml";
const EXAMPLE = readFileSync(new URL("../../agent/gateway.example.yaml", import.meta.url), "utf8");
const AS_ROOT = process.getuid?.() === 0;

/** Fake files: trust.json next to the config, plus whatever a test adds. */
function deps(files: Record<string, string> = {}, extra: ConfigDeps = {}): ConfigDeps {
  const all: Record<string, string> = { "/etc/esp-ota/trust.json": TRUST_JSON, ...files };
  return {
    readFile: (p) => {
      const t = all[p];
      if (t === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: "ENOENT" });
      return t;
    },
    isFile: (p) => p in all,
    env: {},
    hostname: "gw-test",
    ...extra,
  };
}

const MINIMAL = `trust:
  policy: trust.json
serial:
  ports:
    - glob: /dev/ttyUSB*
`;

function parse(text: string, d: ConfigDeps = deps()) {
  return parseAgentConfig(text, FILE, d);
}

function errors(text: string, d?: ConfigDeps): ConfigProblem[] {
  return parse(text, d).problems.filter((p) => p.severity === "error");
}

describe("agent config: the example and the defaults", () => {
  it("agent/gateway.example.yaml validates with no problem and states every default", () => {
    const { config, problems } = parse(EXAMPLE);
    expect(problems).toEqual([]);
    const minimal = parse(MINIMAL).config!;
    // The example writes the defaults out: it resolves like the minimal file, apart from ports.
    expect({ ...config!, serial: { ...config!.serial, ports: [] } }).toEqual({
      ...minimal,
      serial: { ...minimal.serial, ports: [] },
    });
    expect(config!.serial.ports).toEqual([
      { vid: "10c4", pid: "ea60" },
      { vid: "1a86", pid: "7523" },
      { vid: "0403", pid: "6001" },
      { vid: "303a", pid: "1001" },
    ]);
  });

  it("the example mentions every key (set, or commented out for the alternatives)", () => {
    for (const path of configKeyPaths()) {
      const name = path.split(/[.[\]]+/).pop()!;
      expect(EXAMPLE, path).toMatch(new RegExp(`^\\s*(#\\s*)?(- )?${name}:`, "m"));
    }
  });

  it("docs/configuration.md documents every key by its full path", () => {
    const doc = readFileSync(new URL("../../docs/configuration.md", import.meta.url), "utf8");
    for (const path of configKeyPaths()) expect(doc, path).toContain(`\`${path}\``);
  });

  it("docs/schemas/agent-config.schema.json is generated from the code (run `npm run docs:schemas`)", () => {
    const onDisk = readFileSync(
      new URL("../../docs/schemas/agent-config.schema.json", import.meta.url),
      "utf8",
    );
    expect(onDisk).toBe(`${JSON.stringify(agentConfigJsonSchema(), null, 2)}\n`);
  });

  it("a minimal file gets every default; relative paths resolve against the file's directory", () => {
    const { config, problems } = parse(MINIMAL, deps({}, { hostname: "Line 3/Gateway" }));
    expect(problems).toEqual([]);
    expect(config).toEqual({
      file: FILE,
      gatewayId: "Line-3-Gateway",
      mqtt: {
        url: "mqtt://127.0.0.1:1883",
        prefix: "esp-ota/v1",
        clientId: "esp-ota-gw-Line-3-Gateway",
        keepaliveSec: 30,
      },
      trust: { policy: "/etc/esp-ota/trust.json", revoked: [] },
      serial: {
        ports: [{ glob: "/dev/ttyUSB*" }],
        rescanMs: 2000,
        consoleBaud: 115200,
        transferBaud: 921600,
      },
      stateDir: "/etc/esp-ota/state",
      stagingDir: "/etc/esp-ota/state/staging",
      download: { ...CONFIG_DEFAULTS.download },
      policy: { ...CONFIG_DEFAULTS.policy },
      log: { ...CONFIG_DEFAULTS.log },
      metrics: { enabled: false, listen: { host: "127.0.0.1", port: 9477 } },
    });
  });

  it("resolves paths, TLS, ids and the USB ids as written (YAML would read 0403 as 403)", () => {
    const text = `gatewayId: gw-7
mqtt:
  url: mqtts://broker.example:8883
  clientId: custom
  username: gw7
  tls:
    ca: ../pki/ca.pem
    cert: /pki/gw.crt
    key: /pki/gw.key
trust:
  policy: /keys/trust.json
  threshold: 3
  revoked: ["${OTHER.keyId}", "${OTHER.keyId}"]
serial:
  ports:
    - path: ports/tty-a
    - vid: 0x0403
      pid: 6001
      serialNumber: 0001
stateDir: /var/lib/esp-ota
stagingDir: staging
download:
  retries: 0
  ca: ca.pem
`;
    const d = deps({
      "/keys/trust.json": TRUST_JSON,
      "/etc/pki/ca.pem": "",
      "/pki/gw.crt": "",
      "/pki/gw.key": "",
      "/etc/esp-ota/ca.pem": "",
    });
    const { config, problems } = parse(text, d);
    expect(problems).toEqual([]);
    expect(config!.gatewayId).toBe("gw-7");
    expect(config!.mqtt).toMatchObject({
      clientId: "custom",
      username: "gw7",
      tls: {
        ca: "/etc/pki/ca.pem",
        cert: "/pki/gw.crt",
        key: "/pki/gw.key",
        rejectUnauthorized: true,
      },
    });
    expect(config!.trust).toEqual({
      policy: "/keys/trust.json",
      threshold: 3,
      revoked: [OTHER.keyId],
    });
    expect(config!.serial.ports).toEqual([
      { path: "/etc/esp-ota/ports/tty-a" },
      { vid: "0403", pid: "6001", serialNumber: "0001" },
    ]);
    expect(config!.stateDir).toBe("/var/lib/esp-ota");
    expect(config!.stagingDir).toBe("/etc/esp-ota/staging");
    expect(config!.download).toMatchObject({
      retries: 0,
      ca: "/etc/esp-ota/ca.pem",
      maxConcurrent: 4,
    });
  });

  it("sections whose keys are all commented out are empty, not errors", () => {
    const { config, problems } = parse(`${MINIMAL}mqtt:\n  # url: x\npolicy:\nlog:\n`);
    expect(problems).toEqual([]);
    expect(config!.mqtt.url).toBe(CONFIG_DEFAULTS.mqtt.url);
  });
});

describe("agent config: secrets", () => {
  it("reads the password from passwordFile (trailing newline removed) or passwordEnv", () => {
    const file = parse(
      `${MINIMAL}mqtt:\n  username: u\n  passwordFile: secret\n`,
      deps({ "/etc/esp-ota/secret": "s3cret\n" }),
    );
    expect(file.problems).toEqual([]);
    expect(file.config!.mqtt.password).toBe("s3cret");
    const env = parse(
      `${MINIMAL}mqtt:\n  passwordEnv: MQTT_PW\n`,
      deps({}, { env: { MQTT_PW: "from-env" } }),
    );
    expect(env.problems).toEqual([]);
    expect(env.config!.mqtt.password).toBe("from-env");
  });

  it("download.allowedUrls: absolute http(s) prefixes, each bad entry reported at its line", () => {
    const ok = parse(
      `${MINIMAL}download:\n  allowedUrls:\n    - https://updates.example.com/fw/\n`,
    );
    expect(ok.problems).toEqual([]);
    expect(ok.config!.download.allowedUrls).toEqual(["https://updates.example.com/fw/"]);
    expect(parse(MINIMAL).config!.download.allowedUrls).toEqual([]);
    const bad = parse(
      `${MINIMAL}download:\n  allowedUrls:\n    - https://updates.example.com/\n    - updates.example.com\n    - https://u:p@h.example/\n`,
    );
    expect(bad.problems.map((p) => [p.severity, p.path])).toEqual([
      ["error", "download.allowedUrls[1]"],
      ["error", "download.allowedUrls[2]"],
    ]);
  });

  it("a literal password works but is warned about, and no message ever shows it", () => {
    const r = parse(`${MINIMAL}mqtt:\n  username: u\n  password: 0123hunter2\n`);
    expect(r.config!.mqtt.password).toBe("0123hunter2");
    expect(r.problems.map((p) => [p.severity, p.path])).toEqual([["warning", "mqtt.password"]]);
    const bad = parse(`${MINIMAL}mqtt:\n  password: [hunter2]\n`);
    expect(bad.problems.map((p) => p.path)).toEqual(["mqtt.password"]);
    expect(JSON.stringify(bad.problems)).not.toContain("hunter2");
    const url = parse(`${MINIMAL}mqtt:\n  url: mqtt://u:hunter2@broker:1883\n`);
    expect(url.problems.map((p) => [p.severity, p.path])).toEqual([["warning", "mqtt.url"]]);
    expect(JSON.stringify(url.problems)).not.toContain("hunter2");
  });
});

describe("agent config: errors point at the key", () => {
  // Each row: the file, then the expected errors as "line:column path message-fragment".
  const rows: { name: string; text: string; expect: string[]; d?: ConfigDeps }[] = [
    {
      name: "URL scheme",
      text: `${MINIMAL}mqtt:\n  url: http://broker\n`,
      expect: ["7:8 mqtt.url expected an mqtt://, mqtts://, ws:// or wss:// URL"],
    },
    {
      name: "tcp:// gets a hint",
      text: `${MINIMAL}mqtt:\n  url: tcp://broker:1883\n`,
      expect: ["7:8 mqtt.url did you mean mqtt://?"],
    },
    {
      name: "URL port out of range",
      text: `${MINIMAL}mqtt:\n  url: mqtt://broker:65536\n`,
      expect: ["7:8 mqtt.url port 65536 is outside 1..65535"],
    },
    {
      name: "URL port zero",
      text: `${MINIMAL}mqtt:\n  url: mqtts://[::1]:0\n`,
      expect: ["7:8 mqtt.url port 0 is outside 1..65535"],
    },
    {
      name: "unknown key, close to a known one",
      text: `${MINIMAL}mqtt:\n  keepalive: 30\n  protocolVesion: 4\n`,
      expect: [
        '7:3 mqtt.keepalive unknown key "keepalive"; did you mean "keepaliveSec"?',
        '8:3 mqtt.protocolVesion did you mean "protocolVersion"?',
      ],
    },
    {
      name: "a key in the wrong section",
      text: `${MINIMAL}url: mqtt://x\n`,
      expect: ['6:1 url unknown key "url" here; did you mean mqtt.url?'],
    },
    {
      name: "an unknown key with nothing close lists the known ones",
      text: `${MINIMAL}log:\n  colour: true\n`,
      expect: ["7:3 log.colour known here: level, deviceLines, deviceLinesPerSec"],
    },
    {
      name: "types and ranges",
      text: `${MINIMAL}  rescanMs: 50\n  consoleBaud: 115201\nmqtt:\n  keepaliveSec: "30"\n  protocolVersion: 3\ndownload:\n  totalTimeoutMs: 3000000000\n  retries: 1.5\npolicy:\n  allowDowngrade: yes\n`,
      expect: [
        "6:13 serial.rescanMs expected at least 100, got 50",
        "7:16 serial.consoleBaud expected one of 9600",
        '9:17 mqtt.keepaliveSec expected a whole number, got "30"',
        "10:20 mqtt.protocolVersion expected 5 (MQTT 5) or 4 (MQTT 3.1.1), got 3",
        "12:19 download.totalTimeoutMs expected at most 2147483647 (the longest timer Node.js can set)",
        "13:12 download.retries expected a whole number, got 1.5",
        '15:19 policy.allowDowngrade expected true or false, got "yes"',
      ],
    },
    {
      name: "YAML syntax error",
      text: "trust:\n  policy: [trust.json\nserial: {}\n",
      expect: ["3:1  YAML:"],
    },
    {
      name: "duplicate key",
      text: `${MINIMAL}trust:\n  policy: x\n`,
      expect: ["6:1  YAML: Map keys must be unique"],
    },
    {
      name: "empty file",
      text: "# nothing\n",
      expect: ["  the file is empty"],
    },
    {
      name: "not a mapping",
      text: "- a\n- b\n",
      expect: ["1:1  expected a mapping of keys"],
    },
    {
      name: "required sections and keys",
      text: "gatewayId: gw\nserial:\n  rescanMs: 1000\n",
      expect: [
        " trust required: the trust section",
        "2:1 serial.ports required: at least one port selector",
      ],
    },
    {
      name: "an empty port list",
      text: "trust:\n  policy: trust.json\nserial:\n  ports: []\n",
      expect: ["4:10 serial.ports expected at least 1 entry"],
    },
    {
      name: "port selectors",
      text: `trust:
  policy: trust.json
serial:
  ports:
    - /dev/ttyUSB0
    - path: /dev/ttyUSB0
      glob: /dev/ttyACM*
    - pid: ea60
    - glob: /dev/*/tty*
    - vid: 10c4x
    - serial: abc
`,
      expect: [
        "5:7 serial.ports[0] expected a port selector",
        "7:7 serial.ports[1].glob give only one of path, glob per selector",
        "8:7 serial.ports[2] give one of path:, glob: or vid:",
        "8:7 serial.ports[2].pid pid selects together with vid",
        "9:13 serial.ports[3].glob wildcards are allowed in the last path component only",
        "10:12 serial.ports[4].vid expected a USB vendor id: 4 hex digits such as 10c4",
        '11:7 serial.ports[5].serial unknown key "serial"; did you mean "serialNumber"?',
        "11:7 serial.ports[5] give one of path:, glob: or vid:",
      ],
    },
    {
      name: "trust policy missing",
      text: MINIMAL.replace("trust.json", "keys/trust.json"),
      expect: ["2:11 trust.policy no such file: /etc/esp-ota/keys/trust.json"],
    },
    {
      name: "trust policy not a trust policy",
      text: MINIMAL,
      d: deps({ "/etc/esp-ota/trust.json": '{"format": 1}' }),
      expect: ["2:11 trust.policy /etc/esp-ota/trust.json: trust policy"],
    },
    {
      name: "threshold below the file's",
      text: MINIMAL.replace("trust.json", "trust.json\n  threshold: 1"),
      expect: ["3:14 trust.threshold 1 is below trust.json's threshold (2)"],
    },
    {
      name: "threshold above the keys",
      text: MINIMAL.replace("trust.json", "trust.json\n  threshold: 4"),
      expect: [
        "3:14 trust.threshold 3 of trust.json's keys remain after revocation, but 4 signatures",
      ],
    },
    {
      name: "revocations leave too few keys",
      text: MINIMAL.replace(
        "trust.json",
        `trust.json\n  revoked:\n    - "${KEYS[0]!.keyId}"\n    - "${KEYS[1]!.keyId}"`,
      ),
      expect: [
        "4:5 trust.revoked 1 of trust.json's keys remain after revocation, but 2 signatures",
      ],
    },
    {
      name: "a revoked id that is not a key id",
      text: MINIMAL.replace("trust.json", "trust.json\n  revoked: [ABCDEF]"),
      expect: [
        '3:13 trust.revoked[0] expected a manifest key id: 32 lowercase hex digits, got "ABCDEF"',
      ],
    },
    {
      name: "TLS files",
      text: `${MINIMAL}mqtt:\n  url: mqtts://b\n  tls:\n    ca: ca.pem\n    cert: gw.crt\n`,
      d: deps({ "/etc/esp-ota/gw.crt": "" }),
      expect: [
        "9:9 mqtt.tls.ca no such file: /etc/esp-ota/ca.pem",
        "10:11 mqtt.tls.cert a client certificate needs its key",
      ],
    },
    {
      name: "password sources",
      text: `${MINIMAL}mqtt:\n  passwordFile: pw\n  passwordEnv: PW\n`,
      expect: ["8:3 mqtt.passwordEnv give only one of passwordFile, passwordEnv"],
    },
    {
      name: "password file missing, env var unset",
      text: `${MINIMAL}mqtt:\n  passwordFile: pw\n`,
      expect: ["7:17 mqtt.passwordFile no such file: /etc/esp-ota/pw"],
    },
    {
      name: "password env var unset",
      text: `${MINIMAL}mqtt:\n  passwordEnv: PW\n`,
      expect: ["7:16 mqtt.passwordEnv environment variable PW is not set"],
    },
    {
      name: "MQTT 3.1.1 needs a username with a password",
      text: `${MINIMAL}mqtt:\n  protocolVersion: 4\n  passwordEnv: PW\n`,
      d: deps({}, { env: { PW: "x" } }),
      expect: ["8:3 mqtt.passwordEnv sends a password only with a username"],
    },
    {
      name: "prefix and gateway id are topic levels",
      text: `gatewayId: "gw/1"\n${MINIMAL}mqtt:\n  prefix: esp-ota/+/v1\n`,
      expect: [
        "1:12 gatewayId expected 1 to 64 characters of A-Z a-z 0-9 . _ -",
        "8:11 mqtt.prefix must not contain the MQTT wildcards",
      ],
    },
    {
      name: "prefix with an empty level",
      text: `${MINIMAL}mqtt:\n  prefix: esp-ota//v1\n`,
      expect: ["7:11 mqtt.prefix must not contain an empty level"],
    },
    {
      name: "~ is not expanded",
      text: `${MINIMAL}stateDir: ~/state\n`,
      expect: ["6:11 stateDir paths are not shell-expanded"],
    },
    {
      name: "backoff base above max",
      text: `${MINIMAL}download:\n  backoffBaseMs: 60000\n`,
      expect: ["7:18 download.backoffBaseMs backoffBaseMs (60000) is above backoffMaxMs (30000)"],
    },
  ];

  for (const row of rows) {
    it(row.name, () => {
      const found = errors(row.text, row.d);
      const got = found.map(
        (p) =>
          `${p.line ?? ""}${p.column !== undefined ? `:${p.column}` : ""} ${p.path} ${p.message}`,
      );
      expect(got.length, got.join("\n")).toBe(row.expect.length);
      row.expect.forEach((want, i) => {
        // "LINE:COL PATH fragment-of-the-message"; LINE:COL and PATH may be empty.
        const [, pos, path, fragment] = /^(\S*) (\S*) (.*)$/.exec(want)!;
        expect(got[i]!.startsWith(`${pos} ${path} `), got.join("\n")).toBe(true);
        expect(found[i]!.message, got.join("\n")).toContain(fragment);
      });
      expect(parse(row.text, row.d).config).toBeUndefined();
    });
  }

  it("reports every problem of a file in one pass, in file order", () => {
    const text = `gatewayId: "a b"
mqtt:
  url: ftp://x
trust:
  policy: missing.json
serial:
  ports:
    - glob: /dev/*/x*
  transferBaud: 1
log:
  level: loud
`;
    const got = errors(text).map((p) => p.path);
    expect(got).toEqual([
      "gatewayId",
      "mqtt.url",
      "trust.policy",
      "serial.ports[0].glob",
      "serial.transferBaud",
      "log.level",
    ]);
  });

  it("warnings: a config that works but is risky", () => {
    const text = `${MINIMAL}    - glob: /dev/ttyUSB*
    - path: /dev/ttyACM0
    - glob: /dev/ttyACM0
  transferBaud: 115200
  consoleBaud: 230400
mqtt:
  tls:
    rejectUnauthorized: false
policy:
  allowDowngrade: true
download:
  idleTimeoutMs: 600000
`;
    const r = parse(text);
    expect(r.config).toBeDefined();
    expect(r.problems.map((p) => `${p.line}:${p.column} ${p.path}`)).toEqual([
      "6:7 serial.ports[1]",
      "8:13 serial.ports[3].glob",
      "9:17 serial.transferBaud",
      "13:5 mqtt.tls",
      "13:25 mqtt.tls.rejectUnauthorized",
      "15:19 policy.allowDowngrade",
      "17:18 download.idleTimeoutMs",
    ]);
    expect(r.problems.every((p) => p.severity === "warning")).toBe(true);
  });

  it("never throws on bad input, whatever the text", () => {
    const keyish = fc.constantFrom(...configKeyPaths().map((p) => p.split(/[.[\]]+/).pop()!));
    const yamlish = fc
      .array(
        fc.tuple(
          fc.nat(3),
          keyish,
          fc.oneof(fc.string(), fc.integer().map(String), fc.constant("[1, {a: 2}]")),
        ),
        { maxLength: 12 },
      )
      .map((lines) => lines.map(([d, k, v]) => `${"  ".repeat(d)}${k}: ${v}`).join("\n"));
    fc.assert(
      fc.property(fc.oneof(fc.string(), yamlish), (text) => {
        const r = parse(text);
        expect(r.config !== undefined || r.problems.some((p) => p.severity === "error")).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("mqtt.protocolVersion: unset means MQTT 5 with the fallback; 5 or 4 forces that version", () => {
    // issue 12 (defect 16): `5` was documented to force MQTT 5 but was also the default, so the
    // agent could not tell a forced 5 from none and always fell back to 3.1.1 silently.
    expect(parse(MINIMAL).config?.mqtt.protocolVersion).toBeUndefined();
    expect(parse(`${MINIMAL}mqtt:\n  protocolVersion: 5\n`).config?.mqtt.protocolVersion).toBe(5);
    expect(parse(`${MINIMAL}mqtt:\n  protocolVersion: 4\n`).config?.mqtt.protocolVersion).toBe(4);
  });

  it("misuse throws TypeError", () => {
    expect(() => parseAgentConfig(undefined as unknown as string, FILE)).toThrow(TypeError);
    expect(() => parseAgentConfig("", "")).toThrow(TypeError);
  });
});

describe("agent config: helpers", () => {
  it("formatProblem: FILE:LINE:COLUMN: key: message, warnings marked", () => {
    expect(
      formatProblem("gateway.yaml", {
        path: "mqtt.url",
        line: 12,
        column: 5,
        message: "bad",
        severity: "error",
      }),
    ).toBe("gateway.yaml:12:5: mqtt.url: bad");
    expect(
      formatProblem("g.yaml", { path: "x", line: 1, column: 1, message: "m", severity: "warning" }),
    ).toBe("g.yaml:1:1: warning: x: m");
    expect(formatProblem("g.yaml", { path: "", message: "empty", severity: "error" })).toBe(
      "g.yaml: empty",
    );
  });

  it("effectiveTrustPolicy raises the threshold, never lowers it, and adds revocations", () => {
    const revoked = [KEYS[0]!.keyId];
    expect(effectiveTrustPolicy(POLICY, { threshold: 1, revoked: [] }).threshold).toBe(2);
    const eff = effectiveTrustPolicy(POLICY, { threshold: 3, revoked });
    expect(eff.threshold).toBe(3);
    expect(eff.revoked).toEqual(revoked);
    expect(eff.keys.map((k) => k.keyId)).toEqual([KEYS[1]!.keyId, KEYS[2]!.keyId]);
  });

  it("gatewayIdFromHostname and editDistance", () => {
    expect(gatewayIdFromHostname("pi.local")).toBe("pi.local");
    expect(gatewayIdFromHostname("")).toBe("gateway");
    expect(gatewayIdFromHostname("x".repeat(80))).toHaveLength(64);
    expect(editDistance("downlod", "download")).toBe(1);
    expect(editDistance("URL", "url")).toBe(0);
    expect(editDistance("", "abc")).toBe(3);
  });
});

describe("agent config: files and the CLI", () => {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-config-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "trust.json"), TRUST_JSON);

  async function cli(argv: string[]) {
    let stdout = "";
    let stderr = "";
    const code = await runCli(
      argv,
      { write: (s: string) => (stdout += s) },
      { write: (s: string) => (stderr += s) },
      dir,
      [
        (p, ctx) =>
          registerAgentConfigCommands(
            p.command("agent").option("--config <file>", "as the lead's agent command has"),
            ctx,
          ),
      ],
    );
    return { code, stdout, stderr };
  }

  it("loadAgentConfig: E_CONFIG_READ when unreadable; E_CONFIG_INVALID lists every error", () => {
    expect(() => loadAgentConfig(join(dir, "nope.yaml"))).toThrow(
      expect.objectContaining({ code: "E_CONFIG_READ" }),
    );
    expect(() => loadAgentConfig(dir)).toThrow(expect.objectContaining({ code: "E_CONFIG_READ" }));
    writeFileSync(
      join(dir, "bad.yaml"),
      `${MINIMAL}mqtt:\n  url: nope\n  password: pw\nlog:\n  level: loud\n`,
    );
    let err: AgentConfigError | undefined;
    try {
      loadAgentConfig("bad.yaml", { cwd: dir });
    } catch (e) {
      err = e as AgentConfigError;
    }
    expect(err).toBeInstanceOf(AgentConfigError);
    expect(err!.code).toBe("E_CONFIG_INVALID");
    expect(err!.context).toEqual({ file: "bad.yaml", problems: 2 });
    expect(err!.message).toBe(
      [
        "bad.yaml has 2 errors:",
        "bad.yaml:7:8: mqtt.url: expected an mqtt://, mqtts://, ws:// or wss:// URL, e.g. mqtt://127.0.0.1:1883",
        'bad.yaml:10:10: log.level: expected one of trace, debug, info, warn, error, got "loud"',
      ].join("\n"),
    );
    expect(err!.problems.filter((p) => p.severity === "warning").map((p) => p.path)).toEqual([
      "mqtt.password",
    ]);
  });

  it("loadAgentConfig reads real files: trust.json, a password file", () => {
    writeFileSync(join(dir, "pw"), "secret\r\n");
    writeFileSync(join(dir, "ok.yaml"), `${MINIMAL}mqtt:\n  passwordFile: pw\n`);
    const { config, warnings } = loadAgentConfig(join(dir, "ok.yaml"));
    expect(warnings).toEqual([]);
    expect(config.mqtt.password).toBe("secret");
    expect(config.trust.policy).toBe(join(dir, "trust.json"));
  });

  it("check-config prints ok and the warnings, or every problem with exit 1", async () => {
    writeFileSync(join(dir, "warn.yaml"), `${MINIMAL}mqtt:\n  password: pw\n`);
    const ok = await cli(["agent", "check-config", "--config", "warn.yaml"]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe("ok warn.yaml (1 warning)\n");
    expect(ok.stderr).toMatch(
      /^warn\.yaml:7:13: warning: mqtt\.password: a password in the configuration file/,
    );
    expect(ok.stdout + ok.stderr).not.toContain(": pw");

    const printed = await cli(["agent", "check-config", "--config", "warn.yaml", "--print"]);
    expect(printed.code).toBe(0);
    const json = JSON.parse(printed.stdout.slice(printed.stdout.indexOf("{")));
    expect(json.mqtt.password).toBe("(set)");
    expect(json.trust.policy).toBe(join(dir, "trust.json"));

    // Issue 13 item 15: a password in the broker URL (accepted, with a warning) is not printed.
    writeFileSync(
      join(dir, "url-pw.yaml"),
      `${MINIMAL}mqtt:\n  url: mqtts://gw:hunter2@broker.example:8883\n`,
    );
    const urlPw = await cli(["agent", "check-config", "--config", "url-pw.yaml", "--print"]);
    expect(urlPw.code).toBe(0);
    expect(urlPw.stderr).toContain("mqtt.url: the URL holds a password");
    expect(urlPw.stdout + urlPw.stderr).not.toContain("hunter2");
    const urlJson = JSON.parse(urlPw.stdout.slice(urlPw.stdout.indexOf("{")));
    expect(urlJson.mqtt.url).toBe("mqtts://gw:(redacted)@broker.example:8883");

    writeFileSync(
      join(dir, "bad2.yaml"),
      `${MINIMAL}mqtt:\n  password: pw\n  url: x\nlog:\n  level: loud\n`,
    );
    const bad = await cli(["agent", "check-config", "--config", "bad2.yaml"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toContain("bad2.yaml:7:13: warning: mqtt.password:");
    expect(bad.stderr).toContain(
      "error E_CONFIG_INVALID: bad2.yaml has 2 errors:\nbad2.yaml:8:8: mqtt.url:",
    );
    expect(bad.stderr).toContain("\nbad2.yaml:10:10: log.level: expected one of");

    const missing = await cli(["agent", "check-config", "--config", "missing.yaml"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("error E_CONFIG_READ: cannot read missing.yaml");
    expect((await cli(["agent", "check-config"])).code).toBe(2);
  });

  it("init-config prints the example, writes it once, and the result checks once trust.json is there", async () => {
    const printed = await cli(["agent", "init-config"]);
    expect(printed.code).toBe(0);
    expect(printed.stdout).toBe(EXAMPLE);

    mkdirSync(join(dir, "site"));
    const written = await cli(["agent", "init-config", "--out", "site/gateway.yaml"]);
    expect(written.code).toBe(0);
    expect(readFileSync(join(dir, "site/gateway.yaml"), "utf8")).toBe(EXAMPLE);
    const again = await cli(["agent", "init-config", "--out", "site/gateway.yaml"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("error E_CONFIG_EXISTS: site/gateway.yaml already exists");

    const noTrust = await cli(["agent", "check-config", "--config", "site/gateway.yaml"]);
    expect(noTrust.code).toBe(1);
    expect(noTrust.stderr).toMatch(
      /site\/gateway\.yaml:\d+:\d+: trust\.policy: no such file: .*site\/trust\.json/,
    );
    writeFileSync(join(dir, "site/trust.json"), TRUST_JSON);
    const checked = await cli(["agent", "check-config", "--config", "site/gateway.yaml"]);
    expect(checked).toEqual({
      code: 0,
      stdout: "ok site/gateway.yaml\n",
      // As root, check-config says that root's permissions prove nothing about the agent's user.
      stderr: AS_ROOT ? expect.stringContaining("checked as root") : "",
    });
  });
  it("check-config refuses a stateDir or stagingDir the agent could not write, naming it", async () => {
    // A regular file where a directory should be: refused whoever runs the check, root included.
    writeFileSync(join(dir, "not-a-dir"), "");
    writeFileSync(
      join(dir, "dirs.yaml"),
      `${MINIMAL}stateDir: not-a-dir/state\nstagingDir: not-a-dir\n`,
    );
    const r = await cli(["agent", "check-config", "--config", "dirs.yaml"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("error E_CONFIG_INVALID: dirs.yaml has 3 errors:");
    expect(r.stderr).toContain(
      `dirs.yaml: stateDir: ${join(dir, "not-a-dir/state")} (the gateway's key and state): ${join(dir, "not-a-dir")} exists and is not a directory`,
    );
    expect(r.stderr).toContain(`dirs.yaml: stagingDir: ${join(dir, "not-a-dir")} (downloads`);
  });

  it("the agent without --config is a usage error (exit 2), not help and exit 0", async () => {
    const r = await runCapture(["agent"], dir);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("required option '--config <file>' not specified");
    expect(r.stderr).toContain("E_USAGE");
  });

  it("the agent refuses to start on a state directory it cannot write: E_AGENT_STATE naming it", async () => {
    writeFileSync(join(dir, "trust.json"), TRUST_JSON);
    writeFileSync(join(dir, "blocked"), "");
    // The state directory is fine, the staging directory is not: this used to pass check-config
    // and then end the agent with E_INTERNAL (a raw ENOTDIR/EACCES from mkdir).
    writeFileSync(
      join(dir, "blocked.yaml"),
      `${MINIMAL}stateDir: blocked-ok\nstagingDir: blocked/staging\n`,
    );
    const r = await runCapture(["agent", "--config", "blocked.yaml", "--duration", "1ms"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `error E_AGENT_STATE: cannot write ${join(dir, "blocked/staging")} (stagingDir: downloads in progress)`,
    );
    expect(r.stderr).not.toContain("E_INTERNAL");
  });

  it("agent key creates the gateway's key once and prints its identity; gateways add/list/remove keep the trust file", async () => {
    writeFileSync(join(dir, "trust.json"), TRUST_JSON);
    writeFileSync(
      join(dir, "gw.yaml"),
      "gatewayId: gw-a\ntrust:\n  policy: trust.json\nserial:\n  ports:\n    - path: /dev/ttyUSB0\nstateDir: gw-state\n",
    );
    const first = await cli(["agent", "key", "--config", "gw.yaml"]);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain("created the gateway's status-signing key");
    expect((statSync(join(dir, "gw-state", "gateway-key.pem")).mode & 0o777).toString(8)).toBe(
      "600",
    );
    const identity = JSON.parse(first.stdout) as { gatewayId: string; keyId: string };
    expect(identity).toMatchObject({ gatewayId: "gw-a", alg: "ed25519" });
    const again = await cli(["agent", "key", "--config", "gw.yaml"]);
    expect(again).toEqual({ code: 0, stdout: first.stdout, stderr: "" });
    expect(first.stdout).not.toContain("PRIVATE");

    const add = await cli(["gateways", "add", "gateways.json", "--identity", first.stdout.trim()]);
    expect(add.code).toBe(0);
    const list = await cli(["gateways", "list", "gateways.json"]);
    expect(list.stdout).toBe(`gw-a  ed25519  ${identity.keyId}\n`);
    // Another key for the same gateway needs --replace.
    const other = first.stdout.replace(identity.keyId, "0".repeat(32));
    expect((await cli(["gateways", "add", "gateways.json", "--identity", other])).stderr).toContain(
      "E_MQTT_GATEWAYS_FILE",
    );
    expect((await cli(["gateways", "remove", "gateways.json", "gw-a"])).code).toBe(0);
    expect((await cli(["gateways", "list", "gateways.json"])).stdout).toBe("");
    expect((await cli(["gateways", "remove", "gateways.json", "gw-a"])).code).toBe(1);
  });
});

describe("agent config: where the agent writes (issue 13 item 13)", () => {
  it("the example leaves stagingDir to follow stateDir, so moving stateDir moves the downloads", () => {
    const moved = customiseExample(EXAMPLE, {
      stateDir: "/var/lib/esp-ota",
      trustPolicy: "/etc/esp-ota/trust.json",
      broker: "mqtts://broker.example:8883",
    });
    const { config, problems } = parse(moved);
    expect(problems).toEqual([]);
    expect(config!.stateDir).toBe("/var/lib/esp-ota");
    expect(config!.stagingDir).toBe("/var/lib/esp-ota/staging");
    expect(config!.trust.policy).toBe("/etc/esp-ota/trust.json");
    expect(config!.mqtt.url).toBe("mqtts://broker.example:8883");
    // Only those three lines changed: the comments stay.
    const changed = moved.split("\n").filter((l, i) => l !== EXAMPLE.split("\n")[i]);
    expect(changed).toEqual([
      '  url: "mqtts://broker.example:8883"',
      '  policy: "/etc/esp-ota/trust.json"',
      'stateDir: "/var/lib/esp-ota"',
    ]);
    // A value YAML would misread stays as written.
    const odd = customiseExample(EXAMPLE, { stateDir: "/srv/a: b #c" });
    expect(parse(odd).config!.stateDir).toBe("/srv/a: b #c");
  });

  it("lists every directory the agent writes, each writable or creatable by the user", () => {
    const c = { stateDir: "/var/lib/esp-ota", stagingDir: "/var/lib/esp-ota/staging" };
    expect(agentWriteDirs(c).map((d) => d.path)).toEqual([
      "/var/lib/esp-ota",
      "/var/lib/esp-ota/devices",
      "/var/lib/esp-ota/staging",
    ]);
    const existing = new Set(["/", "/var", "/var/lib", "/var/lib/esp-ota"]);
    const kind = (p: string) => (existing.has(p) ? ("dir" as const) : ("missing" as const));
    // All writable: nothing to say.
    expect(stateDirProblems(c, { kind, cannotWrite: () => undefined, user: "esp-ota" })).toEqual(
      [],
    );
    // stateDir exists but belongs to root: every directory is named, with what to do.
    const rootOwned = stateDirProblems(c, {
      kind,
      cannotWrite: (p) => (p.startsWith("/var/lib/esp-ota") ? "EACCES" : undefined),
      user: "esp-ota (uid 998)",
    });
    expect(rootOwned.map((p) => [p.path, p.severity])).toEqual([
      ["stateDir", "error"],
      ["stateDir", "error"],
      ["stagingDir", "error"],
    ]);
    expect(rootOwned[0]!.message).toBe(
      "/var/lib/esp-ota (the gateway's key and state): not writable by esp-ota (uid 998) (EACCES); make it the agent user's (chown) or set stateDir to a directory it owns",
    );
    expect(rootOwned[1]!.message).toContain(
      "/var/lib/esp-ota/devices (the device ledgers): does not exist, and /var/lib/esp-ota is not writable by esp-ota (uid 998) (EACCES)",
    );
    // A read-only mount (ProtectSystem=strict, or / mounted ro): EROFS even for root.
    const ro = stateDirProblems(
      { stateDir: "/etc/esp-ota/state", stagingDir: "/etc/esp-ota/state/staging" },
      { kind, cannotWrite: () => "EROFS", user: "root (uid 0)" },
    );
    expect(ro[0]!.message).toContain("/etc/esp-ota/state (the gateway's key and state)");
    expect(ro[0]!.message).toContain("/ is not writable by root (uid 0) (EROFS)");
  });

  it("prepareStateDirs creates them owner-only, or throws E_AGENT_STATE naming the directory", () => {
    const root = mkdtempSync(join(tmpdir(), "esp-ota-dirs-"));
    try {
      const c = { stateDir: join(root, "state"), stagingDir: join(root, "state", "staging") };
      prepareStateDirs(c);
      for (const d of agentWriteDirs(c)) expect(statSync(d.path).mode & 0o777).toBe(0o700);
      let err: unknown;
      try {
        prepareStateDirs(c, { cannotWrite: (p) => (p.endsWith("staging") ? "EACCES" : undefined) });
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({
        code: "E_AGENT_STATE",
        context: { path: c.stagingDir, key: "stagingDir" },
      });
      expect((err as Error).message).toContain(`cannot write ${c.stagingDir} (stagingDir`);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("agent config: check-config --print shows no secret (issue 13 item 15)", () => {
  it("redacts password fields and URL passwords anywhere, and nothing else", () => {
    const c = parse(`${MINIMAL}mqtt:\n  url: ws://u:p%40ss@h.example:9001/mqtt\n  password: pw\n`)
      .config!;
    const r = redactedConfig(c) as typeof c;
    expect(r.mqtt.password).toBe("(set)");
    expect(r.mqtt.url).toBe("ws://u:(redacted)@h.example:9001/mqtt");
    expect(JSON.stringify(r)).not.toMatch(/p%40ss|"pw"/);
    expect({ ...r, mqtt: { ...r.mqtt, url: c.mqtt.url, password: "pw" } }).toEqual(c);
    // Nested and listed secrets, and URLs only when they hold a password.
    expect(
      redactedConfig({
        a: { secret: "x", token: "y", list: ["https://a:b@c/", "https://c/"] },
      } as never),
    ).toEqual({
      a: { secret: "(set)", token: "(set)", list: ["https://a:(redacted)@c/", "https://c/"] },
    });
    expect(redactUrl("mqtt://user@host:1883")).toBe("mqtt://user@host:1883");
    expect(redactUrl("mqtt://u:x@[bad")).toBe("mqtt://(redacted)@[bad");
  });
});

describe("agent config: systemd credentials (mqtt.passwordCredential)", () => {
  const text = `${MINIMAL}mqtt:\n  username: gw\n  passwordCredential: mqtt-password\n`;

  it("reads $CREDENTIALS_DIRECTORY/NAME, as LoadCredential=NAME:FILE provides it", () => {
    const d = deps(
      { "/run/credentials/esp-ota-agent.service/mqtt-password": "s3cret\n" },
      { env: { CREDENTIALS_DIRECTORY: "/run/credentials/esp-ota-agent.service" } },
    );
    const { config, problems } = parse(text, d);
    expect(problems).toEqual([]);
    expect(config!.mqtt.password).toBe("s3cret");
  });

  it("outside the service: an error for the agent, a warning for check-config; never with the value", () => {
    const agent = errors(text);
    expect(agent).toHaveLength(1);
    expect(agent[0]!.path).toBe("mqtt.passwordCredential");
    expect(agent[0]!.message).toContain("$CREDENTIALS_DIRECTORY is not set");
    const check = parse(text, deps({}, { missingCredentials: "warn" }));
    expect(check.problems.map((p) => [p.path, p.severity])).toEqual([
      ["mqtt.passwordCredential", "warning"],
    ]);
    expect(check.config!.mqtt.password).toBeUndefined();
    const missing = errors(text, deps({}, { env: { CREDENTIALS_DIRECTORY: "/run/creds" } }));
    expect(missing[0]!.message).toBe("no such file: /run/creds/mqtt-password");
    expect(errors(`${text}  passwordEnv: X\n`)[0]!.message).toContain("give only one of");
    expect(errors(`${MINIMAL}mqtt:\n  passwordCredential: ../etc/shadow\n`)[0]!.message).toContain(
      "expected a credential name",
    );
  });
});
