import http from "node:http";
import net, { type AddressInfo, type Socket } from "node:net";
import { once } from "node:events";
import { PolicyStore } from "../live/policy-store.js";
import { Resolver } from "../net/resolve.js";
import { createLogger, type Logger } from "../telemetry/logger.js";
import { ProxyMetrics } from "../telemetry/metrics.js";
import { Auditor } from "./audit.js";
import type { ProxyConfig } from "./config.js";
import type { ProxyContext } from "./context.js";
import { handleProxyRequest } from "./forward.js";
import { ConnectionRegistry } from "./registry.js";
import { protocolErrorRaw, refuseRaw } from "./refusal.js";
import { SelfAddresses } from "./self.js";
import { splicedReleased } from "./splice-relay.js";
import { handleTransparent } from "./transparent.js";
import { handleConnect, type TlsTerminator } from "./tunnel.js";
import { UpstreamPools } from "./upstream-pool.js";

export interface ListenAddresses {
  proxy: string;
  transparent?: string;
}

/**
 * One egress proxy: the forward listener (HTTP + CONNECT), the optional transparent listener, and what they
 * share. The admin REST is started beside it by the CLI (src/admin), talking to it only through the store
 * and a few methods here.
 */
export class EgressProxy {
  readonly ctx: ProxyContext;
  /** Upstream connection pools, shared by the forward, transparent and intercepting paths. */
  readonly pools: UpstreamPools;
  private readonly servers: net.Server[] = [];
  private readonly clients = new Set<Socket>();
  /**
   * Connections answered 429 by admit(). The HTTP server has already attached its parser to them, so requests
   * they pipeline would still be emitted; those are dropped here, never judged, dialled or forwarded.
   */
  private readonly refused = new WeakSet<Socket>();
  private tls: TlsTerminator | null = null;
  private addressesRef: ListenAddresses = { proxy: "" };
  private draining = false;

  private constructor(readonly config: ProxyConfig, ctx: ProxyContext) {
    this.ctx = ctx;
    this.pools = new UpstreamPools(config.limits);
    ctx.store.on("change", (state) => {
      const n = ctx.registry.revokeDenied(state.compiled);
      if (n > 0) ctx.log.info({ event: "revoked", revision: state.revision, connections: n }, "closed connections the new policy denies");
    });
  }

  static async create(config: ProxyConfig, opts: { log?: Logger; env?: NodeJS.ProcessEnv; metrics?: ProxyMetrics } = {}): Promise<EgressProxy> {
    const log = opts.log ?? createLogger({ level: config.logLevel, sandboxId: config.sandboxId });
    const metrics = opts.metrics ?? new ProxyMetrics();
    const store = await PolicyStore.open({ file: config.policyFile, internalAllow: config.internalAllow, log, metrics, env: opts.env });
    const resolver = new Resolver({ hostsFile: config.hostsFile, dnsServer: config.dnsServer, timeoutMs: config.limits.connectTimeoutMs });
    const ctx: ProxyContext = {
      store,
      resolver,
      log,
      metrics,
      audit: new Auditor(log, metrics, config.sandboxId ?? null),
      registry: new ConnectionRegistry(),
      limits: config.limits,
      self: new SelfAddresses(),
      paused: false,
    };
    return new EgressProxy(config, ctx);
  }

  /** Interception and in-TLS refusals need the CA; the brokering module installs it. */
  setTlsTerminator(tls: TlsTerminator): void {
    this.tls = tls;
  }

  get addresses(): ListenAddresses {
    return this.addressesRef;
  }

  async listen(): Promise<ListenAddresses> {
    const { limits } = this.config;
    const server = http.createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headerTimeoutMs,
      requestTimeout: 0, // uploads may be long; slow clients are bounded by headersTimeout and idle timeouts
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: 1_000,
      // Lenient parsing is how request smuggling gets in (CL+TE, obs-fold, bare LF): never.
      insecureHTTPParser: false,
      requireHostHeader: false,
    });
    server.on("connection", (socket: Socket) => this.admit(socket));
    server.on("request", (req, res) => {
      if (this.refused.has(req.socket)) return void req.socket.destroySoon();
      handleProxyRequest(this.ctx, this.pools, req, res).catch((err: unknown) => this.internalError(err, res));
    });
    server.on("connect", (req, socket: Socket, head: Buffer) => {
      if (this.refused.has(socket)) return void socket.destroySoon();
      handleConnect(this.ctx, this.tls, req, socket, head).catch((err: unknown) => {
        this.ctx.log.error({ event: "internal-error", err: String(err) }, "CONNECT handler failed");
        socket.destroy();
      });
    });
    server.on("upgrade", (req, socket: Socket) => {
      if (this.refused.has(socket)) return void socket.destroySoon();
      // Upgrades through the forward listener would bypass header hygiene; WebSockets go through CONNECT.
      req.resume();
      protocolErrorRaw(socket, 400, "upgrade-not-supported", "Use CONNECT for WebSocket and other upgraded protocols.");
    });
    server.on("clientError", (err: Error & { code?: string }, socket: Socket) => this.clientError(err, socket));
    server.setTimeout(limits.idleTimeoutMs);
    this.servers.push(server);
    const proxyAddr = await listenOn(server, this.config.listen);
    this.addSelf(proxyAddr);
    this.addressesRef = { proxy: formatAddress(proxyAddr) };

    if (this.config.transparent) {
      const plain = http.createServer({
        maxHeaderSize: limits.maxHeaderBytes,
        headersTimeout: limits.headerTimeoutMs,
        requestTimeout: 0,
        connectionsCheckingInterval: 1_000,
        insecureHTTPParser: false,
      });
      plain.on("clientError", (err: Error & { code?: string }, socket: Socket) => this.clientError(err, socket));
      const t = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
        if (!this.admit(socket)) return;
        handleTransparent(this.ctx, this.pools, () => this.tls, plain, socket).catch((err: unknown) => {
          this.ctx.log.error({ event: "internal-error", err: String(err) }, "transparent handler failed");
          socket.destroy();
        });
      });
      this.servers.push(t, plain);
      const tAddr = await listenOn(t, this.config.transparent);
      this.addSelf(tAddr);
      this.addressesRef.transparent = formatAddress(tAddr);
    }
    return this.addressesRef;
  }

  /** Another listener of this process (the admin API) is also part of "self". */
  addSelfAddress(info: AddressInfo | string | null): void {
    this.addSelf(info);
  }

  /**
   * A connect() to the unspecified address reaches the local host (Linux routes 0.0.0.0 to loopback), so
   * `0.0.0.0:PORT` is this listener too, whatever address it is bound to; recording the listener's port as a
   * wildcard covers it (and [::]:PORT) even where `--internal-allow` exempts 0.0.0.0/8.
   */
  private addSelf(info: AddressInfo | string | null): void {
    this.ctx.self.add(info);
    if (info !== null && typeof info !== "string") this.ctx.self.add({ address: "0.0.0.0", family: "IPv4", port: info.port });
  }

  setPaused(paused: boolean): void {
    this.ctx.paused = paused;
    if (paused) this.ctx.registry.closeAll();
  }

  /** SIGTERM: stop accepting, let open requests and tunnels finish (bounded), then close everything. */
  async close(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const closing = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const s of this.servers) if (s instanceof http.Server) s.closeIdleConnections();
    const deadline = Date.now() + this.config.limits.drainTimeoutMs;
    while ((this.ctx.registry.size > 0 || this.clients.size > 0) && Date.now() < deadline) {
      for (const s of this.servers) if (s instanceof http.Server) s.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 50));
    }
    this.ctx.registry.closeAll();
    // Spliced tunnels end asynchronously (the relay thread lets go of their descriptors, then they close).
    await splicedReleased(1_000);
    for (const c of this.clients) c.destroy();
    await Promise.all(closing);
    await this.pools.close();
    this.ctx.resolver.close();
    this.ctx.store.close();
  }

  /** Connection limit, counted across listeners. */
  private admit(socket: Socket): boolean {
    if (this.clients.size >= this.config.limits.maxConnections || this.draining) {
      socket.on("error", () => socket.destroy());
      this.refused.add(socket);
      refuseRaw(socket, "too-many-connections", "");
      this.ctx.metrics.requests.inc({ decision: "denied", reason: "too-many-connections", kind: "connection" });
      return false;
    }
    this.clients.add(socket);
    this.ctx.metrics.activeConnections.inc();
    socket.once("close", () => {
      this.clients.delete(socket);
      this.ctx.metrics.activeConnections.dec();
    });
    return true;
  }

  private clientError(err: Error & { code?: string }, socket: Socket): void {
    if (err.code === "HPE_HEADER_OVERFLOW") {
      protocolErrorRaw(socket, 431, "headers-too-large", `Request headers exceed ${this.config.limits.maxHeaderBytes} bytes.`);
    } else if (err.code === "ERR_HTTP_REQUEST_TIMEOUT" || err.code === "ERR_HTTP_HEADERS_TIMEOUT") {
      protocolErrorRaw(socket, 408, "request-timeout", "The request headers did not arrive in time.");
    } else if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
    } else {
      protocolErrorRaw(socket, 400, "bad-request", "The request is not valid HTTP/1.1.");
    }
  }

  private internalError(err: unknown, res: http.ServerResponse): void {
    this.ctx.log.error({ event: "internal-error", err: String(err) }, "request handler failed");
    if (!res.headersSent) {
      res.writeHead(500, { "content-type": "application/json", connection: "close" });
      res.end(JSON.stringify({ error: { code: "internal-error", message: "The proxy failed to handle this request." } }));
    } else res.destroy();
  }
}

export async function listenOn(server: net.Server, spec: string): Promise<AddressInfo | string> {
  if (spec.startsWith("unix:")) {
    server.listen(spec.slice(5));
  } else {
    const i = spec.lastIndexOf(":");
    if (i < 0) throw new Error(`listen address ${spec} must be HOST:PORT`);
    const host = spec.slice(0, i).replace(/^\[(.*)\]$/, "$1");
    const port = Number(spec.slice(i + 1));
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`listen address ${spec}: port must be 0..65535`);
    server.listen({ host, port });
  }
  await Promise.race([once(server, "listening"), once(server, "error").then(([e]) => Promise.reject(e as Error))]);
  const a = server.address();
  if (a === null) throw new Error(`listener ${spec} has no address`);
  return a;
}

export function formatAddress(a: AddressInfo | string): string {
  if (typeof a === "string") return `unix:${a}`;
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
