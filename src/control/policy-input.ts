import { z } from "zod";
import { fromOpenSandbox, type OsPolicy } from "../policy/opensandbox.js";
import { DEFAULT_POLICY, parsePolicy } from "../policy/schema.js";
import type { FieldError, Policy } from "../policy/types.js";

/**
 * Turn the `networkPolicy` / `network_policy` of a request into a validated Policy. Two shapes are accepted
 * where CONTRACT.md says so: this project's (recognised by `mode`) and OpenSandbox's `{defaultAction, egress}`.
 * Every error names the request field, e.g. `networkPolicy.egress[2].target` or `network_policy.allow_domains[0]`.
 */
export type PolicyShapes = "either" | "project";

export type PolicyInputResult = { ok: true; policy: Policy } | { ok: false; errors: FieldError[] };

/** `networkPolicy` + `allow_domains[0]` → `networkPolicy.allow_domains[0]`; an empty prefix means the body itself. */
export function prefixField(prefix: string, field: string): string {
  if (prefix === "") return field === "" || field === "(root)" ? "(body)" : field;
  if (field === "(root)" || field === "") return prefix;
  return field.startsWith("[") ? `${prefix}${field}` : `${prefix}.${field}`;
}

const osRuleSchema = z.strictObject({
  action: z.enum(["allow", "deny"]).describe('"allow" or "deny"'),
  target: z.string().min(1).describe('A domain ("example.com", "*.example.com") or an IP/CIDR ("10.0.0.0/8")'),
});

export const osPolicySchema = z
  .strictObject({
    defaultAction: z.enum(["allow", "deny"]).optional().describe('What happens when no rule matches; default "deny"'),
    egress: z.array(osRuleSchema).max(100_000).optional().describe("Rules; for the same target the first one wins"),
  })
  .describe("OpenSandbox egress policy (the sidecar /policy shape)");

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

export function policyFromInput(input: unknown, field: string, shapes: PolicyShapes): PolicyInputResult {
  // OpenSandbox: "passing an empty object or null results in allow-all"; Leap0: "when omitted, allow-all".
  if (input === undefined || input === null) return { ok: true, policy: DEFAULT_POLICY };
  if (!isObject(input)) {
    return { ok: false, errors: [{ field: field || "(body)", error: `must be a policy object${shapes === "either" ? ' ({"mode": …} or {"defaultAction": …, "egress": […]})' : ' such as {"mode": "allow-all"}'}` }] };
  }
  if ("mode" in input || shapes === "project") {
    const r = parsePolicy(input);
    if (r.ok) return r;
    return { ok: false, errors: r.errors.map((e) => ({ field: prefixField(field, e.field), error: e.error })) };
  }
  if (Object.keys(input).length === 0) return { ok: true, policy: DEFAULT_POLICY };
  return fromOpenSandboxInput(input, field);
}

function fromOpenSandboxInput(input: Record<string, unknown>, field: string): PolicyInputResult {
  const shape = osPolicySchema.safeParse(input);
  if (!shape.success) {
    return {
      ok: false,
      errors: shape.error.issues.map((i) => {
        const path = i.path.map((s) => (typeof s === "number" ? `[${s}]` : `.${String(s)}`)).join("");
        const keys = i.code === "unrecognized_keys" ? `.${i.keys.join(",")}` : "";
        const msg =
          i.code === "unrecognized_keys"
            ? `unknown key; an OpenSandbox policy has defaultAction and egress, this project's policy has "mode"`
            : i.message;
        return { field: prefixField(field, `${path}${keys}`.replace(/^\./, "")), error: msg };
      }),
    };
  }
  const os = shape.data as OsPolicy;
  // Validate each target on its own first, so that an error names the rule the user wrote.
  const errors = osRuleErrors(os.egress ?? [], prefixField(field, "egress"));
  if (errors.length > 0) return { ok: false, errors };
  const r = parsePolicy(fromOpenSandbox(os));
  if (r.ok) return r;
  return { ok: false, errors: r.errors.map((e) => ({ field: prefixField(field, e.field), error: e.error })) };
}

/** Errors of each OpenSandbox rule's target on its own, named `PREFIX[i].target` (the field the user wrote). */
export function osRuleErrors(rules: readonly { action: "allow" | "deny"; target: string }[], prefix: string): FieldError[] {
  const errors: FieldError[] = [];
  rules.forEach((rule, i) => {
    const single = parsePolicy(fromOpenSandbox({ defaultAction: "deny", egress: [{ action: rule.action, target: rule.target }] }));
    if (!single.ok) for (const e of single.errors) errors.push({ field: `${prefix}[${i}].target`, error: e.error });
  });
  return errors;
}

const REFERENCE = /\$\{(env|file):[^}]*\}/;

/**
 * The policy as it may travel outside the store (OCI manifest annotation): `${env:…}`/`${file:…}` references
 * are kept, so a restore elsewhere can resolve them again; an inject_headers value without any reference is a
 * literal secret and is replaced by "[redacted]".
 */
export function referencesOnly(policy: Policy): Policy {
  if (!policy.transforms) return policy;
  return {
    ...policy,
    transforms: policy.transforms.map((t) =>
      t.inject_headers
        ? { ...t, inject_headers: Object.fromEntries(Object.entries(t.inject_headers).map(([k, v]) => [k, REFERENCE.test(v) ? v : "[redacted]"])) }
        : t,
    ),
  };
}
