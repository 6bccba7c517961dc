/**
 * `esp-ota chaos ...`: the TCP fault proxy (src/chaos, docs/chaos.md). `chaos proxy` runs one
 * between the gateway agent and the broker or image server; the other verbs change a running
 * proxy through its control API.
 */
import { type Command, InvalidArgumentError } from "commander";
import { formatHostPort, type HostPort, parseHostPort } from "../../chaos/address.js";
import { type ChaosApi, chaosApiClient, startChaosApi } from "../../chaos/api.js";
import { describeEvent, startChaosProxy } from "../../chaos/proxy.js";
import {
  formatToxicSpec,
  parseToxicAttributes,
  parseToxicSpec,
  TOXIC_PARAMS,
  TOXIC_TYPES,
  type Toxic,
} from "../../chaos/toxics.js";
import { TIMER_MAX_MS } from "../../duration.js";
import { EspOtaError } from "../../errors.js";
import { durationArg } from "../args.js";
import type { CliContext } from "../context.js";

const collect = (v: string, acc: string[] | undefined) => [...(acc ?? []), v];

/** The toxic types and their spec keys, for --help, from the same table the parser reads. */
const TOXIC_KEYS = TOXIC_TYPES.map(
  (t) => `${t}(${TOXIC_PARAMS[t].map((p) => `${p.key} ${p.unit.split(" ")[0]}`).join(", ")})`,
).join(" ");

/** --listen and --api: a local address; port 0 takes a free one. */
const listenAddress = (v: string): HostPort => {
  const r = parseHostPort(v, "127.0.0.1", true);
  if (!r.ok) throw new InvalidArgumentError(r.reason);
  return r.value;
};

const upstreamAddress = (v: string): HostPort => {
  const r = parseHostPort(v, "127.0.0.1", false);
  if (!r.ok) throw new InvalidArgumentError(r.reason);
  return r.value;
};

function toxicOf(spec: string): Toxic {
  const r = parseToxicSpec(spec);
  if (!r.ok) throw new EspOtaError("E_CHAOS_TOXIC", r.reason, { spec });
  return r.value;
}

const API_HELP = "control API of the running proxy: HOST:PORT as `chaos proxy --api` printed it";

export function registerChaos(parent: Command, ctx: CliContext): void {
  const chaos = parent
    .command("chaos")
    .description(
      "A TCP fault proxy with Toxiproxy's toxics (latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data) for testing over flaky networks.",
    );

  chaos
    .command("proxy")
    .description(
      "Proxy TCP from --listen to --upstream with toxics, until SIGINT/SIGTERM. Prints `proxy LISTEN -> UPSTREAM` (and `api URL`) on stdout; connections and toxic changes on stderr.",
    )
    .requiredOption(
      "--listen <addr>",
      "HOST:PORT to accept clients on (a bare PORT or :PORT means 127.0.0.1; port 0 takes a free one, printed)",
      listenAddress,
    )
    .requiredOption(
      "--upstream <addr>",
      "HOST:PORT of the real server (broker, image server)",
      upstreamAddress,
    )
    .option(
      "--toxic <spec>",
      `a toxic, TYPE[:STREAM][:key=value,...], e.g. latency:downstream:latency=300,jitter=50; repeatable. STREAM: upstream (client to server) or downstream (default). Keys: ${TOXIC_KEYS}; every type also takes toxicity=0..1 (default 1) and name= (default TYPE_STREAM). docs/chaos.md`,
      collect,
    )
    .option(
      "--api <addr>",
      "also serve the control API on HOST:PORT (default: none; give 127.0.0.1:0 for a free port)",
      listenAddress,
    )
    .option(
      "--duration <time>",
      "stop after this long (10s, 500ms; without it, until SIGINT/SIGTERM)",
      durationArg(TIMER_MAX_MS),
    )
    .option("--quiet", "no line per connection on stderr (toxic changes are still shown)")
    .action(
      async (o: {
        listen: HostPort;
        upstream: HostPort;
        toxic?: string[];
        api?: HostPort;
        duration?: number;
        quiet?: boolean;
      }) => {
        const toxics = (o.toxic ?? []).map(toxicOf);
        const proxy = await startChaosProxy({
          listen: o.listen,
          upstream: o.upstream,
          toxics,
          onEvent: (e) => {
            if (o.quiet && (e.type === "connection" || e.type === "connection-closed")) return;
            ctx.note(`chaos: ${describeEvent(e)}`);
          },
        });
        let api: ChaosApi | undefined;
        try {
          if (o.api) api = await startChaosApi(proxy, o.api);
        } catch (e) {
          await proxy.close();
          throw e;
        }
        ctx.print(`proxy ${formatHostPort(proxy.address)} -> ${formatHostPort(proxy.upstream)}`);
        if (api) ctx.print(`api ${api.url}`);
        for (const t of toxics) ctx.note(`chaos: toxic ${t.name} ${formatToxicSpec(t)}`);
        await new Promise<void>((resolve) => {
          const stop = () => {
            process.off("SIGINT", stop);
            process.off("SIGTERM", stop);
            clearTimeout(timer);
            resolve();
          };
          process.on("SIGINT", stop);
          process.on("SIGTERM", stop);
          const timer = o.duration !== undefined ? setTimeout(stop, o.duration) : undefined;
        });
        await api?.close();
        await proxy.close();
        const s = proxy.stats;
        ctx.note(
          `chaos: stopped after ${s.connections} connection(s), up ${s.bytesUp} B, down ${s.bytesDown} B`,
        );
      },
    );

  const toxic = chaos
    .command("toxic")
    .description("Change the toxics of a running `chaos proxy --api ...`.");

  toxic
    .command("add")
    .description("Add a toxic; open connections get it at once. Prints it as a spec.")
    .requiredOption("--api <addr>", API_HELP)
    .argument("<spec>", "TYPE[:STREAM][:key=value,...], e.g. bandwidth:downstream:rate=2")
    .action(async (spec: string, o: { api: string }) => {
      const t = await chaosApiClient(o.api).add(toxicOf(spec));
      ctx.print(`${t.name} ${formatToxicSpec(t)}`);
    });

  toxic
    .command("update")
    .description(
      "Change a toxic's parameters or toxicity, e.g. `update bandwidth_downstream rate=1`.",
    )
    .requiredOption("--api <addr>", API_HELP)
    .argument("<name>", "the toxic's name (`chaos toxic list`)")
    .argument("<attributes>", "key=value,... in the spec's keys, toxicity included")
    .action(async (name: string, attrs: string, o: { api: string }) => {
      const client = chaosApiClient(o.api);
      const current = (await client.list()).find((t) => t.name === name);
      if (!current) throw new EspOtaError("E_CHAOS_TOXIC_NOT_FOUND", `no toxic named ${name}`);
      const fields = parseToxicAttributes(current.type, attrs);
      if (!fields.ok) throw new EspOtaError("E_CHAOS_TOXIC", fields.reason, { toxic: name });
      const t = await client.update(name, fields.value);
      ctx.print(`${t.name} ${formatToxicSpec(t)}`);
    });

  toxic
    .command("remove")
    .description("Remove a toxic; what it holds goes on at once.")
    .requiredOption("--api <addr>", API_HELP)
    .argument("<name>", "the toxic's name (`chaos toxic list`)")
    .action(async (name: string, o: { api: string }) => {
      await chaosApiClient(o.api).remove(name);
      ctx.note(`removed ${name}`);
    });

  toxic
    .command("list")
    .description("List the toxics, one `NAME SPEC` line each (in chain order per stream).")
    .requiredOption("--api <addr>", API_HELP)
    .option("--json", "print the toxics as JSON")
    .action(async (o: { api: string; json?: boolean }) => {
      const list = await chaosApiClient(o.api).list();
      if (o.json) ctx.print(JSON.stringify(list, null, 2));
      else for (const t of list) ctx.print(`${t.name} ${formatToxicSpec(t)}`);
    });

  chaos
    .command("reset")
    .description("Abort every open connection through the proxy with a TCP RST (toxics stay).")
    .requiredOption("--api <addr>", API_HELP)
    .action(async (o: { api: string }) => {
      const n = await chaosApiClient(o.api).reset();
      ctx.print(`reset ${n} connection(s)`);
    });

  for (const [verb, on] of [
    ["enable", true],
    ["disable", false],
  ] as const) {
    chaos
      .command(verb)
      .description(
        on
          ? "Accept connections again after `disable`, on the same address."
          : 'Take the upstream "down": refuse new connections and cut the open ones (Toxiproxy\'s enabled=false).',
      )
      .requiredOption("--api <addr>", API_HELP)
      .action(async (o: { api: string }) => {
        const s = await chaosApiClient(o.api).setEnabled(on);
        ctx.print(s.enabled ? `enabled ${s.listen}` : `disabled ${s.listen}`);
      });
  }
}
