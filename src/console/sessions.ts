/**
 * The console's login sessions (docs/console.md "Sessions"): a random id in an HttpOnly,
 * SameSite=Strict cookie, and per session a random CSRF token the page sends with every action
 * (the `x-csrf-token` header). A cross-site form can neither read the token nor send the header,
 * and SameSite=Strict keeps the cookie off cross-site requests as a second line. In memory: a
 * restarted console asks everyone to log in again, which is the safe side. The clock is
 * injected; nothing here touches the network.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Role } from "./users.js";

export interface Session {
  id: string;
  user: string;
  role: Role;
  csrf: string;
  expiresAt: number;
}

/** 12 hours: one operator shift; a session is not renewed by use (a stolen cookie ages out). */
export const SESSION_TTL_MS = 12 * 3600_000;
/** Sessions kept at most; the oldest goes first (a login flood cannot grow memory). */
export const MAX_SESSIONS = 1000;

const token = () => randomBytes(24).toString("base64url");

export class Sessions {
  private readonly byId = new Map<string, Session>();

  constructor(
    private readonly clock: () => number = Date.now,
    private readonly ttlMs = SESSION_TTL_MS,
  ) {}

  create(user: string, role: Role): Session {
    const s: Session = {
      id: token(),
      user,
      role,
      csrf: token(),
      expiresAt: this.clock() + this.ttlMs,
    };
    if (this.byId.size >= MAX_SESSIONS) {
      const oldest = this.byId.keys().next().value;
      if (oldest !== undefined) this.byId.delete(oldest);
    }
    this.byId.set(s.id, s);
    return s;
  }

  get(id: string | undefined): Session | undefined {
    if (id === undefined) return undefined;
    const s = this.byId.get(id);
    if (!s) return undefined;
    if (this.clock() >= s.expiresAt) {
      this.byId.delete(id);
      return undefined;
    }
    return s;
  }

  delete(id: string | undefined): void {
    if (id !== undefined) this.byId.delete(id);
  }

  get size(): number {
    return this.byId.size;
  }
}

/** The CSRF check: the header equals the session's token (constant time). */
export function csrfMatches(s: Session, header: unknown): boolean {
  if (typeof header !== "string") return false;
  const a = Buffer.from(header);
  const b = Buffer.from(s.csrf);
  return a.length === b.length && timingSafeEqual(a, b);
}
