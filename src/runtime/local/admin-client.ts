import http from "node:http";
import type { Policy } from "../../policy/types.js";
import { RuntimeError } from "../driver.js";

export interface AdminResponse {
  status: number;
  body: unknown;
}

export class AdminUnavailableError extends Error {}

/**
 * The driver talks to a sandbox's proxy only through its admin REST (CONTRACT.md "Admin REST"), over the
 * proxy's admin unix socket: the same API any operator could use, no proxy internals.
 */
export class AdminClient {
  constructor(
    private readonly socketPath: string,
    private readonly token: string,
    private readonly timeoutMs = 10_000,
  ) {}

  request(method: string, path: string, body?: unknown): Promise<AdminResponse> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          // A fresh connection per call: the proxy may have been restarted on a new socket inode since the last one.
          agent: false,
          headers: {
            host: "admin",
            authorization: `Bearer ${this.token}`,
            ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}),
          },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: unknown = text;
            try {
              parsed = text ? (JSON.parse(text) as unknown) : null;
            } catch {
              /* not JSON: keep the text */
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on("timeout", () => req.destroy(new AdminUnavailableError(`${method} ${path}: no answer from the proxy within ${this.timeoutMs} ms`)));
      req.on("error", (err) => reject(err instanceof AdminUnavailableError ? err : new AdminUnavailableError(`${method} ${path}: ${err.message}`, { cause: err })));
      req.end(payload);
    });
  }

  /**
   * PUT /v1/policy; resolves once the proxy enforces it (it answers after applying and revoking). A 400 becomes
   * a RuntimeError naming every field error.
   */
  async putPolicy(sandbox: string, policy: Policy): Promise<void> {
    let res: AdminResponse;
    try {
      res = await this.request("PUT", "/v1/policy", policy);
    } catch (err) {
      throw new RuntimeError("failed", `the proxy of sandbox ${sandbox} is unreachable: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (res.status === 200) return;
    const error = (res.body as { error?: { message?: string; errors?: { field: string; error: string }[] } } | null)?.error;
    if (res.status === 400) {
      const fields = (error?.errors ?? []).map((e) => `${e.field}: ${e.error}`);
      throw new RuntimeError("failed", `the proxy rejected the policy: ${fields.length > 0 ? fields.join("; ") : (error?.message ?? "invalid policy")}`, { cause: error });
    }
    throw new RuntimeError("failed", `the proxy answered ${res.status} to the policy update: ${error?.message ?? "no message"}`);
  }

  /** PUT /v1/state: while paused the proxy refuses everything and has closed every open connection. */
  async setPaused(paused: boolean): Promise<void> {
    const res = await this.request("PUT", "/v1/state", { paused });
    if (res.status !== 200) throw new AdminUnavailableError(`PUT /v1/state answered ${res.status}`);
  }

  async healthy(): Promise<boolean> {
    try {
      return (await this.request("GET", "/healthz")).status === 200;
    } catch {
      return false;
    }
  }
}
