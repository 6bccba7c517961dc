/*
 * The simulator's port: every uota_port_t function is a WebAssembly import that
 * src/sim/firmware-device.ts binds to the simulator's ESP-IDF-like API (src/sim/ota-api.ts).
 * Structured results cross the boundary as byte buffers in a fixed little-endian layout
 * (documented beside each import and mirrored in firmware-device.ts), decoded here byte by
 * byte: no struct layout is shared with the host.
 *
 * One device per instance: the context is a static, so a reset is a new instance (a JS
 * exception from an import, a power cut, unwinds the wasm stack without restoring the stack
 * pointer, and a new instance is exactly what a rebooted chip is).
 */
#include "uota_core.h"

#define IMPORT(name) __attribute__((import_module("uota_port"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

IMPORT(erase) int32_t imp_erase(uint32_t part, uint32_t offset, uint32_t len);
IMPORT(write_raw) int32_t imp_write_raw(uint32_t part, uint32_t offset, const uint8_t *data, uint32_t len);
IMPORT(read_raw) int32_t imp_read_raw(uint32_t part, uint32_t offset, uint8_t *buf, uint32_t len);
/* out: u8 version_len, 32 version, u32 secure_version, u32 efuse_secure_version,
 *      u8 detail_len, 255 detail (297 bytes) */
IMPORT(verify_image) int32_t imp_verify_image(uint32_t part, uint8_t *out);
IMPORT(set_boot) int32_t imp_set_boot(uint32_t part);
IMPORT(invalidate_otadata) int32_t imp_invalidate_otadata(void);
/* out: u32 offset, u32 state, u32 boot_state, u8 version_len, 32 version (45 bytes) */
IMPORT(running) void imp_running(uint8_t *out);
/* out: per slot u8 label_len, 16 label, u8 subtype, u32 offset, u32 size (26 bytes each) */
IMPORT(app_slots) uint32_t imp_app_slots(uint8_t *out, uint32_t max);
/* out: u8 chip_len, 16 chip, u8 revision, 6 mac, u32 flash_size, u8 flash_encryption,
 *      u8 secure_boot_version, u8 efuse_secure_version, 64 otadata, 256 app_desc,
 *      u8 has_pt_sha, 32 pt_sha (384 bytes) */
IMPORT(identity) void imp_identity(uint8_t *out);
IMPORT(mark_valid) int32_t imp_mark_valid(void);
IMPORT(mark_invalid) int32_t imp_mark_invalid(void);
/* out: u32 offset, u32 size, 32 sha256, u32 written (44 bytes); returns 1 if present */
IMPORT(record_get) uint32_t imp_record_get(uint8_t *out);
IMPORT(record_open) void imp_record_open(uint32_t part, uint32_t size, const uint8_t *sha256);
IMPORT(record_progress) void imp_record_progress(uint32_t written);
IMPORT(record_close) void imp_record_close(void);
IMPORT(uart_write) void imp_uart_write(const uint8_t *data, uint32_t len);
IMPORT(set_baud) void imp_set_baud(uint32_t baud);
IMPORT(restart) void imp_restart(void);
IMPORT(log) void imp_log(uint32_t level, const uint8_t *text, uint32_t len);

#define SCRATCH 512u
static uint8_t scratch[SCRATCH];
#define IN_BUF 4096u
static uint8_t in_buf[IN_BUF];
static uota_ctx_t ctx;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void copy(uint8_t *dst, const uint8_t *src, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) dst[i] = src[i];
}

static uint8_t clamp(uint8_t v, uint8_t max) { return v > max ? max : v; }

static int32_t p_erase(void *u, uint32_t part, uint32_t off, uint32_t len)
{
    (void)u;
    return imp_erase(part, off, len);
}
static int32_t p_write_raw(void *u, uint32_t part, uint32_t off, const uint8_t *d, uint32_t len)
{
    (void)u;
    return imp_write_raw(part, off, d, len);
}
static int32_t p_read_raw(void *u, uint32_t part, uint32_t off, uint8_t *b, uint32_t len)
{
    (void)u;
    return imp_read_raw(part, off, b, len);
}
static int32_t p_verify_image(void *u, uint32_t part, uota_image_check_t *out)
{
    (void)u;
    int32_t err = imp_verify_image(part, scratch);
    out->version_len = clamp(scratch[0], UOTA_VERSION_MAX);
    copy(out->version, scratch + 1, UOTA_VERSION_MAX);
    out->secure_version = le32(scratch + 33);
    out->efuse_secure_version = le32(scratch + 37);
    out->detail_len = clamp(scratch[41], UOTA_DETAIL_MAX);
    copy(out->detail, scratch + 42, UOTA_DETAIL_MAX);
    return err;
}
static int32_t p_set_boot(void *u, uint32_t part)
{
    (void)u;
    return imp_set_boot(part);
}
static int32_t p_invalidate(void *u)
{
    (void)u;
    return imp_invalidate_otadata();
}
static void p_running(void *u, uota_running_t *out)
{
    (void)u;
    imp_running(scratch);
    out->offset = le32(scratch);
    out->state = le32(scratch + 4);
    out->boot_state = le32(scratch + 8);
    out->version_len = clamp(scratch[12], UOTA_VERSION_MAX);
    copy(out->version, scratch + 13, UOTA_VERSION_MAX);
}
static uint8_t p_app_slots(void *u, uota_slot_t *out, uint8_t max)
{
    (void)u;
    /* 16 slots × 26 bytes fit the scratch buffer. */
    uint32_t n = imp_app_slots(scratch, max);
    if (n > max) n = max;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *s = scratch + 26u * i;
        out[i].label_len = clamp(s[0], UOTA_LABEL_MAX);
        copy(out[i].label, s + 1, UOTA_LABEL_MAX);
        out[i].subtype = s[17];
        out[i].offset = le32(s + 18);
        out[i].size = le32(s + 22);
    }
    return (uint8_t)n;
}
static void p_identity(void *u, uota_identity_t *out)
{
    (void)u;
    const uint8_t *s = scratch;
    imp_identity(scratch);
    out->chip_len = clamp(s[0], UOTA_LABEL_MAX);
    copy(out->chip, s + 1, UOTA_LABEL_MAX);
    out->revision = s[17];
    copy(out->mac, s + 18, 6);
    out->flash_size = le32(s + 24);
    out->flash_encryption = s[28];
    out->secure_boot_version = s[29];
    out->efuse_secure_version = s[30];
    copy(out->otadata, s + 31, 64);
    copy(out->app_desc, s + 95, 256);
    out->has_partition_table_sha256 = s[351] != 0u;
    copy(out->partition_table_sha256, s + 352, 32);
}
static int32_t p_mark_valid(void *u)
{
    (void)u;
    return imp_mark_valid();
}
static int32_t p_mark_invalid(void *u)
{
    (void)u;
    return imp_mark_invalid();
}
static bool p_record_get(void *u, uota_record_t *out)
{
    (void)u;
    if (imp_record_get(scratch) == 0u) return false;
    out->offset = le32(scratch);
    out->size = le32(scratch + 4);
    copy(out->sha256, scratch + 8, 32);
    out->written = le32(scratch + 40);
    return true;
}
static void p_record_open(void *u, uint32_t part, uint32_t size, const uint8_t sha[32])
{
    (void)u;
    imp_record_open(part, size, sha);
}
static void p_record_progress(void *u, uint32_t written)
{
    (void)u;
    imp_record_progress(written);
}
static void p_record_close(void *u)
{
    (void)u;
    imp_record_close();
}
static void p_uart_write(void *u, const uint8_t *d, uint32_t len)
{
    (void)u;
    imp_uart_write(d, len);
}
static void p_set_baud(void *u, uint32_t baud)
{
    (void)u;
    imp_set_baud(baud);
}
static void p_restart(void *u)
{
    (void)u;
    imp_restart();
}
static void p_log(void *u, uota_log_level_t level, const uint8_t *t, uint32_t len)
{
    (void)u;
    imp_log((uint32_t)level, t, len);
}

static const uota_port_t port = {
    .user = 0,
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

EXPORT(uota_wasm_init)
int32_t uota_wasm_init(uint32_t ring_bytes, uint32_t isr_in_iram, uint32_t console_baud, uint32_t sector_erase_us,
                       uint32_t block_erase_us, uint32_t page_program_us, uint32_t rollback, uint32_t anti_rollback)
{
    uota_config_t cfg = {
        .ring_bytes = ring_bytes,
        .isr_in_iram = isr_in_iram != 0u,
        .console_baud = console_baud,
        /* The simulator knows when each byte arrived and reports gaps (uota_wasm_gap). */
        .frame_gap_ms = 0,
        .rollback = rollback != 0u,
        .anti_rollback = anti_rollback != 0u,
        .sector_erase_us = sector_erase_us,
        .block_erase_us = block_erase_us,
        .page_program_us = page_program_us,
    };
    return uota_init(&ctx, &cfg, &port);
}

EXPORT(uota_wasm_in_buf) uint8_t *uota_wasm_in_buf(void) { return in_buf; }
EXPORT(uota_wasm_in_cap) uint32_t uota_wasm_in_cap(void) { return IN_BUF; }

/* Bytes at in_buf[off, off+len): returns consumed | 0x80000000 when it stopped after a frame. */
EXPORT(uota_wasm_feed)
uint32_t uota_wasm_feed(uint32_t off, uint32_t len, uint32_t now_ms)
{
    if (off > IN_BUF || len > IN_BUF - off) return 0;
    size_t used = 0;
    bool more = uota_feed(&ctx, in_buf + off, len, now_ms, &used);
    return (uint32_t)used | (more ? 0x80000000u : 0u);
}

EXPORT(uota_wasm_gap) void uota_wasm_gap(void) { uota_line_gap(&ctx); }
EXPORT(uota_wasm_idle) void uota_wasm_idle(void) { uota_idle(&ctx); }
EXPORT(uota_wasm_tick) void uota_wasm_tick(uint32_t now_ms) { uota_tick(&ctx, now_ms); }
EXPORT(uota_wasm_next_deadline) int32_t uota_wasm_next_deadline(uint32_t now_ms)
{
    return uota_next_deadline(&ctx, now_ms);
}
EXPORT(uota_wasm_announce) void uota_wasm_announce(uint32_t phase) { uota_announce(&ctx, (uint8_t)phase); }
EXPORT(uota_wasm_self_test_done) int32_t uota_wasm_self_test_done(uint32_t ok) { return uota_self_test_done(&ctx, ok != 0u); }
EXPORT(uota_wasm_state) uint32_t uota_wasm_state(void) { return (uint32_t)ctx.state; }
EXPORT(uota_wasm_ctx_size) uint32_t uota_wasm_ctx_size(void) { return (uint32_t)sizeof ctx; }
EXPORT(uota_wasm_frames) uint32_t uota_wasm_frames(void) { return ctx.frames; }
EXPORT(uota_wasm_crc_errors) uint32_t uota_wasm_crc_errors(void) { return ctx.crc_errors; }
