/** esp_err_t values the simulated ESP-IDF APIs return (esp_err.h, esp_ota_ops.h, esp_image_format.h). */
export const ESP_ERR = {
  ESP_OK: 0,
  ESP_FAIL: -1,
  ESP_ERR_NO_MEM: 0x101,
  ESP_ERR_INVALID_ARG: 0x102,
  ESP_ERR_INVALID_STATE: 0x103,
  ESP_ERR_INVALID_SIZE: 0x104,
  ESP_ERR_NOT_FOUND: 0x105,
  ESP_ERR_NOT_SUPPORTED: 0x106,
  ESP_ERR_INVALID_CRC: 0x109,
  ESP_ERR_TIMEOUT: 0x107,
  ESP_ERR_NOT_ALLOWED: 0x10d,
  ESP_ERR_OTA_PARTITION_CONFLICT: 0x1501,
  ESP_ERR_OTA_SELECT_INFO_INVALID: 0x1502,
  ESP_ERR_OTA_VALIDATE_FAILED: 0x1503,
  ESP_ERR_OTA_SMALL_SEC_VER: 0x1504,
  ESP_ERR_OTA_ROLLBACK_FAILED: 0x1505,
  ESP_ERR_OTA_ROLLBACK_INVALID_STATE: 0x1506,
  ESP_ERR_IMAGE_FLASH_FAIL: 0x2001,
  ESP_ERR_IMAGE_INVALID: 0x2002,
} as const;

export type EspErrName = keyof typeof ESP_ERR;

const NAMES = new Map<number, EspErrName>(
  Object.entries(ESP_ERR).map(([k, v]) => [v, k as EspErrName]),
);

/** esp_err_to_name. */
export function espErrToName(err: number): string {
  return NAMES.get(err) ?? `UNKNOWN ERROR 0x${(err >>> 0).toString(16)}`;
}
