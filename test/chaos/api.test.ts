/** The control API (HTTP round trips on loopback) and the `esp-ota chaos` commands. */
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ESP_OTA_PLUGINS } from "../../agent/plugins.js";
import { chaosApiClient, startChaosApi } from "../../src/chaos/api.js";
import { startChaosProxy } from "../../src/chaos/proxy.js";
import { runCli } from "../../src/cli/program.js";
import { runCapture } from "../helpers/cli.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function echoServer(): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    s.on("data", (d) => s.write(d));
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((ok) => server.close(() => ok()));
  });
  return (server.address() as AddressInfo).port;
}

async function proxyWithApi() {
  const proxy = await startChaosProxy({
    listen: { host: "127.0.0.1", port: 0 },
    upstream: { host: "127.0.0.1", port: await echoServer() },
  });
  cleanups.push(() => proxy.close());
  const api = await startChaosApi(proxy);
  cleanups.push(() => api.close());
  return { proxy, api, client: chaosApiClient(api.url) };
}

async function rejectionCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return "no error";
}

describe("control API", () => {
  it("adds, lists, updates and removes toxics on the running proxy", async () => {
    const { proxy, client } = await proxyWithApi();
    const added = await client.add({ type: "latency", latencyMs: 300, jitterMs: 50 });
    expect(added).toEqual({
      type: "latency",
      name: "latency_downstream",
      stream: "downstream",
      toxicity: 1,
      latencyMs: 300,
      jitterMs: 50,
    });
    expect(proxy.listToxics()).toEqual([added]);
    await client.add({ type: "bandwidth", stream: "upstream", rateKBps: 8, name: "thin" });
    expect((await client.list()).map((t) => t.name)).toEqual(["latency_downstream", "thin"]);
    const updated = await client.update("thin", { rateKBps: 1, toxicity: 0.5 });
    expect(updated).toMatchObject({ rateKBps: 1, toxicity: 0.5, stream: "upstream" });
    await client.remove("latency_downstream");
    const status = await client.status();
    expect(status.toxics.map((t) => t.name)).toEqual(["thin"]);
    expect(status.listen).toBe(`127.0.0.1:${proxy.address.port}`);
    expect(status.enabled).toBe(true);
  });

  it("answers errors as JSON with their codes", async () => {
    const { api, client } = await proxyWithApi();
    await client.add({ type: "timeout" });
    expect(await rejectionCode(client.add({ type: "timeout" }))).toBe("E_CHAOS_TOXIC_EXISTS");
    expect(await rejectionCode(client.remove("nope"))).toBe("E_CHAOS_TOXIC_NOT_FOUND");
    expect(await rejectionCode(client.update("timeout_downstream", { timeoutMs: -5 }))).toBe(
      "E_CHAOS_TOXIC",
    );
    expect(await rejectionCode(client.add({ type: "latency", latency: 300 }))).toBe(
      "E_CHAOS_TOXIC",
    );
    const raw = async (method: string, path: string, body?: string) => {
      const res = await fetch(`${api.url}${path}`, { method, ...(body ? { body } : {}) });
      return [res.status, ((await res.json()) as { error: { code: string } }).error.code];
    };
    expect(await raw("POST", "/toxics", "{not json")).toEqual([400, "E_CHAOS_REQUEST"]);
    expect(await raw("POST", "/toxics", JSON.stringify({ type: "slicer" }))).toEqual([
      400,
      "E_CHAOS_TOXIC",
    ]);
    expect(await raw("GET", "/proxies")).toEqual([404, "E_CHAOS_REQUEST"]);
    expect(await raw("GET", "/toxics/%E0%A4%A")).toEqual([400, "E_CHAOS_REQUEST"]);
    expect(await raw("POST", "/toxics", "x".repeat(70_000))).toEqual([413, "E_CHAOS_REQUEST"]);
    expect(await raw("POST", "/enabled", "{}")).toEqual([400, "E_CHAOS_REQUEST"]);
    // A spec string is a toxic too.
    const res = await fetch(`${api.url}/toxics`, {
      method: "POST",
      body: JSON.stringify("latency:upstream:latency=5"),
    });
    expect(res.status).toBe(201);
  });

  it("disables, enables and resets through the API", async () => {
    const { proxy, client } = await proxyWithApi();
    const sock = connect(proxy.address.port, "127.0.0.1");
    const closed = new Promise<string | undefined>((ok) => {
      let code: string | undefined;
      sock.on("error", (e: NodeJS.ErrnoException) => {
        code = e.code;
      });
      sock.on("close", () => ok(code));
    });
    sock.write("x");
    await new Promise((ok) => sock.once("data", ok));
    expect(await client.reset()).toBe(1);
    expect(await closed).toBe("ECONNRESET");
    expect((await client.setEnabled(false)).enabled).toBe(false);
    expect(proxy.enabled).toBe(false);
    expect((await client.setEnabled(true)).enabled).toBe(true);
  });

  it("a client that cannot reach the API gets E_CHAOS_API", async () => {
    const { api } = await proxyWithApi();
    const url = api.url;
    await api.close();
    expect(await rejectionCode(chaosApiClient(url).list())).toBe("E_CHAOS_API");
  });
});

describe("esp-ota chaos", () => {
  it("toxic add | update | list | remove, reset, disable, enable against a running proxy", async () => {
    const { proxy, api } = await proxyWithApi();
    const addr = `${api.address.host}:${api.address.port}`;
    const add = await runCapture([
      "chaos",
      "toxic",
      "add",
      "--api",
      addr,
      "bandwidth:downstream:rate=2",
    ]);
    expect(add).toMatchObject({
      code: 0,
      stdout: "bandwidth_downstream bandwidth:downstream:rate=2\n",
    });
    expect(proxy.listToxics()[0]).toMatchObject({ type: "bandwidth", rateKBps: 2 });

    const upd = await runCapture([
      "chaos",
      "toxic",
      "update",
      "--api",
      addr,
      "bandwidth_downstream",
      "rate=0.5,toxicity=0.9",
    ]);
    expect(upd.code).toBe(0);
    expect(proxy.listToxics()[0]).toMatchObject({ rateKBps: 0.5, toxicity: 0.9 });

    const list = await runCapture(["chaos", "toxic", "list", "--api", addr]);
    expect(list.stdout).toBe("bandwidth_downstream bandwidth:downstream:rate=0.5,toxicity=0.9\n");
    const json = await runCapture(["chaos", "toxic", "list", "--api", addr, "--json"]);
    expect(JSON.parse(json.stdout)).toEqual(proxy.listToxics());

    expect(
      (await runCapture(["chaos", "toxic", "remove", "--api", addr, "bandwidth_downstream"])).code,
    ).toBe(0);
    expect(proxy.listToxics()).toEqual([]);
    expect((await runCapture(["chaos", "reset", "--api", addr])).stdout).toBe(
      "reset 0 connection(s)\n",
    );
    expect((await runCapture(["chaos", "disable", "--api", addr])).code).toBe(0);
    expect(proxy.enabled).toBe(false);
    expect((await runCapture(["chaos", "enable", "--api", addr])).code).toBe(0);
    expect(proxy.enabled).toBe(true);
  });

  it("exit codes: a bad spec is E_CHAOS_TOXIC (1), a bad address is a usage error (2)", async () => {
    const { api } = await proxyWithApi();
    const addr = `127.0.0.1:${api.address.port}`;
    const bad = await runCapture(["chaos", "toxic", "add", "--api", addr, "latency:jitter=5"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(
      "error E_CHAOS_TOXIC: latency: latency (latencyMs, ms) is required",
    );
    const missing = await runCapture(["chaos", "toxic", "remove", "--api", addr, "nope"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("E_CHAOS_TOXIC_NOT_FOUND");
    const usage = await runCapture(["chaos", "proxy", "--listen", "nowhere", "--upstream", "x:1"]);
    expect(usage.code).toBe(2);
    const noUpstream = await runCapture(["chaos", "proxy", "--listen", ":0", "--upstream", ":0"]);
    expect(noUpstream.code).toBe(2);
  });

  it("chaos proxy runs with --toxic and --api, prints its addresses, logs to stderr", async () => {
    const upstream = await echoServer();
    let stdout = "";
    let stderr = "";
    const printed = new Promise<{ listen: number; api: string }>((ok) => {
      const check = () => {
        const p = /^proxy 127\.0\.0\.1:(\d+) -> /m.exec(stdout);
        const a = /^api (http:\S+)$/m.exec(stdout);
        if (p && a) ok({ listen: Number(p[1]), api: a[1]! });
      };
      const run = runCli(
        [
          "chaos",
          "proxy",
          "--listen",
          "127.0.0.1:0",
          "--upstream",
          `127.0.0.1:${upstream}`,
          "--toxic",
          "latency:downstream:latency=20",
          "--api",
          ":0",
          "--duration",
          "1s",
        ],
        {
          write: (s: string) => {
            stdout += s;
            check();
          },
        },
        { write: (s: string) => (stderr += s) },
        process.cwd(),
        ESP_OTA_PLUGINS,
      );
      cleanups.push(async () => {
        expect(await run).toBe(0);
      });
    });
    const { listen, api } = await printed;
    const toxics = await chaosApiClient(api).list();
    expect(toxics.map((t) => t.name)).toEqual(["latency_downstream"]);
    await chaosApiClient(api).add({ type: "slicer", averageSize: 1 });
    const sock = connect(listen, "127.0.0.1");
    sock.write("ping");
    let got = "";
    await new Promise<void>((ok) =>
      sock.on("data", (d) => {
        got += d.toString();
        if (got === "ping") ok();
      }),
    );
    sock.end();
    await new Promise((ok) => sock.on("close", ok));
    // Let the run end (--duration), then read its log.
    await cleanups.pop()!();
    expect(stderr).toContain(
      "chaos: toxic latency_downstream latency:downstream:latency=20,jitter=0",
    );
    expect(stderr).toContain(
      "chaos: toxic added: slicer_downstream slicer:downstream:average_size=1",
    );
    expect(stderr).toMatch(/chaos: connection 1 from 127\.0\.0\.1:\d+/);
    expect(stderr).toContain("chaos: connection 1 closed (up 4 B, down 4 B)");
    expect(stderr).toMatch(/chaos: stopped after 1 connection\(s\)/);
  });

  it("documents the toxics in --help", async () => {
    const help = await runCapture(["chaos", "proxy", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("TYPE[:STREAM][:key=value,...]");
  });
});
