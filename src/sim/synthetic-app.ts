/**
 * Synthetic apps for tests, benchmarks and the demo: a valid ESP-IDF app image whose
 * esp_app_desc_t carries the project, version and secure_version, padded to a requested size
 * with deterministic filler (so two builds of the same app are byte-identical and a release
 * built twice hashes the same).
 */
import { buildAppImage } from "../esp/image.js";
import type { SimChip } from "./efuse.js";

export interface SyntheticAppOptions {
  chip: SimChip;
  project: string;
  version: string;
  secureVersion?: number;
  /** Approximate image size in bytes (the result is at least this large); default 64 KB. */
  size?: number;
}

export function makeSyntheticApp(opts: SyntheticAppOptions): Uint8Array {
  return buildAppImage({
    chip: opts.chip,
    appDesc: {
      projectName: opts.project,
      version: opts.version,
      secureVersion: opts.secureVersion ?? 0,
      idfVer: "v5.5",
      date: "Nov 23 2026",
      time: "12:00:00",
    },
    minSize: opts.size ?? 0x10000,
  });
}
