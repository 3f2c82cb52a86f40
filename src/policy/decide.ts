/**
 * The decision procedure of DESIGN.md "Policy semantics": a compiled policy, a host, a port and the host's
 * resolved addresses in; a Decision value out. decideResolving adds the one piece of I/O, through a resolver
 * the caller passes in, and only when an address could still be usable.
 */
import { canonicaliseHost, hostString } from "../net/hostport.js";
import type { CompiledPolicy } from "./compile.js";
import type { AllowCode, DenyCode } from "./codes.js";
import type { AddressVerdict, Decision, Host, NameVerdict } from "./types.js";

function safeHostString(host: Host): string {
  const s: unknown = host?.kind === "ip" ? host.ip : host?.name;
  return typeof s === "string" ? s : String(s);
}

function denied(host: Host, port: number, reason: DenyCode, rule: string | null, judged: readonly AddressVerdict[] = []): Decision {
  return Object.freeze({
    allowed: false,
    reason,
    rule,
    host: safeHostString(host),
    port,
    addresses: Object.freeze([]),
    judged: Object.freeze([...judged]),
  });
}

/** When no address is usable, the most specific reason: a deny_cidrs rule, then an internal range, then none. */
function refusal(judged: readonly AddressVerdict[]): { reason: DenyCode; rule: string | null } {
  for (const reason of ["cidr-denied", "internal-address", "not-allowed"] as const) {
    const v = judged.find((j) => j.reason === reason);
    if (v !== undefined) return { reason, rule: v.rule };
  }
  return { reason: "not-allowed", rule: null };
}

function fromName(host: Host, port: number, nv: NameVerdict): Decision {
  return denied(host, port, (nv.reason ?? "not-allowed") as DenyCode, nv.rule);
}

/**
 * Decide for `host:port`. `addresses` is the resolution of a name host (null when resolution was skipped or not
 * done); an IP-literal host is judged as its own single address. A name host that needs resolution and has no
 * addresses is refused as dns-failed: there is nothing vetted to dial.
 */
export function decide(compiled: CompiledPolicy, rawHost: Host, port: number, addresses: readonly string[] | null): Decision {
  const host = canonicaliseHost(rawHost);
  if (host === null) return denied(rawHost, port, "invalid-target", null);
  const nv = compiled.decideName(host, port);
  if (nv.verdict === "deny") return fromName(host, port, nv);

  let candidates: readonly string[];
  if (host.kind === "ip") {
    candidates = [host.ip];
  } else if (nv.needsNoResolution) {
    return denied(host, port, "not-allowed", null);
  } else if (addresses === null || addresses.length === 0) {
    return denied(host, port, "dns-failed", null);
  } else {
    candidates = addresses;
  }

  // Judge each distinct address once, in resolver order (which is the dial order).
  const judged: AddressVerdict[] = [];
  const seen = new Set<string>();
  for (const a of candidates) {
    const v = compiled.judgeAddress(a, nv, port);
    if (seen.has(v.address)) continue;
    seen.add(v.address);
    judged.push(v);
  }
  const usable = judged.filter((j) => j.usable);
  const first = usable[0];
  if (first === undefined) {
    const r = refusal(judged);
    return denied(host, port, r.reason, r.rule, judged);
  }
  return Object.freeze({
    allowed: true,
    reason: first.reason as AllowCode,
    rule: first.rule,
    host: hostString(host),
    port,
    addresses: Object.freeze(usable.map((u) => u.address)),
    judged: Object.freeze(judged),
  });
}

/** A resolver failure carrying one of these codes keeps it; anything else is a dns-failed. */
const RESOLVER_CODES: ReadonlySet<string> = new Set(["dns-failed", "upstream-timeout"]);

/**
 * decide(), resolving the name through `resolve` only when the name stage leaves a chance of an allow.
 * Never rejects: a resolver failure becomes a refusal with reason dns-failed or upstream-timeout.
 */
export async function decideResolving(
  compiled: CompiledPolicy,
  rawHost: Host,
  port: number,
  resolve: (name: string) => Promise<readonly string[]>,
): Promise<Decision> {
  const host = canonicaliseHost(rawHost);
  if (host === null) return denied(rawHost, port, "invalid-target", null);
  const nv = compiled.decideName(host, port);
  if (nv.verdict === "deny" || nv.needsNoResolution || host.kind === "ip") return decide(compiled, host, port, null);
  let addresses: readonly string[];
  try {
    addresses = await resolve(host.name);
  } catch (err) {
    const code: unknown = err !== null && typeof err === "object" ? (err as { code?: unknown }).code : undefined;
    return denied(host, port, typeof code === "string" && RESOLVER_CODES.has(code) ? (code as DenyCode) : "dns-failed", null);
  }
  return decide(compiled, host, port, addresses);
}
