/**
 * The hostile-input suite (issue 12 "Must show"): every row of test/security/hostile-input-rows.ts
 * is one test, named `input · kind: what is sent → outcome`. Each must give its coded outcome
 * (an error code, or a refusal value), with a message that is bounded and holds no raw control
 * character, and never crash: a TypeError or any other exception from our code fails the row.
 * docs/security.md "Hostile input" is generated from the same rows (npm run docs:hostile-input).
 */
import { readFileSync, rmSync } from "node:fs";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import {
  type CaseRow,
  type FuzzRow,
  type Outcome,
  RAW_CONTROL,
  ROWS,
  renderHostileInputMarkdown,
  rowContext,
  rowName,
} from "./hostile-input-rows.js";

/**
 * Longest message a row may produce: half a status's 4,096-character error.message (the longest,
 * E_DOWNLOAD_FAILED naming 8 mirrors by a 120-character quote each, is about 1,300).
 */
const MESSAGE_MAX = 2048;

const { ctx, root } = rowContext();
afterAll(() => rmSync(root, { recursive: true, force: true }));

function check(o: Outcome, expected: string | readonly string[]): void {
  const allowed = typeof expected === "string" ? [expected] : expected;
  expect(allowed, o.message).toContain(o.code);
  expect(o.message.length).toBeLessThan(MESSAGE_MAX);
  expect(o.message).not.toMatch(RAW_CONTROL);
}

describe("hostile input: every input the gateway takes, each bad kind with its coded outcome", () => {
  it("the table covers every input kind, and no two rows have one name", () => {
    const inputs = new Set(ROWS.map((r) => r.input));
    for (const k of [
      "MQTT topic",
      "MQTT notice",
      "MQTT command",
      "retained status / presence",
      "retained rollout state",
      "manifest",
      "HTTP response",
      "UART frame",
      "UART INFO",
      "ledger file",
      "staging sidecar",
      "gateway key",
      "config",
    ] as const)
      expect(inputs).toContain(k);
    const names = ROWS.map(rowName);
    expect(new Set(names).size).toBe(names.length);
  });

  for (const row of ROWS) {
    if ("fuzz" in row) {
      const r = row as FuzzRow;
      it(rowName(r), () => {
        fc.assert(
          fc.property(r.fuzz.arb, (x) => {
            check(r.fuzz.run(x, ctx), r.expect);
          }),
          { numRuns: r.fuzz.numRuns },
        );
      });
    } else {
      const r = row as CaseRow;
      it(rowName(r), async () => {
        check(await r.run(ctx), r.expect);
      });
    }
  }

  it("docs/security.md holds the table generated from these rows (run `npm run docs:hostile-input`)", () => {
    const page = readFileSync(new URL("../../docs/security.md", import.meta.url), "utf8");
    expect(page).toContain(renderHostileInputMarkdown());
  });
});
