/*
 * The smallest app that can be updated by the esp-ota gateway: start the receiver, run the
 * self-test, report it. With rollback on, an update that never reports ok is rolled back by
 * the bootloader at the next reset.
 */
#include <stdbool.h>

#include "esp_log.h"
#include "esp_ota_uart.h"
#include "nvs_flash.h"

static const char *TAG = "app";

/* What "this build works" means for the product: the peripherals it needs answer, its
 * configuration loads, it reaches its server. Here: NVS opens. */
static bool self_test(void)
{
    nvs_handle_t h;
    esp_err_t err = nvs_open("app", NVS_READONLY, &h);
    if (err == ESP_ERR_NVS_NOT_FOUND) return true; /* a fresh NVS: nothing stored yet */
    if (err != ESP_OK) return false;
    nvs_close(h);
    return true;
}

void app_main(void)
{
    /* The progress record lives in NVS; with flash encryption use an encrypted NVS
     * (CONFIG_NVS_ENCRYPTION: nvs_flash_init then uses the nvs_keys partition). */
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);

    const esp_ota_uart_config_t cfg = ESP_OTA_UART_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_ota_uart_start(&cfg));

    bool ok = self_test();
    ESP_LOGI(TAG, "self-test %s", ok ? "passed" : "failed");
    esp_ota_uart_self_test_done(ok);
}
