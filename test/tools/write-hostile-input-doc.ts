// Writes the "Hostile input" table of docs/security.md from the rows of the hostile-input suite
// (test/security/hostile-input-rows.ts), between its begin and end markers
// (npm run docs:hostile-input); test/security/hostile-input.test.ts checks the page holds it.
import { readFileSync, writeFileSync } from "node:fs";
import { DOC_BEGIN, DOC_END, renderHostileInputMarkdown } from "../security/hostile-input-rows.js";

const url = new URL("../../docs/security.md", import.meta.url);
const page = readFileSync(url, "utf8");
const begin = page.indexOf(DOC_BEGIN);
const end = page.indexOf(DOC_END);
if (begin < 0 || end < begin) {
  console.error(`docs/security.md has no ${DOC_BEGIN} … ${DOC_END} section to write into`);
  process.exit(1);
}
writeFileSync(
  url,
  page.slice(0, begin) + renderHostileInputMarkdown() + page.slice(end + DOC_END.length),
);
console.log("docs/security.md: hostile-input table written");
