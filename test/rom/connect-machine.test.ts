import { describe, expect, it } from "vitest";
import {
  type ConnectConfig,
  type ConnectInput,
  type ConnectState,
  connectTransition,
  NO_MODEM_LINES_WARNING,
} from "../../src/rom/connect-machine.js";
import { RomHost } from "../../src/rom/host.js";
import { type ModemLines, resetStrategies } from "../../src/rom/reset.js";
import { memoryPair } from "../../src/sim/paced-link.js";
import { attachRomLoader } from "../../src/sim/rom-loader.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { blankDevice, drive } from "./helpers.js";

const cfg = (strategies = resetStrategies("no-reset"), attempts = 7): ConnectConfig => ({
  strategies,
  attempts,
  syncsPerAttempt: 5,
  syncTimeoutMs: 100,
  retrySleepMs: 50,
  extraReplies: 7,
});
const L0: ModemLines = { dtr: false, rts: false };
const at = (
  kind: "syncing" | "backoff",
  attempt: number,
  sync: number,
  extra: Partial<{ warned: boolean; noisy: boolean }> = {},
) => ({ kind, attempt, sync, lines: L0, warned: false, noisy: false, ...extra }) as ConnectState;
const SYNC_EFFECTS = [
  { kind: "flush-input" },
  { kind: "send-sync" },
  { kind: "await-sync", ms: 100 },
];

// [loader.py _connect_attempt / sync]: 5 SYNCs per attempt, 50 ms apart after a 100 ms wait.
const rows: {
  name: string;
  c?: ConnectConfig;
  from: ConnectState;
  input: ConnectInput;
  state: Partial<ConnectState>;
  effects?: unknown[];
}[] = [
  {
    name: "no-reset starts with a SYNC",
    from: { kind: "idle" },
    input: { kind: "start", lines: L0 },
    state: at("syncing", 0, 0),
    effects: SYNC_EFFECTS,
  },
  {
    name: "a reply: drain 7 more",
    from: at("syncing", 0, 0),
    input: { kind: "sync-reply" },
    state: { kind: "draining", remaining: 7 },
    effects: [{ kind: "await-sync", ms: 100 }],
  },
  {
    name: "no reply: sleep 50 ms",
    from: at("syncing", 0, 2),
    input: { kind: "no-reply", noisy: false },
    state: at("backoff", 0, 2),
    effects: [{ kind: "sleep", ms: 50 }],
  },
  {
    name: "noise is remembered",
    from: at("syncing", 0, 2),
    input: { kind: "no-reply", noisy: true },
    state: at("backoff", 0, 2, { noisy: true }),
  },
  {
    name: "after the sleep: next SYNC",
    from: at("backoff", 0, 2),
    input: { kind: "slept" },
    state: at("syncing", 0, 3),
    effects: SYNC_EFFECTS,
  },
  {
    name: "5th SYNC failed: next attempt",
    from: at("backoff", 0, 4),
    input: { kind: "slept" },
    state: at("syncing", 1, 0),
    effects: SYNC_EFFECTS,
  },
  {
    name: "last attempt failed",
    from: at("backoff", 6, 4, { noisy: true }),
    input: { kind: "slept" },
    state: { kind: "failed", noisy: true },
    effects: [{ kind: "done", ok: false }],
  },
  {
    name: "drain: the 7th extra reply ends it",
    from: { kind: "draining", remaining: 1 },
    input: { kind: "sync-reply" },
    state: { kind: "synced" },
    effects: [{ kind: "done", ok: true }],
  },
  {
    name: "drain: a silent read ends it too",
    from: { kind: "draining", remaining: 5 },
    input: { kind: "no-reply", noisy: false },
    state: { kind: "synced" },
  },
  {
    name: "a stray input is ignored",
    from: at("syncing", 0, 0),
    input: { kind: "slept" },
    state: at("syncing", 0, 0),
    effects: [],
  },
  {
    name: "default-reset: the first attempt begins with UnixTight's (0,0)",
    c: cfg(resetStrategies("default-reset")),
    from: { kind: "idle" },
    input: { kind: "start", lines: L0 },
    state: { kind: "resetting", step: 0 },
    effects: [{ kind: "set-lines", lines: { dtr: false, rts: false } }],
  },
  {
    name: "no modem lines: warn once, SYNC without a reset",
    c: cfg(resetStrategies("default-reset")),
    from: {
      kind: "resetting",
      step: 0,
      attempt: 0,
      sync: 0,
      lines: L0,
      warned: false,
      noisy: false,
    },
    input: { kind: "lines-unsupported" },
    state: at("syncing", 0, 0, { warned: true }),
    effects: [{ kind: "warn", message: NO_MODEM_LINES_WARNING }, ...SYNC_EFFECTS],
  },
];

describe("connect machine transitions", () => {
  for (const r of rows)
    it(r.name, () => {
      const step = connectTransition(r.c ?? cfg(), r.from, r.input);
      expect(step.state).toMatchObject(r.state);
      if (r.effects) expect(step.effects).toEqual(r.effects);
    });
});

describe("reset sequences on the modem lines, in virtual time", () => {
  function run(before: "default-reset" | "usb-reset") {
    const sched = new VirtualScheduler();
    const pair = memoryPair(115200);
    attachRomLoader(blankDevice(), pair.device);
    const seen: string[] = [];
    const host = new RomHost(pair.host, {
      timers: sched,
      setSignals: async (l) => {
        seen.push(`${sched.now()}:${l.dtr ? 1 : 0}${l.rts ? 1 : 0}`);
      },
    });
    return drive(sched, host.connect({ before })).then(() => seen);
  }

  it("default-reset: UnixTight with 50 ms (reset.py), then SYNC", async () => {
    // (DTR,RTS): (0,0) (1,1) (0,1); 100 ms; (1,0); 50 ms; (0,0); DTR 0.
    expect(await run("default-reset")).toEqual([
      "0:00",
      "0:11",
      "0:01",
      "100:10",
      "150:00",
      "150:00",
    ]);
  });

  it("usb-reset: the USB-Serial/JTAG sequence (reset.py USBJTAGSerialReset)", async () => {
    expect(await run("usb-reset")).toEqual([
      "0:00",
      "0:00",
      "100:10",
      "100:10",
      "200:11",
      "200:01",
      "200:01",
      "300:01",
      "300:00",
    ]);
  });
});
