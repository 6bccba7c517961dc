// Regenerates docs/schemas/manifest.schema.json from the TypeBox types in src/release/manifest.ts
// (npm run docs:schemas); test/release/manifest.test.ts checks the committed file equals this.
import { mkdirSync, writeFileSync } from "node:fs";
import { agentConfigJsonSchema } from "../../agent/config.js";
import { mqttJsonSchemas } from "../../src/mqtt/messages.js";
import { manifestJsonSchema } from "../../src/release/manifest.js";
import { rolloutJsonSchemas } from "../../src/rollout/messages.js";

mkdirSync(new URL("../../docs/schemas/", import.meta.url), { recursive: true });
writeFileSync(
  new URL("../../docs/schemas/manifest.schema.json", import.meta.url),
  `${JSON.stringify(manifestJsonSchema(), null, 2)}\n`,
);
console.log("docs/schemas/manifest.schema.json written");

// test/agent/config.test.ts checks this one.
writeFileSync(
  new URL("../../docs/schemas/agent-config.schema.json", import.meta.url),
  `${JSON.stringify(agentConfigJsonSchema(), null, 2)}\n`,
);
console.log("docs/schemas/agent-config.schema.json written");

// test/rollout/plan.test.ts checks these.
for (const [name, schema] of Object.entries(rolloutJsonSchemas())) {
  writeFileSync(
    new URL(`../../docs/schemas/${name}.schema.json`, import.meta.url),
    `${JSON.stringify(schema, null, 2)}\n`,
  );
  console.log(`docs/schemas/${name}.schema.json written`);
}

// test/mqtt/messages.test.ts checks these.
for (const [kind, schema] of Object.entries(mqttJsonSchemas())) {
  writeFileSync(
    new URL(`../../docs/schemas/mqtt-${kind}.schema.json`, import.meta.url),
    `${JSON.stringify(schema, null, 2)}\n`,
  );
  console.log(`docs/schemas/mqtt-${kind}.schema.json written`);
}
