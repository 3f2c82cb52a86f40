import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import type { Socket } from "node:net";
import { hostString, parseHostPort } from "../net/hostport.js";
import type { DenyCode } from "../policy/codes.js";
import type { Decision, Host } from "../policy/types.js";
import type { ResolvedTransform } from "../live/secrets.js";
import { startAudit, type AuditRecord } from "./audit.js";
import type { ProxyContext } from "./context.js";
import { finishRefusal, sendUpstream } from "./forward.js";
import { filterRawHeaders } from "./headers.js";
import { refusalBody } from "./refusal.js";
import { DENY_CODES } from "../policy/codes.js";
import type { TlsTerminator } from "./tunnel.js";
import { VettedHttpsAgent } from "./upstream-tls.js";

/** Source of leaf certificates (src/tls): one per host, cached. */
export interface LeafSource {
  secureContextFor(host: string): Promise<tls.SecureContext>;
}

interface TunnelMeta {
  host: Host;
  hostStr: string;
  port: number;
  decision: Decision;
  sniMismatch: string | null;
}

/**
 * TLS interception for hosts with transforms (DESIGN.md "TLS interception"): the client's TLS ends here with
 * a leaf minted for the CONNECT host, each request inside is checked (Host must name the tunnel's host),
 * transformed (strip, then inject) and sent over a verified TLS connection to a vetted address.
 */
export class Interceptor implements TlsTerminator {
  private readonly server: http.Server;
  private readonly meta = new WeakMap<Duplex, TunnelMeta>();
  private readonly agent: VettedHttpsAgent;

  constructor(private readonly ctx: ProxyContext, private readonly leaves: LeafSource, roots: string[]) {
    this.agent = new VettedHttpsAgent(roots);
    this.server = http.createServer({
      maxHeaderSize: ctx.limits.maxHeaderBytes,
      headersTimeout: ctx.limits.headerTimeoutMs,
      requestTimeout: 0,
      insecureHTTPParser: false,
      connectionsCheckingInterval: 1_000,
    });
    this.server.on("request", (req, res) => {
      this.onRequest(req, res).catch((err: unknown) => {
        ctx.log.error({ event: "internal-error", err: String(err) }, "intercepted request failed");
        res.destroy();
      });
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on("clientError", (_err, socket: Duplex) => socket.destroy());
  }

  close(): void {
    this.agent.destroy();
    this.server.close();
  }

  intercept(socket: Socket, head: Buffer, host: Host, port: number, decision: Decision, audit: AuditRecord): void {
    const hostStr = hostString(host);
    if (head.length > 0) socket.unshift(head);
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
      if (meta.sniMismatch) {
        audit.allowed = false;
        audit.reason = "sni-mismatch";
      }
      this.ctx.audit.finish(audit);
    };
    socket.once("close", finish);
    socket.setTimeout(this.ctx.limits.idleTimeoutMs, () => socket.destroy());
    this.leaves.secureContextFor(hostStr).then(
      (secureContext) => {
        if (socket.destroyed) return;
        const tlsSocket = new tls.TLSSocket(socket, {
          isServer: true,
          secureContext,
          ALPNProtocols: ["http/1.1"],
          SNICallback: (servername, cb) => {
            // The ClientHello must name the CONNECT host (DESIGN.md): otherwise a leaf for the name the
            // client asked for carries a 403 explaining why, and nothing goes upstream.
            const sni = servername.toLowerCase().replace(/\.$/, "");
            if (sni === hostStr) return cb(null, secureContext);
            meta.sniMismatch = sni;
            this.leaves.secureContextFor(sni).then((c) => cb(null, c), (e: Error) => cb(e, undefined));
          },
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

  refuseInside(socket: Socket, replay: Buffer, serverName: string, code: DenyCode, host: string): void {
    if (replay.length > 0) socket.unshift(replay);
    this.leaves.secureContextFor(serverName).then(
      (secureContext) => {
        if (socket.destroyed) return;
        const t = new tls.TLSSocket(socket, { isServer: true, secureContext, ALPNProtocols: ["http/1.1"] });
        t.on("error", () => socket.destroy());
        t.once("secure", () => {
          const body = refusalBody(code, host);
          t.end(
            `HTTP/1.1 ${DENY_CODES[code].status} Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Egress-Denied: ${code}\r\nConnection: close\r\n\r\n${body}`,
          );
        });
        socket.setTimeout(this.ctx.limits.headerTimeoutMs, () => socket.destroy());
        socket.resume();
      },
      () => socket.destroy(),
    );
  }

  private check(req: IncomingMessage, res: ServerResponse | null, audit: AuditRecord): TunnelMeta | null {
    const meta = this.meta.get(req.socket);
    if (!meta) return null;
    audit.host = meta.hostStr;
    audit.port = meta.port;
    if (meta.sniMismatch) {
      if (res) finishRefusal(this.ctx, audit, res, "sni-mismatch", meta.sniMismatch);
      return null;
    }
    const h = req.headers.host ? parseHostPort(req.headers.host, meta.port) : null;
    if (!h?.ok || hostString(h.host) !== meta.hostStr || h.port !== meta.port) {
      if (res) finishRefusal(this.ctx, audit, res, "misdirected", meta.hostStr);
      return null;
    }
    if (this.ctx.paused) {
      audit.rule = "paused";
      if (res) finishRefusal(this.ctx, audit, res, "mode-deny-all", meta.hostStr);
      return null;
    }
    return meta;
  }

  private transforms(meta: TunnelMeta): ResolvedTransform[] {
    const state = this.ctx.store.state;
    return state.compiled.transformsFor(meta.hostStr, meta.port).map((m) => state.transforms[m.index]!).filter(Boolean);
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const audit = startAudit("intercepted", req.method ?? "GET");
    const meta = this.check(req, res, audit);
    if (!meta) {
      req.resume();
      return;
    }
    audit.allowed = true;
    audit.reason = meta.decision.reason;
    audit.rule = meta.decision.rule;
    const path = req.url && req.url.startsWith("/") ? req.url : "/";
    sendUpstream(this.ctx, this.agent, req, res, { host: meta.host, port: meta.port, path }, meta.decision, this.transforms(meta), audit, {
      request: https.request as unknown as typeof http.request,
      servername: meta.host.kind === "name" ? meta.hostStr : undefined,
    });
    await Promise.resolve();
  }

  /** WebSocket inside an intercepted tunnel: transforms apply to the upgrade request, then bytes are piped. */
  private onUpgrade(req: IncomingMessage, client: Duplex, head: Buffer): void {
    const audit = startAudit("intercepted", req.method ?? "GET");
    const meta = this.check(req, null, audit);
    if (!meta) {
      client.destroy();
      this.ctx.audit.finish(audit);
      return;
    }
    const transforms = this.transforms(meta);
    const drop = new Set<string>();
    for (const t of transforms) for (const n of [...t.strip, ...t.inject.keys()]) drop.add(n);
    const headers = filterRawHeaders(req.rawHeaders, { keepUpgrade: true, drop });
    headers.unshift("Host", meta.port === 443 ? meta.hostStr : `${meta.hostStr}:${meta.port}`);
    headers.push("Connection", "Upgrade", "Upgrade", String(req.headers.upgrade ?? "websocket"));
    for (const t of transforms) for (const [n, v] of t.inject) headers.push(n, v);
    audit.transforms = [...drop];
    audit.allowed = true;
    const up = https.request({
      host: meta.decision.addresses[0],
      port: meta.port,
      method: req.method,
      path: req.url,
      headers: headers as unknown as http.OutgoingHttpHeaders,
      agent: this.agent,
      servername: meta.host.kind === "name" ? meta.hostStr : undefined,
      ...({ vetted: meta.decision.addresses, connectTimeoutMs: this.ctx.limits.connectTimeoutMs } as object),
    });
    up.on("upgrade", (res: IncomingMessage, upSocket: Socket, upHead: Buffer) => {
      audit.status = 101;
      const lines = [`HTTP/1.1 101 ${res.statusMessage ?? "Switching Protocols"}`];
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
      client.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (upHead.length) client.write(upHead);
      if (head.length) upSocket.write(head);
      upSocket.pipe(client);
      client.pipe(upSocket);
      const done = (): void => {
        upSocket.destroy();
        client.destroy();
      };
      upSocket.on("error", done);
      client.on("error", done);
      upSocket.once("close", done);
      client.once("close", () => {
        done();
        audit.bytes_up = upSocket.bytesWritten;
        audit.bytes_down = upSocket.bytesRead;
        this.ctx.audit.finish(audit);
      });
    });
    up.on("response", (res: IncomingMessage) => {
      // The upstream declined the upgrade: relay its answer and close.
      audit.status = res.statusCode ?? 502;
      const lines = [`HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ""}`];
      const raw = filterRawHeaders(res.rawHeaders);
      for (let i = 0; i + 1 < raw.length; i += 2) lines.push(`${raw[i]}: ${raw[i + 1]}`);
      client.write(`${lines.join("\r\n")}\r\nConnection: close\r\n\r\n`);
      res.pipe(client);
      res.on("end", () => {
        client.end();
        this.ctx.audit.finish(audit);
      });
    });
    up.on("error", (err: Error & { code?: string }) => {
      const code: DenyCode = err.code === "upstream-connect-failed" || err.code === "upstream-timeout" ? err.code : "upstream-tls-failed";
      audit.allowed = false;
      audit.reason = code;
      const body = refusalBody(code, meta.hostStr);
      client.end(`HTTP/1.1 ${DENY_CODES[code].status} Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Egress-Denied: ${code}\r\nConnection: close\r\n\r\n${body}`);
      this.ctx.audit.finish(audit);
    });
    up.end();
  }
}

