// TLS fixtures for the brokering workloads: a throwaway upstream CA and one server certificate made with the
// openssl CLI (independent of src/tls, like test/helpers/tls-upstream.ts), and hosts(5) files that map the
// bench's made-up names to 127.0.0.1 (for sandbox-egress --hosts; mitmproxy gets the same map through the
// addon bench/lib/mitm_hosts.py, the Node client through its own lookup).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { commandExists } from "./peers.mjs";

/** The names the server certificate covers: every bench host is one of these. */
export const CERT_NAMES = ["*.brokered.test", "*.tunnel.test", "localhost"];
/** Intercepted host of the `intercept` workload (exact transform). */
export const API_HOST = "api.brokered.test";
/** Same upstream, no transform: the opaque-tunnel baseline. */
export const OPAQUE_HOST = "opaque.tunnel.test";
/** Warm name of the `mint` workload (requested first, so its leaf is cached). */
export const WARM_HOST = "warm.brokered.test";

/** `h0001.brokered.test` … (the `mint` and `rss-hosts` names; the prefix keeps the two sets apart). */
export function hostName(prefix, i) {
  return `${prefix}${String(i).padStart(5, "0")}.brokered.test`;
}

export function opensslMissing() {
  return commandExists("openssl") ? null : "openssl not installed (it makes the test upstream CA)";
}

/**
 * Create the CA and the upstream certificate in `dir` (synchronous; ~50 ms). Returns paths and the CA PEM.
 * EC P-256 like the proxy's own CA, so both sides pay the same handshake cost.
 */
export function createTlsFixture(dir) {
  mkdirSync(dir, { recursive: true });
  const f = (n) => path.join(dir, n);
  const run = (args) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f("ca-key.pem")]);
  run(["req", "-x509", "-new", "-key", f("ca-key.pem"), "-sha256", "-days", "2", "-subj", "/CN=sandbox-egress bench upstream CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f("ca.pem")]);
  writeFileSync(f("leaf.ext"), "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" +
    `subjectAltName=${CERT_NAMES.map((n) => `DNS:${n}`).join(",")},IP:127.0.0.1\n`);
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f("leaf-key.pem")]);
  run(["req", "-new", "-key", f("leaf-key.pem"), "-subj", "/CN=api.brokered.test", "-out", f("leaf.csr")]);
  run(["x509", "-req", "-in", f("leaf.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca-key.pem"), "-CAcreateserial", "-days", "1",
    "-sha256", "-extfile", f("leaf.ext"), "-out", f("leaf.pem")]);
  return { dir, caPath: f("ca.pem"), caPem: readFileSync(f("ca.pem"), "utf8"), certPath: f("leaf.pem"), keyPath: f("leaf-key.pem") };
}

/** Write a hosts(5) file mapping every name to 127.0.0.1; returns its path. */
export function writeHosts(file, names) {
  writeFileSync(file, `# sandbox-egress bench\n${names.map((n) => `127.0.0.1\t${n}`).join("\n")}\n`);
  return file;
}
