import fc from "fast-check";
import { runs } from "../../helpers/runs.js";
import { describe, expect, it } from "vitest";
import { cidrContains, parseCidr, type Cidr } from "../../../src/net/cidr.js";
import { classifyAddress, embeddedIPv4, INTERNAL_RANGES } from "../../../src/net/classify.js";
import { formatHostPort, hostString, normaliseHost, parseHostPort } from "../../../src/net/hostport.js";
import { canonicalIp, formatIp } from "../../../src/net/ip.js";
import { compilePolicy } from "../../../src/policy/compile.js";
import { decide } from "../../../src/policy/decide.js";
import { parseDomainPattern, type DomainPattern } from "../../../src/policy/pattern.js";
import type { Host, NameVerdict } from "../../../src/policy/types.js";
import { compile } from "./helpers.js";

const hostLike = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.domain(),
  fc.domain().map((d) => d.toUpperCase() + "."),
  fc.ipV4(),
  fc.ipV4Extended(),
  fc.ipV6(),
  fc.ipV6().map((ip) => `[${ip.toUpperCase()}]`),
  fc.ipV4().map((ip) => `::ffff:${ip}`),
  fc.constantFrom("bücher.example", "BÜCHER.example.", "faß.de", "xn--n3h.com", "127.1", "0x7f.1", "2130706433", "_dmarc.example.com"),
);

describe("host normalisation properties", () => {
  it("normaliseHost is idempotent", () => {
    fc.assert(
      fc.property(hostLike, (raw) => {
        const r = normaliseHost(raw);
        if (!r.ok) return;
        expect(normaliseHost(hostString(r.host))).toEqual(r);
      }),
      runs(2000),
    );
  });

  it("parseHostPort → formatHostPort → parseHostPort round-trips", () => {
    const target = fc.oneof(
      fc.tuple(hostLike, fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `${h}:${p}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `[${h}]:${p}`),
      fc.string(),
    );
    fc.assert(
      fc.property(target, (s) => {
        const r = parseHostPort(s);
        if (!r.ok) return;
        expect(parseHostPort(formatHostPort(r.host, r.port))).toEqual(r);
      }),
      runs(2000),
    );
  });

  it("parses every IPv4 and bracketed IPv6 with a port", () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4Extended(), fc.ipV6().map((ip) => `[${ip}]`)), fc.integer({ min: 1, max: 65535 }), (h, p) => {
        const r = parseHostPort(`${h}:${p}`);
        expect(r.ok).toBe(true);
        if (r.ok) expect(r.host.kind).toBe("ip");
      }),
    );
  });
});

// ---- no internal address is ever usable without an allow_cidrs rule covering it or an exemption ----

const CIDR_POOL = [
  "0.0.0.0/0", "::/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "127.0.0.0/8", "127.0.0.1/32", "169.254.0.0/16",
  "169.254.169.254/32", "100.64.0.0/10", "192.168.0.0/16", "8.8.8.0/24", "64:ff9b::/96", "2002::/16", "2001::/32",
  "fc00::/7", "fd00::/8", "::1/128", "fe80::/10", "2001:db8::/32", "224.0.0.0/4", "0.0.0.0/8",
];

function rangeAddress(cidr: string, offset: bigint): string {
  const r = parseCidr(cidr);
  if (!r.ok) throw new Error(r.error);
  const width = r.cidr.family === 4 ? 32 : 128;
  const size = 1n << BigInt(width - r.cidr.prefixLength);
  return formatIp({ family: r.cidr.family, value: r.cidr.network + (offset % size) });
}

const offset = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });
const internalAddress = fc
  .tuple(fc.constantFrom(...INTERNAL_RANGES.map((r) => r.cidr), ...CIDR_POOL), offset, fc.constantFrom(0n, 1n, 2n))
  .map(([cidr, off, edge]) => rangeAddress(cidr, edge === 0n ? off : edge === 1n ? 0n : -1n + (1n << 128n)));
const v4 = fc.oneof(internalAddress.filter((a) => !a.includes(":")), fc.ipV4());
const embedded = fc.tuple(v4, fc.constantFrom("mapped", "compat", "nat64", "nat64local", "6to4", "teredo")).map(([ip, kind]) => {
  const v = canonicalIp(ip)?.value ?? 0n;
  const as6 = (x: bigint): string => formatIp({ family: 6, value: x });
  switch (kind) {
    case "mapped":
      return `::ffff:${ip}`;
    case "compat":
      return as6(v);
    case "nat64":
      return as6((0x64ff9bn << 96n) | v);
    case "nat64local":
      return as6((0x64ff9b0001n << 80n) | v);
    case "6to4":
      return as6((0x2002n << 112n) | (v << 80n) | 1n);
    default:
      return as6((0x20010000n << 96n) | (0x4136e378n << 64n) | (~v & 0xffffffffn));
  }
});
const anyAddress = fc.oneof(internalAddress, embedded, fc.ipV4(), fc.ipV6());

function parsedPool(list: readonly string[]): Cidr[] {
  return list.map((c) => {
    const r = parseCidr(c);
    if (!r.ok) throw new Error(r.error);
    return r.cidr;
  });
}

describe("address safety properties", () => {
  it("never makes an internal address usable without an allow_cidrs rule covering it or an exemption", () => {
    const subset = fc.subarray(CIDR_POOL, { maxLength: 4 });
    fc.assert(
      fc.property(
        fc.constantFrom("allow-all", "custom"),
        subset,
        subset,
        subset,
        fc.boolean(),
        anyAddress,
        (mode, allow, deny, exempt, nameAllowed, address) => {
          const policy = mode === "custom" ? { mode, allow_cidrs: allow, deny_cidrs: deny, allow_domains: ["x.example.com"] } : { mode, deny_cidrs: deny };
          const c = compile(policy, { internalAllow: exempt });
          const name: NameVerdict = nameAllowed
            ? { verdict: "allow", reason: "domain-allowed", rule: "allow_domains[0]=x.example.com", needsNoResolution: false }
            : { verdict: "none", reason: null, rule: null, needsNoResolution: false };
          const v = c.judgeAddress(address, name, 443);
          if (!v.usable) return;
          const allowCidrs = parsedPool(mode === "custom" ? allow : []);
          const exemptCidrs = parsedPool(exempt);
          const targets = [address, embeddedIPv4(address)].filter((t): t is string => t !== null);
          for (const t of targets) {
            if (classifyAddress(t) === null) continue;
            const ip = canonicalIp(t);
            if (ip === null) continue;
            const covered = [...allowCidrs, ...exemptCidrs].some((cidr) => cidrContains(cidr, ip));
            expect(covered, `${address} (${t}) is internal but usable: ${JSON.stringify(v)}`).toBe(true);
          }
        },
      ),
      runs(3000),
    );
  });

  it("never allows a decision without a usable address, and dials only judged-usable addresses", () => {
    const c = compile({ mode: "allow-all", deny_cidrs: ["8.8.8.0/24"] });
    fc.assert(
      fc.property(fc.array(anyAddress, { maxLength: 5 }), (addresses) => {
        const d = decide(c, { kind: "name", name: "x.example.com" }, 443, addresses);
        expect(d.allowed).toBe(d.addresses.length > 0);
        const usable = new Set(d.judged.filter((j) => j.usable).map((j) => j.address));
        for (const a of d.addresses) expect(usable.has(a)).toBe(true);
      }),
    );
  });
});

describe("decide is total", () => {
  const policies = [
    compile({ mode: "allow-all", deny_domains: ["*.example.com"], deny_cidrs: ["8.8.8.0/24"] }),
    compile({ mode: "custom", allow_domains: ["api-*.example.com", "*.example.org:443"], allow_cidrs: ["10.1.0.0/16"] }, { selfAddresses: ["127.0.0.1:3128"] }),
    compile({ mode: "deny-all" }),
  ];

  it("never throws on arbitrary strings, ports and addresses", () => {
    const anyHost: fc.Arbitrary<Host> = fc.oneof(
      fc.string().map((name) => ({ kind: "name" as const, name })),
      fc.string().map((ip) => ({ kind: "ip" as const, ip, family: 4 as const })),
      fc.string().map((ip) => ({ kind: "ip" as const, ip, family: 6 as const })),
      hostLike.map((raw) => {
        const r = normaliseHost(raw);
        return r.ok ? r.host : { kind: "name" as const, name: raw };
      }),
    );
    const anyPort = fc.oneof(fc.integer({ min: -10, max: 70000 }), fc.double(), fc.constant(443));
    fc.assert(
      fc.property(
        fc.constantFrom(...policies),
        anyHost,
        anyPort,
        fc.option(fc.array(fc.oneof(fc.string(), anyAddress), { maxLength: 4 })),
        fc.string(),
        (c, host, port, addresses, other) => {
          const d = decide(c, host, port, addresses);
          expect(typeof d.reason).toBe("string");
          c.transformsFor(other, port);
          c.judgeAddress(other, c.decideName(host, port), port);
        },
      ),
      runs(3000),
    );
  });
});

// ---- the index agrees with a brute-force reading of DESIGN.md's specificity rules ----

function naiveMatches(p: DomainPattern, name: string, port: number): boolean {
  if (p.port !== null && p.port !== port) return false;
  const host = p.labels.join(".");
  if (p.kind === "exact") return name === host;
  if (p.kind === "wild") return name.endsWith(`.${host}`);
  const labels = name.split(".");
  return labels.length === p.labels.length && p.regex !== null && p.regex.test(name);
}

function naiveVerdict(rules: ReadonlyArray<{ p: DomainPattern; action: "allow" | "deny" }>, name: string, port: number): string {
  const rank = { wild: 0, glob: 1, exact: 2 } as const;
  const key = (p: DomainPattern): number[] => [p.pinned, rank[p.kind], p.port === null ? 0 : 1];
  let best: number[] | null = null;
  let actions = new Set<string>();
  for (const r of rules) {
    if (!naiveMatches(r.p, name, port)) continue;
    const k = key(r.p);
    const cmp = best === null ? 1 : k[0]! - best[0]! || k[1]! - best[1]! || k[2]! - best[2]!;
    if (cmp > 0) {
      best = k;
      actions = new Set([r.action]);
    } else if (cmp === 0) {
      actions.add(r.action);
    }
  }
  return best === null ? "none" : actions.has("deny") ? "deny" : "allow";
}

describe("name index", () => {
  it("agrees with a brute-force matcher", () => {
    const label = fc.constantFrom("a", "b", "api", "api-1", "api-x", "x-api", "www");
    const suffix = fc.constantFrom("example.com", "b.example.com", "a.b.example.com");
    const pattern = fc
      .tuple(fc.constantFrom("exact", "wild", "glob", "glob2"), label, suffix, fc.option(fc.constantFrom(443, 80)))
      .map(([kind, l, s, port]) => {
        const host = kind === "exact" ? `${l}.${s}` : kind === "wild" ? `*.${s}` : kind === "glob" ? `api-*.${s}` : `*-api.${s}`;
        return port === null ? host : `${host}:${port}`;
      });
    const hostName = fc.tuple(fc.array(label, { maxLength: 3 }), suffix).map(([ls, s]) => [...ls, s].join("."));
    fc.assert(
      fc.property(fc.array(pattern, { maxLength: 8 }), fc.array(pattern, { maxLength: 8 }), hostName, fc.constantFrom(443, 80, 8080), (allow, deny, name, port) => {
        const c = compilePolicy({ mode: "custom", allow_domains: allow, deny_domains: deny });
        const parse = (s: string): DomainPattern => {
          const r = parseDomainPattern(s);
          if (!r.ok) throw new Error(r.error);
          return r.pattern;
        };
        const rules = [...allow.map((s) => ({ p: parse(s), action: "allow" as const })), ...deny.map((s) => ({ p: parse(s), action: "deny" as const }))];
        expect(c.decideName({ kind: "name", name }, port).verdict).toBe(naiveVerdict(rules, name, port));
      }),
      runs(3000),
    );
  });
});
