import { describe, expect, it } from "vitest";
import { CidrTable, InvalidCidrError, cidrContains, parseCidr } from "../../../src/net/cidr.js";
import { canonicalIp, formatIPv6, parseIp, parseIPv4, parseIPv6 } from "../../../src/net/ip.js";

describe("strict IP text", () => {
  it.each([
    ["1.2.3.4", true],
    ["255.255.255.255", true],
    ["0.0.0.0", true],
    ["256.0.0.0", false],
    ["01.2.3.4", false],
    ["1.2.3", false],
    ["127.1", false],
    ["1.2.3.4.", false],
    [" 1.2.3.4", false],
  ])("reads the IPv4 %j strictly (valid: %s)", (s, ok) => {
    expect(parseIPv4(s) !== null).toBe(ok);
  });

  it.each([
    ["::", true],
    ["::1", true],
    ["1::", true],
    ["1:2:3:4:5:6:7:8", true],
    ["1:2:3:4:5:6:1.2.3.4", true],
    ["::ffff:1.2.3.4", true],
    ["64:ff9b::1.2.3.4", true],
    ["1:2:3:4:5:6:7::", true],
    ["::2:3:4:5:6:7:8", true],
    ["1:2:3:4:5:6:7:8:9", false],
    ["1::2::3", false],
    [":::", false],
    [":1::", false],
    ["1:", false],
    ["12345::", false],
    ["g::", false],
    ["::1.2.3", false],
    ["::01.2.3.4", false],
    ["1:2:3:4:5:6:7:1.2.3.4", false],
    ["fe80::1%eth0", false],
    ["[::1]", false],
  ])("reads the IPv6 %j (valid: %s)", (s, ok) => {
    expect(parseIPv6(s) !== null).toBe(ok);
  });

  it.each([
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["fe80:0000::0001", "fe80::1"],
  ])("formats %j as RFC 5952 %j", (s, want) => {
    const v = parseIPv6(s);
    expect(v).not.toBeNull();
    expect(formatIPv6(v ?? 0n)).toBe(want);
  });

  it("reads an IPv4-mapped IPv6 as its IPv4", () => {
    expect(canonicalIp("::ffff:10.1.2.3")).toEqual(parseIp("10.1.2.3"));
  });
});

describe("parseCidr", () => {
  it.each([
    ["10.0.0.0/8", "10.0.0.0/8"],
    ["10.1.2.3", "10.1.2.3/32"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["fc00::/7", "fc00::/7"],
    ["FD00:0:0::/8", "fd00::/8"],
    ["::1", "::1/128"],
    ["::/0", "::/0"],
    ["2001:db8::/32", "2001:db8::/32"],
    ["::ffff:10.0.0.0/104", "10.0.0.0/8"],
    ["::ffff:0:0/96", "0.0.0.0/0"],
  ])("accepts %j as %j", (s, want) => {
    const r = parseCidr(s);
    expect(r.ok && r.cidr.text).toBe(want);
  });

  it.each([
    ["10.0.0.1/8", /host bits set; write "10.0.0.0\/8" .* or "10.0.0.1\/32"/],
    ["10.0.0.0/33", /prefix length.*0\.\.32/],
    ["::/129", /prefix length.*0\.\.128/],
    ["10.0.0.0/", /prefix length/],
    ["10.0.0.0/08", /prefix length/],
    ["10.0.0.0/+8", /prefix length/],
    ["10.0.0.0/8/8", /prefix length/],
    ["10/8", /not a CIDR range/],
    ["010.0.0.0/8", /not a CIDR range/],
    ["example.com/8", /not a CIDR range/],
    ["", /not a CIDR range/],
    ["fe80::%eth0/64", /zone ID/],
    [" 10.0.0.0/8", /not a CIDR range/],
  ])("rejects %j with a reason", (s, why) => {
    const r = parseCidr(s);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(why);
  });

  it("tests containment by family and prefix", () => {
    const r = parseCidr("10.0.0.0/8");
    if (!r.ok) throw new Error(r.error);
    expect(cidrContains(r.cidr, parseIp("10.255.255.255") ?? { family: 4, value: 0n })).toBe(true);
    expect(cidrContains(r.cidr, parseIp("11.0.0.0") ?? { family: 4, value: 0n })).toBe(false);
    expect(cidrContains(r.cidr, parseIp("::a00:1") ?? { family: 4, value: 0n })).toBe(false);
  });
});

describe("CidrTable", () => {
  it("returns the longest matching prefix", () => {
    const t = new CidrTable<string>();
    t.add("10.0.0.0/8", "eight");
    t.add("10.1.0.0/16", "sixteen");
    t.add("10.1.2.0/24", "twenty-four");
    t.add("0.0.0.0/0", "default");
    expect(t.lookup("10.1.2.3")).toEqual({ cidr: "10.1.2.0/24", prefixLength: 24, value: "twenty-four" });
    expect(t.lookup("10.1.3.3")?.value).toBe("sixteen");
    expect(t.lookup("10.2.0.0")?.value).toBe("eight");
    expect(t.lookup("11.0.0.0")?.value).toBe("default");
  });

  it("keeps IPv4 and IPv6 apart", () => {
    const t = new CidrTable<string>();
    t.add("::/0", "v6");
    expect(t.lookup("1.2.3.4")).toBeUndefined();
    expect(t.lookup("2001:db8::1")?.value).toBe("v6");
    t.add("0.0.0.0/0", "v4");
    expect(t.lookup("1.2.3.4")?.value).toBe("v4");
  });

  it("matches an IPv4-mapped address against IPv4 ranges", () => {
    const t = new CidrTable<string>();
    t.add("10.0.0.0/8", "ten");
    expect(t.lookup("::ffff:10.9.9.9")?.value).toBe("ten");
  });

  it("merges values of the same range with the merge function", () => {
    const t = new CidrTable<string>((a, b) => (b === "deny" ? b : a));
    t.add("10.0.0.0/8", "allow");
    t.add("10.0.0.0/8", "deny");
    t.add("10.0.0.0/8", "allow");
    expect(t.lookup("10.0.0.1")?.value).toBe("deny");
    expect(t.size).toBe(1);
  });

  it("keeps the first value of a duplicate range by default", () => {
    const t = new CidrTable<number>();
    t.add("10.0.0.0/8", 1);
    t.add("10.0.0.0/8", 2);
    expect(t.lookup("10.0.0.1")?.value).toBe(1);
  });

  it("answers undefined for text that is not an address", () => {
    const t = new CidrTable<number>();
    t.add("0.0.0.0/0", 1);
    expect(t.lookup("example.com")).toBeUndefined();
    expect(t.lookup("127.1")).toBeUndefined();
  });

  it("throws a coded error for an invalid range", () => {
    const t = new CidrTable<number>();
    expect(() => t.add("10.0.0.1/8", 1)).toThrow(InvalidCidrError);
  });

  it("answers correctly with 100,000 ranges of many lengths", () => {
    const t = new CidrTable<number>();
    for (let i = 0; i < 100_000; i++) {
      const len = 16 + (i % 17); // 16..32
      const a = (i * 2654435761) >>> 0;
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      const net = (a & mask) >>> 0;
      t.add(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${len}`, i);
    }
    t.add("203.0.113.7/32", -1);
    expect(t.lookup("203.0.113.7")?.value).toBe(-1);
    expect(t.lookup("203.0.113.7")?.prefixLength).toBe(32);
  });
});
