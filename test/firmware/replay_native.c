/*
 * Native half of the native-vs-wasm differential (native-diff.test.ts): reads records
 * (u32 little-endian length, then the input program) from stdin, runs each through the core
 * on fake_port.c, and writes for each one record (u32 length, then every byte the core sent
 * and the end record) to stdout.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fake_port.h"

static uint8_t out[1u << 22];
static size_t out_len;

static void collect(const uint8_t *d, uint32_t n)
{
    if (out_len + n > sizeof out) abort();
    for (uint32_t i = 0; i < n; i++) out[out_len++] = d[i];
}

int main(void)
{
    static uint8_t in[1u << 20];
    fake_on_uart = collect;
    for (;;) {
        uint8_t h[4];
        if (fread(h, 1, 4, stdin) != 4) return 0;
        size_t n = (size_t)h[0] | ((size_t)h[1] << 8) | ((size_t)h[2] << 16) | ((size_t)h[3] << 24);
        if (n > sizeof in || fread(in, 1, n, stdin) != n) return 2;
        out_len = 0;
        fake_run(in, n);
        uint8_t l[4] = {(uint8_t)out_len, (uint8_t)(out_len >> 8), (uint8_t)(out_len >> 16), (uint8_t)(out_len >> 24)};
        fwrite(l, 1, 4, stdout);
        fwrite(out, 1, out_len, stdout);
    }
}
