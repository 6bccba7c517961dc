/** Reads the oracle vectors under test/fixtures (copied from shared/vectors; see its README). */
import { readFileSync } from "node:fs";

const root = new URL("../fixtures/", import.meta.url);

export function fixture(path: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(path, root)));
}

export function fixtureText(path: string): string {
  return readFileSync(new URL(path, root), "utf8");
}

// biome-ignore lint/suspicious/noExplicitAny: callers that do not name a type index freely into vector JSON.
export function fixtureJson<T = any>(path: string): T {
  return JSON.parse(fixtureText(path)) as T;
}

export function fixturePath(path: string): string {
  return new URL(path, root).pathname;
}
