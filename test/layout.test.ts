/**
 * The layout STYLE.md §2 asks for, checked: `src/` is the library and imports nothing from the
 * programs built on it (`agent/`, `broker/`); `src/uart` (the protocol codecs and the host side)
 * imports nothing from the simulator (`src/sim`), which runs the device side (issue 14). A
 * console that reached into broker/ for the password format is what this caught.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = new URL("..", import.meta.url).pathname;

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? tsFiles(join(dir, e.name))
      : e.name.endsWith(".ts")
        ? [join(dir, e.name)]
        : [],
  );
}

/** Every module specifier a file imports or re-exports (static and dynamic). */
function specifiers(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)) out.push(m[1]!);
  return out;
}

function offenders(dir: string, forbidden: (resolved: string) => boolean): string[] {
  const bad: string[] = [];
  for (const f of tsFiles(join(ROOT, dir))) {
    for (const s of specifiers(f)) {
      if (!s.startsWith(".")) continue;
      const resolved = relative(ROOT, join(f, "..", s));
      if (forbidden(resolved)) bad.push(`${relative(ROOT, f)} imports ${s}`);
    }
  }
  return bad;
}

describe("layout", () => {
  it("src/ imports nothing from agent/ or broker/", () => {
    expect(offenders("src", (r) => r.startsWith("agent/") || r.startsWith("broker/"))).toEqual([]);
  });

  it("src/uart imports nothing from src/sim", () => {
    expect(offenders("src/uart", (r) => r.startsWith("src/sim/"))).toEqual([]);
  });
});
