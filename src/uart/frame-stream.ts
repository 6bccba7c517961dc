/**
 * Streams over the pure codec (STYLE.md §8): `FrameParser` is a Transform from bytes to decode
 * events (frames, console lines, CRC errors), and `duplexPort` makes any Node Duplex (a
 * serialport, a socket, a TCP-to-serial bridge) a BytePort a HostSession can run over.
 */
import { type Duplex, Transform, type TransformCallback } from "node:stream";
import { type DecodeEvent, FrameDecoder } from "./frame.js";
import type { BytePort } from "./port.js";

export class FrameParser extends Transform {
  readonly decoder = new FrameDecoder();

  constructor() {
    super({ readableObjectMode: true });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    for (const ev of this.decoder.push(
      new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length),
    ))
      this.push(ev satisfies DecodeEvent);
    done();
  }

  override _flush(done: TransformCallback): void {
    for (const ev of this.decoder.flushLine()) this.push(ev);
    done();
  }
}

/**
 * A Duplex as a BytePort. `setBaud` is passed to the stream's `update({ baudRate })` when it has
 * one (serialport does); a stream without a baud rate (a socket) just records it.
 */
export function duplexPort(stream: Duplex, baud = 115200): BytePort {
  let rate = baud;
  return {
    get baud() {
      return rate;
    },
    write(bytes) {
      stream.write(Buffer.from(bytes));
    },
    onData(cb) {
      stream.on("data", (b: Buffer) => cb(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    },
    onClose(cb) {
      stream.once("close", cb);
    },
    setBaud(b) {
      rate = b;
      const s = stream as Duplex & { update?: (o: { baudRate: number }) => void };
      s.update?.({ baudRate: b });
    },
    close() {
      stream.destroy();
    },
  };
}
