// Regenerates docs/schemas/manifest.schema.json from the TypeBox types in src/release/manifest.ts
// (npm run docs:schemas); test/release/manifest.test.ts checks the committed file equals this.
import { mkdirSync, writeFileSync } from "node:fs";
import { manifestJsonSchema } from "../../src/release/manifest.js";

mkdirSync(new URL("../../docs/schemas/", import.meta.url), { recursive: true });
writeFileSync(
  new URL("../../docs/schemas/manifest.schema.json", import.meta.url),
  `${JSON.stringify(manifestJsonSchema(), null, 2)}\n`,
);
console.log("docs/schemas/manifest.schema.json written");
