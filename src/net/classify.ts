/**
 * Which addresses are *internal* (DESIGN.md "Addresses"): every range that is not global unicast, per the IANA
 * special-purpose address registries (RFC 6890 and successors), plus cloud metadata endpoints even where they
 * are global. Each range has a category so that a denial can name it (`internal:169.254.169.254/32 (cloud-metadata)`).
 *
 * Ranges overlap on purpose: lookups take the longest match, so the most specific category is reported
 * (169.254.169.254 is "cloud-metadata", not just "link-local").
 */
import { CidrTable } from "./cidr.js";
import { canonicalIp, formatIPv4, parseIPv6 } from "./ip.js";
import type { InternalRange } from "./types.js";

export type { InternalRange };

/** Denied unless a more specific allow_cidrs rule or an `--internal-allow` exemption covers the address. */
export const INTERNAL_RANGES: readonly InternalRange[] = Object.freeze(
  [
    // IPv4: https://www.iana.org/assignments/iana-ipv4-special-registry/
    { cidr: "0.0.0.0/8", category: "this-network" }, // RFC 791; connecting to 0.0.0.0 reaches the local host on Linux
    { cidr: "10.0.0.0/8", category: "private" }, // RFC 1918
    { cidr: "100.64.0.0/10", category: "cgnat" }, // RFC 6598 shared address space
    { cidr: "127.0.0.0/8", category: "loopback" }, // RFC 1122
    { cidr: "169.254.0.0/16", category: "link-local" }, // RFC 3927
    { cidr: "172.16.0.0/12", category: "private" }, // RFC 1918
    { cidr: "192.0.0.0/24", category: "ietf-protocol-assignments" }, // RFC 6890 (DS-Lite, NAT64 discovery, ...)
    { cidr: "192.0.2.0/24", category: "documentation" }, // RFC 5737 TEST-NET-1
    { cidr: "192.88.99.0/24", category: "6to4-relay-anycast" }, // RFC 7526, deprecated
    { cidr: "192.168.0.0/16", category: "private" }, // RFC 1918
    { cidr: "198.18.0.0/15", category: "benchmarking" }, // RFC 2544
    { cidr: "198.51.100.0/24", category: "documentation" }, // RFC 5737 TEST-NET-2
    { cidr: "203.0.113.0/24", category: "documentation" }, // RFC 5737 TEST-NET-3
    { cidr: "224.0.0.0/4", category: "multicast" }, // RFC 5771
    { cidr: "240.0.0.0/4", category: "reserved" }, // RFC 1112
    { cidr: "255.255.255.255/32", category: "broadcast" }, // RFC 919

    // Cloud metadata services: they hand out instance credentials, the first thing SSRF goes for.
    { cidr: "169.254.169.254/32", category: "cloud-metadata" }, // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle IMDS
    { cidr: "169.254.170.2/32", category: "cloud-metadata" }, // AWS ECS task metadata and credentials
    { cidr: "168.63.129.16/32", category: "cloud-metadata" }, // Azure WireServer (a global address)
    { cidr: "100.100.100.200/32", category: "cloud-metadata" }, // Alibaba Cloud metadata
    { cidr: "192.0.0.192/32", category: "cloud-metadata" }, // Oracle Cloud Classic metadata
    { cidr: "fd00:ec2::254/128", category: "cloud-metadata" }, // AWS IMDS over IPv6

    // IPv6: https://www.iana.org/assignments/iana-ipv6-special-registry/
    // Everything outside 2000::/3 is not global unicast (RFC 4291 §2.4); the entries below name the known parts.
    { cidr: "::/3", category: "reserved" },
    { cidr: "4000::/2", category: "reserved" },
    { cidr: "8000::/1", category: "reserved" },
    { cidr: "::/128", category: "unspecified" },
    { cidr: "::1/128", category: "loopback" },
    { cidr: "::/96", category: "ipv4-compatible" }, // RFC 4291 §2.5.5.1, deprecated
    { cidr: "64:ff9b:1::/48", category: "nat64-local-use" }, // RFC 8215, not globally reachable
    { cidr: "100::/64", category: "discard-only" }, // RFC 6666
    { cidr: "2001::/23", category: "ietf-protocol-assignments" }, // RFC 2928
    { cidr: "2001:2::/48", category: "benchmarking" }, // RFC 5180
    { cidr: "2001:db8::/32", category: "documentation" }, // RFC 3849
    { cidr: "3fff::/20", category: "documentation" }, // RFC 9637
    { cidr: "5f00::/16", category: "srv6-sid" }, // RFC 9602
    { cidr: "fc00::/7", category: "unique-local" }, // RFC 4193
    { cidr: "fe80::/10", category: "link-local" }, // RFC 4291
    { cidr: "fec0::/10", category: "site-local" }, // RFC 3879, deprecated
    { cidr: "ff00::/8", category: "multicast" }, // RFC 4291
  ].map((r) => Object.freeze(r)),
);

/**
 * Parts of the ranges above that the registries mark globally reachable, or whose meaning is carried by an
 * embedded IPv4 that is judged instead (NAT64, Teredo). The longest match decides, so these carve holes.
 */
export const INTERNAL_EXCEPTIONS: readonly InternalRange[] = Object.freeze(
  [
    { cidr: "192.0.0.9/32", category: "pcp-anycast" }, // RFC 7723
    { cidr: "192.0.0.10/32", category: "turn-anycast" }, // RFC 8155
    { cidr: "64:ff9b::/96", category: "nat64" }, // RFC 6052; judged by the embedded IPv4
    { cidr: "2001::/32", category: "teredo" }, // RFC 4380; judged by the embedded client IPv4
    { cidr: "2001:1::1/128", category: "pcp-anycast" }, // RFC 7723
    { cidr: "2001:1::2/128", category: "turn-anycast" }, // RFC 8155
    { cidr: "2001:1::3/128", category: "dns-sd-srp-anycast" }, // RFC 9665
    { cidr: "2001:3::/32", category: "amt" }, // RFC 7450
    { cidr: "2001:4:112::/48", category: "as112-v6" }, // RFC 7535
    { cidr: "2001:20::/28", category: "orchidv2" }, // RFC 7343
    { cidr: "2001:30::/28", category: "drip" }, // RFC 9374
  ].map((r) => Object.freeze(r)),
);

/** A range from INTERNAL_RANGES (internal: true) or INTERNAL_EXCEPTIONS (internal: false). */
export interface RangeEntry {
  readonly range: InternalRange;
  readonly internal: boolean;
}

/** Build the table of both lists; compiled policies build their own copy so nothing is shared mutable state. */
export function buildInternalTable(): CidrTable<RangeEntry> {
  const t = new CidrTable<RangeEntry>();
  for (const range of INTERNAL_RANGES) t.add(range.cidr, Object.freeze({ range, internal: true }));
  for (const range of INTERNAL_EXCEPTIONS) t.add(range.cidr, Object.freeze({ range, internal: false }));
  return t;
}

let defaultTable: CidrTable<RangeEntry> | undefined;
function table(): CidrTable<RangeEntry> {
  defaultTable ??= buildInternalTable();
  return defaultTable;
}

/**
 * The most specific internal range that contains this address itself (embedded IPv4 not considered; see
 * internalRangeOf), or null when the address is global or not an address.
 */
export function classifyAddress(ip: string): InternalRange | null {
  const hit = table().lookup(ip);
  return hit !== undefined && hit.value.internal ? hit.value.range : null;
}

const MASK32 = 0xffffffffn;

/**
 * The IPv4 address embedded in an IPv6 address (as an integer), or null. Covers IPv4-mapped ::ffff:0:0/96,
 * IPv4-compatible ::/96 (not :: or ::1), NAT64 64:ff9b::/96 and 64:ff9b:1::/48 (RFC 8215; the last 32 bits,
 * the layout of a /96 taken from it), 6to4 2002::/16 (bits 16..47) and Teredo 2001::/32 (the client address,
 * last 32 bits inverted, RFC 4380 §4).
 */
export function embeddedIPv4Value(v: bigint): bigint | null {
  const top96 = v >> 32n;
  if (top96 === 0xffffn) return v & MASK32; // mapped
  if (top96 === 0n) return v > 1n ? v & MASK32 : null; // compatible
  if (top96 === 0x64ff9b0000000000000000n) return v & MASK32; // NAT64 well-known prefix
  if (v >> 80n === 0x64ff9b0001n) return v & MASK32; // NAT64 local-use
  if (v >> 112n === 0x2002n) return (v >> 80n) & MASK32; // 6to4
  if (v >> 96n === 0x20010000n) return ~v & MASK32; // Teredo
  return null;
}

/** The embedded IPv4 (dotted quad) of an IPv6 address in one of the embedding formats, else null. */
export function embeddedIPv4(ip6: string): string | null {
  const v = parseIPv6(ip6);
  if (v === null) return null;
  const v4 = embeddedIPv4Value(v);
  return v4 === null ? null : formatIPv4(v4);
}

/**
 * The internal range that makes this address internal, looking at the address and at any embedded IPv4,
 * or null. `address` says which of the two matched (the embedded one only when the IPv6 itself is not internal).
 */
export function internalRangeOf(ip: string): { readonly range: InternalRange; readonly address: string } | null {
  const c = canonicalIp(ip);
  if (c === null) return null;
  const direct = classifyAddress(ip);
  if (direct !== null) return { range: direct, address: ip };
  if (c.family === 6) {
    const v4 = embeddedIPv4Value(c.value);
    if (v4 !== null) {
      const text = formatIPv4(v4);
      const r = classifyAddress(text);
      if (r !== null) return { range: r, address: text };
    }
  }
  return null;
}
