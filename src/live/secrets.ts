import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { MAX_HEADER_VALUE_LENGTH } from "../policy/headers.js";
import type { FieldError, Policy, Transform } from "../policy/types.js";

/** A transform whose references are resolved: values here are secrets and never leave the proxy process. */
export interface ResolvedTransform {
  readonly index: number;
  readonly domain: string;
  /** Lower-case header name → value. */
  readonly inject: ReadonlyMap<string, string>;
  /** Lower-case injected name → the spelling the policy used, which is what goes upstream. */
  readonly spelling: ReadonlyMap<string, string>;
  /** Lower-case names. */
  readonly strip: ReadonlySet<string>;
}

const REFERENCE = /\$\{(env|file):([^}]*)\}/g;
// RFC 9110 §5.5 field-value (the same grammar src/policy/headers.ts applies to literals).
const FIELD_VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/;

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
    const spelling = new Map<string, string>();
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
        const read = readSecretFile(ref);
        if (!read.ok) {
          errors.push({ field, error: `references file ${ref}, which ${read.why}; create it or change the reference` });
          return "";
        }
        if (read.value === "") {
          errors.push({ field, error: `references file ${ref}, which is empty; write the value into it or change the reference` });
        }
        return read.value;
      });
      // The resolved value is checked again: a file or variable can hold what the literal grammar forbids. A value
      // Node's HTTP client would reject at send time must fail here, at load, naming the field and never the value.
      if (!FIELD_VALUE_RE.test(value)) {
        errors.push({ field, error: "resolves to a value containing a control character (CR, LF, NUL, ...) or a character outside Latin-1, which cannot be sent in a header" });
      } else if (value.length > MAX_HEADER_VALUE_LENGTH) {
        errors.push({ field, error: `resolves to a value longer than ${MAX_HEADER_VALUE_LENGTH} characters` });
      }
      inject.set(name.toLowerCase(), value);
      spelling.set(name.toLowerCase(), name);
    }
    const strip = new Set((t.strip_headers ?? []).map((h) => h.toLowerCase()));
    out.push({ index, domain: t.domain, inject, spelling, strip });
  });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, transforms: out };
}

/**
 * Read a `${file:PATH}` secret: a regular file only (a FIFO would block the proxy, a device could be endless) and
 * at most a header value's worth of bytes. Trailing newlines are how editors and `echo` end files; they are never
 * part of a token. The reason on failure is an errno code or a fixed phrase, never content.
 */
function readSecretFile(path: string): { ok: true; value: string } | { ok: false; why: string } {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    return { ok: false, why: `cannot be read (${(err as NodeJS.ErrnoException).code ?? "unreadable"})` };
  }
  try {
    if (!fstatSync(fd).isFile()) return { ok: false, why: "is not a regular file" };
    const buf = Buffer.alloc(MAX_HEADER_VALUE_LENGTH + 3);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    return { ok: true, value: buf.subarray(0, n).toString("utf8").replace(/\r?\n$/, "") };
  } catch (err) {
    return { ok: false, why: `cannot be read (${(err as NodeJS.ErrnoException).code ?? "unreadable"})` };
  } finally {
    closeSync(fd);
  }
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

export interface TransformedHeaders {
  /** Flat [name, value, …]: the input without stripped or injected names, then one entry per injected name. */
  readonly headers: string[];
  /** Lower-case names stripped or injected, for the audit log (names only, never values). */
  readonly names: string[];
}

/**
 * Apply every matching transform to a request's headers (DESIGN.md "Transforms"): first the strip_headers of all
 * of them, then their inject_headers in list order. Every client header whose name is stripped or injected is
 * removed whatever its case or count; an injected name leaves exactly once, a later transform's value replacing an
 * earlier one's. Strips never remove an injected value, so the order of transforms cannot silently drop a
 * configured credential. Pure: the caller has already removed hop-by-hop headers or will.
 */
export function applyTransforms(raw: readonly string[], transforms: readonly ResolvedTransform[]): TransformedHeaders {
  if (transforms.length === 0) return { headers: [...raw], names: [] };
  const drop = new Set<string>();
  const inject = new Map<string, { name: string; value: string }>();
  for (const t of transforms) {
    for (const name of t.strip) drop.add(name);
    for (const [name, value] of t.inject) {
      drop.add(name);
      inject.delete(name); // re-insert: the last transform that sets a name decides its value and position
      inject.set(name, { name: t.spelling.get(name) ?? name, value });
    }
  }
  const headers: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!drop.has(raw[i]!.toLowerCase())) headers.push(raw[i]!, raw[i + 1]!);
  }
  for (const { name, value } of inject.values()) headers.push(name, value);
  return { headers, names: [...drop] };
}
