/**
 * Every reason code the proxy can answer with, in one place (CONTRACT.md "Proxy behaviour").
 * A test keeps this table, the README table and the CONTRACT in step.
 */
export const DENY_CODES = {
  "mode-deny-all": { status: 403, message: "Egress is blocked: the policy mode is deny-all." },
  "domain-denied": { status: 403, message: "Egress to this host is blocked by a deny_domains rule." },
  "cidr-denied": { status: 403, message: "Every address of this host is blocked by a deny_cidrs rule." },
  "internal-address": { status: 403, message: "This host resolves only to internal addresses, which the policy does not allow." },
  "not-allowed": { status: 403, message: "No allow rule of the policy matches this host and port." },
  "sni-mismatch": { status: 403, message: "The TLS ClientHello names a host that this tunnel may not reach." },
  "inject-requires-tls": { status: 403, message: "This host has credential transforms; use https so they travel over verified TLS." },
  "misdirected": { status: 421, message: "The Host header names a different host than this tunnel's target." },
  "invalid-target": { status: 400, message: "The request target cannot be parsed as host:port." },
  "too-many-connections": { status: 429, message: "The proxy's connection limit is reached; retry later." },
  "dns-failed": { status: 502, message: "The host name does not resolve." },
  "upstream-connect-failed": { status: 502, message: "No permitted address of this host accepted the connection." },
  "upstream-tls-failed": { status: 502, message: "The upstream TLS certificate failed verification; nothing was sent." },
  "upstream-timeout": { status: 504, message: "The upstream did not connect or answer in time." },
} as const satisfies Record<string, { status: number; message: string }>;

export type DenyCode = keyof typeof DENY_CODES;

/** Reasons carried by an allowing Decision. */
export const ALLOW_CODES = ["mode-allow-all", "domain-allowed", "cidr-allowed"] as const;
export type AllowCode = (typeof ALLOW_CODES)[number];

export type ReasonCode = DenyCode | AllowCode;

export function isDenyCode(code: string): code is DenyCode {
  return Object.prototype.hasOwnProperty.call(DENY_CODES, code);
}
