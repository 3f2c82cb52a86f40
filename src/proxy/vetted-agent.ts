import http from "node:http";
import type { Duplex } from "node:stream";
import { dialVetted } from "../net/dial.js";

/** Request options that carry the addresses the policy judged usable, in dial order. */
export interface VettedRequestOptions extends http.RequestOptions {
  vetted: readonly string[];
  connectTimeoutMs: number;
}

/**
 * A keep-alive agent that can only dial addresses the policy judged: the request's `host` is the first
 * vetted address (so the pool is keyed by what was judged, never by a name), and a new connection falls
 * back only along the vetted list. Node's Agent accepts an asynchronous createConnection through its
 * callback argument (lib/_http_agent.js, createSocket → oncreate).
 */
export class VettedAgent extends http.Agent {
  constructor(opts: http.AgentOptions = {}) {
    super({ keepAlive: true, keepAliveMsecs: 1000, maxFreeSockets: 64, scheduling: "lifo", ...opts });
  }

  override createConnection(options: unknown, callback?: (err: Error | null, stream: Duplex) => void): undefined {
    const o = options as VettedRequestOptions;
    dialVetted(o.vetted, Number(o.port), { timeoutMs: o.connectTimeoutMs }).then(
      ({ socket }) => callback?.(null, socket),
      (err: Error) => callback?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}
