import type { ErrorCodeTable } from "./types.js";

export const releaseBuildCodes = {} as const satisfies ErrorCodeTable;
