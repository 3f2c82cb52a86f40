import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { isLocalListen } from "../admin/http-util.js";
import { readSecret, UsageError } from "./args.js";
import { ControlServer, parseListen } from "../control/server.js";
import { LifecycleService } from "../control/service.js";
import { parseCidr } from "../net/cidr.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import { Store } from "../store/index.js";
import { createLogger, type Logger } from "../telemetry/logger.js";

export interface ControlFlags {
  listen?: string;
  "data-dir"?: string;
  "api-key-file"?: string;
  hosts?: string;
  "dns-server"?: string;
  "internal-allow"?: string[];
  "upstream-ca"?: string;
  "log-level"?: string;
}

export interface ControlConfig {
  listen: string;
  dataDir: string;
  apiKey?: string;
  /** Flags handed to every sandbox's proxy (absolute paths: proxies do not share our working directory). */
  proxyArgs: string[];
  logLevel: string;
}

export function controlConfigFromFlags(f: ControlFlags): ControlConfig {
  const listen = f.listen ?? "127.0.0.1:8080";
  try {
    parseListen(listen);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const apiKey = readSecret(f["api-key-file"], "SANDBOX_EGRESS_API_KEY");
  if (!apiKey && !isLocalListen(listen)) {
    throw new UsageError(
      `refusing to start the control API on ${listen} without an API key: set --api-key-file or SANDBOX_EGRESS_API_KEY, or listen on loopback (127.0.0.1:PORT)`,
    );
  }
  const proxyArgs: string[] = [];
  if (f.hosts) proxyArgs.push("--hosts", path.resolve(f.hosts));
  if (f["dns-server"]) {
    if (!/^(?:\[[0-9A-Fa-f:.]+\]|[^:\s]+):\d{1,5}$/.test(f["dns-server"])) throw new UsageError(`--dns-server ${f["dns-server"]}: expected HOST:PORT`);
    proxyArgs.push("--dns-server", f["dns-server"]);
  }
  for (const cidr of f["internal-allow"] ?? []) {
    const p = parseCidr(cidr);
    if (!p.ok) throw new UsageError(`--internal-allow ${cidr}: ${p.error}`);
    proxyArgs.push("--internal-allow", p.cidr.text);
  }
  if (f["upstream-ca"]) proxyArgs.push("--upstream-ca", path.resolve(f["upstream-ca"]));
  return { listen, dataDir: path.resolve(f["data-dir"] ?? "./data"), apiKey, proxyArgs, logLevel: f["log-level"] ?? "info" };
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string }).version ?? "0.0.0";
  } catch {
    return "0.0.0";
  }
}

/** The local runtime: bubblewrap sandboxes, one proxy each (DATADIR/sandboxes). */
async function localDriver(config: ControlConfig, log: Logger): Promise<RuntimeDriver> {
  const { LocalDriver } = await import("../runtime/local/index.js");
  return new LocalDriver({ dataDir: config.dataDir, proxyArgs: config.proxyArgs, log });
}

export interface RunningControl {
  api: string;
  service: LifecycleService;
  server: ControlServer;
  /** Drain: stop taking requests and timers, detach from the runtime (sandboxes survive), close the store. */
  close(): Promise<void>;
}

/** Start the control module in this process (the CLI and in-process tests). */
export async function startControl(config: ControlConfig, opts: { driver?: RuntimeDriver; log?: Logger } = {}): Promise<RunningControl> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const log = opts.log ?? createLogger({ level: config.logLevel });
  const store = new Store(path.join(config.dataDir, "control.sqlite"));
  let service: LifecycleService | undefined;
  try {
    const driver = opts.driver ?? (await localDriver(config, log));
    service = new LifecycleService({ store, driver, dataDir: config.dataDir, log });
    // Reconcile before listening: no request may observe (or act on) a state left over from the last run.
    await service.start();
    const server = new ControlServer({ service, listen: config.listen, apiKey: config.apiKey, log, version: packageVersion() });
    const api = await server.listen();
    const svc = service;
    return {
      api,
      service: svc,
      server,
      close: async () => {
        await server.close();
        await svc.close();
        store.close();
      },
    };
  } catch (err) {
    await service?.close(0).catch(() => undefined);
    store.close();
    throw err;
  }
}

/** `sandbox-egress control`: print the listening line, drain on SIGTERM (sandboxes keep running) and exit 0. */
export async function runControl(flags: ControlFlags): Promise<number> {
  const config = controlConfigFromFlags(flags);
  const log = createLogger({ level: config.logLevel });
  const control = await startControl(config, { log });
  process.stdout.write(`${JSON.stringify({ event: "listening", api: control.api })}\n`);
  const keyHeader = config.apiKey ? ` -H "OPEN-SANDBOX-API-KEY: $SANDBOX_EGRESS_API_KEY"` : "";
  process.stderr.write(
    `sandbox-egress control: create a first sandbox with: curl -s -X POST http://${control.api}/v1/sandboxes${keyHeader} -H 'content-type: application/json' -d '{"image":{"uri":"local:host"},"timeout":600,"networkPolicy":{"mode":"deny-all"}}'\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ event: "shutdown", signal }, "draining; sandboxes keep running and are adopted at the next start");
      void control.close().then(
        () => {
          // Everything is closed; a handle some library left open must not keep a drained process alive.
          setTimeout(() => process.exit(0), 500).unref();
          resolve();
        },
        (err: unknown) => {
          log.error({ event: "shutdown-error", err: err instanceof Error ? err.message : String(err) }, "drain failed");
          process.exitCode = 1;
          resolve();
        },
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  return 0;
}
