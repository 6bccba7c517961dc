/** The users file and its scrypt hashes (src/auth/users-file.ts, docs/broker.md). */
import { scryptSync } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  authenticate,
  hashPassword,
  isUsername,
  parseHash,
  parseUsersFile,
  setUser,
  USERS_FILE_HEADER,
  verifyPassword,
} from "../../src/auth/users-file.js";

const FAST = { N: 1024, r: 8, p: 1 };
const enc = (s: string) => new TextEncoder().encode(s);

describe("password hashes", () => {
  it("is scrypt with the parameters and salt in the string (checked against node's scryptSync)", async () => {
    const encoded = await hashPassword("hunter2", FAST);
    expect(encoded).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
    const h = parseHash(encoded);
    if (!h.ok) throw new Error(h.reason);
    const expected = scryptSync("hunter2", h.value.salt, 32, { N: 1024, r: 8, p: 1 });
    expect(Buffer.from(h.value.key).equals(expected)).toBe(true);
    expect(await verifyPassword("hunter2", h.value)).toBe(true);
    expect(await verifyPassword("hunter3", h.value)).toBe(false);
  });

  it("salts: the same password hashes differently each time", async () => {
    expect(await hashPassword("same", FAST)).not.toBe(await hashPassword("same", FAST));
  });

  it.each([
    ["md5$abc", "expected"],
    [
      "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      "power of two",
    ],
    [
      "scrypt$2097152$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      "power of two",
    ],
    [
      "scrypt$1024$0$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      "r must",
    ],
    [
      "scrypt$1024$8$99$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      "p must",
    ],
    ["scrypt$1024$8$1$not base64!$AAAA", "base64"],
    ["scrypt$1024$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "too short"],
  ])("refuses %s", (s, reason) => {
    const h = parseHash(s);
    expect(h.ok).toBe(false);
    if (!h.ok) expect(h.reason).toContain(reason);
  });
});

describe("users file", () => {
  const HASH =
    "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

  it("reads username:hash lines, skipping comments and blank lines", () => {
    const r = parseUsersFile(`# site users\n\ngateway:${HASH}\r\n  operator:${HASH}  \n`);
    expect(r).toEqual({ ok: true, value: { gateway: HASH, operator: HASH } });
  });

  it("names the line of a malformed entry", () => {
    expect(parseUsersFile(`# x\ngateway:${HASH}\noperator\n`)).toEqual({
      ok: false,
      reason: "line 3: expected username:scrypt$N$r$p$salt$key[:client-ids]",
    });
    const bad = parseUsersFile(`gateway:scrypt$3$8$1$AA$AA\n`);
    expect(bad.ok === false && bad.reason).toMatch(/^line 1 \(user gateway\): N must/);
  });

  it("setUser replaces a user's line in place, keeps comments, and appends new users", () => {
    const other = HASH.replace("AAAAAAAAAAAAAAAAAAAAAA==", "BBBBBBBBBBBBBBBBBBBBBB==");
    const text = `# keep me\ngateway:${HASH}\n# and me\noperator:${HASH}\n`;
    expect(setUser(text, "gateway", other)).toBe(
      `# keep me\ngateway:${other}\n# and me\noperator:${HASH}\n`,
    );
    expect(setUser(text, "new", other)).toBe(`${text}new:${other}\n`);
    expect(setUser("", "first", other)).toBe(`${USERS_FILE_HEADER}\nfirst:${other}\n`);
    expect(() => setUser(text, "a:b", other)).toThrow(RangeError);
    expect(() => setUser(text, "a", "plain")).toThrow(RangeError);
  });

  it("parse(setUser(...)) has the user; random text never throws", () => {
    const name = fc.string({ minLength: 1, maxLength: 20, unit: "grapheme" }).filter(isUsername);
    fc.assert(
      fc.property(fc.array(name, { maxLength: 5 }), name, (others, user) => {
        let text = "";
        for (const o of others) text = setUser(text, o, HASH);
        const r = parseUsersFile(setUser(text, user, HASH));
        expect(r.ok && r.value[user]).toBe(HASH);
      }),
    );
    fc.assert(
      fc.property(fc.string(), (s) => {
        parseUsersFile(s);
      }),
    );
  });
});

describe("the CONNECT decision", () => {
  it("follows MQTT 3.1.1's return codes", async () => {
    const h = parseHash(await hashPassword("pw", FAST));
    if (!h.ok) throw new Error(h.reason);
    const users = { gw: h.value };
    expect(await authenticate(undefined, false, undefined, undefined)).toEqual({ ok: true });
    expect(await authenticate(users, false, "gw", enc("pw"))).toEqual({ ok: true });
    expect(await authenticate(users, false, "gw", enc("px"))).toMatchObject({ returnCode: 4 });
    expect(await authenticate(users, false, "gw", undefined)).toMatchObject({ returnCode: 4 });
    expect(await authenticate(users, true, "nobody", enc("pw"))).toMatchObject({ returnCode: 4 });
    // "constructor" and friends are not users (the table has no prototype to inherit them from).
    expect(await authenticate(users, false, "constructor", enc(""))).toMatchObject({
      returnCode: 4,
    });
    expect(await authenticate(users, false, undefined, undefined)).toMatchObject({ returnCode: 5 });
    expect(await authenticate(users, true, undefined, undefined)).toEqual({ ok: true });
  });
});
