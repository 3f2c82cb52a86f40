/**
 * Strict IP address text <-> integer conversion, shared by the host parser, the CIDR table and the classifier.
 *
 * Strict on purpose: this parses addresses that are already canonical (resolver answers, CIDR rules, output of
 * normaliseHost). The lenient WHATWG spellings of IPv4 (`127.1`, `0x7f.1`) are handled once, in hostport.ts;
 * accepting them here as well would give CIDR rules two meanings for the same text.
 */

export type IpFamily = 4 | 6;

export interface ParsedIp {
  readonly family: IpFamily;
  /** The address as an unsigned integer: 32 bits for IPv4, 128 bits for IPv6. */
  readonly value: bigint;
}

export const IPV4_BITS = 32;
export const IPV6_BITS = 128;

// One decimal octet without leading zeros: a leading zero means octal to inet_aton, so "010" is ambiguous.
const OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])";
const IPV4_RE = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);
const HEX_GROUP_RE = /^[0-9a-fA-F]{1,4}$/;

/** Dotted-quad IPv4 with decimal octets and no leading zeros, or null. */
export function parseIPv4(s: string): bigint | null {
  if (!IPV4_RE.test(s)) return null;
  let v = 0n;
  for (const part of s.split(".")) v = (v << 8n) | BigInt(Number(part));
  return v;
}

/**
 * RFC 4291 §2.2 text forms: eight groups, one `::`, optional trailing dotted quad. No brackets, no zone ID
 * (a zone names an interface of the proxy host, which is never a meaningful egress target).
 */
export function parseIPv6(s: string): bigint | null {
  if (s.length < 2 || s.length > 45) return null;
  let groups: number[] = [];
  let tail = s;
  // A trailing dotted quad supplies the last two groups.
  const lastColon = s.lastIndexOf(":");
  if (lastColon >= 0 && s.indexOf(".", lastColon) > lastColon) {
    const v4 = parseIPv4(s.slice(lastColon + 1));
    if (v4 === null) return null;
    tail = s.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::", "a::b:1.2.3.4" leaves "a::b:"; a lone trailing ':' must be part of "::".
    if (tail.endsWith(":") && !tail.endsWith("::")) tail = tail.slice(0, -1);
    groups = [Number(v4 >> 16n), Number(v4 & 0xffffn)];
  }
  const halves = tail.split("::");
  if (halves.length > 2) return null;
  const parseHalf = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    for (const g of h.split(":")) {
      if (!HEX_GROUP_RE.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parseHalf(halves[0] ?? "");
  if (head === null) return null;
  let all: number[];
  if (halves.length === 2) {
    const rest = parseHalf(halves[1] ?? "");
    if (rest === null) return null;
    const fill = 8 - head.length - rest.length - groups.length;
    // "::" stands for at least one zero group (RFC 4291 §2.2 item 2; RFC 5952 §4.2.2 never emits it for one,
    // but accepting it is what every stack does).
    if (fill < 1) return null;
    all = [...head, ...new Array<number>(fill).fill(0), ...rest, ...groups];
  } else {
    all = [...head, ...groups];
  }
  if (all.length !== 8) return null;
  let v = 0n;
  for (const g of all) v = (v << 16n) | BigInt(g);
  return v;
}

/** An IPv4 (strict dotted quad) or IPv6 address, or null. */
export function parseIp(s: string): ParsedIp | null {
  if (s.includes(":")) {
    const v = parseIPv6(s);
    return v === null ? null : { family: 6, value: v };
  }
  const v = parseIPv4(s);
  return v === null ? null : { family: 4, value: v };
}

export function formatIPv4(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String(Number((v >> shift) & 0xffn))).join(".");
}

/** RFC 5952 §4: lower case, no leading zeros, the longest run (≥ 2) of zero groups as `::`, first run on a tie. */
export function formatIPv6(v: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

export function formatIp(ip: ParsedIp): string {
  return ip.family === 4 ? formatIPv4(ip.value) : formatIPv6(ip.value);
}

const MAPPED_PREFIX = 0xffffn << 32n;

/** If `v` is an IPv4-mapped IPv6 address (::ffff:0:0/96), the IPv4 it maps, else null. */
export function unmapIPv4(v: bigint): bigint | null {
  return v >> 32n === 0xffffn ? v - MAPPED_PREFIX : null;
}

/**
 * The canonical text of an address in the form the whole project uses: dotted quad for IPv4 and for
 * IPv4-mapped IPv6 (the same destination, DESIGN.md "Names"), RFC 5952 for other IPv6. Null if not an address.
 */
export function canonicalIp(s: string): ParsedIp | null {
  const ip = parseIp(s);
  if (ip === null) return null;
  if (ip.family === 6) {
    const v4 = unmapIPv4(ip.value);
    if (v4 !== null) return { family: 4, value: v4 };
  }
  return ip;
}
