/** Text for `sandbox-egress ca init|show` (CONTRACT.md); the CLI prints it and maps TlsError codes to exit 1. */
import { CertificateAuthority } from "./ca.js";

/** Create the CA in `dir` (`force` replaces an existing one) and describe it. Throws `ca-exists` without force. */
export async function caInit(dir: string, opts: { force?: boolean } = {}): Promise<string> {
  let previous: CertificateAuthority | undefined;
  if (opts.force) previous = await CertificateAuthority.load(dir).catch(() => undefined);
  const ca = await CertificateAuthority.create(dir, { force: opts.force ?? false });
  const headline = previous
    ? `Replaced the CA in ${ca.paths.dir} (old SHA-256 ${previous.fingerprintSha256}).\n` +
      "Restart every proxy using this directory and give sandboxes the new ca.pem: leaves of the old CA no longer validate."
    : `Created a CA in ${ca.paths.dir}. Give sandboxes ca.pem (never ca-key.pem); see certs/README.md.`;
  return `${headline}\n\n${describe(ca)}`;
}

/** Describe the CA in `dir`: paths, subject, fingerprint, validity and the PEM. Throws `ca-not-found` if none. */
export async function caShow(dir: string): Promise<string> {
  return describe(await CertificateAuthority.load(dir));
}

function describe(ca: CertificateAuthority): string {
  return [
    `Certificate: ${ca.paths.cert}`,
    `Private key: ${ca.paths.key} (mode 0600; must never enter a sandbox)`,
    `Subject:     ${ca.subject}`,
    `Key:         ${ca.keyDescription}`,
    `SHA-256:     ${ca.fingerprintSha256}`,
    `Not before:  ${ca.notBefore.toISOString()}`,
    `Not after:   ${ca.notAfter.toISOString()}`,
    "",
    ca.certPem,
  ].join("\n");
}
