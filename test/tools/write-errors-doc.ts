// Regenerates docs/errors.md from src/error-codes/*.ts (npm run docs:errors).
import { writeFileSync } from "node:fs";
import { renderErrorsMarkdown } from "../../src/errors.js";

writeFileSync(new URL("../../docs/errors.md", import.meta.url), renderErrorsMarkdown());
console.log("docs/errors.md written");
