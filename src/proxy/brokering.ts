import type { SecureContext } from "node:tls";
import { LRUCache } from "lru-cache";
import { hostString, normaliseHost } from "../net/hostport.js";
import { CertificateAuthority, LeafCertificates, loadX509Encoder } from "../tls/index.js";
import type { PolicyState } from "../live/policy-store.js";
import type { ProxyMetrics } from "../telemetry/metrics.js";
import type { ProxyConfig } from "./config.js";
import { Interceptor, type LeafSource, type RefusalLeafSource } from "./intercept.js";
import type { EgressProxy } from "./server.js";
import { upstreamRoots } from "./upstream-tls.js";

/** Bounds on the certificates minted for in-TLS refusals (see RefusalLeaves). */
export interface RefusalLimits {
  /** Refusal leaves kept; separate from the interception cache. */
  readonly max: number;
  /** Sustained mints per second. */
  readonly perSecond: number;
  /** Mints allowed in a burst before the rate applies. */
  readonly burst: number;
}

export const DEFAULT_REFUSAL_LIMITS: RefusalLimits = Object.freeze({ max: 64, perSecond: 5, burst: 20 });

/** Leaves kept for intercepted hosts (LeafCertificates' LRU bound). */
const INTERCEPT_CACHE_MAX = 1000;

/**
 * Credential brokering needs the CA: load it from --ca-dir, or create it on the first start, and install
 * the interceptor (which also answers SNI refusals inside TLS).
 */
export async function installBrokering(
  proxy: EgressProxy,
  config: ProxyConfig,
  opts: { refusals?: RefusalLimits } = {},
): Promise<{ caPem: string; close(): void }> {
  const { ca, created } = await CertificateAuthority.loadOrCreate(config.caDir);
  if (created) proxy.ctx.log.info({ event: "ca-created", dir: config.caDir, fingerprint: ca.fingerprintSha256 }, "created the interception CA");
  const metrics = proxy.ctx.metrics;
  const leaves = new CountedLeaves(new LeafCertificates(ca, { max: INTERCEPT_CACHE_MAX }), metrics, "intercept");
  const limits = opts.refusals ?? DEFAULT_REFUSAL_LIMITS;
  const refusals = new RefusalLeaves(new CountedLeaves(new LeafCertificates(ca, { max: limits.max }), metrics, "refusal"), limits, () =>
    metrics.refusalLeavesThrottled.inc(),
  );
  const interceptor = new Interceptor(proxy.ctx, proxy.pools, leaves, refusals, upstreamRoots(config.upstreamCa));
  proxy.setTlsTerminator(interceptor);
  // The certificate encoder and the upstream roots are loaded lazily (x509.ts, Interceptor); once transforms are
  // in force, interception is expected, so prepare both off the request path instead of inside the first
  // intercepted handshake. An --upstream-ca file is parsed at once so that a bad one fails the start.
  const prepare = (): void => {
    loadX509Encoder();
    interceptor.prepare();
  };
  const hasTransforms = (state: PolicyState): boolean => (state.compiled.policy.transforms?.length ?? 0) > 0;
  // At start, before the proxy listens (start-up is when loading costs least: see v8-tuning.ts); on a live change,
  // off the admin request that made it.
  if (hasTransforms(proxy.ctx.store.state)) prepare();
  else if (config.upstreamCa) interceptor.prepare();
  proxy.ctx.store.on("change", (state) => {
    if (hasTransforms(state)) setImmediate(prepare);
  });
  return { caPem: ca.certPem, close: () => interceptor.close() };
}

/** Reports every certificate a LeafCertificates signs as `egress_leaf_certificates_minted_total{purpose}`. */
class CountedLeaves implements LeafSource {
  private reported = 0;

  constructor(
    private readonly leaves: LeafCertificates,
    private readonly metrics: ProxyMetrics,
    private readonly purpose: "intercept" | "refusal",
  ) {}

  secureContextFor(host: string): Promise<SecureContext> {
    const p = this.leaves.secureContextFor(host);
    this.report();
    return p;
  }

  private report(): void {
    const minted = this.leaves.stats.minted;
    if (minted > this.reported) {
      this.metrics.leafCertificatesMinted.inc({ purpose: this.purpose }, minted - this.reported);
      this.reported = minted;
    }
  }
}

/**
 * Leaves for refusals answered inside TLS under a name the client chose (review note on intercept.ts: minting
 * for every SNI a sandbox makes up would churn the interception LRU and cost ~1.5 ms of signing each).
 * Three bounds:
 *  - only names that pass normaliseHost get one (no IP literals, no junk); others get an aborted handshake;
 *  - they live in their own small LRU, so the leaves of real intercepted hosts are never evicted by them;
 *  - new mints are rate-limited by a token bucket; a cached name costs nothing. Beyond the rate the handshake
 *    is aborted instead of answered: the client sees a TLS failure rather than the 403, and still nothing goes
 *    upstream (fail closed). `egress_refusal_leaves_throttled_total` counts those.
 */
export class RefusalLeaves implements RefusalLeafSource {
  private readonly cache: LRUCache<string, Promise<SecureContext>>;
  private tokens: number;
  private refilled: number;

  constructor(
    private readonly leaves: LeafSource,
    private readonly limits: RefusalLimits,
    private readonly onThrottled: () => void = () => undefined,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.cache = new LRUCache({ max: limits.max });
    this.tokens = limits.burst;
    this.refilled = now();
  }

  refusalContextFor(name: string): Promise<SecureContext> | null {
    const n = normaliseHost(name);
    if (!n.ok || n.host.kind !== "name") return null;
    const host = hostString(n.host);
    const cached = this.cache.get(host);
    if (cached) return cached;
    if (!this.take()) {
      this.onThrottled();
      return null;
    }
    const p = this.leaves.secureContextFor(host);
    this.cache.set(host, p);
    p.catch(() => {
      if (this.cache.peek(host) === p) this.cache.delete(host);
    });
    return p;
  }

  private take(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.limits.burst, this.tokens + ((now - this.refilled) / 1000) * this.limits.perSecond);
    this.refilled = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
