/**
 * The users file and its password hashes, shared by the embedded broker (broker/broker.ts, `esp-ota
 * broker passwd`) and the operator console (src/console/users.ts). Pure except for node:crypto:
 * parsing and editing take and return strings, so every program shares one definition.
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
    // Neither a username nor a hash holds a colon: the first one ends the name.
    const colon = line.indexOf(":");
    const name = line.slice(0, Math.max(colon, 0));
    if (colon < 0 || !isUsername(name))
      return {
        ok: false,
        reason: `line ${i + 1}: expected username:scrypt$N$r$p$salt$key[:client-ids]`,
      };
    const e = parseUserEntry(line.slice(colon + 1));
    if (!e.ok) return { ok: false, reason: `line ${i + 1} (user ${name}): ${e.reason}` };
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
    const fields = t.split(":");
    const isUser = !t.startsWith("#") && fields.length > 1 && fields[0] === username;
    if (!isUser) out.push(line);
    else if (!found) {
      // A new password keeps the user's client ids.
      out.push(fields.length > 2 ? `${entry}:${fields.slice(2).join(":")}` : entry);
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
  "# esp-ota broker users: username:scrypt$N$r$p$salt$key[:client-id,prefix*,...] (edit with `esp-ota broker passwd`; docs/broker.md)";

// ---------------------------------------------------------------------------------------------
// Client ids bound to users (issue 12, defect 10)

/**
 * A users-file value: the hash, then optionally `:` and the client ids the user may connect
 * with, comma-separated; an entry ending in `*` is a prefix. Without the list, defaultClientIds.
 */
export interface UserEntry {
  hash: ScryptHash;
  /** Exact ids and prefixes (ending in `*`); undefined: defaultClientIds(username). */
  clientIds?: readonly string[];
}

export function parseUserEntry(value: string): Parsed<UserEntry> {
  const colon = value.indexOf(":");
  const h = parseHash(colon < 0 ? value : value.slice(0, colon));
  if (!h.ok) return h;
  if (colon < 0) return { ok: true, value: { hash: h.value } };
  const ids = value
    .slice(colon + 1)
    .split(",")
    .map((x) => x.trim());
  // MQTT 3.1.1 §3.1.3.1: a client id is 1..23 characters there, but brokers allow up to 65535
  // bytes; a pattern longer than 256 is a mistake, not an id.
  const bad = ids.find(
    (x) =>
      x === "" ||
      x === "*" ||
      x.length > 256 ||
      x.indexOf("*") !== (x.endsWith("*") ? x.length - 1 : -1) ||
      // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point.
      /[\u0000-\u001f\u007f:]/.test(x),
  );
  if (bad !== undefined)
    return {
      ok: false,
      reason: `client ids: ${JSON.stringify(bad.slice(0, 40))} is not a client id or a prefix ending in * (a lone * would let the user take any gateway's session)`,
    };
  return { ok: true, value: { hash: h.value, clientIds: ids } };
}

/**
 * The client ids a user may connect with when the users file lists none: the username itself,
 * `<username>-...`, and `esp-ota-gw-<username>` (the agent's default client id when the
 * gateway's broker user is named after its gatewayId, the convention docs/broker.md asks for).
 */
export function defaultClientIds(username: string): string[] {
  return [username, `${username}-*`, `esp-ota-gw-${username}`];
}

/**
 * The CLI tools' ids (`esp-ota-<tool>-<host>-<pid>-<random>`, src/cli/broker-options.ts):
 * random, clean sessions that hold nothing to take over, so any user may use them. Gateway ids
 * (`esp-ota-gw-...`) are never in this space.
 */
function isToolClientId(id: string): boolean {
  return /^esp-ota-[a-z][a-z0-9-]*$/.test(id) && !id.startsWith("esp-ota-gw-");
}

function matches(id: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => (p.endsWith("*") ? id.startsWith(p.slice(0, -1)) : id === p));
}

/**
 * Whether `clientId` may be used by `username` (undefined: an anonymous client). A user may use
 * their own ids (the users file's list, else defaultClientIds) and the CLI tools' random ids;
 * an anonymous client may use any id no user's list claims. Without this any logged-in user,
 * or an anonymous one, could CONNECT with a gateway's client id: MQTT makes the broker
 * disconnect the gateway and hand the newcomer its persistent session and queued notices
 * (MQTT 3.1.1 §3.1.4-2).
 */
export function clientIdAllowed(
  users: Readonly<Record<string, UserEntry>>,
  username: string | undefined,
  clientId: string,
): boolean {
  if (username !== undefined) {
    const entry = Object.hasOwn(users, username) ? users[username] : undefined;
    if (entry === undefined) return false;
    return (
      matches(clientId, entry.clientIds ?? defaultClientIds(username)) || isToolClientId(clientId)
    );
  }
  if (isToolClientId(clientId)) return true;
  for (const [name, entry] of Object.entries(users))
    if (matches(clientId, entry.clientIds ?? defaultClientIds(name))) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// A bound on concurrent password checks (issue 12, defect 11)

/**
 * Password checks at once. scrypt runs on libuv's thread pool (4 threads by default), which
 * LevelDB persistence and fs share: 200 CONNECTs with passwords, all checked at once, queued a
 * real login behind them, from 170 ms to 6 s. Two at a time leave half the pool to the rest.
 */
export const MAX_CONCURRENT_CHECKS = 2;
/**
 * Checks waiting for a turn; a CONNECT beyond it is refused at once (CONNACK 3, server
 * unavailable: clients retry). 16 waiting at ~50 ms a check (DEFAULT_SCRYPT) is at most ~0.4 s
 * of wait for the last one, and a flood cannot make the broker hold more.
 */
export const MAX_WAITING_CHECKS = 16;

/** A semaphore over password checks with a bounded queue. */
export class PasswordGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  /** The most checks that ever ran at once (for tests and the log). */
  peak = 0;
  /** CONNECTs refused because the queue was full. */
  refused = 0;

  constructor(
    readonly concurrency = MAX_CONCURRENT_CHECKS,
    readonly queueLimit = MAX_WAITING_CHECKS,
    private readonly check: (
      password: string,
      hash: ScryptHash,
    ) => Promise<boolean> = verifyPassword,
  ) {
    if (!Number.isSafeInteger(concurrency) || concurrency < 1)
      throw new RangeError("concurrency must be a positive integer");
    if (!Number.isSafeInteger(queueLimit) || queueLimit < 0)
      throw new RangeError("queueLimit must be a non-negative integer");
  }

  /** The check's result, or "busy" at once when `concurrency` run and `queueLimit` wait. */
  async verify(password: string, hash: ScryptHash): Promise<boolean | "busy"> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.queueLimit) {
        this.refused++;
        return "busy";
      }
      await new Promise<void>((turn) => this.waiting.push(turn));
    }
    this.running++;
    this.peak = Math.max(this.peak, this.running);
    try {
      return await this.check(password, hash);
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

export type AuthDecision =
  | { ok: true }
  | { ok: false; returnCode: 4 | 5; reason: "bad username or password" | "not authorized" }
  | { ok: false; returnCode: 3; reason: "too many logins at once" };

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
  /** Bounds the checks running and waiting (the broker's); absent: checked at once. */
  gate?: PasswordGate,
): Promise<AuthDecision> {
  if (users === undefined) return { ok: true };
  if (username === undefined) {
    return allowAnonymous ? { ok: true } : { ok: false, returnCode: 5, reason: "not authorized" };
  }
  const hash = Object.hasOwn(users, username) ? users[username]! : undefined;
  const given = new TextDecoder().decode(password ?? new Uint8Array());
  const match = gate
    ? await gate.verify(given, hash ?? DECOY_HASH)
    : await verifyPassword(given, hash ?? DECOY_HASH);
  if (match === "busy") return { ok: false, returnCode: 3, reason: "too many logins at once" };
  return match && hash !== undefined && password !== undefined
    ? { ok: true }
    : { ok: false, returnCode: 4, reason: "bad username or password" };
}
