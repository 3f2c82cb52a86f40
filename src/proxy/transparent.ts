import type http from "node:http";
import type { Socket } from "node:net";
import { dialVetted, DialError } from "../net/dial.js";
import { hostString, normaliseHost, parseHostPort } from "../net/hostport.js";
import { DENY_CODES, type DenyCode } from "../policy/codes.js";
import { startAudit, type AuditRecord } from "./audit.js";
import { readClientHello } from "./clienthello.js";
import { decideTarget, type ProxyContext } from "./context.js";
import { finishRefusal, forwardPlain } from "./forward.js";
import { openTunnel, UpstreamRelay, type TlsTerminator } from "./tunnel.js";
import type { UpstreamPools } from "./upstream-pool.js";

/**
 * The transparent listener receives connections redirected by the sandbox's network namespace (iptables
 * REDIRECT or equivalent), with no proxy protocol in front. The destination comes from the TLS SNI (port 443)
 * or, for plain HTTP, from the Host header (port from Host, else 80). A TLS connection without SNI cannot be
 * judged and is closed; plain HTTP without Host is refused as invalid-target.
 */
export async function handleTransparent(
  ctx: ProxyContext,
  pools: UpstreamPools,
  tls: () => TlsTerminator | null,
  plain: http.Server,
  socket: Socket,
): Promise<void> {
  socket.on("error", () => socket.destroy());
  socket.resume();
  const { result, buffered } = await readClientHello(socket, { timeoutMs: ctx.limits.headerTimeoutMs });
  if (socket.destroyed) return;
  if (result.status === "not-tls") {
    // Hand the connection, bytes already read included, to an HTTP server whose requests are routed by Host.
    socket.pause();
    socket.unshift(buffered);
    if (plain.listenerCount("request") === 0) {
      plain.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
        routeByHost(ctx, pools, req, res).catch((err: unknown) => {
          ctx.log.error({ event: "internal-error", err: String(err) }, "transparent request failed");
          res.destroy();
        });
      });
    }
    plain.emit("connection", socket);
    // readClientHello left the socket paused; the HTTP parser reads the replayed bytes once it flows.
    socket.resume();
    return;
  }
  const audit = startAudit("transparent", "TLS");
  audit.port = 443;
  if (result.status !== "ok" || result.sni === null) {
    audit.reason = "invalid-target";
    ctx.audit.finish(audit);
    socket.destroy();
    return;
  }
  const n = normaliseHost(result.sni);
  if (!n.ok) {
    audit.reason = "invalid-target";
    ctx.audit.finish(audit);
    socket.destroy();
    return;
  }
  const host = n.host;
  const hostStr = hostString(host);
  audit.host = hostStr;
  const deny = (code: DenyCode): void => {
    audit.allowed = false;
    audit.reason = code;
    audit.status = DENY_CODES[code].status;
    const t = tls();
    if (t) t.refuseInside(socket, buffered, hostStr, code, hostStr);
    else socket.destroy();
    ctx.audit.finish(audit);
  };
  if (ctx.paused) {
    audit.rule = "paused";
    deny("mode-deny-all");
    return;
  }
  const decision = await decideTarget(ctx, host, 443);
  audit.reason = decision.reason;
  audit.rule = decision.rule;
  if (!decision.allowed) {
    deny(decision.reason as DenyCode);
    return;
  }
  if (ctx.store.state.compiled.transformsFor(hostStr, 443).length > 0) {
    const t = tls();
    if (!t) return deny("upstream-tls-failed");
    audit.allowed = true;
    audit.intercepted = true;
    t.intercept(socket, buffered, host, 443, decision, audit);
    return;
  }
  let upstream: Socket;
  const relay = new UpstreamRelay();
  try {
    const d = await dialVetted(decision.addresses, 443, { timeoutMs: ctx.limits.connectTimeoutMs, allowHalfOpen: true, onread: relay.onread });
    upstream = d.socket;
    audit.address = d.address;
  } catch (err) {
    deny(err instanceof DialError ? err.code : "upstream-connect-failed");
    return;
  }
  audit.allowed = true;
  openTunnel(ctx, tls(), socket, upstream, host, 443, audit, { established: false, replay: buffered, peek: false, relay });
}

async function routeByHost(ctx: ProxyContext, pools: UpstreamPools, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const audit: AuditRecord = startAudit("transparent", req.method ?? "GET");
  const hostHeader = req.headers.host;
  const parsed = hostHeader ? parseHostPort(hostHeader, 80) : null;
  if (!parsed?.ok) {
    finishRefusal(ctx, audit, res, "invalid-target", "");
    req.resume();
    return;
  }
  let path = req.url ?? "/";
  if (/^https?:\/\//i.test(path)) {
    // Absolute-form on the transparent port: the path is taken, the Host header still decides (it is what
    // the upstream will see, so judging anything else would let the two disagree).
    const u = new URL(path);
    path = `${u.pathname}${u.search}`;
  }
  if (!path.startsWith("/")) {
    finishRefusal(ctx, audit, res, "invalid-target", hostString(parsed.host));
    req.resume();
    return;
  }
  await forwardPlain(ctx, pools, req, res, { host: parsed.host, port: parsed.port, path }, audit);
}

