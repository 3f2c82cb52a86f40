import type { IncomingMessage } from "node:http";
import type net from "node:net";
import type { Socket } from "node:net";
import { dialVetted, DialError } from "../net/dial.js";
import { hostString, normaliseHost, parseHostPort } from "../net/hostport.js";
import { DENY_CODES, type DenyCode } from "../policy/codes.js";
import type { Decision, Host } from "../policy/types.js";
import { startAudit, type AuditRecord } from "./audit.js";
import { readClientHello } from "./clienthello.js";
import { decideTarget, type ProxyContext } from "./context.js";
import { refuseRaw } from "./refusal.js";
import { spliceTunnel, type SplicedTunnel } from "./splice-relay.js";

/** Terminates TLS towards the client to answer a refusal inside it, or to intercept (set once a CA exists). */
export interface TlsTerminator {
  /** Answer an HTTP refusal inside TLS on a tunnel whose 200 was already sent; closes the socket. */
  refuseInside(socket: Socket, replay: Buffer, serverName: string, code: DenyCode, host: string): void;
  /** Intercept an allowed tunnel to a host with transforms. */
  intercept(socket: Socket, head: Buffer, host: Host, port: number, decision: Decision, audit: AuditRecord): void;
}

const ESTABLISHED = "HTTP/1.1 200 Connection established\r\n\r\n";

/** One read's worth once data flows: what a stream read would allocate anyway (libuv suggests 64 KiB). */
const RELAY_CHUNK = 64 * 1024;
/** What a tunnel starts with: most tunnels carry little, and 1,000 idle ones should not hold 64 MiB. */
const RELAY_FIRST_CHUNK = 4 * 1024;

/**
 * Upstream → client relay of a raw tunnel without a buffer allocation per read. Node gives every stream read a
 * fresh 64 KiB buffer; V8 counts those as external memory and, every ~64 MiB, answers the pressure with a full
 * mark-compact of the whole heap: about a third of the proxy's CPU in a bulk tunnel (perf), where squid reuses
 * its buffers. Here the upstream socket reads into a buffer of its own (net.connect `onread`, passed through
 * dialVetted), each read is written to the client, and reading stops while the client still holds any of it
 * unwritten (the buffer is only read into again once the kernel has taken the previous chunk). That is also the
 * backpressure `pipe` gave: nothing is read from the upstream while the client is not keeping up. The buffer
 * starts small and is replaced once by a 64 KiB one the first time a read fills it (the old one may still be
 * referenced by a pending write; it is simply never read into again).
 */
export class UpstreamRelay {
  private buffer = Buffer.allocUnsafeSlow(RELAY_FIRST_CHUNK);
  private replaced = false;
  private src: Socket | null = null;
  private dst: Socket | null = null;
  /** Bytes that arrived before the client side was attached (copied: the buffer is reused at once). */
  private early: Buffer[] = [];
  private waiting = false;
  private detached = false;
  readonly onread: net.OnReadOpts;

  constructor() {
    // A function as `buffer`: Node asks it for the buffer to read into at connect and again after every read
    // (a non-buffer answer keeps the current one).
    const next = (): Uint8Array => {
      if (this.src === null && !this.replaced) return this.buffer; // at connect
      if (!this.replaced) return undefined as unknown as Uint8Array;
      this.replaced = false;
      return this.buffer;
    };
    this.onread = { buffer: next, callback: (n, buf) => this.onRead(n, buf as Buffer) };
  }

  /** Start relaying to `dst`; the upstream's FIN is passed on as `pipe` would. */
  attach(src: Socket, dst: Socket): void {
    this.src = src;
    this.dst = dst;
    for (const b of this.early) dst.write(b);
    this.early = [];
    src.once("end", () => {
      if (!this.detached) dst.end();
    });
  }

  /** Stop relaying (the tunnel is being refused or closed); later reads are dropped. */
  detach(): void {
    this.detached = true;
    this.early = [];
  }

  private onRead(n: number, buf: Buffer): boolean {
    if (this.detached) return false;
    if (n === buf.length && buf.length < RELAY_CHUNK && buf === this.buffer) {
      this.buffer = Buffer.allocUnsafeSlow(RELAY_CHUNK);
      this.replaced = true;
    }
    const dst = this.dst;
    if (dst === null) {
      this.early.push(Buffer.from(buf.subarray(0, n)));
      return true;
    }
    if (dst.destroyed) return false;
    dst.write(buf.subarray(0, n), this.afterWrite);
    if (dst.writableLength === 0) return true; // the kernel took it all: the buffer is free again
    this.waiting = true;
    return false; // stops reading until afterWrite
  }

  private readonly afterWrite = (): void => {
    if (!this.waiting || this.detached || this.dst === null || this.dst.writableLength > 0) return;
    this.waiting = false;
    this.src?.resume();
  };
}

/** `CONNECT host:port`: judge, dial the vetted address, then relay (or intercept, for transform hosts). */
export async function handleConnect(ctx: ProxyContext, tls: TlsTerminator | null, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const audit = startAudit("connect", "CONNECT");
  socket.on("error", () => socket.destroy());
  const parsed = parseHostPort(req.url ?? "");
  if (!parsed.ok) {
    refuseTunnel(ctx, audit, socket, "invalid-target", "");
    return;
  }
  const { host, port } = parsed;
  const hostStr = hostString(host);
  audit.host = hostStr;
  audit.port = port;
  if (ctx.paused) {
    audit.rule = "paused";
    refuseTunnel(ctx, audit, socket, "mode-deny-all", hostStr);
    return;
  }
  const decision = await decideTarget(ctx, host, port);
  audit.reason = decision.reason;
  audit.rule = decision.rule;
  if (!decision.allowed) {
    refuseTunnel(ctx, audit, socket, decision.reason as DenyCode, hostStr);
    return;
  }
  if (socket.destroyed) return;

  if (ctx.store.state.compiled.transformsFor(hostStr, port).length > 0) {
    if (!tls) {
      refuseTunnel(ctx, audit, socket, "upstream-tls-failed", hostStr);
      return;
    }
    audit.allowed = true;
    audit.intercepted = true;
    socket.write(ESTABLISHED);
    tls.intercept(socket, head, host, port, decision, audit);
    return;
  }

  let upstream: Socket;
  const relay = new UpstreamRelay();
  try {
    const dialled = await dialVetted(decision.addresses, port, { timeoutMs: ctx.limits.connectTimeoutMs, allowHalfOpen: true, onread: relay.onread });
    upstream = dialled.socket;
    audit.address = dialled.address;
  } catch (err) {
    refuseTunnel(ctx, audit, socket, err instanceof DialError ? err.code : "upstream-connect-failed", hostStr);
    return;
  }
  if (socket.destroyed) {
    upstream.destroy();
    return;
  }
  audit.allowed = true;
  audit.status = 200;
  openTunnel(ctx, tls, socket, upstream, host, port, audit, { established: true, replay: head, peek: true, relay });
}

/**
 * Relay an established tunnel. Upstream bytes flow to the client at once (server-speaks-first protocols must
 * not stall), but nothing from the client reaches the upstream until its first bytes are judged: a TLS
 * ClientHello whose SNI names another host is decided as that host too (no domain fronting past the policy).
 */
export function openTunnel(
  ctx: ProxyContext,
  tls: TlsTerminator | null,
  client: Socket,
  upstream: Socket,
  host: Host,
  port: number,
  audit: AuditRecord,
  opts: { established: boolean; replay: Buffer; peek: boolean; relay?: UpstreamRelay },
): void {
  ctx.metrics.activeTunnels.inc();
  let finished = false;
  /** Set while the native relay carries the tunnel: it must let go of the descriptors before they are closed. */
  let spliced: SplicedTunnel | null = null;
  const native = { up: 0, down: 0 };
  const tracked = {
    host,
    port,
    address: audit.address,
    revoke: () => {
      ctx.metrics.revocations.inc();
      finish();
    },
  };
  const untrack = ctx.registry.add(tracked);
  const finish = (): void => {
    if (finished) return;
    if (spliced !== null) {
      spliced.cancel(); // the native side reports back, and that report finishes the tunnel
      return;
    }
    finished = true;
    untrack();
    client.destroy();
    upstream.destroy();
    ctx.metrics.activeTunnels.dec();
    audit.bytes_up = upstream.bytesWritten + native.up;
    audit.bytes_down = upstream.bytesRead + native.down;
    ctx.audit.finish(audit);
  };
  /**
   * Client → upstream, once the client's first bytes are judged: handed to the native splice relay when it can
   * take the tunnel (both directions then move inside the kernel), else piped here.
   */
  const relayClient = (first: Buffer): void => {
    if (first.length > 0) upstream.write(first);
    const handed = spliceTunnel(client, upstream, ctx.limits.idleTimeoutMs, (bytes) => {
      native.up = bytes.up;
      native.down = bytes.down;
      spliced = null;
      finish();
    });
    ctx.metrics.tunnelRelays.inc({ relay: handed !== null ? "splice" : "js" });
    if (handed !== null) {
      spliced = handed;
      opts.relay?.detach();
      return;
    }
    upstream.resume();
    client.pipe(upstream);
  };

  let closes = 0;
  const watch = (s: Socket): void => {
    let ended = false;
    s.setTimeout(ctx.limits.idleTimeoutMs, finish);
    s.once("end", () => (ended = true));
    s.on("error", finish);
    s.once("close", () => {
      closes++;
      // After a clean FIN the other side is ending too (pipe called end() on it): let it flush.
      if (!ended || closes === 2) finish();
    });
  };
  watch(client);
  watch(upstream);
  if (opts.established) client.write(ESTABLISHED);
  // An upstream dialled with the relay's `onread` emits no 'data': it can only be relayed by the relay.
  if (opts.relay) opts.relay.attach(upstream, client);
  else upstream.pipe(client);
  if (!opts.peek) {
    relayClient(opts.replay);
    return;
  }
  if (opts.replay.length > 0) client.unshift(opts.replay);

  readClientHello(client, { timeoutMs: ctx.limits.idleTimeoutMs }).then(
    async ({ result, buffered }) => {
      if (finished) return;
      if (result.status === "ok" && result.sni !== null) {
        const denied = await sniDenied(ctx, result.sni, host, port);
        if (finished) return;
        if (denied) {
          audit.allowed = false;
          audit.reason = "sni-mismatch";
          audit.rule = `sni:${denied}`;
          untrack();
          if (opts.relay) opts.relay.detach();
          else upstream.unpipe(client);
          upstream.destroy();
          if (tls) tls.refuseInside(client, buffered, denied, "sni-mismatch", denied);
          else client.destroy();
          finished = true;
          ctx.metrics.activeTunnels.dec();
          ctx.audit.finish(audit);
          return;
        }
      }
      relayClient(buffered);
    },
    () => finish(),
  );
}

/** Returns the SNI host when it is not the tunnel's host and the policy denies it; null when acceptable. */
async function sniDenied(ctx: ProxyContext, sni: string, host: Host, port: number): Promise<string | null> {
  const n = normaliseHost(sni);
  if (!n.ok) return sni.slice(0, 255);
  const sniHost = hostString(n.host);
  if (sniHost === hostString(host)) return null;
  const decision = await decideTarget(ctx, n.host, port);
  return decision.allowed ? null : sniHost;
}

function refuseTunnel(ctx: ProxyContext, audit: AuditRecord, socket: Socket, code: DenyCode, host: string): void {
  audit.allowed = false;
  audit.reason = code;
  audit.status = DENY_CODES[code].status;
  refuseRaw(socket, code, host);
  ctx.audit.finish(audit);
}
