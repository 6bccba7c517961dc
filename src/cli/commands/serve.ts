/**
 * `esp-ota serve DIR`: static files over HTTP with Range, HEAD, ETag and If-Range
 * (src/release/serve.ts), for the demo, tests and small sites. Runs until SIGINT or SIGTERM.
 */
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import type { Command } from "commander";
import { EspOtaError } from "../../errors.js";
import { createStaticServer } from "../../release/serve.js";
import { parseIntArg } from "../args.js";
import type { CliContext } from "../context.js";

export function registerServe(parent: Command, ctx: CliContext): void {
  parent
    .command("serve")
    .description("Serve DIR over HTTP (GET and HEAD; single byte ranges; strong ETags; If-Range).")
    .argument("<dir>", "directory to serve (e.g. a release build's --out)")
    .option("--port <n>", "TCP port; 0 picks a free one (printed)", parseIntArg, 8080)
    .option(
      "--host <addr>",
      "address to listen on; loopback so that nothing is exposed by accident",
      "127.0.0.1",
    )
    .option("--quiet", "no line per request")
    .action(async (dir: string, o: { port: number; host: string; quiet?: boolean }) => {
      let server: ReturnType<typeof createStaticServer>;
      try {
        server = createStaticServer(resolve(ctx.cwd, dir), {
          ...(o.quiet ? {} : { onRequest: (m, u, s) => ctx.note(`${s} ${m} ${u}`) }),
        });
      } catch (e) {
        throw new EspOtaError(
          "E_FILE_READ",
          `cannot serve ${dir}: ${(e as Error).message}`,
          { path: dir },
          e,
        );
      }
      await new Promise<void>((ok, fail) => {
        server.once("error", (e) =>
          fail(
            new EspOtaError(
              "E_SERVE_LISTEN",
              `cannot listen on ${o.host}:${o.port}: ${e.message}`,
              {},
              e,
            ),
          ),
        );
        server.listen(o.port, o.host, () => ok());
      });
      const addr = server.address() as AddressInfo;
      const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
      ctx.print(`serving ${dir} at http://${host}:${addr.port}/`);
      await new Promise<void>((done) => {
        const stop = () => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          server.close(() => done());
          server.closeAllConnections();
        };
        process.on("SIGINT", stop);
        process.on("SIGTERM", stop);
      });
    });
}
