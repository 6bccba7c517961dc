import type { ErrorCodeTable } from "./types.js";

export const uartCodes = {} as const satisfies ErrorCodeTable;
