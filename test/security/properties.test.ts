/**
 * Property-based adversarial tests (fast-check). They extend test/unit/policy/properties.test.ts and
 * test/unit/proxy/clienthello.test.ts rather than repeat them: adversarial host spellings instead of plain
 * ones, structure-aware ClientHello mutations and dribbled sockets instead of byte overwrites, arbitrary JSON
 * into the policy schema, and the internal-address invariant with rules derived from the very address judged
 * (so that the "longer prefix" boundary is hit constantly) over every embedded-IPv4 form.
 *
 * Pure: no sockets except an in-memory stream, nothing dialled.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type net from "node:net";
import { PassThrough } from "node:stream";
import fc from "fast-check";
import { runs } from "../helpers/runs.js";
import { captureNodeHello } from "../helpers/tls-hello.js";
import { beforeAll, describe, expect, it } from "vitest";
import { cidrContains, parseCidr, type Cidr } from "../../src/net/cidr.js";
import { classifyAddress, embeddedIPv4, INTERNAL_RANGES } from "../../src/net/classify.js";
import { canonicaliseHost, hostString, normaliseHost, parseHostPort } from "../../src/net/hostport.js";
import { canonicalIp, formatIp, formatIPv4 } from "../../src/net/ip.js";
import { ALLOW_CODES, DENY_CODES } from "../../src/policy/codes.js";
import { compilePolicy } from "../../src/policy/compile.js";
import { decide } from "../../src/policy/decide.js";
import { parsePolicy } from "../../src/policy/schema.js";
import type { Policy } from "../../src/policy/types.js";
import { parseClientHello, readClientHello, type ClientHelloResult } from "../../src/proxy/clienthello.js";
import { decideTarget, type ProxyContext } from "../../src/proxy/context.js";
import { SelfAddresses } from "../../src/proxy/self.js";

// ---------------------------------------------------------------------------------------------------------------
// Host spellings an attacker would try

const ALPHA = "abcdefghijklmnopqrstuvwxyz0123456789";
// "xn--" labels are ACE (punycode) labels, valid only if they decode: excluded here, IDN has its own cases.
const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/).filter((l) => !l.startsWith("xn--"));
const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => [...ls, "example", "com"].join("."));

/** Full-width forms (U+FF10.., U+FF41..) that UTS #46 maps back to ASCII. */
const fullWidth = (s: string): string =>
  [...s].map((c) => (ALPHA.includes(c) ? String.fromCodePoint(c <= "9" && c >= "0" ? 0xff10 + Number(c) : 0xff41 + c.charCodeAt(0) - 97) : c)).join("");

/** Re-spell a name so that it must normalise to the same name: case, dot variants, full-width, trailing dot. */
const respelled = fc
  .tuple(name, fc.constantFrom(".", "\u3002", "\uff0e", "\uff61"), fc.boolean(), fc.boolean(), fc.boolean())
  .map(([n, dot, upper, wide, trailing]) => {
    let s = upper ? n.toUpperCase() : n;
    if (wide) s = fullWidth(s.toLowerCase());
    s = s.split(".").join(dot);
    return { canonical: n, spelling: trailing ? `${s}.` : s };
  });

/** An inet_aton spelling of a 32-bit value: 1–4 parts, each decimal, octal (0…) or hex (0x…). */
const inetAton = fc
  .tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 4 }), fc.array(fc.constantFrom("dec", "oct", "hex", "HEX"), { minLength: 4, maxLength: 4 }), fc.boolean())
  .map(([v, parts, radices, trailingDot]) => {
    const bytes = [24, 16, 8, 0].map((s) => (v >>> s) & 0xff);
    // The first parts-1 parts are single bytes; the last part holds all remaining bytes.
    const values = [...bytes.slice(0, parts - 1), bytes.slice(parts - 1).reduce((acc, b) => acc * 256 + b, 0)];
    const text = values
      .map((x, i) => {
        switch (radices[i]) {
          case "oct":
            return `0${x.toString(8)}`;
          case "hex":
            return `0x${x.toString(16)}`;
          case "HEX":
            return `0X${x.toString(16).toUpperCase()}`;
          default:
            return String(x);
        }
      })
      .join(".");
    return { value: v, spelling: trailingDot ? `${text}.` : text };
  });

/** Adversarial raw hosts: all of the above, IPv6 in odd casings and with zones, and raw junk. */
const adversarialHost = fc.oneof(
  respelled.map((r) => r.spelling),
  inetAton.map((a) => a.spelling),
  fc.ipV6().map((ip) => `[${ip.toUpperCase()}]`),
  fc.ipV4().map((ip) => `[::ffff:${ip}]`),
  fc.tuple(fc.ipV6(), fc.string({ maxLength: 6 })).map(([ip, zone]) => `[${ip}%${zone}]`),
  fc.tuple(name, fc.constantFrom("а", "ο", "і", "\u00ad", "\u200b", "%2e", "%00", "..", ":", "@", "/", "\\")).map(([n, bad]) => n.replace(".", `${bad}.`)),
  fc.integer({ min: 60, max: 70 }).map((n) => `${"a".repeat(n)}.example.com`),
  fc.integer({ min: 248, max: 260 }).map((n) => `${"a.".repeat(Math.floor((n - 11) / 2))}example.com`),
  fc.string({ unit: "binary", maxLength: 80 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
);

describe("host parsing properties", () => {
  it("normaliseHost is idempotent on adversarial spellings, and its output is canonical", () => {
    fc.assert(
      fc.property(adversarialHost, (raw) => {
        const r = normaliseHost(raw);
        if (!r.ok) {
          expect(typeof r.error).toBe("string");
          return;
        }
        expect(normaliseHost(hostString(r.host))).toEqual(r);
        expect(canonicaliseHost(r.host)).toEqual(r.host);
      }),
      runs(3000),
    );
  });

  it("every inet_aton spelling of an IPv4 address normalises to its dotted quad", () => {
    fc.assert(
      fc.property(inetAton, ({ value, spelling }) => {
        expect(normaliseHost(spelling)).toEqual({ ok: true, host: { kind: "ip", ip: formatIPv4(BigInt(value)), family: 4 } });
      }),
      runs(2000),
    );
  });

  it("IPv4-mapped IPv6 in any notation normalises to the IPv4 it maps", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.boolean(), fc.boolean(), (v, dotted, upper) => {
        const quad = formatIPv4(BigInt(v));
        const hex = `${(v >>> 16).toString(16)}:${(v & 0xffff).toString(16)}`;
        const text = `[::ffff:${dotted ? quad : hex}]`;
        expect(normaliseHost(upper ? text.toUpperCase() : text)).toEqual({ ok: true, host: { kind: "ip", ip: quad, family: 4 } });
      }),
      runs(1000),
    );
  });

  it("parseHostPort never throws, and what it accepts is a canonical host and a port in 1..65535", () => {
    const valid = fc.oneof(
      fc.tuple(adversarialHost, fc.integer({ min: 0, max: 70000 })).map(([h, p]) => `${h}:${p}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `[${h}]:${p}`),
    );
    // Insert, delete or duplicate characters anywhere in a plausible target.
    const mutated = fc
      .tuple(valid, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 3 }), fc.string({ unit: "binary", maxLength: 3 })), { maxLength: 4 }))
      .map(([s, edits]) => edits.reduce((acc, [pos, del, ins]) => acc.slice(0, pos % (acc.length + 1)) + ins + acc.slice((pos % (acc.length + 1)) + del), s));
    fc.assert(
      fc.property(fc.oneof(valid, mutated, fc.string({ unit: "binary", maxLength: 300 }), fc.string({ unit: "binary", minLength: 1000, maxLength: 5000 })), fc.option(fc.integer({ min: -5, max: 70000 })), (input, defaultPort) => {
        const r = parseHostPort(input, defaultPort ?? undefined);
        expect(typeof r.ok).toBe("boolean");
        if (!r.ok) return;
        expect(r.port).toBeGreaterThanOrEqual(1);
        expect(r.port).toBeLessThanOrEqual(65535);
        expect(canonicaliseHost(r.host)).toEqual(r.host);
        expect(hostString(r.host)).not.toMatch(/[%@/\\\s]/);
      }),
      runs(4000),
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// ClientHello

const STATUSES = ["incomplete", "ok", "not-tls", "invalid"];

function wellFormed(r: ClientHelloResult): void {
  expect(STATUSES).toContain(r.status);
  if (r.status === "ok" && r.sni !== null) expect(r.sni).toMatch(/^[a-z0-9._-]+$/);
}

type Edit =
  | { kind: "field"; pos: number; width: number; value: number }
  | { kind: "insert"; pos: number; bytes: Uint8Array }
  | { kind: "delete"; pos: number; len: number }
  | { kind: "repeat"; pos: number; len: number; times: number }
  | { kind: "truncate"; pos: number };

/** Structure-aware mutations: extreme values in 8/16/24-bit fields, inserted, deleted and repeated slices. */
function mutation(helloCount: number): fc.Arbitrary<[number, Edit[]]> {
  const edit: fc.Arbitrary<Edit> = fc.oneof(
    fc.record({ kind: fc.constant("field" as const), pos: fc.nat(), width: fc.constantFrom(1, 2, 3), value: fc.constantFrom(0, 1, 0x7f, 0xff, 0xffff, 0xffffff, 0x4000, 0x4001) }),
    fc.record({ kind: fc.constant("insert" as const), pos: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
    fc.record({ kind: fc.constant("delete" as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
    fc.record({ kind: fc.constant("repeat" as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 512 }), times: fc.integer({ min: 1, max: 30 }) }),
    fc.record({ kind: fc.constant("truncate" as const), pos: fc.nat() }),
  );
  return fc.tuple(fc.nat({ max: helloCount - 1 }), fc.array(edit, { minLength: 1, maxLength: 5 }));
}

function applyEdits(original: Buffer, edits: readonly Edit[]): Buffer {
  let b = Buffer.from(original);
  for (const e of edits) {
    const at = b.length === 0 ? 0 : e.pos % b.length;
    switch (e.kind) {
      case "field":
        for (let i = 0; i < e.width && at + i < b.length; i++) b[at + i] = (e.value >> (8 * (e.width - 1 - i))) & 0xff;
        break;
      case "insert":
        b = Buffer.concat([b.subarray(0, at), Buffer.from(e.bytes), b.subarray(at)]);
        break;
      case "delete":
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.len)]);
        break;
      case "repeat": {
        const slice = b.subarray(at, at + e.len);
        b = Buffer.concat([b.subarray(0, at), ...Array.from({ length: e.times }, () => slice), b.subarray(at)]);
        break;
      }
      case "truncate":
        b = b.subarray(0, at);
        break;
    }
  }
  return b;
}

describe("ClientHello parser properties", () => {
  let hellos: Buffer[];

  beforeAll(async () => {
    hellos = await Promise.all([
      captureNodeHello({ servername: "api.example.com", ALPNProtocols: ["h2", "http/1.1"] }),
      captureNodeHello({ servername: "x.y.z.example.org", maxVersion: "TLSv1.2", minVersion: "TLSv1.2" }),
      captureNodeHello({}),
      captureNodeHello({ servername: `${"a".repeat(63)}.example.com`, ALPNProtocols: Array.from({ length: 20 }, (_, i) => `proto-${i}`) }),
    ]);
  });

  it("never throws and stays fast on structurally mutated real ClientHellos", () => {
    let slowest = 0;
    fc.assert(
      fc.property(mutation(4), ([which, edits]) => {
        const bytes = applyEdits(hellos[which]!, edits);
        const started = performance.now();
        const r = parseClientHello(bytes);
        slowest = Math.max(slowest, performance.now() - started);
        wellFormed(r);
      }),
      runs(3000),
    );
    // Linear in its (capped) input: no mutation makes one parse take long. Generous for a loaded CI box.
    expect(slowest).toBeLessThan(100);
  });

  it("never throws on a real ClientHello's records re-split at random and fed records of random types", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 3 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 30 }),
        fc.array(fc.constantFrom(20, 21, 22, 23, 24, 0, 255), { maxLength: 30 }),
        (which, sizes, types) => {
          const message = hellos[which]!.subarray(5);
          const out: Buffer[] = [];
          let off = 0;
          sizes.forEach((size, i) => {
            const payload = message.subarray(off, off + size);
            off += size;
            out.push(Buffer.from([types[i] ?? 22, 3, 1, payload.length >> 8, payload.length & 0xff]), payload);
          });
          if (off < message.length) out.push(Buffer.from([22, 3, 1, (message.length - off) >> 8, (message.length - off) & 0xff]), message.subarray(off));
          wellFormed(parseClientHello(Buffer.concat(out)));
        },
      ),
      runs(1500),
    );
  });

  it("readClientHello settles within its timeout however mutated bytes are dribbled, and never loses a byte", async () => {
    await fc.assert(
      fc.asyncProperty(mutation(4), fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 12 }), fc.boolean(), async ([which, edits], chunkSizes, endIt) => {
        const bytes = applyEdits(hellos[which]!, edits);
        const stream = new PassThrough();
        const timeoutMs = 60;
        const started = Date.now();
        const pending = readClientHello(stream as unknown as net.Socket, { timeoutMs });
        let off = 0;
        for (const size of chunkSizes) {
          if (off >= bytes.length) break;
          stream.write(bytes.subarray(off, off + size));
          off += size;
          await new Promise((r) => setImmediate(r));
        }
        const sent = bytes.subarray(0, off);
        if (endIt) stream.end();
        const { result, buffered } = await pending;
        expect(Date.now() - started).toBeLessThan(timeoutMs + 1000);
        wellFormed(result);
        // What it consumed is exactly a prefix of what was sent (to be replayed upstream, byte for byte).
        expect(sent.subarray(0, buffered.length).equals(buffered)).toBe(true);
        if (result.status !== "incomplete") expect(result).toEqual(parseClientHello(buffered));
      }),
      runs(60),
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// parsePolicy on arbitrary JSON

const POLICY_KEYS = ["mode", "allow_domains", "allow_cidrs", "deny_domains", "deny_cidrs", "transforms", "$schema"];
const looseString = fc.oneof(
  fc.domain(),
  fc.constantFrom("*.example.com", "*", "*.", "*.com", "*.co.uk", "api-*.example.com", "10.0.0.0/8", "::/0", "1.2.3.4", "example.com:443", "ex ample.com", "аpi.example.com", "__proto__"),
  fc.string({ maxLength: 30 }),
  fc.string({ unit: "binary", maxLength: 30 }),
);
const transformLike = fc.dictionary(
  fc.constantFrom("domain", "inject_headers", "strip_headers", "other"),
  fc.oneof(looseString, fc.array(looseString, { maxLength: 4 }), fc.dictionary(looseString, fc.oneof(looseString, fc.jsonValue({ maxDepth: 2 })), { maxKeys: 4 }), fc.jsonValue({ maxDepth: 2 })),
  { maxKeys: 4 },
);
const policyLike = fc.dictionary(
  fc.oneof(fc.constantFrom(...POLICY_KEYS), fc.string({ maxLength: 12 })),
  fc.oneof(
    fc.constantFrom("allow-all", "deny-all", "custom", "Custom", "allow_all", ""),
    fc.array(looseString, { maxLength: 6 }),
    fc.array(transformLike, { maxLength: 3 }),
    fc.jsonValue({ maxDepth: 3 }),
  ),
  { maxKeys: 7 },
);

function checkParse(input: unknown): void {
  const r = parsePolicy(input);
  if (!r.ok) {
    expect(r.errors.length).toBeGreaterThan(0);
    for (const e of r.errors) {
      expect(typeof e.field).toBe("string");
      expect(e.field.length).toBeGreaterThan(0);
      expect(typeof e.error).toBe("string");
      expect(e.error.length).toBeGreaterThan(0);
    }
    return;
  }
  // Accepted: frozen, compilable, and a fixed point of the schema (normalising twice changes nothing).
  expect(Object.isFrozen(r.policy)).toBe(true);
  expect(() => compilePolicy(r.policy)).not.toThrow();
  expect(parsePolicy(JSON.parse(JSON.stringify(r.policy)) as unknown)).toEqual(r);
}

describe("policy schema properties", () => {
  it("parsePolicy never throws on arbitrary JSON values", () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), checkParse), runs(2000));
  });

  it("parsePolicy never throws on policy-shaped objects, and whatever it accepts compiles and is a fixed point", () => {
    fc.assert(fc.property(policyLike, checkParse), runs(3000));
  });

  it("parsePolicy never throws on mutated JSON text of the shipped example policies", () => {
    const dir = path.resolve(import.meta.dirname, "../../policies");
    const texts = readdirSync(dir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => readFileSync(path.join(dir, f), "utf8"));
    fc.assert(
      fc.property(fc.nat({ max: texts.length - 1 }), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 4 }), fc.string({ maxLength: 4 })), { minLength: 1, maxLength: 4 }), (which, edits) => {
        const text = edits.reduce((acc, [pos, del, ins]) => acc.slice(0, pos % (acc.length + 1)) + ins + acc.slice((pos % (acc.length + 1)) + del), texts[which]!);
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch {
          return;
        }
        checkParse(value);
      }),
      runs(2000),
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The internal-address invariant

function cidrOf(text: string): Cidr {
  const r = parseCidr(text);
  if (!r.ok) throw new Error(r.error);
  return r.cidr;
}

/** The range of `prefix` bits around an address, as CIDR text (the rule an attacker-friendly operator might write). */
function around(address: string, prefix: number): string {
  const ip = canonicalIp(address)!;
  const width = ip.family === 4 ? 32 : 128;
  const len = Math.min(prefix, width);
  const mask = ((1n << BigInt(width)) - 1n) ^ ((1n << BigInt(width - len)) - 1n);
  return `${formatIp({ family: ip.family, value: ip.value & mask })}/${len}`;
}

const offset = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });
const internalV4 = fc
  .tuple(fc.constantFrom(...INTERNAL_RANGES.map((r) => r.cidr).filter((c) => !c.includes(":"))), offset, fc.constantFrom("random", "first", "last"))
  .map(([cidr, off, where]) => {
    const c = cidrOf(cidr);
    const size = 1n << BigInt(32 - c.prefixLength);
    return formatIp({ family: 4, value: c.network + (where === "first" ? 0n : where === "last" ? size - 1n : off % size) });
  });
const internalV6 = fc.tuple(fc.constantFrom(...INTERNAL_RANGES.map((r) => r.cidr).filter((c) => c.includes(":"))), offset).map(([cidr, off]) => {
  const c = cidrOf(cidr);
  return formatIp({ family: 6, value: c.network + (off % (1n << BigInt(128 - c.prefixLength))) });
});
const anyV4 = fc.oneof(internalV4, fc.ipV4());
/** Every way an IPv6 address can carry an IPv4 (judged by that IPv4, DESIGN.md "Addresses"). */
const embedding = fc.tuple(anyV4, fc.constantFrom("mapped-dotted", "mapped-hex", "compat", "nat64", "nat64-local", "6to4", "teredo")).map(([v4, kind]) => {
  const v = canonicalIp(v4)!.value;
  const six = (x: bigint): string => formatIp({ family: 6, value: x });
  switch (kind) {
    case "mapped-dotted":
      return `::ffff:${v4}`;
    case "mapped-hex":
      return six((0xffffn << 32n) | v);
    case "compat":
      return six(v);
    case "nat64":
      return six((0x64ff9bn << 96n) | v);
    case "nat64-local":
      return six((0x64ff9b0001n << 80n) | v);
    case "6to4":
      return six((0x2002n << 112n) | (v << 80n) | 0x1234n);
    default:
      return six((0x20010000n << 96n) | (0x4136e378n << 64n) | (~v & 0xffffffffn));
  }
});
const address = fc.oneof({ weight: 3, arbitrary: internalV4 }, { weight: 2, arbitrary: internalV6 }, { weight: 3, arbitrary: embedding }, fc.ipV4(), fc.ipV6());

/** CIDR rules: around the address under test (any prefix, so equal/longer/shorter than its internal range), or random. */
const rulesFor = (addresses: readonly string[]): fc.Arbitrary<string[]> =>
  fc.array(
    fc.oneof(
      fc.tuple(fc.constantFrom(...addresses.flatMap((a) => [a, embeddedIPv4(a) ?? a])), fc.integer({ min: 0, max: 128 })).map(([a, p]) => around(a, p)),
      fc.constantFrom("0.0.0.0/0", "::/0", "::ffff:0:0/96", "127.0.0.0/8", "169.254.0.0/16", "10.0.0.0/8", "64:ff9b::/96", "2002::/16", "2001::/32", "fc00::/7"),
    ),
    { maxLength: 4 },
  );

/** The internal range an address (or its embedded IPv4) falls in, as targets to check. */
function internalTargets(a: string): { target: string; prefix: number }[] {
  const out: { target: string; prefix: number }[] = [];
  for (const t of [a, embeddedIPv4(a)]) {
    if (t === null) continue;
    const r = classifyAddress(t);
    if (r !== null) out.push({ target: t, prefix: cidrOf(r.cidr).prefixLength });
  }
  return out;
}

const scenario = fc.array(address, { minLength: 1, maxLength: 4 }).chain((addresses) =>
  fc.record({
    addresses: fc.constant(addresses),
    mode: fc.constantFrom("allow-all", "custom", "deny-all"),
    allow: rulesFor(addresses),
    deny: rulesFor(addresses),
    exempt: rulesFor(addresses),
    nameAllowed: fc.boolean(),
  }),
);

describe("address safety properties", () => {
  it("no internal address is ever usable without an allow_cidrs rule covering it with a longer prefix, or an --internal-allow exemption", () => {
    fc.assert(
      fc.property(scenario, ({ addresses, mode, allow, deny, exempt, nameAllowed }) => {
        const policy: Policy = mode === "custom"
          ? { mode, allow_cidrs: allow, deny_cidrs: deny, ...(nameAllowed ? { allow_domains: ["target.example.com"] } : {}) }
          : mode === "allow-all" ? { mode, deny_cidrs: deny } : { mode };
        const parsed = parsePolicy(policy);
        expect(parsed.ok).toBe(true);
        if (!parsed.ok) return;
        const compiled = compilePolicy(parsed.policy, { internalAllow: exempt });
        const d = decide(compiled, { kind: "name", name: "target.example.com" }, 443, addresses);

        // The Decision is coherent: an allow has a usable address and an allow reason, a deny neither.
        expect(d.allowed).toBe(d.addresses.length > 0);
        expect(d.allowed ? (ALLOW_CODES as readonly string[]) : Object.keys(DENY_CODES)).toContain(d.reason);
        if (mode === "deny-all") expect(d.reason).toBe("mode-deny-all");

        const allowCidrs = (mode === "custom" ? allow : []).map(cidrOf);
        const exemptCidrs = exempt.map(cidrOf);
        for (const usable of d.addresses) {
          for (const { target, prefix } of internalTargets(usable)) {
            const ip = canonicalIp(target)!;
            const exempted = exemptCidrs.some((c) => cidrContains(c, ip));
            const unlocked = allowCidrs.some((c) => cidrContains(c, ip) && c.prefixLength > prefix);
            expect(exempted || unlocked, `${usable} (via ${target}, internal /${prefix}) usable: ${JSON.stringify({ policy, exempt, d })}`).toBe(true);
          }
        }
      }),
      runs(5000),
    );
  });

  it("a deny_cidrs rule is never beaten by an allow_cidrs rule of equal or shorter prefix", () => {
    fc.assert(
      fc.property(scenario, ({ addresses, allow, deny, exempt }) => {
        const compiled = compilePolicy({ mode: "custom", allow_cidrs: allow, deny_cidrs: deny, allow_domains: ["target.example.com"] }, { internalAllow: exempt });
        const d = decide(compiled, { kind: "name", name: "target.example.com" }, 443, addresses);
        const allowCidrs = allow.map(cidrOf);
        const denyCidrs = deny.map(cidrOf);
        for (const usable of d.addresses) {
          for (const t of [usable, embeddedIPv4(usable)]) {
            if (t === null) continue;
            const ip = canonicalIp(t)!;
            const longestDeny = Math.max(-1, ...denyCidrs.filter((c) => cidrContains(c, ip)).map((c) => c.prefixLength));
            const longestAllow = Math.max(-1, ...allowCidrs.filter((c) => cidrContains(c, ip)).map((c) => c.prefixLength));
            expect(longestDeny < 0 || longestAllow > longestDeny, `${usable} via ${t}: deny /${longestDeny} vs allow /${longestAllow}`).toBe(true);
          }
        }
      }),
      runs(3000),
    );
  });

  it("the proxy's own listening address:port is never usable, however the target spells or resolves to it", async () => {
    // The real path: decideTarget (policy decision, then the proxy's SelfAddresses), with every internal range
    // exempted and allow-all, so that only the self rule stands between the target and the listener.
    const compiled = compilePolicy({ mode: "allow-all" }, { internalAllow: ["0.0.0.0/0", "::/0"] });
    const listenAddress = fc.oneof(fc.constantFrom("127.0.0.1", "127.0.0.53", "10.0.0.5"), fc.ipV4());
    const how = fc.constantFrom("literal", "mapped-literal", "name", "name-mapped", "name-with-public");
    await fc.assert(
      fc.asyncProperty(listenAddress, fc.integer({ min: 1, max: 65535 }), how, async (listen, port, kind) => {
        const self = new SelfAddresses();
        self.add({ address: listen, family: "IPv4", port });
        const answers = kind === "name-mapped" ? [`::ffff:${listen}`] : kind === "name-with-public" ? [listen, "93.184.216.34"] : [listen];
        const ctx = {
          store: { state: { compiled } },
          resolver: { resolve: () => Promise.resolve(answers) },
          self,
          metrics: { decisionSeconds: { observe: () => undefined } },
        } as unknown as ProxyContext;
        const raw = kind === "literal" ? listen : kind === "mapped-literal" ? `[::ffff:${listen}]` : "self.example.com";
        const h = normaliseHost(raw);
        if (!h.ok) throw new Error(h.error);
        const d = await decideTarget(ctx, h.host, port);
        const dialled = d.addresses.map((a) => (a.startsWith("::ffff:") ? a.slice(7) : a));
        expect(dialled, JSON.stringify({ listen, port, kind, d })).not.toContain(listen);
        if (kind === "name-with-public") {
          expect(d).toMatchObject({ allowed: true, addresses: ["93.184.216.34"] });
        } else {
          expect(d).toMatchObject({ allowed: false, reason: "internal-address" });
          expect(d.rule).toMatch(/^self:/);
        }
        // Another port on the same address is not the proxy, and stays reachable under the exemption.
        const other = await decideTarget(ctx, h.host, port === 65535 ? 1 : port + 1);
        expect(other.allowed).toBe(true);
      }),
      runs(1000),
    );
  });

  it("a deny_domains rule cannot be dodged by re-spelling the host", () => {
    fc.assert(
      fc.property(respelled, fc.constantFrom("exact", "wild"), ({ canonical, spelling }, kind) => {
        const pattern = kind === "exact" ? canonical : `*.${canonical.split(".").slice(1).join(".")}`;
        const compiled = compilePolicy({ mode: "allow-all", deny_domains: [pattern] });
        const h = normaliseHost(spelling);
        expect(h.ok, spelling).toBe(true);
        if (!h.ok) return;
        expect(h.host).toEqual({ kind: "name", name: canonical });
        expect(compiled.decideName(h.host, 443)).toMatchObject({ verdict: "deny", reason: "domain-denied" });
      }),
      runs(2000),
    );
  });
});
