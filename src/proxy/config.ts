/** Everything `sandbox-egress proxy` is configured with, after the CLI has parsed and checked it. */
export interface ProxyConfig {
  /** HOST:PORT; port 0 picks a free one. */
  readonly listen: string;
  readonly transparent?: string;
  /** HOST:PORT or unix:PATH. */
  readonly admin: string;
  readonly policyFile?: string;
  readonly adminToken?: string;
  readonly caDir: string;
  readonly upstreamCa?: string;
  readonly hostsFile?: string;
  readonly dnsServer?: string;
  readonly internalAllow: readonly string[];
  readonly sandboxId?: string;
  readonly logLevel: string;
  readonly limits: ProxyLimits;
}

export interface ProxyLimits {
  /** Time to connect to an upstream (all vetted addresses together). */
  readonly connectTimeoutMs: number;
  /** Time from request sent to response headers received. */
  readonly responseTimeoutMs: number;
  /** A tunnel or keep-alive connection with no traffic for this long is closed. */
  readonly idleTimeoutMs: number;
  /** A client must send complete request headers within this time (slow-loris guard). */
  readonly headerTimeoutMs: number;
  /** Request header block limit in bytes; larger answers 431. */
  readonly maxHeaderBytes: number;
  /** Concurrent client connections across listeners; more answer 429. */
  readonly maxConnections: number;
  /** Grace period for open requests and tunnels on SIGTERM. */
  readonly drainTimeoutMs: number;
}

export const DEFAULT_LIMITS: ProxyLimits = Object.freeze({
  connectTimeoutMs: 10_000,
  responseTimeoutMs: 60_000,
  idleTimeoutMs: 300_000,
  headerTimeoutMs: 10_000,
  maxHeaderBytes: 16 * 1024,
  maxConnections: 4096,
  drainTimeoutMs: 10_000,
});
