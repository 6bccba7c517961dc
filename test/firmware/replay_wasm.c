/*
 * WebAssembly half of the native-vs-wasm differential: the same core and fake_port.c, built
 * with the flags of the committed module (--target=wasm32, freestanding). The host writes an
 * input program at replay_in() and calls replay(len); every byte the core sends comes back
 * through the one import, out(ptr, len).
 */
#include "fake_port.h"

__attribute__((import_module("replay"), import_name("out"))) void imp_out(const uint8_t *d, uint32_t n);

static uint8_t in[1u << 16];

static void forward(const uint8_t *d, uint32_t n) { imp_out(d, n); }

__attribute__((export_name("replay_in"))) uint8_t *replay_in(void) { return in; }
__attribute__((export_name("replay_cap"))) uint32_t replay_cap(void) { return sizeof in; }

__attribute__((export_name("replay"))) void replay(uint32_t len)
{
    if (len > sizeof in) return;
    fake_on_uart = forward;
    fake_run(in, len);
}
