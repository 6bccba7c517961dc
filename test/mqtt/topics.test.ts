/** The topic tree (src/mqtt/topics.ts): builders, parseTopic, prefixes, filter matching. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checkPrefix,
  DEFAULT_PREFIX,
  isTopicId,
  matchesFilter,
  parseTopic,
  type TopicKind,
  topics,
} from "../../src/mqtt/topics.js";
import { codeOf } from "../helpers/cli.js";

const topicId = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
const prefix = fc
  .array(fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/), { minLength: 1, maxLength: 4 })
  .map((levels) => levels.join("/"));

const BUILDERS: readonly [TopicKind, (t: ReturnType<typeof topics>, id: string) => string][] = [
  ["desired", (t, id) => t.desired(id)],
  ["status", (t, id) => t.status(id)],
  ["progress", (t, id) => t.progress(id)],
  ["log", (t, id) => t.log(id)],
  ["presence", (t, id) => t.presence(id)],
  ["inventory", (t, id) => t.inventory(id)],
  ["commands", (t, id) => t.commands(id)],
  ["replies", (t, id) => t.replies(id)],
  ["rollout-state", (t, id) => t.rolloutState(id)],
  ["rollout-control", (t, id) => t.rolloutControl(id)],
];

describe("topics", () => {
  it("lays out the contract's tree under the default prefix", () => {
    const t = topics();
    expect(t.prefix).toBe(DEFAULT_PREFIX);
    expect(t.desired("d1")).toBe("esp-ota/v1/devices/d1/desired");
    expect(t.status("d1")).toBe("esp-ota/v1/devices/d1/status");
    expect(t.progress("d1")).toBe("esp-ota/v1/devices/d1/progress");
    expect(t.log("d1")).toBe("esp-ota/v1/devices/d1/log");
    expect(t.presence("gw")).toBe("esp-ota/v1/gateways/gw/presence");
    expect(t.inventory("gw")).toBe("esp-ota/v1/gateways/gw/inventory");
    expect(t.commands("gw")).toBe("esp-ota/v1/gateways/gw/commands");
    expect(t.replies("c1")).toBe("esp-ota/v1/replies/c1");
    expect(t.rolloutState("r1")).toBe("esp-ota/v1/rollouts/r1/state");
    expect(t.rolloutControl("r1")).toBe("esp-ota/v1/rollouts/r1/control");
    expect([t.allDesired, t.allStatus, t.allPresence, t.allInventory, t.allRollouts]).toEqual([
      "esp-ota/v1/devices/+/desired",
      "esp-ota/v1/devices/+/status",
      "esp-ota/v1/gateways/+/presence",
      "esp-ota/v1/gateways/+/inventory",
      "esp-ota/v1/rollouts/+/state",
    ]);
  });

  it("keeps every topic within AWS IoT Core's 7 levels with the default prefix", () => {
    const t = topics();
    for (const [, build] of BUILDERS)
      expect(build(t, "x").split("/").length).toBeLessThanOrEqual(5);
  });

  it("parseTopic inverts every builder (property)", () => {
    fc.assert(
      fc.property(prefix, topicId, fc.constantFrom(...BUILDERS), (p, id, [kind, build]) => {
        const t = topics(p);
        expect(parseTopic(p, build(t, id))).toEqual({ kind, id });
        // Each wildcard filter matches what its builder makes.
        if (kind === "desired") expect(matchesFilter(t.allDesired, build(t, id))).toBe(true);
        if (kind === "status") expect(matchesFilter(t.allStatus, build(t, id))).toBe(true);
      }),
    );
  });

  it("parseTopic rejects foreign topics", () => {
    const p = DEFAULT_PREFIX;
    for (const topic of [
      "esp-ota/v1",
      "esp-ota/v1/",
      "esp-ota/v2/devices/d1/status",
      "other/esp-ota/v1/devices/d1/status",
      "esp-ota/v1/devices/d1",
      "esp-ota/v1/devices/d1/status/extra",
      "esp-ota/v1/devices/d1/inventory",
      "esp-ota/v1/gateways/gw/status",
      "esp-ota/v1/devices/+/status",
      "esp-ota/v1/devices/#",
      "esp-ota/v1/devices//status",
      "esp-ota/v1/devices/d 1/status",
      `esp-ota/v1/devices/${"a".repeat(65)}/status`,
      "esp-ota/v1/replies",
      "esp-ota/v1/replies/c1/x",
      "esp-ota/v1/rollouts/r1/desired",
      "esp-ota/v1/devices/__proto__/constructor",
      "esp-ota/v1/x/y/toString",
    ]) {
      expect(parseTopic(p, topic), topic).toBeUndefined();
    }
    // Near misses of real topics: one level more or less, another area, another prefix.
    const mutations: ((topic: string, p: string) => string)[] = [
      (topic) => `${topic}/x`,
      (topic) => topic.split("/").slice(0, -1).join("/"),
      (topic, p) => {
        const [area, ...rest] = topic.slice(p.length + 1).split("/");
        return [p, area === "devices" ? "gateways" : "devices", ...rest].join("/");
      },
      (topic, p) => `${p}x${topic.slice(p.length)}`,
      (topic, p) => `x/${p}${topic.slice(p.length)}`,
    ];
    fc.assert(
      fc.property(
        prefix,
        topicId,
        fc.constantFrom(
          ...BUILDERS.filter(
            ([k]) => !["replies", "presence", "inventory", "commands"].includes(k),
          ),
        ),
        fc.constantFrom(...mutations),
        (p, id, [, build], mutate) => {
          expect(parseTopic(p, mutate(build(topics(p), id), p))).toBeUndefined();
        },
      ),
    );
  });

  it("checkPrefix refuses what cannot prefix a topic name, with RangeError", () => {
    expect(checkPrefix("site-a/esp-ota/v1")).toBe("site-a/esp-ota/v1");
    for (const bad of [
      "",
      "a/+/b",
      "a/#",
      "/a",
      "a/",
      "a//b",
      "$SYS/x",
      "a\u0000b",
      "x".repeat(129),
    ]) {
      expect(() => checkPrefix(bad), JSON.stringify(bad)).toThrow(RangeError);
    }
    expect(() => topics("a/#")).toThrow(RangeError);
  });

  it("isTopicId and the builders agree; a bad id is E_MQTT_TOPIC", () => {
    expect(isTopicId("aabbccddeeff")).toBe(true);
    expect(isTopicId("a".repeat(64))).toBe(true);
    for (const bad of ["", "a".repeat(65), "a/b", "a+b", "a#", "a b", "é"]) {
      expect(isTopicId(bad), bad).toBe(false);
      expect(codeOf(() => topics().status(bad))).toBe("E_MQTT_TOPIC");
    }
  });

  it("matchesFilter follows MQTT 5 §4.7", () => {
    const rows: [string, string, boolean][] = [
      ["a/+/c", "a/b/c", true],
      ["a/+/c", "a/b/d", false],
      ["a/+/c", "a/b/c/d", false],
      ["a/#", "a", true],
      ["a/#", "a/b/c", true],
      ["#", "a/b", true],
      ["#", "$SYS/x", false],
      ["+/x", "$SYS/x", false],
      ["$SYS/#", "$SYS/x", true],
      ["a/b", "a/b", true],
      ["a/b", "a", false],
      ["+", "", true],
      ["a/+", "a/", true],
    ];
    for (const [filter, topic, want] of rows) {
      expect(matchesFilter(filter, topic), `${filter} ~ ${topic}`).toBe(want);
    }
  });
});
