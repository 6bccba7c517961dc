/*
 * esp_ota_uart portable core: the device side of the UART OTA protocol (docs/uart-protocol.md)
 * as a push machine. The core takes bytes (uota_feed) and time (uota_tick), never blocks, never
 * allocates, and reaches hardware only through the uota_port_t function table (STYLE.md §16).
 * The same translation units run on ESP-IDF (port_esp_idf.c), in the simulator as WebAssembly
 * (port_wasm.c) and natively under sanitizers (test/firmware/fuzz_core.c).
 *
 * All data is uint8_t; multi-byte wire fields are assembled byte by byte, little-endian
 * (STYLE.md §17): no buffer is ever cast to a struct, so no access is unaligned.
 */
#ifndef UOTA_CORE_H
#define UOTA_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol constants (docs/uart-protocol.md §2, §4). */
#define UOTA_PROTOCOL_VERSION 1u
#define UOTA_DATA_CHUNK 4096u
#define UOTA_MAX_PAYLOAD (4096u + 64u)
#define UOTA_FRAME_OVERHEAD 10u
#define UOTA_FRAME_MAX (UOTA_MAX_PAYLOAD + UOTA_FRAME_OVERHEAD)
#define UOTA_FRAME_GAP_MS 50u
#define UOTA_BAUD_CONFIRM_MS 1000u
#define UOTA_HW_FIFO 128u
#define UOTA_SECTOR 0x1000u
#define UOTA_BLOCK 0x10000u
#define UOTA_PAGE 0x100u
/* A progress entry each 64 KB in flash (§6.4): at most 256 per 16 MB slot. */
#define UOTA_PROGRESS_EVERY UOTA_BLOCK
#define UOTA_MAX_SLOTS 16u
#define UOTA_LABEL_MAX 16u
#define UOTA_VERSION_MAX 32u
#define UOTA_DETAIL_MAX 255u
/* esp_ota_img_states_t has no "none": the wire uses 0xFFFFFFFF (ESP_OTA_IMG_UNDEFINED). */
#define UOTA_STATE_UNDEFINED 0xFFFFFFFFu
#define UOTA_STATE_PENDING_VERIFY 1u

/* Write buffer: one DATA chunk with the ISR in IRAM, one batch (W chunks) without. */
#ifndef UOTA_STAGING_BYTES
#define UOTA_STAGING_BYTES 8192u
#endif
/* Largest frame the device sends: INFO with UOTA_MAX_SLOTS slots is < 900 bytes. */
#define UOTA_TX_MAX 1024u

/* esp_err_t values the core produces or maps (esp_err.h, esp_ota_ops.h). */
#define UOTA_ESP_OK 0
#define UOTA_ESP_FAIL (-1)
#define UOTA_ESP_ERR_INVALID_ARG 0x102
#define UOTA_ESP_ERR_INVALID_SIZE 0x104
#define UOTA_ESP_ERR_NOT_FOUND 0x105
#define UOTA_ESP_ERR_INVALID_CRC 0x109
#define UOTA_ESP_ERR_OTA_PARTITION_CONFLICT 0x1501
#define UOTA_ESP_ERR_OTA_VALIDATE_FAILED 0x1503
#define UOTA_ESP_ERR_OTA_SMALL_SEC_VER 0x1504
#define UOTA_ESP_ERR_OTA_ROLLBACK_INVALID_STATE 0x1506

typedef enum {
    UOTA_IDLE = 0,
    UOTA_RECEIVING = 1,
    UOTA_VERIFIED = 2,
    UOTA_ACTIVATED = 3,
} uota_state_t;

typedef enum { UOTA_LOG_ERROR = 1, UOTA_LOG_WARN = 2, UOTA_LOG_INFO = 3 } uota_log_level_t;

/* One app partition as the partition table lists it. */
typedef struct {
    uint8_t label[UOTA_LABEL_MAX];
    uint8_t label_len;
    uint8_t subtype;
    uint32_t offset;
    uint32_t size;
} uota_slot_t;

/* The running app (esp_ota_get_running_partition, esp_ota_get_state_partition). */
typedef struct {
    uint32_t offset;
    /* Its otadata state now, and when the app started (UOTA_STATE_UNDEFINED: none). */
    uint32_t state;
    uint32_t boot_state;
    uint8_t version[UOTA_VERSION_MAX];
    uint8_t version_len;
} uota_running_t;

/* What INFO reports beyond the slots and the running app (§4 INFO). */
typedef struct {
    uint8_t chip[UOTA_LABEL_MAX];
    uint8_t chip_len;
    uint8_t revision;
    uint8_t mac[6];
    uint32_t flash_size;
    uint8_t flash_encryption; /* 0 off, 1 development, 2 release */
    uint8_t secure_boot_version;
    uint8_t efuse_secure_version;
    uint8_t otadata[64];   /* both otadata copies' first 32 bytes, raw */
    uint8_t app_desc[256]; /* the running app's esp_app_desc_t, raw */
    bool has_partition_table_sha256;
    uint8_t partition_table_sha256[32];
} uota_identity_t;

/* esp_image_verify of a written slot and what its descriptor says (END). */
typedef struct {
    uint8_t version[UOTA_VERSION_MAX];
    uint8_t version_len;
    uint32_t secure_version;
    uint32_t efuse_secure_version;
    /* Why verification failed, for RESULT's detail (UTF-8, at most 255 bytes). */
    uint8_t detail[UOTA_DETAIL_MAX];
    uint8_t detail_len;
} uota_image_check_t;

/* The durable progress record (§6.4). */
typedef struct {
    uint32_t offset;
    uint32_t size;
    uint8_t sha256[32];
    uint32_t written;
} uota_record_t;

/*
 * Everything the core needs from the platform. `part` is always a partition's absolute flash
 * offset; offsets are relative to it. Flash calls return an esp_err_t.
 */
typedef struct {
    void *user;
    int32_t (*erase)(void *user, uint32_t part, uint32_t offset, uint32_t len);
    int32_t (*write_raw)(void *user, uint32_t part, uint32_t offset, const uint8_t *data, uint32_t len);
    int32_t (*read_raw)(void *user, uint32_t part, uint32_t offset, uint8_t *buf, uint32_t len);
    /* Verify the image in `part` through the decrypting cache; ESP_OK or an error. */
    int32_t (*verify_image)(void *user, uint32_t part, uota_image_check_t *out);
    /* esp_ota_set_boot_partition: verifies again, applies anti-rollback, writes otadata. */
    int32_t (*set_boot)(void *user, uint32_t part);
    int32_t (*invalidate_inactive_otadata)(void *user);
    void (*running)(void *user, uota_running_t *out);
    /* App partitions in table order; returns how many were written (at most max). */
    uint8_t (*app_slots)(void *user, uota_slot_t *out, uint8_t max);
    void (*identity)(void *user, uota_identity_t *out);
    int32_t (*mark_valid)(void *user);
    /* Marks the running app invalid; on success the platform reboots into the previous one. */
    int32_t (*mark_invalid)(void *user);
    bool (*record_get)(void *user, uota_record_t *out);
    void (*record_open)(void *user, uint32_t part, uint32_t size, const uint8_t sha256[32]);
    void (*record_progress)(void *user, uint32_t written);
    void (*record_close)(void *user);
    /* The one write path to the UART: a whole frame or a whole log line per call. */
    void (*uart_write)(void *user, const uint8_t *data, uint32_t len);
    /* Switch the UART rate once what was written has left (uart_wait_tx_done first). */
    void (*set_baud)(void *user, uint32_t baud);
    /* Restart once what was written has left. May return (the simulator restarts later). */
    void (*restart)(void *user);
    void (*log)(void *user, uota_log_level_t level, const uint8_t *text, uint32_t len);
} uota_port_t;

typedef struct {
    /* uart_driver_install rx_buffer_size: sizes the host's window (§7). */
    uint32_t ring_bytes;
    /* CONFIG_UART_ISR_IN_IRAM: reception continues during flash operations. */
    bool isr_in_iram;
    /* The rate the console starts at. */
    uint32_t console_baud;
    /* Give up a partial frame after this much silence (§2.3); 0 if the port reports gaps. */
    uint32_t frame_gap_ms;
    /* CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK. */
    bool rollback;
    bool anti_rollback;
    /* Flash timings for the no-IRAM busy estimate (datasheet typical, microseconds). */
    uint32_t sector_erase_us;
    uint32_t block_erase_us;
    uint32_t page_program_us;
} uota_config_t;

/* SHA-256 (FIPS 180-4), portable; the same code in every build. */
typedef struct {
    uint32_t h[8];
    uint64_t total;
    uint8_t block[64];
    uint32_t used;
} uota_sha256_t;

void uota_sha256_init(uota_sha256_t *s);
void uota_sha256_update(uota_sha256_t *s, const uint8_t *data, size_t len);
void uota_sha256_final(uota_sha256_t *s, uint8_t out[32]);

uint8_t uota_crc8(const uint8_t *p, size_t n);
uint32_t uota_crc32_update(uint32_t crc, const uint8_t *p, size_t n);
uint32_t uota_crc32(const uint8_t *p, size_t n);

/* RESULT detail and log text under construction (one, in the context: off the stack). */
typedef struct {
    uint8_t b[UOTA_DETAIL_MAX];
    uint32_t n;
} uota_text_t;

/* One transfer (§6): absent in idle. */
typedef struct {
    uint32_t part; /* slot's absolute offset */
    uint32_t slot_size;
    uint8_t label[UOTA_LABEL_MAX];
    uint8_t label_len;
    uint32_t size;
    uint8_t sha256[32];
    uint32_t received;
    uint32_t written;
    uint32_t erased_to;
    uint32_t credit;
    uint32_t staging_len;
    uint32_t staging_cap;
    bool gap_reported;
    uint32_t gap_reported_at;
    uint32_t since_gap_report;
    uint32_t batch_end;
    uint8_t version[UOTA_VERSION_MAX]; /* verified: END's answer */
    uint8_t version_len;
} uota_transfer_t;

typedef struct {
    uota_config_t cfg;
    uota_port_t port;
    uota_state_t state;
    uota_transfer_t t;
    /* Image bytes per window/batch (§7). */
    uint32_t window;
    bool ack_due;
    uint32_t baud;
    uint32_t old_baud;
    bool baud_confirm_pending;
    uint32_t baud_confirm_at;
    /* Frame parser (§2.2): bytes from rx_head to rx_len are held. */
    uint8_t rx[UOTA_FRAME_MAX];
    uint32_t rx_head;
    uint32_t rx_len;
    bool rx_rescan;
    uint32_t last_rx_ms;
    bool seen_rx;
    uint8_t tx[UOTA_TX_MAX];
    uint8_t staging[UOTA_STAGING_BYTES];
    uota_identity_t ident;
    uota_slot_t slots[UOTA_MAX_SLOTS];
    uota_running_t running;
    uota_image_check_t check;
    uota_sha256_t sha;
    uota_text_t text;
    /* Counters (status and tests). */
    uint32_t frames;
    uint32_t crc_errors;
    uint32_t noise_bytes;
} uota_ctx_t;

/* Returns 0, or -1 when the configuration cannot work (a ring that holds no DATA frame). */
int uota_init(uota_ctx_t *ctx, const uota_config_t *cfg, const uota_port_t *port);

/*
 * Push received bytes. Consumes bytes until it has dispatched one frame or taken them all;
 * *consumed says how many. Returns true when it stopped after a frame: call again (with the
 * rest, possibly none) until it returns false. A port that must wait between frames (flash
 * busy) can do so between calls.
 */
bool uota_feed(uota_ctx_t *ctx, const uint8_t *data, size_t len, uint32_t now_ms, size_t *consumed);
/* Convenience: feed everything. */
void uota_feed_all(uota_ctx_t *ctx, const uint8_t *data, size_t len, uint32_t now_ms);
/* The line was silent FRAME_GAP_MS with a frame incomplete (a port that knows arrival times). */
void uota_line_gap(uota_ctx_t *ctx);
/* Input ran dry: send the ACK due, erase ahead (ISR in IRAM). */
void uota_idle(uota_ctx_t *ctx);
/* Timers: the frame gap (if cfg.frame_gap_ms) and the baud confirmation (§3.3). */
void uota_tick(uota_ctx_t *ctx, uint32_t now_ms);
/* Milliseconds until uota_tick has something to do, or -1. */
int32_t uota_next_deadline(const uota_ctx_t *ctx, uint32_t now_ms);
/* ANNOUNCE phase 0 (booted) or 1 (after the self-test). */
void uota_announce(uota_ctx_t *ctx, uint8_t phase);
/* The app's self-test finished: mark valid (ANNOUNCE phase 1) or invalid (roll back). */
int32_t uota_self_test_done(uota_ctx_t *ctx, bool ok);

#ifdef __cplusplus
}
#endif
#endif
