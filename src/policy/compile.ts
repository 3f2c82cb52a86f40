/**
 * Compile a validated Policy into lookup structures whose cost per decision is flat in the number of rules
 * (DESIGN.md "Policy semantics", "Performance targets"). Pure: no I/O; the result is frozen.
 */
import { CidrTable, parseCidr } from "../net/cidr.js";
import { buildInternalTable, embeddedIPv4Value } from "../net/classify.js";
import { canonicaliseHost, formatHostPort, isValidPort, parseHostPort } from "../net/hostport.js";
import { canonicalIp, formatIp, type ParsedIp } from "../net/ip.js";
import { compareSpecificity, PatternIndex, type PatternHit } from "./matcher.js";
import { parseDomainPattern } from "./pattern.js";
import type { AddressVerdict, Host, NameVerdict, Policy, Transform } from "./types.js";

export interface CompileOptions {
  /** `--internal-allow` ranges: addresses inside them are judged like public addresses (never allowed by this alone). */
  readonly internalAllow?: readonly string[];
  /**
   * The proxy's own listening addresses, always denied as internal-address: `ADDR` (every port) or
   * `ADDR:PORT` / `[V6]:PORT` (that port only, so that a test upstream on another loopback port stays reachable).
   */
  readonly selfAddresses?: readonly string[];
}

export interface TransformMatch {
  readonly index: number;
  readonly transform: Transform;
}

export interface CompiledPolicy {
  readonly policy: Policy;
  /** Steps 1–2: the mode and the most specific domain pattern. */
  decideName(host: Host, port: number): NameVerdict;
  /**
   * Step 3 for one address: longest prefix among allow_cidrs, deny_cidrs, internal ranges (minus exemptions)
   * and the proxy's own addresses. `port` only matters for `ADDR:PORT` self entries.
   */
  judgeAddress(address: string, name: NameVerdict, port?: number): AddressVerdict;
  /** Every transform whose domain pattern matches the host and port, in list order. */
  transformsFor(host: string, port: number): readonly TransformMatch[];
}

/** Thrown when compilePolicy gets a policy that parsePolicy would reject, or a bad option. */
export class PolicyCompileError extends Error {
  readonly code = "invalid-policy";
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "PolicyCompileError";
  }
}

interface NameRule {
  readonly action: "allow" | "deny";
  readonly rule: string;
}

interface CidrRule {
  readonly action: "allow" | "deny";
  readonly rule: string;
}

/** The outcome for one address (before the embedded-IPv4 combination and the no-match fallback). */
type AddressOutcome =
  | { readonly kind: "cidr-allowed" | "cidr-denied" | "internal-address"; readonly rule: string }
  | { readonly kind: "none" };

// A tie between an allow and a deny for the same pattern (or range) goes to deny; among equals the first stays.
const denyWins = <T extends { action: "allow" | "deny" }>(a: T, b: T): T => (a.action === "allow" && b.action === "deny" ? b : a);

function buildNameIndex(policy: Policy): PatternIndex<NameRule> {
  const index = new PatternIndex<NameRule>(denyWins);
  const add = (list: readonly string[] | undefined, name: string, action: "allow" | "deny"): void => {
    list?.forEach((raw, i) => {
      const r = parseDomainPattern(raw);
      if (!r.ok) throw new PolicyCompileError(`${name}[${i}]`, r.error);
      index.add(r.pattern, Object.freeze({ action, rule: `${name}[${i}]=${r.pattern.text}` }));
    });
  };
  // Allow rules first, so that among equal allow rules the first listed names the decision.
  add(policy.allow_domains, "allow_domains", "allow");
  policy.transforms?.forEach((t, i) => {
    const r = parseDomainPattern(t.domain);
    if (!r.ok) throw new PolicyCompileError(`transforms[${i}].domain`, r.error);
    index.add(r.pattern, Object.freeze({ action: "allow" as const, rule: `transforms[${i}].domain=${r.pattern.text}` }));
  });
  add(policy.deny_domains, "deny_domains", "deny");
  return index;
}

function buildTransformIndex(policy: Policy): PatternIndex<number[]> {
  const index = new PatternIndex<number[]>((a, b) => [...a, ...b]);
  policy.transforms?.forEach((t, i) => {
    const r = parseDomainPattern(t.domain);
    if (r.ok) index.add(r.pattern, [i]);
  });
  return index;
}

function buildCidrTable(policy: Policy): CidrTable<CidrRule> {
  const table = new CidrTable<CidrRule>(denyWins);
  const add = (list: readonly string[] | undefined, name: string, action: "allow" | "deny"): void => {
    list?.forEach((raw, i) => {
      const r = parseCidr(raw);
      if (!r.ok) throw new PolicyCompileError(`${name}[${i}]`, r.error);
      table.add(r.cidr, Object.freeze({ action, rule: `${name}[${i}]=${r.cidr.text}` }));
    });
  };
  add(policy.allow_cidrs, "allow_cidrs", "allow");
  add(policy.deny_cidrs, "deny_cidrs", "deny");
  return table;
}

function buildExemptions(list: readonly string[] | undefined): CidrTable<true> {
  const table = new CidrTable<true>();
  list?.forEach((raw, i) => {
    const r = parseCidr(raw);
    if (!r.ok) throw new PolicyCompileError(`internalAllow[${i}]`, r.error);
    table.add(r.cidr, true);
  });
  return table;
}

/** Self entries keyed `ADDR` (any port) or `ADDR|PORT`, with the rule string each produces. */
function buildSelf(list: readonly string[] | undefined): Map<string, string> {
  const self = new Map<string, string>();
  list?.forEach((raw, i) => {
    const ip = canonicalIp(raw.startsWith("[") && raw.endsWith("]") ? raw.slice(1, -1) : raw);
    if (ip !== null) {
      self.set(formatIp(ip), `self:${formatIp(ip)}`);
      return;
    }
    const hp = parseHostPort(raw);
    if (!hp.ok || hp.host.kind !== "ip") {
      throw new PolicyCompileError(`selfAddresses[${i}]`, `${JSON.stringify(raw)} is not an address or address:port`);
    }
    self.set(`${hp.host.ip}|${hp.port}`, `self:${formatHostPort(hp.host, hp.port)}`);
  });
  return self;
}

export function compilePolicy(policy: Policy, opts: CompileOptions = {}): CompiledPolicy {
  const mode = policy.mode;
  if (mode !== "allow-all" && mode !== "deny-all" && mode !== "custom") {
    throw new PolicyCompileError("mode", `${JSON.stringify(mode)} is not a mode`);
  }
  const names = buildNameIndex(policy);
  const transformIndex = buildTransformIndex(policy);
  const cidrs = buildCidrTable(policy);
  const internal = buildInternalTable();
  const exempt = buildExemptions(opts.internalAllow);
  const self = buildSelf(opts.selfAddresses);
  const hasAllowCidrs = (policy.allow_cidrs?.length ?? 0) > 0;
  const transforms = policy.transforms ?? [];

  const nameVerdict = (
    verdict: NameVerdict["verdict"],
    reason: NameVerdict["reason"],
    rule: string | null,
    isName: boolean,
  ): NameVerdict =>
    Object.freeze({
      verdict,
      reason,
      rule,
      // Nothing can be usable: no name allow, and no allow_cidrs that an address could match (custom mode).
      needsNoResolution: isName && mode === "custom" && verdict !== "allow" && !hasAllowCidrs,
    });

  /** The canonical name of a host, re-normalising defensively (a non-canonical name would dodge deny rules). */
  const canonicalName = (host: Host): { name: string } | { ip: true } | { invalid: true } => {
    const h = canonicaliseHost(host);
    if (h === null) return { invalid: true };
    return h.kind === "name" ? { name: h.name } : { ip: true };
  };

  function decideName(host: Host, port: number): NameVerdict {
    const c = canonicalName(host);
    const isName = "name" in c;
    if (!isValidPort(port) || "invalid" in c) return nameVerdict("deny", "invalid-target", null, false);
    if (mode === "deny-all") return nameVerdict("deny", "mode-deny-all", "mode:deny-all", isName);
    if (!isName) return nameVerdict("none", null, null, false); // domain patterns never match IP literals
    let best: PatternHit<NameRule> | undefined;
    let bestRule: NameRule | undefined;
    for (const hit of names.match(c.name, port)) {
      const cmp = best === undefined ? 1 : compareSpecificity(hit, best);
      if (cmp > 0) {
        best = hit;
        bestRule = hit.value;
      } else if (cmp === 0 && bestRule !== undefined) {
        bestRule = denyWins(bestRule, hit.value);
      }
    }
    if (bestRule === undefined) return nameVerdict("none", null, null, true);
    return bestRule.action === "deny"
      ? nameVerdict("deny", "domain-denied", bestRule.rule, true)
      : nameVerdict("allow", "domain-allowed", bestRule.rule, true);
  }

  function judgeOne(ip: ParsedIp): AddressOutcome {
    const user = cidrs.lookupParsed(ip);
    const inRange = exempt.lookupParsed(ip) === undefined ? internal.lookupParsed(ip) : undefined;
    const int = inRange !== undefined && inRange.value.internal ? inRange : undefined;
    if (int !== undefined && (user === undefined || user.prefixLength <= int.prefixLength)) {
      // Equal prefix length: a tie, which goes to deny; a user deny rule names it better than the built-in.
      if (user !== undefined && user.prefixLength === int.prefixLength && user.value.action === "deny") {
        return { kind: "cidr-denied", rule: user.value.rule };
      }
      return { kind: "internal-address", rule: `internal:${int.cidr} (${int.value.range.category})` };
    }
    if (user !== undefined) return { kind: user.value.action === "allow" ? "cidr-allowed" : "cidr-denied", rule: user.value.rule };
    return { kind: "none" };
  }

  function selfRule(ip: ParsedIp, port: number | undefined): string | undefined {
    if (self.size === 0) return undefined;
    const text = formatIp(ip);
    return self.get(text) ?? (port === undefined ? undefined : self.get(`${text}|${port}`));
  }

  function judgeAddress(address: string, name: NameVerdict, port?: number): AddressVerdict {
    const verdict = (usable: boolean, reason: AddressVerdict["reason"], rule: string | null, addr: string): AddressVerdict =>
      Object.freeze({ address: addr, usable, reason, rule });
    const ip = typeof address === "string" ? canonicalIp(address) : null;
    if (ip === null) return verdict(false, "not-allowed", null, String(address));
    const text = formatIp(ip);
    // A denied name ends the decision before addresses; judged alone, nothing is usable for it.
    if (name.verdict === "deny" || mode === "deny-all") return verdict(false, "not-allowed", name.rule ?? "mode:deny-all", text);

    const embedded = ip.family === 6 ? embeddedIPv4Value(ip.value) : null;
    const v4: ParsedIp | null = embedded === null ? null : { family: 4, value: embedded };
    const selfHit = selfRule(ip, port) ?? (v4 === null ? undefined : selfRule(v4, port));
    if (selfHit !== undefined) return verdict(false, "internal-address", selfHit, text);

    // An address embedding an IPv4 reaches that IPv4 too: denied if either is denied (DESIGN.md "Addresses").
    const outcomes = v4 === null ? [judgeOne(ip)] : [judgeOne(ip), judgeOne(v4)];
    // Prefer the user's own deny rule, then the embedded IPv4's range (the last one: it names the real destination).
    const denial =
      outcomes.find((o) => o.kind === "cidr-denied") ?? outcomes.filter((o) => o.kind === "internal-address").pop();
    if (denial !== undefined && denial.kind !== "none" && denial.kind !== "cidr-allowed") {
      return verdict(false, denial.kind, denial.rule, text);
    }
    const allowed = outcomes.find((o) => o.kind === "cidr-allowed");
    if (allowed !== undefined && allowed.kind !== "none") return verdict(true, "cidr-allowed", allowed.rule, text);
    if (name.verdict === "allow") return verdict(true, "domain-allowed", name.rule, text);
    if (mode === "allow-all") return verdict(true, "mode-allow-all", "mode:allow-all", text);
    return verdict(false, "not-allowed", null, text);
  }

  function transformsFor(host: string, port: number): readonly TransformMatch[] {
    if (!isValidPort(port) || transforms.length === 0) return [];
    const c = canonicalName({ kind: "name", name: host });
    if (!("name" in c)) return [];
    const indices = new Set<number>();
    for (const hit of transformIndex.match(c.name, port)) for (const i of hit.value) indices.add(i);
    return Object.freeze(
      [...indices].sort((a, b) => a - b).map((index) => Object.freeze({ index, transform: transforms[index] as Transform })),
    );
  }

  return Object.freeze({ policy, decideName, judgeAddress, transformsFor });
}
