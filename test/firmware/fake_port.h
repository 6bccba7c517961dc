/* The in-memory port and input language of fake_port.c. */
#ifndef UOTA_FAKE_PORT_H
#define UOTA_FAKE_PORT_H
#include <stddef.h>
#include <stdint.h>

#include "uota_core.h"

/* Every frame the core sends, then a 4-byte end record (0xEE, state, frames, crc errors). */
extern void (*fake_on_uart)(const uint8_t *data, uint32_t len);
/* Runs one input program on a fresh flash and a fresh core. */
void fake_run(const uint8_t *data, size_t size);
#endif
