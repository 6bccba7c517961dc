/**
 * `esp-ota rom`'s host side against the simulated ROM over an in-memory link, in virtual time,
 * and compared with what esptool sent in the traces (test/fixtures/rom_protocol).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isEspOtaError } from "../../src/errors.js";
import { formatMac } from "../../src/rom/chips.js";
import { RomHost } from "../../src/rom/host.js";
import { encodeRequest, OP, req, u32le } from "../../src/rom/protocol.js";
import { SlipDecoder } from "../../src/rom/slip.js";
import { memoryPair } from "../../src/sim/paced-link.js";
import { attachRomLoader } from "../../src/sim/rom-loader.js";
import type { BytePort } from "../../src/uart/port.js";
import { VirtualScheduler } from "../../src/uart/scheduler.js";
import { blankDevice, drive, fixture, loadTrace } from "./helpers.js";

const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** What the host wrote, frame by frame (raw SLIP, as the traces record it). */
function recording(port: BytePort): { port: BytePort; sent: string[] } {
  const sent: string[] = [];
  const wrapped: BytePort = {
    write: (b) => {
      sent.push(toHex(b));
      port.write(b);
    },
    onData: (cb) => port.onData(cb),
    onClose: (cb) => port.onClose(cb),
    setBaud: (b) => port.setBaud(b),
    get baud() {
      return port.baud;
    },
    close: () => port.close(),
  };
  return { port: wrapped, sent };
}

function setup(dev = blankDevice()) {
  const sched = new VirtualScheduler();
  const pair = memoryPair(115200);
  const rom = attachRomLoader(dev, pair.device);
  const rec = recording(pair.host);
  const host = new RomHost(rec.port, { timers: sched });
  return { sched, dev, host, sent: rec.sent, rom };
}

const esptoolSent = (name: string) =>
  loadTrace(name)
    .filter((f) => f.dir === "host->mock")
    .map((f) => f.frame_hex);

describe("RomHost sends what esptool sent", () => {
  it("read-mac: the whole session, frame for frame", async () => {
    const s = setup();
    const mac = await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset", chip: "esp32" });
        return s.host.readMac();
      })(),
    );
    expect(formatMac(mac)).toBe("24:0a:c4:12:34:56");
    expect(s.host.info?.description).toBe("ESP32 (revision v0.0)");
    expect(s.host.info?.crystalMhz).toBe(40);
    expect(s.sent).toEqual(esptoolSent("mock_read_mac"));
  });

  for (const run of [
    {
      name: "mock_write_flash_nocompress",
      baud: 460800,
      offset: 0x10000,
      file: "payload_4387.bin",
      compress: false,
      after: "no-reset",
    },
    {
      name: "mock_write_flash_compress_softreset",
      baud: 115200,
      offset: 0x8000,
      file: "pt_brief.bin",
      compress: true,
      after: "soft-reset",
    },
  ] as const) {
    it(`${run.name}: connect, baud, attach, and the whole write as esptool sent them`, async () => {
      const s = setup();
      const data = fixture(run.file);
      const res = await drive(
        s.sched,
        (async () => {
          await s.host.connect({ before: "no-reset", chip: "esp32" });
          if (run.baud !== 115200) await s.host.changeBaud(run.baud);
          await s.host.spiAttach();
          const attachAt = s.sent.length;
          const w = await s.host.writeFlash(run.offset, data, { compress: run.compress });
          if (run.after === "soft-reset") await s.host.softReset();
          return { w, attachAt };
        })(),
      );
      expect(res.w.verified).toBe(true);
      const want = esptoolSent(run.name);
      // Up to SPI_ATTACH: identical. esptool then probes the flash id through the SPI
      // peripheral's registers (WRITE_REG/READ_REG), which we do not (docs/rom-protocol.md §6);
      // from the write's first frame to the end: identical again.
      expect(s.sent.slice(0, res.attachAt)).toEqual(want.slice(0, res.attachAt));
      const tail = s.sent.length - res.attachAt;
      expect(s.sent.slice(res.attachAt)).toEqual(want.slice(want.length - tail));
      expect(toHex(s.dev.flash.read(run.offset, data.length))).toBe(toHex(data));
    });
  }
});

describe("RomHost against the simulated ROM", () => {
  it("UART_DOWNLOAD_DIS: 7 attempts × 5 SYNCs go unanswered, E_ROM_NO_ANSWER after ~5 s", async () => {
    const dev = blankDevice();
    dev.efuses.disableDownloadMode();
    const s = setup(dev);
    const err = await drive(s.sched, s.host.connect({ before: "no-reset" })).catch((e) => e);
    expect(isEspOtaError(err) && err.code).toBe("E_ROM_NO_ANSWER");
    expect(s.sent.length).toBe(35);
    // esptool: 35 frames in about 5.1 s (test/fixtures/README.md, rom_protocol).
    expect(s.sched.now()).toBeGreaterThan(5000);
    expect(s.sched.now()).toBeLessThan(5500);
  });

  it("a chip running its app (a boot log, no SYNC reply) is told apart from silence", async () => {
    const sched = new VirtualScheduler();
    const pair = memoryPair(115200);
    pair.device.onData(() => pair.device.write(new TextEncoder().encode("I (123) app: hello\r\n")));
    const host = new RomHost(pair.host, { timers: sched });
    const err = await drive(sched, host.connect({ before: "no-reset", attempts: 1 })).catch(
      (e) => e,
    );
    expect(err.code).toBe("E_ROM_NO_ANSWER");
    expect(err.message).toMatch(/serial data received, but no SYNC reply/);
  });

  it("--chip esp32s3 against an ESP32: E_ROM_CHIP_MISMATCH", async () => {
    const s = setup();
    const err = await drive(s.sched, s.host.connect({ before: "no-reset", chip: "esp32s3" })).catch(
      (e) => e,
    );
    expect(err.code).toBe("E_ROM_CHIP_MISMATCH");
  });

  it("ESP32-S3: detected by GET_SECURITY_INFO's chip id; MAC from its eFuse block", async () => {
    const s = setup(blankDevice("esp32s3", Uint8Array.from([0x7c, 0xdf, 0xa1, 1, 2, 3])));
    const info = await drive(s.sched, s.host.connect({ before: "no-reset" }));
    expect(info.chip.name).toBe("esp32s3");
    expect(info.securityInfo?.chipId).toBe(9);
    expect(formatMac(info.mac!)).toBe("7c:df:a1:01:02:03");
  });

  it("ESP32-S3: SPI_BOOT_CRYPT_CNT and SECURE_BOOT_EN read from the eFuse block", async () => {
    const dev = blankDevice("esp32s3");
    dev.efuses.burnFlashEncryptionKey(new Uint8Array(32).fill(7));
    dev.efuses.incrementFlashCryptCnt();
    const s = setup(dev);
    const [cnt, sb] = await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        return [await s.host.readReg(0x60007034), await s.host.readReg(0x60007038)];
      })(),
    );
    expect((cnt! >>> 18) & 7).toBe(1);
    expect(sb).toBe(0);
    expect(s.host.info?.securityInfo?.flashCryptCnt).toBe(1);
  });

  it("erase-region erases through FLASH_BEGIN; a compressed write lands and verifies", async () => {
    const s = setup();
    const data = new Uint8Array(10_000).map((_, i) => (i * 7) & 0xff);
    await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        await s.host.writeFlash(0x20000, data, { compress: true });
        await s.host.eraseRegion(0x20000, 0x1000);
      })(),
    );
    expect(s.dev.flash.read(0x20000, 0x1000).every((b) => b === 0xff)).toBe(true);
    expect(toHex(s.dev.flash.read(0x21000, data.length - 0x1000))).toBe(
      toHex(data.subarray(0x1000)),
    );
  });

  it("a flipped bit in flash after the write: E_ROM_VERIFY from the MD5 check", async () => {
    const s = setup();
    const data = new Uint8Array(2048).fill(0xa5);
    // Corrupt the write as it lands: the device's flash ANDs a stuck-low bit into byte 100.
    const program = s.dev.flash.program.bind(s.dev.flash);
    s.dev.flash.program = (a, d) => {
      const c = Uint8Array.from(d);
      if (a <= 0x30064 && a + c.length > 0x30064) c[0x30064 - a]! &= 0xfe;
      program(a, c);
    };
    const err = await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        await s.host.writeFlash(0x30000, data);
      })(),
    ).catch((e) => e);
    expect(err.code).toBe("E_ROM_VERIFY");
  });
});

describe("Secure Download Mode (ESP32-S3, ENABLE_SECURITY_DOWNLOAD burned)", () => {
  function sdmSetup() {
    const dev = blankDevice("esp32s3");
    dev.efuses.enableSecureDownloadMode();
    return setup(dev);
  }

  it("the ROM refuses READ_REG, WRITE_REG, MD5, reads and compressed writes with 0x05", () => {
    const dev = blankDevice("esp32s3");
    dev.efuses.enableSecureDownloadMode();
    const { device } = memoryPair(115200);
    const { core } = attachRomLoader(dev, device);
    const status = (frame: Uint8Array) => {
      const last = core.handle(frame).replies.at(-1)!;
      return Array.from(last.subarray(last.length - 4));
    };
    // Well-formed requests: what the ROM would answer outside Secure Download Mode.
    const refused = [
      req.readReg(0x60007044),
      req.writeReg(0x60007044, 1),
      req.md5(0, 0x1000),
      req.readFlashSlow(0, 64),
      req.flashDeflBegin(0x1000, 1, 0x400, 0x10000, false),
      encodeRequest(OP.READ_FLASH, u32le(0, 0x1000, 0x1000, 64)),
      encodeRequest(OP.MEM_BEGIN, u32le(0x100, 1, 0x100, 0x3fc90000)),
    ];
    for (const r of refused) expect([r[1], ...status(r)]).toEqual([r[1], 1, 0x05, 0, 0]);
    const allowed = [
      req.spiAttach(0),
      req.spiSetParams(4 << 20),
      req.changeBaud(115200, 0),
      req.flashBegin(0x1000, 1, 0x400, 0x10000, false),
      req.flashData(OP.FLASH_DATA, 0, new Uint8Array(0x400).fill(0x42)),
      req.securityInfo(),
    ];
    for (const r of allowed) expect([r[1], ...status(r)]).toEqual([r[1], 0, 0, 0, 0]);
    expect(dev.flash.read(0x10000, 4)).toEqual(Uint8Array.of(0x42, 0x42, 0x42, 0x42));
  });

  it("the host writes uncompressed, cannot verify, and cannot read the MAC", async () => {
    const s = sdmSetup();
    const data = new Uint8Array(3000).fill(0xa5);
    const res = await drive(
      s.sched,
      (async () => {
        const info = await s.host.connect({ before: "no-reset" });
        expect(info.secureDownload).toBe(true);
        expect(info.mac).toBeUndefined();
        await s.host.spiAttach();
        return s.host.writeFlash(0x10000, data, { compress: true });
      })(),
    );
    expect(res.verified).toBe(false);
    expect(res.compressed).toBeUndefined();
    expect(toHex(s.dev.flash.read(0x10000, data.length))).toBe(toHex(data));
    const mac = await drive(s.sched, s.host.readMac()).catch((e) => e);
    expect(mac.code).toBe("E_ROM_SECURE_DOWNLOAD");
    // No READ_REG, no MD5 left the host.
    const ops = s.sent.map((h) => new SlipDecoder().push(Buffer.from(h, "hex"))[0]![1]);
    expect(ops).not.toContain(0x0a);
    expect(ops).not.toContain(0x13);
    expect(ops).not.toContain(0x10);
  });
});

describe("flash encryption: the ROM writes what it is given", () => {
  const key32 = new Uint8Array(32).map((_, i) => i + 1);

  it("ESP32 with flash encryption on: the bytes land raw (host pre-encrypts)", async () => {
    const dev = blankDevice();
    dev.efuses.burnFlashEncryptionKey(key32);
    dev.efuses.incrementFlashCryptCnt();
    const s = setup(dev);
    const data = new Uint8Array(4096).map((_, i) => i & 0xff);
    await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        expect(await s.host.flashEncryptionEnabled()).toBe(true);
        await s.host.writeFlash(0x10000, data);
      })(),
    );
    expect(toHex(s.dev.flash.read(0x10000, data.length))).toBe(toHex(data));
  });

  it("ESP32-S3, FLASH_BEGIN's encrypt word set: the ROM encrypts for the address", async () => {
    const dev = blankDevice("esp32s3");
    dev.efuses.burnFlashEncryptionKey(key32);
    dev.efuses.incrementFlashCryptCnt();
    const s = setup(dev);
    const data = new Uint8Array(2048).map((_, i) => (i * 3) & 0xff);
    await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        await s.host.writeFlash(0x20000, data, { encrypt: true, verify: false });
      })(),
    );
    expect(toHex(s.dev.flash.read(0x20000, 64))).not.toBe(toHex(data.subarray(0, 64)));
    expect(toHex(s.dev.spi.readDecrypted(0x20000, data.length))).toBe(toHex(data));
  });

  it("ESP32-S3 in release mode: an encrypted FLASH_BEGIN fails (0x06)", async () => {
    const dev = blankDevice("esp32s3");
    dev.efuses.burnFlashEncryptionKey(key32);
    dev.efuses.incrementFlashCryptCnt();
    dev.efuses.enableReleaseMode();
    const s = setup(dev);
    const err = await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        await s.host.writeFlash(0x20000, new Uint8Array(1024), { encrypt: true });
      })(),
    ).catch((e) => e);
    expect(err.code).toBe("E_ROM_COMMAND");
    expect(err.context.romError).toBe(0x06);
  });
});

describe("the simulated ROM is hostile-input safe", () => {
  it("random request frames never throw; each gets one status-bearing reply (SYNC: eight)", () => {
    const dev = blankDevice();
    const { device } = memoryPair(115200);
    const { core } = attachRomLoader(dev, device);
    fc.assert(
      fc.property(
        fc.constantFrom(
          0x02,
          0x03,
          0x04,
          0x09,
          0x0a,
          0x0b,
          0x0d,
          0x0e,
          0x0f,
          0x10,
          0x11,
          0x12,
          0x13,
          0x14,
          0xd1,
        ),
        fc.uint8Array({ maxLength: 64 }),
        fc.nat(),
        (op, data, chk) => {
          const r = core.handle(encodeRequest(op, data, chk >>> 0));
          expect(r.replies.length).toBe(1);
          const reply = r.replies[0]!;
          expect([reply[0], reply[1]]).toEqual([1, op]);
          expect(reply.length).toBeGreaterThanOrEqual(12);
        },
      ),
      { numRuns: 300 },
    );
    // Garbage that is not even a request is answered, not thrown on.
    fc.assert(fc.property(fc.uint8Array({ maxLength: 20 }), (junk) => void core.handle(junk)));
  });
});

describe("the simulated ROM and the flash model's faults", () => {
  it("a power cut in FLASH_BEGIN's erase: no answer (the chip is off), the host times out", async () => {
    const s = setup();
    const err = await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        s.dev.flash.schedulePowerCut(s.dev.flash.operationCount + 1);
        await s.host.writeFlash(0x10000, new Uint8Array(8192).fill(1));
      })(),
    ).catch((e) => e);
    expect(err.code).toBe("E_ROM_TIMEOUT");
    expect(s.dev.flash.isPowered).toBe(false);
  });

  it("an encrypted write at an offset not 16-byte aligned is refused (0x64), not thrown", () => {
    const dev = blankDevice("esp32s3");
    dev.efuses.burnFlashEncryptionKey(new Uint8Array(32).fill(3));
    dev.efuses.incrementFlashCryptCnt();
    const { device } = memoryPair(115200);
    const { core } = attachRomLoader(dev, device);
    core.handle(encodeRequest(OP.SPI_ATTACH, u32le(0, 0)));
    const r = core.handle(encodeRequest(OP.FLASH_BEGIN, u32le(0x100, 1, 0x100, 0x10008, 1)));
    expect(Array.from(r.replies[0]!.subarray(-4))).toEqual([1, 0x64, 0, 0]);
  });
});

describe("the ROM's banner", () => {
  it("is printed at reset in download mode, and the host connects through it", async () => {
    const sched = new VirtualScheduler();
    const pair = memoryPair(115200);
    const early: Uint8Array[] = [];
    pair.host.onData((b) => early.push(b));
    attachRomLoader(blankDevice(), pair.device, { banner: true });
    expect(Buffer.concat(early).toString()).toContain("waiting for download");
    const host = new RomHost(pair.host, { timers: sched });
    const info = await drive(sched, host.connect({ before: "no-reset" }));
    expect(info.chip.name).toBe("esp32");
  });
});

describe("write-flash at an offset inside a sector", () => {
  it("starts at the sector with 0xFF before the data, as esptool does with the ROM", async () => {
    const s = setup();
    const data = new Uint8Array(300).fill(0x11);
    await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        await s.host.writeFlash(0x10100, data);
      })(),
    );
    const begin = s.sent
      .map((h) => new SlipDecoder().push(Buffer.from(h, "hex"))[0]!)
      .find((f) => f[1] === OP.FLASH_BEGIN)!;
    // erase size 0x100 + 300 = 556, 1 block, 0x400, offset 0x10000
    expect(toHex(begin.subarray(8))).toBe(toHex(u32le(556, 1, 0x400, 0x10000)));
    expect(s.dev.flash.read(0x10000, 0x100).every((b) => b === 0xff)).toBe(true);
    expect(toHex(s.dev.flash.read(0x10100, 300))).toBe(toHex(data));
  });
});

describe("erase-region with security on", () => {
  it("is refused with flash encryption on (E_ROM_REFUSED), and goes through with force", async () => {
    const dev = blankDevice();
    dev.efuses.burnFlashEncryptionKey(new Uint8Array(32).fill(9));
    dev.efuses.incrementFlashCryptCnt();
    dev.flash.program(0x20000, new Uint8Array(16).fill(0));
    const s = setup(dev);
    const err = await drive(
      s.sched,
      (async () => {
        await s.host.connect({ before: "no-reset" });
        await s.host.spiAttach();
        await s.host.eraseRegion(0x20000, 0x1000);
      })(),
    ).catch((e) => e);
    expect(err.code).toBe("E_ROM_REFUSED");
    expect(s.dev.flash.read(0x20000, 1)[0]).toBe(0);
    await drive(s.sched, s.host.eraseRegion(0x20000, 0x1000, { force: true }));
    expect(s.dev.flash.read(0x20000, 1)[0]).toBe(0xff);
  });
});
