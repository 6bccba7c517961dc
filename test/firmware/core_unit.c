/*
 * Unit tests of the firmware core in C, natively under ASan and UBSan (core-unit.test.ts runs
 * them): the CRCs' catalogue check values and the SHA-256 test vectors (FIPS 180-4), the HELLO
 * frame of docs/uart-protocol.md §2 byte for byte, the push parser's contract (one frame per
 * uota_feed call, any chunking, junk between frames), the frame gap of §2.3 on the core's own
 * clock (the ESP-IDF port's mode), the baud confirmation timer of §3.3, and init's refusals.
 * Prints "N passed, N failed".
 */
#include <stdio.h>
#include <string.h>

#include "fake_port.h"
#include "uota_core.h"

static int passed, failed;
#define EXPECT(c)                                                             \
    do {                                                                      \
        if (c) passed++;                                                      \
        else {                                                                \
            failed++;                                                         \
            fprintf(stderr, "core_unit: %s:%d: %s\n", __FILE__, __LINE__, #c); \
        }                                                                     \
    } while (0)

/* A minimal port recording what is sent and the baud calls. */
static uint8_t sent[8192];
static size_t sent_len;
static uint32_t bauds[8];
static unsigned baud_calls;

static void rec_write(void *u, const uint8_t *d, uint32_t n)
{
    (void)u;
    if (sent_len + n <= sizeof sent) memcpy(sent + sent_len, d, n);
    sent_len += n;
}
static void rec_baud(void *u, uint32_t b)
{
    (void)u;
    if (baud_calls < 8) bauds[baud_calls] = b;
    baud_calls++;
}
static void rec_running(void *u, uota_running_t *out)
{
    (void)u;
    out->offset = 0x10000;
    out->state = 2;
    out->boot_state = 2;
    out->version_len = 0;
}
static uint8_t rec_slots(void *u, uota_slot_t *out, uint8_t max)
{
    (void)u;
    (void)out;
    (void)max;
    return 0;
}
static void rec_identity(void *u, uota_identity_t *out)
{
    (void)u;
    memcpy(out->chip, "esp32", 5);
    out->chip_len = 5;
}
static bool rec_get(void *u, uota_record_t *out)
{
    (void)u;
    (void)out;
    return false;
}

static uota_port_t port(void)
{
    uota_port_t p;
    memset(&p, 0, sizeof p);
    p.uart_write = rec_write;
    p.set_baud = rec_baud;
    p.running = rec_running;
    p.app_slots = rec_slots;
    p.identity = rec_identity;
    p.record_get = rec_get;
    return p;
}

static uota_config_t config(uint32_t gap_ms)
{
    uota_config_t c = {
        .ring_bytes = 48u * 1024u,
        .isr_in_iram = true,
        .console_baud = 115200,
        .frame_gap_ms = gap_ms,
        .rollback = true,
        .anti_rollback = false,
        .sector_erase_us = 45000,
        .block_erase_us = 150000,
        .page_program_us = 700,
    };
    return c;
}

/* Count frames of one type in what was sent. */
static unsigned count_type(uint8_t type)
{
    unsigned n = 0;
    for (size_t p = 0; p + 10 <= sent_len;) {
        size_t len = (size_t)sent[p + 3] | ((size_t)sent[p + 4] << 8);
        if (sent[p + 2] == type) n++;
        p += 10 + len;
    }
    return n;
}

static const uint8_t HELLO[] = {0xa5, 0x5a, 0x01, 0x01, 0x00, 0x7e, 0x01, 0x26, 0xdd, 0x45, 0x85};

static void test_checks(void)
{
    const uint8_t *s = (const uint8_t *)"123456789";
    EXPECT(uota_crc8(s, 9) == 0xF4);
    EXPECT(uota_crc32(s, 9) == 0xCBF43926u);
    EXPECT(uota_crc32_update(uota_crc32(s, 4), s + 4, 5) == 0xCBF43926u);
    /* §2's example: CRC-8 0x7E over 01 01 00, CRC-32 0x8545DD26 over 01 01 00 7e 01. */
    EXPECT(uota_crc8(HELLO + 2, 3) == 0x7E);
    EXPECT(uota_crc32(HELLO + 2, 5) == 0x8545DD26u);

    static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                    0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                    0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    static const uint8_t two_blocks[32] = {0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26,
                                           0x93, 0x0c, 0x3e, 0x60, 0x39, 0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff,
                                           0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb, 0x06, 0xc1};
    static const uint8_t million_a[32] = {0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92, 0x81, 0xa1, 0xc7,
                                          0xe2, 0x84, 0xd7, 0x3e, 0x67, 0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97,
                                          0x20, 0x0e, 0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0};
    uota_sha256_t h;
    uint8_t out[32];
    uota_sha256_init(&h);
    uota_sha256_update(&h, (const uint8_t *)"abc", 3);
    uota_sha256_final(&h, out);
    EXPECT(memcmp(out, abc, 32) == 0);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    uota_sha256_init(&h);
    for (size_t i = 0; i < strlen(m); i++) uota_sha256_update(&h, (const uint8_t *)m + i, 1); /* any split */
    uota_sha256_final(&h, out);
    EXPECT(memcmp(out, two_blocks, 32) == 0);
    static uint8_t a[1000];
    memset(a, 'a', sizeof a);
    uota_sha256_init(&h);
    for (int i = 0; i < 1000; i++) uota_sha256_update(&h, a, sizeof a);
    uota_sha256_final(&h, out);
    EXPECT(memcmp(out, million_a, 32) == 0);
}

static uota_ctx_t ctx;

static void test_parser(void)
{
    uota_config_t cfg = config(0);
    uota_port_t p = port();
    EXPECT(uota_init(&ctx, &cfg, &p) == 0);
    /* Junk, two HELLOs back to back: uota_feed stops after each frame. */
    uint8_t in[64];
    size_t n = 0;
    memcpy(in + n, "I (5) boot:\r\n", 13);
    n += 13;
    memcpy(in + n, HELLO, sizeof HELLO);
    n += sizeof HELLO;
    memcpy(in + n, HELLO, sizeof HELLO);
    n += sizeof HELLO;
    sent_len = 0;
    size_t used = 0;
    EXPECT(uota_feed(&ctx, in, n, 0, &used) == true);
    EXPECT(used == 13 + sizeof HELLO);
    EXPECT(count_type(0x81) == 1);
    size_t used2 = 0;
    EXPECT(uota_feed(&ctx, in + used, n - used, 0, &used2) == true);
    EXPECT(used2 == sizeof HELLO);
    EXPECT(uota_feed(&ctx, in + n, 0, 0, &used2) == false);
    EXPECT(count_type(0x81) == 2);
    /* Byte by byte: the same answer. */
    sent_len = 0;
    for (size_t i = 0; i < sizeof HELLO; i++) uota_feed_all(&ctx, HELLO + i, 1, 0);
    EXPECT(count_type(0x81) == 1);
    /* A flipped payload bit: CRC-32 fails, the frame is skipped whole and counted. */
    uint8_t bad[sizeof HELLO];
    memcpy(bad, HELLO, sizeof HELLO);
    bad[6] ^= 0x02;
    sent_len = 0;
    uint32_t before = ctx.crc_errors;
    uota_feed_all(&ctx, bad, sizeof bad, 0);
    EXPECT(ctx.crc_errors == before + 1);
    EXPECT(sent_len == 0);
}

static void test_gap(void)
{
    uota_config_t cfg = config(UOTA_FRAME_GAP_MS);
    uota_port_t p = port();
    EXPECT(uota_init(&ctx, &cfg, &p) == 0);
    sent_len = 0;
    /* A torn frame (a header promising 0x20 bytes), then silence, then a HELLO: without the
     * gap the HELLO would be swallowed as the torn frame's rest. */
    const uint8_t torn[6] = {0xa5, 0x5a, 0x01, 0x20, 0x00, 0};
    uint8_t t6[6];
    memcpy(t6, torn, 6);
    t6[5] = uota_crc8(t6 + 2, 3);
    uota_feed_all(&ctx, t6, 6, 1000);
    EXPECT(uota_next_deadline(&ctx, 1000) == (int32_t)UOTA_FRAME_GAP_MS);
    uota_tick(&ctx, 1049);
    EXPECT(ctx.rx_len != ctx.rx_head); /* still waiting at 49 ms */
    uota_tick(&ctx, 1050);
    uota_feed_all(&ctx, HELLO, sizeof HELLO, 1060);
    EXPECT(count_type(0x81) == 1);
    /* Without the tick, the same bytes lose the HELLO inside the torn frame. */
    EXPECT(uota_init(&ctx, &cfg, &p) == 0);
    sent_len = 0;
    uota_feed_all(&ctx, t6, 6, 1000);
    uota_feed_all(&ctx, HELLO, sizeof HELLO, 1001);
    EXPECT(count_type(0x81) == 0);
}

static void test_baud(void)
{
    uota_config_t cfg = config(0);
    uota_port_t p = port();
    EXPECT(uota_init(&ctx, &cfg, &p) == 0);
    /* BAUD 921600: RESULT OK, the port asked to switch, back to 115200 after 1 s unconfirmed. */
    uint8_t f[14] = {0xa5, 0x5a, 0x08, 0x04, 0x00, 0, 0x00, 0x10, 0x0e, 0x00};
    f[5] = uota_crc8(f + 2, 3);
    uint32_t c = uota_crc32(f + 2, 8);
    for (int i = 0; i < 4; i++) f[10 + i] = (uint8_t)(c >> (8 * i));
    baud_calls = 0;
    sent_len = 0;
    uota_feed_all(&ctx, f, sizeof f, 5000);
    EXPECT(count_type(0x80) == 1 && sent[7] == 0); /* RESULT status OK */
    EXPECT(baud_calls == 1 && bauds[0] == 921600u);
    /* 1 s from the switch: the RESULT's 32 bytes at 115200 take 2.8 ms, counted as 3 + 1. */
    EXPECT(uota_next_deadline(&ctx, 5000) == 1004);
    uota_tick(&ctx, 6003);
    EXPECT(baud_calls == 1);
    uota_tick(&ctx, 6004);
    EXPECT(baud_calls == 2 && bauds[1] == 115200u);
    EXPECT(uota_next_deadline(&ctx, 6004) == -1);
    /* A valid frame in time confirms the rate: no switch back. */
    uota_feed_all(&ctx, f, sizeof f, 7000);
    uota_feed_all(&ctx, HELLO, sizeof HELLO, 7100);
    uota_tick(&ctx, 9000);
    EXPECT(baud_calls == 3);
}

static void test_init(void)
{
    uota_port_t p = port();
    uota_config_t tiny = config(0);
    tiny.ring_bytes = 2048; /* holds no 4110-byte DATA frame */
    EXPECT(uota_init(&ctx, &tiny, &p) == -1);
    uota_config_t big = config(0);
    big.isr_in_iram = false;
    big.ring_bytes = 64u * 1024u; /* a batch of 15 frames > the 8 KB write buffer */
    EXPECT(uota_init(&ctx, &big, &p) == -1);
    big.ring_bytes = 8u * 1024u;
    EXPECT(uota_init(&ctx, &big, &p) == 0);
    EXPECT(ctx.window == 8192u);
}

/* The fake port's whole OTA (fake_port.c): the seeds' transcript ends with the image
 * activated; its checks abort on a violation. */
static uint8_t collected[1u << 16];
static size_t collected_len;
static void collect(const uint8_t *d, uint32_t n)
{
    if (collected_len + n <= sizeof collected) memcpy(collected + collected_len, d, n);
    collected_len += n;
}

int main(void)
{
    test_checks();
    test_parser();
    test_gap();
    test_baud();
    test_init();
    fake_on_uart = collect;
    const uint8_t nothing[1] = {1};
    fake_run(nothing, 1);
    EXPECT(collected_len == 4 && collected[0] == 0xEE && collected[1] == UOTA_IDLE);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
