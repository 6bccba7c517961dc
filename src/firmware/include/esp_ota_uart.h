/*
 * esp_ota_uart: receive OTA updates from the esp-ota gateway over a UART
 * (docs/uart-protocol.md). Add the component to an app, call esp_ota_uart_start() early in
 * app_main (after nvs_flash_init), run the app's self-test, then call
 * esp_ota_uart_self_test_done(). docs/firmware.md walks through it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "esp_err.h"
#include "sdkconfig.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int uart_num;           /* UART_NUM_0 shares the console (the default) */
    int tx_pin;             /* UART_PIN_NO_CHANGE (-1) keeps the IOMUX pins */
    int rx_pin;
    uint32_t console_baud;  /* the rate the console starts at, 115200 */
    uint32_t rx_ring_bytes; /* uart_driver_install rx_buffer_size (§6.3) */
    int task_priority;
    uint32_t task_stack_bytes;
    /* Log lines go through the component's writer so none lands inside a frame
     * (esp_log_set_vprintf). Leave true when the UART is the console's. */
    bool take_over_log;
} esp_ota_uart_config_t;

#ifdef CONFIG_ESP_OTA_UART_TAKE_OVER_LOG
#define ESP_OTA_UART_TAKE_OVER_LOG_DEFAULT true
#else
#define ESP_OTA_UART_TAKE_OVER_LOG_DEFAULT false
#endif

/* The Kconfig defaults (menuconfig → Component config → esp_ota_uart). */
#define ESP_OTA_UART_CONFIG_DEFAULT()                                   \
    {                                                                   \
        .uart_num = CONFIG_ESP_OTA_UART_NUM,                            \
        .tx_pin = CONFIG_ESP_OTA_UART_TX_PIN,                           \
        .rx_pin = CONFIG_ESP_OTA_UART_RX_PIN,                           \
        .console_baud = CONFIG_ESP_OTA_UART_CONSOLE_BAUD,               \
        .rx_ring_bytes = CONFIG_ESP_OTA_UART_RX_RING_BYTES,             \
        .task_priority = CONFIG_ESP_OTA_UART_TASK_PRIORITY,             \
        .task_stack_bytes = CONFIG_ESP_OTA_UART_TASK_STACK,             \
        .take_over_log = ESP_OTA_UART_TAKE_OVER_LOG_DEFAULT,        \
    }

/*
 * Installs the UART driver, starts the receiver task and sends ANNOUNCE(phase 0). Call once.
 * ESP_ERR_INVALID_STATE: already started; ESP_ERR_INVALID_ARG: a configuration the receiver
 * cannot work with (a ring that holds no DATA frame); or the UART driver's error.
 */
esp_err_t esp_ota_uart_start(const esp_ota_uart_config_t *config);

/*
 * The app's self-test hook. ok: the app works; if it booted PENDING_VERIFY it is marked valid
 * (esp_ota_mark_app_valid_cancel_rollback) and ANNOUNCE(phase 1) tells the host. !ok: it is
 * marked invalid and the chip reboots into the previous app
 * (esp_ota_mark_app_invalid_rollback_and_reboot). Returns at once; the receiver task acts.
 * With rollback disabled in the bootloader, call it with true when the app is up.
 */
void esp_ota_uart_self_test_done(bool ok);

typedef enum {
    ESP_OTA_UART_IDLE = 0,
    ESP_OTA_UART_RECEIVING = 1,
    ESP_OTA_UART_VERIFIED = 2,
    ESP_OTA_UART_ACTIVATED = 3,
} esp_ota_uart_state_t;

typedef struct {
    esp_ota_uart_state_t state;
    uint32_t frames;     /* frames handled since start */
    uint32_t crc_errors; /* frames dropped for a bad CRC-32 */
    uint32_t received;   /* image bytes of the current transfer */
    uint32_t size;
} esp_ota_uart_status_t;

/* A snapshot of the receiver (the app may show it, or hold off its own flash work). */
esp_err_t esp_ota_uart_get_status(esp_ota_uart_status_t *out);

#ifdef __cplusplus
}
#endif
