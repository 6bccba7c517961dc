/**
 * The console's HTTP side without a browser: who may do what (401 without a session, 403 for a
 * viewer, without the CSRF token, from another origin), the users file, the probes and the
 * metrics. Fast: one broker and one console for the file.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashPassword } from "../../src/auth/users-file.js";
import { Sessions } from "../../src/console/sessions.js";
import { parseConsoleUsers, tokenAuthenticator } from "../../src/console/users.js";
import { startWorld, type World } from "./world.js";

async function login(url: string, username: string, password: string) {
  const r = await fetch(`${url}/api/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = (await r.json()) as { csrf?: string; role?: string };
  return { status: r.status, body, cookie: r.headers.get("set-cookie") ?? "" };
}

describe("console server", () => {
  let w: World;
  beforeAll(async () => {
    w = await startWorld({
      d1: [{ final: "succeeded", hold: "queued" }],
      d2: [{ final: "succeeded" }],
    });
  });
  afterAll(async () => {
    await w?.close();
  });

  it("serves the page with a CSP that allows only its own script; the page has no inline script", async () => {
    const r = await fetch(`${w.url}/`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-security-policy")).toContain("script-src 'self'");
    const html = await r.text();
    expect(html).not.toMatch(/<script>(?!<\/script>)/);
    expect(html).toContain('<script src="/app.js" defer></script>');
    const js = await (await fetch(`${w.url}/app.js`)).text();
    // Network text never becomes markup: the script has no innerHTML / outerHTML / insertAdjacentHTML.
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  it("nothing but the probes without a session; a wrong password is refused", async () => {
    for (const path of ["/api/session", "/api/events", "/api/devices/d1"])
      expect((await fetch(`${w.url}${path}`)).status, path).toBe(401);
    expect((await fetch(`${w.url}/api/rollouts/r1/abort`, { method: "POST" })).status).toBe(401);
    expect((await login(w.url, "olga", "wrong")).status).toBe(401);
    expect((await login(w.url, "nobody", "olga-pass")).status).toBe(401);
  });

  it("the session cookie is HttpOnly and SameSite=Strict; an action needs the CSRF token and this origin", async () => {
    const o = await login(w.url, "olga", "olga-pass");
    expect(o.status).toBe(200);
    expect(o.cookie).toMatch(/HttpOnly/);
    expect(o.cookie).toMatch(/SameSite=Strict/);
    const cookie = o.cookie.split(";")[0]!;
    const post = (headers: Record<string, string>) =>
      fetch(`${w.url}/api/rollouts/nope/pause`, {
        method: "POST",
        headers: { "content-type": "application/json", cookie, ...headers },
        body: "{}",
      });
    expect((await post({})).status).toBe(403);
    expect((await post({ "x-csrf-token": "x".repeat(32) })).status).toBe(403);
    expect(
      (await post({ "x-csrf-token": o.body.csrf!, origin: "http://evil.example" })).status,
    ).toBe(403);
    // With both, the request reaches the rollout code: no such rollout.
    const ok = await post({ "x-csrf-token": o.body.csrf!, origin: w.url });
    expect(ok.status).toBe(404);
    expect(((await ok.json()) as { error: string }).error).toBe("E_ROLLOUT_NOT_FOUND");
  });

  it("a viewer reads everything and is refused every action (403), start included", async () => {
    const v = await login(w.url, "victor", "victor-pass");
    expect(v.body.role).toBe("viewer");
    const headers = {
      "content-type": "application/json",
      cookie: v.cookie.split(";")[0]!,
      "x-csrf-token": v.body.csrf!,
    };
    expect((await fetch(`${w.url}/api/devices/d1`, { headers })).status).toBe(200);
    for (const a of ["pause", "resume", "abort", "retry-failed", "next-wave"]) {
      const r = await fetch(`${w.url}/api/rollouts/r1/${a}`, {
        method: "POST",
        headers,
        body: "{}",
      });
      expect(r.status, a).toBe(403);
    }
    const start = await fetch(`${w.url}/api/rollouts`, {
      method: "POST",
      headers,
      body: JSON.stringify({ release: w.releaseDir }),
    });
    expect(start.status).toBe(403);
    expect((await fetch(`${w.url}/api/release?dir=${w.releaseDir}`, { headers })).status).toBe(403);
  });

  it("/metrics counts a rollout's devices by state as it moves; /healthz and /readyz", async () => {
    const o = await login(w.url, "olga", "olga-pass");
    const headers = {
      "content-type": "application/json",
      cookie: o.cookie.split(";")[0]!,
      "x-csrf-token": o.body.csrf!,
    };
    const r = await fetch(`${w.url}/api/rollouts`, {
      method: "POST",
      headers,
      body: JSON.stringify({ release: w.releaseDir, waves: "100", id: "m1" }),
    });
    expect(r.status).toBe(200);
    const series = async (state: string) => {
      const text = await (await fetch(`${w.url}/metrics`)).text();
      const m = new RegExp(
        `^esp_ota_console_rollout_devices\\{rollout="m1",state="${state}"\\} (\\d+)$`,
        "m",
      ).exec(text);
      return m ? Number(m[1]) : undefined;
    };
    const until = async (f: () => Promise<boolean>) => {
      for (let i = 0; i < 500 && !(await f()); i++) await new Promise((res) => setTimeout(res, 10));
    };
    await until(async () => (await series("succeeded")) === 1);
    expect(await series("succeeded")).toBe(1);
    expect(await series("notified")).toBe(1); // d1 is held at queued
    w.gateway.go("d1");
    await until(async () => (await series("succeeded")) === 2);
    expect(await series("succeeded")).toBe(2);
    expect(await series("notified")).toBe(0);
    const text = await (await fetch(`${w.url}/metrics`)).text();
    expect(text).toMatch(/^esp_ota_console_broker_connected 1$/m);
    expect(text).toMatch(/^esp_ota_console_sse_clients 0$/m);
    expect(text).toMatch(/^esp_ota_console_actions_total\{action="start",outcome="ok"\} 1$/m);
    expect((await fetch(`${w.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${w.url}/readyz`)).status).toBe(200);
  });

  // Last: it takes the broker away.
  it("/readyz turns 503 when the broker goes away; /healthz stays 200; the metric says so", async () => {
    await w.stopBroker();
    for (let i = 0; i < 500 && (await fetch(`${w.url}/readyz`)).status === 200; i++)
      await new Promise((res) => setTimeout(res, 10));
    const r = await fetch(`${w.url}/readyz`);
    expect(r.status).toBe(503);
    expect(await r.text()).toContain("broker not connected");
    expect((await fetch(`${w.url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${w.url}/metrics`)).text()).toMatch(
      /^esp_ota_console_broker_connected 0$/m,
    );
  });
});

describe("console users and sessions", () => {
  it("a users file needs a role per user; a token needs 16 characters", async () => {
    const h = await hashPassword("pw", { N: 1024, r: 8, p: 1 });
    expect(parseConsoleUsers(`a:${h}:operator\nb:${h}:viewer`)).toMatchObject({ ok: true });
    expect(parseConsoleUsers(`a:${h}`)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/role/),
    });
    expect(parseConsoleUsers(`a:${h}:admin`)).toMatchObject({ ok: false });
    expect(parseConsoleUsers("a:md5$x:operator")).toMatchObject({ ok: false });
    expect(parseConsoleUsers("# nobody\n")).toMatchObject({
      ok: false,
      reason: "the file lists no user",
    });
    expect(() => tokenAuthenticator("short")).toThrow(RangeError);
    const t = tokenAuthenticator("0123456789abcdef0123");
    await expect(t("", "0123456789abcdef0123")).resolves.toEqual({
      name: "token",
      role: "operator",
    });
    await expect(t("", "0123456789abcdef0124")).resolves.toBeUndefined();
  });

  it("a session expires after its TTL and is not renewed by use", () => {
    let now = 1000;
    const s = new Sessions(() => now, 60_000);
    const a = s.create("olga", "operator");
    now += 59_999;
    expect(s.get(a.id)?.user).toBe("olga");
    now += 1;
    expect(s.get(a.id)).toBeUndefined();
    expect(s.get(undefined)).toBeUndefined();
  });
});
