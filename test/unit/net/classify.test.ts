import { describe, expect, it } from "vitest";
import { parseCidr } from "../../../src/net/cidr.js";
import {
  INTERNAL_EXCEPTIONS,
  INTERNAL_RANGES,
  classifyAddress,
  embeddedIPv4,
  internalRangeOf,
} from "../../../src/net/classify.js";
import { formatIp, type ParsedIp } from "../../../src/net/ip.js";

function edges(cidr: string): { first: string; last: string; before: string | null; after: string | null } {
  const r = parseCidr(cidr);
  if (!r.ok) throw new Error(r.error);
  const { family, network, prefixLength } = r.cidr;
  const width = family === 4 ? 32 : 128;
  const size = 1n << BigInt(width - prefixLength);
  const max = (1n << BigInt(width)) - 1n;
  const fmt = (v: bigint): string => formatIp({ family, value: v } as ParsedIp);
  const lastV = network + size - 1n;
  return {
    first: fmt(network),
    last: fmt(lastV),
    before: network === 0n ? null : fmt(network - 1n),
    after: lastV === max ? null : fmt(lastV + 1n),
  };
}

describe("INTERNAL_RANGES", () => {
  it("lists each range once, in canonical form", () => {
    const texts = INTERNAL_RANGES.map((r) => r.cidr);
    expect(new Set(texts).size).toBe(texts.length);
    for (const r of [...INTERNAL_RANGES, ...INTERNAL_EXCEPTIONS]) {
      const p = parseCidr(r.cidr);
      expect(p.ok && p.cidr.text).toBe(r.cidr);
    }
  });

  it.each([
    ["0.0.0.0/8", "this-network"],
    ["10.0.0.0/8", "private"],
    ["100.64.0.0/10", "cgnat"],
    ["127.0.0.0/8", "loopback"],
    ["169.254.0.0/16", "link-local"],
    ["172.16.0.0/12", "private"],
    ["192.0.0.0/24", "ietf-protocol-assignments"],
    ["192.0.2.0/24", "documentation"],
    ["192.88.99.0/24", "6to4-relay-anycast"],
    ["192.168.0.0/16", "private"],
    ["198.18.0.0/15", "benchmarking"],
    ["198.51.100.0/24", "documentation"],
    ["203.0.113.0/24", "documentation"],
    ["224.0.0.0/4", "multicast"],
    ["240.0.0.0/4", "reserved"],
    ["255.255.255.255/32", "broadcast"],
    ["::/128", "unspecified"],
    ["::1/128", "loopback"],
    ["100::/64", "discard-only"],
    ["2001:db8::/32", "documentation"],
    ["3fff::/20", "documentation"],
    ["fc00::/7", "unique-local"],
    ["fe80::/10", "link-local"],
    ["fec0::/10", "site-local"],
    ["ff00::/8", "multicast"],
    ["64:ff9b:1::/48", "nat64-local-use"],
    ["5f00::/16", "srv6-sid"],
  ])("%s is internal (%s) from its first to its last address, not beyond", (cidr, category) => {
    expect(INTERNAL_RANGES).toContainEqual({ cidr, category });
    const e = edges(cidr);
    // The first and last address may sit in a more specific range (255.255.255.255, ::), so check membership.
    expect(classifyAddress(e.first)).not.toBeNull();
    expect(classifyAddress(e.last)).not.toBeNull();
    const mid = e.first.includes(":") ? e.first.replace(/::$/, "::5") : e.first.replace(/\.0$/, ".5");
    if (mid !== e.first && classifyAddress(mid)?.cidr === cidr) expect(classifyAddress(mid)?.category).toBe(category);
  });

  it.each([
    ["9.255.255.255", null],
    ["10.0.0.0", "private"],
    ["10.255.255.255", "private"],
    ["11.0.0.0", null],
    ["100.63.255.255", null],
    ["100.64.0.0", "cgnat"],
    ["100.127.255.255", "cgnat"],
    ["100.128.0.0", null],
    ["126.255.255.255", null],
    ["127.0.0.1", "loopback"],
    ["127.255.255.255", "loopback"],
    ["128.0.0.0", null],
    ["169.253.255.255", null],
    ["169.254.0.0", "link-local"],
    ["169.255.0.0", null],
    ["172.15.255.255", null],
    ["172.16.0.0", "private"],
    ["172.31.255.255", "private"],
    ["172.32.0.0", null],
    ["191.255.255.255", null],
    ["192.0.0.0", "ietf-protocol-assignments"],
    ["192.0.0.255", "ietf-protocol-assignments"],
    ["192.0.1.0", null],
    ["192.0.2.0", "documentation"],
    ["192.0.2.255", "documentation"],
    ["192.0.3.0", null],
    ["192.88.98.255", null],
    ["192.88.99.1", "6to4-relay-anycast"],
    ["192.88.100.0", null],
    ["192.167.255.255", null],
    ["192.168.0.0", "private"],
    ["192.168.255.255", "private"],
    ["192.169.0.0", null],
    ["198.17.255.255", null],
    ["198.18.0.0", "benchmarking"],
    ["198.19.255.255", "benchmarking"],
    ["198.20.0.0", null],
    ["198.51.99.255", null],
    ["198.51.100.0", "documentation"],
    ["198.51.101.0", null],
    ["203.0.112.255", null],
    ["203.0.113.255", "documentation"],
    ["203.0.114.0", null],
    ["223.255.255.255", null],
    ["224.0.0.0", "multicast"],
    ["239.255.255.255", "multicast"],
    ["240.0.0.0", "reserved"],
    ["255.255.255.254", "reserved"],
    ["255.255.255.255", "broadcast"],
    ["0.0.0.0", "this-network"],
    ["0.255.255.255", "this-network"],
    ["1.0.0.0", null],
    ["8.8.8.8", null],
  ])("classifies the IPv4 edge %s as %s", (ip, category) => {
    expect(classifyAddress(ip)?.category ?? null).toBe(category);
  });

  it.each([
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["::2", "ipv4-compatible"],
    ["1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
    ["2000::", null],
    ["2001::", null], // Teredo: judged by its embedded IPv4
    ["2001:0:ffff:ffff:ffff:ffff:ffff:ffff", null],
    ["2001:1::", "ietf-protocol-assignments"],
    ["2001:1::1", null], // PCP anycast, globally reachable
    ["2001:1::4", "ietf-protocol-assignments"],
    ["2001:2::", "benchmarking"],
    ["2001:3::1", null], // AMT
    ["2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "ietf-protocol-assignments"],
    ["2001:200::", null],
    ["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", null],
    ["2001:db8::", "documentation"],
    ["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"],
    ["2001:db9::", null],
    ["2606:4700::1111", null],
    ["3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", null],
    ["3fff::", "documentation"],
    ["3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"],
    ["3fff:1000::", null],
    ["4000::", "reserved"],
    ["5f00::1", "srv6-sid"],
    ["fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
    ["fc00::", "unique-local"],
    ["fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local"],
    ["fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
    ["fe80::", "link-local"],
    ["febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"],
    ["fec0::", "site-local"],
    ["ff00::", "multicast"],
    ["ff02::1", "multicast"],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"],
    ["100::1", "discard-only"],
    ["100:0:0:1::", "reserved"],
    ["64:ff9b::808:808", null], // NAT64 of a public IPv4
    ["64:ff9b:1::1", "nat64-local-use"],
  ])("classifies the IPv6 edge %s as %s", (ip, category) => {
    expect(classifyAddress(ip)?.category ?? null).toBe(category);
  });

  it.each([
    ["169.254.169.254", "169.254.169.254/32"],
    ["169.254.170.2", "169.254.170.2/32"],
    ["168.63.129.16", "168.63.129.16/32"],
    ["100.100.100.200", "100.100.100.200/32"],
    ["192.0.0.192", "192.0.0.192/32"],
    ["fd00:ec2::254", "fd00:ec2::254/128"],
  ])("names the cloud metadata address %s explicitly", (ip, cidr) => {
    expect(classifyAddress(ip)).toEqual({ cidr, category: "cloud-metadata" });
  });

  it("does not treat the neighbours of a metadata address as metadata", () => {
    expect(classifyAddress("168.63.129.15")).toBeNull();
    expect(classifyAddress("169.254.169.253")?.category).toBe("link-local");
  });
});

describe("embeddedIPv4", () => {
  it.each([
    ["::ffff:127.0.0.1", "127.0.0.1"],
    ["::ffff:a9fe:a9fe", "169.254.169.254"],
    ["::127.0.0.1", "127.0.0.1"],
    ["::a9fe:a9fe", "169.254.169.254"],
    ["64:ff9b::7f00:1", "127.0.0.1"],
    ["64:ff9b::169.254.169.254", "169.254.169.254"],
    ["64:ff9b:1::7f00:1", "127.0.0.1"],
    ["64:ff9b:1:abcd::a9fe:a9fe", "169.254.169.254"],
    ["2002:7f00:1::", "127.0.0.1"],
    ["2002:a9fe:a9fe:1234::1", "169.254.169.254"],
    ["2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"], // RFC 4380 §4 example
    ["2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"], // client 127.0.0.1, inverted
    ["2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"],
  ])("finds %s → %s", (ip6, v4) => {
    expect(embeddedIPv4(ip6)).toBe(v4);
  });

  it.each(["::", "::1", "2001:db8::1", "2606:4700::1111", "fe80::1", "64:ff9c::1", "2003::1", "not an ip", "1.2.3.4"])(
    "finds nothing in %s",
    (ip6) => {
      expect(embeddedIPv4(ip6)).toBeNull();
    },
  );
});

describe("internalRangeOf", () => {
  it.each([
    ["::ffff:127.0.0.1", "127.0.0.0/8"],
    ["64:ff9b::7f00:1", "127.0.0.0/8"],
    ["2002:a9fe:a9fe::", "169.254.169.254/32"],
    ["2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254/32"],
    ["::127.0.0.1", "::/96"],
  ])("sees through the embedding of %s to %s", (ip, cidr) => {
    expect(internalRangeOf(ip)?.range.cidr).toBe(cidr);
  });

  it("is null for a public address and its embeddings", () => {
    expect(internalRangeOf("8.8.8.8")).toBeNull();
    expect(internalRangeOf("64:ff9b::808:808")).toBeNull();
    expect(internalRangeOf("2002:808:808::1")).toBeNull();
  });
});
