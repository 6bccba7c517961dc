/**
 * Schema checks for every TypeBox schema of the project: the first error of a value, or undefined
 * when it conforms.
 *
 * A valid value, the common case, is checked by TypeBox's compiled checker (made once per schema):
 * `Value.Errors(...).First()`, used for every value before, took 0.34 ms for a release manifest,
 * and `release build` checks one per device on its main thread (test/bench/release.ts); the
 * compiled check is a few microseconds. Only a value that fails is walked again for its error.
 */
import type { TSchema } from "@sinclair/typebox";
import { type TypeCheck, TypeCompiler } from "@sinclair/typebox/compiler";
import { Value } from "@sinclair/typebox/value";
import { quote } from "./text.js";

const checkers = new WeakMap<TSchema, TypeCheck<TSchema>>();

export interface SchemaError {
  /**
   * JSON Pointer of the offending value ("" for the root), each segment cut to PATH_SEGMENT_MAX
   * characters with its control characters escaped (quote): it names where the fault is.
   */
  path: string;
  message: string;
}

/**
 * The longest path segment a schema error names. A key is chosen by whoever wrote the value: a
 * manifest server put a 60 KB unknown key in a manifest, E_MANIFEST_SCHEMA quoted it whole, and
 * the device's status could not be encoded (issue 12, defect 1). TypeBox's messages themselves
 * never quote the value, only the schema.
 */
export const PATH_SEGMENT_MAX = 64;

function boundedPath(path: string): string {
  return path
    .split("/")
    .map((segment) => quote(segment, PATH_SEGMENT_MAX))
    .join("/");
}

export function firstSchemaError(schema: TSchema, value: unknown): SchemaError | undefined {
  let checker = checkers.get(schema);
  if (!checker) {
    checker = TypeCompiler.Compile(schema);
    checkers.set(schema, checker);
  }
  if (checker.Check(value)) return undefined;
  const first = Value.Errors(schema, value).First();
  // The compiled and the interpreted checker agree; should they not, the value still fails.
  return first
    ? { path: boundedPath(first.path), message: first.message }
    : { path: "", message: "invalid" };
}
