/** The host state machine from { from, input, expect } rows (STYLE.md §12). */
import { describe, expect, it } from "vitest";
import {
  type Effect,
  type HostInput,
  type HostState,
  initialHostState,
  transition,
} from "../../src/uart/host-machine.js";
import { encodeAck, encodeAnnounce, encodeResult, MSG, STATUS } from "../../src/uart/messages.js";

const image = { offset: 0x160000, size: 3 * 4096 + 100, sha256: new Uint8Array(32) };
const job = { mode: "flash" as const, image };

function at(phase: HostState["phase"]): HostState {
  return { ...initialHostState(job), phase };
}
const sending = (over: Partial<Extract<HostState["phase"], { kind: "send" }>> = {}) =>
  at({
    kind: "send",
    next: 0,
    received: 0,
    credit: 0,
    written: 0,
    holdUntil: 0,
    stalls: 0,
    pause: undefined,
    wireFreeAt: 0,
    ...over,
  });
const frame = (type: number, payload: Uint8Array, now = 0): HostInput => ({
  kind: "frame",
  now,
  type,
  payload,
});
const result = (request: number, status: number, value = 0) =>
  frame(MSG.RESULT, encodeResult({ request, status, espErr: 0, value, detail: "" }));
const ack = (
  received: number,
  credit: number,
  extra: { flags?: number; holdAt?: number; busyMs?: number } = {},
) =>
  frame(
    MSG.ACK,
    encodeAck({ received, credit, written: received, holdAt: 0, busyMs: 0, flags: 0, ...extra }),
  );

const kinds = (effects: Effect[]) =>
  effects
    .filter((e) => e.kind !== "event" && e.kind !== "timer")
    .map((e) =>
      e.kind === "send"
        ? `send ${e.type}`
        : e.kind === "send-data"
          ? `data ${e.offset}+${e.length}`
          : e.kind === "fail"
            ? e.code
            : e.kind,
    );

interface Row {
  name: string;
  from: HostState;
  input: HostInput;
  phase: string;
  effects: string[];
}

const rows: Row[] = [
  {
    name: "start sends HELLO",
    from: initialHostState(job),
    input: { kind: "start", now: 0 },
    phase: "hello",
    effects: [`send ${MSG.HELLO}`],
  },
  {
    name: "HELLO unanswered, no target rate: HELLO again",
    from: at({ kind: "hello", attempt: 1, sentAt: 0 }),
    input: { kind: "timer", now: 3000, name: "response" },
    phase: "hello",
    effects: [`send ${MSG.HELLO}`],
  },
  {
    name: "HELLO unanswered with a target rate: ask at the target rate too (§3.3)",
    from: {
      ...initialHostState({ ...job, targetBaud: 921600 }),
      phase: { kind: "hello", attempt: 1, sentAt: 0 },
    },
    input: { kind: "timer", now: 3000, name: "response" },
    phase: "hello",
    effects: ["baud", `send ${MSG.HELLO}`],
  },
  {
    name: "unanswered at the target rate too: back to the console rate, next attempt",
    from: {
      ...initialHostState({ ...job, targetBaud: 921600 }),
      phase: { kind: "hello", attempt: 1, sentAt: 0, probe: true },
    },
    input: { kind: "timer", now: 6000, name: "response" },
    phase: "hello",
    effects: ["baud", `send ${MSG.HELLO}`],
  },
  {
    name: "last attempt unanswered at both rates: E_UART_NO_DEVICE",
    from: {
      ...initialHostState({ ...job, targetBaud: 921600 }),
      phase: { kind: "hello", attempt: 5, sentAt: 0, probe: true },
    },
    input: { kind: "timer", now: 6000, name: "response" },
    phase: "done",
    effects: ["E_UART_NO_DEVICE"],
  },
  {
    name: "BEGIN OK from 0 starts sending",
    from: at({ kind: "begin", attempt: 1 }),
    input: result(MSG.BEGIN, STATUS.OK, 0),
    phase: "send",
    effects: [],
  },
  {
    name: "BEGIN refused (running slot)",
    from: at({ kind: "begin", attempt: 1 }),
    input: result(MSG.BEGIN, STATUS.RUNNING_SLOT),
    phase: "done",
    effects: ["E_UART_SLOT_REFUSED"],
  },
  {
    name: "BEGIN refused (pending verify)",
    from: at({ kind: "begin", attempt: 1 }),
    input: result(MSG.BEGIN, STATUS.PENDING_VERIFY),
    phase: "done",
    effects: ["E_UART_PENDING_VERIFY"],
  },
  {
    name: "credit opens a window of DATA",
    from: sending(),
    input: ack(0, 8192),
    phase: "send",
    effects: ["data 0+4096", "data 4096+4096"],
  },
  {
    name: "a gap ACK goes back to the acknowledged offset",
    from: sending({ next: 8192, credit: 8192 }),
    input: ack(4096, 12288, { flags: 1 }),
    phase: "send",
    effects: ["data 4096+4096", "data 8192+4096"],
  },
  {
    name: "a duplicate ACK changes nothing",
    from: sending({ next: 8192, received: 4096, credit: 8192 }),
    input: ack(4096, 8192),
    phase: "send",
    effects: [],
  },
  {
    name: "a pause at a batch boundary holds the next batch",
    from: sending({ next: 4096, credit: 4096 }),
    input: ack(4096, 12288, { holdAt: 4096, busyMs: 40 }),
    phase: "send",
    effects: [],
  },
  {
    name: "everything acknowledged: END",
    from: sending({ next: image.size, credit: image.size }),
    input: ack(image.size, image.size),
    phase: "end",
    effects: [`send ${MSG.END}`],
  },
  {
    name: "no ACK progress: resend from the last acknowledged byte",
    from: sending({ next: 8192, received: 4096, credit: 8192 }),
    input: { kind: "timer", name: "response", now: 5000 },
    phase: "send",
    effects: ["data 4096+4096"],
  },
  {
    name: "END hash mismatch",
    from: at({ kind: "end", attempt: 1 }),
    input: result(MSG.END, STATUS.HASH_MISMATCH),
    phase: "done",
    effects: ["E_UART_HASH_MISMATCH"],
  },
  {
    name: "END OK: ACTIVATE",
    from: at({ kind: "end", attempt: 1 }),
    input: result(MSG.END, STATUS.OK),
    phase: "activate",
    effects: [`send ${MSG.ACTIVATE}`],
  },
  {
    name: "ACTIVATE OK: REBOOT",
    from: at({ kind: "activate", attempt: 1 }),
    input: result(MSG.ACTIVATE, STATUS.OK),
    phase: "reboot",
    effects: [`send ${MSG.REBOOT}`],
  },
  {
    name: "REBOOT OK: wait at the console rate",
    from: at({ kind: "reboot", attempt: 1 }),
    input: result(MSG.REBOOT, STATUS.OK),
    phase: "await-boot",
    effects: ["baud"],
  },
  {
    name: "booted the new slot PENDING_VERIFY: wait for VALID",
    from: at({ kind: "await-boot" }),
    input: frame(
      MSG.ANNOUNCE,
      encodeAnnounce({ phase: 0, runningOffset: 0x160000, runningState: 1, version: "2" }),
    ),
    phase: "await-confirm",
    effects: [],
  },
  {
    name: "booted the old slot: rollback, ask for otadata",
    from: at({ kind: "await-boot" }),
    input: frame(
      MSG.ANNOUNCE,
      encodeAnnounce({ phase: 0, runningOffset: 0x10000, runningState: 2, version: "1" }),
    ),
    phase: "rollback-info",
    effects: [`send ${MSG.HELLO}`],
  },
  {
    name: "device reset mid-transfer: handshake again to resume",
    from: sending({ next: 8192 }),
    input: frame(
      MSG.ANNOUNCE,
      encodeAnnounce({ phase: 0, runningOffset: 0x10000, runningState: 2, version: "1" }),
    ),
    phase: "hello",
    effects: ["baud", `send ${MSG.HELLO}`],
  },
  {
    name: "cancel while sending: ABORT",
    from: sending(),
    input: { kind: "cancel", now: 0, reason: "x" },
    phase: "aborting",
    effects: [`send ${MSG.ABORT}`],
  },
  {
    name: "cancel while sending, keeping the transfer (a supersede): no ABORT, the device's record stays open",
    from: sending(),
    input: { kind: "cancel", now: 0, reason: "x", keep: true },
    phase: "done",
    effects: ["E_UART_CANCELLED"],
  },
  {
    name: "cancel after ACTIVATE: nothing to abort",
    from: at({ kind: "await-boot" }),
    input: { kind: "cancel", now: 0, reason: "x" },
    phase: "done",
    effects: ["E_UART_CANCELLED"],
  },
  {
    name: "link closed",
    from: sending(),
    input: { kind: "closed", now: 0 },
    phase: "done",
    effects: ["E_UART_DISCONNECTED"],
  },
  {
    name: "HELLO unanswered 5 times",
    from: at({ kind: "hello", attempt: 5, sentAt: 0 }),
    input: { kind: "timer", name: "response", now: 9 },
    phase: "done",
    effects: ["E_UART_NO_DEVICE"],
  },
  {
    name: "a malformed RESULT is a protocol error",
    from: at({ kind: "end", attempt: 1 }),
    input: frame(MSG.RESULT, Uint8Array.of(1)),
    phase: "done",
    effects: ["E_UART_PROTOCOL"],
  },
  // Issue 12, "distinct codes": each of these was E_UART_PROTOCOL or E_UART_TIMEOUT before.
  {
    name: "BEGIN answered FLASH_ERROR (otadata could not be invalidated): E_UART_FLASH_ERROR",
    from: at({ kind: "begin", attempt: 1 }),
    input: result(MSG.BEGIN, STATUS.FLASH_ERROR),
    phase: "done",
    effects: ["E_UART_FLASH_ERROR"],
  },
  {
    name: "ACTIVATE answered BAD_STATE (not verified): E_UART_BAD_STATE",
    from: at({ kind: "activate", attempt: 1 }),
    input: result(MSG.ACTIVATE, STATUS.BAD_STATE),
    phase: "done",
    effects: ["E_UART_BAD_STATE"],
  },
  {
    name: "the device resets once more than the session resumes: E_UART_RESET_LOOP",
    from: { ...sending({ next: 8192 }), ctx: { ...sending().ctx, resumes: 8 } },
    input: frame(
      MSG.ANNOUNCE,
      encodeAnnounce({ phase: 0, runningOffset: 0x10000, runningState: 2, version: "1" }),
    ),
    phase: "done",
    effects: ["E_UART_RESET_LOOP"],
  },
];

describe("host transition table", () => {
  for (const r of rows)
    it(r.name, () => {
      const { state, effects } = transition(r.from, r.input);
      expect(state.phase.kind).toBe(r.phase);
      expect(kinds(effects)).toEqual(r.effects);
    });

  it("a done session ignores everything", () => {
    const s = at({ kind: "done" });
    expect(transition(s, ack(0, 100))).toEqual({ state: s, effects: [] });
  });
});
