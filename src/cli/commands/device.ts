/**
 * `esp-ota device info|flash`: talk to an ESP32 running the UART OTA device side on a serial
 * port (docs/uart-protocol.md). The CLI opens the port, runs a host session from src/uart, and
 * prints; the protocol and its decisions live in the library.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { resolve } from "node:path";
import { sha256 } from "@noble/hashes/sha2.js";
import type { Command } from "commander";
import { fromHex, toHex } from "../../bytes.js";
import { EspOtaError } from "../../errors.js";
import { stateName } from "../../esp/otadata.js";
import { HostSession, type ImageSource } from "../../uart/host.js";
import {
  describeOutcome,
  type HostJob,
  nextSlotOffset,
  type Outcome,
} from "../../uart/host-machine.js";
import { describeInfo, type Info } from "../../uart/messages.js";
import { realTimers } from "../../uart/scheduler.js";
import { SerialBytePort } from "../../uart/serial-port.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

const hex = (n: number) => `0x${n.toString(16)}`;

async function runSession(
  ctx: CliContext,
  port: string,
  job: HostJob,
  image?: ImageSource,
  onProgress?: (sent: number, total: number) => void,
): Promise<Outcome> {
  const sp = await SerialBytePort.open(port, 115200);
  const ac = new AbortController();
  const onSig = () => ac.abort("interrupted");
  process.once("SIGINT", onSig);
  try {
    const s = new HostSession({
      port: sp,
      timers: realTimers,
      job,
      ...(image ? { image } : {}),
      signal: ac.signal,
      onLog: (line) => ctx.note(`device: ${line}`),
      onEvent: (e) => {
        if (e.kind === "progress") onProgress?.(e.acked, e.total);
        else if (e.kind === "baud") ctx.note(`baud ${e.baud}${e.confirmed ? "" : " (fallback)"}`);
        else if (e.kind === "resumed") ctx.note(`resuming at byte ${e.from}`);
        else if (e.kind === "phase" && e.phase !== "send" && e.phase !== "done") ctx.note(e.phase);
      },
    });
    return await s.start();
  } finally {
    process.removeListener("SIGINT", onSig);
    sp.close();
  }
}

export function formatInfo(info: Info): string[] {
  const { app, otadata } = describeInfo(info);
  const fe = ["off", "on (development)", "on (release)"][info.flashEncryption] ?? "?";
  const lines = [
    `chip:             ${info.chip} rev ${info.revision}`,
    `device id (MAC):  ${toHex(info.mac)}`,
    `flash size:       ${info.flashSize >> 20} MB`,
    `flash encryption: ${fe}`,
    `secure boot:      ${info.secureBootVersion ? `v${info.secureBootVersion}` : "off"}`,
    `eFuse secure_version: ${info.efuseSecureVersion}`,
    `running:          ${hex(info.runningOffset)} (${stateName(info.runningState)})`,
    `app:              ${app ? `${app.projectName} ${app.version} secure_version ${app.secureVersion}` : "(no descriptor)"}`,
    "app slots:",
    ...info.slots.map(
      (s) =>
        `  ${s.label.padEnd(8)} ${hex(s.offset).padEnd(10)} ${hex(s.size).padEnd(10)}${s.offset === info.runningOffset ? " running" : ""}${s.offset === nextSlotOffset(info) ? " next" : ""}`,
    ),
    "otadata:",
    ...otadata.map(
      (e, i) =>
        `  copy ${i}: ${e.seq === 0xffffffff ? "empty" : `ota_seq ${e.seq} state ${stateName(e.state)}`}`,
    ),
    `limits:           ${info.maxPayload} bytes per frame, ${info.rxBuffer} bytes receive buffer, UART ISR ${info.isrInIram ? "in IRAM" : "not in IRAM"}`,
    `unfinished transfer: ${info.resume ? `${hex(info.resume.offset)} ${info.resume.written}/${info.resume.size} bytes, sha256 ${toHex(info.resume.sha256).slice(0, 16)}…` : "none"}`,
  ];
  return lines;
}

function infoJson(info: Info) {
  const { app, otadata } = describeInfo(info);
  return {
    chip: info.chip,
    revision: info.revision,
    mac: toHex(info.mac),
    flashSize: info.flashSize,
    flashEncryption: info.flashEncryption,
    secureBootVersion: info.secureBootVersion,
    efuseSecureVersion: info.efuseSecureVersion,
    running: { offset: info.runningOffset, state: stateName(info.runningState) },
    nextSlot: nextSlotOffset(info),
    app: app && {
      project: app.projectName,
      version: app.version,
      secureVersion: app.secureVersion,
    },
    slots: info.slots,
    otadata: otadata.map((e) => ({ seq: e.seq, state: stateName(e.state) })),
    limits: {
      maxPayload: info.maxPayload,
      rxBuffer: info.rxBuffer,
      isrInIram: info.isrInIram === 1,
    },
    resume: info.resume && { ...info.resume, sha256: toHex(info.resume.sha256) },
  };
}

/** `device flash --json`: what happened, with the image it was and the device after it. */
function flashJson(out: Outcome, path: string, img: { size: number; sha: Uint8Array }) {
  const image = { path, size: img.size, sha256: toHex(img.sha) };
  switch (out.kind) {
    case "confirmed":
      return {
        outcome: out.kind,
        image,
        slotOffset: out.slotOffset,
        version: out.version,
        resumedFrom: out.resumedFrom,
        device: infoJson(out.info),
      };
    case "rolled-back":
      return {
        outcome: out.kind,
        image,
        runningOffset: out.runningOffset,
        newSlotState: out.newSlotState === undefined ? null : stateName(out.newSlotState),
        device: infoJson(out.info),
      };
    case "info":
      return { outcome: out.kind, image, device: infoJson(out.info) };
  }
}

/** The image file, read a chunk at a time (memory bounded by a chunk, STYLE.md §10). */
function fileSource(path: string): {
  source: ImageSource;
  size: number;
  sha: Uint8Array;
  close(): void;
} {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new EspOtaError(
      "E_FILE_READ",
      `cannot read ${path}: ${(e as Error).message}`,
      { path },
      e,
    );
  }
  const size = fstatSync(fd).size;
  const read = (offset: number, length: number) => {
    const b = Buffer.alloc(length);
    const n = readSync(fd, b, 0, length, offset);
    return new Uint8Array(b.buffer, b.byteOffset, n);
  };
  const h = sha256.create();
  for (let o = 0; o < size; o += 65536) h.update(read(o, Math.min(65536, size - o)));
  return { source: { read }, size, sha: h.digest(), close: () => closeSync(fd) };
}

export function registerDevice(program: Command, ctx: CliContext): void {
  const device = program
    .command("device")
    .description("Talk to an ESP32 over the UART OTA protocol (docs/uart-protocol.md).");

  device
    .command("info")
    .description("Handshake and show the device: chip, MAC, security, slots, otadata, running app.")
    .requiredOption("--port <path>", "serial port (or a `sim serve` pty)")
    .option(
      "--baud <rate>",
      "negotiate this rate after the handshake (default: stay at 115200)",
      parseIntArg,
    )
    .option("--json", "machine-readable output", false)
    .action(async (o) => {
      const out = await runSession(ctx, o.port, {
        mode: "info",
        ...(o.baud ? { targetBaud: o.baud } : {}),
      });
      if (out.kind !== "info") throw new EspOtaError("E_UART_PROTOCOL", "no INFO");
      if (o.json) ctx.print(JSON.stringify(infoJson(out.info), null, 2));
      else for (const l of formatInfo(out.info)) ctx.print(l);
    });

  device
    .command("flash")
    .description(
      "Send an image pre-encrypted for the next OTA slot, verify it on the device, activate, reboot, and wait for the new app to confirm itself or roll back.",
    )
    .requiredOption("--port <path>", "serial port (or a `sim serve` pty)")
    .requiredOption(
      "--offset <addr>",
      "the slot's flash offset (must be the device's next slot)",
      parseIntArg,
    )
    .option("--baud <rate>", "negotiate this rate for the transfer", parseIntArg, 921600)
    .option("--sha256 <hex>", "expected SHA-256 of IMAGE (refuse if the file differs)")
    .option(
      "--json",
      "the outcome as one JSON object on stdout, also when the device rolled back (exit 1 then)",
    )
    .argument("<image>", "the ciphertext: signed, then encrypted for this device at --offset")
    .action(async (imagePath: string, o) => {
      const img = fileSource(resolve(ctx.cwd, imagePath));
      try {
        if (o.sha256 && toHex(fromHex(o.sha256)) !== toHex(img.sha))
          throw new EspOtaError(
            "E_UART_HASH_MISMATCH",
            `${imagePath} has SHA-256 ${toHex(img.sha)}, not the --sha256 given`,
          );
        let shown = -1;
        const out = await runSession(
          ctx,
          o.port,
          {
            mode: "flash",
            image: { offset: o.offset, size: img.size, sha256: img.sha },
            requireNextSlot: true,
            targetBaud: o.baud,
          },
          img.source,
          (acked, total) => {
            const pct = Math.floor((acked * 100) / total / 10) * 10;
            if (pct !== shown) {
              shown = pct;
              ctx.note(`transfer ${pct}% (${acked}/${total} bytes)`);
            }
          },
        );
        if (o.json) ctx.print(JSON.stringify(flashJson(out, imagePath, img), null, 2));
        if (out.kind === "rolled-back")
          throw new EspOtaError("E_UART_ROLLED_BACK", describeOutcome(out), {
            running: out.runningOffset,
          });
        if (!o.json) ctx.print(describeOutcome(out));
      } finally {
        img.close();
      }
    });
}
