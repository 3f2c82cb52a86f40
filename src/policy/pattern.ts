/**
 * Domain patterns (DESIGN.md "Names"): `api.example.com`, `*.example.com`, `api-*.example.com`, each with an
 * optional `:port`. Parsed and normalised once; schema.ts reports the errors, compile.ts indexes the result.
 */
import type { parse as TldtsParse } from "tldts";
import { normaliseHost, parsePort } from "../net/hostport.js";
import { requireCjs } from "../util/cjs.js";

const parseDomain = (requireCjs("tldts") as { parse: typeof TldtsParse }).parse;

export type PatternKind = "exact" | "glob" | "wild";

export interface DomainPattern {
  /** Normalised text, e.g. `*.example.com:443`: what rule strings and the returned Policy show. */
  readonly text: string;
  readonly kind: PatternKind;
  /** Normalised labels of the host part; for "wild", without the leading `*`. */
  readonly labels: readonly string[];
  /** Labels the pattern pins (DESIGN.md specificity): all labels, minus the leading `*` of a wildcard. */
  readonly pinned: number;
  readonly port: number | null;
  /** Labels after the last label containing `*`, joined (the exact name for "exact" patterns). */
  readonly fixedSuffix: string;
  /** For "glob": one regex over the whole host, each `*` confined to its label. */
  readonly regex: RegExp | null;
}

export type PatternParseResult =
  | { readonly ok: true; readonly pattern: DomainPattern }
  | { readonly ok: false; readonly error: string };

const GLOB_LABEL_RE = /^[a-z0-9_*-]+$/;
const MAX_NAME_OCTETS = 253;
const MAX_LABEL_OCTETS = 63;

function fail(error: string): { ok: false; error: string } {
  return { ok: false, error };
}

function show(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);
}

/** True when `suffix` is itself a public suffix (ICANN section; unknown TLDs count, by the PSL default rule). */
export function isPublicSuffix(suffix: string): boolean {
  // Private-section entries (github.io, githubusercontent.com) are not counted: `*.githubusercontent.com` is a
  // reasonable rule that the CONTRACT's own example uses. Hostname validation is ours, not tldts's.
  const r = parseDomain(suffix, { allowPrivateDomains: false, validateHostname: false });
  return r.publicSuffix === suffix;
}

/** Split `host:port`; IPv6 literals (more than one colon, brackets) are left whole for the IP check. */
function splitPort(raw: string): { host: string; port: string | null } {
  if (raw.startsWith("[")) {
    const close = raw.indexOf("]");
    if (close >= 0 && raw[close + 1] === ":") return { host: raw.slice(0, close + 1), port: raw.slice(close + 2) };
    return { host: raw, port: null };
  }
  const first = raw.indexOf(":");
  if (first < 0 || first !== raw.lastIndexOf(":")) return { host: raw, port: null };
  return { host: raw.slice(0, first), port: raw.slice(first + 1) };
}

function ipLiteralError(raw: string): { ok: false; error: string } {
  return fail(`${show(raw)} is an IP address; domain patterns never match IP literals, use allow_cidrs or deny_cidrs for addresses`);
}

/** Normalise the non-wildcard labels by running normaliseHost over the pattern with `*` labels replaced. */
function normaliseLabels(hostPart: string, raw: string): { ok: true; labels: string[] } | { ok: false; error: string } {
  const rawLabels = hostPart.split(".");
  const globAt = new Set<number>();
  const probe = rawLabels.map((l, i) => {
    if (!l.includes("*")) return l;
    globAt.add(i);
    // A placeholder that survives IDNA unchanged and cannot be read as a number.
    return "glob";
  });
  const r = normaliseHost(probe.join("."));
  if (!r.ok) return fail(`${show(raw)} is not a valid domain pattern: ${r.error.replace(/^"[^"]*" /, "it ")}`);
  if (r.host.kind === "ip") return ipLiteralError(raw);
  const labels = r.host.name.split(".");
  if (labels.length !== rawLabels.length - (rawLabels[rawLabels.length - 1] === "" ? 1 : 0)) {
    return fail(`${show(raw)} changes its label count under IDNA mapping; write it with plain ASCII dots`);
  }
  for (const i of globAt) {
    const g = (rawLabels[i] ?? "").toLowerCase();
    if (!GLOB_LABEL_RE.test(g)) {
      return fail(`${show(raw)} has a wildcard label with characters other than letters, digits, "-", "_" and "*"; write non-ASCII names as punycode (xn--...)`);
    }
    if (g.length > MAX_LABEL_OCTETS) return fail(`${show(raw)} has a label longer than ${MAX_LABEL_OCTETS} octets`);
    labels[i] = g;
  }
  if (labels.join(".").length > MAX_NAME_OCTETS) return fail(`${show(raw)} is longer than ${MAX_NAME_OCTETS} octets`);
  return { ok: true, labels };
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
}

function globRegex(labels: readonly string[]): RegExp {
  const body = labels.map((l) => l.split("*").map(escapeRegex).join("[a-z0-9_-]*")).join("\\.");
  return new RegExp(`^${body}$`);
}

/** Parse and normalise one domain pattern, or say why it is not one. */
export function parseDomainPattern(raw: string): PatternParseResult {
  if (raw.length === 0) return fail("the pattern is empty; write a host name such as \"api.example.com\"");
  if (/\s/u.test(raw)) return fail(`${show(raw)} contains whitespace`);
  if (raw.includes("/")) return fail(`${show(raw)} looks like a URL or a path; give a host name pattern such as "api.example.com"`);
  const { host: hostPart, port: portText } = splitPort(raw);

  let port: number | null = null;
  if (portText !== null) {
    port = parsePort(portText);
    if (port === null) return fail(`${show(raw)} has an invalid port; a port is a decimal number in 1..65535`);
  }
  if (hostPart.startsWith("[") || hostPart.includes(":")) return ipLiteralError(raw);
  if (hostPart === "*" || hostPart === "*.") {
    return fail(`${show(raw)} would match every host; use mode "allow-all" (with deny rules) instead of a catch-all pattern`);
  }
  if (hostPart.endsWith("..")) return fail(`${show(raw)} has an empty label`);

  const wild = hostPart.startsWith("*.");
  const rest = wild ? hostPart.slice(2) : hostPart;
  if (wild && rest.includes("*")) {
    return fail(`${show(raw)} combines a leading "*." with another "*"; a leading "*." already matches every subdomain`);
  }
  if (!wild && rest.split(".").some((l) => l === "*")) {
    return fail(`${show(raw)} has a "*" label that is not the first label; "*" as a whole label is only allowed as a leading "*." (any subdomain)`);
  }
  const n = normaliseLabels(rest, raw);
  if (!n.ok) return n;
  const labels = n.labels;

  let lastGlob = -1;
  labels.forEach((l, i) => {
    if (l.includes("*")) lastGlob = i;
  });
  const kind: PatternKind = wild ? "wild" : lastGlob >= 0 ? "glob" : "exact";
  const fixedSuffix = labels.slice(lastGlob + 1).join(".");
  if (kind !== "exact") {
    if (fixedSuffix === "") {
      return fail(`${show(raw)} has a "*" in its last label; the part after the last wildcard must be a registrable domain such as "example.com"`);
    }
    if (isPublicSuffix(fixedSuffix)) {
      const example = kind === "wild" ? `*.example.${fixedSuffix}` : `${labels.slice(0, lastGlob + 1).join(".")}.example.${fixedSuffix}`;
      return fail(
        `${show(raw)} is a wildcard over the public suffix "${fixedSuffix}", which would match domains of unrelated owners; name a registrable domain such as "${example}"`,
      );
    }
  }
  const hostText = (wild ? "*." : "") + labels.join(".");
  return {
    ok: true,
    pattern: Object.freeze({
      text: port === null ? hostText : `${hostText}:${port}`,
      kind,
      labels: Object.freeze(labels),
      pinned: labels.length,
      port,
      fixedSuffix,
      regex: kind === "glob" ? globRegex(labels) : null,
    }),
  };
}
