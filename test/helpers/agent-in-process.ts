/**
 * The gateway agent in this process, over a real broker, with fake device links (STYLE.md §9:
 * ports are interfaces with fakes): each port answers INFO with whatever the test says, so a
 * lying device, an impostor with a cloned MAC or a device that fails to identify is one line.
 * Fast (no UART, no socat, no child process): for the port lifecycle and the MQTT side of the
 * agent. Updates themselves are tested end to end in test/agent/e2e-*.test.ts.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { Agent, type AgentOptions } from "../../agent/agent.js";
import { parseAgentConfig } from "../../agent/config.js";
import type { AgentLink, LinkOptions } from "../../agent/link.js";
import { EspOtaError } from "../../src/errors.js";
import {
  encodeTrustPolicy,
  generateManifestKey,
  trustPolicyFromKeys,
} from "../../src/release/keyring.js";
import type { Info } from "../../src/uart/messages.js";

/** A minimal INFO: no app descriptor (no running app), both otadata sectors erased. */
export function fakeInfo(o: { mac?: number[]; chip?: string; label?: string } = {}): Info {
  return {
    protocol: 1,
    chip: o.chip ?? "esp32",
    revision: 3,
    mac: new Uint8Array(o.mac ?? [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
    flashSize: 4 << 20,
    flashEncryption: 0,
    secureBootVersion: 0,
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
    appDesc: new Uint8Array(256),
    resume: undefined,
  };
}

/** What a fake port answers to INFO: an INFO, or a coded failure. */
export type FakeAnswer = Info | EspOtaError;

export interface FakePort {
  /** Answers, one per readInfo, the last repeated. */
  answers: FakeAnswer[];
  opened: number;
  link?: { closed: boolean; unplug(): void };
}

/** AgentOptions.ports over fake ports a test adds and removes. */
export function fakePorts(): {
  ports: NonNullable<AgentOptions["ports"]>;
  add(path: string, ...answers: FakeAnswer[]): FakePort;
  remove(path: string): void;
  get(path: string): FakePort | undefined;
} {
  const table = new Map<string, FakePort>();
  let handlers: { onAdded(p: string): void; onRemoved(p: string): void } | undefined;
  const current = new Set<string>();
  return {
    ports: {
      source: (h) => {
        handlers = h;
        return {
          current,
          async start() {
            for (const p of current) h.onAdded(p);
          },
          stop() {
            handlers = undefined;
          },
        };
      },
      open: async (path: string, o: LinkOptions): Promise<AgentLink> => {
        const port = table.get(path);
        if (!port || !current.has(path))
          throw new EspOtaError("E_UART_PORT", `${path} is not there`, { port: path });
        port.opened++;
        let closed = false;
        let n = 0;
        const link = {
          path,
          get closed() {
            return closed;
          },
          info: undefined as Info | undefined,
          async readInfo() {
            if (closed) throw new EspOtaError("E_AGENT_DEVICE_GONE", `${path} is closed`);
            const a = port.answers[Math.min(n++, port.answers.length - 1)]!;
            if (a instanceof Error) throw a;
            link.info = a;
            return a;
          },
          async reboot() {
            return link.readInfo();
          },
          async flash(): Promise<never> {
            throw new EspOtaError("E_UART_PROTOCOL", "the fake link does not flash");
          },
          close() {
            closed = true;
          },
        };
        port.link = {
          get closed() {
            return closed;
          },
          unplug() {
            if (closed) return;
            closed = true;
            o.onClosed?.();
          },
        };
        return link as unknown as AgentLink;
      },
    },
    add(path, ...answers) {
      const p: FakePort = { answers, opened: 0 };
      table.set(path, p);
      current.add(path);
      handlers?.onAdded(path);
      return p;
    },
    remove(path) {
      table.get(path)?.link?.unplug();
      current.delete(path);
      handlers?.onRemoved(path);
    },
    get: (path) => table.get(path),
  };
}

export interface InProcessAgent {
  agent: Agent;
  dir: string;
  stateDir: string;
  /** Every log line the agent wrote, parsed. */
  logs: Record<string, unknown>[];
  /** Resolves when a log line matching `pred` was written (polls every 10 ms). */
  waitLog(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Polls `f` every 10 ms until it returns true; rejects with `what` after `timeoutMs`. */
export async function until(f: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An agent for `brokerUrl` in a fresh state directory (`stateDir` kept if given). */
export function inProcessAgent(
  brokerUrl: string,
  ports: NonNullable<AgentOptions["ports"]>,
  o: { gatewayId?: string; stateDir?: string; extra?: string; protocolVersion?: 4 | 5 } = {},
): InProcessAgent {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-agent-ip-"));
  const stateDir = o.stateDir ?? join(dir, "state");
  mkdirSync(stateDir, { recursive: true });
  const trust = join(dir, "trust.json");
  writeFileSync(
    trust,
    encodeTrustPolicy(trustPolicyFromKeys([generateManifestKey("ed25519")], 1, [])),
  );
  const parsed = parseAgentConfig(
    `gatewayId: ${o.gatewayId ?? "ip-gw"}
mqtt:
  url: ${brokerUrl}
  protocolVersion: ${o.protocolVersion ?? 4}
trust:
  policy: ${trust}
serial:
  ports:
    - glob: /nonexistent/tty-*
  rescanMs: 100
stateDir: ${stateDir}
${o.extra ?? ""}`,
    join(dir, "gateway.yaml"),
  );
  if (!parsed.config)
    throw new Error(`config: ${parsed.problems.map((p) => p.message).join("; ")}`);
  const logs: Record<string, unknown>[] = [];
  const log = pino(
    { level: "debug" },
    {
      write(s: string) {
        for (const line of s.split("\n"))
          if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  const agent = new Agent({ config: parsed.config, log, ports });
  return {
    agent,
    dir,
    stateDir,
    logs,
    waitLog: (pred, timeoutMs) => until(() => logs.some(pred), "a log line", timeoutMs),
    async close() {
      await agent.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
