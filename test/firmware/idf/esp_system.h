/* esp_system.h (esp_system) */
#pragma once
void esp_restart(void) __attribute__((noreturn));
