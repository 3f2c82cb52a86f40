import { describe, expect, it, vi } from "vitest";
import { DENY_CODES, ALLOW_CODES } from "../../../src/policy/codes.js";
import { compilePolicy, PolicyCompileError } from "../../../src/policy/compile.js";
import { decide, decideResolving } from "../../../src/policy/decide.js";
import type { Decision } from "../../../src/policy/types.js";
import { compile, decideFor, host, summary } from "./helpers.js";

const PUBLIC = "93.184.216.34";

describe("mode", () => {
  it("denies everything with deny-all, before any rule or resolution", () => {
    const c = compile({ mode: "deny-all", deny_domains: ["x.example.com"], transforms: [{ domain: "api.example.com" }] });
    expect(summary(decideFor(c, "api.example.com", 443))).toBe("deny mode-deny-all mode:deny-all");
    expect(summary(decideFor(c, "8.8.8.8", 53))).toBe("deny mode-deny-all mode:deny-all");
  });

  it("allows a public address with allow-all", () => {
    const c = compile({ mode: "allow-all" });
    const d = decideFor(c, "example.com", 443);
    expect(summary(d)).toBe("allow mode-allow-all mode:allow-all");
    expect(d.addresses).toEqual([PUBLIC]);
  });

  it("denies with not-allowed in custom mode when no rule matches", () => {
    const c = compile({ mode: "custom", allow_domains: ["api.example.com"] });
    expect(summary(decideFor(c, "other.example.com", 443))).toBe("deny not-allowed -");
  });
});

describe("name specificity", () => {
  it("lets the pattern that pins more labels win", () => {
    const c = compile({ mode: "custom", allow_domains: ["*.example.com", "a.b.example.com"], deny_domains: ["*.b.example.com"] });
    expect(summary(decideFor(c, "c.example.com", 443))).toBe("allow domain-allowed allow_domains[0]=*.example.com");
    expect(summary(decideFor(c, "x.b.example.com", 443))).toBe("deny domain-denied deny_domains[0]=*.b.example.com");
    expect(summary(decideFor(c, "a.b.example.com", 443))).toBe("allow domain-allowed allow_domains[1]=a.b.example.com");
  });

  it("does not depend on the order of the lists", () => {
    const a = compile({ mode: "custom", allow_domains: ["a.b.example.com", "*.example.com"], deny_domains: ["*.b.example.com"] });
    expect(decideFor(a, "x.b.example.com", 443).reason).toBe("domain-denied");
    expect(decideFor(a, "a.b.example.com", 443).reason).toBe("domain-allowed");
  });

  it("lets an exact name beat an in-label glob at equal labels, either way round", () => {
    const denyExact = compile({ mode: "custom", allow_domains: ["api-*.example.com"], deny_domains: ["api-internal.example.com"] });
    expect(summary(decideFor(denyExact, "api-internal.example.com", 443))).toBe("deny domain-denied deny_domains[0]=api-internal.example.com");
    expect(summary(decideFor(denyExact, "api-public.example.com", 443))).toBe("allow domain-allowed allow_domains[0]=api-*.example.com");
    const allowExact = compile({ mode: "custom", allow_domains: ["api-public.example.com"], deny_domains: ["api-*.example.com"] });
    expect(decideFor(allowExact, "api-public.example.com", 443).reason).toBe("domain-allowed");
    expect(decideFor(allowExact, "api-other.example.com", 443).reason).toBe("domain-denied");
  });

  it("lets an in-label glob beat a leading wildcard", () => {
    const c = compile({ mode: "allow-all", deny_domains: ["*.example.com"], transforms: [{ domain: "api-*.example.com" }] });
    expect(summary(decideFor(c, "api-1.example.com", 443))).toBe("allow domain-allowed transforms[0].domain=api-*.example.com");
    expect(decideFor(c, "web.example.com", 443).reason).toBe("domain-denied");
  });

  it("lets a pattern with a port beat the same pattern without one", () => {
    const c = compile({ mode: "custom", allow_domains: ["api.example.com:443"], deny_domains: ["api.example.com"] });
    expect(summary(decideFor(c, "api.example.com", 443))).toBe("allow domain-allowed allow_domains[0]=api.example.com:443");
    expect(summary(decideFor(c, "api.example.com", 80))).toBe("deny domain-denied deny_domains[0]=api.example.com");
    const reverse = compile({ mode: "allow-all", deny_domains: ["*.example.com:22"] });
    expect(decideFor(reverse, "git.example.com", 22).reason).toBe("domain-denied");
    expect(decideFor(reverse, "git.example.com", 443).reason).toBe("mode-allow-all");
  });

  it("does not let a port beat more pinned labels", () => {
    const c = compile({ mode: "custom", allow_domains: ["*.example.com:443"], deny_domains: ["api.example.com"] });
    expect(decideFor(c, "api.example.com", 443).reason).toBe("domain-denied");
  });

  it("sends a remaining tie to deny", () => {
    const same = compile({ mode: "custom", allow_domains: ["api.example.com"], deny_domains: ["API.example.com."] });
    expect(summary(decideFor(same, "api.example.com", 443))).toBe("deny domain-denied deny_domains[0]=api.example.com");
    const globs = compile({ mode: "custom", allow_domains: ["api-*.example.com"], deny_domains: ["*-prod.example.com"] });
    expect(decideFor(globs, "api-prod.example.com", 443).reason).toBe("domain-denied");
    expect(decideFor(globs, "api-dev.example.com", 443).reason).toBe("domain-allowed");
    const ports = compile({ mode: "custom", allow_domains: ["*.example.com:443"], deny_domains: ["*.example.com:443"] });
    expect(decideFor(ports, "a.example.com", 443).reason).toBe("domain-denied");
  });

  it("names the first of several equal allow rules", () => {
    const c = compile({ mode: "custom", allow_domains: ["x.example.com", "a.example.com", "A.example.com"] });
    expect(decideFor(c, "a.example.com", 443).rule).toBe("allow_domains[1]=a.example.com");
  });

  it("restricts a port-qualified pattern to that port (wrong port = not-allowed)", () => {
    const c = compile({ mode: "custom", allow_domains: ["api.example.com:443"] });
    expect(decideFor(c, "api.example.com", 443).reason).toBe("domain-allowed");
    expect(summary(decideFor(c, "api.example.com", 8443))).toBe("deny not-allowed -");
  });
});

describe("wildcards", () => {
  const c = compile({ mode: "custom", allow_domains: ["*.example.com", "api-*.example.org"] });

  it.each([
    ["a.example.com", true],
    ["a.b.c.example.com", true],
    ["example.com", false],
    ["badexample.com", false],
    ["example.com.evil.net", false],
    ["api-1.example.org", true],
    ["API-X.Example.ORG.", true],
    ["api-.example.org", true],
    ["api-1.x.example.org", false],
    ["x.api-1.example.org", false],
    ["api.example.org", false],
    ["example.org", false],
  ])("%s is allowed: %s", (name, allowed) => {
    expect(decideFor(c, name, 443).allowed).toBe(allowed);
  });
});

describe("name normalisation in decisions", () => {
  const c = compile({ mode: "custom", allow_domains: ["api.example.com", "bücher.example"], deny_domains: ["evil.example.net"] });

  it("matches regardless of case and trailing dot", () => {
    expect(decideFor(c, "API.EXAMPLE.COM.", 443).reason).toBe("domain-allowed");
    expect(decideFor(c, "API.EXAMPLE.COM.", 443).host).toBe("api.example.com");
  });

  it("matches IDN names in either spelling", () => {
    expect(decideFor(c, "BÜCHER.example", 443).reason).toBe("domain-allowed");
    expect(decideFor(c, "xn--bcher-kva.example", 443).reason).toBe("domain-allowed");
  });

  it("re-normalises a Host value that was not normalised, so it cannot dodge a deny rule", () => {
    const allowAll = compile({ mode: "allow-all", deny_domains: ["evil.example.net"] });
    const d = decide(allowAll, { kind: "name", name: "EVIL.example.net." }, 443, [PUBLIC]);
    expect(summary(d)).toBe("deny domain-denied deny_domains[0]=evil.example.net");
    expect(d.host).toBe("evil.example.net");
  });

  it("never matches domain patterns against IP-literal hosts", () => {
    const d = decideFor(c, PUBLIC, 443);
    expect(summary(d)).toBe("deny not-allowed -");
    expect(d.judged).toEqual([{ address: PUBLIC, usable: false, reason: "not-allowed", rule: null }]);
  });

  it("refuses an unparseable host or port as invalid-target", () => {
    expect(decide(c, { kind: "name", name: "a b" }, 443, null).reason).toBe("invalid-target");
    expect(decide(c, { kind: "ip", ip: "1.2.3", family: 4 }, 443, null).reason).toBe("invalid-target");
    expect(decideFor(c, "api.example.com", 0).reason).toBe("invalid-target");
    expect(decideFor(c, "api.example.com", 65536).reason).toBe("invalid-target");
    expect(decideFor(c, "api.example.com", 1.5).reason).toBe("invalid-target");
  });
});

describe("addresses", () => {
  it("denies a name that resolves to 169.254.169.254 even with allow-all", () => {
    const c = compile({ mode: "allow-all" });
    const d = decideFor(c, "metadata.example.com", 80, ["169.254.169.254"]);
    expect(summary(d)).toBe("deny internal-address internal:169.254.169.254/32 (cloud-metadata)");
    expect(d.addresses).toEqual([]);
  });

  it("denies an allowed name that resolves to loopback (no DNS rebinding past the policy)", () => {
    const c = compile({ mode: "custom", allow_domains: ["api.example.com"] });
    expect(summary(decideFor(c, "api.example.com", 443, ["127.0.0.1"]))).toBe("deny internal-address internal:127.0.0.0/8 (loopback)");
  });

  it("denies every IPv4 spelling of loopback given as the host", () => {
    const c = compile({ mode: "allow-all" });
    for (const raw of ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "[::ffff:127.0.0.1]", "[::1]"]) {
      expect(decideFor(c, raw, 80).reason, raw).toBe("internal-address");
    }
  });

  it("keeps only usable addresses, in resolver order, and judges each once", () => {
    const c = compile({ mode: "allow-all" });
    const d = decideFor(c, "example.com", 443, ["10.0.0.5", "2606:2800:220:1::1", PUBLIC, "::FFFF:93.184.216.34", "2606:2800:0220:0001::1"]);
    expect(d.allowed).toBe(true);
    expect(d.addresses).toEqual(["2606:2800:220:1::1", PUBLIC]);
    expect(d.judged.map((j) => `${j.address} ${j.usable} ${j.reason}`)).toEqual([
      "10.0.0.5 false internal-address",
      "2606:2800:220:1::1 true mode-allow-all",
      `${PUBLIC} true mode-allow-all`,
    ]);
  });

  it("takes the allowed reason from the first usable address", () => {
    const c = compile({ mode: "custom", allow_domains: ["api.example.com"], allow_cidrs: ["93.184.216.0/24"] });
    expect(summary(decideFor(c, "api.example.com", 443, ["8.8.8.8", PUBLIC]))).toBe("allow domain-allowed allow_domains[0]=api.example.com");
    expect(summary(decideFor(c, "api.example.com", 443, [PUBLIC, "8.8.8.8"]))).toBe("allow cidr-allowed allow_cidrs[0]=93.184.216.0/24");
  });

  it("allows by allow_cidrs alone in custom mode", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["140.82.112.0/20"] });
    expect(summary(decideFor(c, "github.com", 443, ["140.82.121.4"]))).toBe("allow cidr-allowed allow_cidrs[0]=140.82.112.0/20");
    expect(summary(decideFor(c, "github.com", 443, ["8.8.8.8"]))).toBe("deny not-allowed -");
    expect(summary(decideFor(c, "140.82.121.4", 22))).toBe("allow cidr-allowed allow_cidrs[0]=140.82.112.0/20");
  });

  it("lets the longest prefix decide between allow_cidrs and deny_cidrs", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["93.184.0.0/16", "93.184.216.34/32"], deny_cidrs: ["93.184.216.0/24"] });
    expect(summary(decideFor(c, "93.184.1.1", 443))).toBe("allow cidr-allowed allow_cidrs[0]=93.184.0.0/16");
    expect(summary(decideFor(c, "93.184.216.35", 443))).toBe("deny cidr-denied deny_cidrs[0]=93.184.216.0/24");
    expect(summary(decideFor(c, PUBLIC, 443))).toBe("allow cidr-allowed allow_cidrs[1]=93.184.216.34/32");
  });

  it("sends a tie between allow_cidrs and deny_cidrs to deny", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["93.184.216.0/24"], deny_cidrs: ["93.184.216.0/24"] });
    expect(summary(decideFor(c, PUBLIC, 443))).toBe("deny cidr-denied deny_cidrs[0]=93.184.216.0/24");
  });

  it("denies a domain-allowed name whose address a deny_cidrs rule covers", () => {
    const c = compile({ mode: "custom", allow_domains: ["api.example.com"], deny_cidrs: ["93.184.216.0/24"] });
    expect(summary(decideFor(c, "api.example.com", 443))).toBe("deny cidr-denied deny_cidrs[0]=93.184.216.0/24");
  });

  it("lets an allow_cidrs rule more specific than an internal range allow it", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["10.1.0.0/16"] });
    expect(summary(decideFor(c, "10.1.2.3", 443))).toBe("allow cidr-allowed allow_cidrs[0]=10.1.0.0/16");
    expect(summary(decideFor(c, "10.2.0.1", 443))).toBe("deny internal-address internal:10.0.0.0/8 (private)");
  });

  it("sends a tie between allow_cidrs and an internal range to deny", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["10.0.0.0/8", "169.254.169.254/32"] });
    expect(summary(decideFor(c, "10.1.2.3", 443))).toBe("deny internal-address internal:10.0.0.0/8 (private)");
    expect(summary(decideFor(c, "169.254.169.254", 80))).toBe("deny internal-address internal:169.254.169.254/32 (cloud-metadata)");
  });

  it("names a user's deny rule that ties with an internal range", () => {
    const c = compile({ mode: "allow-all", deny_cidrs: ["10.0.0.0/8"] });
    expect(summary(decideFor(c, "10.1.2.3", 443))).toBe("deny cidr-denied deny_cidrs[0]=10.0.0.0/8");
  });

  it("denies with the most specific reason when no address is usable", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["140.82.112.0/20"], deny_cidrs: ["8.8.8.0/24"] });
    expect(summary(decideFor(c, "x.example.com", 443, ["1.1.1.1", "10.0.0.1", "8.8.8.8"]))).toBe("deny cidr-denied deny_cidrs[0]=8.8.8.0/24");
    expect(summary(decideFor(c, "x.example.com", 443, ["1.1.1.1", "10.0.0.1"]))).toBe("deny internal-address internal:10.0.0.0/8 (private)");
    expect(summary(decideFor(c, "x.example.com", 443, ["1.1.1.1"]))).toBe("deny not-allowed -");
  });

  it("treats an unparseable resolver answer as unusable", () => {
    const c = compile({ mode: "allow-all" });
    const d = decideFor(c, "example.com", 443, ["not-an-ip", "127.1", PUBLIC]);
    expect(d.addresses).toEqual([PUBLIC]);
    expect(d.judged.slice(0, 2).map((j) => j.usable)).toEqual([false, false]);
  });
});

describe("IPv6 addresses embedding an IPv4", () => {
  const allowAll = compile({ mode: "allow-all" });

  it.each([
    ["::ffff:127.0.0.1", "internal:127.0.0.0/8 (loopback)"],
    ["64:ff9b::7f00:1", "internal:127.0.0.0/8 (loopback)"],
    ["64:ff9b::a9fe:a9fe", "internal:169.254.169.254/32 (cloud-metadata)"],
    ["2002:7f00:1::1", "internal:127.0.0.0/8 (loopback)"],
    ["2002:a9fe:a9fe::", "internal:169.254.169.254/32 (cloud-metadata)"],
    ["2001:0:4136:e378:8000:63bf:80ff:fffe", "internal:127.0.0.0/8 (loopback)"],
    ["2001:0:4136:e378:8000:63bf:5601:5601", "internal:169.254.169.254/32 (cloud-metadata)"],
    ["::7f00:1", "internal:127.0.0.0/8 (loopback)"],
    ["::a9fe:a9fe", "internal:169.254.169.254/32 (cloud-metadata)"],
    ["64:ff9b:1::7f00:1", "internal:127.0.0.0/8 (loopback)"],
  ])("denies %s by its embedded IPv4 even with allow-all (%s)", (addr, rule) => {
    expect(summary(decideFor(allowAll, "example.com", 443, [addr]))).toBe(`deny internal-address ${rule}`);
  });

  it("allows an embedding of a public IPv4 where the IPv6 itself is public", () => {
    expect(decideFor(allowAll, "example.com", 443, ["64:ff9b::808:808"]).reason).toBe("mode-allow-all");
    expect(decideFor(allowAll, "example.com", 443, ["2002:808:808::1"]).reason).toBe("mode-allow-all");
  });

  it("denies an embedding when either the IPv6 or the embedded IPv4 is denied", () => {
    const c = compile({ mode: "allow-all", deny_cidrs: ["8.8.8.0/24"] });
    expect(summary(decideFor(c, "example.com", 443, ["64:ff9b::808:808"]))).toBe("deny cidr-denied deny_cidrs[0]=8.8.8.0/24");
    const v6 = compile({ mode: "allow-all", deny_cidrs: ["2002::/16"] });
    expect(summary(decideFor(v6, "example.com", 443, ["2002:808:808::1"]))).toBe("deny cidr-denied deny_cidrs[0]=2002::/16");
    // The IPv6 form of an internal IPv4 is internal (deprecated compatible range) and the IPv4 is too.
    expect(decideFor(allowAll, "example.com", 443, ["::808:808"]).reason).toBe("internal-address");
  });

  it("does not let an allow_cidrs rule on the IPv6 prefix allow an internal embedded IPv4", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["64:ff9b::/96"] });
    expect(decideFor(c, "x.example.com", 443, ["64:ff9b::808:808"]).reason).toBe("cidr-allowed");
    expect(decideFor(c, "x.example.com", 443, ["64:ff9b::a00:1"]).reason).toBe("internal-address");
  });

  it("allows an embedding whose IPv4 an allow_cidrs rule covers", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["8.8.8.8/32"] });
    expect(summary(decideFor(c, "x.example.com", 443, ["64:ff9b::808:808"]))).toBe("allow cidr-allowed allow_cidrs[0]=8.8.8.8/32");
  });

  it("judges an IPv4-mapped answer as the IPv4 and reports it in that form", () => {
    const d = decideFor(allowAll, "example.com", 443, ["::ffff:93.184.216.34"]);
    expect(d.addresses).toEqual([PUBLIC]);
  });
});

describe("--internal-allow exempts, never allows", () => {
  it("judges exempted loopback like a public address under allow-all", () => {
    const c = compile({ mode: "allow-all" }, { internalAllow: ["127.0.0.0/8"] });
    expect(summary(decideFor(c, "127.0.0.1", 8080))).toBe("allow mode-allow-all mode:allow-all");
  });

  it("does not allow an exempted address in custom mode without a rule", () => {
    const c = compile({ mode: "custom" }, { internalAllow: ["127.0.0.0/8"] });
    expect(summary(decideFor(c, "127.0.0.1", 8080))).toBe("deny not-allowed -");
    expect(summary(decideFor(c, "localhost", 8080, ["127.0.0.1"]))).toBe("deny not-allowed -");
  });

  it("lets a domain rule allow an exempted address", () => {
    const c = compile({ mode: "custom", allow_domains: ["upstream.test"] }, { internalAllow: ["127.0.0.0/8"] });
    expect(summary(decideFor(c, "upstream.test", 8080, ["127.0.0.1"]))).toBe("allow domain-allowed allow_domains[0]=upstream.test");
  });

  it("lets an allow_cidrs rule equal to the internal range allow an exempted address", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["10.0.0.0/8"] }, { internalAllow: ["10.0.0.0/8"] });
    expect(summary(decideFor(c, "10.1.2.3", 443))).toBe("allow cidr-allowed allow_cidrs[0]=10.0.0.0/8");
  });

  it("still applies deny_cidrs to exempted addresses", () => {
    const c = compile({ mode: "allow-all", deny_cidrs: ["10.9.0.0/16"] }, { internalAllow: ["10.0.0.0/8"] });
    expect(decideFor(c, "10.1.2.3", 443).reason).toBe("mode-allow-all");
    expect(decideFor(c, "10.9.2.3", 443).reason).toBe("cidr-denied");
  });

  it("exempts only the addresses inside the given range", () => {
    const c = compile({ mode: "allow-all" }, { internalAllow: ["127.0.0.1/32"] });
    expect(decideFor(c, "127.0.0.1", 80).reason).toBe("mode-allow-all");
    expect(decideFor(c, "127.0.0.2", 80).reason).toBe("internal-address");
  });

  it("exempts every address of the range, metadata included, when the operator names a covering range", () => {
    const c = compile({ mode: "allow-all" }, { internalAllow: ["169.254.0.0/16"] });
    expect(decideFor(c, "169.254.169.254", 80).reason).toBe("mode-allow-all");
  });

  it("exempts the embedded IPv4 of an IPv6 address as well", () => {
    const c = compile({ mode: "allow-all" }, { internalAllow: ["127.0.0.0/8"] });
    expect(decideFor(c, "x.test", 80, ["64:ff9b::7f00:1"]).reason).toBe("mode-allow-all");
    expect(decideFor(c, "x.test", 80, ["::1"]).reason).toBe("internal-address");
  });
});

describe("the proxy's own addresses", () => {
  it("denies a self address:port even when loopback is exempted, and only that port", () => {
    const c = compile({ mode: "allow-all" }, { internalAllow: ["127.0.0.0/8", "::1/128"], selfAddresses: ["127.0.0.1:3128", "[::1]:9090"] });
    expect(summary(decideFor(c, "127.0.0.1", 3128))).toBe("deny internal-address self:127.0.0.1:3128");
    expect(summary(decideFor(c, "[::1]", 9090))).toBe("deny internal-address self:[::1]:9090");
    expect(decideFor(c, "127.0.0.1", 8080).reason).toBe("mode-allow-all");
    expect(summary(decideFor(c, "x.test", 3128, ["::ffff:127.0.0.1"]))).toBe("deny internal-address self:127.0.0.1:3128");
  });

  it("denies a self address on every port, and no allow rule overrides it", () => {
    const c = compile({ mode: "custom", allow_cidrs: ["10.0.0.9/32"], allow_domains: ["proxy.test"] }, { internalAllow: ["10.0.0.0/8"], selfAddresses: ["10.0.0.9"] });
    expect(summary(decideFor(c, "10.0.0.9", 1))).toBe("deny internal-address self:10.0.0.9");
    expect(summary(decideFor(c, "proxy.test", 443, ["10.0.0.9"]))).toBe("deny internal-address self:10.0.0.9");
  });

  it("rejects a bad option with a coded error", () => {
    expect(() => compile({ mode: "allow-all" }, { selfAddresses: ["nope"] })).toThrow(PolicyCompileError);
    expect(() => compile({ mode: "allow-all" }, { internalAllow: ["10.0.0.1/8"] })).toThrow(/internalAllow\[0\]/);
  });
});

describe("resolution", () => {
  it("needs no resolution in custom mode without a name allow or allow_cidrs", () => {
    const c = compile({ mode: "custom", allow_domains: ["api.example.com"] });
    expect(c.decideName(host("other.example.com"), 443).needsNoResolution).toBe(true);
    expect(c.decideName(host("api.example.com"), 443).needsNoResolution).toBe(false);
    expect(c.decideName(host(PUBLIC), 443).needsNoResolution).toBe(false);
    const withCidrs = compile({ mode: "custom", allow_cidrs: ["140.82.112.0/20"] });
    expect(withCidrs.decideName(host("github.com"), 443).needsNoResolution).toBe(false);
    expect(compile({ mode: "allow-all" }).decideName(host("x.example.com"), 443).needsNoResolution).toBe(false);
  });

  it("does not resolve a denied or hopeless name, nor an IP literal", async () => {
    const resolve = vi.fn(async () => [PUBLIC]);
    const c = compile({ mode: "custom", allow_domains: ["api.example.com"], deny_domains: ["evil.example.com"] });
    expect((await decideResolving(c, host("other.example.com"), 443, resolve)).reason).toBe("not-allowed");
    expect((await decideResolving(c, host("evil.example.com"), 443, resolve)).reason).toBe("domain-denied");
    expect((await decideResolving(c, host(PUBLIC), 443, resolve)).reason).toBe("not-allowed");
    expect(resolve).not.toHaveBeenCalled();
    expect((await decideResolving(compile({ mode: "deny-all" }), host("x.test"), 443, resolve)).reason).toBe("mode-deny-all");
    expect(resolve).not.toHaveBeenCalled();
  });

  it("resolves an allowed name once and judges the answer", async () => {
    const resolve = vi.fn(async () => ["10.0.0.1", PUBLIC]);
    const c = compile({ mode: "custom", allow_domains: ["api.example.com"] });
    const d = await decideResolving(c, host("api.example.com"), 443, resolve);
    expect(resolve).toHaveBeenCalledTimes(1);
    expect(resolve).toHaveBeenCalledWith("api.example.com");
    expect(d.addresses).toEqual([PUBLIC]);
  });

  it.each([
    [{ code: "dns-failed" }, "dns-failed"],
    [{ code: "upstream-timeout" }, "upstream-timeout"],
    [{ code: "ENOTFOUND" }, "dns-failed"],
    [new Error("boom"), "dns-failed"],
    ["a string", "dns-failed"],
  ])("maps a resolver rejection %j to %s", async (err, reason) => {
    const c = compile({ mode: "allow-all" });
    const d = await decideResolving(c, host("x.example.com"), 443, () => Promise.reject(err));
    expect(summary(d)).toBe(`deny ${reason} -`);
  });

  it("refuses an empty or missing resolution as dns-failed", async () => {
    const c = compile({ mode: "allow-all" });
    expect((await decideResolving(c, host("x.example.com"), 443, async () => [])).reason).toBe("dns-failed");
    expect(decide(c, host("x.example.com"), 443, null).reason).toBe("dns-failed");
  });
});

describe("transforms", () => {
  const c = compile({
    mode: "custom",
    transforms: [
      { domain: "api.example.com", strip_headers: ["x-a"] },
      { domain: "*.example.com", inject_headers: { "X-B": "b" } },
      { domain: "api.example.com:8443", strip_headers: ["x-c"] },
      { domain: "api-*.example.org" },
    ],
  });

  it("returns every matching transform in list order", () => {
    expect(c.transformsFor("api.example.com", 443).map((t) => t.index)).toEqual([0, 1]);
    expect(c.transformsFor("api.example.com", 8443).map((t) => t.index)).toEqual([0, 1, 2]);
    expect(c.transformsFor("www.example.com", 443).map((t) => t.index)).toEqual([1]);
    expect(c.transformsFor("API.Example.com.", 443).map((t) => t.index)).toEqual([0, 1]);
    expect(c.transformsFor("api-1.example.org", 443).map((t) => t.index)).toEqual([3]);
    expect(c.transformsFor("example.com", 443)).toEqual([]);
    expect(c.transformsFor("93.184.216.34", 443)).toEqual([]);
    expect(c.transformsFor("not a host", 443)).toEqual([]);
    expect(c.transformsFor("api.example.com", 443)[1]?.transform).toEqual({ domain: "*.example.com", inject_headers: { "X-B": "b" } });
  });

  it("counts transform domains as allow rules", () => {
    expect(summary(decideFor(c, "api.example.com", 443))).toBe("allow domain-allowed transforms[0].domain=api.example.com");
    expect(summary(decideFor(c, "www.example.com", 443))).toBe("allow domain-allowed transforms[1].domain=*.example.com");
  });
});

describe("compiled policy", () => {
  it("is frozen and keeps the policy", () => {
    const c = compile({ mode: "allow-all" });
    expect(Object.isFrozen(c)).toBe(true);
    expect(c.policy).toEqual({ mode: "allow-all" });
  });

  it("refuses a policy that validation would reject", () => {
    expect(() => compilePolicy({ mode: "custom", allow_domains: ["*.com"] })).toThrow(/allow_domains\[0\]/);
    expect(() => compilePolicy({ mode: "nope" as "custom" })).toThrow(PolicyCompileError);
  });

  it("returns frozen decisions", () => {
    const d: Decision = decideFor(compile({ mode: "allow-all" }), "example.com", 443);
    expect(Object.isFrozen(d)).toBe(true);
    expect(Object.isFrozen(d.addresses)).toBe(true);
  });
});

describe("reason codes reachable from the pure engine", () => {
  const cases: Array<[string, () => Decision | Promise<Decision>]> = [
    ["mode-allow-all", () => decideFor(compile({ mode: "allow-all" }), "example.com", 443)],
    ["domain-allowed", () => decideFor(compile({ mode: "custom", allow_domains: ["example.com"] }), "example.com", 443)],
    ["cidr-allowed", () => decideFor(compile({ mode: "custom", allow_cidrs: ["93.184.216.0/24"] }), "example.com", 443)],
    ["mode-deny-all", () => decideFor(compile({ mode: "deny-all" }), "example.com", 443)],
    ["domain-denied", () => decideFor(compile({ mode: "allow-all", deny_domains: ["example.com"] }), "example.com", 443)],
    ["cidr-denied", () => decideFor(compile({ mode: "allow-all", deny_cidrs: ["93.184.216.0/24"] }), "example.com", 443)],
    ["internal-address", () => decideFor(compile({ mode: "allow-all" }), "example.com", 443, ["10.0.0.1"])],
    ["not-allowed", () => decideFor(compile({ mode: "custom" }), "example.com", 443)],
    ["invalid-target", () => decideFor(compile({ mode: "allow-all" }), "example.com", 0)],
    ["dns-failed", () => decideFor(compile({ mode: "allow-all" }), "example.com", 443, [])],
    ["upstream-timeout", () => decideResolving(compile({ mode: "allow-all" }), host("example.com"), 443, () => Promise.reject({ code: "upstream-timeout" }))],
  ];

  it.each(cases)("reaches %s", async (reason, run) => {
    const d = await run();
    expect(d.reason).toBe(reason);
    expect(d.allowed).toBe((ALLOW_CODES as readonly string[]).includes(reason));
    if (!d.allowed) expect(Object.keys(DENY_CODES)).toContain(reason);
  });
});
