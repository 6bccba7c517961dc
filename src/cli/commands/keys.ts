import type { Command } from "commander";
import type { CliContext } from "../context.js";

export function registerKeys(parent: Command, ctx: CliContext): void {
  void parent;
  void ctx;
}
