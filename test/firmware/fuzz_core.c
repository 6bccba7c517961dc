/*
 * libFuzzer target over the firmware core's parser and dispatcher (npm run fuzz:firmware),
 * built natively with -fsanitize=fuzzer,address,undefined. fake_port.c holds the checking
 * port and the input language.
 */
#include "fake_port.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fake_run(data, size);
    return 0;
}
