import { normaliseHost } from "../../../src/net/hostport.js";
import { compilePolicy, type CompileOptions, type CompiledPolicy } from "../../../src/policy/compile.js";
import { decide } from "../../../src/policy/decide.js";
import { parsePolicy } from "../../../src/policy/schema.js";
import type { Decision, Host } from "../../../src/policy/types.js";

/** Validate (as a user's file would be) and compile. */
export function compile(policy: unknown, opts?: CompileOptions): CompiledPolicy {
  const r = parsePolicy(policy);
  if (!r.ok) throw new Error(`invalid test policy: ${JSON.stringify(r.errors)}`);
  return compilePolicy(r.policy, opts);
}

export function host(raw: string): Host {
  const r = normaliseHost(raw);
  if (!r.ok) throw new Error(r.error);
  return r.host;
}

/** Decide for `raw:port` with the given resolution (ignored for IP hosts). */
export function decideFor(c: CompiledPolicy, raw: string, port: number, addresses: readonly string[] | null = ["93.184.216.34"]): Decision {
  return decide(c, host(raw), port, addresses);
}

/** `reason rule` of a decision, for compact assertions. */
export function summary(d: Decision): string {
  return `${d.allowed ? "allow" : "deny"} ${d.reason} ${d.rule ?? "-"}`;
}
