/**
 * The policy file's schema (DESIGN.md "Policy semantics", CONTRACT.md "Policy file"), validated once at the
 * edge. zod checks the shape and each value; cross-field rules run on the raw input so that every problem is
 * reported in one pass, each as `{field, error}` with a path such as `allow_domains[2]`.
 */
import { z } from "zod";
import { parseCidr } from "../net/cidr.js";
import { headerNameError, injectHeaderNameError, parseHeaderValue } from "./headers.js";
import { parseDomainPattern } from "./pattern.js";
import type { FieldError, ParseResult, Policy } from "./types.js";

export type { FieldError, ParseResult, Policy };

/** The benchmark compiles 100,000 domain rules; that is the supported size of one list. */
export const MAX_LIST_ENTRIES = 100_000;
export const MAX_TRANSFORMS = 1_000;
export const MAX_HEADERS_PER_TRANSFORM = 100;

export const MODES = ["allow-all", "deny-all", "custom"] as const;

/** What an omitted policy means (DESIGN.md): allow-all, still subject to the internal-address deny. */
export const DEFAULT_POLICY: Policy = Object.freeze({ mode: "allow-all" });

const domainPattern = z
  .string()
  .transform((s, ctx) => {
    const r = parseDomainPattern(s);
    if (!r.ok) {
      ctx.addIssue({ code: "custom", message: r.error });
      return z.NEVER;
    }
    return r.pattern.text;
  })
  .describe(
    'A host name pattern: "api.example.com" (exact), "*.example.com" (any subdomain at any depth, not the apex), ' +
      '"api-*.example.com" ("*" within one label); optional ":PORT" restricts it to that port. IDN names are ' +
      "accepted and stored as punycode. IP addresses belong in the CIDR lists.",
  );

const cidr = z
  .string()
  .transform((s, ctx) => {
    const r = parseCidr(s);
    if (!r.ok) {
      ctx.addIssue({ code: "custom", message: r.error });
      return z.NEVER;
    }
    return r.cidr.text;
  })
  .describe('An IPv4 or IPv6 range such as "10.0.0.0/8" or "fd00::/8"; a bare address means /32 or /128.');

const injectName = z.string().superRefine((name, ctx) => {
  const e = injectHeaderNameError(name);
  if (e !== null) ctx.addIssue({ code: "custom", message: e });
});

const injectValue = z
  .string()
  .superRefine((value, ctx) => {
    const r = parseHeaderValue(value);
    if (!r.ok) ctx.addIssue({ code: "custom", message: r.error });
  })
  .describe("A literal, or references ${env:NAME} / ${file:/absolute/path} resolved inside the proxy. Never logged.");

const stripName = z
  .string()
  .transform((name, ctx) => {
    const e = headerNameError(name);
    if (e !== null) {
      ctx.addIssue({ code: "custom", message: e });
      return z.NEVER;
    }
    // Header names are case-insensitive; store one spelling.
    return name.toLowerCase();
  })
  .describe("A request header name to remove (case-insensitive).");

const transformSchema = z
  .strictObject({
    domain: domainPattern.describe("The target hosts this transform applies to (a domain pattern; also allows them)."),
    inject_headers: z
      .record(injectName, injectValue)
      .refine((r) => Object.keys(r).length <= MAX_HEADERS_PER_TRANSFORM, {
        message: `at most ${MAX_HEADERS_PER_TRANSFORM} headers can be injected by one transform`,
      })
      .optional()
      .describe("Headers to set on every matching request, replacing any the client sent. Only over verified TLS."),
    strip_headers: z
      .array(stripName)
      .max(MAX_HEADERS_PER_TRANSFORM)
      .optional()
      .describe("Headers to remove from every matching request, before inject_headers apply."),
  })
  .describe("Header changes for requests to matching hosts; matching hosts are intercepted with the proxy's CA.");

const policySchema = z
  .strictObject({
    // CONTRACT.md: "$schema" is ignored, whatever its value.
    $schema: z.unknown().optional().describe("Ignored; lets editors find the JSON Schema."),
    mode: z
      .enum(MODES)
      .describe('"allow-all" (anything not denied), "deny-all" (nothing), or "custom" (only what allow rules allow).'),
    allow_domains: z
      .array(domainPattern)
      .max(MAX_LIST_ENTRIES)
      .optional()
      .describe('Domain patterns that are allowed (mode "custom" only).'),
    allow_cidrs: z.array(cidr).max(MAX_LIST_ENTRIES).optional().describe('Address ranges that are allowed (mode "custom" only).'),
    deny_domains: z.array(domainPattern).max(MAX_LIST_ENTRIES).optional().describe("Domain patterns that are denied, in any mode."),
    deny_cidrs: z.array(cidr).max(MAX_LIST_ENTRIES).optional().describe("Address ranges that are denied, in any mode."),
    transforms: z.array(transformSchema).max(MAX_TRANSFORMS).optional().describe("Credential brokering: header changes per domain."),
  })
  .describe("sandbox-egress network policy (Leap0 network_policy, extended).");

/** The JSON Schema of the policy file, for documentation and editors. */
export function policyJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(policySchema, { io: "input" }) as Record<string, unknown>;
}

type PathSegment = string | number;

interface LocatedError {
  readonly path: readonly PathSegment[];
  readonly error: string;
}

const PLAIN_KEY_RE = /^[A-Za-z_$][A-Za-z0-9_-]*$/;

/** `["transforms", 0, "inject_headers", "Authorization"]` → `transforms[0].inject_headers.Authorization`. */
export function formatPath(path: readonly PathSegment[]): string {
  if (path.length === 0) return "(root)";
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (PLAIN_KEY_RE.test(seg)) out += out === "" ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

function valueAt(input: unknown, path: readonly PathSegment[]): unknown {
  let v: unknown = input;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PathSegment, unknown>)[seg];
  }
  return v;
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return "a string";
  if (typeof v === "number") return "a number";
  if (typeof v === "boolean") return "a boolean";
  return typeof v;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] ?? 0;
      row[j] = Math.min(cur + 1, (row[j - 1] ?? 0) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length] ?? 0;
}

function allowedKeysAt(path: readonly PathSegment[]): readonly string[] {
  return path.length === 0 ? Object.keys(policySchema.shape).filter((k) => k !== "$schema") : Object.keys(transformSchema.shape);
}

function unknownKeyError(key: string, path: readonly PathSegment[]): string {
  const allowed = allowedKeysAt(path);
  const close = allowed.find((k) => levenshtein(k, key.toLowerCase()) <= 2);
  const hint = close !== undefined ? `did you mean "${close}"? ` : "";
  return `unknown key ${JSON.stringify(key)}; ${hint}allowed keys are ${allowed.join(", ")}`;
}

function expectedOf(path: readonly PathSegment[]): string {
  const last = path[path.length - 1];
  if (path.length === 0) return "the policy must be a JSON object";
  if (typeof last === "number") return path[path.length - 2] === "transforms" ? "must be an object" : "must be a string";
  if (last === "inject_headers") return 'must be an object mapping header names to values, such as {"Authorization": "Bearer ${env:TOKEN}"}';
  if (path[path.length - 2] === "inject_headers") return "must be a string";
  if (last === "transforms") return "must be an array of transform objects";
  if (last === "domain") return 'must be a domain pattern string, such as "api.example.com"';
  return "must be an array of strings";
}

function mapIssue(issue: z.core.$ZodIssue, input: unknown): LocatedError[] {
  const path = issue.path.filter((s): s is PathSegment => typeof s === "string" || typeof s === "number");
  const field = path[path.length - 1];
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => ({ path: [...path, k], error: unknownKeyError(k, path) }));
    case "invalid_key":
      return issue.issues.map((i) => ({ path, error: i.message }));
    case "invalid_value":
    case "invalid_type": {
      const got = valueAt(input, path);
      if (field === "mode") {
        const choices = MODES.map((m) => JSON.stringify(m)).join(", ");
        return [{
          path,
          error: got === undefined ? `mode is required; use one of ${choices}` : `${JSON.stringify(got)} is not a mode; use one of ${choices}`,
        }];
      }
      if (path.length === 0) return [{ path, error: `the policy must be a JSON object, not ${kindOf(got)}` }];
      return [{ path, error: `${expectedOf(path)}, not ${kindOf(got)}` }];
    }
    case "too_big": {
      const got = valueAt(input, path);
      const n = Array.isArray(got) ? got.length : 0;
      return [{ path, error: `has ${n} entries; at most ${Number(issue.maximum).toLocaleString("en-US")} are allowed` }];
    }
    default:
      return [{ path, error: issue.message }];
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Rules that relate fields to each other; they read the raw input so that they run even beside other errors. */
function crossFieldErrors(input: unknown): LocatedError[] {
  if (!isPlainObject(input)) return [];
  const errors: LocatedError[] = [];
  const mode = input["mode"];
  if (typeof mode === "string" && mode !== "custom" && (MODES as readonly string[]).includes(mode)) {
    for (const key of ["allow_domains", "allow_cidrs"] as const) {
      const list = input[key];
      if (Array.isArray(list) && list.length > 0) {
        errors.push({
          path: [key],
          error: `${key} only applies in mode "custom"; with mode "${mode}" these rules would be silently ignored. Set mode to "custom", or remove ${key}`,
        });
      }
    }
  }

  const denied = new Map<string, number>();
  const denyList = input["deny_domains"];
  if (Array.isArray(denyList)) {
    denyList.forEach((d, j) => {
      if (typeof d !== "string") return;
      const r = parseDomainPattern(d);
      if (r.ok && !denied.has(r.pattern.text)) denied.set(r.pattern.text, j);
    });
  }
  const transforms = input["transforms"];
  if (Array.isArray(transforms)) {
    transforms.forEach((t, i) => {
      if (!isPlainObject(t)) return;
      if (typeof t["domain"] === "string") {
        const r = parseDomainPattern(t["domain"]);
        const j = r.ok ? denied.get(r.pattern.text) : undefined;
        if (r.ok && j !== undefined) {
          errors.push({
            path: ["transforms", i, "domain"],
            error: `"${r.pattern.text}" is also deny_domains[${j}], and a tie goes to deny, so this transform could never apply; remove one of them`,
          });
        }
      }
      const inject = t["inject_headers"];
      if (isPlainObject(inject)) {
        const seen = new Map<string, string>();
        for (const name of Object.keys(inject)) {
          const first = seen.get(name.toLowerCase());
          if (first !== undefined) {
            errors.push({
              path: ["transforms", i, "inject_headers", name],
              error: `${JSON.stringify(name)} is the same header as ${JSON.stringify(first)} (header names are case-insensitive); keep one`,
            });
          } else {
            seen.set(name.toLowerCase(), name);
          }
        }
      }
    });
  }
  return errors;
}

function comparePaths(a: readonly PathSegment[], b: readonly PathSegment[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i] as PathSegment;
    const y = b[i] as PathSegment;
    if (x === y) continue;
    if (typeof x === "number" && typeof y === "number") return x - y;
    if (typeof x === "number") return -1;
    if (typeof y === "number") return 1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    for (const child of Object.values(v)) deepFreeze(child);
    Object.freeze(v);
  }
  return v;
}

type ParsedPolicy = z.output<typeof policySchema>;

function toPolicy(p: ParsedPolicy): Policy {
  // Drop "$schema" and absent keys, so the stored policy carries only what the user set, normalised.
  const out: Record<string, unknown> = { mode: p.mode };
  for (const key of ["allow_domains", "allow_cidrs", "deny_domains", "deny_cidrs"] as const) {
    if (p[key] !== undefined) out[key] = p[key];
  }
  if (p.transforms !== undefined) {
    out["transforms"] = p.transforms.map((t) => {
      const o: Record<string, unknown> = { domain: t.domain };
      if (t.inject_headers !== undefined) o["inject_headers"] = t.inject_headers;
      if (t.strip_headers !== undefined) o["strip_headers"] = t.strip_headers;
      return o;
    });
  }
  return deepFreeze(out) as unknown as Policy;
}

/**
 * Validate and normalise a policy object (already JSON-parsed). On success the policy holds normalised
 * patterns and ranges and is deeply frozen; on failure every problem is listed, sorted by field.
 */
export function parsePolicy(input: unknown): ParseResult {
  const r = policySchema.safeParse(input);
  const located: LocatedError[] = [...crossFieldErrors(input)];
  if (!r.success) for (const issue of r.error.issues) located.push(...mapIssue(issue, input));
  if (r.success && located.length === 0) return { ok: true, policy: toPolicy(r.data) };

  located.sort((a, b) => comparePaths(a.path, b.path) || (a.error < b.error ? -1 : a.error > b.error ? 1 : 0));
  const errors: FieldError[] = [];
  let last = "";
  for (const e of located) {
    const fe = { field: formatPath(e.path), error: e.error };
    const key = `${fe.field}\n${fe.error}`;
    if (key !== last) errors.push(Object.freeze(fe));
    last = key;
  }
  return { ok: false, errors: Object.freeze(errors) };
}
