import http, { type IncomingMessage, type ServerResponse } from "node:http";
import { parseHostPort, hostString } from "../net/hostport.js";
import { redactPolicy } from "../live/secrets.js";
import type { PolicyState } from "../live/policy-store.js";
import { deleteRules, osMode, patchRules, toOpenSandbox, type OsRule } from "../policy/opensandbox.js";
import type { Policy } from "../policy/types.js";
import { decideTarget } from "../proxy/context.js";
import type { EgressProxy } from "../proxy/server.js";
import { formatAddress, listenOn } from "../proxy/server.js";
import { bearer, HttpError, isLocalListen, readJson, sendJson, tokenMatches } from "./http-util.js";

export interface AdminOptions {
  listen: string;
  token?: string;
  /** The CA certificate, once brokering has one. */
  caPem?: () => string | null;
  maxBodyBytes?: number;
}

/**
 * The admin REST of one proxy (CONTRACT.md "Admin REST"): policy get/put/validate, decide, CA, metrics, and
 * the OpenSandbox egress-sidecar routes. Everything an operator or the control module does to a proxy goes
 * through here.
 */
export class AdminServer {
  private readonly server: http.Server;
  private address = "";

  constructor(private readonly proxy: EgressProxy, private readonly opts: AdminOptions) {
    if (!opts.token && !isLocalListen(opts.listen)) {
      throw new Error(`refusing to start the admin API on ${opts.listen} without a token: set --admin-token-file or SANDBOX_EGRESS_ADMIN_TOKEN, or listen on loopback or unix:PATH`);
    }
    this.server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
  }

  async listen(): Promise<string> {
    const info = await listenOn(this.server, this.opts.listen);
    this.proxy.addSelfAddress(info);
    this.address = formatAddress(info);
    return this.address;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
  }

  private get ctx() {
    return this.proxy.ctx;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://admin");
    const route = `${req.method} ${url.pathname}`;
    if (route === "GET /healthz") return sendJson(res, 200, { status: "ok" });
    if (route === "GET /v1/ca.pem") {
      const pem = this.opts.caPem?.() ?? null;
      if (!pem) throw new HttpError(404, "no-ca", "This proxy has no CA yet.");
      res.writeHead(200, { "content-type": "application/x-pem-file", "content-length": Buffer.byteLength(pem) });
      res.end(pem);
      return;
    }
    if (this.opts.token && !tokenMatches(bearer(req), this.opts.token)) {
      throw new HttpError(401, "unauthorized", "Send Authorization: Bearer <admin token>.");
    }
    const max = this.opts.maxBodyBytes ?? 16 * 1024 * 1024;
    switch (route) {
      case "GET /metrics": {
        const text = await this.ctx.metrics.registry.metrics();
        res.writeHead(200, { "content-type": this.ctx.metrics.registry.contentType });
        res.end(text);
        return;
      }
      case "GET /v1/policy":
        return this.sendPolicy(res, this.ctx.store.state);
      case "PUT /v1/policy": {
        const body = await readJson(req, max);
        const ifMatch = parseIfMatch(req.headers["if-match"]);
        return this.put(res, body, ifMatch);
      }
      case "POST /v1/policy/validate": {
        const body = await readJson(req, max);
        const v = this.ctx.store.validate(body);
        if (!v.ok) throw invalidPolicy(v.errors);
        return sendJson(res, 200, { valid: true });
      }
      case "POST /v1/decide":
        return this.decide(res, await readJson(req, max));
      case "GET /v1/state":
        return sendJson(res, 200, { paused: this.ctx.paused, revision: this.ctx.store.state.revision });
      case "PUT /v1/state": {
        const body = (await readJson(req, max)) as { paused?: unknown };
        if (typeof body?.paused !== "boolean") {
          throw new HttpError(400, "invalid-request", "paused: expected true or false", { errors: [{ field: "paused", error: "expected true or false" }] });
        }
        this.proxy.setPaused(body.paused);
        this.ctx.log.info({ event: "paused", paused: body.paused }, body.paused ? "egress paused" : "egress resumed");
        return sendJson(res, 200, { paused: this.ctx.paused, revision: this.ctx.store.state.revision });
      }
      // OpenSandbox egress-sidecar compatibility (@alibaba-group/opensandbox getEgressPolicy / patchEgressRules / deleteEgressRules).
      case "GET /policy":
        return this.sendOsPolicy(res, this.ctx.store.state.policy);
      case "PATCH /policy": {
        const rules = parseOsRules(await readJson(req, max));
        const base = this.ctx.store.state;
        return this.osUpdate(res, patchRules(base.policy, rules), base.revision);
      }
      case "DELETE /policy": {
        const targets = await readJson(req, max);
        if (!Array.isArray(targets) || !targets.every((t) => typeof t === "string")) {
          throw new HttpError(400, "invalid-request", "The body must be a JSON array of target strings.", { errors: [{ field: "(body)", error: "expected an array of strings" }] });
        }
        const base = this.ctx.store.state;
        return this.osUpdate(res, deleteRules(base.policy, targets as string[]), base.revision);
      }
      default:
        throw new HttpError(404, "not-found", `No route ${req.method} ${url.pathname}.`);
    }
  }

  private sendPolicy(res: ServerResponse, state: PolicyState): void {
    sendJson(res, 200, { revision: state.revision, policy: redactPolicy(state.policy) }, { etag: `"${state.revision}"` });
  }

  private async put(res: ServerResponse, body: unknown, ifMatch: number | undefined): Promise<void> {
    const result = await this.ctx.store.put(body, ifMatch);
    if (!result.ok) {
      if (result.status === 412) {
        throw new HttpError(412, "revision-mismatch", `If-Match names revision ${ifMatch}, but revision ${result.current} is in force; GET the policy and retry.`);
      }
      if (result.status === 507) throw writeFailed(result.errno, result.current);
      throw invalidPolicy(result.errors);
    }
    this.sendPolicy(res, result.state);
  }

  /**
   * `next` was computed from revision `base`; it is applied only if that is still the revision in force, so
   * that two concurrent PATCHes cannot both answer 200 while the second silently drops the first one's rules.
   */
  private async osUpdate(res: ServerResponse, next: Policy, base: number): Promise<void> {
    const result = await this.ctx.store.put(next, base);
    if (!result.ok) {
      if (result.status === 400) throw invalidPolicy(result.errors);
      if (result.status === 507) throw writeFailed(result.errno, result.current);
      throw new HttpError(409, "conflict", "The policy changed concurrently; retry.");
    }
    this.sendOsPolicy(res, result.state.policy);
  }

  private sendOsPolicy(res: ServerResponse, p: Policy): void {
    sendJson(res, 200, { status: "ok", mode: osMode(p), enforcementMode: "proxy", policy: toOpenSandbox(p) });
  }

  private async decide(res: ServerResponse, body: unknown): Promise<void> {
    const b = body as { host?: unknown; port?: unknown };
    if (typeof b?.host !== "string") {
      throw new HttpError(400, "invalid-request", "host: expected a string such as \"api.github.com\"", { errors: [{ field: "host", error: "expected a string" }] });
    }
    if (b.port !== undefined && (typeof b.port !== "number" || !Number.isInteger(b.port) || b.port < 1 || b.port > 65535)) {
      throw new HttpError(400, "invalid-request", "port: expected an integer 1..65535", { errors: [{ field: "port", error: "expected an integer 1..65535" }] });
    }
    const parsed = parseHostPort(b.host, typeof b.port === "number" ? b.port : 443);
    if (!parsed.ok) {
      return sendJson(res, 200, { allowed: false, reason: "invalid-target", rule: null, host: b.host, port: b.port ?? null, addresses: [], judged: [], message: parsed.error });
    }
    // "host":"x:22","port":443 names two targets; answering for either would mislead whoever asked.
    if (typeof b.port === "number" && parsed.port !== b.port) {
      throw new HttpError(400, "invalid-request", `port: ${b.port} contradicts the port ${parsed.port} given in host; give the port once`, {
        errors: [{ field: "port", error: "contradicts the port given in host" }],
      });
    }
    const port = parsed.port;
    const d = await decideTarget(this.ctx, parsed.host, port);
    sendJson(res, 200, {
      allowed: d.allowed,
      reason: d.reason,
      rule: d.rule,
      host: hostString(parsed.host),
      port,
      addresses: d.judged.map((j) => j.address),
      judged: d.judged,
    });
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof HttpError) {
      // A refused or oversized request may still be sending its body: close instead of reading it all to
      // keep the connection alive (an unauthenticated client could otherwise stream gigabytes at us).
      const close = err.status === 401 || err.status === 413;
      sendJson(res, err.status, { error: { code: err.code, message: err.message, ...err.extra } }, close ? { connection: "close" } : {});
      return;
    }
    // Internal messages can carry paths or values: log them, answer a fixed sentence.
    this.ctx.log.error({ event: "admin-error", err: err instanceof Error ? err.message : String(err) }, "admin request failed");
    sendJson(res, 500, { error: { code: "internal-error", message: "The admin API failed to handle this request." } });
  }
}

function invalidPolicy(errors: readonly { field: string; error: string }[]): HttpError {
  const first = errors[0];
  const message = first ? `${first.field}: ${first.error}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ""}` : "invalid policy";
  return new HttpError(400, "invalid-policy", message, { errors });
}

/** The policy file could not be written. The message names the cause (errno), never the path or the policy. */
function writeFailed(errno: string, revision: number): HttpError {
  const why =
    errno === "ENOSPC" || errno === "EDQUOT"
      ? "no space left on the device"
      : errno === "EROFS"
        ? "the file system is read-only"
        : errno === "EACCES" || errno === "EPERM"
          ? "permission denied"
          : "the write failed";
  return new HttpError(
    errno === "ENOSPC" || errno === "EDQUOT" ? 507 : 500,
    "policy-write-failed",
    `Cannot write the policy file: ${why} (${errno}). The policy in force is unchanged (revision ${revision}).`,
  );
}

function parseIfMatch(h: string | undefined): number | undefined {
  if (h === undefined || h.trim() === "*") return undefined;
  const m = /^\s*(?:W\/)?"?(\d+)"?\s*$/.exec(h);
  if (!m) throw new HttpError(400, "invalid-request", 'If-Match: expected a revision such as "3" (from the ETag of GET /v1/policy).');
  return Number(m[1]);
}

function parseOsRules(body: unknown): OsRule[] {
  if (!Array.isArray(body)) {
    throw new HttpError(400, "invalid-request", 'The body must be a JSON array of {"action":"allow"|"deny","target":"…"}.', { errors: [{ field: "(body)", error: "expected an array" }] });
  }
  return body.map((r: unknown, i) => {
    const rule = r as { action?: unknown; target?: unknown };
    if (rule?.action !== "allow" && rule?.action !== "deny") {
      throw new HttpError(400, "invalid-request", `[${i}].action: expected "allow" or "deny"`, { errors: [{ field: `[${i}].action`, error: 'expected "allow" or "deny"' }] });
    }
    if (typeof rule.target !== "string" || rule.target === "") {
      throw new HttpError(400, "invalid-request", `[${i}].target: expected a domain or CIDR`, { errors: [{ field: `[${i}].target`, error: "expected a domain or CIDR" }] });
    }
    return { action: rule.action, target: rule.target };
  });
}
