import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ERROR_AREAS, ERROR_CODES, EspOtaError, renderErrorsMarkdown } from "../src/errors.js";

describe("error codes", () => {
  it("docs/errors.md is generated from the code tables (run `npm run docs:errors`)", () => {
    const onDisk = readFileSync(new URL("../docs/errors.md", import.meta.url), "utf8");
    expect(onDisk).toBe(renderErrorsMarkdown());
  });

  it("no code is defined in two areas", () => {
    const all = ERROR_AREAS.flatMap((a) => Object.keys(a.codes));
    expect(new Set(all).size).toBe(all.length);
    expect(Object.keys(ERROR_CODES).length).toBe(all.length);
  });

  it("every code says what it means and what to do", () => {
    for (const area of ERROR_AREAS) {
      for (const [code, info] of Object.entries(area.codes)) {
        expect(code).toMatch(/^E_[A-Z0-9_]+$/);
        expect(info.meaning.length, code).toBeGreaterThan(10);
        expect(info.action.length, code).toBeGreaterThan(10);
      }
    }
  });

  it("carries code, context and cause", () => {
    const cause = new Error("disk");
    const e = new EspOtaError("E_FILE_READ", "cannot read x", { path: "x" }, cause);
    expect(e.code).toBe("E_FILE_READ");
    expect(e.context.path).toBe("x");
    expect(e.cause).toBe(cause);
    expect(e.action).toMatch(/path/);
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      code: "E_FILE_READ",
      message: "cannot read x",
      context: { path: "x" },
    });
  });
});
