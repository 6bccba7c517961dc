/** One entry of docs/errors.md: what the code means and what the user should do about it. */
export interface ErrorCodeInfo {
  readonly meaning: string;
  readonly action: string;
}

export type ErrorCodeTable = Readonly<Record<`E_${string}`, ErrorCodeInfo>>;
