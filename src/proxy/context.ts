import type { PolicyStore } from "../live/policy-store.js";
import type { Resolver } from "../net/resolve.js";
import type { CompiledPolicy } from "../policy/compile.js";
import { decideResolving } from "../policy/decide.js";
import type { Decision, Host } from "../policy/types.js";
import type { Logger } from "../telemetry/logger.js";
import type { ProxyMetrics } from "../telemetry/metrics.js";
import type { Auditor } from "./audit.js";
import type { ProxyLimits } from "./config.js";
import type { ConnectionRegistry } from "./registry.js";
import type { SelfAddresses } from "./self.js";

/** What every listener of one proxy shares. Built once by EgressProxy; no module-level state. */
export interface ProxyContext {
  readonly store: PolicyStore;
  readonly resolver: Resolver;
  readonly log: Logger;
  readonly metrics: ProxyMetrics;
  readonly audit: Auditor;
  readonly registry: ConnectionRegistry;
  readonly limits: ProxyLimits;
  readonly self: SelfAddresses;
  /** Set while the sandbox is paused: every new request and tunnel is refused. */
  paused: boolean;
}

/**
 * Decisions for IP-literal targets, per compiled policy. Such a decision is a pure function of (policy, address,
 * port): no resolver is involved, so caching it changes nothing but its cost. A new revision is a new compiled
 * object, so a policy change starts from an empty cache (and the old one is collected with it). Names are never
 * cached here: their answer depends on DNS and the hosts file at the time of the request.
 */
const ipDecisions = new WeakMap<CompiledPolicy, Map<string, Decision>>();
const IP_DECISION_CACHE_MAX = 4096;

/** Judge a target against the policy in force, resolving the name once; timed for the metrics. */
export async function decideTarget(ctx: ProxyContext, host: Host, port: number): Promise<Decision> {
  const started = performance.now();
  const compiled = ctx.store.state.compiled;
  let decision: Decision;
  if (host.kind === "ip") {
    let cache = ipDecisions.get(compiled);
    if (cache === undefined) ipDecisions.set(compiled, (cache = new Map()));
    const key = `${host.ip}|${port}`;
    const hit = cache.get(key);
    if (hit !== undefined) decision = hit;
    else {
      decision = await decideResolving(compiled, host, port, (name) => ctx.resolver.resolve(name));
      if (cache.size >= IP_DECISION_CACHE_MAX) cache.clear();
      cache.set(key, decision);
    }
  } else {
    decision = await decideResolving(compiled, host, port, (name) => ctx.resolver.resolve(name));
  }
  if (decision.allowed && decision.addresses.some((a) => ctx.self.has(a, port))) decision = withoutSelf(ctx, decision);
  ctx.metrics.decisionSeconds.observe((performance.now() - started) / 1e3);
  return decision;
}

/** Drop the proxy's own listening sockets from the usable addresses; deny when nothing is left. */
function withoutSelf(ctx: ProxyContext, d: Decision): Decision {
  const judged = d.judged.map((j) =>
    j.usable && ctx.self.has(j.address, d.port)
      ? { address: j.address, usable: false, reason: "internal-address" as const, rule: `self:${j.address}:${d.port}` }
      : j,
  );
  const addresses = judged.filter((j) => j.usable).map((j) => j.address);
  if (addresses.length > 0) return { ...d, addresses, judged };
  const first = judged.find((j) => j.rule?.startsWith("self:"));
  return { ...d, allowed: false, reason: "internal-address", rule: first?.rule ?? null, addresses: [], judged };
}
