import type { AllowCode, DenyCode } from "./codes.js";

/** The policy object of DESIGN.md "Policy semantics" (Leap0's network_policy, extended), after validation. */
export interface Policy {
  readonly mode: "allow-all" | "deny-all" | "custom";
  readonly allow_domains?: readonly string[];
  readonly allow_cidrs?: readonly string[];
  readonly deny_domains?: readonly string[];
  readonly deny_cidrs?: readonly string[];
  readonly transforms?: readonly Transform[];
}

export interface Transform {
  readonly domain: string;
  /** Values are literals or `${env:NAME}` / `${file:PATH}` references; never logged. */
  readonly inject_headers?: Readonly<Record<string, string>>;
  readonly strip_headers?: readonly string[];
}

/** One validation problem: `field` is a path such as `allow_domains[2]`, `error` says why and what to do. */
export interface FieldError {
  readonly field: string;
  readonly error: string;
}

export type ParseResult =
  | { readonly ok: true; readonly policy: Policy }
  | { readonly ok: false; readonly errors: readonly FieldError[] };

/** A host after normalisation (src/net/hostport.ts): a lower-case A-label name, or a canonical IP. */
export type Host =
  | { readonly kind: "name"; readonly name: string }
  | { readonly kind: "ip"; readonly ip: string; readonly family: 4 | 6 };

/** Verdict for one resolved address. */
export interface AddressVerdict {
  readonly address: string;
  readonly usable: boolean;
  /** Why it is unusable, or why it is usable (cidr-allowed, domain-allowed, mode-allow-all). */
  readonly reason: AllowCode | "cidr-denied" | "internal-address" | "not-allowed";
  /** The rule that decided, e.g. `deny_cidrs[0]=10.0.0.0/8`, `internal:169.254.0.0/16`; null when none matched. */
  readonly rule: string | null;
}

/** The outcome of the name stage (step 1 and 2 of the decision procedure). */
export interface NameVerdict {
  /** "deny" ends the decision; "allow" means a domain rule allows; "none" means no domain rule matched. */
  readonly verdict: "deny" | "allow" | "none";
  readonly reason: AllowCode | DenyCode | null;
  readonly rule: string | null;
  /** True when no address could ever be usable (custom mode, no name allow, no allow_cidrs): skip DNS. */
  readonly needsNoResolution: boolean;
}

/** What every policy question answers with. Tests assert `reason`, never a bare boolean. */
export interface Decision {
  readonly allowed: boolean;
  readonly reason: AllowCode | DenyCode;
  readonly rule: string | null;
  /** The normalised host (name or canonical IP). */
  readonly host: string;
  readonly port: number;
  /** Usable addresses in dial order (empty when denied). The proxy dials only these. */
  readonly addresses: readonly string[];
  /** Every resolved address with its verdict (for explain and the admin decide endpoint). */
  readonly judged: readonly AddressVerdict[];
}
