/* esp_efuse.h (efuse) */
#pragma once
#include <stdint.h>
uint32_t esp_efuse_read_secure_version(void);
