import type { ErrorCodeTable } from "./types.js";

export const flashEncryptionCodes = {} as const satisfies ErrorCodeTable;
