import { isIP } from "node:net";
import type { Policy } from "./types.js";

/**
 * OpenSandbox's egress policy shape (`{defaultAction, egress:[{action,target}]}`, its egress sidecar API and
 * `networkPolicy` on create) mapped onto this project's policy, both ways. Pure functions; the result of
 * every mapping is validated by parsePolicy like any other policy.
 */
export interface OsRule {
  action: "allow" | "deny";
  target: string;
}
export interface OsPolicy {
  defaultAction?: "allow" | "deny";
  egress?: OsRule[];
}

function isCidrTarget(target: string): boolean {
  const bare = target.replace(/\/\d+$/, "");
  return isIP(bare) !== 0;
}

/** OpenSandbox → this project: defaultAction allow = allow-all (+ deny lists); deny = custom (or deny-all with no allow rule). */
export function fromOpenSandbox(os: OsPolicy): Policy {
  const allowDomains: string[] = [];
  const allowCidrs: string[] = [];
  const denyDomains: string[] = [];
  const denyCidrs: string[] = [];
  const seen = new Set<string>();
  for (const rule of os.egress ?? []) {
    // "If multiple incoming rules refer to the same target, the first one wins" (OpenSandbox egress API).
    if (seen.has(rule.target)) continue;
    seen.add(rule.target);
    const cidr = isCidrTarget(rule.target);
    if (rule.action === "allow") (cidr ? allowCidrs : allowDomains).push(rule.target);
    else (cidr ? denyCidrs : denyDomains).push(rule.target);
  }
  const defaultAllow = (os.defaultAction ?? "deny") === "allow";
  const policy: { -readonly [K in keyof Policy]: Policy[K] } = {
    mode: defaultAllow ? "allow-all" : allowDomains.length + allowCidrs.length > 0 ? "custom" : "deny-all",
  };
  // Allow rules under defaultAction allow add nothing: everything not denied is allowed already.
  if (!defaultAllow && allowDomains.length) policy.allow_domains = allowDomains;
  if (!defaultAllow && allowCidrs.length) policy.allow_cidrs = allowCidrs;
  if (denyDomains.length) policy.deny_domains = denyDomains;
  if (denyCidrs.length) policy.deny_cidrs = denyCidrs;
  return policy;
}

/** This project → OpenSandbox, for GET /policy. Transforms have no OpenSandbox form and are not shown there. */
export function toOpenSandbox(p: Policy): OsPolicy & { defaultAction: "allow" | "deny"; egress: OsRule[] } {
  const egress: OsRule[] = [];
  if (p.mode === "custom") {
    for (const t of p.allow_domains ?? []) egress.push({ action: "allow", target: t });
    for (const t of p.allow_cidrs ?? []) egress.push({ action: "allow", target: t });
  }
  for (const t of p.deny_domains ?? []) egress.push({ action: "deny", target: t });
  for (const t of p.deny_cidrs ?? []) egress.push({ action: "deny", target: t });
  return { defaultAction: p.mode === "allow-all" ? "allow" : "deny", egress };
}

/** PATCH /policy: merge rules, incoming ones taking priority; transforms are kept. */
export function patchRules(p: Policy, rules: readonly OsRule[]): Policy {
  const incoming = new Map<string, OsRule>();
  for (const r of rules) if (!incoming.has(r.target)) incoming.set(r.target, r);
  const current = toOpenSandbox(p);
  const merged: OsRule[] = [...incoming.values(), ...current.egress.filter((r) => !incoming.has(r.target))];
  // A deny-all policy that receives an allow rule becomes custom: that is what defaultAction deny + allow means.
  const next = fromOpenSandbox({ defaultAction: current.defaultAction, egress: merged });
  return withTransforms(next, p);
}

/** DELETE /policy: remove rules by target; unknown targets are ignored (idempotent). */
export function deleteRules(p: Policy, targets: readonly string[]): Policy {
  const drop = new Set(targets);
  const current = toOpenSandbox(p);
  const next = fromOpenSandbox({ defaultAction: current.defaultAction, egress: current.egress.filter((r) => !drop.has(r.target)) });
  // Removing the last allow rule of a custom policy leaves it denying everything, as OpenSandbox does.
  return withTransforms(next, p);
}

function withTransforms(next: Policy, prev: Policy): Policy {
  return prev.transforms ? { ...next, transforms: prev.transforms } : next;
}

/** The sidecar's "derived runtime mode" string in GET /policy. */
export function osMode(p: Policy): string {
  return p.mode === "allow-all" ? "allow_all" : p.mode === "deny-all" ? "deny_all" : "custom";
}
