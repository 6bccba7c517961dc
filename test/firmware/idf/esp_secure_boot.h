/* esp_secure_boot.h (bootloader_support) */
#pragma once
#include <stdbool.h>
bool esp_secure_boot_enabled(void);
