/*
 * The ESP-IDF port of esp_ota_uart: a FreeRTOS task over the UART driver feeding the portable
 * core (uota_core.c), and the core's port functions on ESP-IDF's flash, OTA, eFuse and NVS
 * APIs. Written against ESP-IDF 5.x/6.x as documented; each call cites its header and the
 * behaviour relied on. It is cross-compiled in the tests (test/firmware/cross.test.ts) against
 * the component's own declarations of these calls (test/firmware/idf/); it has not run on a
 * board in this repository's CI (docs/firmware.md says how to test it on one).
 *
 * Why not esp_ota_begin/esp_ota_write/esp_ota_end: the image arrives as ciphertext for the
 * slot's address (docs/uart-protocol.md intro). esp_ota_write rejects a first byte other than
 * 0xE9 (ESP_ERR_OTA_VALIDATE_FAILED) and, under flash encryption, encrypts what it writes a
 * second time; esp_ota_end refuses a handle never written through (ESP_ERR_INVALID_ARG)
 * (components/app_update/esp_ota_ops.c). So the port writes raw and does itself the checks
 * esp_ota_begin would make: the core refuses the running slot and a PENDING_VERIFY app, and
 * invalidate_inactive_otadata runs before the first write.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "esp_app_desc.h"      /* esp_app_desc_t (ESP-IDF >= 5.0, component esp_app_format) */
#include "esp_chip_info.h"     /* esp_chip_info */
#include "esp_efuse.h"         /* esp_efuse_read_secure_version */
#include "esp_err.h"
#include "esp_flash.h"         /* esp_flash_read, esp_flash_read_encrypted, esp_flash_get_size */
#include "esp_flash_encrypt.h" /* esp_flash_encryption_enabled, esp_get_flash_encryption_mode */
#include "esp_idf_version.h"
#include "esp_image_format.h"  /* esp_image_verify (component bootloader_support) */
#include "esp_log.h"           /* esp_log_set_vprintf, ESP_LOGx */
#include "esp_mac.h"           /* esp_efuse_mac_get_default (ESP-IDF >= 5.0) */
#include "esp_ota_ops.h"       /* esp_ota_* (component app_update) */
#include "esp_partition.h"     /* esp_partition_* (component esp_partition, ESP-IDF >= 5.1) */
#include "esp_rom_crc.h"       /* esp_rom_crc32_le */
#include "esp_secure_boot.h"   /* esp_secure_boot_enabled */
#include "esp_system.h"        /* esp_restart */
#include "esp_timer.h"         /* esp_timer_get_time */
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "driver/uart.h"       /* uart_* (component esp_driver_uart, ESP-IDF >= 5.3; driver before) */
#include "nvs.h"               /* nvs_* (component nvs_flash) */
#include "sdkconfig.h"

#include "esp_ota_uart.h"
#include "uota_core.h"

static const char *TAG = "esp_ota_uart";

#define NOTIFY_SELF_TEST_OK (1u << 0)
#define NOTIFY_SELF_TEST_FAIL (1u << 1)
#define READ_CHUNK 256u
#define LOG_LINE 256u
/* NVS blob: u32 offset, u32 size, 32 sha256, u32 written (little-endian, byte by byte). */
#define RECORD_LEN 44u
#define NVS_NAMESPACE "esp_ota_uart"
#define NVS_KEY "progress"

typedef struct {
    uart_port_t uart;
    const esp_partition_t *parts[UOTA_MAX_SLOTS];
    uint8_t part_count;
    const esp_partition_t *otadata;
    const esp_partition_t *running;
    uint32_t boot_state;
    nvs_handle_t nvs;
    bool nvs_ok;
    uota_record_t record;
    /* One writer for frames and log lines (docs/uart-protocol.md §1). */
    SemaphoreHandle_t tx_lock;
    vprintf_like_t prev_vprintf;
    TaskHandle_t task;
    portMUX_TYPE status_lock;
    esp_ota_uart_status_t status;
} idf_port_t;

static idf_port_t s_port = {.status_lock = portMUX_INITIALIZER_UNLOCKED};
static uota_ctx_t s_ctx;
static uint8_t s_rx[READ_CHUNK];
static char s_log_line[LOG_LINE]; /* vsnprintf's text, under tx_lock */
static bool s_started;

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static const esp_partition_t *part_at(uint32_t address)
{
    for (uint8_t i = 0; i < s_port.part_count; i++) {
        if (s_port.parts[i]->address == address) return s_port.parts[i];
    }
    return NULL;
}

/* ---- flash: esp_partition.h. erase_range needs sector-aligned offset and size
 * (ESP_ERR_INVALID_ARG otherwise); write_raw/read_raw never encrypt/decrypt, which is what
 * ciphertext for this address needs (esp32-facts §4.3). Both refuse ranges beyond the
 * partition (ESP_ERR_INVALID_SIZE). */

static int32_t p_erase(void *u, uint32_t part, uint32_t off, uint32_t len)
{
    (void)u;
    const esp_partition_t *p = part_at(part);
    if (p == NULL) return ESP_ERR_NOT_FOUND;
    return esp_partition_erase_range(p, off, len);
}

static int32_t p_write_raw(void *u, uint32_t part, uint32_t off, const uint8_t *d, uint32_t len)
{
    (void)u;
    const esp_partition_t *p = part_at(part);
    if (p == NULL) return ESP_ERR_NOT_FOUND;
    return esp_partition_write_raw(p, off, d, len);
}

static int32_t p_read_raw(void *u, uint32_t part, uint32_t off, uint8_t *b, uint32_t len)
{
    (void)u;
    const esp_partition_t *p = part_at(part);
    if (p == NULL) return ESP_ERR_NOT_FOUND;
    return esp_partition_read_raw(p, off, b, len);
}

static void put_text(uint8_t *dst, uint8_t *dst_len, uint32_t max, const char *s)
{
    size_t n = strnlen(s, max);
    memcpy(dst, s, n);
    *dst_len = (uint8_t)n;
}

static int32_t p_verify_image(void *u, uint32_t part, uota_image_check_t *out)
{
    (void)u;
    const esp_partition_t *p = part_at(part);
    if (p == NULL) return ESP_ERR_NOT_FOUND;
    /* esp_image_format.h: esp_image_verify(ESP_IMAGE_VERIFY, ...) checks the header, the
     * segments' checksum, the appended SHA-256 and, with secure boot, the signature, reading
     * through the cache (so decrypted under flash encryption). */
    esp_partition_pos_t pos = {.offset = p->address, .size = p->size};
    esp_image_metadata_t meta;
    esp_err_t err = esp_image_verify(ESP_IMAGE_VERIFY, &pos, &meta);
    /* esp_efuse.h: the secure_version burnt in eFuse (anti-rollback). */
    out->efuse_secure_version = esp_efuse_read_secure_version();
    if (err != ESP_OK) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "esp_image_verify: %s", esp_err_to_name(err));
        put_text(out->detail, &out->detail_len, (uint32_t)(n > 0 ? n : 0), msg);
        return err;
    }
    /* esp_ota_ops.h: the esp_app_desc_t of a partition (read decrypted). */
    esp_app_desc_t desc;
    err = esp_ota_get_partition_description(p, &desc);
    if (err != ESP_OK) {
        put_text(out->detail, &out->detail_len, UOTA_DETAIL_MAX, "esp_ota_get_partition_description failed");
        return err;
    }
    put_text(out->version, &out->version_len, UOTA_VERSION_MAX, desc.version);
    out->secure_version = desc.secure_version;
    return ESP_OK;
}

static int32_t p_set_boot(void *u, uint32_t part)
{
    (void)u;
    const esp_partition_t *p = part_at(part);
    if (p == NULL) return ESP_ERR_NOT_FOUND;
    /* esp_ota_ops.h: verifies the image again, and with anti-rollback erases a slot whose
     * secure_version is below the eFuse (ESP_ERR_OTA_SMALL_SEC_VER), else writes otadata
     * (state NEW with rollback on). The core reports both errors with their own esp_err_t. */
    return esp_ota_set_boot_partition(p);
}

#if ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 5, 0)
/* Before 5.5 there is no esp_ota_invalidate_inactive_ota_data_slot: erase the otadata sector
 * that does not hold the active entry (the valid one with the higher ota_seq; an entry is
 * valid when ota_seq != 0xFFFFFFFF and its crc is esp_rom_crc32_le(UINT32_MAX, ota_seq)). */
static bool otadata_entry(const uint8_t e[32], uint32_t *seq)
{
    *seq = get32(e);
    return *seq != 0xFFFFFFFFu && get32(e + 28) == esp_rom_crc32_le(UINT32_MAX, e, 4);
}

static int32_t invalidate_inactive_fallback(void)
{
    const esp_partition_t *od = s_port.otadata;
    if (od == NULL) return ESP_ERR_NOT_FOUND;
    uint8_t a[32], b[32];
    esp_err_t err = esp_partition_read(od, 0, a, sizeof a);
    if (err == ESP_OK) err = esp_partition_read(od, od->erase_size, b, sizeof b);
    if (err != ESP_OK) return err;
    uint32_t sa, sb;
    bool va = otadata_entry(a, &sa), vb = otadata_entry(b, &sb);
    if (!va && !vb) return ESP_OK;
    uint32_t inactive = (va && (!vb || sa >= sb)) ? 1u : 0u;
    return esp_partition_erase_range(od, inactive * od->erase_size, od->erase_size);
}
#endif

static int32_t p_invalidate(void *u)
{
    (void)u;
#if ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 5, 0)
    /* esp_ota_ops.h (>= 5.5): erases the otadata copy of the last boot app partition, so
     * otadata cannot fall back to the slot we are about to overwrite. */
    return esp_ota_invalidate_inactive_ota_data_slot();
#else
    return invalidate_inactive_fallback();
#endif
}

static uint32_t state_of(const esp_partition_t *p)
{
    /* esp_ota_ops.h: ESP_ERR_NOT_SUPPORTED (not an OTA slot) or ESP_ERR_NOT_FOUND (no entry):
     * the wire says 0xFFFFFFFF. */
    esp_ota_img_states_t st;
    return esp_ota_get_state_partition(p, &st) == ESP_OK ? (uint32_t)st : UOTA_STATE_UNDEFINED;
}

static void p_running(void *u, uota_running_t *out)
{
    (void)u;
    out->offset = s_port.running->address;
    out->state = state_of(s_port.running);
    out->boot_state = s_port.boot_state;
    /* esp_app_desc.h: the running app's descriptor (static, valid for the app's lifetime). */
    put_text(out->version, &out->version_len, UOTA_VERSION_MAX, esp_app_get_description()->version);
}

static uint8_t p_app_slots(void *u, uota_slot_t *out, uint8_t max)
{
    (void)u;
    uint8_t n = s_port.part_count < max ? s_port.part_count : max;
    for (uint8_t i = 0; i < n; i++) {
        const esp_partition_t *p = s_port.parts[i];
        put_text(out[i].label, &out[i].label_len, UOTA_LABEL_MAX, p->label);
        out[i].subtype = (uint8_t)p->subtype;
        out[i].offset = p->address;
        out[i].size = p->size;
    }
    return n;
}

static void p_identity(void *u, uota_identity_t *out)
{
    (void)u;
    put_text(out->chip, &out->chip_len, UOTA_LABEL_MAX, CONFIG_IDF_TARGET);
    /* esp_chip_info.h (>= 5.0): revision is major * 100 + minor; INFO carries the major. */
    esp_chip_info_t ci;
    esp_chip_info(&ci);
    out->revision = (uint8_t)(ci.revision / 100u);
    /* esp_mac.h: the factory MAC from eFuse. */
    (void)esp_efuse_mac_get_default(out->mac);
    uint32_t size = 0;
    (void)esp_flash_get_size(NULL, &size); /* esp_flash.h: NULL = the main flash chip */
    out->flash_size = size;
    /* esp_flash_encrypt.h */
    if (!esp_flash_encryption_enabled()) out->flash_encryption = 0;
    else out->flash_encryption = esp_get_flash_encryption_mode() == ESP_FLASH_ENC_MODE_RELEASE ? 2u : 1u;
#if CONFIG_SECURE_BOOT_V2_ENABLED
    out->secure_boot_version = esp_secure_boot_enabled() ? 2u : 0u;
#elif CONFIG_SECURE_BOOT_V1_ENABLED
    out->secure_boot_version = esp_secure_boot_enabled() ? 1u : 0u;
#else
    out->secure_boot_version = 0;
#endif
    uint32_t sv = esp_efuse_read_secure_version();
    out->efuse_secure_version = (uint8_t)(sv > 255u ? 255u : sv);
    memset(out->otadata, 0xFF, sizeof out->otadata);
    if (s_port.otadata != NULL) {
        /* esp_partition.h: esp_partition_read decrypts an encrypted partition. */
        (void)esp_partition_read(s_port.otadata, 0, out->otadata, 32);
        (void)esp_partition_read(s_port.otadata, s_port.otadata->erase_size, out->otadata + 32, 32);
    }
    /* The descriptor as it sits 32 bytes into the running image (the bytes
     * esp_app_get_description() returns), read decrypted, raw. */
    (void)esp_partition_read(s_port.running, 32, out->app_desc, sizeof out->app_desc);
    /* The partition table as the app reads it (0xC00 bytes at CONFIG_PARTITION_TABLE_OFFSET):
     * esp_flash_read_encrypted decrypts through the cache when flash encryption is on,
     * esp_flash_read reads plain flash (esp_flash.h). Hashed in 256-byte pieces: HELLO may
     * come mid-transfer, when the core's write buffer holds data. */
    uota_sha256_t sha;
    uint8_t piece[256];
    uota_sha256_init(&sha);
    out->has_partition_table_sha256 = true;
    for (uint32_t o = 0; o < 0xC00u; o += sizeof piece) {
        esp_err_t err = esp_flash_encryption_enabled()
                            ? esp_flash_read_encrypted(NULL, CONFIG_PARTITION_TABLE_OFFSET + o, piece, sizeof piece)
                            : esp_flash_read(NULL, piece, CONFIG_PARTITION_TABLE_OFFSET + o, sizeof piece);
        if (err != ESP_OK) {
            out->has_partition_table_sha256 = false;
            break;
        }
        uota_sha256_update(&sha, piece, sizeof piece);
    }
    uota_sha256_final(&sha, out->partition_table_sha256);
}

static int32_t p_mark_valid(void *u)
{
    (void)u;
    /* esp_ota_ops.h: writes otadata state VALID; with anti-rollback it also burns the app's
     * secure_version into eFuse (irreversible). */
    return esp_ota_mark_app_valid_cancel_rollback();
}

static int32_t p_mark_invalid(void *u)
{
    (void)u;
    /* esp_ota_ops.h: marks the app INVALID and reboots; returns only on failure
     * (ESP_ERR_OTA_ROLLBACK_FAILED: no other app to boot). Let the log line leave first. */
    (void)uart_wait_tx_done(s_port.uart, pdMS_TO_TICKS(100));
    return esp_ota_mark_app_invalid_rollback_and_reboot();
}

/* ---- the progress record: one NVS blob (nvs.h). With flash encryption on, use an encrypted
 * NVS partition (CONFIG_NVS_ENCRYPTION / nvs_flash_secure_init, docs/firmware.md). NVS itself
 * is append-only and survives a power cut in a write (the old value stays). */

static void record_store(void)
{
    if (!s_port.nvs_ok) return;
    uint8_t b[RECORD_LEN];
    put32(b, s_port.record.offset);
    put32(b + 4, s_port.record.size);
    memcpy(b + 8, s_port.record.sha256, 32);
    put32(b + 40, s_port.record.written);
    esp_err_t err = nvs_set_blob(s_port.nvs, NVS_KEY, b, sizeof b);
    if (err == ESP_OK) err = nvs_commit(s_port.nvs);
    if (err != ESP_OK) ESP_LOGW(TAG, "progress record: %s", esp_err_to_name(err));
}

static bool p_record_get(void *u, uota_record_t *out)
{
    (void)u;
    if (!s_port.nvs_ok) return false;
    uint8_t b[RECORD_LEN];
    size_t len = sizeof b;
    if (nvs_get_blob(s_port.nvs, NVS_KEY, b, &len) != ESP_OK || len != RECORD_LEN) return false;
    out->offset = get32(b);
    out->size = get32(b + 4);
    memcpy(out->sha256, b + 8, 32);
    out->written = get32(b + 40);
    return true;
}

static void p_record_open(void *u, uint32_t part, uint32_t size, const uint8_t sha[32])
{
    (void)u;
    s_port.record.offset = part;
    s_port.record.size = size;
    memcpy(s_port.record.sha256, sha, 32);
    s_port.record.written = 0;
    record_store();
}

static void p_record_progress(void *u, uint32_t written)
{
    (void)u;
    s_port.record.written = written;
    record_store();
}

static void p_record_close(void *u)
{
    (void)u;
    if (!s_port.nvs_ok) return;
    esp_err_t err = nvs_erase_key(s_port.nvs, NVS_KEY);
    if (err == ESP_OK || err == ESP_ERR_NVS_NOT_FOUND) err = nvs_commit(s_port.nvs);
    if (err != ESP_OK) ESP_LOGW(TAG, "progress record close: %s", esp_err_to_name(err));
}

/* ---- the one writer: frames and log lines never interleave (uart-protocol.md §1). */

static void write_locked(const uint8_t *d, uint32_t len)
{
    /* driver/uart.h: with no TX ring (tx_buffer_size 0) uart_write_bytes returns once every
     * byte is in the FIFO, so the whole frame is out of our hands before the lock is given. */
    xSemaphoreTakeRecursive(s_port.tx_lock, portMAX_DELAY);
    (void)uart_write_bytes(s_port.uart, d, len);
    xSemaphoreGiveRecursive(s_port.tx_lock);
}

static void p_uart_write(void *u, const uint8_t *d, uint32_t len)
{
    (void)u;
    write_locked(d, len);
}

static int log_vprintf(const char *fmt, va_list ap)
{
    /* esp_log.h: the vprintf-like sink of every ESP_LOGx line, called from any task (never
     * from an ISR: ESP_EARLY_LOGx and ESP_DRAM_LOGx use the ROM printf instead). */
    if (xPortInIsrContext() || xTaskGetSchedulerState() != taskSCHEDULER_RUNNING)
        return s_port.prev_vprintf ? s_port.prev_vprintf(fmt, ap) : 0;
    xSemaphoreTakeRecursive(s_port.tx_lock, portMAX_DELAY);
    int n = vsnprintf(s_log_line, sizeof s_log_line, fmt, ap);
    if (n > 0) {
        uint32_t len = (uint32_t)n < sizeof s_log_line ? (uint32_t)n : (uint32_t)sizeof s_log_line - 1u;
        (void)uart_write_bytes(s_port.uart, (const uint8_t *)s_log_line, len);
    }
    xSemaphoreGiveRecursive(s_port.tx_lock);
    return n;
}

static void p_set_baud(void *u, uint32_t baud)
{
    (void)u;
    /* driver/uart.h: wait until the RESULT has left at the old rate, then switch (§3.3). */
    (void)uart_wait_tx_done(s_port.uart, pdMS_TO_TICKS(100));
    (void)uart_set_baudrate(s_port.uart, baud);
}

static void p_restart(void *u)
{
    (void)u;
    (void)uart_wait_tx_done(s_port.uart, pdMS_TO_TICKS(100));
    esp_restart(); /* esp_system.h: does not return */
}

static void p_log(void *u, uota_log_level_t level, const uint8_t *text, uint32_t len)
{
    (void)u;
    int n = (int)len;
    const char *s = (const char *)text; /* printf's %.*s wants char; the bytes are ASCII */
    if (level == UOTA_LOG_ERROR) ESP_LOGE(TAG, "%.*s", n, s);
    else if (level == UOTA_LOG_WARN) ESP_LOGW(TAG, "%.*s", n, s);
    else ESP_LOGI(TAG, "%.*s", n, s);
}

static const uota_port_t s_uota_port = {
    .user = NULL,
    .erase = p_erase,
    .write_raw = p_write_raw,
    .read_raw = p_read_raw,
    .verify_image = p_verify_image,
    .set_boot = p_set_boot,
    .invalidate_inactive_otadata = p_invalidate,
    .running = p_running,
    .app_slots = p_app_slots,
    .identity = p_identity,
    .mark_valid = p_mark_valid,
    .mark_invalid = p_mark_invalid,
    .record_get = p_record_get,
    .record_open = p_record_open,
    .record_progress = p_record_progress,
    .record_close = p_record_close,
    .uart_write = p_uart_write,
    .set_baud = p_set_baud,
    .restart = p_restart,
    .log = p_log,
};

/* ---- the task */

static uint32_t now_ms(void)
{
    return (uint32_t)(esp_timer_get_time() / 1000); /* esp_timer.h: µs since boot */
}

static void publish_status(void)
{
    taskENTER_CRITICAL(&s_port.status_lock);
    s_port.status.state = (esp_ota_uart_state_t)s_ctx.state;
    s_port.status.frames = s_ctx.frames;
    s_port.status.crc_errors = s_ctx.crc_errors;
    s_port.status.received = s_ctx.state == UOTA_RECEIVING ? s_ctx.t.received : 0u;
    s_port.status.size = s_ctx.state == UOTA_IDLE ? 0u : s_ctx.t.size;
    taskEXIT_CRITICAL(&s_port.status_lock);
}

static void receiver_task(void *arg)
{
    (void)arg;
    uota_announce(&s_ctx, 0);
    /* Nothing to confirm (already VALID, a factory app, rollback off): say so now. */
    if (s_port.boot_state != UOTA_STATE_PENDING_VERIFY) uota_announce(&s_ctx, 1);
    for (;;) {
        uint32_t bits = 0;
        if (xTaskNotifyWait(0, UINT32_MAX, &bits, 0) == pdTRUE) {
            if (bits & NOTIFY_SELF_TEST_FAIL) (void)uota_self_test_done(&s_ctx, false);
            else if (bits & NOTIFY_SELF_TEST_OK) (void)uota_self_test_done(&s_ctx, true);
        }
        size_t avail = 0;
        (void)uart_get_buffered_data_len(s_port.uart, &avail);
        /* driver/uart.h: uart_read_bytes blocks until `length` bytes or the timeout; ask for
         * what is there, or wait up to 10 ms for one byte (the tick's resolution). */
        int n = avail > 0 ? uart_read_bytes(s_port.uart, s_rx, avail < READ_CHUNK ? avail : READ_CHUNK, 0)
                          : uart_read_bytes(s_port.uart, s_rx, 1, pdMS_TO_TICKS(10));
        uint32_t t = now_ms();
        if (n > 0) uota_feed_all(&s_ctx, s_rx, (size_t)n, t);
        avail = 0;
        (void)uart_get_buffered_data_len(s_port.uart, &avail);
        if (avail == 0) uota_idle(&s_ctx);
        uota_tick(&s_ctx, t);
        publish_status();
    }
}

static void find_partitions(void)
{
    /* esp_partition.h: the iterator allocates; done once at start, and the partition
     * pointers stay valid for the app's lifetime. */
    s_port.part_count = 0;
    esp_partition_iterator_t it = esp_partition_find(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_ANY, NULL);
    while (it != NULL && s_port.part_count < UOTA_MAX_SLOTS) {
        s_port.parts[s_port.part_count++] = esp_partition_get(it);
        it = esp_partition_next(it);
    }
    if (it != NULL) esp_partition_iterator_release(it);
    s_port.otadata = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_DATA_OTA, NULL);
    s_port.running = esp_ota_get_running_partition(); /* esp_ota_ops.h: never NULL in an app */
}

esp_err_t esp_ota_uart_start(const esp_ota_uart_config_t *config)
{
    if (s_started) return ESP_ERR_INVALID_STATE;
    /* driver/uart.h: uart_driver_install wants a ring larger than the 128-byte hardware FIFO
     * (UART_HW_FIFO_LEN since 5.1; every ESP32 family UART has 128). */
    if (config == NULL || config->rx_ring_bytes <= UOTA_HW_FIFO) return ESP_ERR_INVALID_ARG;
    find_partitions();
    s_port.uart = (uart_port_t)config->uart_num;
    s_port.boot_state = state_of(s_port.running);
    /* nvs.h: the app has called nvs_flash_init (or nvs_flash_secure_init) before. */
    s_port.nvs_ok = nvs_open(NVS_NAMESPACE, NVS_READWRITE, &s_port.nvs) == ESP_OK;
    if (!s_port.nvs_ok) ESP_LOGW(TAG, "NVS not available: transfers will not resume after a reset");

    uota_config_t cfg = {
        .ring_bytes = config->rx_ring_bytes,
#if CONFIG_UART_ISR_IN_IRAM
        .isr_in_iram = true,
#else
        .isr_in_iram = false,
#endif
        .console_baud = config->console_baud,
        .frame_gap_ms = UOTA_FRAME_GAP_MS,
#if CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
        .rollback = true,
#else
        .rollback = false,
#endif
#if CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
        .anti_rollback = true,
#else
        .anti_rollback = false,
#endif
        .sector_erase_us = CONFIG_ESP_OTA_UART_SECTOR_ERASE_US,
        .block_erase_us = CONFIG_ESP_OTA_UART_BLOCK_ERASE_US,
        .page_program_us = CONFIG_ESP_OTA_UART_PAGE_PROGRAM_US,
    };
    if (uota_init(&s_ctx, &cfg, &s_uota_port) != 0) return ESP_ERR_INVALID_ARG;

    /* driver/uart.h: 8N1, no flow control (§1). No TX ring: writes complete into the FIFO.
     * ESP_INTR_FLAG_IRAM with CONFIG_UART_ISR_IN_IRAM keeps receiving during flash writes. */
    const uart_config_t uc = {
        .baud_rate = (int)config->console_baud,
        .data_bits = UART_DATA_8_BITS,
        .parity = UART_PARITY_DISABLE,
        .stop_bits = UART_STOP_BITS_1,
        .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
        .source_clk = UART_SCLK_DEFAULT,
    };
#if CONFIG_UART_ISR_IN_IRAM
    const int intr_flags = ESP_INTR_FLAG_IRAM;
#else
    const int intr_flags = 0;
#endif
    esp_err_t err = uart_driver_install(s_port.uart, (int)config->rx_ring_bytes, 0, 0, NULL, intr_flags);
    if (err == ESP_OK) err = uart_param_config(s_port.uart, &uc);
    if (err == ESP_OK)
        err = uart_set_pin(s_port.uart, config->tx_pin, config->rx_pin, UART_PIN_NO_CHANGE, UART_PIN_NO_CHANGE);
    if (err != ESP_OK) return err;

    s_port.tx_lock = xSemaphoreCreateRecursiveMutex();
    if (s_port.tx_lock == NULL) return ESP_ERR_NO_MEM;
    if (config->take_over_log) s_port.prev_vprintf = esp_log_set_vprintf(log_vprintf);
    /* freertos/task.h: ESP-IDF's xTaskCreate takes the stack depth in bytes. */
    if (xTaskCreate(receiver_task, "esp_ota_uart", config->task_stack_bytes, NULL, config->task_priority,
                    &s_port.task) != pdPASS)
        return ESP_ERR_NO_MEM;
    s_started = true;
    return ESP_OK;
}

void esp_ota_uart_self_test_done(bool ok)
{
    if (!s_started) return;
    (void)xTaskNotify(s_port.task, ok ? NOTIFY_SELF_TEST_OK : NOTIFY_SELF_TEST_FAIL, eSetBits);
}

esp_err_t esp_ota_uart_get_status(esp_ota_uart_status_t *out)
{
    if (out == NULL) return ESP_ERR_INVALID_ARG;
    if (!s_started) return ESP_ERR_INVALID_STATE;
    taskENTER_CRITICAL(&s_port.status_lock);
    *out = s_port.status;
    taskEXIT_CRITICAL(&s_port.status_lock);
    return ESP_OK;
}
