/* esp_flash_encrypt.h (bootloader_support) */
#pragma once
#include <stdbool.h>
typedef enum {
    ESP_FLASH_ENC_MODE_DISABLED,
    ESP_FLASH_ENC_MODE_DEVELOPMENT,
    ESP_FLASH_ENC_MODE_RELEASE
} esp_flash_enc_mode_t;
bool esp_flash_encryption_enabled(void);
esp_flash_enc_mode_t esp_get_flash_encryption_mode(void);
