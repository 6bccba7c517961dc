/**
 * Who may use the console (docs/console.md "Users"): a users file in the broker's format, one
 * `username:scrypt$N$r$p$salt$key:role` per line with role `operator` (may act) or `viewer`
 * (may watch), or a bearer token from an environment variable (an operator). Pure but for the
 * scrypt check (node:crypto, off the event loop).
 *
 * The hash format and its check are the broker's (src/auth/users-file.ts parseHash,
 * verifyPassword): one definition of the format, so `esp-ota broker passwd` makes the hashes for
 * both.
 */
import { timingSafeEqual } from "node:crypto";
import {
  DECOY_HASH,
  isUsername,
  PasswordGate,
  parseHash,
  type ScryptHash,
} from "../auth/users-file.js";

export const ROLES = ["operator", "viewer"] as const;
export type Role = (typeof ROLES)[number];

export interface ConsoleUser {
  name: string;
  role: Role;
  hash: ScryptHash;
}

export type UsersParsed =
  | { ok: true; users: Map<string, ConsoleUser> }
  | { ok: false; reason: string };

/** Users file text -> users. A line without a role is refused: a role is a decision, not a default. */
export function parseConsoleUsers(text: string): UsersParsed {
  const users = new Map<string, ConsoleUser>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [name, hash, role, ...rest] = line.split(":");
    const where = `line ${i + 1}`;
    if (name === undefined || !isUsername(name) || hash === undefined || rest.length > 0)
      return { ok: false, reason: `${where}: expected username:scrypt$N$r$p$salt$key:role` };
    const h = parseHash(hash);
    if (!h.ok) return { ok: false, reason: `${where} (user ${name}): ${h.reason}` };
    if (role !== "operator" && role !== "viewer")
      return {
        ok: false,
        reason: `${where} (user ${name}): the role must be operator or viewer, not ${JSON.stringify((role ?? "").slice(0, 40))}`,
      };
    users.set(name, { name, role, hash: h.value });
  }
  if (users.size === 0) return { ok: false, reason: "the file lists no user" };
  return { ok: true, users };
}

/** The user a login names, undefined for a wrong name or password, "busy" when too many run. */
export type Authenticator = (
  username: string,
  password: string,
) => Promise<{ name: string; role: Role } | undefined | "busy">;

/** Longest password or token checked; anything longer is refused before scrypt runs. */
export const MAX_SECRET = 1024;

/**
 * A user's check: an unknown name costs one scrypt like a known one (DECOY_HASH), so a refusal
 * takes as long whether the user exists or not (no user enumeration by timing). The checks run
 * through the broker's PasswordGate (2 at once, 16 waiting, the rest "busy"), so a flood of
 * logins cannot take the libuv pool the MQTT client and the files share.
 */
export function usersAuthenticator(
  users: ReadonlyMap<string, ConsoleUser>,
  gate = new PasswordGate(),
): Authenticator {
  return async (username, password) => {
    if (password.length > MAX_SECRET || username.length > 256) return undefined;
    const u = users.get(username);
    const ok = await gate.verify(password, u?.hash ?? DECOY_HASH);
    if (ok === "busy") return "busy";
    return ok && u ? { name: u.name, role: u.role } : undefined;
  };
}

/**
 * The token's check (`--token-env VAR`): whoever holds it is an operator named `token`. Compared
 * in constant time; the username is ignored (the login form sends the token as the password).
 */
export function tokenAuthenticator(token: string): Authenticator {
  if (token.length < 16)
    throw new RangeError("tokenAuthenticator: the token must be at least 16 characters");
  const want = Buffer.from(token, "utf8");
  return async (_username, password) => {
    const got = Buffer.from(password, "utf8");
    if (got.length !== want.length || got.length > MAX_SECRET) return undefined;
    return timingSafeEqual(got, want) ? { name: "token", role: "operator" } : undefined;
  };
}
