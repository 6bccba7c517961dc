/**
 * The ESP32 UART receive path (docs/uart-protocol.md §7): a 128-byte hardware FIFO that the
 * driver's ISR empties into a ring buffer (uart_driver_install rx_buffer_size). While the SPI
 * flash is erased or programmed the cache is off; an ISR not placed in IRAM
 * (CONFIG_UART_ISR_IN_IRAM=n, the default) cannot run, so only the FIFO takes bytes, and bytes
 * beyond its 128 are lost. With the ISR in IRAM the ring keeps filling.
 */
export const HW_FIFO = 128;

export interface RxConfig {
  /** Ring buffer bytes (uart_driver_install rx_buffer_size). */
  ringBytes: number;
  /** CONFIG_UART_ISR_IN_IRAM. */
  isrInIram: boolean;
}

/** The two receive configurations the firmware ships (src/firmware/Kconfig ESP_OTA_UART_RX_RING_BYTES). */
export const RX_CONFIGS = {
  /** CONFIG_UART_ISR_IN_IRAM=y with a 48 KB ring: reception continues during flash writes (48 KB hides a 150 ms block erase at 2 Mbaud plus a 16 ms turnaround; measured in npm run bench:uart). */
  iram: { ringBytes: 48 * 1024, isrInIram: true },
  /** The ESP-IDF default (ISR not in IRAM) with an 8 KB ring: only the FIFO during flash ops. */
  noIram: { ringBytes: 8 * 1024, isrInIram: false },
} as const;

export class RxModel {
  private q: Uint8Array;
  private head = 0;
  private count = 0;
  /** Bytes taken by the FIFO alone during the current flash operation (non-IRAM ISR). */
  private duringBusy = 0;
  lost = 0;
  highWater = 0;

  constructor(readonly cfg: RxConfig) {
    this.q = new Uint8Array(cfg.ringBytes + HW_FIFO);
  }

  get capacity(): number {
    return this.cfg.ringBytes + HW_FIFO;
  }

  get available(): number {
    return this.count;
  }

  /** Bytes arrive; `busy` says a flash operation is in progress. */
  arrive(bytes: Uint8Array, busy: boolean): void {
    for (const b of bytes) {
      if (
        this.count >= this.capacity ||
        (busy && !this.cfg.isrInIram && this.duringBusy >= HW_FIFO)
      ) {
        this.lost++;
        continue;
      }
      if (busy && !this.cfg.isrInIram) this.duringBusy++;
      this.q[(this.head + this.count) % this.q.length] = b;
      this.count++;
    }
    if (this.count > this.highWater) this.highWater = this.count;
  }

  /** The flash operation ended: the ISR runs again and moves the FIFO into the ring. */
  idle(): void {
    this.duringBusy = 0;
  }

  read(max: number): Uint8Array {
    const n = Math.min(max, this.count);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.q[(this.head + i) % this.q.length]!;
    this.head = (this.head + n) % this.q.length;
    this.count -= n;
    return out;
  }

  clear(): void {
    this.head = 0;
    this.count = 0;
    this.duringBusy = 0;
  }
}
