import type { ErrorCodeTable } from "./types.js";

export const secureBootCodes = {} as const satisfies ErrorCodeTable;
