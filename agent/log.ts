/**
 * Structured logs (pino): JSON lines for journald and log shippers, human-readable (pino-pretty)
 * when stdout is a terminal. Every line of an update carries `deviceId` and `step`.
 */
import { type Logger, pino } from "pino";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "silent";

export function createLogger(level: LogLevel, o: { pretty?: boolean } = {}): Logger {
  const pretty = o.pretty ?? process.stdout.isTTY === true;
  if (!pretty) return pino({ level, base: { name: "esp-ota-agent" } });
  return pino({
    level,
    base: undefined,
    transport: {
      target: "pino-pretty",
      options: { colorize: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname" },
    },
  });
}
