/**
 * A real Mosquitto 2.0 for integration tests (STYLE.md §14): the system binary, on a free loopback
 * port, with its config and persistence file in a temporary directory.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir, userInfo } from "node:os";
import { delimiter, join } from "node:path";

/** `mosquitto` on PATH, else Debian's /usr/sbin/mosquitto (sbin is often not on a user's PATH). */
export function mosquittoPath(): string | undefined {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  for (const p of [...dirs.map((d) => join(d, "mosquitto")), "/usr/sbin/mosquitto"]) {
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here; try the next
    }
  }
  return undefined;
}

export interface TestBroker {
  kind: "aedes" | "mosquitto";
  url: string;
  port: number;
  /** Stops the broker (saving its state) and starts it again on the same port and data. */
  restart(): Promise<void>;
  /** Stops it and removes the temporary directories it made. Idempotent. */
  close(): Promise<void>;
}

/** A port that was free a moment ago (listen on 0, read it, close; the race is fine for tests). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Mosquitto 2.0 on a free loopback port, config written to a temp dir: listener PORT 127.0.0.1,
 * allow_anonymous true, persistence true with persistence_location in dataDir (saved on
 * shutdown), so retained messages and persistent sessions survive restart(). Waits until the
 * port accepts connections. restart() stops (SIGTERM, waits for exit) and starts again on the
 * same port. Without dataDir a temporary one is made (and removed by close()).
 */
export async function startMosquitto(o: { dataDir?: string } = {}): Promise<TestBroker> {
  const bin = mosquittoPath();
  if (bin === undefined)
    throw new Error("mosquitto is not installed (apt-get install -y mosquitto, or run .ci/run)");
  const confDir = mkdtempSync(join(tmpdir(), "esp-ota-mosquitto-"));
  const dataDir = o.dataDir ?? join(confDir, "data");
  mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const conf = join(confDir, "mosquitto.conf");
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      "allow_anonymous true",
      "persistence true",
      // The trailing slash is required: mosquitto appends the file name to this string.
      `persistence_location ${dataDir}/`,
      "log_dest stderr",
      "log_type error",
      "log_type warning",
      "log_type notice",
      // Run as root, mosquitto drops to the "mosquitto" user, which cannot write our 0700 temp
      // directory; naming the current user keeps it (the setting is ignored for non-root).
      ...(process.getuid?.() === 0 ? [`user ${userInfo().username}`] : []),
      "",
    ].join("\n"),
  );

  let child: ChildProcess | undefined;
  // A test runner that dies mid-test must not leave brokers behind.
  const killOnExit = () => child?.kill("SIGKILL");
  process.on("exit", killOnExit);

  const start = async () => {
    const proc = spawn(bin, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
    child = proc;
    let log = "";
    proc.stderr?.setEncoding("utf8").on("data", (s: string) => {
      log = (log + s).slice(-8192);
    });
    const exited = new Promise<never>((_, reject) =>
      proc.once("exit", (code, signal) =>
        reject(new Error(`mosquitto exited (${signal ?? code}) before listening:\n${log}`)),
      ),
    );
    exited.catch(() => {});
    await Promise.race([waitForPort(port, 10_000, () => log), exited]);
  };
  const stop = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGTERM");
    // SIGTERM makes mosquitto write its persistence file and exit; a hang is a bug to surface.
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  let closed = false;
  return {
    kind: "mosquitto",
    url: `mqtt://127.0.0.1:${port}`,
    port,
    async restart() {
      await stop();
      await start();
    },
    async close() {
      if (closed) return;
      closed = true;
      await stop();
      process.off("exit", killOnExit);
      rmSync(confDir, { recursive: true, force: true });
    },
  };
}

/** Resolves once a TCP connection to 127.0.0.1:port succeeds; polls every 20 ms. */
async function waitForPort(port: number, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
