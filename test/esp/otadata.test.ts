import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { crc32, equalBytes, putU32le, toHex } from "../../src/bytes.js";
import { EspOtaError } from "../../src/errors.js";
import {
  activeCopy,
  afterLoad,
  applyWrites,
  type BootConfig,
  type BootPlan,
  checkRollbackIsPossible,
  decodeOtadata,
  decodeOtaEntry,
  describeOtadata,
  encodeOtadata,
  encodeOtaEntry,
  entryValid,
  FACTORY_INDEX,
  INVALID_INDEX,
  indexName,
  invalidateInactiveCopy,
  markAppInvalid,
  markAppValid,
  nextUpdateSlot,
  OTA_ENTRY_SIZE,
  OTA_STATE,
  OTADATA_SECTOR,
  OTADATA_SIZE,
  type OtaEntry,
  type OtaLayout,
  otaEntry,
  otaSeqCrc,
  otatoolSwitch,
  planBoot,
  runningState,
  seqToSlot,
  setBootFactory,
  setBootPartition,
  stateName,
  TEST_APP_INDEX,
} from "../../src/esp/otadata.js";
import { fixture, fixtureJson } from "../helpers/fixtures.js";

// ---------------------------------------------------------------------------------------------
// Helpers

const { NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED } = OTA_STATE;
const BLANK = setBootFactory();

/** An entry as ESP-IDF writes it, or with a wrong CRC ("bad"), or erased (null). */
type Spec = null | { seq: number; state: number; crc?: "bad" | number };

function entryOf(s: Spec): OtaEntry {
  if (s === null) return decodeOtaEntry(new Uint8Array(OTA_ENTRY_SIZE).fill(0xff));
  const e = otaEntry(s.seq, s.state);
  if (s.crc === "bad") e.crc = (e.crc ^ 1) >>> 0;
  else if (typeof s.crc === "number") e.crc = s.crc;
  return e;
}

function otadataOf(c0: Spec, c1: Spec): Uint8Array {
  return encodeOtadata([entryOf(c0), entryOf(c1)]);
}

const layout = (otaSlotCount: number, hasFactory = false, hasTest = false): OtaLayout => ({
  otaSlotCount,
  hasFactory,
  hasTest,
});

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(EspOtaError);
    expect((e as EspOtaError).code).toBe(code);
    return;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

// ---------------------------------------------------------------------------------------------
// Oracle vectors (test/fixtures/otadata, ESP-IDF v6.0.2's compiled bootloader and otatool.py)

interface CopyJson {
  blank?: boolean;
  ota_seq?: number;
  seq_label_hex?: string;
  ota_state?: number;
  ota_state_name?: string;
  crc?: string;
  crc_correct?: boolean;
}
interface WriteJson {
  offset_in_partition: number;
  entry_hex: string;
}
interface ExpectedJson {
  boot: string;
  selected_index: number;
  try_order_if_images_fail: string[];
  copy_valid_crc_and_state: [boolean, boolean];
  active_copy: number;
  ota_has_initial_contents: boolean;
  otadata_writes_during_selection: WriteJson[];
  otadata_writes_after_first_image_loads: WriteJson[];
}
interface CaseJson {
  file: string;
  description: string;
  copy0: CopyJson;
  copy1: CopyJson;
  expected: Record<string, ExpectedJson>;
}
interface SwitchJson {
  input: string;
  switch_to: string;
  output: string;
  changed_copies: number[];
  new_entries: Record<string, CopyJson>;
  "bootloader_then_boots(2ota_nofactory, rollback_disabled)": string;
  esp_ota_ops_esp_ota_set_boot_partition_would_write: { copy: number; ota_seq: number };
}
interface OtadataVectors {
  layouts: Record<string, { app_count: number; factory: boolean }>;
  ota_state_values: Record<string, string>;
  cases: CaseJson[];
  otatool_switches: SwitchJson[];
}

const V = fixtureJson<OtadataVectors>("otadata/expected.json");

function writesJson(writes: readonly { copy: 0 | 1; entry: OtaEntry }[]): WriteJson[] {
  return writes.map((w) => ({
    offset_in_partition: w.copy * OTADATA_SECTOR,
    entry_hex: toHex(encodeOtaEntry(w.entry)),
  }));
}

function expectCopy(raw: Uint8Array, e: OtaEntry, j: CopyJson): void {
  if (j.blank) {
    expect(raw.every((b) => b === 0xff)).toBe(true);
    return;
  }
  expect(e.seq).toBe(j.ota_seq);
  expect(toHex(e.label)).toBe(j.seq_label_hex);
  expect(e.state).toBe(j.ota_state);
  expect(stateName(e.state)).toBe(j.ota_state_name);
  expect(`0x${e.crc.toString(16).padStart(8, "0")}`).toBe(j.crc);
  expect(e.crc === otaSeqCrc(e.seq)).toBe(j.crc_correct);
}

describe("otadata oracle vectors", () => {
  it("covers 14 images, 3 layouts x 2 rollback settings, 7 otatool switches", () => {
    expect(V.cases).toHaveLength(14);
    for (const c of V.cases) expect(Object.keys(c.expected)).toHaveLength(6);
    expect(V.otatool_switches).toHaveLength(7);
  });

  it("state names match esp_ota_img_states_t", () => {
    for (const [v, name] of Object.entries(V.ota_state_values))
      expect(stateName(Number(v))).toBe(name);
  });

  describe.each(V.cases)("$file ($description)", (c) => {
    const bytes = fixture(`otadata/${c.file}`);
    const entries = decodeOtadata(bytes);

    it("decodes both copies; everything else is 0xFF (encode round trip)", () => {
      expect(bytes.length).toBe(OTADATA_SIZE);
      expectCopy(bytes.subarray(0, 32), entries[0], c.copy0);
      expectCopy(bytes.subarray(OTADATA_SECTOR, OTADATA_SECTOR + 32), entries[1], c.copy1);
      expect(encodeOtadata(entries)).toEqual(bytes);
    });

    it.each(Object.entries(c.expected))("%s", (key, exp) => {
      const [layoutName, rb] = key.split("/") as [string, string];
      const l = V.layouts[layoutName]!;
      const cfg: BootConfig = { rollback: rb === "rollback_enabled" };
      const lay = layout(l.app_count, l.factory);
      expect([entryValid(entries[0]), entryValid(entries[1])]).toEqual(
        exp.copy_valid_crc_and_state,
      );
      expect(activeCopy(entries)).toBe(exp.active_copy);

      const plan = planBoot(bytes, lay, cfg);
      expect(plan.startIndex).toBe(exp.selected_index);
      expect(plan.attemptOrder.map(indexName)).toEqual(exp.try_order_if_images_fail);
      expect(indexName(plan.attemptOrder[0]!)).toBe(exp.boot);
      expect(plan.initialContents).toBe(exp.ota_has_initial_contents);
      expect(writesJson(plan.preWrites)).toEqual(exp.otadata_writes_during_selection);

      const afterPre = applyWrites(bytes, plan.preWrites);
      const after = afterLoad(plan, plan.attemptOrder[0]!, afterPre, cfg);
      expect(writesJson(after.writes)).toEqual(exp.otadata_writes_after_first_image_loads);
    });
  });

  describe.each(V.otatool_switches)("otatool switch $input -> $switch_to", (s) => {
    const input = fixture(`otadata/${s.input}`);
    const slot = Number(s.switch_to.replace("ota_", ""));

    it("is byte-exact with otatool.py switch_ota_partition", () => {
      const r = otatoolSwitch(input, slot, 2);
      expect(r.otadata).toEqual(fixture(`otadata/${s.output}`));
      expect([r.copy]).toEqual(s.changed_copies);
      const written = decodeOtadata(r.otadata)[r.copy];
      expectCopy(
        r.otadata.subarray(r.copy * OTADATA_SECTOR, r.copy * OTADATA_SECTOR + 32),
        written,
        s.new_entries[String(r.copy)]!,
      );
      expect(r.seq).toBe(s.new_entries[String(r.copy)]!.ota_seq);
    });

    it("the bootloader then boots the target (2 OTA, no factory, rollback off)", () => {
      const plan = planBoot(fixture(`otadata/${s.output}`), layout(2), { rollback: false });
      expect(indexName(plan.attemptOrder[0]!)).toBe(
        s["bootloader_then_boots(2ota_nofactory, rollback_disabled)"],
      );
    });

    it("esp_ota_set_boot_partition writes what esp_ota_ops.c would", () => {
      const want = s.esp_ota_ops_esp_ota_set_boot_partition_would_write;
      for (const rollback of [false, true]) {
        const r = setBootPartition(input, slot, 2, { rollback });
        expect(r.write.copy).toBe(want.copy);
        expect(r.write.entry.seq).toBe(want.ota_seq);
        expect(r.write.entry.state).toBe(rollback ? NEW : UNDEFINED);
        expect(r.write.entry.crc).toBe(otaSeqCrc(want.ota_seq));
        const plan = planBoot(r.otadata, layout(2), { rollback });
        expect(plan.startIndex).toBe(slot);
      }
    });
  });
});

// ---------------------------------------------------------------------------------------------
// CRC rule (esp32-facts §1.1)

describe("otaSeqCrc", () => {
  it.each([
    [1, 0x4743989a],
    [2, 0x55f63774],
    [3, 0xed4a5011],
    [4, 0x709d68a8],
    [5, 0xc8210fcd],
    [6, 0xda94a023],
    [0xfffffffe, 0x99f8b879],
    [0xfffffffd, 0x8b4d1797],
    // seq 0 has CRC 0xFFFFFFFF: {0, 0xFF.., UNDEFINED, 0xFFFFFFFF} is a valid entry.
    [0, 0xffffffff],
  ])("seq %i -> %i", (seq, crc) => {
    expect(otaSeqCrc(seq)).toBe(crc);
  });

  it("is not plain CRC-32 and not the CRC of the big-endian seq", () => {
    const le1 = new Uint8Array([1, 0, 0, 0]);
    expect(crc32(le1)).toBe(0x99f8b879);
    expect(otaSeqCrc(1)).not.toBe(crc32(le1));
    expect(otaSeqCrc(2)).not.toBe(crc32(new Uint8Array([0, 0, 0, 2]), 0xffffffff));
  });

  it("the plain-CRC-32 and big-endian-CRC mistakes make that copy invalid", () => {
    const std = decodeOtadata(fixture("otadata/otadata_std_crc32_mistake.bin"));
    expect(std[0].crc).toBe(crc32(new Uint8Array([1, 0, 0, 0])));
    expect(entryValid(std[0])).toBe(false);
    const be = decodeOtadata(fixture("otadata/otadata_crc_over_be_seq_mistake.bin"));
    expect(be[0].crc).toBe(crc32(new Uint8Array([0, 0, 0, 2]), 0xffffffff));
    expect(entryValid(be[0])).toBe(false);
    // seq 2 (copy 0) would win if its CRC were accepted; the bootloader boots copy 1's ota_0.
    expect(
      planBoot(fixture("otadata/otadata_crc_over_be_seq_mistake.bin"), layout(2), {
        rollback: false,
      }).startIndex,
    ).toBe(0);
  });

  it("rejects a value that is not a uint32", () => {
    expect(() => otaSeqCrc(-1)).toThrow(RangeError);
    expect(() => otaSeqCrc(2 ** 32)).toThrow(RangeError);
    expect(() => otaSeqCrc(1.5)).toThrow(RangeError);
  });
});

// ---------------------------------------------------------------------------------------------
// Codec

describe("entry and otadata codec", () => {
  it("lays an entry out as esp_ota_select_entry_t", () => {
    const label = new Uint8Array(20).map((_, i) => i);
    const b = encodeOtaEntry({ seq: 0x04030201, label, state: 2, crc: 0xaabbccdd });
    expect(toHex(b)).toBe(`01020304${toHex(label)}02000000ddccbbaa`);
  });

  it("puts copy 0 at 0x0 and copy 1 at 0x1000, 0xFF elsewhere", () => {
    const b = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: NEW });
    expect(decodeOtadata(b)[1].seq).toBe(2);
    expect(b.subarray(32, OTADATA_SECTOR).every((x) => x === 0xff)).toBe(true);
    expect(b.subarray(OTADATA_SECTOR + 32).every((x) => x === 0xff)).toBe(true);
  });

  it("gives coded errors for wrong lengths and TypeError/RangeError for misuse", () => {
    expectCode(() => decodeOtadata(new Uint8Array(0x1000)), "E_OTADATA_SIZE");
    expectCode(() => decodeOtadata(new Uint8Array(0x2001)), "E_OTADATA_SIZE");
    expectCode(() => decodeOtaEntry(new Uint8Array(31)), "E_OTADATA_ENTRY_SIZE");
    expectCode(
      () => planBoot(new Uint8Array(16), layout(2), { rollback: false }),
      "E_OTADATA_SIZE",
    );
    expect(() => decodeOtadata([1, 2] as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => encodeOtaEntry({ seq: 1, label: new Uint8Array(19), state: 0, crc: 0 })).toThrow(
      RangeError,
    );
    expect(() =>
      encodeOtaEntry({ seq: 2 ** 32, label: new Uint8Array(20), state: 0, crc: 0 }),
    ).toThrow(RangeError);
  });

  it("names states, including unknown ones", () => {
    expect(stateName(PENDING_VERIFY)).toBe("PENDING_VERIFY");
    expect(stateName(7)).toBe("UNKNOWN(0x00000007)");
  });

  it("maps seq to slot in uint32 arithmetic", () => {
    expect(seqToSlot(1, 2)).toBe(0);
    expect(seqToSlot(4, 3)).toBe(0);
    expect(seqToSlot(0, 3)).toBe(0xffffffff % 3);
    expect(seqToSlot(0xfffffffe, 4)).toBe(1);
  });

  it("activeCopy: larger seq wins, tie -> copy 0, only valid copies count", () => {
    const a = (c0: Spec, c1: Spec) => activeCopy(decodeOtadata(otadataOf(c0, c1)));
    expect(a({ seq: 3, state: VALID }, { seq: 4, state: VALID })).toBe(1);
    expect(a({ seq: 4, state: VALID }, { seq: 4, state: NEW })).toBe(0);
    expect(a({ seq: 4, state: ABORTED }, { seq: 3, state: VALID })).toBe(1);
    expect(a({ seq: 4, state: VALID, crc: "bad" }, null)).toBe(-1);
    // PENDING_VERIFY and UNDEFINED are selectable states.
    expect(a({ seq: 1, state: PENDING_VERIFY }, { seq: 2, state: UNDEFINED })).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Bootloader transition table (esp32-facts §1.3, bootloader_utility.c)

interface Row {
  name: string;
  from: Uint8Array | null;
  layout: OtaLayout;
  config: BootConfig;
  expect: {
    startIndex: number;
    attemptOrder: number[];
    preWrites?: { copy: 0 | 1; seq: number; state: number }[];
    initialContents?: boolean;
    selectedCopy?: 0 | 1 | -1;
    /** afterLoad(plan, loaded) writes [copy, seq, state]. */
    loaded?: number;
    afterWrites?: { copy: 0 | 1; seq: number; state: number }[];
    burnDuringSelection?: number;
    burnAfterLoad?: number;
    rejected?: number[];
    log?: string[];
    logAfter?: string[];
  };
}

const off: BootConfig = { rollback: false };
const on: BootConfig = { rollback: true };
/** Anti-rollback with per-index secure versions (undefined: no app descriptor). */
function ar(
  efuse: number,
  versions: Record<number, number | undefined>,
  bits?: number,
): BootConfig {
  return {
    rollback: true,
    antiRollback: {
      efuseSecureVersion: efuse,
      slotSecureVersion: (i) => versions[i],
      ...(bits === undefined ? {} : { secureVersionBits: bits }),
    },
  };
}

const rows: Row[] = [
  // §1.3.2 rollback: PENDING_VERIFY -> ABORTED before selection, for each copy.
  {
    name: "rollback on: PENDING_VERIFY newest copy is aborted, the older copy boots",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY }),
    layout: layout(2),
    config: on,
    expect: {
      startIndex: 0,
      attemptOrder: [0, 1],
      preWrites: [{ copy: 1, seq: 2, state: ABORTED }],
      selectedCopy: 0,
    },
  },
  {
    name: "rollback on: both copies PENDING_VERIFY are both aborted (copy 0 first) -> factory",
    from: otadataOf({ seq: 1, state: PENDING_VERIFY }, { seq: 2, state: PENDING_VERIFY }),
    layout: layout(2, true),
    config: on,
    expect: {
      startIndex: FACTORY_INDEX,
      attemptOrder: [FACTORY_INDEX, 0, 1],
      preWrites: [
        { copy: 0, seq: 1, state: ABORTED },
        { copy: 1, seq: 2, state: ABORTED },
      ],
      log: ["Defaulting to factory image"],
    },
  },
  {
    name: "rollback off: PENDING_VERIFY is selectable and nothing is written",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY }),
    layout: layout(2),
    config: off,
    expect: { startIndex: 1, attemptOrder: [1, 0], preWrites: [] },
  },
  {
    name: "rollback on: an aborted entry with a bad CRC is still rewritten (state check ignores CRC)",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY, crc: "bad" }),
    layout: layout(2),
    config: on,
    expect: {
      startIndex: 0,
      attemptOrder: [0, 1],
      preWrites: [{ copy: 1, seq: 2, state: ABORTED }],
    },
  },
  // §1.3.6 NEW -> PENDING_VERIFY.
  {
    name: "rollback on: the selected NEW entry becomes PENDING_VERIFY",
    from: otadataOf({ seq: 3, state: NEW }, { seq: 2, state: VALID }),
    layout: layout(2),
    config: on,
    expect: {
      startIndex: 0,
      attemptOrder: [0, 1],
      preWrites: [{ copy: 0, seq: 3, state: PENDING_VERIFY }],
      selectedCopy: 0,
    },
  },
  {
    name: "rollback on: a NEW entry that is not selected is left alone",
    from: otadataOf({ seq: 1, state: NEW }, { seq: 2, state: VALID }),
    layout: layout(2),
    config: on,
    expect: { startIndex: 1, attemptOrder: [1, 0], preWrites: [] },
  },
  {
    name: "rollback off: NEW is selected and not rewritten",
    from: otadataOf({ seq: 3, state: NEW }, { seq: 2, state: VALID }),
    layout: layout(2),
    config: off,
    expect: { startIndex: 0, attemptOrder: [0, 1], preWrites: [] },
  },
  {
    name: "INVALID and ABORTED are never selected, even with rollback off",
    from: otadataOf({ seq: 3, state: INVALID }, { seq: 2, state: VALID }),
    layout: layout(2),
    config: off,
    expect: { startIndex: 1, attemptOrder: [1, 0], selectedCopy: 1 },
  },
  // §1.3.3 blank otadata and the initial-contents fix-up.
  {
    name: "blank, no factory: ota_0, and copy 0 records the slot after it loads",
    from: BLANK,
    layout: layout(3),
    config: off,
    expect: {
      startIndex: 0,
      attemptOrder: [0, 1, 2],
      initialContents: true,
      loaded: 0,
      afterWrites: [{ copy: 0, seq: 1, state: VALID }],
      log: ["No factory image, trying OTA 0"],
      logAfter: ["Set actual ota_seq=1 in otadata[0]"],
    },
  },
  {
    name: "blank, no factory, ota_0 fails and ota_2 loads: copy 0 gets seq 3",
    from: BLANK,
    layout: layout(3),
    config: on,
    expect: {
      startIndex: 0,
      attemptOrder: [0, 1, 2],
      initialContents: true,
      loaded: 2,
      afterWrites: [{ copy: 0, seq: 3, state: VALID }],
    },
  },
  {
    name: "blank with factory: factory, nothing written",
    from: BLANK,
    layout: layout(2, true),
    config: on,
    expect: {
      startIndex: FACTORY_INDEX,
      attemptOrder: [FACTORY_INDEX, 0, 1],
      initialContents: false,
      loaded: FACTORY_INDEX,
      afterWrites: [],
    },
  },
  {
    name: "blank with factory, factory fails and ota_0 loads: still nothing written",
    from: BLANK,
    layout: layout(2, true),
    config: off,
    expect: {
      startIndex: FACTORY_INDEX,
      attemptOrder: [FACTORY_INDEX, 0, 1],
      loaded: 0,
      afterWrites: [],
    },
  },
  {
    name: "both invalid by state (ABORTED, good CRCs), no factory: ota_0 without the fix-up",
    from: otadataOf({ seq: 1, state: ABORTED }, { seq: 2, state: INVALID }),
    layout: layout(2),
    config: off,
    expect: {
      startIndex: 0,
      attemptOrder: [0, 1],
      initialContents: false,
      loaded: 0,
      afterWrites: [],
    },
  },
  {
    name: "one erased copy, one with a bad CRC, no factory: ota_0 with the fix-up",
    from: otadataOf(null, { seq: 2, state: INVALID, crc: "bad" }),
    layout: layout(2),
    config: off,
    expect: { startIndex: 0, attemptOrder: [0, 1], initialContents: true },
  },
  // §1.3.4 neither copy valid, but not both "invalid".
  {
    name: "CRC-bad copies, no factory: try all partitions from index -1",
    from: otadataOf({ seq: 1, state: VALID, crc: "bad" }, { seq: 2, state: ABORTED }),
    layout: layout(2),
    config: off,
    expect: {
      startIndex: FACTORY_INDEX,
      attemptOrder: [0, 1],
      initialContents: false,
      selectedCopy: -1,
      log: ["ota data partition invalid and no factory, will try all partitions"],
    },
  },
  {
    name: "CRC-bad copies with factory: falling back to factory",
    from: otadataOf({ seq: 1, state: VALID, crc: "bad" }, null),
    layout: layout(2, true),
    config: off,
    expect: {
      startIndex: FACTORY_INDEX,
      attemptOrder: [FACTORY_INDEX, 0, 1],
      log: ["ota data partition invalid, falling back to factory"],
    },
  },
  // §1.3.5 slot mapping and §1.3.7 fallback order.
  {
    name: "seq 7 of 4 slots -> ota_2; walk down to factory, up over ota_3, then test",
    from: otadataOf({ seq: 7, state: VALID }, { seq: 6, state: VALID }),
    layout: layout(4, true, true),
    config: off,
    expect: { startIndex: 2, attemptOrder: [2, 1, 0, FACTORY_INDEX, 3, TEST_APP_INDEX] },
  },
  {
    name: "last slot selected: downward walk covers everything",
    from: otadataOf({ seq: 4, state: VALID }, null),
    layout: layout(4),
    config: off,
    expect: { startIndex: 3, attemptOrder: [3, 2, 1, 0] },
  },
  {
    name: "seq 0 (CRC 0xFFFFFFFF) is valid and maps to (2^32-1) % N",
    from: otadataOf({ seq: 0, state: UNDEFINED }, null),
    layout: layout(3),
    config: off,
    expect: { startIndex: 0xffffffff % 3, attemptOrder: [0, 1, 2] },
  },
  {
    name: "no OTA slots, factory: factory (app_count == 0 ignores otadata)",
    from: otadataOf({ seq: 5, state: VALID }, null),
    layout: layout(0, true),
    config: off,
    expect: { startIndex: FACTORY_INDEX, attemptOrder: [FACTORY_INDEX] },
  },
  {
    name: "no OTA slots, no factory, test app: index 0 does not exist, test is the last resort",
    from: BLANK,
    layout: layout(0, false, true),
    config: off,
    expect: { startIndex: 0, attemptOrder: [TEST_APP_INDEX], initialContents: true },
  },
  {
    name: "test app used as last resort logs the fallback",
    from: otadataOf({ seq: 1, state: VALID }, null),
    layout: layout(1, false, true),
    config: off,
    expect: {
      startIndex: 0,
      attemptOrder: [0, TEST_APP_INDEX],
      loaded: TEST_APP_INDEX,
      afterWrites: [],
      logAfter: ["Falling back to test app as only bootable partition"],
    },
  },
  {
    name: "no otadata partition: factory",
    from: null,
    layout: layout(2, true),
    config: on,
    expect: { startIndex: FACTORY_INDEX, attemptOrder: [FACTORY_INDEX, 0, 1], preWrites: [] },
  },
  // bootloader_start.c test pin: after selection (its rewrites stay), only the test app.
  {
    name: "test pin with a test app: only the test app, selection rewrites still happen",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY }),
    layout: layout(2, false, true),
    config: { rollback: true, testAppPin: true },
    expect: {
      startIndex: TEST_APP_INDEX,
      attemptOrder: [TEST_APP_INDEX],
      preWrites: [{ copy: 1, seq: 2, state: ABORTED }],
      loaded: TEST_APP_INDEX,
      afterWrites: [],
      logAfter: [],
    },
  },
  {
    name: "test pin without a test app: INVALID_INDEX, reset",
    from: BLANK,
    layout: layout(2),
    config: { rollback: false, testAppPin: true },
    expect: {
      startIndex: INVALID_INDEX,
      attemptOrder: [],
      log: [
        "No factory image, trying OTA 0",
        "Detect a boot condition of the test firmware",
        "Test firmware is not found in partition table",
      ],
    },
  },
  // Anti-rollback (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK).
  {
    name: "anti-rollback: VALID entry burns its app's secure_version during selection; lower slots are then skipped",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: VALID }),
    layout: layout(2),
    config: ar(1, { 0: 1, 1: 3 }),
    expect: {
      startIndex: 1,
      attemptOrder: [1],
      rejected: [0],
      burnDuringSelection: 3,
      log: [
        "Enabled a check secure version of app for anti rollback",
        "Secure version (from eFuse) = 1",
        "Anti-rollback is set. eFuse field is updated(3).",
        "OTA app partition slot 0 is not bootable",
      ],
    },
  },
  {
    name: "anti-rollback: newest entry's app is below the eFuse, the older one is selected",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: NEW }),
    layout: layout(2),
    config: ar(2, { 0: 2, 1: 1 }),
    expect: { startIndex: 0, attemptOrder: [0], rejected: [1], selectedCopy: 0, preWrites: [] },
  },
  {
    name: "anti-rollback: selected NEW entry -> PENDING_VERIFY, no burn (only VALID burns)",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: NEW }),
    layout: layout(2),
    config: ar(1, { 0: 1, 1: 2 }),
    expect: {
      startIndex: 1,
      attemptOrder: [1, 0],
      preWrites: [{ copy: 1, seq: 2, state: PENDING_VERIFY }],
    },
  },
  {
    name: "anti-rollback: both entries rejected -> try all partitions (no factory fallback)",
    from: otadataOf({ seq: 1, state: VALID }, { seq: 2, state: VALID }),
    layout: layout(3),
    config: ar(3, { 0: 1, 1: 2, 2: 3 }),
    expect: {
      startIndex: FACTORY_INDEX,
      attemptOrder: [2],
      rejected: [0, 1],
      log: [
        "Enabled a check secure version of app for anti rollback",
        "Secure version (from eFuse) = 3",
        "ota data partition invalid and no factory, will try all partitions",
        "OTA app partition slot 0 is not bootable",
        "OTA app partition slot 1 is not bootable",
      ],
    },
  },
  {
    name: "anti-rollback: initial contents start at index -1 and burn after the fix-up",
    from: BLANK,
    layout: layout(2),
    config: ar(0, { 0: 2, 1: 2 }),
    expect: {
      startIndex: FACTORY_INDEX,
      attemptOrder: [0, 1],
      initialContents: true,
      loaded: 0,
      afterWrites: [{ copy: 0, seq: 1, state: VALID }],
      burnAfterLoad: 2,
      log: [
        "Enabled a check secure version of app for anti rollback",
        "Secure version (from eFuse) = 0",
        "otadata[0..1] in initial state",
      ],
      logAfter: [
        "Set actual ota_seq=1 in otadata[0]",
        "Anti-rollback is set. eFuse field is updated(2).",
      ],
    },
  },
  {
    name: "anti-rollback: a secure_version above the eFuse field size is not burnt",
    from: otadataOf({ seq: 1, state: VALID }, null),
    layout: layout(2),
    config: ar(1, { 0: 5, 1: 1 }, 4),
    expect: {
      startIndex: 0,
      attemptOrder: [0, 1],
      log: [
        "Enabled a check secure version of app for anti rollback",
        "Secure version (from eFuse) = 1",
        "Max secure version is 4. Given 5 version can not be written.",
      ],
    },
  },
  {
    name: "anti-rollback: a slot without an app descriptor is neither selected nor tried",
    from: otadataOf({ seq: 2, state: VALID }, { seq: 1, state: VALID }),
    layout: layout(2),
    config: ar(0, { 0: 0 }),
    expect: { startIndex: 0, attemptOrder: [0], rejected: [1], selectedCopy: 1 },
  },
];

describe("planBoot / afterLoad transition table", () => {
  it.each(rows)("$name", (row) => {
    const plan = planBoot(row.from, row.layout, row.config);
    const x = row.expect;
    expect(plan.startIndex).toBe(x.startIndex);
    expect(plan.attemptOrder).toEqual(x.attemptOrder);
    if (x.preWrites) {
      expect(
        plan.preWrites.map((w) => ({ copy: w.copy, seq: w.entry.seq, state: w.entry.state })),
      ).toEqual(x.preWrites);
      // Only the state changes: seq, label and even a wrong CRC are written back as read.
      const read = row.from ? decodeOtadata(row.from) : undefined;
      for (const w of plan.preWrites) expect(w.entry.crc).toBe(read?.[w.copy].crc);
    }
    if (x.initialContents !== undefined) expect(plan.initialContents).toBe(x.initialContents);
    if (x.selectedCopy !== undefined) expect(plan.selectedCopy).toBe(x.selectedCopy);
    expect(plan.burnSecureVersion).toBe(x.burnDuringSelection);
    expect(plan.antiRollbackRejected).toEqual(x.rejected ?? []);
    if (x.log) expect(plan.log).toEqual(x.log);
    if (x.loaded !== undefined) {
      const flash = applyWrites(row.from ?? BLANK, plan.preWrites);
      const after = afterLoad(plan, x.loaded, flash, row.config);
      expect(
        after.writes.map((w) => ({ copy: w.copy, seq: w.entry.seq, state: w.entry.state })),
      ).toEqual(x.afterWrites);
      for (const w of after.writes) expect(w.entry.label.every((b) => b === 0xff)).toBe(true);
      expect(after.burnSecureVersion).toBe(x.burnAfterLoad);
      if (x.logAfter) expect(after.log).toEqual(x.logAfter);
    }
  });

  it("logLines keep levels and tags; log holds only what INFO level prints", () => {
    const plan = planBoot(
      otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY }),
      layout(2),
      on,
    );
    expect(plan.logLines).toContainEqual({
      level: "D",
      tag: "boot",
      message: "otadata[1] is marking as ABORTED",
    });
    expect(plan.log).toEqual([]);
    const inv = planBoot(
      otadataOf({ seq: 1, state: VALID, crc: "bad" }, null),
      layout(2, true),
      off,
    );
    expect(inv.logLines).toContainEqual({
      level: "E",
      tag: "boot",
      message: "ota data partition invalid, falling back to factory",
    });
  });

  it("afterLoad refuses an index that is not in the plan, and checks the flash image", () => {
    const plan = planBoot(BLANK, layout(2), off);
    expect(() => afterLoad(plan, 5, BLANK, off)).toThrow(RangeError);
    expectCode(() => afterLoad(plan, 0, new Uint8Array(10), off), "E_OTADATA_SIZE");
  });

  it("refuses impossible layouts and configs", () => {
    expect(() => planBoot(BLANK, layout(17), off)).toThrow(RangeError);
    expect(() => planBoot(BLANK, layout(-1), off)).toThrow(RangeError);
    const noRollback = { ...ar(0, {}), rollback: false };
    expect(() => planBoot(BLANK, layout(2), noRollback)).toThrow(/requires rollback/);
    expect(() => planBoot(BLANK, layout(0), ar(0, {}))).toThrow(/at least one OTA slot/);
    expect(() => planBoot(BLANK, layout(2), ar(17, {}))).toThrow(/field size/);
  });

  it("applyWrites erases the whole sector before writing the entry", () => {
    const dirty = BLANK.slice();
    dirty.fill(0x00, OTADATA_SECTOR + 100, OTADATA_SECTOR + 200);
    const out = applyWrites(dirty, [{ copy: 1, entry: otaEntry(3, VALID) }]);
    expect(out.subarray(OTADATA_SECTOR + 32).every((b) => b === 0xff)).toBe(true);
    expect(decodeOtadata(out)[1].seq).toBe(3);
    expect(dirty[OTADATA_SECTOR + 100]).toBe(0); // input untouched
  });
});

// ---------------------------------------------------------------------------------------------
// App side (esp_ota_ops.c)

describe("setBootPartition (esp_ota_set_boot_partition)", () => {
  it("from blank writes copy 0 with seq = slot + 1", () => {
    for (const slot of [0, 1, 2]) {
      const r = setBootPartition(BLANK, slot, 3, { rollback: true });
      expect(r.write).toMatchObject({ copy: 0, entry: { seq: slot + 1, state: NEW } });
      expect(decodeOtadata(r.otadata)[0].seq).toBe(slot + 1);
    }
  });

  it("writes the copy that is not active, with the smallest seq >= current for the slot", () => {
    // Active copy 0 seq 5 (slot (5-1)%3 = 1).
    const c0 = otadataOf({ seq: 5, state: VALID }, { seq: 4, state: VALID });
    expect(setBootPartition(c0, 0, 3, { rollback: false }).write).toMatchObject({
      copy: 1,
      entry: { seq: 7 },
    });
    expect(setBootPartition(c0, 2, 3, { rollback: false }).write).toMatchObject({
      copy: 1,
      entry: { seq: 6, state: UNDEFINED },
    });
    // Active copy 1.
    const c1 = otadataOf({ seq: 4, state: VALID }, { seq: 5, state: VALID });
    expect(setBootPartition(c1, 2, 3, { rollback: true }).write).toMatchObject({
      copy: 0,
      entry: { seq: 6, state: NEW },
    });
  });

  it("same slot: v6 rewrites the active copy with the same seq, v5 writes the other copy", () => {
    const b = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: INVALID });
    const v6 = setBootPartition(b, 0, 2, { rollback: true });
    expect(v6.write).toMatchObject({ copy: 0, entry: { seq: 1, state: NEW } });
    const v5 = setBootPartition(b, 0, 2, { rollback: true, idfMajor: 5 });
    expect(v5.write).toMatchObject({ copy: 1, entry: { seq: 1, state: NEW } });
    // v5 leaves a tie (seq 1 and 1): copy 0 (VALID) wins over the NEW copy 1, still ota_0.
    expect(planBoot(v5.otadata, layout(2), on).selectedCopy).toBe(0);
  });

  it("keeps the label bytes of the copy it overwrites", () => {
    const e1 = otaEntry(2, VALID, new Uint8Array(20).fill(0x41));
    const b = encodeOtadata([otaEntry(3, VALID), e1]);
    const r = setBootPartition(b, 1, 2, { rollback: false });
    expect(r.write.copy).toBe(1);
    expect(r.write.entry.label).toEqual(new Uint8Array(20).fill(0x41));
  });

  it("near the wrap: seq 0xFFFFFFFE -> 0xFFFFFFFF, an empty entry, so the old slot keeps booting", () => {
    const b = fixture("otadata/otadata_seq_fffffffe.bin"); // copy 0 seq 0xFFFFFFFE (ota_1)
    const r = setBootPartition(b, 0, 2, { rollback: false });
    expect(r.write).toMatchObject({ copy: 1, entry: { seq: 0xffffffff } });
    expect(planBoot(r.otadata, layout(2), off).startIndex).toBe(1);
  });

  it("when no seq below 2^32 fits, ESP-IDF would loop forever: E_OTADATA_SEQ_EXHAUSTED", () => {
    const b = otadataOf({ seq: 0xfffffffe, state: VALID }, null); // slot 1 of 4
    expectCode(() => setBootPartition(b, 3, 4, { rollback: false }), "E_OTADATA_SEQ_EXHAUSTED");
    // Slot 2 (base 3) still fits: 0xFFFFFFFF.
    expect(setBootPartition(b, 2, 4, { rollback: false }).write.entry.seq).toBe(0xffffffff);
    // 3 slots: 2^32 = 1 (mod 3), so the wrapped values shift and a seq is found after the wrap.
    const r3 = setBootPartition(otadataOf({ seq: 0xfffffffe, state: VALID }, null), 2, 3, {
      rollback: false,
    });
    expect(r3.write.entry.seq).toBe(0xffffffff);
  });

  it("rejects a slot outside the table", () => {
    expect(() => setBootPartition(BLANK, 2, 2, { rollback: false })).toThrow(RangeError);
    expect(() => setBootPartition(BLANK, 0, 0, { rollback: false })).toThrow(RangeError);
  });

  it("setBootFactory erases otadata: factory boots, or ota_0 with the fix-up", () => {
    const f = setBootFactory();
    expect(f.length).toBe(OTADATA_SIZE);
    expect(f.every((b) => b === 0xff)).toBe(true);
    expect(planBoot(f, layout(2, true), on).startIndex).toBe(FACTORY_INDEX);
  });
});

describe("markAppValid / markAppInvalid (esp_ota_current_ota_is_workable)", () => {
  it("PENDING_VERIFY -> VALID in the same copy, same seq", () => {
    const b = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY });
    const r = markAppValid(b);
    if (!r.ok) throw new Error(r.reason);
    expect(r.write).toMatchObject({ copy: 1, entry: { seq: 2, state: VALID } });
    expect(decodeOtadata(r.otadata)[1].state).toBe(VALID);
  });

  it("already VALID: nothing is written", () => {
    const b = otadataOf({ seq: 1, state: VALID }, null);
    const r = markAppValid(b);
    expect(r.ok && r.write).toBe(undefined);
    expect(r.ok && r.otadata).toEqual(b);
  });

  it("UNDEFINED (rollback off) becomes VALID too", () => {
    const r = markAppValid(otadataOf({ seq: 1, state: UNDEFINED }, null));
    expect(r.ok && r.write?.entry.state).toBe(VALID);
  });

  it("no valid entry or no OTA slots: Running firmware is factory", () => {
    expect(markAppValid(BLANK)).toMatchObject({ ok: false, code: "E_OTADATA_NO_ACTIVE_ENTRY" });
    expect(
      markAppValid(otadataOf({ seq: 1, state: NEW }, null), { otaSlotCount: 0 }),
    ).toMatchObject({ ok: false });
    expect(markAppInvalid(BLANK, true)).toMatchObject({
      ok: false,
      code: "E_OTADATA_NO_ACTIVE_ENTRY",
    });
    // The factory check comes before the rollback check.
    expect(markAppInvalid(BLANK, false)).toMatchObject({ code: "E_OTADATA_NO_ACTIVE_ENTRY" });
  });

  it("anti-rollback: marking valid burns the running app's secure_version", () => {
    const b = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY });
    const r = markAppValid(b, { antiRollback: { efuseSecureVersion: 1, runningSecureVersion: 3 } });
    expect(r).toMatchObject({
      ok: true,
      burnSecureVersion: 3,
      log: ["Anti-rollback is set. eFuse field is updated(3)."],
    });
    const same = markAppValid(b, {
      antiRollback: { efuseSecureVersion: 3, runningSecureVersion: 3 },
    });
    expect(same.ok && same.burnSecureVersion).toBe(undefined);
  });

  it("invalid: refused without a rollback target, otherwise INVALID in the same copy", () => {
    const b = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY });
    expect(markAppInvalid(b, false)).toMatchObject({ ok: false, code: "E_OTA_ROLLBACK_FAILED" });
    const r = markAppInvalid(b, true);
    if (!r.ok) throw new Error(r.reason);
    expect(r.write).toMatchObject({ copy: 1, entry: { seq: 2, state: INVALID } });
    // After the restart the bootloader boots the previous app.
    expect(planBoot(r.otadata, layout(2), on).startIndex).toBe(0);
  });
});

describe("checkRollbackIsPossible (esp_ota_check_rollback_is_possible)", () => {
  const both = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: PENDING_VERIFY });
  const only = otadataOf(null, { seq: 2, state: PENDING_VERIFY });
  const all = () => true;
  const none = () => false;
  it.each([
    ["other copy valid and its slot verifies", both, layout(2), all, undefined, true],
    [
      "other copy valid but its image fails; the factory is not consulted",
      both,
      layout(2, true),
      (i: number) => i === FACTORY_INDEX,
      undefined,
      false,
    ],
    ["no other copy, factory verifies", only, layout(2, true), all, undefined, true],
    [
      "no other copy, factory fails",
      only,
      layout(2, true),
      (i: number) => i !== FACTORY_INDEX,
      undefined,
      false,
    ],
    ["no other copy, no factory", only, layout(2), all, undefined, false],
    ["blank otadata", BLANK, layout(2, true), all, undefined, false],
    ["no OTA slots", both, layout(0, true), all, undefined, false],
    ["nothing verifies", both, layout(2, true), none, undefined, false],
    [
      "anti-rollback: other slot at/above eFuse",
      both,
      layout(2),
      all,
      { efuseSecureVersion: 1, slotSecureVersion: () => 1 },
      true,
    ],
    [
      "anti-rollback: other slot below eFuse",
      both,
      layout(2),
      all,
      { efuseSecureVersion: 2, slotSecureVersion: () => 1 },
      false,
    ],
    [
      "anti-rollback: factory is never a rollback target",
      only,
      layout(2, true),
      all,
      { efuseSecureVersion: 0, slotSecureVersion: () => 0 },
      false,
    ],
  ] as const)("%s", (_n, b, lay, verifies, arc, want) => {
    expect(checkRollbackIsPossible(b, lay, verifies, arc)).toBe(want);
  });
});

describe("runningState (esp_ota_get_state_partition)", () => {
  it("returns the state of the first copy mapping to the slot with a good CRC", () => {
    const b = otadataOf({ seq: 3, state: VALID }, { seq: 2, state: PENDING_VERIFY });
    expect(runningState(b, 0, 2)).toBe(VALID);
    expect(runningState(b, 1, 2)).toBe(PENDING_VERIFY);
    // Copy 0 first when both map to the slot; invalid states are returned as they are.
    const dup = otadataOf({ seq: 1, state: ABORTED }, { seq: 3, state: VALID });
    expect(runningState(dup, 0, 2)).toBe(ABORTED);
  });

  it("undefined for a bad CRC, no OTA slots, or a non-OTA index", () => {
    expect(runningState(otadataOf({ seq: 1, state: VALID, crc: "bad" }, null), 0, 2)).toBe(
      undefined,
    );
    expect(runningState(otadataOf({ seq: 1, state: VALID }, null), 0, 0)).toBe(undefined);
    expect(runningState(otadataOf({ seq: 1, state: VALID }, null), FACTORY_INDEX, 2)).toBe(
      undefined,
    );
    expect(runningState(BLANK, 0, 2)).toBe(undefined);
  });
});

describe("nextUpdateSlot (esp_ota_get_next_update_partition)", () => {
  it.each([
    [0, 2, 1],
    [1, 2, 0],
    [FACTORY_INDEX, 2, 0],
    [TEST_APP_INDEX, 3, 0],
    [2, 4, 3],
    [0, 1, 0],
  ])("running %i of %i slots -> %i", (running, n, want) => {
    expect(nextUpdateSlot(running, n)).toBe(want);
  });
  it("has no answer without OTA slots", () => {
    expect(() => nextUpdateSlot(FACTORY_INDEX, 0)).toThrow(RangeError);
  });
});

describe("invalidateInactiveCopy (esp_ota_invalidate_inactive_ota_data_slot)", () => {
  it("erases the inactive copy's sector", () => {
    const b = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: VALID });
    const r = invalidateInactiveCopy(b, 2, 1);
    expect(r.erasedCopy).toBe(0);
    expect(r.otadata.subarray(0, OTADATA_SECTOR).every((x) => x === 0xff)).toBe(true);
    expect(r.otadata.subarray(OTADATA_SECTOR)).toEqual(b.subarray(OTADATA_SECTOR));
  });

  it("erases an INVALID inactive copy too (only seq and CRC are checked)", () => {
    const b = otadataOf({ seq: 3, state: VALID }, { seq: 2, state: INVALID });
    expect(invalidateInactiveCopy(b, 2, 0).erasedCopy).toBe(1);
  });

  it.each([
    ["no active copy", BLANK, 2, 0],
    ["inactive copy erased", otadataOf({ seq: 1, state: VALID }, null), 2, 0],
    [
      "inactive copy CRC-bad",
      otadataOf({ seq: 1, state: VALID }, { seq: 2, state: VALID, crc: "bad" }),
      2,
      1,
    ],
    [
      "inactive copy selects the running slot",
      otadataOf({ seq: 1, state: VALID }, { seq: 2, state: VALID }),
      2,
      0,
    ],
    [
      "no OTA slots",
      otadataOf({ seq: 1, state: VALID }, { seq: 2, state: VALID }),
      0,
      FACTORY_INDEX,
    ],
  ] as const)("does nothing: %s", (_n, b, n, running) => {
    const r = invalidateInactiveCopy(b, n, running);
    expect(r.erasedCopy).toBe(undefined);
    expect(r.skipped).toBeTruthy();
    expect(r.otadata).toEqual(b);
  });
});

describe("otatoolSwitch", () => {
  it("ignores ota_state and keeps it: an ABORTED copy stays ABORTED with a new seq", () => {
    const b = otadataOf({ seq: 2, state: ABORTED }, { seq: 1, state: VALID });
    const r = otatoolSwitch(b, 0, 2);
    // Base is copy 0 (seq 2 >= 1, state ignored); copy 1 gets seq 3, state VALID kept.
    expect(r).toMatchObject({ copy: 1, seq: 3 });
    expect(decodeOtadata(r.otadata)[1]).toMatchObject({ seq: 3, state: VALID });
  });

  it("keeps the bytes after the entry in the sector it rewrites", () => {
    const b = BLANK.slice();
    b[100] = 0x12;
    const r = otatoolSwitch(b, 1, 2);
    expect(r.otadata[100]).toBe(0x12);
  });

  it("fails like struct.pack when the seq passes 32 bits", () => {
    const b = otadataOf({ seq: 0xfffffffe, state: VALID }, null);
    expectCode(() => otatoolSwitch(b, 3, 4), "E_OTADATA_SEQ_EXHAUSTED");
    expect(() => otatoolSwitch(b, 4, 4)).toThrow(RangeError);
  });
});

describe("describeOtadata", () => {
  it("reports both copies, the boot decision and the planned writes", () => {
    const b = fixture("otadata/otadata_seq2_new.bin");
    const r = describeOtadata(b, layout(2, true), on);
    expect(r.copies[1]).toMatchObject({
      copy: 1,
      offset: 0x1000,
      seq: 2,
      stateName: "NEW",
      crcOk: true,
      valid: true,
      slot: 1,
    });
    expect(r).toMatchObject({
      activeCopy: 1,
      selectedCopy: 1,
      start: "ota_1",
      boots: "ota_1",
      attemptOrder: ["ota_1", "ota_0", "factory"],
    });
    expect(r.writesBeforeLoad).toEqual([
      expect.objectContaining({
        copy: 1,
        offset: 0x1000,
        seq: 2,
        stateName: "PENDING_VERIFY",
        entryHex: "02000000ffffffffffffffffffffffffffffffffffffffff010000007437f655",
      }),
    ]);
    expect(r.writesAfterLoad).toEqual([]);
    expect(r.lines.join("\n")).toContain("writes before loading: copy 1 @0x1000");
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it("shows the blank fix-up and flags unreadable (encrypted-looking) otadata", () => {
    const blank = describeOtadata(BLANK, layout(2), off);
    expect(blank.copies.map((c) => c.blank)).toEqual([true, true]);
    expect(blank.writesAfterLoad).toEqual([
      expect.objectContaining({ copy: 0, seq: 1, stateName: "VALID" }),
    ]);
    const noise = new Uint8Array(OTADATA_SIZE).map((_, i) => (i * 37 + 11) & 0xff);
    expect(describeOtadata(noise, layout(2), off).notes.join(" ")).toMatch(/flash encryption/);
  });

  it("reports anti-rollback burns", () => {
    const b = otadataOf({ seq: 1, state: VALID }, null);
    const r = describeOtadata(b, layout(2), ar(0, { 0: 2, 1: 0 }));
    expect(r.burnSecureVersion).toEqual({ duringSelection: 2 });
    expect(r.antiRollbackRejected).toEqual(["ota_1"]);
  });
});

// ---------------------------------------------------------------------------------------------
// Scenario: the rollback sequence of esp32-facts §1.4, end to end over flash bytes.

describe("rollback scenario", () => {
  /** One boot: pre-writes, first image that "loads", after-load writes. */
  function boot(flash: Uint8Array, lay: OtaLayout, cfg: BootConfig, loads: (i: number) => boolean) {
    const plan: BootPlan = planBoot(flash, lay, cfg);
    let f = applyWrites(flash, plan.preWrites);
    const booted = plan.attemptOrder.find(loads);
    if (booted === undefined) return { flash: f, booted };
    f = applyWrites(f, afterLoad(plan, booted, f, cfg).writes);
    return { flash: f, booted };
  }

  it("an update that never confirms rolls back on the second boot; a confirmed one sticks", () => {
    const lay = layout(2);
    let f = boot(BLANK, lay, on, () => true).flash; // first boot: ota_0, fix-up seq 1 VALID
    expect(decodeOtadata(f)[0]).toMatchObject({ seq: 1, state: VALID });
    f = setBootPartition(f, 1, 2, { rollback: true }).otadata; // NEW in copy 1
    const b1 = boot(f, lay, on, () => true);
    expect(b1.booted).toBe(1);
    expect(runningState(b1.flash, 1, 2)).toBe(PENDING_VERIFY);
    // Reset before mark-valid: aborted, back to ota_0.
    const b2 = boot(b1.flash, lay, on, () => true);
    expect(b2.booted).toBe(0);
    expect(decodeOtadata(b2.flash)[1].state).toBe(ABORTED);
    // Same update, confirmed this time.
    const confirmed = markAppValid(b1.flash);
    if (!confirmed.ok) throw new Error(confirmed.reason);
    expect(boot(confirmed.otadata, lay, on, () => true).booted).toBe(1);
  });

  it("a selected image that fails verification falls back even to an ABORTED slot's image", () => {
    const f = otadataOf({ seq: 1, state: ABORTED }, { seq: 2, state: VALID });
    expect(boot(f, layout(2), on, (i) => i === 0).booted).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties (fast-check)

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const arbState = fc.oneof(
  fc.constantFrom(NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED),
  u32,
);
const arbEntry = fc.record({
  seq: u32,
  label: fc.uint8Array({ minLength: 20, maxLength: 20 }),
  state: u32,
  crc: u32,
});
/** Entries that exercise the logic: small or near-wrap seqs, mostly right CRCs, some erased. */
const arbLogicalEntry = fc.oneof(
  fc.constant(null as Spec),
  fc
    .record({
      seq: fc.oneof(
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0xfffffff0, max: 0xffffffff }),
      ),
      state: arbState,
      crc: fc.oneof(fc.constant(undefined), fc.constant("bad" as const)),
    })
    .map(
      (r): Spec =>
        r.crc === undefined
          ? { seq: r.seq, state: r.state }
          : { seq: r.seq, state: r.state, crc: "bad" },
    ),
);
const arbOtadata = fc.tuple(arbLogicalEntry, arbLogicalEntry).map(([a, b]) => otadataOf(a, b));
const arbLayout = fc.record({
  otaSlotCount: fc.integer({ min: 0, max: 16 }),
  hasFactory: fc.boolean(),
  hasTest: fc.boolean(),
});
const arbConfig = fc.record({ rollback: fc.boolean(), testAppPin: fc.boolean() });

describe("properties", () => {
  it("entry: decode(encode(e)) == e", () => {
    fc.assert(
      fc.property(arbEntry, (e) => {
        expect(decodeOtaEntry(encodeOtaEntry(e))).toEqual(e);
      }),
    );
  });

  it("otadata: decode(encode(x)) == x", () => {
    fc.assert(
      fc.property(arbEntry, arbEntry, (a, b) => {
        expect(decodeOtadata(encodeOtadata([a, b]))).toEqual([a, b]);
      }),
    );
  });

  it("random bytes of any length never crash the decoders: a value or a coded error", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 64 }),
          fc.uint8Array({ minLength: 0x1ff0, maxLength: 0x2010 }),
        ),
        (b) => {
          for (const f of [
            () => decodeOtadata(b),
            () => decodeOtaEntry(b),
            () => planBoot(b, layout(2), on),
          ]) {
            try {
              f();
            } catch (e) {
              expect(e).toBeInstanceOf(EspOtaError);
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("planBoot and describeOtadata never throw on any 0x2000-byte image; the plan is well formed", () => {
    fc.assert(
      fc.property(
        fc.oneof(arbOtadata, fc.uint8Array({ minLength: OTADATA_SIZE, maxLength: OTADATA_SIZE })),
        arbLayout,
        arbConfig,
        (b, lay, cfg) => {
          const plan = planBoot(b, lay, cfg);
          const exists = (i: number) =>
            i === FACTORY_INDEX
              ? lay.hasFactory
              : i === TEST_APP_INDEX
                ? lay.hasTest
                : i >= 0 && i < lay.otaSlotCount;
          expect(new Set(plan.attemptOrder).size).toBe(plan.attemptOrder.length);
          for (const i of plan.attemptOrder) expect(exists(i)).toBe(true);
          if (plan.startIndex !== INVALID_INDEX && exists(plan.startIndex)) {
            expect(plan.attemptOrder[0]).toBe(plan.startIndex);
          }
          if (!cfg.rollback) expect(plan.preWrites).toEqual([]);
          const r = describeOtadata(b, lay, cfg);
          expect(JSON.parse(JSON.stringify(r))).toEqual(r);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("setBootPartition then planBoot (rollback off) selects that slot", () => {
    const arbSeqEntry = fc.oneof(
      fc.constant(null as Spec),
      fc
        .record({
          // From 1: an active entry with seq 0 is the ESP-IDF quirk tested below ("an active seq
          // of 0 is kept as ESP-IDF keeps it"), where the slot asked for is not the one booted.
          // With 0 allowed this property failed about one run in 300 (both copies seq 0).
          seq: fc.integer({ min: 1, max: 0xffffffef }),
          state: arbState,
          bad: fc.boolean(),
        })
        .map(
          (r): Spec =>
            r.bad ? { seq: r.seq, state: r.state, crc: "bad" } : { seq: r.seq, state: r.state },
        ),
    );
    fc.assert(
      fc.property(
        arbSeqEntry,
        arbSeqEntry,
        fc
          .integer({ min: 1, max: 16 })
          .chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 0, max: n - 1 }))),
        fc.boolean(),
        fc.boolean(),
        (a, b, [n, slot], hasFactory, v5) => {
          const before = otadataOf(a, b);
          const r = setBootPartition(before, slot, n, { rollback: false, idfMajor: v5 ? 5 : 6 });
          expect(seqToSlot(r.write.entry.seq, n)).toBe(slot);
          const plan = planBoot(r.otadata, layout(n, hasFactory), off);
          expect(plan.startIndex).toBe(slot);
          expect(plan.attemptOrder[0]).toBe(slot);
          // The written copy differs from the input only in that sector.
          const other = r.write.copy === 0 ? 1 : 0;
          const s = other * OTADATA_SECTOR;
          expect(
            equalBytes(
              r.otadata.subarray(s, s + OTADATA_SECTOR),
              before.subarray(s, s + OTADATA_SECTOR),
            ),
          ).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("the new seq is the smallest one >= the active seq that selects the slot", () => {
    fc.assert(
      fc.property(
        // From 1: an active entry with seq 0 (valid CRC; only crafted otadata has one) is the
        // ESP-IDF quirk of the next test.
        fc.integer({ min: 1, max: 0xffffffef }),
        fc
          .integer({ min: 1, max: 16 })
          .chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 0, max: n - 1 }))),
        (seq, [n, slot]) => {
          const r = setBootPartition(otadataOf({ seq, state: VALID }, null), slot, n, {
            rollback: true,
          });
          const got = r.write.entry.seq;
          expect(seqToSlot(got, n)).toBe(slot);
          expect(got).toBeGreaterThanOrEqual(seq);
          expect(got - seq).toBeLessThan(n);
        },
      ),
    );
  });

  it("an active seq of 0 is kept as ESP-IDF keeps it: seq 0 again, which selects ota_0 whatever the slot asked", () => {
    // esp_rewrite_ota_data: while (seq > (slot + 1) % n + i * n) i++; with seq 0 the loop does
    // not run and the new seq is (slot + 1) % n, which is 0 for the last slot: (0 - 1) % n = 0.
    const r = setBootPartition(otadataOf({ seq: 0, state: VALID }, null), 2, 3, { rollback: true });
    expect(r.write.entry.seq).toBe(0);
    expect(seqToSlot(0, 3)).toBe(0);
  });

  it("otatoolSwitch agrees with setBootPartition on the seq when the slot changes", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 0xfffffff0 }),
        fc
          .integer({ min: 1, max: 16 })
          .chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 0, max: n - 1 }))),
        (seq, [n, slot]) => {
          const b = otadataOf({ seq, state: VALID }, null);
          fc.pre(seqToSlot(seq, n) !== slot);
          const t = otatoolSwitch(b, slot, n);
          const s = setBootPartition(b, slot, n, { rollback: false });
          expect(t.seq).toBe(s.write.entry.seq);
          expect(t.copy).toBe(s.write.copy);
        },
      ),
    );
  });

  it("rollback on: an entry promoted to PENDING_VERIFY is aborted and not selected at the next boot", () => {
    fc.assert(
      fc.property(arbOtadata, arbLayout, (b, lay) => {
        const p1 = planBoot(b, lay, on);
        const after1 = applyWrites(b, p1.preWrites);
        // After boot 1's rewrites the only PENDING_VERIFY entry is the one it selected.
        decodeOtadata(after1).forEach((e, i) => {
          if (e.state === PENDING_VERIFY) expect(i).toBe(p1.selectedCopy);
        });
        const promoted = p1.preWrites.find((w) => w.entry.state === PENDING_VERIFY);
        fc.pre(promoted !== undefined);
        const p2 = planBoot(after1, lay, on);
        expect(p2.preWrites).toContainEqual({
          copy: promoted!.copy,
          entry: { ...promoted!.entry, state: ABORTED },
        });
        expect(p2.selectedCopy).not.toBe(promoted!.copy);
      }),
    );
  });
});

// putU32le is used to build one odd vector: a copy whose seq bytes were torn by a power cut.
describe("torn write", () => {
  it("a half-written seq fails its CRC and the other copy boots", () => {
    const b = otadataOf({ seq: 1, state: VALID }, { seq: 2, state: NEW });
    putU32le(b, OTADATA_SECTOR, 0xffff0002);
    expect(planBoot(b, layout(2), on).startIndex).toBe(0);
  });
});
