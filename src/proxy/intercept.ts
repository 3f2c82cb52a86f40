import http, { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import type { Socket } from "node:net";
import { hostString, normaliseHost, parseHostPort } from "../net/hostport.js";
import { DENY_CODES, isDenyCode, type DenyCode } from "../policy/codes.js";
import type { Decision, Host } from "../policy/types.js";
import { applyTransforms, type ResolvedTransform } from "../live/secrets.js";
import { startAudit, type AuditRecord } from "./audit.js";
import type { ProxyContext } from "./context.js";
import { finishRefusal, relayRequest } from "./forward.js";
import { filterRawHeaders, isWebSocketUpgrade } from "./headers.js";
import { protocolErrorRaw, refusalBody, refuseRaw } from "./refusal.js";
import type { TlsTerminator } from "./tunnel.js";
import { withReplay } from "./replay.js";
import type { UpstreamPools } from "./upstream-pool.js";
import { connectVettedTls, upstreamContext, type UpstreamTls } from "./upstream-tls.js";

/** Source of leaf certificates for intercepted hosts (src/tls): one per host, cached. */
export interface LeafSource {
  secureContextFor(host: string): Promise<tls.SecureContext>;
}

/**
 * Certificates for answering a refusal inside TLS under a name the client chose (an SNI that does not match, a
 * denied host on the transparent listener). Kept apart from the interception cache and rate-limited, so that a
 * sandbox sending many made-up names can neither evict the leaves of real hosts nor make the proxy sign without
 * bound. `null`: no certificate for this name now; the caller aborts the handshake instead (fails closed).
 */
export interface RefusalLeafSource {
  refusalContextFor(name: string): Promise<tls.SecureContext> | null;
}

interface TunnelMeta {
  readonly host: Host;
  readonly hostStr: string;
  readonly port: number;
  readonly decision: Decision;
  /** The name a mismatching ClientHello SNI asked for; every request on this tunnel is then refused. */
  sniMismatch: string | null;
}

type Checked = { ok: true; meta: TunnelMeta; path: string } | { ok: false; code: DenyCode; host: string; close: boolean };

/**
 * TLS interception for hosts with transforms (DESIGN.md "TLS interception"): the client's TLS ends here with
 * a leaf minted for the CONNECT host, each request inside is checked (Host must name the tunnel's host),
 * transformed (strip, then inject) and sent over a verified TLS connection to a vetted address.
 */
export class Interceptor implements TlsTerminator {
  private readonly server: http.Server;
  private readonly meta = new WeakMap<Duplex, TunnelMeta>();
  /**
   * The roots upstream certificates are verified against, parsed once, on first need (~1 MiB of OpenSSL memory
   * that a proxy with nothing to intercept never uses); prepare() builds it ahead of the first request.
   */
  private upstreamContextRef: ReturnType<typeof upstreamContext> | undefined;

  constructor(
    private readonly ctx: ProxyContext,
    private readonly pools: UpstreamPools,
    private readonly leaves: LeafSource,
    private readonly refusals: RefusalLeafSource,
    private readonly roots: readonly string[],
  ) {
    this.server = http.createServer({
      maxHeaderSize: ctx.limits.maxHeaderBytes,
      headersTimeout: ctx.limits.headerTimeoutMs,
      requestTimeout: 0,
      keepAliveTimeout: 5_000,
      insecureHTTPParser: false,
      connectionsCheckingInterval: 1_000,
    });
    // This server never listens: tunnels are handed to it with emit("connection"). Node starts the periodic check
    // that enforces headersTimeout (the slow-loris guard) on "listening" (lib/_http_server.js,
    // setupConnectionsTracking), so announce it once; close() stops the check again.
    this.server.emit("listening");
    this.server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      try {
        this.onRequest(req, res);
      } catch (err) {
        this.internalError(err, res);
      }
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      try {
        this.onUpgrade(req, socket, head);
      } catch (err) {
        this.internalError(err, null);
        socket.destroy();
      }
    });
    this.server.on("clientError", (err: Error & { code?: string }, socket: Duplex) => {
      if (err.code === "HPE_HEADER_OVERFLOW") {
        protocolErrorRaw(socket, 431, "headers-too-large", `Request headers exceed ${ctx.limits.maxHeaderBytes} bytes.`);
      } else if (err.code === "ERR_HTTP_REQUEST_TIMEOUT" || err.code === "ERR_HTTP_HEADERS_TIMEOUT") {
        protocolErrorRaw(socket, 408, "request-timeout", "The request headers did not arrive in time.");
      } else if (err.code === "ECONNRESET" || !socket.writable) {
        socket.destroy();
      } else {
        protocolErrorRaw(socket, 400, "bad-request", "The request is not valid HTTP/1.1.");
      }
    });
  }

  /**
   * A handler threw: a bug, never a policy outcome. Only the error's code and class are logged: a message could
   * quote a header, and headers here carry injected secrets.
   */
  private internalError(err: unknown, res: ServerResponse | null): void {
    const e = err as { code?: unknown; name?: unknown };
    this.ctx.log.error({ event: "internal-error", code: String(e?.code ?? ""), name: String(e?.name ?? "") }, "intercepted request failed");
    if (res === null) return;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(500, { "content-type": "application/json", connection: "close" });
    res.end(JSON.stringify({ error: { code: "internal-error", message: "The proxy failed to handle this request." } }));
  }

  /** Build what interception needs before the first intercepted request arrives (idempotent). */
  prepare(): void {
    this.upstreamContext();
  }

  private upstreamContext(): ReturnType<typeof upstreamContext> {
    return (this.upstreamContextRef ??= upstreamContext(this.roots));
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }

  intercept(socket: Socket, head: Buffer, host: Host, port: number, decision: Decision, audit: AuditRecord): void {
    const hostStr = hostString(host);
    // Nothing may be read (and lost) while the leaf is looked up; the TLS socket takes over the buffered bytes.
    socket.pause();
    const meta: TunnelMeta = { host, hostStr, port, decision, sniMismatch: null };
    this.ctx.metrics.activeTunnels.inc();
    let finished = false;
    const untrack = this.ctx.registry.add({
      host,
      port,
      address: decision.addresses[0] ?? null,
      revoke: () => {
        this.ctx.metrics.revocations.inc();
        socket.destroy();
      },
    });
    const finish = (): void => {
      if (finished) return;
      finished = true;
      untrack();
      this.ctx.metrics.activeTunnels.dec();
      audit.bytes_up = socket.bytesRead;
      audit.bytes_down = socket.bytesWritten;
      if (meta.sniMismatch !== null) {
        audit.allowed = false;
        audit.reason = "sni-mismatch";
        audit.rule = `sni:${meta.sniMismatch}`;
      }
      this.ctx.audit.finish(audit);
    };
    socket.once("close", finish);
    socket.on("error", () => socket.destroy());
    socket.setTimeout(this.ctx.limits.idleTimeoutMs, () => socket.destroy());
    this.leaves.secureContextFor(hostStr).then(
      (secureContext) => {
        if (socket.destroyed) return;
        const tlsSocket = new tls.TLSSocket(withReplay(socket, head), {
          isServer: true,
          secureContext,
          ALPNProtocols: ["http/1.1"],
          SNICallback: (servername, cb) => this.onSni(meta, servername, secureContext, cb),
        });
        tlsSocket.on("error", () => socket.destroy());
        tlsSocket.once("close", () => socket.destroy());
        this.meta.set(tlsSocket, meta);
        this.server.emit("connection", tlsSocket);
      },
      (err: unknown) => {
        this.ctx.log.error({ event: "leaf-error", host: hostStr, err: String(err) }, "could not mint a certificate");
        socket.destroy();
      },
    );
  }

  /**
   * The ClientHello must name the CONNECT host (DESIGN.md): a client that asks for another name gets, when a
   * refusal certificate is available, a leaf for that name and a 403 sni-mismatch inside TLS; otherwise the
   * handshake is aborted. Either way nothing goes upstream. A ClientHello without SNI is accepted: the tunnel's
   * host is the only place its requests can go, and the Host check below still applies.
   */
  private onSni(meta: TunnelMeta, servername: string, own: tls.SecureContext, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void {
    const n = normaliseHost(servername);
    const name = n.ok ? hostString(n.host) : null;
    if (name === meta.hostStr) {
      cb(null, own);
      return;
    }
    meta.sniMismatch = name ?? JSON.stringify(servername.slice(0, 64));
    const refusal = name !== null ? this.refusals.refusalContextFor(name) : null;
    if (refusal === null) {
      cb(new Error("sni-mismatch"));
      return;
    }
    refusal.then(
      (c) => cb(null, c),
      (e: Error) => cb(e),
    );
  }

  refuseInside(socket: Socket, replay: Buffer, serverName: string, code: DenyCode, host: string): void {
    socket.pause();
    socket.on("error", () => socket.destroy());
    const context = this.refusals.refusalContextFor(serverName);
    if (context === null) {
      socket.destroy();
      return;
    }
    socket.setTimeout(this.ctx.limits.headerTimeoutMs, () => socket.destroy());
    context.then(
      (secureContext) => {
        if (socket.destroyed) return;
        const t = new tls.TLSSocket(withReplay(socket, replay), { isServer: true, secureContext, ALPNProtocols: ["http/1.1"] });
        t.on("error", () => socket.destroy());
        t.once("close", () => socket.destroy());
        t.once("secure", () => {
          const body = refusalBody(code, host);
          const status = DENY_CODES[code].status;
          t.end(
            `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Egress-Denied: ${code}\r\nConnection: close\r\n\r\n${body}`,
          );
        });
      },
      () => socket.destroy(),
    );
  }

  /** Every request inside an intercepted tunnel: SNI, Host and request target must all name the tunnel's host. */
  private check(req: IncomingMessage, audit: AuditRecord): Checked {
    const meta = this.meta.get(req.socket);
    if (!meta) return { ok: false, code: "invalid-target", host: "", close: true };
    audit.host = meta.hostStr;
    audit.port = meta.port;
    if (meta.sniMismatch !== null) {
      audit.rule = `sni:${meta.sniMismatch}`;
      return { ok: false, code: "sni-mismatch", host: meta.sniMismatch, close: true };
    }
    // RFC 9110 §7.4: a request for another origin on this connection is answered 421 Misdirected Request. The
    // Host header is what an upstream would route by, so it must name the very host the policy judged.
    const h = req.headers.host !== undefined ? parseHostPort(req.headers.host, meta.port) : null;
    if (!h?.ok || hostString(h.host) !== meta.hostStr || h.port !== meta.port) {
      audit.rule = "host-header";
      return { ok: false, code: "misdirected", host: meta.hostStr, close: false };
    }
    let path = req.url ?? "";
    if (!path.startsWith("/") && !(path === "*" && req.method === "OPTIONS")) {
      // Absolute form (RFC 9112 §3.2.2) is legal inside a tunnel too; its authority must name the tunnel's host.
      let url: URL | null = null;
      try {
        url = /^https:\/\//i.test(path) ? new URL(path) : null;
      } catch {
        url = null;
      }
      if (url === null) return { ok: false, code: "invalid-target", host: meta.hostStr, close: false };
      const a = parseHostPort(url.host, 443);
      if (!a.ok || hostString(a.host) !== meta.hostStr || a.port !== meta.port) {
        audit.rule = "request-target";
        return { ok: false, code: "misdirected", host: meta.hostStr, close: false };
      }
      path = `${url.pathname}${url.search}`;
    }
    if (this.ctx.paused) {
      audit.rule = "paused";
      return { ok: false, code: "mode-deny-all", host: meta.hostStr, close: true };
    }
    return { ok: true, meta, path };
  }

  /** The transforms of the policy in force now (a live change applies to the next request of an open tunnel). */
  private transforms(meta: TunnelMeta): ResolvedTransform[] {
    const state = this.ctx.store.state;
    return state.compiled.transformsFor(meta.hostStr, meta.port).flatMap((m) => {
      const t = state.transforms[m.index];
      return t ? [t] : [];
    });
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const audit = startAudit("intercepted", req.method ?? "GET");
    const c = this.check(req, audit);
    if (!c.ok) {
      if (c.close) res.shouldKeepAlive = false;
      finishRefusal(this.ctx, audit, res, c.code, c.host);
      req.resume();
      return;
    }
    audit.allowed = true;
    audit.reason = c.meta.decision.reason;
    audit.rule = c.meta.decision.rule;
    const meta = c.meta;
    relayRequest(this.ctx, this.pools, req, res, { host: meta.host, port: meta.port, path: c.path }, meta.decision, this.transforms(meta), audit, this.upstreamTls(meta));
  }

  private upstreamTls(meta: TunnelMeta): UpstreamTls {
    return { host: meta.hostStr, isName: meta.host.kind === "name", context: this.upstreamContext() };
  }

  /**
   * WebSocket inside an intercepted tunnel (RFC 6455 §4): the upgrade request is checked and transformed like any
   * other request and sent over verified TLS; after the upstream's 101 the bytes are piped both ways untouched.
   */
  private onUpgrade(req: IncomingMessage, client: Duplex, head: Buffer): void {
    client.on("error", () => client.destroy());
    if (!isWebSocketUpgrade(req.headers)) {
      protocolErrorRaw(client, 400, "upgrade-not-supported", "Only WebSocket upgrades are relayed.");
      return;
    }
    const audit = startAudit("intercepted", req.method ?? "GET");
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      this.ctx.audit.finish(audit);
    };
    const c = this.check(req, audit);
    if (!c.ok) {
      audit.allowed = false;
      audit.reason = c.code;
      audit.status = DENY_CODES[c.code].status;
      refuseRaw(client, c.code, c.host);
      finish();
      return;
    }
    const { meta } = c;
    const transformed = applyTransforms(filterRawHeaders(req.rawHeaders, { keepUpgrade: true }), this.transforms(meta));
    const headers = transformed.headers;
    headers.unshift("Host", meta.port === 443 ? meta.hostStr : `${meta.hostStr}:${meta.port}`);
    headers.push("Connection", "Upgrade", "Upgrade", "websocket");
    audit.transforms = transformed.names;
    audit.allowed = true;
    audit.reason = meta.decision.reason;
    audit.rule = meta.decision.rule;
    // One connection of its own (it becomes a raw pipe after the 101), dialled and verified like every other
    // upstream TLS leg before a byte of the upgrade request leaves.
    const up = http.request({
      host: meta.decision.addresses[0],
      port: meta.port,
      method: req.method,
      path: c.path,
      headers: headers as unknown as http.OutgoingHttpHeaders,
      createConnection: (_opts, callback) => {
        connectVettedTls(meta.decision.addresses, meta.port, this.upstreamTls(meta), this.ctx.limits.connectTimeoutMs).then(
          ({ socket }) => callback(null, socket),
          (err: Error) => callback(err, undefined as unknown as Socket),
        );
        return undefined;
      },
    });
    let upSocket: Socket | null = null;
    const untrack = this.ctx.registry.add({
      host: meta.host,
      port: meta.port,
      address: null,
      revoke: () => {
        this.ctx.metrics.revocations.inc();
        up.destroy();
        upSocket?.destroy();
        client.destroy();
      },
    });
    const timer = setTimeout(() => up.destroy(Object.assign(new Error("response timeout"), { code: "upstream-timeout" })), this.ctx.limits.responseTimeoutMs);
    timer.unref();
    client.once("close", () => {
      clearTimeout(timer);
      untrack();
      up.destroy();
      upSocket?.destroy();
      finish();
    });
    up.on("socket", (s: Socket) => {
      const onConnect = (): void => {
        audit.address = s.remoteAddress ?? null;
      };
      if (s.remoteAddress) onConnect();
      else s.once("secureConnect", onConnect);
    });
    up.on("upgrade", (res: IncomingMessage, socket: Socket, upHead: Buffer) => {
      clearTimeout(timer);
      upSocket = socket;
      audit.status = 101;
      const lines = [`HTTP/1.1 101 ${res.statusMessage || "Switching Protocols"}`];
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
      client.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (upHead.length > 0) client.write(upHead);
      if (head.length > 0) socket.write(head);
      socket.setTimeout(this.ctx.limits.idleTimeoutMs, () => socket.destroy());
      socket.on("error", () => socket.destroy());
      socket.on("data", (d: Buffer) => (audit.bytes_down += d.length));
      client.on("data", (d: Buffer) => (audit.bytes_up += d.length));
      socket.pipe(client);
      client.pipe(socket);
      socket.once("close", () => client.destroy());
    });
    up.on("response", (res: IncomingMessage) => {
      // The upstream declined the upgrade: relay its answer, close-delimited, and close.
      clearTimeout(timer);
      audit.status = res.statusCode ?? 502;
      const lines = [`HTTP/1.1 ${res.statusCode ?? 502} ${res.statusMessage ?? ""}`];
      const raw = filterRawHeaders(res.rawHeaders);
      for (let i = 0; i + 1 < raw.length; i += 2) lines.push(`${raw[i]}: ${raw[i + 1]}`);
      client.write(`${lines.join("\r\n")}\r\nConnection: close\r\n\r\n`);
      res.on("data", (d: Buffer) => (audit.bytes_down += d.length));
      res.pipe(client);
      res.on("error", () => client.destroy());
    });
    up.on("error", (err: Error & { code?: string }) => {
      clearTimeout(timer);
      if (upSocket !== null || audit.status !== null) {
        client.destroy();
        return;
      }
      const code: DenyCode = err.code && isDenyCode(err.code) ? err.code : "upstream-connect-failed";
      audit.allowed = false;
      audit.reason = code;
      audit.status = DENY_CODES[code].status;
      refuseRaw(client, code, meta.hostStr);
    });
    up.end();
  }
}
