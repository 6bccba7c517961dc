/**
 * Serial port discovery and hot-plug for the agent (docs/configuration.md "Selecting ports").
 *
 * Discovery merges two sources, because neither is enough alone:
 *  - SerialPort.list() runs `udevadm info -e` on Linux; minimal gateway images and containers
 *    often have no udevadm (or no udev database), and then it lists nothing;
 *  - a sysfs scan of /sys/class/tty/<name>/device, reading idVendor/idProduct/serial from the
 *    USB device directory above the tty, which needs only a mounted /sys.
 * Ports are then selected by path, glob or USB id; PortWatcher rescans on a timer and reports
 * ports that appear and disappear.
 */
import { readdir, readFile, realpath, stat } from "node:fs/promises";
import { basename, dirname, join, sep } from "node:path";
import picomatch from "picomatch";
import { EspOtaError } from "../src/errors.js";
import type { PortSelector } from "./config.js";

export interface SerialPortInfo {
  path: string;
  /** USB ids as 4 lowercase hex digits. */
  vendorId?: string;
  productId?: string;
  serialNumber?: string;
  manufacturer?: string;
}

export interface PortDeps {
  /** Replaces SerialPort.list() (tests). Its failure is not an error: the list is then sysfs only. */
  serialportList?: () => Promise<SerialPortInfo[]>;
  /** Default "/sys". */
  sysfsRoot?: string;
  /** Where the tty device nodes are; default "/dev". */
  devRoot?: string;
}

/**
 * How long SerialPort.list() may take. `udevadm info -e` dumps the whole udev database: ~0.1 s on
 * a Raspberry Pi; a hung one must not stall every rescan, so past this the list is sysfs only.
 */
export const SERIALPORT_LIST_TIMEOUT_MS = 5000;

/** USB ids compare as lowercase hex without a 0x prefix. */
function hexId(s: string | undefined): string | undefined {
  return s === undefined || s === "" ? undefined : s.toLowerCase().replace(/^0x/, "");
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

async function serialportListReal(): Promise<SerialPortInfo[]> {
  // Imported here, not at the top: loading serialport loads its native binding, which the
  // config-only commands and most tests do not need.
  const { SerialPort } = await import("serialport");
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error("SerialPort.list() timed out")),
      SERIALPORT_LIST_TIMEOUT_MS,
    );
    timer.unref();
  });
  try {
    const ports = await Promise.race([SerialPort.list(), timeout]);
    return ports.map((p) => ({
      path: p.path,
      ...(p.vendorId ? { vendorId: p.vendorId } : {}),
      ...(p.productId ? { productId: p.productId } : {}),
      ...(p.serialNumber ? { serialNumber: p.serialNumber } : {}),
      ...(p.manufacturer ? { manufacturer: p.manufacturer } : {}),
    }));
  } finally {
    clearTimeout(timer);
  }
}

async function fromSerialport(deps: PortDeps): Promise<SerialPortInfo[]> {
  try {
    const list = await (deps.serialportList ?? serialportListReal)();
    return list.filter((p) => typeof p?.path === "string" && p.path !== "");
  } catch {
    // No udevadm (spawn ENOENT), no udev database, no native binding: sysfs still answers.
    return [];
  }
}

async function readAttr(dir: string, name: string): Promise<string | undefined> {
  try {
    const v = (await readFile(join(dir, name), "utf8")).trim();
    return v === "" ? undefined : v;
  } catch {
    return undefined;
  }
}

/**
 * The USB device directory above a tty's device: the nearest ancestor holding idVendor (for
 * ttyUSB it is two levels up, past the usb-serial port and the interface; for ttyACM one).
 */
async function usbAttributes(
  deviceDir: string,
  root: string,
): Promise<Omit<SerialPortInfo, "path">> {
  let d = deviceDir;
  for (let i = 0; i < 8 && d.startsWith(root + sep) && d !== root; i++) {
    const vendorId = await readAttr(d, "idVendor");
    if (vendorId !== undefined) {
      const productId = await readAttr(d, "idProduct");
      const serialNumber = await readAttr(d, "serial");
      const manufacturer = await readAttr(d, "manufacturer");
      return {
        vendorId: hexId(vendorId)!,
        ...(productId ? { productId: hexId(productId)! } : {}),
        ...(serialNumber ? { serialNumber } : {}),
        ...(manufacturer ? { manufacturer } : {}),
      };
    }
    d = dirname(d);
  }
  return {};
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Serial ports from sysfs. Best effort: an unreadable or absent /sys gives []. */
async function fromSysfs(sysfsRoot: string, devRoot: string): Promise<SerialPortInfo[]> {
  let root: string;
  let names: string[];
  try {
    root = await realpath(sysfsRoot);
    names = await readdir(join(root, "class", "tty"));
  } catch {
    return [];
  }
  const out: SerialPortInfo[] = [];
  for (const name of names) {
    let deviceDir: string;
    try {
      deviceDir = await realpath(join(root, "class", "tty", name, "device"));
    } catch {
      continue; // virtual terminals, ptys, ptmx: no device behind them
    }
    let subsystem = "";
    try {
      subsystem = basename(await realpath(join(deviceDir, "subsystem")));
    } catch {
      // Kept: an unknown bus is still a port.
    }
    // The 8250 driver registers ttyS0..ttyS31 as "platform" devices whether or not a UART is
    // there; pyserial's list_ports_linux hides them the same way.
    if (subsystem === "platform") continue;
    const node = join(devRoot, name);
    // A container may see the host's /sys but not its /dev: only ports we could open count.
    if (!(await exists(node))) continue;
    out.push({ path: node, ...(await usbAttributes(deviceDir, root)) });
  }
  return out;
}

/**
 * Every serial port we can see: SerialPort.list() merged with a sysfs scan (its values first,
 * gaps filled from sysfs), sorted by path. Never throws.
 */
export async function listSerialPorts(deps: PortDeps = {}): Promise<SerialPortInfo[]> {
  const [lib, sys] = await Promise.all([
    fromSerialport(deps),
    fromSysfs(deps.sysfsRoot ?? "/sys", deps.devRoot ?? "/dev"),
  ]);
  const byPath = new Map<string, SerialPortInfo>();
  for (const p of [...lib, ...sys]) {
    const clean: SerialPortInfo = {
      path: p.path,
      ...(hexId(p.vendorId) ? { vendorId: hexId(p.vendorId)! } : {}),
      ...(hexId(p.productId) ? { productId: hexId(p.productId)! } : {}),
      ...(p.serialNumber ? { serialNumber: p.serialNumber } : {}),
      ...(p.manufacturer ? { manufacturer: p.manufacturer } : {}),
    };
    byPath.set(p.path, { ...clean, ...byPath.get(p.path) });
  }
  return [...byPath.values()].sort((a, b) => naturalCompare(a.path, b.path));
}

/** ttyUSB2 before ttyUSB10. */
function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

function matchesUsb(sel: PortSelector, p: SerialPortInfo): boolean {
  const eq = (want: string | undefined, have: string | undefined) =>
    want === undefined || (have !== undefined && hexId(want) === hexId(have));
  return (
    p.vendorId !== undefined &&
    eq(sel.vid, p.vendorId) &&
    eq(sel.pid, p.productId) &&
    (sel.serialNumber === undefined ||
      sel.serialNumber.toLowerCase() === p.serialNumber?.toLowerCase())
  );
}

/** The entries of a glob's directory that its last component matches, in natural order. */
async function globCandidates(glob: string): Promise<string[]> {
  const dir = dirname(glob);
  const isMatch = picomatch(basename(glob));
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    // /dev/serial/by-id exists only while a USB serial device is plugged in: nothing yet.
    if (errno(e) === "ENOENT" || errno(e) === "ENOTDIR") return [];
    throw new EspOtaError(
      "E_PORT_SCAN",
      `cannot list ${dir} for ${glob}: ${(e as Error).message}`,
      { dir, glob },
      e,
    );
  }
  return names
    .filter((n) => isMatch(n))
    .sort(naturalCompare)
    .map((n) => join(dir, n));
}

function checkSelectors(selectors: readonly PortSelector[], fn: string): void {
  if (!Array.isArray(selectors)) throw new TypeError(`${fn}: selectors must be an array`);
  for (const s of selectors) {
    const kinds = [s?.path, s?.glob, s?.vid].filter((x) => x !== undefined).length;
    if (kinds !== 1)
      throw new TypeError(`${fn}: each selector needs exactly one of path, glob, vid`);
  }
}

/**
 * The ports the selectors select, in selector order: `path` if it exists, a glob's matches, and
 * the listed ports with the USB ids. A port reached by two names (a by-id symlink and its
 * ttyUSB node) is reported once, under the first name found — the one the user configured.
 * Throws E_PORT_SCAN when a glob's directory exists but cannot be read.
 */
export async function selectPorts(
  selectors: readonly PortSelector[],
  deps: PortDeps = {},
): Promise<string[]> {
  checkSelectors(selectors, "selectPorts");
  return (await selectPortIdentities(selectors, deps)).map((p) => p.path);
}

interface SelectedPort {
  path: string;
  /** realpath plus inode: a node recreated (adapter replugged) between two scans differs. */
  identity: string;
}

async function selectPortIdentities(
  selectors: readonly PortSelector[],
  deps: PortDeps,
): Promise<SelectedPort[]> {
  const out: SelectedPort[] = [];
  const seen = new Set<string>();
  let listed: SerialPortInfo[] | undefined;
  for (const sel of selectors) {
    let candidates: string[];
    if (sel.path !== undefined) candidates = [sel.path];
    else if (sel.glob !== undefined) candidates = await globCandidates(sel.glob);
    else {
      listed ??= await listSerialPorts(deps);
      candidates = listed.filter((p) => matchesUsb(sel, p)).map((p) => p.path);
    }
    for (const path of candidates) {
      let real: string;
      let ino: number;
      try {
        real = await realpath(path);
        const st = await stat(real);
        if (st.isDirectory()) continue;
        ino = st.ino;
      } catch {
        continue; // gone since the listing, or a symlink whose target is unplugged
      }
      if (seen.has(real)) continue;
      seen.add(real);
      out.push({ path, identity: `${real}\u0000${ino}` });
    }
  }
  return out;
}

export interface PortWatcherHandlers {
  onAdded(path: string): void;
  onRemoved(path: string): void;
  /** A scan failed (E_PORT_SCAN) or a handler threw; the watcher keeps scanning. */
  onError?(e: unknown): void;
}

/**
 * Hot-plug: scans on start() and then every `intervalMs` after the previous scan finished (so
 * scans never overlap), calling onRemoved/onAdded for the differences. A port whose node was
 * recreated between two scans (same name, another inode or target: the adapter was replugged,
 * a simulator restarted) is reported removed and then added, so its owner reopens it.
 */
export class PortWatcher {
  private readonly known = new Map<string, string>(); // path -> identity
  private readonly view = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly selectors: readonly PortSelector[],
    private readonly intervalMs: number,
    private readonly handlers: PortWatcherHandlers,
    private readonly deps: PortDeps = {},
  ) {
    checkSelectors(selectors, "PortWatcher");
    if (!Number.isSafeInteger(intervalMs) || intervalMs < 1)
      throw new RangeError("PortWatcher: intervalMs must be a positive integer");
  }

  /** The ports present after the last scan. */
  get current(): ReadonlySet<string> {
    return this.view;
  }

  /** Runs the first scan (its events are delivered before this resolves), then keeps scanning. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.scan();
    this.schedule();
  }

  /** Stops scanning; no event is delivered after this returns. */
  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      // scan() catches its own failures; the catch is the backstop that keeps scanning.
      this.scan()
        .catch((e: unknown) => this.report(e))
        .then(() => this.schedule());
    }, this.intervalMs);
    // The agent's MQTT connection keeps the process alive; a watcher alone should not.
    this.timer.unref();
  }

  private async scan(): Promise<void> {
    let found: SelectedPort[];
    try {
      found = await selectPortIdentities(this.selectors, this.deps);
    } catch (e) {
      if (this.running) this.report(e);
      return;
    }
    if (!this.running) return;
    const next = new Map(found.map((p) => [p.path, p.identity]));
    for (const [path, identity] of [...this.known]) {
      if (next.get(path) === identity) continue;
      this.known.delete(path);
      this.view.delete(path);
      this.call(() => this.handlers.onRemoved(path));
    }
    for (const { path, identity } of found) {
      if (this.known.has(path)) continue;
      this.known.set(path, identity);
      this.view.add(path);
      this.call(() => this.handlers.onAdded(path));
    }
  }

  private call(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.report(e);
    }
  }

  private report(e: unknown): void {
    try {
      this.handlers.onError?.(e);
    } catch {
      // An error handler that throws has nowhere left to report to.
    }
  }
}
