/*
 * The device side of the UART OTA protocol (docs/uart-protocol.md): frame codec (§2), push
 * parser (§2.2, §2.3), one handler per request (§4), one dispatcher that checks the transfer
 * state allows the request (§6.1), one write path (tx_frame), and the transfer state machine
 * with its flash write rules (§6.2, §7) and durable progress (§6.4).
 *
 * It speaks byte for byte what src/uart/device.ts speaks (test/firmware/differential.test.ts
 * feeds both the same transcripts). Nothing here blocks or allocates; every buffer is in
 * uota_ctx_t, whose size docs/firmware.md publishes.
 */
#include "uota_core.h"

#include <string.h>

/* Message types (§4). */
enum {
    MSG_HELLO = 0x01,
    MSG_BEGIN = 0x02,
    MSG_DATA = 0x03,
    MSG_END = 0x04,
    MSG_ACTIVATE = 0x05,
    MSG_REBOOT = 0x06,
    MSG_ABORT = 0x07,
    MSG_BAUD = 0x08,
    MSG_STATUS = 0x09,
    MSG_RESULT = 0x80,
    MSG_INFO = 0x81,
    MSG_ACK = 0x83,
    MSG_ANNOUNCE = 0x90,
};

/* RESULT status (§5). */
enum {
    ST_OK = 0,
    ST_RUNNING_SLOT = 1,
    ST_NOT_APP_SLOT = 2,
    ST_TOO_BIG = 3,
    ST_PENDING_VERIFY = 4,
    ST_HASH_MISMATCH = 6,
    ST_IMAGE_INVALID = 7,
    ST_FLASH_ERROR = 8,
    ST_BAD_STATE = 9,
    ST_BAD_BAUD = 10,
    ST_BAD_REQUEST = 11,
    ST_INCOMPLETE = 12,
    ST_SMALL_SEC_VER = 13,
};

/* ---------------------------------------------------------------- CRCs (§2) */

/* CRC-8, polynomial 0x07, init 0, no reflection, no final xor (CRC-8/SMBUS). */
uint8_t uota_crc8(const uint8_t *p, size_t n)
{
    uint8_t c = 0;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (unsigned k = 0; k < 8; k++) {
            uint32_t shifted = (uint32_t)c << 1;
            c = (uint8_t)((c & 0x80u) != 0u ? (shifted ^ 0x07u) : shifted);
        }
    }
    return c;
}

/* CRC-32/IEEE, reflected, as esp_rom_crc32_le(0, ...): a 16-entry nibble table (64 bytes of
 * rodata instead of 1 KB; a 4 KB frame costs 8 K table steps, far below the wire time). */
static const uint32_t CRC32_NIBBLE[16] = {
    0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu, 0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
    0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu, 0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
};

uint32_t uota_crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        c = (c >> 4) ^ CRC32_NIBBLE[c & 0xfu];
        c = (c >> 4) ^ CRC32_NIBBLE[c & 0xfu];
    }
    return ~c;
}

uint32_t uota_crc32(const uint8_t *p, size_t n) { return uota_crc32_update(0, p, n); }

/* ---------------------------------------------------------------- little-endian fields */

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* A bounded writer over ctx->tx (payload starts after the 6-byte header). */
typedef struct {
    uint8_t *p;
    uint32_t n;
    uint32_t cap;
} wbuf_t;

static void w8(wbuf_t *w, uint32_t v)
{
    if (w->n < w->cap) w->p[w->n] = (uint8_t)v;
    w->n++;
}
static void w16(wbuf_t *w, uint32_t v)
{
    w8(w, v);
    w8(w, v >> 8);
}
static void w32(wbuf_t *w, uint32_t v)
{
    w16(w, v);
    w16(w, v >> 16);
}
static void wbytes(wbuf_t *w, const uint8_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) w8(w, b[i]);
}
/* u8 length + bytes, cut at 255 (messages.ts Writer.str). */
static void wstr(wbuf_t *w, const uint8_t *b, uint32_t n)
{
    if (n > 255u) n = 255u;
    w8(w, n);
    wbytes(w, b, n);
}

/* ---------------------------------------------------------------- detail text */

/* RESULT detail and log lines are built in ctx->text, bounded: no printf in a freestanding
 * core, and no 255-byte buffer on the stack of each handler. */
typedef uota_text_t text_t;

static text_t *text_reset(uota_ctx_t *ctx)
{
    ctx->text.n = 0;
    return &ctx->text;
}

static void tput(text_t *t, const char *s)
{
    /* Bytes of a string literal: plain char is only the literal's storage (STYLE.md §17). */
    for (const unsigned char *p = (const unsigned char *)s; *p != 0u && t->n < sizeof t->b; p++) t->b[t->n++] = *p;
}
static void tbytes(text_t *t, const uint8_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n && t->n < sizeof t->b; i++) t->b[t->n++] = b[i];
}
static void tdec(text_t *t, uint32_t v)
{
    uint8_t d[10];
    unsigned k = 0;
    do {
        d[k++] = (uint8_t)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (k > 0 && t->n < sizeof t->b) t->b[t->n++] = d[--k];
}
static void thex(text_t *t, uint32_t v)
{
    static const uint8_t digits[16] = {'0', '1', '2', '3', '4', '5', '6', '7',
                                       '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
    uint8_t d[8];
    unsigned k = 0;
    do {
        d[k++] = digits[v & 0xfu];
        v >>= 4;
    } while (v != 0u);
    while (k > 0 && t->n < sizeof t->b) t->b[t->n++] = d[--k];
}

/* esp_err_to_name for the codes this protocol reports (esp_err.h, esp_ota_ops.h). */
static void terr(text_t *t, int32_t err)
{
    static const struct {
        int32_t code;
        const char *name;
    } names[] = {
        {0, "ESP_OK"},
        {-1, "ESP_FAIL"},
        {0x101, "ESP_ERR_NO_MEM"},
        {0x102, "ESP_ERR_INVALID_ARG"},
        {0x103, "ESP_ERR_INVALID_STATE"},
        {0x104, "ESP_ERR_INVALID_SIZE"},
        {0x105, "ESP_ERR_NOT_FOUND"},
        {0x106, "ESP_ERR_NOT_SUPPORTED"},
        {0x109, "ESP_ERR_INVALID_CRC"},
        {0x107, "ESP_ERR_TIMEOUT"},
        {0x10d, "ESP_ERR_NOT_ALLOWED"},
        {0x1501, "ESP_ERR_OTA_PARTITION_CONFLICT"},
        {0x1502, "ESP_ERR_OTA_SELECT_INFO_INVALID"},
        {0x1503, "ESP_ERR_OTA_VALIDATE_FAILED"},
        {0x1504, "ESP_ERR_OTA_SMALL_SEC_VER"},
        {0x1505, "ESP_ERR_OTA_ROLLBACK_FAILED"},
        {0x1506, "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"},
        {0x2001, "ESP_ERR_IMAGE_FLASH_FAIL"},
        {0x2002, "ESP_ERR_IMAGE_INVALID"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (names[i].code == err) {
            tput(t, names[i].name);
            return;
        }
    }
    tput(t, "UNKNOWN ERROR 0x");
    thex(t, (uint32_t)err);
}

static const char *state_name(uota_state_t s)
{
    switch (s) {
    case UOTA_IDLE: return "idle";
    case UOTA_RECEIVING: return "receiving";
    case UOTA_VERIFIED: return "verified";
    case UOTA_ACTIVATED: return "activated";
    }
    return "?";
}

/* ---------------------------------------------------------------- the one write path */

/* Encode and send one frame whose payload the caller built at ctx->tx + 6 (§2). */
static void tx_frame(uota_ctx_t *ctx, uint8_t type, uint32_t n)
{
    uint8_t *f = ctx->tx;
    if (n > UOTA_TX_MAX - UOTA_FRAME_OVERHEAD) return; /* cannot happen: payloads are bounded */
    f[0] = 0xA5;
    f[1] = 0x5A;
    f[2] = type;
    f[3] = (uint8_t)n;
    f[4] = (uint8_t)(n >> 8);
    f[5] = uota_crc8(f + 2, 3);
    uint32_t c = uota_crc32(f + 2, 4 + n);
    f[6 + n] = (uint8_t)c;
    f[7 + n] = (uint8_t)(c >> 8);
    f[8 + n] = (uint8_t)(c >> 16);
    f[9 + n] = (uint8_t)(c >> 24);
    ctx->port.uart_write(ctx->port.user, f, n + UOTA_FRAME_OVERHEAD);
}

static wbuf_t payload(uota_ctx_t *ctx)
{
    wbuf_t w = {ctx->tx + 6, 0, UOTA_TX_MAX - UOTA_FRAME_OVERHEAD};
    return w;
}

static void result(uota_ctx_t *ctx, uint8_t request, uint8_t status, int32_t err, uint32_t value,
                   const text_t *detail)
{
    wbuf_t w = payload(ctx);
    w8(&w, request);
    w8(&w, status);
    w32(&w, (uint32_t)err);
    w32(&w, value);
    wstr(&w, detail->b, detail->n);
    tx_frame(ctx, MSG_RESULT, w.n);
}

static void result_s(uota_ctx_t *ctx, uint8_t request, uint8_t status, int32_t err, uint32_t value,
                     const char *s)
{
    text_t *t = text_reset(ctx);
    tput(t, s);
    result(ctx, request, status, err, value, t);
}

static void log_text(uota_ctx_t *ctx, uota_log_level_t level, const text_t *t)
{
    if (ctx->port.log) ctx->port.log(ctx->port.user, level, t->b, t->n);
}

/* ---------------------------------------------------------------- flash (§6.2, §7) */

static uint32_t erase_end(const uota_transfer_t *t)
{
    return ((t->size + UOTA_SECTOR - 1u) / UOTA_SECTOR) * UOTA_SECTOR;
}

/* 64 KB blocks where the flash address is block-aligned and the block is wanted, else 4 KB. */
static uint32_t erase_unit(const uota_transfer_t *t, uint32_t at)
{
    return ((t->part + at) % UOTA_BLOCK == 0u && at + UOTA_BLOCK <= erase_end(t)) ? UOTA_BLOCK : UOTA_SECTOR;
}

static void flash_failed(uota_ctx_t *ctx, const char *call, int32_t err)
{
    text_t *t = text_reset(ctx);
    tput(t, call);
    tput(t, ": ");
    terr(t, err);
    log_text(ctx, UOTA_LOG_ERROR, t);
    /* The slot is in an unknown state: the transfer ends; the record stays so a BEGIN after
     * the cause is fixed resumes from the last confirmed 64 KB (its unit is erased again). */
    ctx->state = UOTA_IDLE;
    result(ctx, MSG_DATA, ST_FLASH_ERROR, err, ctx->t.received, t);
}

static bool erase_to(uota_ctx_t *ctx, uint32_t end)
{
    uota_transfer_t *t = &ctx->t;
    while (t->erased_to < end) {
        uint32_t n = erase_unit(t, t->erased_to);
        int32_t err = ctx->port.erase(ctx->port.user, t->part, t->erased_to, n);
        if (err != UOTA_ESP_OK) {
            flash_failed(ctx, "esp_partition_erase_range", err);
            return false;
        }
        t->erased_to += n;
    }
    return true;
}

static bool flush(uota_ctx_t *ctx)
{
    uota_transfer_t *t = &ctx->t;
    if (t->staging_len == 0u) return true;
    uint32_t start = t->received - t->staging_len;
    uint32_t end = t->received;
    if (!erase_to(ctx, end)) return false;
    int32_t err = ctx->port.write_raw(ctx->port.user, t->part, start, ctx->staging, t->staging_len);
    t->staging_len = 0;
    if (err != UOTA_ESP_OK) {
        flash_failed(ctx, "esp_partition_write_raw", err);
        return false;
    }
    uint32_t before = t->written;
    t->written = end;
    if (before / UOTA_PROGRESS_EVERY != end / UOTA_PROGRESS_EVERY)
        ctx->port.record_progress(ctx->port.user, (end / UOTA_PROGRESS_EVERY) * UOTA_PROGRESS_EVERY);
    return true;
}

/* Flash time of a flush of [start, end) once everything before start is in flash (ms, up). */
static uint32_t estimate_flush_ms(const uota_ctx_t *ctx, uint32_t start, uint32_t end)
{
    const uota_transfer_t *t = &ctx->t;
    uint64_t us = 0;
    uint32_t a = t->erased_to;
    while (a < start) a += erase_unit(t, a);
    while (a < end) {
        uint32_t n = erase_unit(t, a);
        us += (n == UOTA_BLOCK) ? ctx->cfg.block_erase_us : ctx->cfg.sector_erase_us;
        a += n;
    }
    uint32_t first = (t->part + start) / UOTA_PAGE;
    uint32_t last = (t->part + end - 1u) / UOTA_PAGE;
    us += (uint64_t)(last - first + 1u) * ctx->cfg.page_program_us;
    if (start / UOTA_PROGRESS_EVERY != end / UOTA_PROGRESS_EVERY) us += ctx->cfg.page_program_us;
    uint64_t ms = (us + 999u) / 1000u;
    return ms > 0xffffffffu ? 0xffffffffu : (uint32_t)ms;
}

/* ---------------------------------------------------------------- ACK (§4, §7) */

static void send_ack(uota_ctx_t *ctx, uint8_t flags, uint32_t hold_at, uint32_t busy_ms)
{
    if (ctx->state != UOTA_RECEIVING) return;
    uota_transfer_t *t = &ctx->t;
    if (!ctx->cfg.isr_in_iram && hold_at == 0u && t->batch_end < t->size) {
        hold_at = t->batch_end;
        busy_ms = estimate_flush_ms(ctx, t->batch_end - ctx->window, t->batch_end);
    }
    wbuf_t w = payload(ctx);
    w32(&w, t->received);
    w32(&w, t->credit);
    w32(&w, t->written);
    w32(&w, hold_at);
    w16(&w, busy_ms > 0xffffu ? 0xffffu : busy_ms);
    w8(&w, flags);
    ctx->ack_due = false;
    tx_frame(ctx, MSG_ACK, w.n);
}

static uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* ISR not in IRAM: credit one batch past the next boundary, with the flash time there (§7). */
static void grant_batch(uota_ctx_t *ctx)
{
    uota_transfer_t *t = &ctx->t;
    t->batch_end = min32(t->size, t->received + ctx->window);
    t->credit = min32(t->size, t->batch_end + ctx->window);
    uint32_t busy = t->batch_end < t->size ? estimate_flush_ms(ctx, t->received, t->batch_end) : 0u;
    send_ack(ctx, 0, t->batch_end, busy);
}

/* ---------------------------------------------------------------- slots */

static uint8_t load_slots(uota_ctx_t *ctx)
{
    uint8_t n = ctx->port.app_slots(ctx->port.user, ctx->slots, (uint8_t)UOTA_MAX_SLOTS);
    return n > UOTA_MAX_SLOTS ? (uint8_t)UOTA_MAX_SLOTS : n;
}

/* esp_ota_get_next_update_partition's notion of an OTA slot: ota_0, ota_1, ... up to the first
 * subtype missing (partition-table.ts otaAppPartitions). */
static const uota_slot_t *find_ota_slot(const uota_ctx_t *ctx, uint8_t n, uint32_t offset)
{
    for (uint8_t i = 0; i < 16u; i++) {
        const uota_slot_t *hit = NULL;
        for (uint8_t k = 0; k < n; k++) {
            if (ctx->slots[k].subtype == (uint8_t)(0x10u + i)) {
                hit = &ctx->slots[k];
                break;
            }
        }
        if (hit == NULL) return NULL;
        if (hit->offset == offset) return hit;
    }
    return NULL;
}

/* ---------------------------------------------------------------- handlers (§4) */

static void on_hello(uota_ctx_t *ctx, const uint8_t *p, uint32_t n)
{
    (void)p;
    if (n != 1u) {
        result_s(ctx, MSG_HELLO, ST_BAD_REQUEST, 0, 0, "bad HELLO");
        return;
    }
    uota_identity_t *id = &ctx->ident;
    memset(id, 0, sizeof *id);
    ctx->port.identity(ctx->port.user, id);
    memset(&ctx->running, 0, sizeof ctx->running);
    ctx->port.running(ctx->port.user, &ctx->running);
    uint8_t slots = load_slots(ctx);
    uota_record_t rec;
    bool has_rec = ctx->port.record_get(ctx->port.user, &rec);

    wbuf_t w = payload(ctx);
    w8(&w, UOTA_PROTOCOL_VERSION);
    wstr(&w, id->chip, id->chip_len > UOTA_LABEL_MAX ? UOTA_LABEL_MAX : id->chip_len);
    w8(&w, id->revision);
    wbytes(&w, id->mac, 6);
    w32(&w, id->flash_size);
    w8(&w, id->flash_encryption);
    w8(&w, id->secure_boot_version);
    w8(&w, id->efuse_secure_version);
    w32(&w, ctx->running.offset);
    w32(&w, ctx->running.state);
    w16(&w, 4u + UOTA_DATA_CHUNK);
    w32(&w, ctx->cfg.ring_bytes + UOTA_HW_FIFO);
    w8(&w, ctx->cfg.isr_in_iram ? 1u : 0u);
    w8(&w, slots);
    for (uint8_t i = 0; i < slots; i++) {
        const uota_slot_t *s = &ctx->slots[i];
        wstr(&w, s->label, s->label_len > UOTA_LABEL_MAX ? UOTA_LABEL_MAX : s->label_len);
        w8(&w, s->subtype);
        w32(&w, s->offset);
        w32(&w, s->size);
    }
    wbytes(&w, id->otadata, 64);
    wbytes(&w, id->app_desc, 256);
    if (has_rec) {
        w8(&w, 1);
        w32(&w, rec.offset);
        w32(&w, rec.size);
        wbytes(&w, rec.sha256, 32);
        w32(&w, rec.written);
    } else {
        w8(&w, 0);
    }
    if (id->has_partition_table_sha256) wbytes(&w, id->partition_table_sha256, 32);
    tx_frame(ctx, MSG_INFO, w.n);
}

static void on_begin(uota_ctx_t *ctx, const uint8_t *p, uint32_t n)
{
    if (n != 40u) {
        result_s(ctx, MSG_BEGIN, ST_BAD_REQUEST, 0, 0, "bad BEGIN");
        return;
    }
    uint32_t offset = rd32(p);
    uint32_t size = rd32(p + 4);
    const uint8_t *sha = p + 8;
    memset(&ctx->running, 0, sizeof ctx->running);
    ctx->port.running(ctx->port.user, &ctx->running);
    uint8_t slots = load_slots(ctx);
    const uota_slot_t *slot = find_ota_slot(ctx, slots, offset);
    text_t *t = text_reset(ctx);
    /* esp_ota_begin refuses the running partition (ESP_ERR_OTA_PARTITION_CONFLICT); we bypass
     * esp_ota_begin (ciphertext, §6.2), so the check is ours. */
    if (offset == ctx->running.offset) {
        tput(t, "0x");
        thex(t, offset);
        tput(t, " is the running slot");
        result(ctx, MSG_BEGIN, ST_RUNNING_SLOT, UOTA_ESP_ERR_OTA_PARTITION_CONFLICT, 0, t);
        return;
    }
    if (slot == NULL) {
        tput(t, "0x");
        thex(t, offset);
        tput(t, " is not an OTA app slot");
        result(ctx, MSG_BEGIN, ST_NOT_APP_SLOT, UOTA_ESP_ERR_NOT_FOUND, 0, t);
        return;
    }
    if (size == 0u || size > slot->size) {
        tdec(t, size);
        tput(t, " bytes do not fit ");
        tbytes(t, slot->label, slot->label_len);
        tput(t, " (");
        tdec(t, slot->size);
        tput(t, ")");
        result(ctx, MSG_BEGIN, ST_TOO_BIG, UOTA_ESP_ERR_INVALID_SIZE, 0, t);
        return;
    }
    /* esp_ota_begin with rollback on refuses while the running app is PENDING_VERIFY
     * (ESP_ERR_OTA_ROLLBACK_INVALID_STATE): an unconfirmed app must not be replaced. */
    if (ctx->cfg.rollback && ctx->running.state == UOTA_STATE_PENDING_VERIFY) {
        result_s(ctx, MSG_BEGIN, ST_PENDING_VERIFY, UOTA_ESP_ERR_OTA_ROLLBACK_INVALID_STATE, 0,
                 "the running app has not confirmed itself yet");
        return;
    }
    /* Built aside: a refused BEGIN leaves a transfer in progress as it was. */
    uota_transfer_t next;
    uota_transfer_t *tr = &next;
    memset(tr, 0, sizeof *tr);
    tr->part = slot->offset;
    tr->slot_size = slot->size;
    memcpy(tr->label, slot->label, UOTA_LABEL_MAX);
    tr->label_len = slot->label_len > UOTA_LABEL_MAX ? (uint8_t)UOTA_LABEL_MAX : slot->label_len;
    tr->size = size;
    memcpy(tr->sha256, sha, 32);
    tr->staging_cap = ctx->cfg.isr_in_iram ? UOTA_DATA_CHUNK : ctx->window;

    uota_record_t rec;
    if (ctx->port.record_get(ctx->port.user, &rec) && rec.offset == offset && rec.size == size &&
        memcmp(rec.sha256, sha, 32) == 0 && rec.written <= size) {
        /* §6.4 resume: the unit holding `written` and all after it are erased again. */
        tr->received = tr->written = tr->erased_to = rec.written;
    } else {
        if (ctx->cfg.rollback) {
            /* otadata must not point at a half-written slot (esp32-facts §1.4). */
            int32_t e = ctx->port.invalidate_inactive_otadata(ctx->port.user);
            if (e != UOTA_ESP_OK && e != UOTA_ESP_ERR_NOT_FOUND) {
                result_s(ctx, MSG_BEGIN, ST_FLASH_ERROR, e, 0, "invalidate otadata");
                return;
            }
        }
        ctx->port.record_open(ctx->port.user, offset, size, sha);
    }
    ctx->t = next;
    tr = &ctx->t;
    ctx->state = UOTA_RECEIVING;
    tbytes(t, tr->label, tr->label_len);
    result(ctx, MSG_BEGIN, ST_OK, 0, tr->received, t);
    if (ctx->cfg.isr_in_iram) {
        tr->credit = min32(tr->size, tr->received + ctx->window);
        send_ack(ctx, 0, 0, 0);
    } else {
        grant_batch(ctx);
    }
}

static void on_data(uota_ctx_t *ctx, const uint8_t *p, uint32_t n)
{
    if (ctx->state != UOTA_RECEIVING) return;
    uota_transfer_t *t = &ctx->t;
    if (n <= 4u) {
        ctx->ack_due = true;
        return;
    }
    uint32_t offset = rd32(p);
    const uint8_t *data = p + 4;
    uint32_t len = n - 4u;
    if (offset > t->size || len > t->size - offset) {
        ctx->ack_due = true;
        return;
    }
    if (offset != t->received) {
        /* Earlier: a duplicate. Later: a frame was lost; say where to resume once (go-back-N),
         * again after a window of later frames if the resent one is lost too. */
        if (offset > t->received) {
            bool again = t->gap_reported && t->gap_reported_at == t->received;
            if (!again || ++t->since_gap_report >= ctx->window / UOTA_DATA_CHUNK) {
                t->gap_reported = true;
                t->gap_reported_at = t->received;
                t->since_gap_report = 0;
                send_ack(ctx, 1, 0, 0);
            }
        } else {
            ctx->ack_due = true;
        }
        return;
    }
    if (t->staging_len + len > t->staging_cap) {
        if (!flush(ctx)) return;
    }
    if (len > t->staging_cap) { /* a chunk larger than the write buffer: cannot stage it */
        ctx->ack_due = true;
        return;
    }
    memcpy(ctx->staging + t->staging_len, data, len);
    t->staging_len += len;
    t->received += len;
    ctx->ack_due = true;
    if (ctx->cfg.isr_in_iram) {
        uint32_t c = min32(t->size, t->received + ctx->window);
        if (c > t->credit) t->credit = c;
        if (t->staging_len == t->staging_cap || t->received == t->size) {
            /* Tell the host about the credit before the flash keeps us busy. */
            send_ack(ctx, 0, 0, 0);
            (void)flush(ctx);
        }
    } else if (t->received == t->batch_end) {
        /* Not in IRAM: program flash only at a batch boundary, where the host pauses (§7). */
        if (flush(ctx)) grant_batch(ctx);
    }
}

static void fail_end(uota_ctx_t *ctx, uint8_t status, int32_t err, uint32_t value, const text_t *t)
{
    ctx->state = UOTA_IDLE;
    ctx->port.record_close(ctx->port.user);
    result(ctx, MSG_END, status, err, value, t);
}

static void hex8(text_t *t, const uint8_t *b)
{
    for (unsigned i = 0; i < 8; i++) {
        if (b[i] < 16u) tput(t, "0");
        thex(t, b[i]);
    }
}

static void on_end(uota_ctx_t *ctx)
{
    uota_transfer_t *t = &ctx->t;
    text_t *d = text_reset(ctx);
    if (ctx->state == UOTA_VERIFIED) {
        /* Idempotent: the same answer as the first END (§3.4). */
        tbytes(d, t->version, t->version_len);
        result(ctx, MSG_END, ST_OK, 0, t->size, d);
        return;
    }
    if (ctx->state != UOTA_RECEIVING) return;
    if (t->received != t->size) {
        tdec(d, t->received);
        tput(d, " of ");
        tdec(d, t->size);
        tput(d, " bytes received");
        result(ctx, MSG_END, ST_INCOMPLETE, UOTA_ESP_ERR_INVALID_SIZE, t->received, d);
        return;
    }
    if (!flush(ctx)) return;
    /* Every byte, read back from flash (covers resumed transfers too), through the write
     * buffer, which is empty now. */
    uota_sha256_init(&ctx->sha);
    for (uint32_t o = 0; o < t->size; o += UOTA_SECTOR) {
        uint32_t n = min32(UOTA_SECTOR, t->size - o);
        int32_t err = ctx->port.read_raw(ctx->port.user, t->part, o, ctx->staging, n);
        if (err != UOTA_ESP_OK) {
            tput(d, "esp_partition_read_raw: ");
            terr(d, err);
            fail_end(ctx, ST_FLASH_ERROR, err, 0, d);
            return;
        }
        uota_sha256_update(&ctx->sha, ctx->staging, n);
    }
    uint8_t got[32];
    uota_sha256_final(&ctx->sha, got);
    if (memcmp(got, t->sha256, 32) != 0) {
        tput(d, "flash SHA-256 ");
        hex8(d, got);
        tput(d, "\xE2\x80\xA6 \xE2\x89\xA0 BEGIN's ");
        hex8(d, t->sha256);
        tput(d, "\xE2\x80\xA6");
        fail_end(ctx, ST_HASH_MISMATCH, UOTA_ESP_ERR_INVALID_CRC, 0, d);
        return;
    }
    uota_image_check_t *c = &ctx->check;
    memset(c, 0, sizeof *c);
    int32_t err = ctx->port.verify_image(ctx->port.user, t->part, c);
    if (err != UOTA_ESP_OK) {
        tbytes(d, c->detail, c->detail_len); /* a uint8_t: at most 255, the detail's limit */
        fail_end(ctx, ST_IMAGE_INVALID, UOTA_ESP_ERR_OTA_VALIDATE_FAILED, 0, d);
        return;
    }
    /* Anti-rollback: esp_ota_set_boot_partition would refuse (and erase the slot) later; END
     * says so first, with its own status (§5 SMALL_SEC_VER). */
    if (ctx->cfg.anti_rollback && c->secure_version < c->efuse_secure_version) {
        tput(d, "secure_version ");
        tdec(d, c->secure_version);
        tput(d, " < eFuse ");
        tdec(d, c->efuse_secure_version);
        fail_end(ctx, ST_SMALL_SEC_VER, UOTA_ESP_ERR_OTA_SMALL_SEC_VER, c->secure_version, d);
        return;
    }
    t->version_len = c->version_len > UOTA_VERSION_MAX ? (uint8_t)UOTA_VERSION_MAX : c->version_len;
    memcpy(t->version, c->version, UOTA_VERSION_MAX);
    ctx->state = UOTA_VERIFIED;
    tbytes(d, t->version, t->version_len);
    result(ctx, MSG_END, ST_OK, 0, t->size, d);
}

static void on_activate(uota_ctx_t *ctx)
{
    text_t *d = text_reset(ctx);
    if (ctx->state == UOTA_ACTIVATED) {
        result_s(ctx, MSG_ACTIVATE, ST_OK, 0, 0, "already");
        return;
    }
    if (ctx->state != UOTA_VERIFIED) return;
    int32_t err = ctx->port.set_boot(ctx->port.user, ctx->t.part);
    if (err != UOTA_ESP_OK) {
        /* ESP_ERR_OTA_VALIDATE_FAILED and ESP_ERR_OTA_SMALL_SEC_VER (the slot was erased) stay
         * distinct in the esp_err_t field and the detail. */
        ctx->state = UOTA_IDLE;
        ctx->port.record_close(ctx->port.user);
        terr(d, err);
        result(ctx, MSG_ACTIVATE, ST_IMAGE_INVALID, err, 0, d);
        return;
    }
    ctx->port.record_close(ctx->port.user);
    ctx->state = UOTA_ACTIVATED;
    tbytes(d, ctx->t.label, ctx->t.label_len);
    result(ctx, MSG_ACTIVATE, ST_OK, 0, 0, d);
}

static void on_reboot(uota_ctx_t *ctx)
{
    result_s(ctx, MSG_REBOOT, ST_OK, 0, 0, "restarting");
    ctx->port.restart(ctx->port.user);
}

static void on_abort(uota_ctx_t *ctx)
{
    if (ctx->state == UOTA_RECEIVING || ctx->state == UOTA_VERIFIED) ctx->port.record_close(ctx->port.user);
    /* After ACTIVATE, ABORT cannot undo otadata; it says so. */
    bool activated = ctx->state == UOTA_ACTIVATED;
    if (!activated) ctx->state = UOTA_IDLE;
    result_s(ctx, MSG_ABORT, activated ? ST_BAD_STATE : ST_OK, 0, 0,
             activated ? "already activated; REBOOT to run it" : "aborted");
}

static bool supported_baud(uint32_t b)
{
    return b == 115200u || b == 230400u || b == 460800u || b == 921600u || b == 1500000u || b == 2000000u;
}

static void on_baud(uota_ctx_t *ctx, const uint8_t *p, uint32_t n, uint32_t now_ms)
{
    text_t *d = text_reset(ctx);
    if (n != 4u) {
        /* What the TypeScript device side says for an undecodable rate, kept byte-identical. */
        tput(d, "undefined");
        result(ctx, MSG_BAUD, ST_BAD_BAUD, UOTA_ESP_ERR_INVALID_ARG, 0, d);
        return;
    }
    uint32_t baud = rd32(p);
    if (!supported_baud(baud)) {
        tdec(d, baud);
        result(ctx, MSG_BAUD, ST_BAD_BAUD, UOTA_ESP_ERR_INVALID_ARG, 0, d);
        return;
    }
    uint32_t old = ctx->baud;
    result_s(ctx, MSG_BAUD, ST_OK, 0, baud, "switching");
    /* The port waits for the RESULT to leave (uart_wait_tx_done), then switches; unless a
     * valid frame confirms the rate within 1 s, tick() switches back (§3.3). */
    ctx->port.set_baud(ctx->port.user, baud);
    ctx->old_baud = old;
    ctx->baud = baud;
    ctx->baud_confirm_pending = true;
    /* The 1 s runs from the switch, after the RESULT's 32 byte times at the old rate (10 bits
     * a byte, rounded up, +1 ms as the TypeScript device side counts them). */
    uint32_t tx_ms = (old > 0u ? (320000u + old - 1u) / old : 0u) + 1u;
    ctx->baud_confirm_at = now_ms + tx_ms + UOTA_BAUD_CONFIRM_MS;
}

/* ---------------------------------------------------------------- dispatcher (§6.1) */

static bool allowed(uota_state_t s, uint8_t type)
{
    switch (type) {
    case MSG_HELLO:
    case MSG_STATUS:
    case MSG_BAUD:
    case MSG_ABORT:
    case MSG_REBOOT: return true;
    case MSG_BEGIN: return s == UOTA_IDLE || s == UOTA_RECEIVING || s == UOTA_VERIFIED;
    case MSG_DATA: return s == UOTA_RECEIVING;
    case MSG_END: return s == UOTA_RECEIVING || s == UOTA_VERIFIED;
    case MSG_ACTIVATE: return s == UOTA_VERIFIED || s == UOTA_ACTIVATED;
    default: return false;
    }
}

static void dispatch(uota_ctx_t *ctx, uint8_t type, const uint8_t *p, uint32_t n, uint32_t now_ms)
{
    /* Any valid frame confirms a new baud rate (§3.3). */
    ctx->baud_confirm_pending = false;
    ctx->frames++;
    text_t *d = text_reset(ctx);
    if (type == 0u || type > MSG_STATUS) {
        tput(d, "unknown request 0x");
        thex(d, type);
        result(ctx, type, ST_BAD_REQUEST, 0, 0, d);
        return;
    }
    if (!allowed(ctx->state, type)) {
        /* A DATA frame after END/ABORT is a retransmission in flight: harmless, ignored (§4). */
        if (type == MSG_DATA) return;
        tput(d, "not allowed while ");
        tput(d, state_name(ctx->state));
        result(ctx, type, ST_BAD_STATE, 0, 0, d);
        return;
    }
    switch (type) {
    case MSG_HELLO: on_hello(ctx, p, n); break;
    case MSG_BEGIN: on_begin(ctx, p, n); break;
    case MSG_DATA: on_data(ctx, p, n); break;
    case MSG_END: on_end(ctx); break;
    case MSG_ACTIVATE: on_activate(ctx); break;
    case MSG_REBOOT: on_reboot(ctx); break;
    case MSG_ABORT: on_abort(ctx); break;
    case MSG_BAUD: on_baud(ctx, p, n, now_ms); break;
    case MSG_STATUS: uota_announce(ctx, 1); break;
    default: break;
    }
}

/* ---------------------------------------------------------------- push parser (§2.2, §2.3) */

static void rx_drop(uota_ctx_t *ctx, uint32_t k)
{
    ctx->rx_head += k;
    if (ctx->rx_head >= ctx->rx_len) ctx->rx_head = ctx->rx_len = 0;
}

/*
 * Decode what is held. Returns true after dispatching one frame (more may be held). Bytes
 * outside frames are console text the device ignores; a bad header skips one byte, a bad
 * CRC-32 skips the whole frame (its header was sound), a partial frame waits.
 */
static bool rx_process(uota_ctx_t *ctx, uint32_t now_ms)
{
    for (;;) {
        uint32_t held = ctx->rx_len - ctx->rx_head;
        if (held == 0u) return false;
        const uint8_t *b = ctx->rx + ctx->rx_head;
        if (b[0] != 0xA5u) {
            rx_drop(ctx, 1);
            continue;
        }
        if (held < 6u) return false;
        uint32_t n = (uint32_t)b[3] | ((uint32_t)b[4] << 8);
        if (b[1] != 0x5Au || uota_crc8(b + 2, 3) != b[5] || n > UOTA_MAX_PAYLOAD) {
            ctx->noise_bytes++;
            rx_drop(ctx, 1);
            continue;
        }
        uint32_t total = UOTA_FRAME_OVERHEAD + n;
        if (held < total) return false;
        if (uota_crc32(b + 2, 4 + n) != rd32(b + 6 + n)) {
            ctx->crc_errors++;
            rx_drop(ctx, total);
            continue;
        }
        /* Dispatch from the buffer, then drop the frame: handlers never feed. */
        dispatch(ctx, b[2], b + 6, n, now_ms);
        rx_drop(ctx, total);
        return true;
    }
}

/* How many more bytes the frame at rx_head needs, once its header checked (0: unknown). */
static uint32_t rx_want(const uota_ctx_t *ctx)
{
    uint32_t held = ctx->rx_len - ctx->rx_head;
    const uint8_t *b = ctx->rx + ctx->rx_head;
    if (held < 6u || b[0] != 0xA5u || b[1] != 0x5Au) return 0;
    uint32_t n = (uint32_t)b[3] | ((uint32_t)b[4] << 8);
    if (n > UOTA_MAX_PAYLOAD || uota_crc8(b + 2, 3) != b[5]) return 0;
    uint32_t total = UOTA_FRAME_OVERHEAD + n;
    return total > held ? total - held : 0;
}

bool uota_feed(uota_ctx_t *ctx, const uint8_t *data, size_t len, uint32_t now_ms, size_t *consumed)
{
    size_t used = 0;
    if (len > 0u) {
        ctx->last_rx_ms = now_ms;
        ctx->seen_rx = true;
    }
    for (;;) {
        if (ctx->rx_rescan) {
            if (rx_process(ctx, now_ms)) {
                *consumed = used;
                return true;
            }
            ctx->rx_rescan = false;
        }
        if (used == len) break;
        if (ctx->rx_len == ctx->rx_head && data[used] != 0xA5u) {
            used++; /* console text between frames */
            continue;
        }
        if (ctx->rx_len == UOTA_FRAME_MAX) {
            /* Compact: what is held is one partial frame, shorter than the buffer. */
            uint32_t held = ctx->rx_len - ctx->rx_head;
            memmove(ctx->rx, ctx->rx + ctx->rx_head, held);
            ctx->rx_head = 0;
            ctx->rx_len = held;
        }
        uint32_t want = rx_want(ctx);
        size_t take = 1;
        if (want > 1u) take = want; /* the body of a frame whose header checked: copy at once */
        if (take > len - used) take = len - used;
        if (take > UOTA_FRAME_MAX - ctx->rx_len) take = UOTA_FRAME_MAX - ctx->rx_len;
        memcpy(ctx->rx + ctx->rx_len, data + used, take);
        ctx->rx_len += (uint32_t)take;
        used += take;
        ctx->rx_rescan = true;
    }
    *consumed = used;
    return false;
}

void uota_feed_all(uota_ctx_t *ctx, const uint8_t *data, size_t len, uint32_t now_ms)
{
    size_t off = 0;
    for (;;) {
        size_t used = 0;
        bool more = uota_feed(ctx, data + off, len - off, now_ms, &used);
        off += used;
        if (!more && off == len) return;
    }
}

void uota_line_gap(uota_ctx_t *ctx)
{
    /* What waited for the rest is not a frame: skip its start byte and decode the rest afresh,
     * so a frame swallowed as "the rest" is found (§2.3). */
    if (ctx->rx_len > ctx->rx_head && ctx->rx[ctx->rx_head] == 0xA5u) {
        ctx->noise_bytes++;
        rx_drop(ctx, 1);
        ctx->rx_rescan = true;
    }
}

/* ---------------------------------------------------------------- time, idle, boot */

void uota_tick(uota_ctx_t *ctx, uint32_t now_ms)
{
    if (ctx->cfg.frame_gap_ms != 0u && ctx->seen_rx && ctx->rx_len > ctx->rx_head &&
        (uint32_t)(now_ms - ctx->last_rx_ms) >= ctx->cfg.frame_gap_ms) {
        uota_line_gap(ctx);
        ctx->last_rx_ms = now_ms;
        /* Frames found in what was held are dispatched now. */
        size_t used;
        while (uota_feed(ctx, NULL, 0, now_ms, &used)) {
        }
    }
    if (ctx->baud_confirm_pending && (int32_t)(now_ms - ctx->baud_confirm_at) >= 0) {
        ctx->baud_confirm_pending = false;
        ctx->baud = ctx->old_baud;
        ctx->port.set_baud(ctx->port.user, ctx->old_baud);
    }
}

int32_t uota_next_deadline(const uota_ctx_t *ctx, uint32_t now_ms)
{
    int32_t best = -1;
    if (ctx->baud_confirm_pending) {
        int32_t d = (int32_t)(ctx->baud_confirm_at - now_ms);
        best = d < 0 ? 0 : d;
    }
    if (ctx->cfg.frame_gap_ms != 0u && ctx->rx_len > ctx->rx_head) {
        int32_t d = (int32_t)(ctx->last_rx_ms + ctx->cfg.frame_gap_ms - now_ms);
        if (d < 0) d = 0;
        if (best < 0 || d < best) best = d;
    }
    return best;
}

void uota_idle(uota_ctx_t *ctx)
{
    if (ctx->state != UOTA_RECEIVING) return;
    uota_transfer_t *t = &ctx->t;
    if (ctx->ack_due) send_ack(ctx, 0, 0, 0);
    /* ISR in IRAM: erase ahead while idle (reception goes on meanwhile), at most a window and
     * a block ahead, one unit per idle call. */
    if (ctx->cfg.isr_in_iram && t->erased_to < erase_end(t) &&
        (uint64_t)t->erased_to < (uint64_t)t->received + ctx->window + UOTA_BLOCK)
        (void)erase_to(ctx, t->erased_to + 1u);
}

void uota_announce(uota_ctx_t *ctx, uint8_t phase)
{
    memset(&ctx->running, 0, sizeof ctx->running);
    ctx->port.running(ctx->port.user, &ctx->running);
    wbuf_t w = payload(ctx);
    w8(&w, phase);
    w32(&w, ctx->running.offset);
    w32(&w, phase == 0u ? ctx->running.boot_state : ctx->running.state);
    wstr(&w, ctx->running.version,
         ctx->running.version_len > UOTA_VERSION_MAX ? UOTA_VERSION_MAX : ctx->running.version_len);
    tx_frame(ctx, MSG_ANNOUNCE, w.n);
}

int32_t uota_self_test_done(uota_ctx_t *ctx, bool ok)
{
    text_t *t = text_reset(ctx);
    if (!ok) {
        /* esp_ota_mark_app_invalid_rollback_and_reboot: does not return on success. */
        int32_t err = ctx->port.mark_invalid(ctx->port.user);
        tput(t, "self-test failed; rollback: ");
        terr(t, err);
        log_text(ctx, UOTA_LOG_ERROR, t);
        return err;
    }
    memset(&ctx->running, 0, sizeof ctx->running);
    ctx->port.running(ctx->port.user, &ctx->running);
    int32_t err = UOTA_ESP_OK;
    if (ctx->running.state == UOTA_STATE_PENDING_VERIFY) {
        err = ctx->port.mark_valid(ctx->port.user);
        if (err != UOTA_ESP_OK) {
            tput(t, "esp_ota_mark_app_valid_cancel_rollback: ");
            terr(t, err);
            log_text(ctx, UOTA_LOG_ERROR, t);
        }
    }
    uota_announce(ctx, 1);
    return err;
}

int uota_init(uota_ctx_t *ctx, const uota_config_t *cfg, const uota_port_t *port)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->cfg = *cfg;
    ctx->port = *port;
    ctx->state = UOTA_IDLE;
    ctx->baud = cfg->console_baud;
    /* §7: the host may have W frames beyond what the device has parsed; they sit in the ring
     * and FIFO, 64 bytes spare for a control frame. */
    uint32_t frames = (cfg->ring_bytes + UOTA_HW_FIFO - 64u) / (UOTA_FRAME_OVERHEAD + 4u + UOTA_DATA_CHUNK);
    if (cfg->ring_bytes + UOTA_HW_FIFO < 64u || frames < 1u) return -1;
    ctx->window = frames * UOTA_DATA_CHUNK;
    /* Without the ISR in IRAM the write buffer holds a whole batch. */
    if (!cfg->isr_in_iram && ctx->window > UOTA_STAGING_BYTES) return -1;
    if (UOTA_STAGING_BYTES < UOTA_DATA_CHUNK) return -1;
    return 0;
}
