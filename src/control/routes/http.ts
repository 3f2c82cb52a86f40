/**
 * A tiny router over node:http, so the three API families stay thin adapters. No framework: the routes are a
 * static table (also the source of the OpenAPI document), bodies are read with a cap and validated by zod, and
 * every error leaves in the caller's family's format.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { z } from "zod";
import { formatPath } from "../../policy/schema.js";
import type { FieldError } from "../../policy/types.js";
import { invalid, ServiceError, STATUS_OF, type ServiceErrorKind } from "../errors.js";

export type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
export type Family = "opensandbox" | "leap0" | "tensorlake" | "meta";

export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Send `body` as text/plain. */
  text?: boolean;
}

export interface RequestContext<B = unknown> {
  req: IncomingMessage;
  params: Record<string, string>;
  query: URLSearchParams;
  /** The validated body (the route's schema output), or undefined when the route takes none. */
  body: B;
  /** host:port the client reached this server on (for endpoint URLs). */
  authority: string;
}

export interface QueryDoc {
  name: string;
  description: string;
  schema: Record<string, unknown>;
  required?: boolean;
}

export interface RouteDef<S extends z.ZodType | undefined = z.ZodType | undefined> {
  method: Method;
  /** OpenAPI path template, e.g. /v1/sandboxes/{sandboxId}. */
  path: string;
  family: Family;
  summary: string;
  /** Request body schema; with `optionalBody` an empty body validates as {}. */
  body?: S;
  optionalBody?: boolean;
  query?: readonly QueryDoc[];
  /** Status → [description, response schema]. */
  responses: Record<number, readonly [string, z.ZodType?]>;
  /** No API key needed (health, the OpenAPI document). */
  public?: boolean;
  handler: (ctx: RequestContext<S extends z.ZodType ? z.output<S> : undefined>) => Promise<Reply> | Reply;
}

/** Preserves each route's body type for its handler while collecting routes of different shapes in one list. */
export function route<S extends z.ZodType | undefined = undefined>(def: RouteDef<S>): RouteDef {
  return def as unknown as RouteDef;
}

/** An HTTP-level failure (auth, size, JSON, routing) before the service is involved. */
export class HttpFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly errors: readonly FieldError[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const OS_CODES: Readonly<Record<ServiceErrorKind, string>> = {
  invalid: "INVALID_REQUEST",
  unsupported: "UNSUPPORTED",
  "not-found": "NOT_FOUND",
  conflict: "CONFLICT",
  failed: "INTERNAL_ERROR",
  unavailable: "UNAVAILABLE",
};

/** The body each family's clients expect for an error. */
export function errorBody(family: Family, code: string, message: string, errors: readonly FieldError[]): unknown {
  switch (family) {
    case "leap0":
      return errors.length > 0 ? { message, errors } : { message };
    case "tensorlake":
      return { message };
    default:
      return { code, message };
  }
}

export function familyOfPath(pathname: string): Family {
  if (pathname.startsWith("/v1/sandbox/") || pathname === "/v1/sandbox" || pathname.startsWith("/v1/snapshot/")) return "leap0";
  if (pathname.startsWith("/sandboxes/")) return "tensorlake";
  return "opensandbox";
}

/** zod issues → `{field, error}` with paths such as `networkPolicy.egress[2].target` (prefix for nested bodies). */
export function zodFieldErrors(issues: readonly z.core.$ZodIssue[], prefix: readonly (string | number)[] = []): FieldError[] {
  const out: FieldError[] = [];
  for (const i of issues) {
    const path = [...prefix, ...i.path.filter((s): s is string | number => typeof s !== "symbol")];
    if (i.code === "unrecognized_keys") {
      for (const k of i.keys) out.push({ field: formatPath([...path, k]), error: "unknown field" });
    } else if (i.code === "invalid_union" || i.code === "invalid_type") {
      out.push({ field: formatPath(path), error: i.message.replace(/^Invalid input: /, "") });
    } else {
      out.push({ field: formatPath(path), error: i.message });
    }
  }
  return out;
}

interface CompiledRoute {
  def: RouteDef;
  segments: readonly string[];
}

export interface RouterOptions {
  maxBodyBytes: number;
  /** Checks the API key; returns false to answer 401. */
  authorize: (req: IncomingMessage) => boolean;
  /** The listen address, for endpoint URLs when the request has no usable Host header. */
  authority: () => string;
  onError: (err: unknown, req: IncomingMessage) => void;
}

export class Router {
  private readonly compiled: CompiledRoute[];

  constructor(
    readonly routes: readonly RouteDef[],
    private readonly opts: RouterOptions,
  ) {
    this.compiled = routes.map((def) => ({ def, segments: splitPath(def.path) }));
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = sanitizeRequestId(req.headers["x-request-id"]) ?? randomUUID();
    let family: Family = "opensandbox";
    try {
      const url = new URL(req.url ?? "/", "http://control");
      family = familyOfPath(url.pathname);
      const segments = splitPath(url.pathname);
      const { match, allowed } = this.match(req.method ?? "GET", segments);
      if (!match) {
        if (!this.opts.authorize(req)) throw unauthorized();
        if (allowed.length > 0) {
          throw new HttpFailure(405, "METHOD_NOT_ALLOWED", `${req.method} is not allowed on ${url.pathname}; use ${allowed.join(", ")}.`, [], { allow: allowed.join(", ") });
        }
        throw new HttpFailure(404, "NOT_FOUND", `No route ${req.method} ${url.pathname}; GET /openapi.json lists them.`);
      }
      const { def, params } = match;
      family = def.family === "meta" ? family : def.family;
      if (!def.public && !this.opts.authorize(req)) throw unauthorized();
      const body = def.body ? await this.readBody(req, def) : (req.resume(), undefined);
      const reply = await def.handler({ req, params, query: url.searchParams, body, authority: this.authorityOf(req) });
      send(res, reply, requestId);
    } catch (err) {
      if (!(err instanceof HttpFailure) && !(err instanceof ServiceError)) this.opts.onError(err, req);
      this.fail(res, family, err, requestId);
    }
  }

  private match(method: string, segments: readonly string[]): { match: { def: RouteDef; params: Record<string, string> } | null; allowed: string[] } {
    const allowed: string[] = [];
    for (const r of this.compiled) {
      if (r.segments.length !== segments.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < r.segments.length; i++) {
        const pat = r.segments[i]!;
        const seg = segments[i]!;
        if (pat.startsWith("{")) {
          let v: string;
          try {
            v = decodeURIComponent(seg);
          } catch {
            ok = false;
            break;
          }
          if (v === "") {
            ok = false;
            break;
          }
          params[pat.slice(1, -1)] = v;
        } else if (pat !== seg) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      if (r.def.method === method || (method === "HEAD" && r.def.method === "GET")) return { match: { def: r.def, params }, allowed };
      allowed.push(r.def.method);
    }
    return { match: null, allowed };
  }

  private async readBody(req: IncomingMessage, def: RouteDef): Promise<unknown> {
    const max = this.opts.maxBodyBytes;
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > max) {
      req.resume();
      throw new HttpFailure(413, "BODY_TOO_LARGE", `The request body exceeds ${max} bytes.`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > max) throw new HttpFailure(413, "BODY_TOO_LARGE", `The request body exceeds ${max} bytes.`);
      chunks.push(chunk as Buffer);
    }
    const text = Buffer.concat(chunks).toString("utf8");
    let value: unknown;
    if (text.trim() === "") {
      if (!def.optionalBody) throw new HttpFailure(400, "INVALID_JSON", "The request body is empty; send a JSON document.", [{ field: "(body)", error: "empty" }]);
      value = {};
    } else {
      try {
        value = JSON.parse(text) as unknown;
      } catch {
        // Never echo the body: it may hold a policy with secrets.
        throw new HttpFailure(400, "INVALID_JSON", "The request body is not valid JSON.", [{ field: "(body)", error: "not valid JSON" }]);
      }
    }
    const r = def.body!.safeParse(value);
    if (!r.success) throw invalid(zodFieldErrors(r.error.issues));
    return r.data;
  }

  private authorityOf(req: IncomingMessage): string {
    const host = req.headers.host;
    // The client's own Host header is what it can reach us by; only a plain host[:port] is echoed back.
    if (host && /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host)) return host;
    return this.opts.authority();
  }

  private fail(res: ServerResponse, family: Family, err: unknown, requestId: string): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof HttpFailure) {
      send(res, { status: err.status, body: errorBody(family, err.code, err.message, err.errors), headers: err.headers }, requestId);
      return;
    }
    if (err instanceof ServiceError) {
      send(res, { status: STATUS_OF[err.kind], body: errorBody(family, OS_CODES[err.kind], err.message, err.errors) }, requestId);
      return;
    }
    if (isStorageFull(err)) {
      // A full disk is the operator's to fix, and says so; nothing was half-written (SQLite rolls back).
      send(res, { status: 507, body: errorBody(family, "INSUFFICIENT_STORAGE", `The control module's data directory is full (no space left on the device); nothing was changed. Free space and retry (request id ${requestId}).`, []) }, requestId);
      return;
    }
    // Internal messages can carry paths or values: they are logged (onError), the client gets a fixed sentence.
    send(res, { status: 500, body: errorBody(family, "INTERNAL_ERROR", `The control module failed to handle this request (request id ${requestId}).`, []) }, requestId);
  }
}

function unauthorized(): HttpFailure {
  return new HttpFailure(401, "UNAUTHORIZED", "Send the API key as OPEN-SANDBOX-API-KEY: K, Authorization: Bearer K, or leap0-authorization: K.");
}

function sanitizeRequestId(v: string | string[] | undefined): string | undefined {
  return typeof v === "string" && /^[A-Za-z0-9._:-]{1,128}$/.test(v) ? v : undefined;
}

function splitPath(p: string): string[] {
  // Leap0 documents trailing slashes (/v1/sandbox/{id}/); both spellings are the same route.
  return p.split("/").filter((s) => s !== "");
}

function send(res: ServerResponse, reply: Reply, requestId: string): void {
  const headers: Record<string, string | number> = { "x-request-id": requestId, ...reply.headers };
  if (reply.body === undefined) {
    // An explicit zero length: clients such as openapi-fetch (the OpenSandbox SDK) only skip JSON parsing of an
    // empty 202 when they see it; chunked encoding would make them parse "" and throw.
    headers["content-length"] = 0;
    res.writeHead(reply.status, headers);
    res.end();
    return;
  }
  const text = reply.text ? String(reply.body) : JSON.stringify(reply.body);
  headers["content-type"] = reply.text ? "text/plain; charset=utf-8" : "application/json";
  headers["content-length"] = Buffer.byteLength(text);
  res.writeHead(reply.status, headers);
  res.end(text);
}

/** SQLITE_FULL from better-sqlite3, or ENOSPC/EDQUOT from the file system. */
function isStorageFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "SQLITE_FULL" || code === "ENOSPC" || code === "EDQUOT";
}
