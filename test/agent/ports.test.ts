import {
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  listSerialPorts,
  PortWatcher,
  type SerialPortInfo,
  selectPorts,
} from "../../agent/ports.js";

const root = mkdtempSync(join(tmpdir(), "esp-ota-ports-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
function freshDir(): string {
  const d = join(root, `d${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
}
function touch(p: string, text = ""): void {
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, text);
}
function link(target: string, path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  symlinkSync(target, path);
}

/**
 * A sysfs tree shaped like Linux's (Documentation/ABI/testing/sysfs-class-tty, sysfs-bus-usb):
 * class/tty/<name>/device links into devices/, the USB device directory (idVendor, idProduct,
 * serial, manufacturer) sits above the interface, and each device's `subsystem` links to its bus.
 */
function fakeSysfs(): { sys: string; dev: string } {
  const sys = freshDir();
  const dev = freshDir();
  for (const bus of ["usb", "usb-serial", "platform", "pnp"])
    mkdirSync(join(sys, "bus", bus), { recursive: true });
  const usbDevice = (dir: string, vid: string, pid: string, serial?: string, mfr?: string) => {
    touch(join(dir, "idVendor"), `${vid}\n`);
    touch(join(dir, "idProduct"), `${pid}\n`);
    if (serial) touch(join(dir, "serial"), `${serial}\n`);
    if (mfr) touch(join(dir, "manufacturer"), `${mfr}\n`);
  };
  const tty = (name: string, deviceDir: string, bus: string) => {
    mkdirSync(deviceDir, { recursive: true });
    link(join(sys, "bus", bus), join(deviceDir, "subsystem"));
    link(deviceDir, join(sys, "class", "tty", name, "device"));
  };
  // CP2102 on a usb-serial driver: ttyUSB0's device is the usb-serial port, two levels below.
  const cp = join(sys, "devices/pci0000:00/0000:00:14.0/usb1/1-1");
  usbDevice(cp, "10c4", "ea60", "0001", "Silicon Labs");
  tty("ttyUSB0", join(cp, "1-1:1.0/ttyUSB0"), "usb-serial");
  // A CH340 with no serial number.
  const ch = join(sys, "devices/pci0000:00/0000:00:14.0/usb1/1-2");
  usbDevice(ch, "1a86", "7523");
  tty("ttyUSB1", join(ch, "1-2:1.0/ttyUSB1"), "usb-serial");
  // ESP32-S3 native USB (CDC-ACM): the device is the interface, one level below.
  const s3 = join(sys, "devices/pci0000:00/0000:00:14.0/usb1/1-3");
  usbDevice(s3, "303a", "1001", "F4:12:FA:00:11:22", "Espressif");
  tty("ttyACM0", join(s3, "1-3:1.0"), "usb");
  // An 8250 placeholder (no UART behind it), a real legacy port, a virtual console, and a USB
  // port whose /dev node this container does not have.
  tty("ttyS0", join(sys, "devices/platform/serial8250"), "platform");
  tty("ttyS4", join(sys, "devices/pnp0/00:05"), "pnp");
  mkdirSync(join(sys, "class/tty/tty0"), { recursive: true });
  const ft = join(sys, "devices/pci0000:00/0000:00:14.0/usb1/1-4");
  usbDevice(ft, "0403", "6001", "A10K1234");
  tty("ttyUSB2", join(ft, "1-4:1.0/ttyUSB2"), "usb-serial");
  for (const name of ["ttyUSB0", "ttyUSB1", "ttyACM0", "ttyS0", "ttyS4", "tty0"])
    touch(join(dev, name));
  return { sys, dev };
}

const noLib = async (): Promise<SerialPortInfo[]> => [];

describe("listSerialPorts", () => {
  it("finds USB serial ports from sysfs alone, with their USB ids (no udevadm needed)", async () => {
    const { sys, dev } = fakeSysfs();
    const ports = await listSerialPorts({ serialportList: noLib, sysfsRoot: sys, devRoot: dev });
    expect(ports).toEqual([
      {
        path: join(dev, "ttyACM0"),
        vendorId: "303a",
        productId: "1001",
        serialNumber: "F4:12:FA:00:11:22",
        manufacturer: "Espressif",
      },
      { path: join(dev, "ttyS4") },
      {
        path: join(dev, "ttyUSB0"),
        vendorId: "10c4",
        productId: "ea60",
        serialNumber: "0001",
        manufacturer: "Silicon Labs",
      },
      { path: join(dev, "ttyUSB1"), vendorId: "1a86", productId: "7523" },
    ]);
  });

  it("merges SerialPort.list() with sysfs: its values first, gaps filled, ids lowercased", async () => {
    const { sys, dev } = fakeSysfs();
    const ports = await listSerialPorts({
      serialportList: async () => [
        { path: join(dev, "ttyUSB1"), vendorId: "1A86", productId: "7523", manufacturer: "wch.cn" },
        { path: "/dev/rfcomm0" },
      ],
      sysfsRoot: sys,
      devRoot: dev,
    });
    expect(ports.find((p) => p.path === join(dev, "ttyUSB1"))).toEqual({
      path: join(dev, "ttyUSB1"),
      vendorId: "1a86",
      productId: "7523",
      manufacturer: "wch.cn",
    });
    expect(ports.map((p) => p.path)).toContain("/dev/rfcomm0");
    expect(ports).toHaveLength(5);
  });

  it("a failing SerialPort.list() leaves the sysfs result", async () => {
    const { sys, dev } = fakeSysfs();
    const ports = await listSerialPorts({
      serialportList: () => Promise.reject(new Error("spawn udevadm ENOENT")),
      sysfsRoot: sys,
      devRoot: dev,
    });
    expect(ports.map((p) => p.path)).toEqual(
      ["ttyACM0", "ttyS4", "ttyUSB0", "ttyUSB1"].map((x) => join(dev, x)),
    );
  });

  it("the real SerialPort.list() without udevadm on PATH does not throw", async () => {
    const empty = freshDir();
    const path = process.env.PATH;
    process.env.PATH = empty; // spawn('udevadm') now fails with ENOENT
    try {
      expect(await listSerialPorts({ sysfsRoot: empty, devRoot: empty })).toEqual([]);
    } finally {
      process.env.PATH = path;
    }
    // And on this machine's real /sys and /dev, whatever they hold.
    const real = await listSerialPorts();
    expect(Array.isArray(real)).toBe(true);
    for (const p of real) expect(typeof p.path).toBe("string");
  });
});

describe("selectPorts", () => {
  it("path: selected while it exists", async () => {
    const d = freshDir();
    const p = join(d, "ttyUSB0");
    expect(await selectPorts([{ path: p }])).toEqual([]);
    touch(p);
    expect(await selectPorts([{ path: p }])).toEqual([p]);
  });

  it("glob: the directory's matching entries in natural order; a missing directory selects none", async () => {
    const d = freshDir();
    for (const f of ["tty-10", "tty-2", "tty-a", "other", ".tty-hidden"]) touch(join(d, f));
    mkdirSync(join(d, "tty-dir"));
    expect(await selectPorts([{ glob: join(d, "tty-*") }])).toEqual(
      ["tty-2", "tty-10", "tty-a"].map((f) => join(d, f)),
    );
    expect(await selectPorts([{ glob: join(d, "tty-[0-9]*") }])).toEqual(
      ["tty-2", "tty-10"].map((f) => join(d, f)),
    );
    expect(await selectPorts([{ glob: join(d, "nowhere", "tty*") }])).toEqual([]);
  });

  it("a glob directory that cannot be listed is E_PORT_SCAN", async () => {
    const d = freshDir();
    symlinkSync(join(d, "loop"), join(d, "loop")); // readdir: ELOOP (root reads anything, not this)
    await expect(selectPorts([{ glob: join(d, "loop", "tty*") }])).rejects.toMatchObject({
      code: "E_PORT_SCAN",
    });
  });

  it("one port reached by two names is reported once, under the first selector's name", async () => {
    const d = freshDir();
    const node = join(d, "ttyUSB0");
    const byId = join(d, "by-id", "usb-Silicon_Labs_CP2102_0001-if00-port0");
    touch(node);
    link(node, byId);
    link(join(d, "gone"), join(d, "by-id", "usb-dangling")); // unplugged: its target is gone
    expect(
      await selectPorts([{ glob: join(d, "by-id", "usb-*") }, { glob: join(d, "tty*") }]),
    ).toEqual([byId]);
    expect(await selectPorts([{ path: node }, { path: byId }])).toEqual([node]);
  });

  it("vid/pid/serialNumber: matched against the listed ports, case-insensitively", async () => {
    const { sys, dev } = fakeSysfs();
    const deps = { serialportList: noLib, sysfsRoot: sys, devRoot: dev };
    expect(await selectPorts([{ vid: "10C4" }], deps)).toEqual([join(dev, "ttyUSB0")]);
    expect(await selectPorts([{ vid: "10c4", pid: "ea61" }], deps)).toEqual([]);
    expect(
      await selectPorts([{ vid: "303a", pid: "1001", serialNumber: "f4:12:fa:00:11:22" }], deps),
    ).toEqual([join(dev, "ttyACM0")]);
    expect(
      await selectPorts(
        [
          { vid: "0x1a86", pid: "7523" },
          { vid: "10c4", pid: "ea60" },
        ],
        deps,
      ),
    ).toEqual([join(dev, "ttyUSB1"), join(dev, "ttyUSB0")]);
    // FTDI's ttyUSB2 is in sysfs but has no /dev node here: not selectable.
    expect(await selectPorts([{ vid: "0403" }], deps)).toEqual([]);
  });

  it("misuse throws TypeError", async () => {
    await expect(selectPorts([{ path: "/a", glob: "/b*" }])).rejects.toThrow(TypeError);
    await expect(selectPorts([{}])).rejects.toThrow(TypeError);
  });
});

/** Collects watcher events; `next()` resolves with the next one (the test timeout bounds it). */
function recorder() {
  const events: string[] = [];
  const errors: unknown[] = [];
  let wake: (() => void) | undefined;
  const push = (e: string) => {
    events.push(e);
    wake?.();
  };
  let read = 0;
  return {
    events,
    errors,
    handlers: {
      onAdded: (p: string) => push(`+${p}`),
      onRemoved: (p: string) => push(`-${p}`),
      onError: (e: unknown) => {
        errors.push(e);
        wake?.();
      },
    },
    async next(): Promise<string> {
      while (read >= events.length) await new Promise<void>((r) => (wake = r));
      return events[read++]!;
    },
  };
}

describe("PortWatcher", () => {
  it("reports ports present at start, then plug and unplug", async () => {
    const d = freshDir();
    touch(join(d, "tty-a"));
    const rec = recorder();
    const w = new PortWatcher([{ glob: join(d, "tty-*") }], 10, rec.handlers);
    await w.start();
    // The first scan's events are delivered before start() resolves.
    expect(rec.events).toEqual([`+${join(d, "tty-a")}`]);
    expect([...w.current]).toEqual([join(d, "tty-a")]);

    touch(join(d, "tty-b"));
    expect(await rec.next()).toBe(`+${join(d, "tty-a")}`);
    expect(await rec.next()).toBe(`+${join(d, "tty-b")}`);
    unlinkSync(join(d, "tty-a"));
    expect(await rec.next()).toBe(`-${join(d, "tty-a")}`);
    expect([...w.current]).toEqual([join(d, "tty-b")]);
    w.stop();
    expect(rec.errors).toEqual([]);
  });

  it("a port replaced between two scans (replug, simulator restart) is removed then added", async () => {
    const d = freshDir();
    touch(join(d, "pts-1"));
    touch(join(d, "pts-2"));
    const port = join(d, "sims", "tty-dev1");
    link(join(d, "pts-1"), port);
    const rec = recorder();
    const w = new PortWatcher([{ path: port }], 10, rec.handlers);
    await w.start();
    expect(await rec.next()).toBe(`+${port}`);
    // Retarget atomically, as a restarted simulator does: the name never disappears.
    link(join(d, "pts-2"), `${port}.new`);
    renameSync(`${port}.new`, port);
    expect(await rec.next()).toBe(`-${port}`);
    expect(await rec.next()).toBe(`+${port}`);
    w.stop();
  });

  it("a handler that throws goes to onError and scanning continues; nothing after stop()", async () => {
    const d = freshDir();
    const rec = recorder();
    let thrown = 0;
    const w = new PortWatcher([{ glob: join(d, "tty*") }], 10, {
      ...rec.handlers,
      onAdded: (p) => {
        rec.handlers.onAdded(p);
        thrown++;
        throw new Error("handler bug");
      },
    });
    await w.start();
    touch(join(d, "tty1"));
    expect(await rec.next()).toBe(`+${join(d, "tty1")}`);
    touch(join(d, "tty2"));
    expect(await rec.next()).toBe(`+${join(d, "tty2")}`);
    expect(thrown).toBe(2);
    expect(rec.errors.map((e) => (e as Error).message)).toEqual(["handler bug", "handler bug"]);
    w.stop();
    const before = rec.events.length;
    touch(join(d, "tty3"));
    // A scan after stop() would report tty3 within a few intervals; give it several.
    await new Promise((r) => setTimeout(r, 100));
    expect(rec.events.length).toBe(before);
    expect(w.current.has(join(d, "tty3"))).toBe(false);
  });

  it("scan errors go to onError, and the watcher recovers", async () => {
    const d = freshDir();
    symlinkSync(join(d, "ports"), join(d, "ports")); // ELOOP until replaced by a directory
    const rec = recorder();
    const w = new PortWatcher([{ glob: join(d, "ports", "tty*") }], 10, rec.handlers);
    await w.start();
    expect(rec.errors[0]).toMatchObject({ code: "E_PORT_SCAN" });
    unlinkSync(join(d, "ports"));
    touch(join(d, "ports", "tty0"));
    expect(await rec.next()).toBe(`+${join(d, "ports", "tty0")}`);
    w.stop();
  });

  it("misuse throws", () => {
    const h = { onAdded() {}, onRemoved() {} };
    expect(() => new PortWatcher([{ glob: "/dev/tty*" }], 0, h)).toThrow(RangeError);
    expect(() => new PortWatcher([{ vid: "10c4", path: "/x" }], 100, h)).toThrow(TypeError);
  });
});
