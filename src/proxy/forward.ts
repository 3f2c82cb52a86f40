import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { formatHostPort, hostString, normaliseHost } from "../net/hostport.js";
import { isDenyCode, type DenyCode } from "../policy/codes.js";
import type { Decision, Host } from "../policy/types.js";
import { applyTransforms, type ResolvedTransform } from "../live/secrets.js";
import { startAudit, type AuditRecord } from "./audit.js";
import { decideTarget, type ProxyContext } from "./context.js";
import { filterRawHeaders } from "./headers.js";
import { refuse } from "./refusal.js";
import type { Dispatcher } from "undici";
import type { UpstreamPools } from "./upstream-pool.js";
import type { UpstreamTls } from "./upstream-tls.js";

type DispatchController = Dispatcher.DispatchController;

export interface ForwardTarget {
  readonly host: Host;
  readonly port: number;
  /** origin-form path + query. */
  readonly path: string;
}

/** Parse an absolute-form request target (`http://host:port/path`): the only form a forward proxy accepts. */
export function parseAbsoluteTarget(url: string | undefined): ForwardTarget | { error: string } {
  if (!url || !/^http:\/\//i.test(url)) return { error: "expected an absolute http:// URL (use CONNECT for https)" };
  const fast = parseCommonTarget(url);
  if (fast !== null) return fast;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { error: "the URL cannot be parsed" };
  }
  const host = normaliseHost(parsed.hostname);
  if (!host.ok) return { error: host.error };
  const port = parsed.port === "" ? 80 : Number(parsed.port);
  return { host: host.host, port, path: `${parsed.pathname}${parsed.search}` || "/" };
}

/**
 * The common case without a WHATWG URL parse per request: a path and query made only of characters the URL
 * parser keeps as they are (no percent sign, no dot segment, nothing it would percent-encode, no empty query,
 * no fragment), so the path is the text itself; and an authority already seen, whose host and port (a pure
 * function of the authority text) are cached. Anything else returns null and takes the full parse above.
 */
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&()*+,;=:@/]*(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/?]+)?$/;
const DOT_SEGMENT = /\/\.\.?(?:\/|\?|$)/;
const authorities = new Map<string, { host: Host; port: number }>();
const AUTHORITY_CACHE_MAX = 1024;

function parseCommonTarget(url: string): ForwardTarget | null {
  const slash = url.indexOf("/", 7);
  if (slash < 0) return null;
  const authority = url.slice(7, slash);
  // A backslash is a path separator to the URL parser; '?' or '#' before the first '/' ends the authority.
  if (authority.includes("\\") || authority.includes("?") || authority.includes("#")) return null;
  const path = url.slice(slash);
  if (!PLAIN_PATH.test(path) || DOT_SEGMENT.test(path)) return null;
  let hit = authorities.get(authority);
  if (hit === undefined) {
    let parsed: URL;
    try {
      parsed = new URL(`http://${authority}/`);
    } catch {
      return null;
    }
    const host = normaliseHost(parsed.hostname);
    if (!host.ok) return null;
    hit = { host: host.host, port: parsed.port === "" ? 80 : Number(parsed.port) };
    if (authorities.size >= AUTHORITY_CACHE_MAX) authorities.clear();
    authorities.set(authority, hit);
  }
  return { host: hit.host, port: hit.port, path };
}

/** Forward proxy: `GET http://host/path` on the proxy listener. */
export async function handleProxyRequest(ctx: ProxyContext, pools: UpstreamPools, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const audit = startAudit("http", req.method ?? "GET");
  const target = parseAbsoluteTarget(req.url);
  if ("error" in target) {
    finishRefusal(ctx, audit, res, "invalid-target", "");
    req.resume();
    return;
  }
  await forwardPlain(ctx, pools, req, res, target, audit);
}

/** Plain-http forwarding shared by the forward and transparent listeners. */
export async function forwardPlain(
  ctx: ProxyContext,
  pools: UpstreamPools,
  req: IncomingMessage,
  res: ServerResponse,
  target: ForwardTarget,
  audit: AuditRecord,
): Promise<void> {
  const hostStr = hostString(target.host);
  audit.host = hostStr;
  audit.port = target.port;
  if (ctx.paused) {
    audit.rule = "paused";
    finishRefusal(ctx, audit, res, "mode-deny-all", hostStr);
    req.resume();
    return;
  }
  const state = ctx.store.state;
  const matches = state.compiled.transformsFor(hostStr, target.port);
  const transforms = matches.map((m) => state.transforms[m.index]!).filter(Boolean);
  if (transforms.some((t) => t.inject.size > 0)) {
    // Injected credentials only ever travel over verified TLS (DESIGN.md "Transforms"); refused before any
    // lookup, since no answer could make plain http acceptable.
    audit.rule = `transforms[${matches[0]!.index}].domain`;
    finishRefusal(ctx, audit, res, "inject-requires-tls", hostStr);
    req.resume();
    return;
  }
  const decision = await decideTarget(ctx, target.host, target.port);
  audit.reason = decision.reason;
  audit.rule = decision.rule;
  if (!decision.allowed) {
    finishRefusal(ctx, audit, res, decision.reason as DenyCode, hostStr);
    req.resume();
    return;
  }
  audit.allowed = true;
  relayRequest(ctx, pools, req, res, target, decision, transforms, audit);
}

/** Request headers for the upstream: hop-by-hop and transform-stripped names dropped, Host from the target, injections last. */
export function upstreamHeaders(req: IncomingMessage, target: ForwardTarget, transforms: readonly ResolvedTransform[], defaultPort: number): { headers: string[]; touched: string[] } {
  const { headers, names } = applyTransforms(filterRawHeaders(req.rawHeaders), transforms);
  headers.unshift("host", hostHeader(target.host, target.port, defaultPort));
  return { headers, touched: names };
}

/**
 * Send the request to a vetted address through an undici pool and relay the response with backpressure.
 * Used for plain http here and, with TLS parameters, for intercepted requests.
 */
export function relayRequest(
  ctx: ProxyContext,
  pools: UpstreamPools,
  req: IncomingMessage,
  res: ServerResponse,
  target: ForwardTarget,
  decision: Decision,
  transforms: readonly ResolvedTransform[],
  audit: AuditRecord,
  upstreamTls?: UpstreamTls,
): void {
  if (!req.socket.writable) {
    // The parser rejected this message's body while the decision was pending (a bad chunk or Transfer-Encoding
    // in the same packet as the head): the client already has its 400 and the socket is closing. Dialling now
    // would hand the upstream the head of a message that was never valid.
    audit.allowed = false;
    audit.reason = "invalid-target";
    audit.status = 400;
    ctx.audit.finish(audit);
    res.destroy(); // finish closing what the parser's 400 half-closed
    return;
  }
  const { headers, touched } = upstreamHeaders(req, target, transforms, upstreamTls ? 443 : 80);
  if (touched.length > 0) audit.transforms = touched;
  const pool = pools.get(decision.addresses, target.port, upstreamTls);
  let controller: DispatchController | null = null;
  let finished = false;
  // Set before the request is aborted: an abort reports back through onResponseError synchronously, and a
  // request the proxy cut on purpose is closed, not answered as if the upstream had failed.
  let abortedBy: Error | null = null;
  const abort = (err: Error): void => {
    abortedBy ??= err;
    // Still queued in the pool (no controller yet): onRequestStart aborts it before a byte is written.
    if (controller && !controller.aborted) controller.abort(err);
  };
  const tracked = {
    host: target.host,
    port: target.port,
    address: decision.addresses[0] ?? null,
    revoke: () => {
      ctx.metrics.revocations.inc();
      abort(new Error("revoked by a policy change"));
      res.destroy();
    },
  };
  const untrack = ctx.registry.add(tracked);
  audit.address = tracked.address;
  const bodyless = req.method === "GET" || req.method === "HEAD" || req.method === "OPTIONS" || req.method === "DELETE";
  const hasBody = !bodyless || req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
  if (!hasBody) req.resume();

  pool.dispatch(
    {
      path: target.path,
      method: req.method as Dispatcher.HttpMethod,
      headers,
      body: hasBody ? Readable.from(countedBody(req, audit), { objectMode: false }) : null,
      // Upgrades never take this path (the forward listener refuses them), so a plain request it is.
      upgrade: null,
    },
    {
      onRequestStart(c) {
        controller = c;
        if (abortedBy !== null) c.abort(abortedBy);
      },
      onResponseStart(c, statusCode, responseHeaders, statusMessage) {
        audit.status = statusCode;
        if (statusCode < 200) return; // 1xx informational: node's server sends its own 100-continue
        res.writeHead(statusCode, statusMessage, filterHeaderObject(responseHeaders));
        res.on("drain", () => c.resume());
      },
      onResponseData(c, chunk) {
        audit.bytes_down += chunk.length;
        if (!res.write(chunk)) c.pause();
      },
      onResponseEnd() {
        res.end();
      },
      onResponseError(_c, err: Error & { code?: string }) {
        if (abortedBy !== null) {
          res.destroy();
          return;
        }
        answerUpstreamFailure(res, audit, err.code && isDenyCode(err.code) ? err.code : mapUpstreamError(err.code), target.host);
      },
    },
  );

  res.on("close", () => {
    if (finished) return;
    finished = true;
    untrack();
    if (!res.writableFinished) abort(new Error("client went away"));
    ctx.audit.finish(audit);
  });
}

/**
 * The request body as undici pulls it, counted for the audit log. A 'data' listener here would switch the stream
 * to flowing mode before undici attaches its own, and every chunk that arrived with the headers (a small POST
 * body, typically) would be counted and dropped: the upstream would get `content-length: 0`.
 */
async function* countedBody(req: IncomingMessage, audit: AuditRecord): AsyncGenerator<Buffer> {
  for await (const chunk of req) {
    audit.bytes_up += (chunk as Buffer).length;
    yield chunk as Buffer;
  }
}

/** undici's response headers as an object for writeHead, hop-by-hop names removed. */
function filterHeaderObject(h: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const conn = h.connection;
  // Names listed in Connection are hop-by-hop too; most responses list only keep-alive/close, so no Set unless needed.
  let listed: Set<string> | null = null;
  if (conn !== undefined) {
    listed = new Set();
    for (const v of Array.isArray(conn) ? conn : [conn]) for (const t of v.split(",")) listed.add(t.trim().toLowerCase());
  }
  for (const k in h) {
    const v = h[k];
    if (v === undefined || HOP_BY_HOP_RESPONSE.has(k) || (listed !== null && listed.has(k))) continue;
    out[k] = v;
  }
  return out;
}

const HOP_BY_HOP_RESPONSE = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"]);

function mapUpstreamError(code: string | undefined): DenyCode {
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_CONNECT_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") return "upstream-timeout";
  return "upstream-connect-failed";
}

/** `Host` from the request target; the default port is left out as clients do (RFC 9110 §7.2). */
function hostHeader(host: Host, port: number, defaultPort: number): string {
  return port === defaultPort ? formatHostPort(host, port).replace(/:\d+$/, "") : formatHostPort(host, port);
}

/** An upstream failure: a refusal with its code while nothing was sent to the client, else a cut connection. */
function answerUpstreamFailure(res: ServerResponse, audit: AuditRecord, code: DenyCode, host: Host): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  audit.allowed = false;
  audit.reason = code;
  refuse(res, code, hostString(host));
  audit.status = res.statusCode;
}

export function finishRefusal(ctx: ProxyContext, audit: AuditRecord, res: ServerResponse, code: DenyCode, host: string): void {
  audit.allowed = false;
  audit.reason = code;
  refuse(res, code, host);
  audit.status = res.statusCode;
  ctx.audit.finish(audit);
}
