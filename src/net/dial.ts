/**
 * Dial one of the addresses the policy judged usable, in the order given. This is the only place the proxy opens
 * upstream TCP connections, and it never resolves: a hostname here would reopen the DNS-rebinding hole that
 * resolve-then-judge closes (DESIGN.md "Decision", step 4; smokescreen's dialContext does the same).
 */
import net from "node:net";

export type DialErrorCode = "upstream-connect-failed" | "upstream-timeout";

/** Every vetted address failed. The message never contains an address (CONTRACT.md "Proxy behaviour"). */
export class DialError extends Error {
  readonly code: DialErrorCode;
  constructor(code: DialErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DialError";
    this.code = code;
  }
}

export interface DialOptions {
  /** Per-attempt connect timeout in ms. */
  timeoutMs: number;
  /** Aborting ends the dial at once with upstream-timeout: the caller's own deadline ran out or it gave up. */
  signal?: AbortSignal;
  /** Default true: proxied traffic is latency-bound request/response, and the client already coalesces writes. */
  noDelay?: boolean;
  /** Keep our side writable after the upstream's FIN (raw tunnels only). Default false. */
  allowHalfOpen?: boolean;
  /**
   * Read into a caller-owned buffer instead of a fresh allocation per read (net.connect's `onread`); the socket
   * then emits no 'data'. Raw tunnels use it: see UpstreamRelay in src/proxy/tunnel.ts.
   */
  onread?: net.OnReadOpts;
}

export interface DialResult {
  socket: net.Socket;
  /** The address that accepted: the audit log's `address`. */
  address: string;
}

type Attempt = { ok: true; socket: net.Socket } | { ok: false; timeout: boolean; aborted: boolean; error: unknown };

/**
 * Connect to the first address that accepts; fall back only to the next address of `addresses`. Attempts are
 * sequential (no happy-eyeballs racing): the list is short, already ordered by the resolver, and sequential
 * attempts keep exactly one half-open socket at a time. The returned socket has no listeners of ours left; the
 * caller must attach its 'error' handler before yielding to the event loop.
 */
export async function dialVetted(addresses: readonly string[], port: number, opts: DialOptions): Promise<DialResult> {
  // Programming errors, not upstream failures: refuse before dialling anything.
  if (!addresses.every((a) => net.isIP(a) !== 0 && !a.includes("%"))) {
    throw new TypeError("dialVetted accepts only IP addresses that the policy judged, never host names");
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError("dialVetted: port out of range");
  if (addresses.length === 0) throw new DialError("upstream-connect-failed", "No address to connect to.");

  let everyFailureTimedOut = true;
  let lastError: unknown;
  for (const address of addresses) {
    const attempt = await connectOnce(address, port, opts);
    if (attempt.ok) return { socket: attempt.socket, address };
    if (attempt.aborted) {
      throw new DialError("upstream-timeout", "The connection attempt was abandoned before any address accepted.", {
        cause: attempt.error,
      });
    }
    everyFailureTimedOut &&= attempt.timeout;
    lastError = attempt.error;
  }
  const n = addresses.length;
  const which = n === 1 ? "The only permitted address" : `None of the ${n} permitted addresses`;
  // The cause is Node's own error, whose message does contain the address: for debug logs, never for clients.
  if (everyFailureTimedOut) {
    throw new DialError("upstream-timeout", `${which} accepted the connection in time.`, { cause: lastError });
  }
  throw new DialError("upstream-connect-failed", `${which} accepted the connection.`, { cause: lastError });
}

function connectOnce(address: string, port: number, opts: DialOptions): Promise<Attempt> {
  return new Promise<Attempt>((resolve) => {
    const { signal } = opts;
    if (signal?.aborted) {
      resolve({ ok: false, timeout: true, aborted: true, error: signal.reason });
      return;
    }
    const socket = net.connect({
      host: address,
      port,
      noDelay: opts.noDelay ?? true,
      // With an IP literal Node never calls lookup; this lookup makes that a guarantee rather than an assumption.
      lookup: (_hostname, _options, callback) => {
        callback(new Error("dialVetted never resolves names"), "", 0);
      },
      autoSelectFamily: false,
      // Tunnels relay a half-close (a FIN one way while the other keeps flowing), so they ask for it; a pooled
      // HTTP connection must not: an upstream closing an idle keep-alive socket would leave ours in CLOSE-WAIT.
      allowHalfOpen: opts.allowHalfOpen ?? false,
      ...(opts.onread ? { onread: opts.onread } : {}),
    });

    const finish = (attempt: Attempt): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.off("connect", onConnect);
      socket.off("error", onError);
      if (!attempt.ok) {
        socket.on("error", () => undefined); // a late error from a socket we gave up on must not crash the sidecar
        socket.destroy();
      }
      resolve(attempt);
    };
    const onConnect = (): void => finish({ ok: true, socket });
    const onError = (error: unknown): void => finish({ ok: false, timeout: false, aborted: false, error });
    const onAbort = (): void => finish({ ok: false, timeout: true, aborted: true, error: signal?.reason });
    // A timer of our own rather than socket.setTimeout, which would stay armed on the returned socket.
    const timer = setTimeout(
      () => finish({ ok: false, timeout: true, aborted: false, error: new Error("connect timed out") }),
      opts.timeoutMs,
    );

    socket.once("connect", onConnect);
    socket.once("error", onError);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
