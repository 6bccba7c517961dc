/*
 * An in-memory port for the firmware core, and a little input language that drives the core
 * through it, shared by the fuzz target (fuzz_core.c) and the native-vs-wasm replay
 * (replay_native.c, replay_wasm.c). The port's functions check what the core asks of them;
 * any violation aborts (a trap in wasm):
 *   - no erase or write outside a partition, none of the running slot, erases sector-aligned;
 *   - every byte sent is part of a well-formed frame (both CRCs right, payload bounded);
 *   - an image is verified or activated only after its bytes in flash hashed to BEGIN's SHA-256.
 * The input: byte 0 chooses the configuration (bit 0 ISR in IRAM, bit 1 the core's own frame
 * gap timer, bit 2 anti-rollback, bit 3 a failing erase); then op bytes: feed a chunk / feed the rest / line gap /
 * idle / tick / self-test / announce.
 */
#include "fake_port.h"

#include <string.h>
#ifndef __wasm__
#include <stdio.h>
#include <stdlib.h>
#endif

#define FLASH_SIZE 0x40000u
#define RUNNING 0x10000u
#define SLOT 0x20000u
#define SLOT_SIZE 0x10000u

static uint8_t flash[FLASH_SIZE];
static uota_ctx_t ctx;
void (*fake_on_uart)(const uint8_t *data, uint32_t len);
static uota_record_t rec;
static int rec_open;
static uint8_t begun_sha[32];
static uint32_t begun_size;
/* A flash that fails: the erase at this slot offset returns ESP_FAIL (input bit 3). */
static uint32_t fail_erase_at;

#ifdef __wasm__
#define CHECK(c)                    \
    do {                            \
        if (!(c)) __builtin_trap(); \
    } while (0)
#else
#define CHECK(c)                                                                \
    do {                                                                        \
        if (!(c)) {                                                             \
            fprintf(stderr, "fake_port: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                            \
        }                                                                       \
    } while (0)
#endif

static int inside(uint32_t part, uint32_t off, uint32_t len)
{
    uint32_t size = part == SLOT ? SLOT_SIZE : part == RUNNING ? SLOT_SIZE : 0;
    return size != 0 && off <= size && len <= size - off;
}

static int32_t f_erase(void *u, uint32_t part, uint32_t off, uint32_t len)
{
    (void)u;
    CHECK(part != RUNNING);
    CHECK(off % UOTA_SECTOR == 0 && len % UOTA_SECTOR == 0);
    if (!inside(part, off, len)) return 0x104;
    if (off == fail_erase_at) return -1;
    memset(flash + part + off, 0xFF, len);
    return 0;
}

static int32_t f_write(void *u, uint32_t part, uint32_t off, const uint8_t *d, uint32_t len)
{
    (void)u;
    CHECK(part != RUNNING);
    if (!inside(part, off, len)) return 0x104;
    CHECK(off + len <= ctx.t.size);
    for (uint32_t i = 0; i < len; i++) flash[part + off + i] &= d[i];
    return 0;
}

static int32_t f_read(void *u, uint32_t part, uint32_t off, uint8_t *b, uint32_t len)
{
    (void)u;
    if (!inside(part, off, len)) return 0x104;
    memcpy(b, flash + part + off, len);
    return 0;
}

static int32_t f_verify(void *u, uint32_t part, uota_image_check_t *out)
{
    (void)u;
    CHECK(part == SLOT);
    /* The core calls this only after its read-back hash matched BEGIN's: check it did. */
    uota_sha256_t s;
    uint8_t h[32];
    uota_sha256_init(&s);
    uota_sha256_update(&s, flash + part, begun_size);
    uota_sha256_final(&s, h);
    CHECK(memcmp(h, begun_sha, 32) == 0);
    memcpy(out->version, "fuzz", 4);
    out->version_len = 4;
    out->secure_version = flash[part + 1] & 3u;
    out->efuse_secure_version = 1;
    if (flash[part] != 0xE9u) {
        memcpy(out->detail, "bad magic", 9);
        out->detail_len = 9;
        return 0x1503;
    }
    return 0;
}

static int32_t f_set_boot(void *u, uint32_t part)
{
    (void)u;
    CHECK(part == SLOT);
    CHECK(ctx.state == UOTA_VERIFIED);
    return flash[part + 2] == 0x55u ? 0x1504 : 0;
}

static int32_t f_invalidate(void *u) { (void)u; return 0; }

static void f_running(void *u, uota_running_t *out)
{
    (void)u;
    out->offset = RUNNING;
    out->state = 2;
    out->boot_state = 1;
    memcpy(out->version, "1.0.0", 5);
    out->version_len = 5;
}

static uint8_t f_slots(void *u, uota_slot_t *out, uint8_t max)
{
    (void)u;
    CHECK(max >= 2);
    memset(out, 0, 2 * sizeof *out);
    memcpy(out[0].label, "ota_0", 5);
    out[0].label_len = 5;
    out[0].subtype = 0x10;
    out[0].offset = RUNNING;
    out[0].size = SLOT_SIZE;
    memcpy(out[1].label, "ota_1", 5);
    out[1].label_len = 5;
    out[1].subtype = 0x11;
    out[1].offset = SLOT;
    out[1].size = SLOT_SIZE;
    return 2;
}

static void f_identity(void *u, uota_identity_t *out)
{
    (void)u;
    memcpy(out->chip, "esp32c3", 7);
    out->chip_len = 7;
    out->flash_size = FLASH_SIZE;
    memset(out->otadata, 0xFF, sizeof out->otadata);
    out->has_partition_table_sha256 = true;
}

static int32_t f_mark(void *u) { (void)u; return 0; }

static bool f_rec_get(void *u, uota_record_t *out)
{
    (void)u;
    if (!rec_open) return false;
    *out = rec;
    return true;
}

static void f_rec_open(void *u, uint32_t part, uint32_t size, const uint8_t sha[32])
{
    (void)u;
    rec.offset = part;
    rec.size = size;
    memcpy(rec.sha256, sha, 32);
    rec.written = 0;
    rec_open = 1;
    memcpy(begun_sha, sha, 32);
    begun_size = size;
}

static void f_rec_progress(void *u, uint32_t written)
{
    (void)u;
    CHECK(rec_open && written <= rec.size && written % UOTA_PROGRESS_EVERY == 0);
    rec.written = written;
}

static void f_rec_close(void *u) { (void)u; rec_open = 0; }

static void f_write_uart(void *u, const uint8_t *d, uint32_t len)
{
    (void)u;
    CHECK(len >= UOTA_FRAME_OVERHEAD && len <= UOTA_TX_MAX);
    CHECK(d[0] == 0xA5 && d[1] == 0x5A);
    uint32_t n = (uint32_t)d[3] | ((uint32_t)d[4] << 8);
    CHECK(n + UOTA_FRAME_OVERHEAD == len);
    CHECK(uota_crc8(d + 2, 3) == d[5]);
    uint32_t c = (uint32_t)d[6 + n] | ((uint32_t)d[7 + n] << 8) | ((uint32_t)d[8 + n] << 16) |
                 ((uint32_t)d[9 + n] << 24);
    CHECK(uota_crc32(d + 2, 4 + n) == c);
    CHECK(d[2] & 0x80u); /* device → host types have the top bit set */
    if (fake_on_uart) fake_on_uart(d, len);
}

static void f_baud(void *u, uint32_t b) { (void)u; (void)b; }
static void f_restart(void *u) { (void)u; }
static void f_log(void *u, uota_log_level_t l, const uint8_t *t, uint32_t n)
{
    (void)u;
    (void)l;
    (void)t;
    CHECK(n <= UOTA_DETAIL_MAX);
}

static const uota_port_t port = {
    .erase = f_erase,
    .write_raw = f_write,
    .read_raw = f_read,
    .verify_image = f_verify,
    .set_boot = f_set_boot,
    .invalidate_inactive_otadata = f_invalidate,
    .running = f_running,
    .app_slots = f_slots,
    .identity = f_identity,
    .mark_valid = f_mark,
    .mark_invalid = f_mark,
    .record_get = f_rec_get,
    .record_open = f_rec_open,
    .record_progress = f_rec_progress,
    .record_close = f_rec_close,
    .uart_write = f_write_uart,
    .set_baud = f_baud,
    .restart = f_restart,
    .log = f_log,
};

void fake_run(const uint8_t *data, size_t size)
{
    if (size < 1) return;
    memset(flash, 0xFF, sizeof flash);
    rec_open = 0;
    begun_size = 0;
    fail_erase_at = (data[0] & 8u) ? 0x2000u : 0xFFFFFFFFu;
    const uota_config_t cfg = {
        .ring_bytes = (data[0] & 1u) ? 48u * 1024u : 8u * 1024u,
        .isr_in_iram = (data[0] & 1u) != 0,
        .console_baud = 115200,
        .frame_gap_ms = (data[0] & 2u) ? 50u : 0u,
        .rollback = true,
        .anti_rollback = (data[0] & 4u) != 0,
        .sector_erase_us = 45000,
        .block_erase_us = 150000,
        .page_program_us = 700,
    };
    CHECK(uota_init(&ctx, &cfg, &port) == 0);
    uint32_t now = 0;
    size_t i = 1;
    while (i < size) {
        uint8_t op = data[i++];
        switch (op & 7u) {
        case 0: /* feed the rest as one chunk: a whole transcript */
            uota_feed_all(&ctx, data + i, size - i, now);
            i = size;
            break;
        case 1: uota_line_gap(&ctx); break;
        case 2: uota_idle(&ctx); break;
        case 3:
            now += (uint32_t)(op >> 3) * 40u;
            uota_tick(&ctx, now);
            break;
        case 4: (void)uota_self_test_done(&ctx, (op & 8u) != 0); break;
        case 5: uota_announce(&ctx, (op >> 3) & 1u); break;
        default: { /* feed a chunk of up to 256 bytes */
            size_t n = i < size ? (size_t)data[i++] + 1u : 0u;
            if (n > size - i) n = size - i;
            uota_feed_all(&ctx, data + i, n, now);
            i += n;
            break;
        }
        }
        CHECK(ctx.rx_head <= ctx.rx_len && ctx.rx_len <= UOTA_FRAME_MAX);
        if (ctx.state == UOTA_RECEIVING) {
            CHECK(ctx.t.written <= ctx.t.received && ctx.t.received <= ctx.t.size);
            CHECK(ctx.t.staging_len <= ctx.t.staging_cap && ctx.t.staging_cap <= UOTA_STAGING_BYTES);
        }
    }
    /* The end state, as a frame-like record the replay compares too. */
    if (fake_on_uart) {
        uint8_t st[4] = {0xEE, (uint8_t)ctx.state, (uint8_t)ctx.frames, (uint8_t)ctx.crc_errors};
        fake_on_uart(st, sizeof st);
    }
}
