/**
 * docs/operations.md "Install on a gateway", run as written (issue 13 item 16): the shell block is
 * taken from the page itself and run with bash in a temporary root (/etc/esp-ota and
 * /var/lib/esp-ota moved under it, the broker URL pointed at an embedded broker), then the agent
 * is started the way agent/esp-ota-agent.service starts it (its ExecStart=, User= and
 * Environment= lines) until it reports online, and stopped with SIGTERM.
 *
 * As root, the service user is a throwaway one made by the page's own `useradd` line, and
 * `sudo -u esp-ota` runs through runuser, so the permission steps are tested for real; it is
 * removed afterwards. Not as root (or when another user could not read this checkout, e.g. a
 * clone under /root), the steps run as the current user (the useradd line is skipped), which
 * still checks every command and the files they leave.
 *
 * `sudo npm install --global esp-ota-gateway` is the one step not run: `esp-ota` is a wrapper
 * that runs this checkout's agent/main.ts, as the installed binary would.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt from "mqtt";
import { afterAll, describe, expect, it } from "vitest";
import {
  encodeTrustPolicy,
  generateManifestKey,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import { startAedesForTest, type TestBroker } from "../helpers/brokers.js";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const OPERATIONS = readFileSync(join(REPO, "docs/operations.md"), "utf8");
const UNIT = readFileSync(join(REPO, "agent/esp-ota-agent.service"), "utf8");
const AS_ROOT = process.getuid?.() === 0;
/**
 * Whether another user can run this checkout: every directory above it searchable by others
 * (a clone under /root, mode 0700, is not) and the files it runs readable by them.
 */
function othersCanRun(paths: string[]): boolean {
  for (const p of paths) {
    if ((statSync(p).mode & 0o004) === 0) return false;
    for (let d = dirname(p); ; d = dirname(d)) {
      if ((statSync(d).mode & 0o001) === 0) return false;
      if (dirname(d) === d) break;
    }
  }
  return true;
}
const TSX = join(REPO, "node_modules/tsx/dist/loader.mjs");
const MAIN = join(REPO, "agent/main.ts");
/** A throwaway service user, as the page's useradd line makes: root, the tools, a reachable checkout. */
const CAN_ADD_USERS =
  AS_ROOT &&
  ["useradd", "userdel", "runuser", "setpriv"].every(
    (c) => spawnSync(c, ["--help"]).status === 0,
  ) &&
  othersCanRun([process.execPath, TSX, MAIN, tmpdir()]);

/** The first ```sh block after `heading` in a markdown text, as lines. */
function shellBlockAfter(markdown: string, heading: string): string[] {
  const at = markdown.indexOf(heading);
  if (at < 0) throw new Error(`no heading ${heading}`);
  const m = /```sh\n([\s\S]*?)```/.exec(markdown.slice(at));
  if (!m) throw new Error(`no sh block after ${heading}`);
  return m[1]!.split("\n").filter((l) => l.trim() !== "");
}

/** One `Key=value` of the unit's [Service] section (the last one, as systemd reads it). */
function unitSetting(key: string): string {
  const m = [...UNIT.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].pop();
  if (!m) throw new Error(`the unit has no ${key}=`);
  return m[1]!;
}

interface Place {
  root: string;
  bin: string;
  brokerUrl: string;
  user: string;
  group: string;
}

/** A documented line as it runs here; undefined for a line that is not run (see the file comment). */
function localise(line: string, p: Place): string | undefined {
  let l = line.replace(/\s+#.*$/, "");
  if (/^sudo npm install\b/.test(l)) return undefined;
  if (/^sudo useradd\b/.test(l) && !CAN_ADD_USERS) return undefined;
  l = l
    .replaceAll("/etc/esp-ota", `${p.root}/etc/esp-ota`)
    .replaceAll("/var/lib/esp-ota", `${p.root}/var/lib/esp-ota`)
    .replaceAll("mqtt://127.0.0.1:1883", p.brokerUrl)
    .replace(/(^|\s)esp-ota agent\b/g, `$1${p.bin} agent`)
    .replace(/^sudo -u esp-ota /, CAN_ADD_USERS ? `runuser -u ${p.user} -- ` : "")
    .replace(/^sudo /, "")
    .replace(/(-g |chgrp )esp-ota(?=\s|$)/g, `$1${p.group}`)
    .replace(/(?<=\s)esp-ota(?=\s|$)/g, p.user);
  // Not root: files cannot be given to root; they stay the current user's.
  if (!AS_ROOT) l = l.replace(/-o root\b/g, `-o ${p.user}`);
  return l;
}

describe("docs/operations.md install steps, run as written", () => {
  const root = mkdtempSync(join(tmpdir(), "esp-ota-install-"));
  // The service user must reach the files under the temporary root (mkdtemp makes it 0700).
  chmodSync(root, 0o755);
  const user = CAN_ADD_USERS ? `esp-ota-t${randomBytes(3).toString("hex")}` : userInfo().username;
  let madeUser = false;
  let broker: TestBroker | undefined;
  afterAll(async () => {
    await broker?.close();
    if (madeUser) spawnSync("userdel", [user], { stdio: "ignore" });
    rmSync(root, { recursive: true, force: true });
  });

  it("creates the user, directories and configuration, passes check-config, and the unit's command reports online", async () => {
    broker = await startAedesForTest();
    // `esp-ota` as npm would install it: this checkout's binary, through tsx.
    const bin = join(root, "bin", "esp-ota");
    mkdirSync(join(root, "bin"));
    writeFileSync(
      bin,
      `#!/bin/sh\nexec "${process.execPath}" --import "file://${TSX}" "${MAIN}" "$@"\n`,
      { mode: 0o755 },
    );
    // The operator's trust.json, in the directory the steps run in.
    const work = join(root, "work");
    mkdirSync(work);
    writeFileSync(
      join(work, "trust.json"),
      encodeTrustPolicy(trustPolicyFromKeys([generateManifestKey("ed25519")], 1, [])),
    );
    const group = CAN_ADD_USERS ? user : execFileSync("id", ["-gn"], { encoding: "utf8" }).trim();
    const place: Place = { root, bin, brokerUrl: broker.url, user, group };
    const documented = shellBlockAfter(OPERATIONS, "## Install on a gateway");
    const steps = documented.map((l) => localise(l, place)).filter((l) => l !== undefined);
    expect(steps.length).toBeGreaterThanOrEqual(documented.length - 2);

    madeUser = CAN_ADD_USERS;
    const t0 = performance.now();
    const run = spawnSync("bash", ["-euo", "pipefail", "-c", steps.join("\n")], {
      cwd: work,
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(run.status, `${steps.join("\n")}\n${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toContain(`ok ${root}/etc/esp-ota/gateway.yaml`);
    const t1 = performance.now();

    const config = `${root}/etc/esp-ota/gateway.yaml`;
    const state = `${root}/var/lib/esp-ota`;
    expect(statSync(config).mode & 0o777).toBe(0o640);
    expect(statSync(state).mode & 0o777).toBe(0o700);
    const text = readFileSync(config, "utf8");
    expect(text).toContain(`stateDir: "${state}"`);
    expect(text).toMatch(/^# stagingDir:/m);

    // The agent, as the unit starts it.
    const [cmd, ...args] = localise(unitSetting("ExecStart"), place)!.split(/\s+/);
    const nodeOptions = /^NODE_OPTIONS=(.*)$/.exec(unitSetting("Environment"))![1]!;
    expect(unitSetting("User")).toBe("esp-ota");
    // setpriv execs the command (runuser would stay between, as a session, and turn SIGTERM
    // into a kill): the agent is the process signalled, as systemd's main process is.
    const argv = CAN_ADD_USERS
      ? ["setpriv", `--reuid=${user}`, `--regid=${group}`, "--init-groups", "--", cmd!, ...args]
      : [cmd!, ...args];
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    try {
      const online = new Promise<{ gatewayId: string; state: string }>((resolve) => {
        client.on("message", (_t, payload) => {
          const p = JSON.parse(payload.toString()) as { gatewayId: string; state: string };
          if (p.state === "online") resolve(p);
        });
      });
      await client.subscribeAsync("esp-ota/v1/gateways/+/presence", { qos: 1 });
      const agent = spawn(argv[0]!, argv.slice(1), {
        cwd: "/",
        env: { ...process.env, NODE_OPTIONS: nodeOptions },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let log = "";
      agent.stdout!.on("data", (c: Buffer) => (log += c.toString()));
      agent.stderr!.on("data", (c: Buffer) => (log += c.toString()));
      const exited = new Promise<number | null>((resolve) => agent.on("exit", (c) => resolve(c)));
      try {
        // Generous: a first tsx compile for a new user on a busy 2-core machine (about 2 s idle).
        const first = await Promise.race([
          online,
          exited.then((c) => {
            throw new Error(`the agent exited (${c}) before reporting online:\n${log}`);
          }),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error(`no online presence in 30 s:\n${log}`)), 30_000),
          ),
        ]);
        expect(first.state).toBe("online");
        console.log(
          `install steps ${Math.round(t1 - t0)} ms, agent online after ${Math.round(performance.now() - t1)} ms`,
        );
      } finally {
        agent.kill("SIGTERM");
      }
      expect(await exited, log).toBe(0);
      expect(log).not.toContain("E_INTERNAL");
      // What it wrote is the service user's, owner-only.
      const key = statSync(join(state, "gateway-key.pem"));
      expect(key.mode & 0o777).toBe(0o600);
      expect(key.uid).toBe(Number(execFileSync("id", ["-u", user], { encoding: "utf8" })));
      for (const d of ["devices", "staging"])
        expect(statSync(join(state, d)).mode & 0o777).toBe(0o700);
    } finally {
      await client.endAsync();
    }
  }, 60_000);
});
