/**
 * The broker's users file and its password hashes. Pure except for node:crypto: parsing and
 * editing take and return strings, so `broker passwd` and the broker share one definition.
 *
 * File format (docs/broker.md): one `username:hash` per line, `#` comments and blank lines kept
 * as they are, like mosquitto_passwd's file (whose hashes are a different algorithm, so the files
 * are not interchangeable). A hash is `scrypt$N$r$p$salt$key` with salt and key in base64:
 * scrypt (RFC 7914) because it is in node:crypto and memory-hard, and the parameters travel in
 * the string so they can be raised later without invalidating old entries.
 */
import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from "node:crypto";

/**
 * N = 2^14, r = 8, p = 1: RFC 7914 §2's interactive-login figures (16 MiB, ~50 ms per check on
 * one core). The broker checks a password once per CONNECT, off the event loop (libuv pool).
 */
export const DEFAULT_SCRYPT = { N: 16384, r: 8, p: 1 } as const;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Upper bounds on parameters read from a file, so a typo cannot ask for gigabytes per CONNECT. */
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;

export interface ScryptHash {
  N: number;
  r: number;
  p: number;
  salt: Uint8Array;
  key: Uint8Array;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/**
 * A username usable in the file: 1..256 chars, no `:` (the separator) or control characters, not
 * starting with `#` (a comment) and no surrounding spaces (lines are trimmed).
 */
export function isUsername(name: string): boolean {
  return (
    name.length > 0 &&
    name.length <= 256 &&
    name === name.trim() &&
    !name.startsWith("#") &&
    // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point.
    !/[:\u0000-\u001f\u007f]/.test(name)
  );
}

export function parseHash(s: string): Parsed<ScryptHash> {
  const parts = s.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt")
    return { ok: false, reason: "expected scrypt$N$r$p$salt$key" };
  const [N, r, p] = parts.slice(1, 4).map((x) => (/^\d{1,8}$/.test(x!) ? Number(x) : Number.NaN));
  if (!N || N < 2 || N > MAX_N || (N & (N - 1)) !== 0)
    return { ok: false, reason: `N must be a power of two from 2 to ${MAX_N}` };
  if (!r || r > MAX_R) return { ok: false, reason: `r must be 1..${MAX_R}` };
  if (!p || p > MAX_P) return { ok: false, reason: `p must be 1..${MAX_P}` };
  const b64 = /^[A-Za-z0-9+/]+={0,2}$/;
  if (!b64.test(parts[4]!) || !b64.test(parts[5]!))
    return { ok: false, reason: "salt and key must be base64" };
  const salt = new Uint8Array(Buffer.from(parts[4]!, "base64"));
  const key = new Uint8Array(Buffer.from(parts[5]!, "base64"));
  if (salt.length < 8 || key.length < 16)
    return { ok: false, reason: "salt (at least 8 bytes) or key (at least 16 bytes) too short" };
  return { ok: true, value: { N, r: r!, p: p!, salt, key } };
}

export function formatHash(h: ScryptHash): string {
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
  return `scrypt$${h.N}$${h.r}$${h.p}$${b64(h.salt)}$${b64(h.key)}`;
}

function derive(
  password: string,
  salt: Uint8Array,
  h: Omit<ScryptHash, "salt" | "key">,
  len: number,
) {
  // scrypt needs 128·N·r bytes; Node refuses above maxmem (32 MiB default), so size it to fit.
  const opts: ScryptOptions = { N: h.N, r: h.r, p: h.p, maxmem: 256 * h.N * h.r + (1 << 20) };
  return new Promise<Uint8Array>((resolve, reject) =>
    scrypt(password.normalize("NFC"), salt, len, opts, (err, key) =>
      err ? reject(err) : resolve(new Uint8Array(key)),
    ),
  );
}

/** A fresh hash of `password` with a random salt (the string to store in the users file). */
export async function hashPassword(
  password: string,
  params: { N: number; r: number; p: number } = DEFAULT_SCRYPT,
): Promise<string> {
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const key = await derive(password, salt, params, KEY_BYTES);
  const encoded = formatHash({ ...params, salt, key });
  // Round-trip through the parser so we never write a hash the broker would refuse.
  if (!parseHash(encoded).ok) throw new RangeError(`scrypt parameters out of range: ${encoded}`);
  return encoded;
}

/** Constant-time comparison of a derived key with the stored one. */
export async function verifyPassword(password: string, hash: ScryptHash): Promise<boolean> {
  const key = await derive(password, hash.salt, hash, hash.key.length);
  return timingSafeEqual(key, hash.key);
}

/**
 * A hash that matches no password, checked for unknown usernames so a refusal takes as long
 * whether or not the user exists (no user enumeration by timing).
 */
export const DECOY_HASH: ScryptHash = {
  ...DEFAULT_SCRYPT,
  salt: new Uint8Array(SALT_BYTES),
  key: new Uint8Array(KEY_BYTES).fill(0xff),
};

/** Users file text -> username -> hash string (each hash checked). Later lines override earlier. */
export function parseUsersFile(text: string): Parsed<Record<string, string>> {
  const users: Record<string, string> = Object.create(null);
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const colon = line.lastIndexOf(":");
    const name = line.slice(0, Math.max(colon, 0));
    if (colon < 0 || !isUsername(name))
      return { ok: false, reason: `line ${i + 1}: expected username:scrypt$N$r$p$salt$key` };
    const h = parseHash(line.slice(colon + 1));
    if (!h.ok) return { ok: false, reason: `line ${i + 1} (user ${name}): ${h.reason}` };
    users[name] = line.slice(colon + 1);
  }
  return { ok: true, value: users };
}

/** Users file text with `username`'s line replaced (in place) or appended; comments kept. */
export function setUser(text: string, username: string, hash: string): string {
  if (!isUsername(username)) throw new RangeError(`invalid username ${JSON.stringify(username)}`);
  if (!parseHash(hash).ok) throw new RangeError("not a scrypt hash string");
  const entry = `${username}:${hash}`;
  const lines = text === "" ? [] : text.replace(/\r?\n$/, "").split(/\r?\n/);
  let found = false;
  const out: string[] = [];
  for (const line of lines) {
    const t = line.trim();
    const isUser = !t.startsWith("#") && t.slice(0, Math.max(t.lastIndexOf(":"), 0)) === username;
    if (!isUser) out.push(line);
    else if (!found) {
      out.push(entry);
      found = true;
    }
  }
  if (!found) {
    if (out.length === 0) out.push(USERS_FILE_HEADER);
    out.push(entry);
  }
  return `${out.join("\n")}\n`;
}

export const USERS_FILE_HEADER =
  "# esp-ota broker users: username:scrypt$N$r$p$salt$key (edit with `esp-ota broker passwd`; docs/broker.md)";

export type AuthDecision =
  | { ok: true }
  | { ok: false; returnCode: 4 | 5; reason: "bad username or password" | "not authorized" };

/**
 * The CONNECT decision (MQTT 3.1.1 §3.2.2.3 return codes): no users configured admits everyone;
 * otherwise no username is admitted only with allowAnonymous (5 = not authorized), and a
 * username must exist with a matching password (4 = bad user name or password; unknown users
 * cost one scrypt like known ones).
 */
export async function authenticate(
  users: Readonly<Record<string, ScryptHash>> | undefined,
  allowAnonymous: boolean,
  username: string | undefined,
  password: Uint8Array | undefined,
): Promise<AuthDecision> {
  if (users === undefined) return { ok: true };
  if (username === undefined) {
    return allowAnonymous ? { ok: true } : { ok: false, returnCode: 5, reason: "not authorized" };
  }
  const hash = Object.hasOwn(users, username) ? users[username]! : undefined;
  const given = new TextDecoder().decode(password ?? new Uint8Array());
  const match = await verifyPassword(given, hash ?? DECOY_HASH);
  return match && hash !== undefined && password !== undefined
    ? { ok: true }
    : { ok: false, returnCode: 4, reason: "bad username or password" };
}
