import http from "node:http";
import type { AddressInfo } from "node:net";
import type { IncomingMessage } from "node:http";
import { bearer, isLocalListen, tokenMatches } from "../admin/http-util.js";
import type { Logger } from "../telemetry/logger.js";
import type { LifecycleService } from "./service.js";
import { route, Router, type RouteDef } from "./routes/http.js";
import { leap0Routes } from "./routes/leap0.js";
import { openApiDocument } from "./routes/openapi.js";
import { openSandboxRoutes } from "./routes/opensandbox.js";
import { tensorlakeRoutes } from "./routes/tensorlake.js";

export interface ControlServerOptions {
  service: LifecycleService;
  /** HOST:PORT (port 0 = any free port). */
  listen: string;
  /** When set, every route but /healthz and /openapi.json needs it. */
  apiKey?: string;
  /** Request body cap; policies of 100,000 rules fit in the default. */
  maxBodyBytes?: number;
  log: Logger;
  version?: string;
}

/** Parse HOST:PORT (IPv6 in brackets). */
export function parseListen(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--listen ${spec}: expected HOST:PORT such as 127.0.0.1:8080`);
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * The control REST: one node:http server carrying the OpenSandbox, Leap0 and Tensorlake adapters over one
 * LifecycleService. Without an API key it refuses to listen anywhere but loopback.
 */
export class ControlServer {
  readonly routes: readonly RouteDef[];
  private readonly server: http.Server;
  private readonly router: Router;
  private address = "";

  constructor(private readonly opts: ControlServerOptions) {
    if (!opts.apiKey && !isLocalListen(opts.listen)) {
      throw new Error(
        `refusing to start the control API on ${opts.listen} without an API key: set --api-key-file or SANDBOX_EGRESS_API_KEY, or listen on loopback (127.0.0.1, ::1)`,
      );
    }
    parseListen(opts.listen);
    let openapi: Record<string, unknown> | null = null;
    const meta: RouteDef[] = [
      route({
        method: "GET",
        path: "/healthz",
        family: "meta",
        summary: "200 once the listener accepts and restart reconciliation is done",
        public: true,
        responses: { 200: ["ok"] },
        handler: () => ({ status: 200, body: { status: "ok" } }),
      }),
      route({
        method: "GET",
        path: "/openapi.json",
        family: "meta",
        summary: "This document",
        public: true,
        responses: { 200: ["OpenAPI 3.1"] },
        handler: () => ({ status: 200, body: (openapi ??= openApiDocument(this.routes, opts.version ?? "0.0.0")) }),
      }),
    ];
    this.routes = [...meta, ...openSandboxRoutes(opts.service), ...leap0Routes(opts.service), ...tensorlakeRoutes(opts.service)];
    this.router = new Router(this.routes, {
      maxBodyBytes: opts.maxBodyBytes ?? 32 * 1024 * 1024,
      authorize: (req) => this.authorize(req),
      authority: () => this.address,
      onError: (err, req) =>
        opts.log.error({ event: "control-error", method: req.method, path: (req.url ?? "").split("?")[0], err: err instanceof Error ? err.message : String(err) }, "request failed"),
    });
    // Leap0 create/restore and snapshot/pause answer when the work is done: allow them minutes, not seconds.
    this.server = http.createServer({ headersTimeout: 15_000, requestTimeout: 600_000, keepAliveTimeout: 30_000 }, (req, res) => {
      void this.router.handle(req, res);
    });
  }

  private authorize(req: IncomingMessage): boolean {
    const key = this.opts.apiKey;
    if (!key) return true;
    const h = req.headers;
    const leap0 = typeof h["leap0-authorization"] === "string" ? h["leap0-authorization"].replace(/^Bearer\s+/i, "").trim() : undefined;
    const osKey = typeof h["open-sandbox-api-key"] === "string" ? h["open-sandbox-api-key"].trim() : undefined;
    // Every candidate is compared (constant time each), whichever header the client chose.
    const results = [tokenMatches(osKey, key), tokenMatches(bearer(req), key), tokenMatches(leap0, key)];
    return results.some(Boolean);
  }

  /** Start listening; resolves with the actual HOST:PORT. */
  async listen(): Promise<string> {
    const { host, port } = parseListen(this.opts.listen);
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const a = this.server.address() as AddressInfo;
    this.address = a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    return this.address;
  }

  get listening(): string {
    return this.address;
  }

  /** Stop accepting; let in-flight requests finish for `graceMs`, then cut what is left. */
  async close(graceMs = 5000): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    const t = setTimeout(() => this.server.closeAllConnections(), graceMs);
    t.unref();
    await closed;
    clearTimeout(t);
  }
}
