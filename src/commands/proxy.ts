import { trimNativeHeap, tunnelRelayKind } from "../proxy/splice-relay.js";
import { resumeOptimisingCompiler } from "../proxy/v8-tuning.js";
import { AdminServer } from "../admin/server.js";
import { isLocalListen } from "../admin/http-util.js";
import { intFlag, readSecret, UsageError } from "./args.js";
import { parseCidr } from "../net/cidr.js";
import { DEFAULT_LIMITS, type ProxyConfig } from "../proxy/config.js";
import { EgressProxy } from "../proxy/server.js";
import { PolicyInvalidError } from "../live/policy-store.js";
import { installBrokering } from "../proxy/brokering.js";

export interface ProxyFlags {
  listen?: string;
  transparent?: string;
  admin?: string;
  "policy-file"?: string;
  "admin-token-file"?: string;
  "ca-dir"?: string;
  "upstream-ca"?: string;
  hosts?: string;
  "dns-server"?: string;
  "internal-allow"?: string[];
  "sandbox-id"?: string;
  "log-level"?: string;
  "connect-timeout"?: string;
  "response-timeout"?: string;
  "idle-timeout"?: string;
  "header-timeout"?: string;
  "max-connections"?: string;
  "max-header-size"?: string;
}

export function proxyConfigFromFlags(f: ProxyFlags): ProxyConfig {
  for (const cidr of f["internal-allow"] ?? []) {
    const p = parseCidr(cidr);
    if (!p.ok) throw new UsageError(`--internal-allow ${cidr}: ${p.error}`);
  }
  const admin = f.admin ?? "127.0.0.1:9090";
  const adminToken = readSecret(f["admin-token-file"], "SANDBOX_EGRESS_ADMIN_TOKEN");
  if (!adminToken && !isLocalListen(admin)) {
    throw new UsageError(`refusing to start the admin API on ${admin} without a token: set --admin-token-file or SANDBOX_EGRESS_ADMIN_TOKEN, or listen on loopback or unix:PATH`);
  }
  return {
    listen: f.listen ?? "127.0.0.1:3128",
    transparent: f.transparent,
    admin,
    policyFile: f["policy-file"],
    adminToken,
    caDir: f["ca-dir"] ?? "./certs",
    upstreamCa: f["upstream-ca"],
    hostsFile: f.hosts,
    dnsServer: f["dns-server"],
    internalAllow: f["internal-allow"] ?? [],
    sandboxId: f["sandbox-id"],
    logLevel: f["log-level"] ?? "info",
    limits: {
      ...DEFAULT_LIMITS,
      connectTimeoutMs: intFlag(f["connect-timeout"], "connect-timeout", DEFAULT_LIMITS.connectTimeoutMs),
      responseTimeoutMs: intFlag(f["response-timeout"], "response-timeout", DEFAULT_LIMITS.responseTimeoutMs),
      idleTimeoutMs: intFlag(f["idle-timeout"], "idle-timeout", DEFAULT_LIMITS.idleTimeoutMs),
      headerTimeoutMs: intFlag(f["header-timeout"], "header-timeout", DEFAULT_LIMITS.headerTimeoutMs),
      maxConnections: intFlag(f["max-connections"], "max-connections", DEFAULT_LIMITS.maxConnections),
      maxHeaderBytes: intFlag(f["max-header-size"], "max-header-size", DEFAULT_LIMITS.maxHeaderBytes),
    },
  };
}

/** `sandbox-egress proxy`: start every listener, print the listening line, drain on SIGTERM. */
export async function runProxy(flags: ProxyFlags): Promise<number> {
  const config = proxyConfigFromFlags(flags);
  let proxy: EgressProxy;
  try {
    proxy = await EgressProxy.create(config);
  } catch (err) {
    if (err instanceof PolicyInvalidError) {
      process.stderr.write(`sandbox-egress: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  const brokering = await installBrokering(proxy, config);
  const admin = new AdminServer(proxy, { listen: config.admin, token: config.adminToken, caPem: () => brokering.caPem });
  let addresses: Awaited<ReturnType<EgressProxy["listen"]>>;
  let adminAddress: string;
  // Start-up is over: from the first connection on, hot code is optimised as usual (see v8-tuning.ts).
  resumeOptimisingCompiler();
  try {
    addresses = await proxy.listen();
    adminAddress = await admin.listen();
  } catch (err) {
    // A listener that cannot bind (EADDRINUSE, EACCES) stops the whole sidecar: half a proxy is worse than none.
    await Promise.allSettled([proxy.close(), admin.close()]);
    brokering.close();
    process.stderr.write(`sandbox-egress: cannot listen: ${(err as Error).message}\n`);
    setTimeout(() => process.exit(1), 200).unref();
    return 1;
  }
  const relay = tunnelRelayKind();
  if (relay.kind === "js" && process.env.SANDBOX_EGRESS_TUNNEL_RELAY !== "js") {
    proxy.ctx.log.warn(
      { event: "tunnel-relay-fallback", why: relay.why },
      "the native splice relay is not available; tunnels use the JavaScript relay (run `npm run build:native` with a C compiler to build it)",
    );
  }
  trimNativeHeap(); // start-up's freed memory back to the kernel, once (see splice-relay.c)
  process.stdout.write(
    `${JSON.stringify({ event: "listening", proxy: addresses.proxy, ...(addresses.transparent ? { transparent: addresses.transparent } : {}), admin: adminAddress, sandbox: config.sandboxId ?? null, revision: proxy.ctx.store.state.revision, tunnel_relay: relay.kind })}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      proxy.ctx.log.info({ event: "shutdown", signal }, "draining");
      void Promise.all([proxy.close(), admin.close()]).then(() => {
        brokering.close();
        // Everything is closed; a handle some library left open must not keep a drained sidecar alive.
        setTimeout(() => process.exit(0), 500).unref();
        resolve();
      });
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  return 0;
}
