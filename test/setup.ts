/**
 * Runs before every test file (vitest.config.ts `setupFiles`).
 *
 * fast-check's properties run on a fixed seed, so `npm test` gives the same verdict on every run
 * and machine: a property that fails once in 300 runs (as the otadata seq-0 case did) otherwise
 * turns CI red by chance, long after the change that allowed it. To explore new cases, run
 * `FC_SEED=random npm test` (or a number, to replay a seed a failure printed); every failure
 * prints the seed and path that reproduce it.
 */
import fc from "fast-check";

const raw = process.env.FC_SEED ?? "20261208";
if (raw !== "random") {
  const seed = Number(raw);
  if (!Number.isSafeInteger(seed)) throw new Error(`FC_SEED=${raw} is not an integer or "random"`);
  fc.configureGlobal({ seed });
}
