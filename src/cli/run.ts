/**
 * Running a commander program as our CLI: every (sub)command throws instead of exiting, and
 * errors map to exit codes (0 success, 1 a coded failure, 2 a usage error), and a closed stdout
 * ends the program quietly. Kept apart from program.ts, the command table, so a program of its
 * own commands can run without it.
 */
import { type Command, CommanderError } from "commander";
import { EspOtaError, isEspOtaError } from "../errors.js";
import { type CliContext, createContext, type OutputSink } from "./context.js";

/** Makes `program` and its subcommands throw and write through ctx (call after registering). */
export function withCliBehaviour(program: Command, ctx: CliContext): Command {
  const applyOverrides = (cmd: Command) => {
    cmd.exitOverride();
    cmd.configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
    });
    cmd.commands.forEach(applyOverrides);
  };
  applyOverrides(program);
  return program;
}

/** Builds the program for a context, runs argv, returns the exit code. */
export async function runProgram(
  argv: readonly string[],
  build: (ctx: CliContext) => Command | Promise<Command>,
  stdout: OutputSink = process.stdout,
  stderr: OutputSink = process.stderr,
  cwd: string = process.cwd(),
): Promise<number> {
  exitQuietlyOnBrokenPipe(stdout);
  const ctx = createContext(stdout, stderr, cwd);
  try {
    const program = await build(ctx);
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (e) {
    return reportError(e, ctx);
  }
}

const guarded = new WeakSet<object>();

/**
 * `esp-ota status | head` closes the pipe after a few lines; the next write fails with EPIPE,
 * which a stream reports as an 'error' event, and an unhandled one is a stack trace. A closed
 * stdout means the reader has what it wanted: exit 0 without a word (the shell convention,
 * minus the SIGPIPE death Node opts out of). Any other stdout error is still a failure. Once
 * per stream: tests run many programs on one process.
 */
export function exitQuietlyOnBrokenPipe(
  stdout: OutputSink,
  exit: (code: number) => void = (code) => process.exit(code),
): void {
  const s = stdout as Partial<NodeJS.EventEmitter>;
  if (typeof s.on !== "function" || guarded.has(stdout)) return;
  guarded.add(stdout);
  s.on.call(stdout, "error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") exit(0);
    else throw e;
  });
}

function reportError(e: unknown, ctx: CliContext): number {
  if (e instanceof CommanderError) {
    if (e.code === "commander.helpDisplayed" || e.code === "commander.version") return 0;
    if (e.code === "commander.help" || e.code === "commander.executeSubCommandAsync") return 0;
    // commander already printed its message; add the code so scripts can match on it.
    ctx.note("error E_USAGE: invalid command line");
    return 2;
  }
  if (isEspOtaError(e)) {
    ctx.note(`error ${e.code}: ${e.message}`);
    ctx.note(`  what to do: ${e.action}`);
    return e.code === "E_USAGE" ? 2 : 1;
  }
  const bug = new EspOtaError("E_INTERNAL", e instanceof Error ? e.message : String(e));
  ctx.note(`error ${bug.code}: ${bug.message}`);
  if (e instanceof Error && e.stack) ctx.note(e.stack);
  return 1;
}
