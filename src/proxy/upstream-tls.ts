import https from "node:https";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import { readFileSync } from "node:fs";
import { dialVetted } from "../net/dial.js";
import type { VettedRequestOptions } from "./vetted-agent.js";

/** The roots upstream certificates are verified against: the system's (Node's bundle) plus `--upstream-ca`. */
export function upstreamRoots(extraFile?: string): string[] {
  const roots = [...tls.rootCertificates];
  if (extraFile) roots.push(readFileSync(extraFile, "utf8"));
  return roots;
}

export class UpstreamTlsError extends Error {
  readonly code = "upstream-tls-failed";
}

/** Options of one upstream TLS connection: the vetted addresses plus the name the certificate must carry. */
export type UpstreamTlsOptions = VettedRequestOptions & { servername?: string };

/**
 * Keep-alive HTTPS agent for intercepted requests: TCP to a vetted address only, then TLS with the real
 * host name as SNI and for verification. The handshake completes (and the certificate is verified) before
 * the agent hands the socket to the request, so a failed verification means no byte of the request left.
 * ALPN offers http/1.1 only: the proxy speaks HTTP/1.1 on both legs.
 *
 * Sockets are pooled by Node's Agent under a key made of the request's host (the first vetted address), port
 * and servername, so a connection verified for one name is never reused for another.
 */
export class VettedHttpsAgent extends https.Agent {
  /**
   * Built once: passing `ca: [...]` to every tls.connect would parse the whole root bundle (~150 certificates,
   * milliseconds) for each new upstream connection.
   */
  private readonly secureContext: tls.SecureContext;

  constructor(roots: readonly string[]) {
    // Idle upstream connections are bounded in time (an idle free socket is closed after 30 s) and in number
    // (across all hosts), so a sandbox visiting many brokered hosts cannot pile up sockets and memory.
    super({ keepAlive: true, keepAliveMsecs: 1000, maxFreeSockets: 64, maxTotalSockets: 1024, timeout: 30_000, scheduling: "lifo" });
    this.secureContext = tls.createSecureContext({ ca: [...roots] });
  }

  override createConnection(options: unknown, callback?: (err: Error | null, stream: Duplex) => void): undefined {
    const o = options as UpstreamTlsOptions;
    const fail = (err: Error): void => callback?.(err, undefined as unknown as Duplex);
    dialVetted(o.vetted, Number(o.port), { timeoutMs: o.connectTimeoutMs }).then(({ socket }) => {
      // The name judged by the policy is what the certificate must name. Without one (an IP literal target),
      // the dialled address is what an iPAddress SAN must match.
      const identity = o.servername ?? String(o.host);
      const secure = tls.connect({
        socket,
        servername: o.servername,
        secureContext: this.secureContext,
        ALPNProtocols: ["http/1.1"],
        rejectUnauthorized: true,
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(identity, cert),
      });
      // Errors of the wrapped TCP socket surface on the TLS socket; this keeps a late one from being unhandled.
      socket.on("error", () => secure.destroy());
      // A server that accepts TCP and then stalls the handshake is a timeout, not a hang until the response timer.
      const timer = setTimeout(() => {
        secure.destroy(Object.assign(new Error("upstream TLS handshake timed out"), { code: "upstream-timeout" }));
      }, o.connectTimeoutMs);
      const onError = (err: Error & { code?: string }): void => {
        clearTimeout(timer);
        secure.destroy();
        socket.destroy();
        if (err.code === "upstream-timeout") fail(Object.assign(new Error("upstream TLS handshake timed out"), { code: "upstream-timeout" }));
        else if (err.code === "ECONNRESET" || err.code === "EPIPE") {
          fail(Object.assign(new Error("upstream closed during the TLS handshake"), { code: "upstream-connect-failed", cause: err }));
        } else {
          fail(new UpstreamTlsError("upstream TLS handshake or certificate verification failed", { cause: err }));
        }
      };
      secure.once("error", onError);
      secure.once("secureConnect", () => {
        clearTimeout(timer);
        secure.off("error", onError);
        // rejectUnauthorized already failed the handshake otherwise; checked again so that a change of the
        // options above can never hand an unverified socket to a request carrying a secret.
        if (!secure.authorized) {
          onError(Object.assign(new Error(String(secure.authorizationError)), { code: "CERT_UNVERIFIED" }));
          return;
        }
        callback?.(null, secure);
      });
    }, fail);
    return undefined;
  }
}
