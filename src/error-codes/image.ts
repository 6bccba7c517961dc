import type { ErrorCodeTable } from "./types.js";

export const imageCodes = {} as const satisfies ErrorCodeTable;
