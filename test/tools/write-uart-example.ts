// Prints the example exchange of docs/uart-protocol.md §4.1 from the real codec and device side
// (test/uart/example-exchange.ts); paste it into the doc's `text` block under that heading.
import { exampleExchange, renderExchange } from "../uart/example-exchange.js";

console.log(renderExchange(await exampleExchange()));
