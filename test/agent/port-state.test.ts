/**
 * The port lifecycle (src/gateway/port-state.ts) as transition-table rows (STYLE.md §12): every
 * bug of the port lifecycle adds a row. Rows tagged "defect N" are issue 12's.
 */
import { describe, expect, it } from "vitest";
import {
  checkDeviceInfo,
  type PortEffect,
  type PortInput,
  type PortState,
  retryDelay,
  transition,
} from "../../src/gateway/port-state.js";
import type { Info } from "../../src/uart/messages.js";
import { fakeInfo } from "../helpers/agent-in-process.js";

const ctx = { now: 10_000, retryBaseMs: 600, retryMaxMs: 60_000 };
const D = "aabbccddeeff";

interface Row {
  name: string;
  from: PortState;
  input: PortInput;
  expect: { state: PortState; effects: PortEffect[] };
}

const attached: PortState = { kind: "attached", deviceId: D, viaRetry: false };
const updating: PortState = { kind: "updating", deviceId: D, viaRetry: false };

const rows: Row[] = [
  {
    name: "a new port is identified",
    from: { kind: "absent" },
    input: { kind: "seen" },
    expect: { state: { kind: "identifying", attempt: 1 }, effects: [{ kind: "identify" }] },
  },
  {
    name: "identified: attached",
    from: { kind: "identifying", attempt: 1 },
    input: { kind: "identified", deviceId: D },
    expect: { state: attached, effects: [{ kind: "attach", deviceId: D }] },
  },
  {
    name: "defect 5: a second port with an attached device's MAC is a conflict, the first keeps it",
    from: { kind: "identifying", attempt: 1 },
    input: { kind: "identified", deviceId: D, heldBy: "/dev/ttyUSB0" },
    expect: {
      state: { kind: "conflict", deviceId: D, heldBy: "/dev/ttyUSB0" },
      effects: [
        { kind: "report", code: "E_AGENT_DEVICE_CONFLICT", deviceId: D, heldBy: "/dev/ttyUSB0" },
      ],
    },
  },
  {
    name: "defect 5: when the holder leaves, the conflicting port is identified again",
    from: { kind: "conflict", deviceId: D, heldBy: "/dev/ttyUSB0" },
    input: { kind: "peerLeft" },
    expect: { state: { kind: "identifying", attempt: 1 }, effects: [{ kind: "identify" }] },
  },
  {
    name: "defect 5: the impostor leaving changes nothing for the holder (no detach effect)",
    from: { kind: "conflict", deviceId: D, heldBy: "/dev/ttyUSB0" },
    input: { kind: "removed", exists: false },
    expect: { state: { kind: "gone" }, effects: [{ kind: "closeLink" }] },
  },
  {
    name: "defect 3: a refused INFO ends failed, link closed, retry scheduled",
    from: { kind: "identifying", attempt: 1 },
    input: { kind: "attachFailed", code: "E_AGENT_DEVICE_INFO" },
    expect: {
      state: { kind: "failed", code: "E_AGENT_DEVICE_INFO", retryAt: 10_600, attempt: 1 },
      effects: [{ kind: "closeLink" }, { kind: "scheduleRetry", at: 10_600 }],
    },
  },
  {
    name: "defect 1: attach failing after the device was listed detaches it and retries",
    from: attached,
    input: { kind: "attachFailed", code: "E_INTERNAL" },
    expect: {
      state: { kind: "failed", code: "E_INTERNAL", retryAt: 10_600, attempt: 1 },
      effects: [
        { kind: "detach", deviceId: D, why: "attach failed: E_INTERNAL" },
        { kind: "closeLink" },
        { kind: "scheduleRetry", at: 10_600 },
      ],
    },
  },
  {
    name: "retries back off: the third failure waits four times the base",
    from: { kind: "identifying", attempt: 3 },
    input: { kind: "attachFailed", code: "E_UART_TIMEOUT" },
    expect: {
      state: { kind: "failed", code: "E_UART_TIMEOUT", retryAt: 12_400, attempt: 3 },
      effects: [{ kind: "closeLink" }, { kind: "scheduleRetry", at: 12_400 }],
    },
  },
  {
    name: "a retry timer that fires early (clocks differ) waits again, with a new timer",
    from: { kind: "failed", code: "E_UART_TIMEOUT", retryAt: 20_000, attempt: 2 },
    input: { kind: "retryDue" },
    expect: {
      state: { kind: "failed", code: "E_UART_TIMEOUT", retryAt: 20_000, attempt: 2 },
      effects: [{ kind: "scheduleRetry", at: 20_000 }],
    },
  },
  {
    name: "a due retry identifies again, counting attempts",
    from: { kind: "failed", code: "E_UART_TIMEOUT", retryAt: 9_000, attempt: 2 },
    input: { kind: "retryDue" },
    expect: { state: { kind: "identifying", attempt: 3 }, effects: [{ kind: "identify" }] },
  },
  {
    name: "a replug (new node) during backoff identifies at once",
    from: { kind: "failed", code: "E_UART_TIMEOUT", retryAt: 90_000, attempt: 4 },
    input: { kind: "seen" },
    expect: { state: { kind: "identifying", attempt: 5 }, effects: [{ kind: "identify" }] },
  },
  {
    name: "the link closing under an attached device detaches it and looks for it again",
    from: attached,
    input: { kind: "closed" },
    expect: {
      state: { kind: "failed", code: "E_AGENT_DEVICE_GONE", retryAt: 10_600, attempt: 1 },
      effects: [
        { kind: "detach", deviceId: D, why: "port closed" },
        { kind: "closeLink" },
        { kind: "scheduleRetry", at: 10_600 },
      ],
    },
  },
  {
    name: "the retry after a close is marked, so the watcher's late removal keeps the new link",
    from: { kind: "failed", code: "E_AGENT_DEVICE_GONE", retryAt: 10_000, attempt: 1 },
    input: { kind: "retryDue" },
    expect: {
      state: { kind: "identifying", attempt: 2, afterClose: true },
      effects: [{ kind: "identify" }],
    },
  },
  {
    name: "attached after that retry",
    from: { kind: "identifying", attempt: 2, afterClose: true },
    input: { kind: "identified", deviceId: D },
    expect: {
      state: { kind: "attached", deviceId: D, viaRetry: true },
      effects: [{ kind: "attach", deviceId: D }],
    },
  },
  {
    name: "the watcher reports the old node removed while the new one exists: kept",
    from: { kind: "attached", deviceId: D, viaRetry: true },
    input: { kind: "removed", exists: true },
    expect: { state: attached, effects: [] },
  },
  {
    name: "removed for real: detached and gone",
    from: attached,
    input: { kind: "removed", exists: true },
    expect: {
      state: { kind: "gone" },
      effects: [{ kind: "detach", deviceId: D, why: "port removed" }, { kind: "closeLink" }],
    },
  },
  {
    name: "an update starts and ends",
    from: attached,
    input: { kind: "jobStarted" },
    expect: { state: updating, effects: [] },
  },
  {
    name: "an update ends",
    from: updating,
    input: { kind: "jobEnded" },
    expect: { state: attached, effects: [] },
  },
  {
    name: "unplugged while updating: detached (the job suspends at E_AGENT_DEVICE_GONE)",
    from: updating,
    input: { kind: "removed", exists: false },
    expect: {
      state: { kind: "gone" },
      effects: [{ kind: "detach", deviceId: D, why: "port removed" }, { kind: "closeLink" }],
    },
  },
  {
    name: "the link closes while identifying: failed, retried",
    from: { kind: "identifying", attempt: 1 },
    input: { kind: "closed" },
    expect: {
      state: { kind: "failed", code: "E_AGENT_DEVICE_GONE", retryAt: 10_600, attempt: 1 },
      effects: [{ kind: "closeLink" }, { kind: "scheduleRetry", at: 10_600 }],
    },
  },
  {
    name: "removed while identifying",
    from: { kind: "identifying", attempt: 1 },
    input: { kind: "removed", exists: false },
    expect: { state: { kind: "gone" }, effects: [{ kind: "closeLink" }] },
  },
  {
    name: "a rescan while identifying does not identify twice",
    from: { kind: "identifying", attempt: 1 },
    input: { kind: "seen" },
    expect: { state: { kind: "identifying", attempt: 1 }, effects: [] },
  },
  {
    name: "a failed port that goes away is forgotten, with no retry",
    from: { kind: "failed", code: "E_UART_TIMEOUT", retryAt: 20_000, attempt: 2 },
    input: { kind: "removed", exists: false },
    expect: { state: { kind: "gone" }, effects: [] },
  },
  {
    name: "stop: an attached device is detached and its link closed",
    from: updating,
    input: { kind: "stop" },
    expect: {
      state: { kind: "gone" },
      effects: [{ kind: "detach", deviceId: D, why: "agent stopping" }, { kind: "closeLink" }],
    },
  },
  {
    name: "stop: a port in conflict closes its link",
    from: { kind: "conflict", deviceId: D, heldBy: "/dev/ttyUSB0" },
    input: { kind: "stop" },
    expect: { state: { kind: "gone" }, effects: [{ kind: "closeLink" }] },
  },
];

describe("port state transitions", () => {
  it.each(rows)("$name", (r) => {
    expect(transition(r.from, r.input, ctx)).toEqual(r.expect);
  });

  it("never throws, for every state and input", () => {
    const states: PortState[] = [
      { kind: "absent" },
      { kind: "identifying", attempt: 1 },
      attached,
      updating,
      { kind: "conflict", deviceId: D, heldBy: "x" },
      { kind: "failed", code: "E_INTERNAL", retryAt: 0, attempt: 1 },
      { kind: "gone" },
    ];
    const inputs: PortInput[] = [
      { kind: "seen" },
      { kind: "removed", exists: true },
      { kind: "removed", exists: false },
      { kind: "closed" },
      { kind: "identified", deviceId: D },
      { kind: "identified", deviceId: D, heldBy: "y" },
      { kind: "attachFailed", code: "E_INTERNAL" },
      { kind: "retryDue" },
      { kind: "jobStarted" },
      { kind: "jobEnded" },
      { kind: "peerLeft" },
      { kind: "stop" },
    ];
    for (const s of states)
      for (const i of inputs) {
        const out = transition(s, i, ctx);
        // "Attach failed" always ends detached and scheduled for retry (or gone).
        if (i.kind === "attachFailed" && s.kind !== "gone" && s.kind !== "absent")
          expect(["failed", "conflict"]).toContain(out.state.kind);
        if (out.state.kind === "failed" && s.kind !== "failed")
          expect(out.effects.some((e) => e.kind === "scheduleRetry")).toBe(true);
      }
  });

  it("retry delays double up to the cap", () => {
    expect([1, 2, 3, 8, 200].map((n) => retryDelay(n, ctx))).toEqual([
      600, 1200, 2400, 60_000, 60_000,
    ]);
  });
});

describe("checkDeviceInfo (defect 3: what a device reports is checked where it enters)", () => {
  const rows: { name: string; info: Info; attached?: number; code?: string }[] = [
    { name: "a plain INFO is accepted", info: fakeInfo() },
    { name: "a chip name of 32 characters is accepted", info: fakeInfo({ chip: "c".repeat(32) }) },
    {
      name: "a chip name over 32 characters",
      info: fakeInfo({ chip: "c".repeat(33) }),
      code: "E_AGENT_DEVICE_INFO",
    },
    {
      name: "a slot label over 16 characters",
      info: fakeInfo({ label: "l".repeat(17) }),
      code: "E_AGENT_DEVICE_INFO",
    },
    {
      name: "a 60 KB chip name is refused with a bounded reason",
      info: fakeInfo({ chip: "\u001b[2J".repeat(15_000) }),
      code: "E_AGENT_DEVICE_INFO",
    },
    {
      name: "the 257th device",
      info: fakeInfo(),
      attached: 256,
      code: "E_AGENT_TOO_MANY_DEVICES",
    },
  ];
  it.each(rows)("$name", (r) => {
    const c = checkDeviceInfo(r.info, r.attached ?? 0);
    if (r.code === undefined) {
      expect(c).toMatchObject({ ok: true, deviceId: D });
      return;
    }
    expect(c).toMatchObject({ ok: false, code: r.code });
    if (!c.ok) expect(c.reason.length).toBeLessThan(400);
  });
});
