/* freertos/task.h */
#pragma once
#include "FreeRTOS.h"
typedef struct tskTaskControlBlock *TaskHandle_t;
typedef void (*TaskFunction_t)(void *);
typedef enum { eNoAction = 0, eSetBits } eNotifyAction;
#define taskSCHEDULER_RUNNING ((BaseType_t)2)
BaseType_t xTaskCreate(TaskFunction_t fn, const char *name, uint32_t stack_depth, void *param,
                       UBaseType_t priority, TaskHandle_t *created);
BaseType_t xTaskNotify(TaskHandle_t task, uint32_t value, eNotifyAction action);
BaseType_t xTaskNotifyWait(uint32_t clear_on_entry, uint32_t clear_on_exit, uint32_t *value, TickType_t wait);
BaseType_t xTaskGetSchedulerState(void);
