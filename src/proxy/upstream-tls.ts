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

/**
 * Keep-alive HTTPS agent for intercepted requests: TCP to a vetted address only, then TLS with the real
 * host name as SNI and for verification. The handshake completes (and the certificate is verified) before
 * the agent hands the socket to the request, so a failed verification means no byte of the request left.
 * ALPN offers http/1.1 only: the proxy speaks HTTP/1.1 on both legs.
 */
export class VettedHttpsAgent extends https.Agent {
  constructor(private readonly roots: string[]) {
    super({ keepAlive: true, keepAliveMsecs: 1000, maxFreeSockets: 64, scheduling: "lifo" });
  }

  override createConnection(options: unknown, callback?: (err: Error | null, stream: Duplex) => void): undefined {
    const o = options as VettedRequestOptions & { servername?: string };
    dialVetted(o.vetted, Number(o.port), { timeoutMs: o.connectTimeoutMs }).then(
      ({ socket }) => {
        const secure = tls.connect({
          socket,
          servername: o.servername,
          ca: this.roots,
          ALPNProtocols: ["http/1.1"],
          rejectUnauthorized: true,
          // The host name judged by the policy is what the certificate must name; node checks the SAN.
          checkServerIdentity: (host, cert) => tls.checkServerIdentity(o.servername ?? host, cert),
        });
        const fail = (err: Error & { code?: string }): void => {
          secure.destroy();
          if (err.code === "ECONNRESET" || err.code === "EPIPE") {
            callback?.(Object.assign(new Error("upstream closed during the TLS handshake"), { code: "upstream-connect-failed", cause: err }), undefined as unknown as Duplex);
          } else {
            callback?.(Object.assign(new UpstreamTlsError("upstream TLS handshake or certificate verification failed"), { cause: err }), undefined as unknown as Duplex);
          }
        };
        secure.once("error", fail);
        secure.once("secureConnect", () => {
          secure.off("error", fail);
          callback?.(null, secure);
        });
      },
      (err: Error) => callback?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}
