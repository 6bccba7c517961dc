/**
 * The chaos proxy over real loopback sockets. Timing assertions are lower bounds only (a toxic
 * can only make things slower), each well inside what the toxic guarantees, so a loaded machine
 * cannot fail them.
 */
import { randomBytes } from "node:crypto";
import { type Server as HttpServer, get as httpGet, createServer as httpServer } from "node:http";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { afterEach, describe, expect, it } from "vitest";
import { type ChaosProxy, startChaosProxy } from "../../src/chaos/proxy.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listening<T extends Server | HttpServer>(server: T): Promise<number> {
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  cleanups.push(
    () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        if ("closeAllConnections" in server) server.closeAllConnections();
      }),
  );
  return (server.address() as AddressInfo).port;
}

/** A TCP server; `onSocket` runs for each connection; sockets are destroyed at the end. */
async function tcpServer(onSocket: (s: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    onSocket(s);
  });
  const port = await listening(server);
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
  });
  return port;
}

async function proxyTo(port: number, opts: Partial<Parameters<typeof startChaosProxy>[0]> = {}) {
  const proxy = await startChaosProxy({
    listen: { host: "127.0.0.1", port: 0 },
    upstream: { host: "127.0.0.1", port },
    ...opts,
  });
  cleanups.push(() => proxy.close());
  return proxy;
}

/** An HTTP server that answers every GET with `body`. */
async function httpFile(body: Buffer): Promise<number> {
  const server = httpServer((_req, res) => {
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  return listening(server);
}

function download(proxy: ChaosProxy): Promise<{ body: Buffer; firstByteMs: number; ms: number }> {
  const start = performance.now();
  return new Promise((ok, fail) => {
    httpGet(
      { host: proxy.address.host, port: proxy.address.port, path: "/image.bin", agent: false },
      (res) => {
        const firstByteMs = performance.now() - start;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          ok({ body: Buffer.concat(chunks), firstByteMs, ms: performance.now() - start }),
        );
        res.on("error", fail);
      },
    ).on("error", fail);
  });
}

/** Connects a raw client through the proxy, recording what arrives and how it ends. */
function client(proxy: ChaosProxy) {
  const sock = connect(proxy.address.port, proxy.address.host);
  const chunks: Buffer[] = [];
  const ended = new Promise<{ error?: NodeJS.ErrnoException; at: number }>((ok) => {
    let error: NodeJS.ErrnoException | undefined;
    sock.on("error", (e) => {
      error = e;
    });
    sock.on("close", () => ok({ ...(error ? { error } : {}), at: performance.now() }));
  });
  sock.on("data", (c: Buffer) => chunks.push(c));
  cleanups.push(() => {
    sock.destroy();
  });
  const connected = new Promise<void>((ok) => sock.once("connect", () => ok()));
  return {
    sock,
    chunks,
    ended,
    connected,
    received: () => Buffer.concat(chunks),
    /** Resolves when `n` bytes have arrived in total. */
    bytes: (n: number) =>
      new Promise<Buffer>((ok, fail) => {
        const check = () => {
          const b = Buffer.concat(chunks);
          if (b.length >= n) {
            sock.off("data", check);
            ok(b);
          }
        };
        sock.on("data", check);
        sock.once("close", () =>
          fail(new Error(`closed after ${Buffer.concat(chunks).length} of ${n} bytes`)),
        );
        check();
      }),
  };
}

describe("chaos proxy over loopback", () => {
  it("passes an HTTP download through byte for byte", async () => {
    const body = randomBytes(300_000);
    const proxy = await proxyTo(await httpFile(body));
    const { body: got } = await download(proxy);
    expect(got.equals(body)).toBe(true);
    expect(proxy.stats.bytesDown).toBeGreaterThan(body.length);
    expect(proxy.stats.bytesUp).toBeGreaterThan(0);
    expect(proxy.stats.connections).toBe(1);
  });

  it("latency delays the answer by at least latencyMs", async () => {
    const body = randomBytes(1000);
    const proxy = await proxyTo(await httpFile(body), {
      toxics: ["latency:downstream:latency=150"],
    });
    const r = await download(proxy);
    expect(r.body.equals(body)).toBe(true);
    expect(r.firstByteMs).toBeGreaterThanOrEqual(150);
  });

  it("bandwidth caps the throughput", async () => {
    // 40 KB at 100 KB/s is 400 ms at least.
    const body = randomBytes(40_000);
    const proxy = await proxyTo(await httpFile(body), {
      toxics: [{ type: "bandwidth", rateKBps: 100 }],
    });
    const r = await download(proxy);
    expect(r.body.equals(body)).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual((body.length / 100) * 0.8);
  });

  it("slicer delivers the same bytes in more, smaller chunks", async () => {
    const body = randomBytes(2000);
    const port = await tcpServer((s) => s.end(body));
    const plain = await proxyTo(port);
    const a = client(plain);
    await a.ended;
    expect(a.received().equals(body)).toBe(true);
    const sliced = await proxyTo(port, {
      // About 10 pieces of ~200 bytes, 20 ms apart, so the client reads them one by one.
      toxics: ["slicer:downstream:average_size=200,size_variation=50,delay=20000"],
    });
    const b = client(sliced);
    await b.ended;
    expect(b.received().equals(body)).toBe(true);
    expect(b.chunks.length).toBeGreaterThanOrEqual(3);
    expect(b.chunks.length).toBeGreaterThan(a.chunks.length);
  });

  it("limit_data closes the connection after exactly N bytes", async () => {
    const port = await tcpServer((s) => s.write(randomBytes(10_000)));
    const proxy = await proxyTo(port, { toxics: ["limit_data:downstream:bytes=1000"] });
    const c = client(proxy);
    const end = await c.ended;
    expect(end.error).toBeUndefined();
    expect(c.received().length).toBe(1000);
  });

  it("reset_peer gives the client ECONNRESET", async () => {
    const port = await tcpServer((s) => s.on("data", (d) => s.write(d)));
    const proxy = await proxyTo(port, { toxics: ["reset_peer:upstream:timeout=50"] });
    const c = client(proxy);
    await c.connected;
    c.sock.write("hello");
    const end = await c.ended;
    expect(end.error?.code).toBe("ECONNRESET");
    // Nothing passed once the toxic saw the first byte.
    expect(c.received().length).toBe(0);
  });

  it("timeout stops the data and closes after timeoutMs", async () => {
    const port = await tcpServer((s) => s.write(randomBytes(5000)));
    const proxy = await proxyTo(port, { toxics: ["timeout:downstream:timeout=300"] });
    const start = performance.now();
    const c = client(proxy);
    const end = await c.ended;
    expect(c.received().length).toBe(0);
    expect(end.at - start).toBeGreaterThanOrEqual(300);
  });

  it("a toxic added while a connection is open applies to it, and removing it restores it", async () => {
    const port = await tcpServer((s) => s.on("data", (d) => s.write(d)));
    const proxy = await proxyTo(port);
    const c = client(proxy);
    c.sock.write("a");
    await c.bytes(1);
    proxy.addToxic({ type: "latency", latencyMs: 200 });
    const start = performance.now();
    c.sock.write("b");
    await c.bytes(2);
    expect(performance.now() - start).toBeGreaterThanOrEqual(200);
    proxy.removeToxic("latency_downstream");
    c.sock.write("c");
    expect((await c.bytes(3)).toString()).toBe("abc");
  });

  it("disabled: open connections are cut and new ones refused; enabled again on the same port", async () => {
    const port = await tcpServer((s) => s.on("data", (d) => s.write(d)));
    const proxy = await proxyTo(port);
    const before = proxy.address.port;
    const c = client(proxy);
    c.sock.write("x");
    await c.bytes(1);
    await proxy.setEnabled(false);
    await c.ended;
    const refused = await new Promise<string | undefined>((ok) => {
      const s = connect(before, "127.0.0.1");
      s.on("connect", () => {
        s.destroy();
        ok(undefined);
      });
      s.on("error", (e: NodeJS.ErrnoException) => ok(e.code));
    });
    expect(refused).toBe("ECONNREFUSED");
    await proxy.setEnabled(true);
    expect(proxy.address.port).toBe(before);
    const d = client(proxy);
    d.sock.write("y");
    expect((await d.bytes(1)).toString()).toBe("y");
  });

  it("resetConnections aborts open connections with an RST", async () => {
    const port = await tcpServer((s) => s.on("data", (d) => s.write(d)));
    const proxy = await proxyTo(port);
    const c = client(proxy);
    c.sock.write("x");
    await c.bytes(1);
    expect(proxy.resetConnections()).toBe(1);
    expect((await c.ended).error?.code).toBe("ECONNRESET");
  });

  it("a refused upstream closes the client's connection", async () => {
    // A port that was free a moment ago: nothing listens there now.
    const probe = createServer();
    const dead = await new Promise<number>((ok) =>
      probe.listen(0, "127.0.0.1", () => ok((probe.address() as AddressInfo).port)),
    );
    await new Promise<void>((ok) => probe.close(() => ok()));
    const events: string[] = [];
    const proxy = await proxyTo(dead, { onEvent: (e) => events.push(e.type) });
    const c = client(proxy);
    await c.ended;
    expect(events).toContain("upstream-error");
    await expect.poll(() => proxy.stats.active).toBe(0);
  });

  it("holds a bounded number of bytes when the far side reads slower than the server sends", async () => {
    const hwm = 16 * 1024;
    let serverSocket: Socket | undefined;
    // More than the kernel's loopback socket buffers take, so the server feels the backpressure.
    const port = await tcpServer((s) => {
      serverSocket = s;
      s.write(Buffer.alloc(16 * 1024 * 1024));
    });
    const proxy = await proxyTo(port, { highWaterMark: hwm, toxics: ["bandwidth:rate=50"] });
    const c = client(proxy);
    let most = 0;
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 30));
      most = Math.max(most, proxy.stats.held);
    }
    // At most the high-water mark plus the one socket read that crossed it.
    expect(most).toBeLessThanOrEqual(hwm + 64 * 1024);
    expect(serverSocket!.writableLength).toBeGreaterThan(0);
    expect(c.received().length).toBeLessThan(1024 * 1024);
  });
});
