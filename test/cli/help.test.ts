/**
 * The help of every command, walked over the whole program (every module loaded): the start-up
 * table's summaries match the modules (issue 13 item 7), and a default is said once, by
 * commander's "(default: X)", not again in the description (item 8: "(default 115200)
 * (default: 115200)"), with units where the value has one (`--max-failure-rate`: 5%).
 */
import type { Command } from "commander";
import { beforeAll, describe, expect, it } from "vitest";
import { ESP_OTA_PLUGINS } from "../../agent/plugins.js";
import { createContext } from "../../src/cli/context.js";
import { buildProgram, type CommandEntry, LIBRARY_COMMANDS } from "../../src/cli/program.js";

let program: Command;
beforeAll(async () => {
  program = await buildProgram(
    createContext({ write: () => true }, { write: () => true }),
    ESP_OTA_PLUGINS,
    "all",
  );
});

function* walk(c: Command, path: string): Generator<{ path: string; cmd: Command }> {
  yield { path, cmd: c };
  for (const s of c.commands) yield* walk(s, `${path} ${s.name()}`);
}

/**
 * Options whose description names a default that is not the option's own (the ESP-IDF default
 * the option departs from), so the word is not a repetition.
 */
const OTHER_DEFAULTS = new Set(["esp-ota sim serve --rx"]);

describe("esp-ota help", () => {
  it("each command's summary in the start-up table is the description its module sets", () => {
    const entries = [...LIBRARY_COMMANDS, ...(ESP_OTA_PLUGINS as CommandEntry[])];
    expect(program.commands.map((c) => c.name())).toEqual(entries.map((e) => e.name));
    for (const e of entries) {
      const cmd = program.commands.find((c) => c.name() === e.name)!;
      expect(cmd.description(), e.name).toBe(e.summary);
    }
  });

  it("no option states its default twice", () => {
    const repeated: string[] = [];
    for (const { path, cmd } of walk(program, "esp-ota")) {
      for (const o of cmd.options) {
        const shown = o.defaultValue !== undefined && !o.negate;
        const key = `${path} ${o.long}`;
        if (shown && /\bdefault\b/i.test(o.description) && !OTHER_DEFAULTS.has(key))
          repeated.push(`${key}: ${o.description}`);
      }
    }
    expect(repeated).toEqual([]);
  });

  it("a shown default is in the option's own units", () => {
    // The line commander prints for an option, before wrapping.
    const line = (path: string[], long: string) => {
      let c: Command = program;
      for (const n of path) c = c.commands.find((s) => s.name() === n)!;
      return c.createHelp().optionDescription(c.options.find((o) => o.long === long)!);
    };
    expect(line(["rollout", "start"], "--max-failure-rate")).toMatch(/ \(default: 5%\)$/);
    expect(line(["rollout", "start"], "--wave-timeout")).toMatch(/ \(default: 30m\)$/);
    expect(line(["rollout", "start"], "--waves")).toMatch(/ \(default: 1%,10%,50%,100%\)$/);
    expect(line(["rollout", "pause"], "--timeout")).toMatch(/ \(default: 10s\)$/);
    expect(line(["release", "build"], "--expires")).toMatch(/ \(default: "30d"\)$/);
    expect(line(["device", "flash"], "--baud")).toMatch(/transfer \(default: 921600\)$/);
  });

  it("every MQTT command takes the client-certificate and password options", () => {
    for (const { path, cmd } of walk(program, "esp-ota")) {
      if (!cmd.options.some((o) => o.long === "--broker") || path.startsWith("esp-ota agent"))
        continue;
      const longs = cmd.options.map((o) => o.long);
      for (const flag of ["--ca", "--cert", "--key", "--password-file", "--password-env"])
        expect(longs, `${path} ${flag}`).toContain(flag);
    }
  });
});
