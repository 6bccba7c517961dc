import type { ErrorCodeTable } from "./types.js";

export const releaseCodes = {} as const satisfies ErrorCodeTable;
