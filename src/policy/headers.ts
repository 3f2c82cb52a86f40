/**
 * Header names and values of transforms (DESIGN.md "Transforms"). Shared by validation (schema.ts) and by the
 * proxy, which resolves the references this module parses. Error messages never quote a header value: it may
 * be a secret.
 */

// RFC 9110 §5.6.2 token.
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// RFC 9110 §5.5: field-vchar, SP and HTAB, obs-text. No CR, LF, NUL or other controls (header injection).
const FIELD_VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const MAX_HEADER_VALUE_LENGTH = 8192;

/** Names a transform may not inject, with the reason told to the user. */
const NOT_INJECTABLE: ReadonlyMap<string, string> = new Map([
  ["connection", "it is a hop-by-hop header (RFC 9110 §7.6.1) that the proxy manages for each connection"],
  ["keep-alive", "it is a hop-by-hop header (RFC 9110 §7.6.1) that the proxy manages for each connection"],
  ["te", "it is a hop-by-hop header (RFC 9110 §10.1.4) that the proxy manages for each connection"],
  ["trailer", "it is a hop-by-hop header (RFC 9110 §6.6.2) that describes the message framing the proxy produces"],
  ["transfer-encoding", "it decides the message framing; a second framing header is how requests get smuggled (RFC 9112 §6.1)"],
  ["content-length", "it decides the message framing; a wrong length is how requests get smuggled (RFC 9112 §6.2)"],
  ["upgrade", "it is a hop-by-hop header (RFC 9110 §7.8) that would switch the connection to another protocol"],
  ["host", "the proxy sets it from the request target that the policy judged; another value would reach a different virtual host"],
]);

/** Why `name` is not an HTTP header name, or null. */
export function headerNameError(name: string): string | null {
  if (name.length === 0) return "a header name cannot be empty";
  if (!TOKEN_RE.test(name)) {
    return `${JSON.stringify(name)} is not a valid HTTP header name; use letters, digits and !#$%&'*+-.^_\`|~ only (RFC 9110 §5.6.2)`;
  }
  return null;
}

/** Why `name` cannot be injected, or null. */
export function injectHeaderNameError(name: string): string | null {
  const e = headerNameError(name);
  if (e !== null) return e;
  const lower = name.toLowerCase();
  const why = NOT_INJECTABLE.get(lower);
  if (why !== undefined) return `${JSON.stringify(name)} cannot be injected: ${why}`;
  if (lower.startsWith("proxy-")) {
    return `${JSON.stringify(name)} cannot be injected: Proxy-* headers are addressed to proxies, not to the upstream, and are never forwarded`;
  }
  return null;
}

export type ValuePart =
  | { readonly kind: "literal"; readonly text: string }
  | { readonly kind: "env"; readonly name: string }
  | { readonly kind: "file"; readonly path: string };

export type HeaderValueResult =
  | { readonly ok: true; readonly parts: readonly ValuePart[] }
  | { readonly ok: false; readonly error: string };

const REFERENCE_HELP = "write ${env:NAME} (NAME of letters, digits and _, not starting with a digit) or ${file:/absolute/path}";

/**
 * Split an inject_headers value into literals and references. Every `${` starts a reference (there is no
 * escape), so a typo in a reference is an error rather than a literal that would leak the reference text.
 */
export function parseHeaderValue(value: string): HeaderValueResult {
  if (value.length > MAX_HEADER_VALUE_LENGTH) {
    return { ok: false, error: `the value is longer than ${MAX_HEADER_VALUE_LENGTH} characters` };
  }
  if (!FIELD_VALUE_RE.test(value)) {
    return { ok: false, error: "the value contains a control character (CR, LF, NUL, ...) or a character outside Latin-1; header values cannot carry those" };
  }
  const parts: ValuePart[] = [];
  let i = 0;
  while (i < value.length) {
    const start = value.indexOf("${", i);
    if (start < 0) {
      parts.push({ kind: "literal", text: value.slice(i) });
      break;
    }
    if (start > i) parts.push({ kind: "literal", text: value.slice(i, start) });
    const end = value.indexOf("}", start);
    if (end < 0) return { ok: false, error: `the value has an unterminated "\${" at offset ${start}; ${REFERENCE_HELP}` };
    const body = value.slice(start + 2, end);
    const colon = body.indexOf(":");
    const scheme = colon < 0 ? "" : body.slice(0, colon);
    const arg = body.slice(colon + 1);
    if (scheme === "env" && ENV_NAME_RE.test(arg)) {
      parts.push({ kind: "env", name: arg });
    } else if (scheme === "file" && arg.startsWith("/") && !arg.split("/").includes("..")) {
      parts.push({ kind: "file", path: arg });
    } else if (scheme === "file") {
      return { ok: false, error: `the value has a \${file:...} reference at offset ${start} whose path is not absolute or contains ".."; ${REFERENCE_HELP}` };
    } else {
      return { ok: false, error: `the value has a "\${" at offset ${start} that is not a valid reference; ${REFERENCE_HELP}` };
    }
    i = end + 1;
  }
  return { ok: true, parts };
}
