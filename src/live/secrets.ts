import { readFileSync } from "node:fs";
import type { FieldError, Policy, Transform } from "../policy/types.js";

/** A transform whose references are resolved: values here are secrets and never leave the proxy process. */
export interface ResolvedTransform {
  readonly index: number;
  readonly domain: string;
  /** Lower-case header name → value. */
  readonly inject: ReadonlyMap<string, string>;
  /** Lower-case names. */
  readonly strip: ReadonlySet<string>;
}

const REFERENCE = /\$\{(env|file):([^}]*)\}/g;

export type SecretsResult =
  | { ok: true; transforms: readonly ResolvedTransform[] }
  | { ok: false; errors: FieldError[] };

/**
 * Resolve `${env:NAME}` and `${file:PATH}` inside the proxy. A missing reference makes the whole policy
 * invalid (fail closed: the last good policy stays), and the error names the field and the reference, never
 * a value.
 */
export function resolveTransforms(policy: Policy, env: NodeJS.ProcessEnv = process.env): SecretsResult {
  const errors: FieldError[] = [];
  const out: ResolvedTransform[] = [];
  (policy.transforms ?? []).forEach((t: Transform, index) => {
    const inject = new Map<string, string>();
    for (const [name, raw] of Object.entries(t.inject_headers ?? {})) {
      const field = `transforms[${index}].inject_headers.${name}`;
      const value = raw.replace(REFERENCE, (_m, kind: string, ref: string) => {
        if (kind === "env") {
          const v = env[ref];
          if (v === undefined || v === "") {
            errors.push({ field, error: `references environment variable ${ref}, which is not set in the proxy's environment; set it or change the reference` });
            return "";
          }
          return v;
        }
        try {
          // Trailing newlines are how files are written by editors and `echo`; they are never part of a token.
          return readFileSync(ref, "utf8").replace(/\r?\n$/, "");
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
          errors.push({ field, error: `references file ${ref}, which cannot be read (${code}); create it or change the reference` });
          return "";
        }
      });
      if (/[\r\n\0]/.test(value)) {
        errors.push({ field, error: "resolves to a value containing a line break or NUL, which cannot be sent in a header" });
      }
      inject.set(name.toLowerCase(), value);
    }
    const strip = new Set((t.strip_headers ?? []).map((h) => h.toLowerCase()));
    out.push({ index, domain: t.domain, inject, strip });
  });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, transforms: out };
}

/** The policy as an API may show it: every inject_headers value replaced by "[redacted]". */
export function redactPolicy(policy: Policy): Policy {
  if (!policy.transforms) return policy;
  return {
    ...policy,
    transforms: policy.transforms.map((t) =>
      t.inject_headers
        ? { ...t, inject_headers: Object.fromEntries(Object.keys(t.inject_headers).map((k) => [k, "[redacted]"])) }
        : t,
    ),
  };
}
