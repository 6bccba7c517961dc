import type { Command } from "commander";
import type { CliContext } from "../context.js";

export function registerDevice(parent: Command, ctx: CliContext): void {
  void parent;
  void ctx;
}
