import { createRequire } from "node:module";
import tls from "node:tls";
import type { Pool as PoolType } from "undici";
import type { Socket } from "node:net";
import { dialVetted } from "../net/dial.js";
import type { ProxyLimits } from "./config.js";

/**
 * Only undici's Pool, not its package index: the index also loads fetch, WebSocket, EventSource, the cache and
 * mock layers, about 9 MiB of idle RSS the proxy never uses (DESIGN.md "Performance targets": ≤ 60 MiB idle).
 * undici has no "exports" map, so the deep path is a supported CommonJS require; the type is the index's own.
 */
const Pool = createRequire(import.meta.url)("undici/lib/dispatcher/pool.js") as typeof PoolType;
type Pool = PoolType;

/** TLS parameters for an upstream leg (intercepted requests): the judged host name and the roots to trust. */
export interface UpstreamTls {
  servername: string | undefined;
  roots: readonly string[];
}

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
    const key = `${upstreamTls ? `tls:${upstreamTls.servername ?? ""}` : "tcp"}|${port}|${addresses.join(",")}`;
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
        dialVetted(vetted, port, { timeoutMs: connectTimeoutMs }).then(
          ({ socket }) => {
            if (!upstreamTls) return callback(null, socket);
            secure(socket, upstreamTls, callback);
          },
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

/**
 * TLS to the upstream with the judged name as SNI and for verification; the handshake (and so the
 * certificate check) completes before undici writes a byte of the request. ALPN offers http/1.1 only.
 */
function secure(socket: Socket, t: UpstreamTls, callback: (...args: [null, Socket] | [Error, null]) => void): void {
  const s = tls.connect({
    socket,
    servername: t.servername,
    ca: t.roots as string[],
    ALPNProtocols: ["http/1.1"],
    rejectUnauthorized: true,
  });
  const fail = (err: Error & { code?: string }): void => {
    s.destroy();
    const code = err.code === "ECONNRESET" || err.code === "EPIPE" ? "upstream-connect-failed" : "upstream-tls-failed";
    callback(Object.assign(new Error(code === "upstream-tls-failed" ? "upstream certificate verification failed" : "upstream closed during the TLS handshake"), { code, cause: err }), null);
  };
  s.once("error", fail);
  s.once("secureConnect", () => {
    s.off("error", fail);
    callback(null, s);
  });
}

function bracket(a: string): string {
  return a.includes(":") ? `[${a}]` : a;
}
