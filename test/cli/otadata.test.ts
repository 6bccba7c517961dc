import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCapture } from "../helpers/cli.js";
import { fixtureJson, fixturePath } from "../helpers/fixtures.js";

function run(argv: string[], cwd = fixturePath("")) {
  return runCapture(argv, cwd);
}

interface Vectors {
  cases: {
    file: string;
    expected: Record<
      string,
      {
        boot: string;
        try_order_if_images_fail: string[];
        otadata_writes_during_selection: { entry_hex: string }[];
        otadata_writes_after_first_image_loads: { entry_hex: string }[];
      }
    >;
  }[];
}

describe("esp-ota otadata", () => {
  it("prints both copies, the slot that boots and the rewrite (table)", async () => {
    const r = await run([
      "otadata",
      "--ota-slots",
      "2",
      "--rollback",
      "otadata/otadata_seq2_pending_verify.bin",
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("1     0x1000  2        ota_1  PENDING_VERIFY");
    expect(r.stdout).toContain("selects ota_0 (copy 0, start index 0)");
    expect(r.stdout).toContain("try order ota_0, ota_1");
    expect(r.stdout).toContain(
      "writes before loading: copy 1 @0x1000: erase sector, write ota_seq 2 ABORTED",
    );
  });

  it.each([
    ["partitions/pt_brief.bin", "2ota_nofactory", false],
    ["partitions/pt_idf_two_ota.bin", "2ota_factory", true],
  ])(
    "--json with %s gives every vector's boot decision (%s)",
    async (table, layoutName, hasFactory) => {
      const V = fixtureJson<Vectors>("otadata/expected.json");
      for (const c of V.cases) {
        for (const rollback of [false, true]) {
          const exp = c.expected[`${layoutName}/rollback_${rollback ? "enabled" : "disabled"}`]!;
          const argv = ["otadata", "--json", "--partition-table", table, `otadata/${c.file}`];
          if (rollback) argv.splice(2, 0, "--rollback");
          const r = await run(argv);
          expect(r.code, c.file).toBe(0);
          const j = JSON.parse(r.stdout);
          expect(j.layout).toEqual({ otaSlotCount: 2, hasFactory, hasTest: false });
          expect(j.boots).toBe(exp.boot);
          expect(j.attemptOrder).toEqual(exp.try_order_if_images_fail);
          expect(j.writesBeforeLoad.map((w: { entryHex: string }) => w.entryHex)).toEqual(
            exp.otadata_writes_during_selection.map((w) => w.entry_hex),
          );
          expect(j.writesAfterLoad.map((w: { entryHex: string }) => w.entryHex)).toEqual(
            exp.otadata_writes_after_first_image_loads.map((w) => w.entry_hex),
          );
          expect(j.file).toBe(`otadata/${c.file}`);
          expect(j.lines).toBe(undefined);
        }
      }
    },
  );

  it("reads the layout from a CSV partition table too", async () => {
    const r = await run([
      "otadata",
      "--json",
      "--partition-table",
      "partitions/pt_idf_two_ota.csv",
      "otadata/otadata_blank.bin",
    ]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.layout.otaSlotCount).toBe(2);
    expect(j.boots).toBe(j.layout.hasFactory ? "factory" : "ota_0");
  });

  it("models anti-rollback with per-slot secure versions", async () => {
    const r = await run([
      "otadata",
      "--json",
      "--ota-slots",
      "2",
      "--anti-rollback-efuse",
      "1",
      "--secure-version",
      "ota_0=3",
      "--secure-version",
      "ota_1=0",
      "otadata/otadata_seq3_valid_seq2_valid.bin",
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("rollback is on");
    const j = JSON.parse(r.stdout);
    expect(j.rollback).toBe(true);
    expect(j.antiRollback).toEqual({ efuseSecureVersion: 1 });
    expect(j.burnSecureVersion).toEqual({ duringSelection: 3 });
    expect(j.attemptOrder).toEqual(["ota_0"]);
    expect(j.antiRollbackRejected).toEqual(["ota_1"]);
  });

  it("refuses a file that is not 0x2000 bytes with E_OTADATA_SIZE", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-otadata-"));
    writeFileSync(join(dir, "short.bin"), new Uint8Array(0x1000).fill(0xff));
    const r = await run(["otadata", "--ota-slots", "2", "short.bin"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error E_OTADATA_SIZE: short.bin is 4096 bytes (0x1000)");
  });

  it("refuses OTA slots with a gap (E_OTADATA_LAYOUT)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-otadata-"));
    writeFileSync(
      join(dir, "gap.csv"),
      "nvs,data,nvs,0x9000,0x4000\notadata,data,ota,0xd000,0x2000\nota_0,app,ota_0,0x10000,1M\nota_2,app,ota_2,,1M\n",
    );
    copyFileSync(fixturePath("otadata/otadata_blank.bin"), join(dir, "o.bin"));
    const r = await run(["otadata", "--partition-table", "gap.csv", "o.bin"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error E_OTADATA_LAYOUT");
  });

  it.each([
    [["otadata", "otadata/otadata_blank.bin"], "exactly one of --partition-table and --ota-slots"],
    [
      [
        "otadata",
        "--ota-slots",
        "2",
        "--partition-table",
        "partitions/pt_brief.bin",
        "otadata/otadata_blank.bin",
      ],
      "exactly one",
    ],
    [
      [
        "otadata",
        "--partition-table",
        "partitions/pt_brief.bin",
        "--factory",
        "otadata/otadata_blank.bin",
      ],
      "--factory and --test go with --ota-slots",
    ],
    [
      ["otadata", "--ota-slots", "2", "--secure-version", "ota_0=1", "otadata/otadata_blank.bin"],
      "--secure-version needs --anti-rollback-efuse",
    ],
    [
      [
        "otadata",
        "--ota-slots",
        "2",
        "--anti-rollback-efuse",
        "1",
        "--secure-version",
        "factory=1",
        "otadata/otadata_blank.bin",
      ],
      "no such app",
    ],
  ])("usage error: %j", async (argv, msg) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("E_USAGE");
    expect(r.stderr).toContain(msg);
  });

  it.each([
    [["otadata", "--ota-slots", "17", "otadata/otadata_blank.bin"]],
    [["otadata", "--ota-slots", "2", "--secure-version-bits", "33", "otadata/otadata_blank.bin"]],
    [
      [
        "otadata",
        "--ota-slots",
        "2",
        "--anti-rollback-efuse",
        "1",
        "--secure-version",
        "ota0=1",
        "otadata/otadata_blank.bin",
      ],
    ],
    [["otadata", "--ota-slots", "2"]],
  ])("commander usage error: %j", async (argv) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
  });

  it("has help with defaults", async () => {
    const r = await run(["otadata", "--help"]);
    expect(r.code).toBe(0);
    const help = r.stdout.replace(/\s+/g, " ");
    expect(help).toContain("--rollback");
    expect(help).toContain("(default: off, ESP-IDF's default)");
    expect(help).toContain("--anti-rollback-efuse <n>");
    expect(help).toContain("(default: 16, the Kconfig default");
    expect(help).not.toContain("(default: {})");
  });
});
