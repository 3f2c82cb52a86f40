import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "./commands/args.js";
import { deferOptimisingCompiler } from "./proxy/v8-tuning.js";

// Commands are imported when chosen: a sidecar proxy should not load (nor keep in memory) the control
// module, SQLite or the OpenAPI generator, and every sandbox start pays the proxy's start-up time.

const USAGE = `usage:
  sandbox-egress proxy   [--listen HOST:PORT] [--transparent HOST:PORT] [--admin HOST:PORT|unix:PATH]
                         [--policy-file FILE] [--admin-token-file FILE] [--ca-dir DIR] [--upstream-ca FILE]
                         [--hosts FILE] [--dns-server HOST:PORT] [--internal-allow CIDR]... [--sandbox-id ID]
                         [--log-level LEVEL] [--connect-timeout MS] [--response-timeout MS] [--idle-timeout MS]
                         [--header-timeout MS] [--max-connections N] [--max-header-size BYTES]
  sandbox-egress control [--listen HOST:PORT] [--data-dir DIR] [--api-key-file FILE] [--hosts FILE]
                         [--dns-server HOST:PORT] [--internal-allow CIDR]... [--upstream-ca FILE] [--log-level LEVEL]
  sandbox-egress policy check FILE
  sandbox-egress policy explain FILE HOST[:PORT] [--hosts FILE] [--dns-server HOST:PORT] [--internal-allow CIDR]...
  sandbox-egress ca init|show [--ca-dir DIR] [--force]`;


/** Argument parsing only: each command lives in src/commands and returns an exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "proxy": {
        const values = parse(rest, PROXY_OPTIONS).values;
        deferOptimisingCompiler(); // until it listens (runProxy resumes it); see v8-tuning.ts
        return await (await import("./commands/proxy.js")).runProxy(values);
      }
      case "control":
        return await (await import("./commands/control.js")).runControl(parse(rest, CONTROL_OPTIONS).values);
      case "policy": {
        const [sub, ...args] = rest;
        if (sub === "check") {
          const { positionals } = parse(args, {});
          if (positionals.length !== 1) throw new UsageError("policy check takes exactly one FILE");
          return await (await import("./commands/policy.js")).runPolicyCheck(positionals[0]!);
        }
        if (sub === "explain") {
          const { values, positionals } = parse(args, EXPLAIN_OPTIONS);
          if (positionals.length !== 2) throw new UsageError("policy explain takes FILE and HOST[:PORT]");
          return await (await import("./commands/policy.js")).runPolicyExplain(positionals[0]!, positionals[1]!, values);
        }
        throw new UsageError(`unknown policy subcommand ${sub ?? "(none)"}; use check or explain`);
      }
      case "ca": {
        const { values, positionals } = parse(rest, { "ca-dir": { type: "string" }, force: { type: "boolean" } });
        if (positionals.length !== 1 || (positionals[0] !== "init" && positionals[0] !== "show")) {
          throw new UsageError("ca takes init or show");
        }
        return await (await import("./commands/ca.js")).runCa(positionals[0], values);
      }
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(`${USAGE}\n`);
        return 0;
      default:
        throw new UsageError(command ? `unknown command ${command}` : "no command given");
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`sandbox-egress: ${(err as Error).message}\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;

function parse<O extends Options>(args: string[], options: O) {
  return parseArgs({ args, options, allowPositionals: true, strict: true });
}

const RESOLUTION_OPTIONS = {
  hosts: { type: "string" },
  "dns-server": { type: "string" },
  "internal-allow": { type: "string", multiple: true },
  "upstream-ca": { type: "string" },
} as const satisfies Options;

const PROXY_OPTIONS = {
  listen: { type: "string" },
  transparent: { type: "string" },
  admin: { type: "string" },
  "policy-file": { type: "string" },
  "admin-token-file": { type: "string" },
  "ca-dir": { type: "string" },
  "sandbox-id": { type: "string" },
  "log-level": { type: "string" },
  "connect-timeout": { type: "string" },
  "response-timeout": { type: "string" },
  "idle-timeout": { type: "string" },
  "header-timeout": { type: "string" },
  "max-connections": { type: "string" },
  "max-header-size": { type: "string" },
  ...RESOLUTION_OPTIONS,
} as const satisfies Options;

const CONTROL_OPTIONS = {
  listen: { type: "string" },
  "data-dir": { type: "string" },
  "api-key-file": { type: "string" },
  "log-level": { type: "string" },
  ...RESOLUTION_OPTIONS,
} as const satisfies Options;

const EXPLAIN_OPTIONS = {
  hosts: { type: "string" },
  "dns-server": { type: "string" },
  "internal-allow": { type: "string", multiple: true },
} as const satisfies Options;
