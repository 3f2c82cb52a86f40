import { describe, expect, it } from "vitest";
import { compilePolicy } from "../../../src/policy/compile.js";
import { decide } from "../../../src/policy/decide.js";
import { parsePolicy } from "../../../src/policy/schema.js";

// Correctness only: the benchmark (bench/) measures the time. DESIGN.md: 100,000 domain rules must work.
describe("100,000 domain rules", () => {
  const allow: string[] = [];
  const deny: string[] = [];
  for (let i = 0; i < 50_000; i++) allow.push(`host${i}.svc${i % 997}.example.com`);
  for (let i = 0; i < 49_000; i++) allow.push(`*.tenant${i}.example.net`);
  for (let i = 0; i < 1_000; i++) allow.push(`api${i}-*.example.org:443`);
  for (let i = 0; i < 1_000; i++) deny.push(`blocked.tenant${i}.example.net`);

  it("validates, compiles and answers each kind of lookup correctly", () => {
    const parsed = parsePolicy({ mode: "custom", allow_domains: allow, deny_domains: deny });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const c = compilePolicy(parsed.policy);
    const at = (name: string, port = 443): string => {
      const d = decide(c, { kind: "name", name }, port, ["93.184.216.34"]);
      return `${d.reason} ${d.rule ?? "-"}`;
    };
    expect(at("host49999.svc149.example.com")).toBe("domain-allowed allow_domains[49999]=host49999.svc149.example.com");
    expect(at("host49999.svc150.example.com")).toBe("not-allowed -");
    expect(at("deep.a.tenant48999.example.net")).toBe("domain-allowed allow_domains[98999]=*.tenant48999.example.net");
    expect(at("tenant48999.example.net")).toBe("not-allowed -");
    expect(at("blocked.tenant999.example.net")).toBe("domain-denied deny_domains[999]=blocked.tenant999.example.net");
    expect(at("api999-x.example.org")).toBe("domain-allowed allow_domains[99999]=api999-*.example.org:443");
    expect(at("api999-x.example.org", 80)).toBe("not-allowed -");
    expect(at("api99-x.example.org")).toBe("domain-allowed allow_domains[99099]=api99-*.example.org:443");
    expect(at("nothing.example.com")).toBe("not-allowed -");
  });
});
