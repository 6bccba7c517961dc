/**
 * Start-up loads only the command that runs (issue 13 item 7; src/cli/program.ts). The cost is
 * measured by `npm run bench:startup` (docs/benchmarks.md "CLI start-up"); these tests check the
 * cause instead of a time: what `esp-ota` imports before it knows the command, and which command
 * modules a line loads.
 */
import { readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it, vi } from "vitest";
import { ESP_OTA_PLUGINS } from "../../agent/plugins.js";
import { type CommandEntry, commandNamed, LIBRARY_COMMANDS } from "../../src/cli/program.js";
import { runCapture } from "../helpers/cli.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Every module the entry point imports before running anything: the static, value-carrying
 * imports and re-exports followed transitively (`import type` is erased; dynamic import() is
 * what runs later). With verbatimModuleSyntax, `import { type A }` still loads its module.
 */
function staticGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const src = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.ES2022);
    for (const st of src.statements) {
      let spec: ts.Expression | undefined;
      if (ts.isImportDeclaration(st) && !st.importClause?.isTypeOnly) spec = st.moduleSpecifier;
      else if (ts.isExportDeclaration(st) && !st.isTypeOnly) spec = st.moduleSpecifier;
      if (!spec || !ts.isStringLiteral(spec)) continue;
      const name = spec.text;
      if (name.startsWith(".")) visit(resolve(dirname(file), name.replace(/\.js$/, ".ts")));
      else if (!name.startsWith("node:")) packages.add(name);
    }
  };
  visit(join(ROOT, entry));
  return { files, packages };
}

describe("esp-ota start-up", () => {
  it("the binary imports no command and no package but commander before it parses argv", () => {
    const { files, packages } = staticGraph("agent/main.ts");
    const loaded = [...files].map((f) => relative(ROOT, f)).sort();
    expect(loaded.filter((f) => f.startsWith("src/cli/commands/"))).toEqual([]);
    for (const program of [
      "agent/command.ts",
      "agent/demo.ts",
      "agent/agent.ts",
      "broker/command.ts",
    ])
      expect(loaded).not.toContain(program);
    expect([...packages]).toEqual(["commander"]);
    // What it does load: the table, the runner and the error codes it reports with.
    expect(loaded).toContain("src/cli/program.ts");
    expect(loaded.length).toBeLessThan(40);
  });

  it("`secure --help` loads the verbs, not the signing code (@noble/curves) behind them", () => {
    for (const verbs of ["src/cli/commands/secure-sign.ts", "src/cli/commands/secure-flash.ts"]) {
      const { packages } = staticGraph(verbs);
      expect(
        [...packages].filter((p) => p.startsWith("@noble/")),
        verbs,
      ).toEqual([]);
    }
  });

  it("`broker passwd` and `broker --help` load no aedes or LevelDB", () => {
    const { packages } = staticGraph("broker/command.ts");
    expect([...packages].filter((p) => /aedes|level/.test(p))).toEqual([]);
  });

  it("commandNamed finds the command a line runs, through `help` and past root options", () => {
    expect(commandNamed(["--version"])).toBeUndefined();
    expect(commandNamed([])).toBeUndefined();
    expect(commandNamed(["secure", "--help"])).toBe("secure");
    expect(commandNamed(["-h", "sim", "create"])).toBe("sim");
    expect(commandNamed(["help", "rollout", "start"])).toBe("rollout");
    expect(commandNamed(["help"])).toBeUndefined();
  });

  it("--version and --help register no command; `secure --help` registers only secure", async () => {
    const entries = [...LIBRARY_COMMANDS, ...(ESP_OTA_PLUGINS as CommandEntry[])];
    const spies = entries.map((e) => vi.spyOn(e, "register"));
    try {
      expect(await runCapture(["--version"])).toMatchObject({ code: 0, stdout: "0.1.0\n" });
      const help = await runCapture(["--help"]);
      expect(help.code).toBe(0);
      expect(spies.filter((s) => s.mock.calls.length > 0)).toEqual([]);
      // Every command is still listed, with its summary.
      for (const e of entries) expect(help.stdout).toMatch(new RegExp(`\\n  ${e.name} +\\S`));

      const secure = await runCapture(["secure", "--help"]);
      expect(secure.code).toBe(0);
      expect(secure.stdout).toContain("sign-data");
      const called = entries.filter((_, i) => spies[i]!.mock.calls.length > 0).map((e) => e.name);
      expect(called).toEqual(["secure"]);

      // A mistyped command is still a usage error with commander's suggestion.
      const typo = await runCapture(["secrue"]);
      expect(typo.code).toBe(2);
      expect(typo.stderr).toContain("Did you mean secure?");
    } finally {
      for (const s of spies) s.mockRestore();
    }
  });
});
