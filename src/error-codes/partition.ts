import type { ErrorCodeTable } from "./types.js";

export const partitionCodes = {} as const satisfies ErrorCodeTable;
