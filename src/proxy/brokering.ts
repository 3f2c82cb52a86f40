import { CertificateAuthority, LeafCertificates } from "../tls/index.js";
import type { ProxyConfig } from "./config.js";
import { Interceptor } from "./intercept.js";
import type { EgressProxy } from "./server.js";
import { upstreamRoots } from "./upstream-tls.js";

/**
 * Credential brokering needs the CA: load it from --ca-dir, or create it on the first start, and install
 * the interceptor (which also answers SNI refusals inside TLS).
 */
export async function installBrokering(proxy: EgressProxy, config: ProxyConfig): Promise<{ caPem: string; close(): void }> {
  const { ca, created } = await CertificateAuthority.loadOrCreate(config.caDir);
  if (created) proxy.ctx.log.info({ event: "ca-created", dir: config.caDir, fingerprint: ca.fingerprintSha256 }, "created the interception CA");
  const leaves = new LeafCertificates(ca);
  const interceptor = new Interceptor(proxy.ctx, leaves, upstreamRoots(config.upstreamCa));
  proxy.setTlsTerminator(interceptor);
  return { caPem: ca.certPem, close: () => interceptor.close() };
}
