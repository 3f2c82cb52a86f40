import type * as PromClient from "prom-client";
import { requireCjs } from "../util/cjs.js";

// The classes one by one rather than the package index: the index also loads the Pushgateway client (https, zlib,
// url) and the cluster aggregator, ~0.5 MiB of idle RSS the proxy never uses. prom-client has no "exports" map, so
// these deep paths are supported requires of the very modules the index re-exports.
const Registry = requireCjs("prom-client/lib/registry.js") as typeof PromClient.Registry;
const Counter = requireCjs("prom-client/lib/counter.js") as typeof PromClient.Counter;
const Gauge = requireCjs("prom-client/lib/gauge.js") as typeof PromClient.Gauge;
const Histogram = requireCjs("prom-client/lib/histogram.js") as typeof PromClient.Histogram;
const collectDefaultMetrics = requireCjs("prom-client/lib/defaultMetrics.js") as typeof PromClient.collectDefaultMetrics;

/**
 * One registry per proxy instance (no module-level singletons: tests start several proxies in one process).
 * Label values are reason codes and fixed words only, never hosts or header values.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  readonly requests: PromClient.Counter<"decision" | "reason" | "kind">;
  readonly activeTunnels: PromClient.Gauge;
  readonly activeConnections: PromClient.Gauge;
  readonly bytes: PromClient.Counter<"direction">;
  readonly policyRevision: PromClient.Gauge;
  readonly reloadFailures: PromClient.Counter;
  readonly decisionSeconds: PromClient.Histogram;
  readonly revocations: PromClient.Counter;
  readonly tunnelRelays: PromClient.Counter;
  readonly leafCertificatesMinted: PromClient.Counter<"purpose">;
  readonly refusalLeavesThrottled: PromClient.Counter;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: "egress_requests_total",
      help: "Requests and tunnels by decision (allowed|denied), reason code and kind (http|connect|transparent|intercepted)",
      labelNames: ["decision", "reason", "kind"],
      registers,
    });
    this.activeTunnels = new Gauge({ name: "egress_active_tunnels", help: "Open CONNECT and transparent tunnels", registers });
    this.activeConnections = new Gauge({ name: "egress_active_connections", help: "Open client connections", registers });
    this.bytes = new Counter({
      name: "egress_bytes_total",
      help: "Bytes relayed, up = client to upstream, down = upstream to client",
      labelNames: ["direction"],
      registers,
    });
    this.policyRevision = new Gauge({ name: "egress_policy_revision", help: "Revision of the policy in force", registers });
    this.reloadFailures = new Counter({
      name: "egress_policy_reload_failures_total",
      help: "Policy changes rejected (invalid file or PUT); the last good policy stays in force",
      registers,
    });
    this.revocations = new Counter({
      name: "egress_revoked_connections_total",
      help: "Open connections closed because a new policy denies them",
      registers,
    });
    this.tunnelRelays = new Counter({
      name: "egress_tunnel_relays_total",
      help: "Raw tunnels by the relay that carried their bytes (splice = native zero-copy, js = Node streams)",
      labelNames: ["relay"],
      registers,
    });
    this.decisionSeconds = new Histogram({
      name: "egress_decision_seconds",
      help: "Time to decide a request, including name resolution",
      buckets: [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
    this.leafCertificatesMinted = new Counter({
      name: "egress_leaf_certificates_minted_total",
      help: "Leaf certificates signed by the interception CA, by purpose (intercept = a host with transforms, refusal = a 403 answered inside TLS)",
      labelNames: ["purpose"],
      registers,
    });
    this.refusalLeavesThrottled = new Counter({
      name: "egress_refusal_leaves_throttled_total",
      help: "In-TLS refusals answered by an aborted handshake because refusal certificates were minted at their rate limit",
      registers,
    });
    // Event-loop delay is sampled once a second, not every 10 ms (prom-client's default): the sampling timer was
    // the only thing waking an idle sidecar, ~100 times a second (1.4 % of a core per idle proxy, measured).
    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: "egress_process_", eventLoopMonitoringPrecision: 1000 });
    }
  }
}
