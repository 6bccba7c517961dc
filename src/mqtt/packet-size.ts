/**
 * The MQTT packet size limit, checked on the raw bytes before a packet is buffered (issue 12,
 * defect 7). aedes' parser (mqtt-packet 9) has no size limit: it collects a packet whole, up to
 * the 256 MB MQTT allows, before anything looks at it, and a retained one then stays. Three 64 MB
 * retained messages took the broker from 90 to 389 MB RSS. The fixed header says how long a
 * packet is (MQTT 3.1.1 §2.2.3, the Remaining Length), so a packet over the limit is refused
 * from its first bytes: the connection is closed and not one more of its bytes is read.
 *
 * Pure: bytes in, a verdict out.
 */

/**
 * The largest MQTT packet the embedded broker takes (its default maxPacketBytes) and every client
 * of src/mqtt/client.ts announces it accepts (MQTT 5 Maximum Packet Size, §3.1.2.11.4), fixed
 * header included: 512 KiB. The largest
 * message of the MQTT API is 256 KiB (MAX_MESSAGE_BYTES, src/mqtt/messages.ts, an inventory of
 * many devices), its topic at most 64 KiB; no packet a gateway or a tool sends comes near it.
 * AWS IoT Core's limit is 128 KB, Mosquitto's default none (docs/broker.md).
 */
export const MAX_PACKET_BYTES = 512 * 1024;

export type PacketVerdict = { ok: true } | { ok: false; length: number };

/**
 * Follows packet boundaries across chunks of one connection's byte stream. `feed` returns the
 * first packet over `max` bytes (header included) as soon as its Remaining Length is known,
 * or a malformed length (more than 4 bytes, §2.2.3) as length -1.
 */
export class PacketSizeGuard {
  /** Body bytes of the current packet still to skip. */
  private skip = 0;
  /** 0: at a packet's first byte; 1..4: reading its Remaining Length. */
  private lengthBytes = 0;
  private length = 0;
  private multiplier = 1;
  private failed: PacketVerdict | undefined;

  constructor(readonly max = MAX_PACKET_BYTES) {
    if (!Number.isSafeInteger(max) || max < 2)
      throw new RangeError("max must be an integer of at least 2 (the smallest packet)");
  }

  feed(chunk: Uint8Array): PacketVerdict {
    if (this.failed) return this.failed;
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      const b = chunk[i++]!;
      if (this.lengthBytes === 0) {
        // The packet type byte; its Remaining Length follows.
        this.lengthBytes = 1;
        this.length = 0;
        this.multiplier = 1;
        continue;
      }
      this.length += (b & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      if (b & 0x80) {
        if (this.lengthBytes === 4) return this.fail(-1);
        this.lengthBytes++;
        continue;
      }
      const total = 1 + this.lengthBytes + this.length;
      if (total > this.max) return this.fail(total);
      this.lengthBytes = 0;
      this.skip = this.length;
    }
    return { ok: true };
  }

  private fail(length: number): PacketVerdict {
    this.failed = { ok: false, length };
    return this.failed;
  }
}
