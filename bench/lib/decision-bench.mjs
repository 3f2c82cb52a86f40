// Policy decision micro-benchmark (DESIGN.md "Performance targets": decision time flat in rule count). Forked by
// the `decision` workload; imports the compiled modules from dist/ (npm run build), so it measures what the proxy
// runs. IPC {cmd:"run", distDir, sizes, rounds, ms} → per size: ns per decide(), parse and compile ms.
//
// Rules at size N: 6 fixed "probe" domain rules (an exact name, a `*.` wildcard, an in-label glob, two denies)
// plus N − 6 filler rules: 60 % exact names, 25 % `*.` wildcards, 10 % in-label globs (`w17-*.g0.org`; four share
// each suffix, at every size), 5 % deny_domains; plus CIDRs (2 probes + N/100 filler, each of allow and deny).
// The probe hosts are identical at every size: a hit on each kind, denies, misses, IP literals. Their decisions
// must be the same at every size and as expected, or the sample fails.
import path from "node:path";
import { pathToFileURL } from "node:url";

const PROBE_DOMAINS = { allow: ["api.probe-exact.com", "*.probe-wild.com", "api-*.probe-glob.com", "*.deep.probe-wild.net"],
  deny: ["bad.probe-deny.com", "*.probe-denywild.com"] };
const PROBE_CIDRS = { allow: ["93.184.0.0/16"], deny: ["93.184.216.0/24"] };

const name = (n) => ({ kind: "name", name: n });
const ip = (a) => ({ kind: "ip", ip: a, family: 4 });
/** [host, addresses, expected reason]; addresses are what a resolver would have returned for a name. */
const PROBES = [
  [name("api.probe-exact.com"), ["8.8.8.8"], "domain-allowed"],            // exact hit
  [name("x.y.probe-wild.com"), ["8.8.8.8"], "domain-allowed"],             // wildcard hit
  [name("api-v2.probe-glob.com"), ["8.8.8.8"], "domain-allowed"],          // glob hit
  [name("a.b.deep.probe-wild.net"), ["8.8.8.8"], "domain-allowed"],        // deep wildcard hit
  [name("bad.probe-deny.com"), ["8.8.8.8"], "domain-denied"],              // exact deny
  [name("q.probe-denywild.com"), ["8.8.8.8"], "domain-denied"],            // wildcard deny
  [name("nothing.unknown-domain.org"), ["8.8.8.8"], "not-allowed"],        // miss
  [name("a.b.c.d.e.f.g.example.com"), ["8.8.8.8"], "not-allowed"],         // deep miss
  [name("web-x.probe-glob.com"), ["8.8.8.8"], "not-allowed"],              // glob near miss
  [name("cdn.unlisted.net"), ["93.184.5.5"], "cidr-allowed"],              // miss by name, allowed by CIDR
  [ip("93.184.216.34"), null, "cidr-denied"],                              // IP in the more specific deny
  [ip("93.184.1.1"), null, "cidr-allowed"],                                // IP in the allow
  [ip("8.8.4.4"), null, "not-allowed"],                                    // IP miss
];

export function buildPolicy(n) {
  const allow = [...PROBE_DOMAINS.allow];
  const deny = [...PROBE_DOMAINS.deny];
  for (let i = 0; allow.length + deny.length < n; i++) {
    const k = i % 20;
    if (k < 12) allow.push(`s${i}.svc${i % 997}.com`);
    else if (k < 17) allow.push(`*.z${i}.example${i % 13}.net`);
    else if (k < 19) allow.push(`w${i}-*.g${Math.floor(i / 40)}.org`);
    else deny.push(i % 40 === 19 ? `d${i}.bad${i % 101}.com` : `*.dw${i}.com`);
  }
  const extra = Math.floor(n / 100);
  const allowCidrs = [...PROBE_CIDRS.allow];
  const denyCidrs = [...PROBE_CIDRS.deny];
  for (let i = 0; i < extra; i++) {
    allowCidrs.push(`44.${(i >> 8) & 255}.${i & 255}.0/24`);
    denyCidrs.push(`45.${(i >> 8) & 255}.${i & 255}.0/24`);
  }
  return { mode: "custom", allow_domains: allow, deny_domains: deny, allow_cidrs: allowCidrs, deny_cidrs: denyCidrs };
}

async function run({ distDir, sizes, rounds, ms }) {
  const imp = (m) => import(pathToFileURL(path.join(distDir, "policy", m)).href);
  const [{ parsePolicy }, { compilePolicy }, { decide }] = await Promise.all([imp("schema.js"), imp("compile.js"), imp("decide.js")]);
  const compiled = {};
  const setup = {};
  for (const n of sizes) {
    const policyObj = buildPolicy(n);
    const t0 = process.hrtime.bigint();
    const parsed = parsePolicy(policyObj);
    const t1 = process.hrtime.bigint();
    if (!parsed.ok) throw new Error(`policy of ${n} rules rejected: ${JSON.stringify(parsed.errors.slice(0, 3))}`);
    compiled[n] = compilePolicy(parsed.policy);
    const t2 = process.hrtime.bigint();
    const domainRules = policyObj.allow_domains.length + policyObj.deny_domains.length;
    setup[n] = { parseMs: Number(t1 - t0) / 1e6, compileMs: Number(t2 - t1) / 1e6, domainRules,
      cidrRules: policyObj.allow_cidrs.length + policyObj.deny_cidrs.length };
    // Correctness first: every probe decides as expected at this size.
    for (const [host, addrs, want] of PROBES) {
      const d = decide(compiled[n], host, 443, addrs);
      if (d.reason !== want) throw new Error(`${n} rules: ${host.name ?? host.ip} decided ${d.reason} (${d.rule}), expected ${want}`);
    }
  }
  let sink = 0;
  const timeOnce = (n, budgetMs) => {
    const c = compiled[n];
    let count = 0;
    const t0 = process.hrtime.bigint();
    const end = t0 + BigInt(Math.round(budgetMs * 1e6));
    let now = t0;
    while (now < end) {
      for (let r = 0; r < 50; r++) {
        for (const [host, addrs] of PROBES) if (decide(c, host, 443, addrs).allowed) sink++;
      }
      count += 50 * PROBES.length;
      now = process.hrtime.bigint();
    }
    return Number(now - t0) / count;
  };
  for (const n of sizes) timeOnce(n, Math.max(100, ms / 2)); // JIT warm-up on every size
  const ns = Object.fromEntries(sizes.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    // Rotate the order so no size always runs first (or right after a GC-heavy one).
    const order = sizes.slice(r % sizes.length).concat(sizes.slice(0, r % sizes.length));
    for (const n of order) ns[n].push(timeOnce(n, ms));
  }
  const med = (xs) => { const v = [...xs].sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };
  return {
    probes: PROBES.length, sink,
    sizes: Object.fromEntries(sizes.map((n) => [n, { ...setup[n], nsPerDecision: med(ns[n]), rounds: ns[n] }])),
  };
}

if (process.send) {
  process.on("message", async (msg) => {
    try {
      process.send({ id: msg.id, result: await run(msg) });
    } catch (e) {
      process.send({ id: msg.id, error: e?.stack ?? String(e) });
    }
  });
  process.on("disconnect", () => process.exit(0));
  process.send({ ready: true });
}
