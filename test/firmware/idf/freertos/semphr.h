/* freertos/semphr.h */
#pragma once
#include "FreeRTOS.h"
typedef struct QueueDefinition *SemaphoreHandle_t;
typedef struct QueueDefinition *QueueHandle_t;
SemaphoreHandle_t xSemaphoreCreateRecursiveMutex(void);
BaseType_t xSemaphoreTakeRecursive(SemaphoreHandle_t m, TickType_t wait);
BaseType_t xSemaphoreGiveRecursive(SemaphoreHandle_t m);
