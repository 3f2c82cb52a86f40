/**
 * The one host and host:port parser of the project (CONNECT authority, Host header, absolute-URL hosts, CLI
 * arguments). Everything downstream compares hosts as plain strings, so every spelling of a host must come out
 * of here as exactly one string, or be rejected.
 */
import { domainToASCII } from "node:url";
import { canonicalIp, formatIp, parseIPv6, unmapIPv4, formatIPv4 } from "./ip.js";
import type { Host, HostNormaliseResult, HostParseResult } from "./types.js";

export type { Host, HostNormaliseResult, HostParseResult };

const MAX_NAME_OCTETS = 253; // RFC 1035 §2.3.4 (255 on the wire, minus the length octet and root label)
const MAX_LABEL_OCTETS = 63;

// Characters that may reach the IDNA step: LDH, underscore (real DNS uses it: _dmarc, SRV-style names), dot,
// and any non-ASCII code point (IDNA maps or rejects those). Everything else is refused up front, because the
// WHATWG host parser would otherwise percent-decode (`exa%6dple`) or cut at (`a/b` → `a`) it.
const PRE_IDNA_RE = /^[A-Za-z0-9._\-\u{80}-\u{10ffff}]+$/u;
const LABEL_RE = /^[a-z0-9_-]+$/;
// WHATWG "ends in a number": such a last label makes the whole host an IPv4 spelling (or invalid).
const NUMERIC_LABEL_RE = /^(?:[0-9]+|0x[0-9a-f]*)$/;
const DOTTED_QUAD_RE = /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/;

function fail(error: string): { ok: false; error: string } {
  return { ok: false, error };
}

function ipHost(ip: { family: 4 | 6; value: bigint }): Host {
  return { kind: "ip", ip: formatIp(ip), family: ip.family };
}

function describe(raw: string): string {
  return JSON.stringify(raw.length > 80 ? `${raw.slice(0, 77)}...` : raw);
}

function normaliseIPv6(inner: string, raw: string): HostNormaliseResult {
  if (inner.includes("%")) {
    return fail(`${describe(raw)} has an IPv6 zone ID; zone IDs name an interface of the proxy host and are not accepted`);
  }
  const v = parseIPv6(inner);
  if (v === null) return fail(`${describe(raw)} is not a valid IPv6 address`);
  const v4 = unmapIPv4(v);
  // An IPv4-mapped address reaches the IPv4 host, so it is that host (DESIGN.md "Names").
  if (v4 !== null) return { ok: true, host: { kind: "ip", ip: formatIPv4(v4), family: 4 } };
  return { ok: true, host: ipHost({ family: 6, value: v }) };
}

/**
 * True when `name` is already what normaliseHost returns for a name host, checked without the IDNA step.
 * Lets hot paths (and compiled patterns) skip the comparatively slow domainToASCII call.
 */
export function isCanonicalName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_OCTETS) return false;
  const labels = name.split(".");
  for (const label of labels) {
    if (label.length === 0 || label.length > MAX_LABEL_OCTETS || !LABEL_RE.test(label)) return false;
    // "xn--" labels must be valid punycode; only IDNA can tell, so take the slow path for them.
    if (label.startsWith("xn--")) return false;
  }
  return !NUMERIC_LABEL_RE.test(labels[labels.length - 1] ?? "");
}

/**
 * Normalise a host as it appears in a request or a rule: lower case, trailing dot removed, IDN to punycode
 * A-labels, every IPv4 spelling to a dotted quad, IPv6 (bracketed or not) to its RFC 5952 form, IPv4-mapped
 * IPv6 to its IPv4. Zone IDs, empty or oversized labels and characters outside hostnames are rejected.
 */
export function normaliseHost(raw: string): HostNormaliseResult {
  if (raw.length === 0) return fail("the host is empty");
  if (raw.length > 1024) return fail("the host is longer than any valid host name");
  if (raw.startsWith("[") || raw.endsWith("]")) {
    if (!(raw.startsWith("[") && raw.endsWith("]"))) return fail(`${describe(raw)} has an unbalanced IPv6 bracket`);
    return normaliseIPv6(raw.slice(1, -1), raw);
  }
  if (raw.includes(":")) {
    if (raw.indexOf(":") === raw.lastIndexOf(":")) {
      return fail(`${describe(raw)} contains ":"; give the host without a port here`);
    }
    return normaliseIPv6(raw, raw);
  }
  if (raw.includes("%")) return fail(`${describe(raw)} contains "%"; percent-encoding is not accepted in host names`);
  if (!PRE_IDNA_RE.test(raw)) {
    return fail(`${describe(raw)} contains a character that is not valid in a host name (letters, digits, "-", "_" and "." only)`);
  }
  if (isCanonicalName(raw)) return { ok: true, host: { kind: "name", name: raw } };

  // One trailing dot is the absolute (FQDN) spelling of the same name; more than one is an empty label.
  const stripped = raw.endsWith(".") ? raw.slice(0, -1) : raw;
  if (stripped.length === 0) return fail(`${describe(raw)} has no labels`);
  if (stripped.split(".").some((l) => l.length === 0)) return fail(`${describe(raw)} has an empty label`);

  // WHATWG URL host parsing (UTS #46 mapping, punycode, and the IPv4 number parser that reads 127.1,
  // 2130706433, 0x7f.0.0.1 and 0177.0.0.1 the way browsers and inet_aton do).
  const ascii = domainToASCII(stripped);
  if (ascii === "") return fail(`${describe(raw)} is not a valid host name (IDNA conversion failed)`);
  if (DOTTED_QUAD_RE.test(ascii)) {
    const ip = canonicalIp(ascii);
    if (ip === null) return fail(`${describe(raw)} is not a valid IPv4 address`);
    return { ok: true, host: ipHost(ip) };
  }
  // IDNA mapping can turn code points into dots (U+3002) or drop them (U+00AD); validate what came out.
  const name = ascii.endsWith(".") ? ascii.slice(0, -1) : ascii;
  if (name.length > MAX_NAME_OCTETS) {
    return fail(`${describe(raw)} is ${name.length} octets long; a host name has at most ${MAX_NAME_OCTETS}`);
  }
  for (const label of name.split(".")) {
    if (label.length === 0) return fail(`${describe(raw)} has an empty label`);
    if (label.length > MAX_LABEL_OCTETS) {
      return fail(`${describe(raw)} has a label of ${label.length} octets; a label has at most ${MAX_LABEL_OCTETS}`);
    }
    if (!LABEL_RE.test(label)) {
      return fail(`${describe(raw)} contains a character that is not valid in a host name (letters, digits, "-", "_" and "." only)`);
    }
  }
  return { ok: true, host: { kind: "name", name } };
}

const PORT_RE = /^[0-9]{1,5}$/;

/** A decimal port 1..65535 (digits only: no sign, no whitespace, no hex), or null. */
export function parsePort(s: string): number | null {
  if (!PORT_RE.test(s)) return null;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : null;
}

export function isValidPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}

/**
 * Parse `host:port`, `[v6]:port`, or a bare host with `defaultPort`. Unbracketed IPv6 is rejected: in
 * `::1:443` nobody can tell where the address ends.
 */
export function parseHostPort(input: string, defaultPort?: number): HostParseResult {
  if (input.length === 0) return fail("the target is empty");
  if (/\s/u.test(input)) return fail(`${describe(input)} contains whitespace`);
  if (input.includes("@")) return fail(`${describe(input)} contains "@"; user information is not accepted in a target`);
  if (input.includes("/")) return fail(`${describe(input)} contains "/"; give host:port only, without a scheme or path`);

  let hostPart: string;
  let portPart: string | null;
  if (input.startsWith("[")) {
    const close = input.indexOf("]");
    if (close < 0) return fail(`${describe(input)} has an unclosed IPv6 bracket`);
    hostPart = input.slice(0, close + 1);
    const rest = input.slice(close + 1);
    if (rest === "") portPart = null;
    else if (rest.startsWith(":")) portPart = rest.slice(1);
    else return fail(`${describe(input)} has text after the IPv6 bracket that is not ":port"`);
  } else {
    const colons = input.split(":").length - 1;
    if (colons > 1) {
      return fail(`${describe(input)} is ambiguous; write an IPv6 address in brackets, such as [::1]:443`);
    }
    if (input.includes("]")) return fail(`${describe(input)} has an unbalanced IPv6 bracket`);
    const i = input.indexOf(":");
    hostPart = i < 0 ? input : input.slice(0, i);
    portPart = i < 0 ? null : input.slice(i + 1);
  }

  let port: number;
  if (portPart === null) {
    if (defaultPort === undefined) return fail(`${describe(input)} has no port; write host:port`);
    if (!isValidPort(defaultPort)) return fail(`the default port ${defaultPort} is not in 1..65535`);
    port = defaultPort;
  } else {
    const p = parsePort(portPart);
    if (p === null) return fail(`${describe(input)} has an invalid port; a port is a decimal number in 1..65535`);
    port = p;
  }

  if (hostPart.startsWith("[")) {
    const inner = hostPart.slice(1, -1);
    if (!inner.includes(":")) return fail(`${describe(input)} has brackets around something that is not an IPv6 address`);
  }
  const h = normaliseHost(hostPart);
  if (!h.ok) return h;
  return { ok: true, host: h.host, port };
}

/** The host as a plain string: the name, or the IP without brackets. */
export function hostString(h: Host): string {
  return h.kind === "name" ? h.name : h.ip;
}

/** `host:port`, with brackets around IPv6 so that the result parses back with parseHostPort. */
export function formatHostPort(h: Host, port: number): string {
  return h.kind === "ip" && h.family === 6 ? `[${h.ip}]:${port}` : `${hostString(h)}:${port}`;
}

/**
 * A Host value as normaliseHost would have produced it, or null if it is not one. Cheap for hosts that are
 * already canonical; used by the policy engine so that a caller's non-normalised Host can never dodge a rule.
 */
export function canonicaliseHost(h: Host): Host | null {
  const v: unknown = h === null || typeof h !== "object" ? undefined : h.kind === "ip" ? h.ip : h.kind === "name" ? h.name : undefined;
  if (typeof v !== "string") return null;
  if (h.kind === "name" && isCanonicalName(v)) return h;
  if (h.kind === "ip") {
    const ip = canonicalIp(v);
    if (ip === null) return null;
    const text = formatIp(ip);
    return text === v && h.family === ip.family ? h : { kind: "ip", ip: text, family: ip.family };
  }
  const n = normaliseHost(v);
  return n.ok ? n.host : null;
}
