/* esp_idf_version.h (esp_common) */
#pragma once
#ifndef UOTA_IDF_MINOR
#define UOTA_IDF_MINOR 5
#endif
#define ESP_IDF_VERSION_VAL(major, minor, patch) (((major) << 16) | ((minor) << 8) | (patch))
#define ESP_IDF_VERSION ESP_IDF_VERSION_VAL(5, UOTA_IDF_MINOR, 0)
