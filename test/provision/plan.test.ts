import { describe, expect, it } from "vitest";
import { parsePartitionCsv } from "../../src/esp/partition-table.js";
import { planProvisioning } from "../../src/provision/plan.js";
import { checkState, parseEfuseSummary, valueMatches } from "../../src/provision/state-check.js";
import { CSV } from "./fixtures.js";

const parts = parsePartitionCsv(CSV);
const ids = (p: ReturnType<typeof planProvisioning>) => p.steps.map((s) => s.id);

describe("provision plan", () => {
  it("orders flash encryption before Secure Boot V2, and download mode last", () => {
    const p = planProvisioning({
      chip: "esp32s3",
      partitions: parts,
      secureBoot: "v2",
      flashEncryption: "release",
    });
    expect(ids(p)).toEqual([
      "keys",
      "digest",
      "sign",
      "check-layout",
      "encrypt",
      "fresh",
      "burn-fe-key",
      "crypt-cnt",
      "security-efuses",
      "write-flash",
      "secure-boot-v2",
      "revoke-unused",
      "lock-download",
    ]);
    // Every region is encrypted at the address it is written to.
    const enc = p.steps.find((s) => s.id === "encrypt")!.commands;
    const write = p.steps.find((s) => s.id === "write-flash")!.commands[0]!;
    for (const r of p.regions) {
      expect(
        enc.some((c) => c.includes(`0x${r.address.toString(16)}`) && c.includes(r.output)),
      ).toBe(true);
      expect(write[write.indexOf(r.output) - 1]).toBe(`0x${r.address.toString(16)}`);
    }
    expect(p.regions.map((r) => [r.label, r.address])).toEqual([
      ["bootloader", 0x0],
      ["partition table", 0x8000],
      ["ota_0", 0x10000],
      ["otadata", 0xd000],
    ]);
  });

  it("ESP32: FLASH_CRYPT_CONFIG 0xF before the counter; the counter before the images", () => {
    const p = planProvisioning({
      chip: "esp32",
      partitions: parts,
      secureBoot: "v2",
      flashEncryption: "release",
    });
    const i = (id: string) => ids(p).indexOf(id);
    expect(i("flash-crypt-config")).toBeGreaterThan(i("burn-fe-key"));
    expect(i("crypt-cnt")).toBeGreaterThan(i("flash-crypt-config"));
    expect(i("write-flash")).toBeGreaterThan(i("crypt-cnt"));
    expect(p.regions[0]!.address).toBe(0x1000);
    expect(
      p.steps.some((s) =>
        s.commands.some(
          (c) => c.includes("write-protect-efuse") && c.includes("FLASH_CRYPT_CONFIG"),
        ),
      ),
    ).toBe(false);
  });

  it("refuses a bootloader that would run past the partition table once signed", () => {
    const p = planProvisioning({
      chip: "esp32",
      partitions: parts,
      secureBoot: "v2",
      flashEncryption: "release",
      bootloaderSize: 0x6001,
    });
    expect(p.problems[0]).toMatchObject({ severity: "error" });
    expect(p.problems[0]!.message).toContain(
      "24577 bytes, 32768 once signed: at 0x1000 it runs past the partition table at 0x8000",
    );
    const ok = planProvisioning({
      chip: "esp32",
      partitions: parts,
      secureBoot: "v2",
      flashEncryption: "release",
      bootloaderSize: 0x6000,
    });
    expect(ok.problems).toEqual([]);
  });

  it("refuses what the chip cannot do", () => {
    expect(() =>
      planProvisioning({
        chip: "esp32s3",
        partitions: parts,
        secureBoot: "v1",
        flashEncryption: "release",
      }),
    ).toThrow(/no Secure Boot V1/);
    expect(() =>
      planProvisioning({
        chip: "esp32",
        partitions: parts,
        secureBoot: "v2",
        scheme: "ecdsa256",
        flashEncryption: "release",
      }),
    ).toThrow(/rsa3072/);
    expect(() =>
      planProvisioning({
        chip: "esp32c3",
        partitions: parts,
        secureBoot: "v2",
        xtsBits: 256,
        flashEncryption: "release",
      }),
    ).toThrow(/XTS-AES-128 only/);
  });
});

describe("check-state", () => {
  it("matches espefuse's value forms and protections", () => {
    expect(valueMatches(true, 1)).toBe(true);
    expect(valueMatches(false, 1)).toBe(false);
    expect(valueMatches("Enable (0b111)", 7)).toBe(true);
    expect(valueMatches("XTS_AES_256_KEY_1", "XTS_AES_256_KEY_1")).toBe(true);
    const s = parseEfuseSummary(
      JSON.stringify({ BLOCK1: { value: "?? ??", readable: false, writeable: false } }),
    );
    if (!s.ok) throw new Error(s.reason);
    expect(checkState(s.fields, [{ field: "BLOCK1", readable: false, writeable: false }]).ok).toBe(
      true,
    );
    expect(checkState(s.fields, [{ field: "BLOCK2", value: 0 }]).mismatches[0]!.actual).toBe(
      "absent from the summary",
    );
    expect(parseEfuseSummary("[1]")).toMatchObject({ ok: false });
  });
});
