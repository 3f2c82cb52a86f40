import tls from "node:tls";
import { readFileSync } from "node:fs";
import { dialVetted, type DialResult } from "../net/dial.js";

/** The roots upstream certificates are verified against: the system's (Node's bundle) plus `--upstream-ca`. */
export function upstreamRoots(extraFile?: string): string[] {
  const roots = [...tls.rootCertificates];
  if (extraFile) roots.push(readFileSync(extraFile, "utf8"));
  return roots;
}

/**
 * One SecureContext holding the roots, built once per root set: `ca: [...]` on every tls.connect would parse
 * the whole bundle (~150 certificates, milliseconds of CPU and a fresh X509 store) for each new upstream
 * connection.
 */
export function upstreamContext(roots: readonly string[]): tls.SecureContext {
  return tls.createSecureContext({ ca: [...roots] });
}

/** TLS parameters of an upstream leg (intercepted requests). */
export interface UpstreamTls {
  /** The host the policy judged, as text: the SNI when it is a name, and the identity the certificate must carry. */
  readonly host: string;
  readonly isName: boolean;
  readonly context: tls.SecureContext;
}

type Coded = Error & { code: "upstream-tls-failed" | "upstream-connect-failed" | "upstream-timeout" };

function coded(code: Coded["code"], message: string, cause?: unknown): Coded {
  return Object.assign(new Error(message, cause === undefined ? undefined : { cause }), { code });
}

/**
 * TCP to a vetted address only, then TLS with the judged host as SNI and for verification. The promise settles
 * after the handshake (and the certificate check), so a failed verification means no byte of a request left.
 * ALPN offers http/1.1 only: the proxy speaks HTTP/1.1 on both legs. Errors carry the refusal code.
 */
export async function connectVettedTls(addresses: readonly string[], port: number, t: UpstreamTls, timeoutMs: number): Promise<DialResult & { socket: tls.TLSSocket }> {
  const { socket, address } = await dialVetted(addresses, port, { timeoutMs });
  return new Promise((resolve, reject) => {
    const secure = tls.connect({
      socket,
      servername: t.isName ? t.host : undefined,
      secureContext: t.context,
      ALPNProtocols: ["http/1.1"],
      rejectUnauthorized: true,
      // An IP-literal target has no SNI; its certificate must then carry the address as an iPAddress SAN.
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(t.host, cert),
    });
    // Errors of the wrapped TCP socket surface on the TLS socket; this keeps a late one from being unhandled.
    socket.on("error", () => secure.destroy());
    // A server that accepts TCP and then stalls the handshake is a timeout, not a hang until the response timer.
    const timer = setTimeout(() => fail(coded("upstream-timeout", "upstream TLS handshake timed out")), timeoutMs);
    function fail(err: Error & { code?: string }): void {
      clearTimeout(timer);
      secure.destroy();
      socket.destroy();
      if (err.code === "upstream-timeout") reject(err);
      else if (err.code === "ECONNRESET" || err.code === "EPIPE") reject(coded("upstream-connect-failed", "upstream closed during the TLS handshake", err));
      else reject(coded("upstream-tls-failed", "upstream TLS handshake or certificate verification failed", err));
    }
    secure.once("error", fail);
    secure.once("secureConnect", () => {
      clearTimeout(timer);
      secure.off("error", fail);
      // rejectUnauthorized already failed the handshake otherwise; checked again so that a change of the
      // options above can never hand an unverified socket to a request carrying a secret.
      if (!secure.authorized) {
        fail(Object.assign(new Error(String(secure.authorizationError)), { code: "CERT_UNVERIFIED" }));
        return;
      }
      resolve({ socket: secure, address });
    });
  });
}
