/* esp_image_format.h (bootloader_support) */
#pragma once
#include <stdint.h>
#include "esp_err.h"
typedef struct { uint32_t offset; uint32_t size; } esp_partition_pos_t;
typedef enum { ESP_IMAGE_VERIFY = 0, ESP_IMAGE_VERIFY_SILENT = 1 } esp_image_load_mode_t;
/* Opaque here: the port only passes it (ESP-IDF's holds the header, segments, image_len...). */
typedef struct { uint32_t start_addr; uint8_t opaque[508]; } esp_image_metadata_t;
esp_err_t esp_image_verify(esp_image_load_mode_t mode, const esp_partition_pos_t *part, esp_image_metadata_t *data);
