/** `host:port` addresses of the chaos proxy's command line, as plain values. */

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export type AddressResult =
  | { readonly ok: true; readonly value: HostPort }
  | { readonly ok: false; readonly code: "E_USAGE"; readonly reason: string };

/**
 * `host:port`, `[v6]:port`, `:port` or `port` (the last two on `defaultHost`). Port 0 asks the
 * system for a free port, so only a listening address should allow it (`allowZero`).
 */
export function parseHostPort(
  text: string,
  defaultHost: string,
  allowZero: boolean,
): AddressResult {
  const s = text.trim();
  const m =
    /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(s) ?? /^()()(\d{1,5})$/.exec(s);
  if (!m) return { ok: false, code: "E_USAGE", reason: `"${text}" is not HOST:PORT` };
  const host = m[1] || m[2] || defaultHost;
  const port = Number(m[3]);
  if (port > 65535 || (port === 0 && !allowZero))
    return {
      ok: false,
      code: "E_USAGE",
      reason: `"${text}": port must be ${allowZero ? 0 : 1}-65535`,
    };
  return { ok: true, value: { host, port } };
}

/** The inverse: brackets around an IPv6 host so the port stays readable. */
export function formatHostPort(a: HostPort): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
