import { describe, expect, it } from "vitest";
import {
  canonicaliseHost,
  formatHostPort,
  hostString,
  isCanonicalName,
  normaliseHost,
  parseHostPort,
  parsePort,
} from "../../../src/net/hostport.js";

function norm(raw: string): string {
  const r = normaliseHost(raw);
  if (!r.ok) throw new Error(`expected ${raw} to normalise: ${r.error}`);
  return r.host.kind === "name" ? `name:${r.host.name}` : `ip${r.host.family}:${r.host.ip}`;
}

function normError(raw: string): string {
  const r = normaliseHost(raw);
  if (r.ok) throw new Error(`expected ${raw} to be rejected, got ${JSON.stringify(r.host)}`);
  return r.error;
}

describe("normaliseHost", () => {
  it.each([
    ["example.com", "name:example.com"],
    ["EXAMPLE.Com", "name:example.com"],
    ["example.com.", "name:example.com"],
    ["Example.COM.", "name:example.com"],
    ["localhost", "name:localhost"],
    ["_dmarc.example.com", "name:_dmarc.example.com"],
    ["a-b.example.com", "name:a-b.example.com"],
    ["bücher.example", "name:xn--bcher-kva.example"],
    ["BÜCHER.example", "name:xn--bcher-kva.example"],
    ["xn--bcher-kva.example", "name:xn--bcher-kva.example"],
    ["faß.de", "name:xn--fa-hia.de"],
    ["☃.com", "name:xn--n3h.com"],
    ["ＥＸＡＭＰＬＥ.com", "name:example.com"],
    ["a\u3002b.com", "name:a.b.com"],
  ])("normalises the name %j to %s", (raw, want) => {
    expect(norm(raw)).toBe(want);
  });

  it.each([
    ["127.0.0.1", "ip4:127.0.0.1"],
    ["127.1", "ip4:127.0.0.1"],
    ["127.0.1", "ip4:127.0.0.1"],
    ["2130706433", "ip4:127.0.0.1"],
    ["0x7f.0.0.1", "ip4:127.0.0.1"],
    ["0x7F000001", "ip4:127.0.0.1"],
    ["0177.0.0.1", "ip4:127.0.0.1"],
    ["0177.1", "ip4:127.0.0.1"],
    ["127.0.0.1.", "ip4:127.0.0.1"],
    ["169.254.169.254", "ip4:169.254.169.254"],
    ["0", "ip4:0.0.0.0"],
    ["１２７.０.０.１", "ip4:127.0.0.1"],
  ])("canonicalises the IPv4 spelling %j to %s", (raw, want) => {
    expect(norm(raw)).toBe(want);
  });

  it.each([
    ["::1", "ip6:::1"],
    ["[::1]", "ip6:::1"],
    ["[0:0:0:0:0:0:0:1]", "ip6:::1"],
    ["[2001:DB8::0001]", "ip6:2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "ip6:2001:db8::1:0:0:1"],
    ["[fe80::1]", "ip6:fe80::1"],
    ["[::ffff:127.0.0.1]", "ip4:127.0.0.1"],
    ["[::ffff:7f00:1]", "ip4:127.0.0.1"],
    ["::FFFF:169.254.169.254", "ip4:169.254.169.254"],
    ["[64:ff9b::7f00:1]", "ip6:64:ff9b::7f00:1"],
  ])("canonicalises the IPv6 %j to %s", (raw, want) => {
    expect(norm(raw)).toBe(want);
  });

  it.each([
    ["fe80::1%eth0", /zone ID/],
    ["[fe80::1%25eth0]", /zone ID/],
    ["[fe80::1%eth0]", /zone ID/],
  ])("rejects the zone ID in %j", (raw, why) => {
    expect(normError(raw)).toMatch(why);
  });

  it.each([
    ["", /empty/],
    [".", /no labels|empty label/],
    ["a..b", /empty label/],
    [".example.com", /empty label/],
    ["example.com..", /empty label/],
    ["exa mple.com", /not valid in a host name/],
    ["a/b", /not valid in a host name/],
    ["user@example.com", /not valid in a host name/],
    ["exa%6dple.com", /percent/],
    ["a!b.com", /not valid in a host name/],
    ["a*b.com", /not valid in a host name/],
    ["example.com:443", /without a port/],
    [`${"a".repeat(64)}.com`, /label of 64 octets/],
    [`${"a.".repeat(127)}ab`, /octets long/],
    ["1.2.3.4.5", /not a valid host name/],
    ["256.1.1.1", /not a valid host name/],
    ["foo.123", /not a valid host name/],
    ["xn--zz.com", /IDNA/],
    ["[::1", /bracket/],
    ["[example.com]", /not a valid IPv6/],
    ["[1::2::3]", /not a valid IPv6/],
    ["[::1]]", /not a valid IPv6|bracket/],
    ["a\u00a0b.com", /IDNA|not valid/],
  ])("rejects %j with a reason", (raw, why) => {
    expect(normError(raw)).toMatch(why);
  });

  it("accepts a name of exactly 253 octets and labels of exactly 63", () => {
    const name = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;
    expect(name.length).toBe(253);
    expect(norm(name)).toBe(`name:${name}`);
    expect(normError(`${name}e`)).toMatch(/octets long/);
  });

  it("is idempotent on its own output", () => {
    for (const raw of ["Bücher.Example.", "0x7f.1", "[::FFFF:1.2.3.4]", "[2001:db8::1]", "_srv.Example.com"]) {
      const first = normaliseHost(raw);
      expect(first.ok).toBe(true);
      if (!first.ok) continue;
      expect(normaliseHost(hostString(first.host))).toEqual(first);
    }
  });
});

describe("isCanonicalName", () => {
  it("accepts only what normaliseHost would return unchanged without IDNA", () => {
    expect(isCanonicalName("example.com")).toBe(true);
    expect(isCanonicalName("Example.com")).toBe(false);
    expect(isCanonicalName("example.com.")).toBe(false);
    expect(isCanonicalName("127.1")).toBe(false);
    expect(isCanonicalName("foo.0x1")).toBe(false);
    expect(isCanonicalName("xn--bcher-kva.example")).toBe(false);
  });
});

describe("canonicaliseHost", () => {
  it("re-normalises a Host value that did not come from normaliseHost", () => {
    expect(canonicaliseHost({ kind: "name", name: "EXAMPLE.com." })).toEqual({ kind: "name", name: "example.com" });
    expect(canonicaliseHost({ kind: "name", name: "127.1" })).toEqual({ kind: "ip", ip: "127.0.0.1", family: 4 });
    expect(canonicaliseHost({ kind: "ip", ip: "::FFFF:10.0.0.1", family: 6 })).toEqual({ kind: "ip", ip: "10.0.0.1", family: 4 });
    expect(canonicaliseHost({ kind: "ip", ip: "not-an-ip", family: 4 })).toBeNull();
    expect(canonicaliseHost({ kind: "name", name: "a b" })).toBeNull();
  });
});

describe("parseHostPort", () => {
  function hp(input: string, def?: number): string {
    const r = parseHostPort(input, def);
    if (!r.ok) throw new Error(`expected ${input} to parse: ${r.error}`);
    return formatHostPort(r.host, r.port);
  }
  function hpError(input: string, def?: number): string {
    const r = parseHostPort(input, def);
    if (r.ok) throw new Error(`expected ${input} to be rejected, got ${formatHostPort(r.host, r.port)}`);
    return r.error;
  }

  it.each([
    ["example.com:443", undefined, "example.com:443"],
    ["Example.COM.:443", undefined, "example.com:443"],
    ["[::1]:443", undefined, "[::1]:443"],
    ["[::ffff:127.0.0.1]:80", undefined, "127.0.0.1:80"],
    ["[2001:DB8::1]:8443", undefined, "[2001:db8::1]:8443"],
    ["127.1:80", undefined, "127.0.0.1:80"],
    ["2130706433:80", undefined, "127.0.0.1:80"],
    ["example.com", 443, "example.com:443"],
    ["[::1]", 80, "[::1]:80"],
    ["bücher.example:443", undefined, "xn--bcher-kva.example:443"],
    ["example.com:1", undefined, "example.com:1"],
    ["example.com:65535", undefined, "example.com:65535"],
    ["example.com:00080", undefined, "example.com:80"],
  ])("parses %j (default port %s) as %s", (input, def, want) => {
    expect(hp(input, def)).toBe(want);
  });

  it.each([
    ["example.com", undefined, /no port/],
    ["example.com:", undefined, /invalid port/],
    ["example.com:0", undefined, /invalid port/],
    ["example.com:65536", undefined, /invalid port/],
    ["example.com:+443", undefined, /invalid port/],
    ["example.com:-1", undefined, /invalid port/],
    ["example.com:0x50", undefined, /invalid port/],
    ["example.com:4 43", undefined, /whitespace/],
    [" example.com:443", undefined, /whitespace/],
    ["example.com:443\n", undefined, /whitespace/],
    ["example.com:443:1", undefined, /ambiguous/],
    ["::1:443", undefined, /ambiguous.*brackets/],
    ["::1", 443, /ambiguous/],
    ["user@example.com:443", undefined, /user information/],
    ["user:pw@example.com:443", undefined, /user information/],
    ["http://example.com:443", undefined, /scheme or path/],
    ["example.com:443/path", undefined, /scheme or path/],
    ["[::1]443", undefined, /not ":port"/],
    ["[::1", undefined, /unclosed/],
    ["::1]:443", undefined, /ambiguous|bracket/],
    ["[127.0.0.1]:80", undefined, /not an IPv6/],
    ["[example.com]:80", undefined, /not an IPv6/],
    ["[fe80::1%25eth0]:443", undefined, /zone ID/],
    [":443", undefined, /empty/],
    ["", 443, /empty/],
    ["example.com", 0, /default port/],
    ["exa_mple!.com:80", undefined, /not valid in a host name/],
  ])("rejects %j (default port %s)", (input, def, why) => {
    expect(hpError(input, def)).toMatch(why);
  });
});

describe("parsePort", () => {
  it("accepts decimal 1..65535 only", () => {
    expect(parsePort("1")).toBe(1);
    expect(parsePort("65535")).toBe(65535);
    for (const bad of ["0", "65536", "", "+1", "1.0", "1e3", " 1", "123456", "٣"]) expect(parsePort(bad)).toBeNull();
  });
});

describe("formatHostPort and hostString", () => {
  it("brackets IPv6 only in host:port form", () => {
    expect(hostString({ kind: "ip", ip: "::1", family: 6 })).toBe("::1");
    expect(formatHostPort({ kind: "ip", ip: "::1", family: 6 }, 443)).toBe("[::1]:443");
    expect(formatHostPort({ kind: "ip", ip: "10.0.0.1", family: 4 }, 80)).toBe("10.0.0.1:80");
    expect(formatHostPort({ kind: "name", name: "example.com" }, 443)).toBe("example.com:443");
  });
});
