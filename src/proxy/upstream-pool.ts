import type { Pool as PoolType } from "undici";
import { dialVetted } from "../net/dial.js";
import type { ProxyLimits } from "./config.js";
import { connectVettedTls, type UpstreamTls } from "./upstream-tls.js";
import { requireCjs } from "../util/cjs.js";

/**
 * Only undici's Pool, not its package index: the index also loads fetch, WebSocket, EventSource, the cache and
 * mock layers, about 9 MiB of idle RSS the proxy never uses (DESIGN.md "Performance targets": ≤ 60 MiB idle).
 * undici has no "exports" map, so the deep path is a supported CommonJS require; the type is the index's own.
 */
const Pool = requireCjs("undici/lib/dispatcher/pool.js") as typeof PoolType;
type Pool = PoolType;

/**
 * undici connection pools keyed by the vetted address list (and TLS name): a pool can only ever dial the
 * addresses the policy judged, in order, and never resolves a name. undici was chosen over node:http's
 * client and http-proxy by measurement (bench/forwarders.mjs; figures in the README).
 */
export class UpstreamPools {
  private readonly pools = new Map<string, { pool: Pool; lastUsed: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly limits: ProxyLimits, private readonly maxPools = 1024) {
    // Pools for origins nobody asked for in a while are closed, so memory stays bounded by recent traffic.
    this.sweeper = setInterval(() => this.sweep(60_000), 30_000);
    this.sweeper.unref();
  }

  get(addresses: readonly string[], port: number, upstreamTls?: UpstreamTls): Pool {
    // A connection verified for one name is never reused for another: the TLS host is part of the key.
    const key = `${upstreamTls ? `tls:${upstreamTls.host}` : "tcp"}|${port}|${addresses.join(",")}`;
    const hit = this.pools.get(key);
    if (hit) {
      hit.lastUsed = Date.now();
      return hit.pool;
    }
    if (this.pools.size >= this.maxPools) this.sweep(0, Math.ceil(this.maxPools / 10));
    const vetted = [...addresses];
    const connectTimeoutMs = this.limits.connectTimeoutMs;
    const pool = new Pool(`${upstreamTls ? "https" : "http"}://${bracket(vetted[0]!)}:${port}`, {
      connections: 256,
      pipelining: 1,
      headersTimeout: this.limits.responseTimeoutMs,
      bodyTimeout: this.limits.idleTimeoutMs,
      keepAliveTimeout: 4_000,
      connect: (_opts, callback) => {
        const connected = upstreamTls ? connectVettedTls(vetted, port, upstreamTls, connectTimeoutMs) : dialVetted(vetted, port, { timeoutMs: connectTimeoutMs });
        connected.then(
          ({ socket }) => callback(null, socket),
          (err: Error) => callback(err, null),
        );
      },
    });
    this.pools.set(key, { pool, lastUsed: Date.now() });
    return pool;
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map(({ pool }) => pool.destroy().catch(() => undefined)));
  }

  private sweep(idleMs: number, atLeast = 0): void {
    const now = Date.now();
    const entries = [...this.pools.entries()].sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    let closed = 0;
    for (const [key, { pool, lastUsed }] of entries) {
      if (now - lastUsed < idleMs && closed >= atLeast) break;
      this.pools.delete(key);
      void pool.close().catch(() => undefined);
      closed++;
    }
  }
}

function bracket(a: string): string {
  return a.includes(":") ? `[${a}]` : a;
}
