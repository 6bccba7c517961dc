import type { ErrorCodeTable } from "./types.js";

export const otadataCodes = {} as const satisfies ErrorCodeTable;
