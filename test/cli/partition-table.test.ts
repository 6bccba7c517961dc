import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { toHex } from "../../src/bytes.js";
import { runCli } from "../../src/cli/program.js";
import { fixture, fixturePath, fixtureText } from "../helpers/fixtures.js";

/** Runs `esp-ota partition-table ...` in-process; stdout keeps text and raw bytes apart. */
async function run(args: string[], opts: { tty?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "esp-ota-pt-"));
  let out = "";
  const outBytes: Uint8Array[] = [];
  let err = "";
  const stdout = {
    isTTY: opts.tty,
    write(s: string | Uint8Array) {
      if (typeof s === "string") out += s;
      else outBytes.push(s);
    },
  };
  const stderr = {
    write(s: string) {
      err += s;
    },
  };
  const code = await runCli(["partition-table", ...args], stdout, stderr, dir);
  return { code, out, outBytes, err, dir };
}

const F = (name: string) => fixturePath(`partitions/${name}`);

describe("esp-ota partition-table", () => {
  it.each(["pt_brief", "pt_idf_two_ota", "pt_factory_ota_nvskeys"])(
    "%s.csv -> binary file equals gen_esp32part's .bin",
    async (name) => {
      const r = await run(["--flash-size", "4MB", F(`${name}.csv`), "out/pt.bin"]);
      expect(r.err).not.toContain("error");
      expect(r.code).toBe(0);
      expect(toHex(readFileSync(join(r.dir, "out/pt.bin")))).toBe(
        toHex(fixture(`partitions/${name}.bin`)),
      );
      expect(r.err).toContain("-> binary table (0xc00 bytes, with MD5 entry)");
    },
  );

  it.each(["pt_brief", "pt_idf_two_ota", "pt_factory_ota_nvskeys"])(
    "%s.bin -> CSV file equals gen_esp32part's roundtrip CSV",
    async (name) => {
      const r = await run([F(`${name}.bin`), "pt.csv"]);
      expect(r.code).toBe(0);
      expect(readFileSync(join(r.dir, "pt.csv"), "utf8")).toBe(
        fixtureText(`partitions/${name}.roundtrip.csv`),
      );
      expect(r.err).toContain("MD5 ok");
    },
  );

  it("binary -> CSV on stdout when OUT is omitted or '-'", async () => {
    for (const extra of [[], ["-"]]) {
      const r = await run([F("pt_brief.bin"), ...extra]);
      expect(r.code).toBe(0);
      expect(r.out).toBe(fixtureText("partitions/pt_brief.roundtrip.csv"));
    }
  });

  it("--disable-md5sum writes gen_esp32part's nomd5 binary", async () => {
    const r = await run(["--disable-md5sum", F("pt_brief.csv"), "nomd5.bin"]);
    expect(r.code).toBe(0);
    expect(toHex(readFileSync(join(r.dir, "nomd5.bin")))).toBe(
      toHex(fixture("partitions/pt_brief.nomd5.bin")),
    );
    expect(r.err).toContain("without MD5 entry");
  });

  it("binary output to a pipe gets the raw bytes; to a terminal it is refused (exit 2)", async () => {
    const piped = await run([F("pt_brief.csv")]);
    expect(piped.code).toBe(0);
    expect(piped.outBytes).toHaveLength(1);
    expect(toHex(piped.outBytes[0]!)).toBe(toHex(fixture("partitions/pt_brief.bin")));

    const tty = await run([F("pt_brief.csv")], { tty: true });
    expect(tty.code).toBe(2);
    expect(tty.err).toContain(
      "error E_USAGE: the binary partition table would be written to the terminal",
    );
    expect(tty.outBytes).toHaveLength(0);
  });

  it.each([
    {
      file: "pt_bad_overlap.csv",
      code: "E_PARTITION_OVERLAP",
      rule: "Partitions overlap. Partition sets offset 0xd000",
    },
    {
      file: "pt_bad_otadata_size.csv",
      code: "E_PARTITION_OTADATA",
      rule: "otadata partition must have size = 0x2000",
    },
  ])("$file exits 1 with $code on stderr and writes nothing", async ({ file, code, rule }) => {
    const r = await run([F(file), "bad.bin"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`error ${code}: `);
    expect(r.err).toContain(rule);
    expect(r.err).toContain("what to do:");
    expect(existsSync(join(r.dir, "bad.bin"))).toBe(false);
  });

  it("--flash-size: too small fails with E_PARTITION_FLASH_SIZE; a value gen_esp32part lacks is a usage error", async () => {
    const small = await run(["--flash-size", "2MB", F("pt_brief.csv"), "x.bin"]);
    expect(small.code).toBe(1);
    expect(small.err).toContain("error E_PARTITION_FLASH_SIZE: Partition ota_1 ends at 0x2b0000");
    const odd = await run(["--flash-size", "3MB", F("pt_brief.csv"), "x.bin"]);
    expect(odd.code).toBe(2);
    expect(odd.err).toContain("E_USAGE");
  });

  it("--secure v1 requires 64 KB app sizes; plain --secure means v1; v2 does not", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-pt-in-"));
    const csv = join(dir, "sb.csv");
    writeFileSync(csv, "nvs,data,nvs,,0x4000\nfactory,app,factory,,0x101000\n");
    // A bare --secure takes the next word as its version, as argparse's nargs="?" does: put it last.
    for (const args of [
      ["--secure", "v1", csv, "x.bin"],
      [csv, "x.bin", "--secure"],
    ]) {
      const r = await run(args);
      expect(r.code).toBe(1);
      expect(r.err).toContain(
        "error E_PARTITION_ALIGNMENT: Partition factory invalid: Size 0x101000 is not aligned to 0x10000",
      );
    }
    expect((await run(["--secure", "v2", csv, "x.bin"])).code).toBe(0);
    expect((await run([csv, "x.bin"])).code).toBe(0);
  });

  it("--offset moves the automatically placed partitions", async () => {
    const r = await run(["--offset", "0x10000", F("pt_idf_two_ota.csv"), "t.bin"]);
    expect(r.code).toBe(0);
    const back = await run([join(r.dir, "t.bin"), "--offset", "0x10000"]);
    expect(back.code).toBe(0);
    expect(back.out.split("\n")[2]).toBe("nvs,data,nvs,0x11000,16K,");
    // Partitions from 0x11000 on also clear the default table sector (0x8000..0x9000).
    expect((await run([join(r.dir, "t.bin")])).code).toBe(0);
  });

  it("--no-verify skips the table rules", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-pt-in-"));
    const csv = join(dir, "small-nvs.csv");
    writeFileSync(csv, "nvs,data,nvs,,0x1000\n");
    expect((await run([csv, "a.bin"])).code).toBe(1);
    expect((await run(["--no-verify", csv, "a.bin"])).code).toBe(0);
  });

  it("prints gen_esp32part's warnings on stderr; --quiet drops only the summary", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-pt-in-"));
    const csv = join(dir, "warn.csv");
    writeFileSync(csv, "app,data,nvs,,0x4000\n");
    const r = await run(["-q", csv, "w.bin"]);
    expect(r.code).toBe(0);
    expect(r.err).toBe(
      "warning: Partition has name 'app' which is a partition type, but does not match this partition's type (0x1). Mistake in partition table?\n",
    );
  });

  it("a corrupt binary exits 1 with its code", async () => {
    const dir = mkdtempSync(join(tmpdir(), "esp-ota-pt-in-"));
    const bin = new Uint8Array(fixture("partitions/pt_brief.bin"));
    bin[8] ^= 0x10; // entry 0 size: the MD5 no longer matches
    writeFileSync(join(dir, "bad.bin"), bin);
    const r = await run([join(dir, "bad.bin")]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("error E_PARTITION_MD5: MD5 checksums don't match");
    expect(r.out).toBe("");
  });

  it("a missing input is E_FILE_READ; a missing argument is a usage error", async () => {
    const r = await run(["no-such.csv", "x.bin"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("error E_FILE_READ");
    expect((await run([])).code).toBe(2);
  });

  it("--help documents the options and their defaults", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(0);
    for (const s of [
      "--flash-size",
      "(default: 0x8000)",
      "--disable-md5sum",
      "--secure [version]",
      "--no-verify",
    ]) {
      expect(r.out).toContain(s);
    }
  });
});
