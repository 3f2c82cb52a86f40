import { describe, expect, it } from "vitest";
import { parseHeaderValue } from "../../../src/policy/headers.js";
import { parseDomainPattern } from "../../../src/policy/pattern.js";
import { DEFAULT_POLICY, formatPath, parsePolicy, policyJsonSchema } from "../../../src/policy/schema.js";
import type { FieldError, Policy } from "../../../src/policy/types.js";

function errorsOf(input: unknown): readonly FieldError[] {
  const r = parsePolicy(input);
  if (r.ok) throw new Error(`expected errors, got ${JSON.stringify(r.policy)}`);
  return r.errors;
}

function policyOf(input: unknown): Policy {
  const r = parsePolicy(input);
  if (!r.ok) throw new Error(`expected a policy, got ${JSON.stringify(r.errors)}`);
  return r.policy;
}

/** The single error of a policy, asserting its field. */
function onlyError(input: unknown, field: string): string {
  const errs = errorsOf(input);
  expect(errs.map((e) => e.field)).toEqual([field]);
  return errs[0]?.error ?? "";
}

describe("parsePolicy: valid policies", () => {
  it("accepts the CONTRACT example unchanged", () => {
    const example = {
      mode: "custom",
      allow_domains: ["api.github.com", "*.githubusercontent.com"],
      allow_cidrs: ["140.82.112.0/20"],
      deny_domains: ["gist.github.com"],
      transforms: [
        {
          domain: "api.openai.com",
          inject_headers: { Authorization: "Bearer ${env:OPENAI_API_KEY}" },
          strip_headers: ["x-debug-token"],
        },
      ],
    };
    expect(policyOf(example)).toEqual(example);
  });

  it.each(["allow-all", "deny-all", "custom"])("accepts mode %s alone", (mode) => {
    expect(policyOf({ mode })).toEqual({ mode });
  });

  it("ignores the $schema key", () => {
    expect(policyOf({ $schema: "./policy.schema.json", mode: "deny-all" })).toEqual({ mode: "deny-all" });
    expect(policyOf({ $schema: 7, mode: "deny-all" })).toEqual({ mode: "deny-all" });
  });

  it("lets allow-all and deny-all carry deny lists and transforms", () => {
    const p = {
      mode: "allow-all",
      deny_domains: ["evil.example.com"],
      deny_cidrs: ["203.0.113.0/24"],
      transforms: [{ domain: "api.example.com", strip_headers: ["x-a"] }],
    };
    expect(policyOf(p)).toEqual(p);
    expect(policyOf({ ...p, mode: "deny-all" })).toEqual({ ...p, mode: "deny-all" });
  });

  it("accepts empty allow lists with any mode", () => {
    expect(policyOf({ mode: "allow-all", allow_domains: [], allow_cidrs: [] }).mode).toBe("allow-all");
  });

  it("normalises patterns: case, trailing dot, IDN, port", () => {
    const p = policyOf({
      mode: "custom",
      allow_domains: ["API.Example.COM.", "*.Bücher.example", "API-*.Example.com:0443", "example.com:443"],
      deny_domains: ["*.EXAMPLE.org."],
      transforms: [{ domain: "Api.Example.com", strip_headers: ["X-Debug"] }],
    });
    expect(p.allow_domains).toEqual(["api.example.com", "*.xn--bcher-kva.example", "api-*.example.com:443", "example.com:443"]);
    expect(p.deny_domains).toEqual(["*.example.org"]);
    expect(p.transforms?.[0]?.domain).toBe("api.example.com");
    expect(p.transforms?.[0]?.strip_headers).toEqual(["x-debug"]);
  });

  it("normalises CIDRs to their canonical text", () => {
    const p = policyOf({ mode: "custom", allow_cidrs: ["10.1.2.3", "FD00::/8", "::ffff:192.168.0.0/112"], deny_cidrs: ["::1"] });
    expect(p.allow_cidrs).toEqual(["10.1.2.3/32", "fd00::/8", "192.168.0.0/16"]);
    expect(p.deny_cidrs).toEqual(["::1/128"]);
  });

  it("allows wildcards under non-public suffixes and private-section suffixes", () => {
    const p = policyOf({ mode: "custom", allow_domains: ["*.example.test", "*.githubusercontent.com", "*.github.io", "*.example.co.uk"] });
    expect(p.allow_domains).toHaveLength(4);
  });

  it("returns a deeply frozen policy", () => {
    const p = policyOf({ mode: "custom", allow_domains: ["a.example.com"], transforms: [{ domain: "a.example.com", inject_headers: { A: "b" } }] });
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.allow_domains)).toBe(true);
    expect(Object.isFrozen(p.transforms?.[0]?.inject_headers)).toBe(true);
  });

  it("keeps header value references as written", () => {
    const v = "Basic ${file:/run/secrets/basic} x ${env:_TOKEN_2}";
    expect(policyOf({ mode: "custom", transforms: [{ domain: "a.example.com", inject_headers: { Authorization: v } }] }).transforms?.[0]?.inject_headers).toEqual({ Authorization: v });
  });

  it("has a default policy of allow-all", () => {
    expect(DEFAULT_POLICY).toEqual({ mode: "allow-all" });
  });
});

describe("parsePolicy: rejections name the field and say why", () => {
  it("requires mode", () => {
    expect(onlyError({}, "mode")).toMatch(/mode is required; use one of "allow-all", "deny-all", "custom"/);
  });

  it("rejects an unknown mode", () => {
    expect(onlyError({ mode: "open" }, "mode")).toMatch(/"open" is not a mode/);
  });

  it.each([null, [], "custom", 3])("rejects a policy that is not an object (%j)", (input) => {
    expect(onlyError(input, "(root)")).toMatch(/must be a JSON object/);
  });

  it("names unknown keys and suggests the close one", () => {
    const errs = errorsOf({ mode: "custom", allow_domain: ["a.example.com"], extra: 1 });
    expect(errs).toEqual([
      { field: "allow_domain", error: expect.stringMatching(/unknown key "allow_domain"; did you mean "allow_domains"\?/) },
      { field: "extra", error: expect.stringMatching(/unknown key "extra"; allowed keys are mode, allow_domains/) },
    ]);
  });

  it("names unknown keys inside a transform", () => {
    expect(onlyError({ mode: "custom", transforms: [{ domain: "a.example.com", inject_header: {} }] }, "transforms[0].inject_header")).toMatch(
      /did you mean "inject_headers"/,
    );
  });

  it.each(["allow-all", "deny-all"])("rejects non-empty allow lists with mode %s, saying they are custom-only", (mode) => {
    const errs = errorsOf({ mode, allow_domains: ["a.example.com"], allow_cidrs: ["10.0.0.0/8"] });
    expect(errs.map((e) => e.field)).toEqual(["allow_cidrs", "allow_domains"]);
    for (const e of errs) expect(e.error).toMatch(/only applies in mode "custom".*silently ignored/);
  });

  it.each([
    ["*", /match every host; use mode "allow-all"/],
    ["*.", /match every host/],
    ["*.com", /"\*\.com" is a wildcard over the public suffix "com".*such as "\*\.example\.com"/],
    ["*.co.uk", /public suffix "co.uk"/],
    ["*.CO.UK.", /public suffix "co.uk"/],
    ["*.internal", /public suffix "internal"/],
    ["api-*.com", /public suffix "com".*"api-\*\.example\.com"/],
    ["example.c*m", /last label/],
    ["*.*.example.com", /leading "\*\." with another "\*"/],
    ["*.api-*.example.com", /leading "\*\." with another "\*"/],
    ["a.*.example.com", /not the first label/],
    ["10.0.0.1", /IP address.*allow_cidrs or deny_cidrs/],
    ["127.1", /IP address/],
    ["10.0.0.1:443", /IP address/],
    ["::1", /IP address/],
    ["[::1]:443", /IP address/],
    ["2001:db8::1", /IP address/],
    ["exa mple.com", /whitespace/],
    ["", /empty/],
    ["http://example.com", /looks like a URL/],
    ["example.com/path", /looks like a URL/],
    ["user@example.com", /not valid in a host name/],
    ["a..example.com", /empty label/],
    ["example.com..", /empty label/],
    [`${"a".repeat(64)}.example.com`, /label of 64 octets/],
    [`api-*${"a".repeat(63)}.example.com`, /longer than 63/],
    ["example.com:0", /invalid port/],
    ["example.com:65536", /invalid port/],
    ["example.com:http", /invalid port/],
    ["example.com:", /invalid port/],
    ["bü*.example.com", /punycode/],
  ])("rejects the domain pattern %j", (pattern, why) => {
    expect(onlyError({ mode: "custom", allow_domains: ["ok.example.com", pattern] }, "allow_domains[1]")).toMatch(why);
  });

  it("applies the same pattern rules to deny_domains and transform domains", () => {
    expect(onlyError({ mode: "allow-all", deny_domains: ["*.com"] }, "deny_domains[0]")).toMatch(/public suffix/);
    expect(onlyError({ mode: "allow-all", transforms: [{ domain: "10.0.0.1" }] }, "transforms[0].domain")).toMatch(/IP address/);
  });

  it.each([
    ["10.0.0.1/8", /host bits set/],
    ["10.0.0.0/33", /prefix length/],
    ["example.com", /not a CIDR range/],
    ["10.0.0.0/8 ", /prefix length/],
    ["fe80::1%eth0", /zone ID/],
  ])("rejects the CIDR %j", (cidr, why) => {
    expect(onlyError({ mode: "custom", allow_cidrs: ["10.0.0.0/8", cidr] }, "allow_cidrs[1]")).toMatch(why);
    expect(onlyError({ mode: "allow-all", deny_cidrs: [cidr] }, "deny_cidrs[0]")).toMatch(why);
  });

  it("rejects wrong types with the element path", () => {
    const errs = errorsOf({ mode: "custom", allow_domains: ["a.example.com", 3], deny_cidrs: "10.0.0.0/8", transforms: {} });
    expect(errs).toEqual([
      { field: "allow_domains[1]", error: "must be a string, not a number" },
      { field: "deny_cidrs", error: "must be an array of strings, not a string" },
      { field: "transforms", error: "must be an array of transform objects, not an object" },
    ]);
  });

  it.each([
    ["Connection", /hop-by-hop/],
    ["keep-alive", /hop-by-hop/],
    ["TE", /hop-by-hop/],
    ["Trailer", /hop-by-hop/],
    ["Transfer-Encoding", /smuggled/],
    ["content-length", /smuggled/],
    ["Upgrade", /another protocol/],
    ["Host", /different virtual host/],
    ["Proxy-Authorization", /Proxy-\* headers/],
    ["proxy-connection", /Proxy-\* headers/],
    ["X Bad", /not a valid HTTP header name/],
    ["X:Bad", /not a valid HTTP header name/],
    ["", /cannot be empty/],
  ])("refuses to inject the header %j and says why", (name, why) => {
    const field = formatPath(["transforms", 0, "inject_headers", name]);
    expect(onlyError({ mode: "custom", transforms: [{ domain: "a.example.com", inject_headers: { [name]: "v" } }] }, field)).toMatch(why);
  });

  it("uses the exact path for an injected header name", () => {
    expect(onlyError({ mode: "custom", transforms: [{ domain: "a.example.com" }, { domain: "b.example.com", inject_headers: { Authorization: "${env:1BAD}" } }] }, "transforms[1].inject_headers.Authorization")).toMatch(
      /not a valid reference/,
    );
  });

  it.each([
    ["${env:1BAD}", /not a valid reference/],
    ["${env:}", /not a valid reference/],
    ["${env:A-B}", /not a valid reference/],
    ["${ENV:A}", /not a valid reference/],
    ["${file:relative/path}", /not absolute/],
    ["${file:/run/../etc/shadow}", /contains "\.\."/],
    ["${secret", /unterminated/],
    ["${vault:x}", /not a valid reference/],
    ["line\r\nX-Injected: 1", /control character/],
    ["nul\u0000", /control character/],
    ["x".repeat(8193), /longer than 8192/],
  ])("rejects the header value %j without quoting it", (value, why) => {
    const err = onlyError({ mode: "custom", transforms: [{ domain: "a.example.com", inject_headers: { "X-Key": value } }] }, "transforms[0].inject_headers.X-Key");
    expect(err).toMatch(why);
    if (value.length > 8) expect(err).not.toContain(value);
  });

  it("rejects two injected headers that differ only in case", () => {
    expect(onlyError({ mode: "custom", transforms: [{ domain: "a.example.com", inject_headers: { Authorization: "a", authorization: "b" } }] }, "transforms[0].inject_headers.authorization")).toMatch(
      /same header as "Authorization"/,
    );
  });

  it("rejects an invalid strip_headers name", () => {
    expect(onlyError({ mode: "custom", transforms: [{ domain: "a.example.com", strip_headers: ["ok", "bad name"] }] }, "transforms[0].strip_headers[1]")).toMatch(
      /not a valid HTTP header name/,
    );
  });

  it("rejects a transform whose domain is also denied by the identical pattern", () => {
    expect(onlyError({ mode: "allow-all", deny_domains: ["x.example.com", "API.example.com"], transforms: [{ domain: "api.example.com" }] }, "transforms[0].domain")).toMatch(
      /also deny_domains\[1\].*could never apply/,
    );
  });

  it("requires a transform domain", () => {
    expect(onlyError({ mode: "custom", transforms: [{ strip_headers: ["x"] }] }, "transforms[0].domain")).toMatch(/domain pattern string/);
  });

  it("caps list sizes", () => {
    const big = Array.from({ length: 100_001 }, (_, i) => `h${i}.example.com`);
    expect(onlyError({ mode: "custom", allow_domains: big }, "allow_domains")).toMatch(/has 100001 entries; at most 100,000/);
    const transforms = Array.from({ length: 1001 }, () => ({ domain: "a.example.com" }));
    expect(onlyError({ mode: "custom", transforms }, "transforms")).toMatch(/at most 1,000/);
  });

  it("reports every problem, sorted by field with numeric indices, deterministically", () => {
    const input = {
      mode: "allow-all",
      zzz: true,
      deny_domains: Array.from({ length: 12 }, (_, i) => (i % 5 === 0 ? "*.com" : `ok${i}.example.com`)),
      allow_cidrs: ["1.2.3.4/40"],
    };
    const errs = errorsOf(input);
    expect(errs.map((e) => e.field)).toEqual(["allow_cidrs", "allow_cidrs[0]", "deny_domains[0]", "deny_domains[5]", "deny_domains[10]", "zzz"]);
    expect(errorsOf(input)).toEqual(errs);
  });
});

describe("domain pattern structure", () => {
  it.each([
    ["api.example.com", "exact", 3, null, "api.example.com"],
    ["*.example.com", "wild", 2, null, "example.com"],
    ["*.b.example.com:443", "wild", 3, 443, "b.example.com"],
    ["api-*.example.com", "glob", 3, null, "example.com"],
    ["*-api.example.com", "glob", 3, null, "example.com"],
    ["x.a*b.example.com", "glob", 4, null, "example.com"],
  ])("%s is %s, pins %i labels, port %s, fixed suffix %s", (raw, kind, pinned, port, suffix) => {
    const r = parseDomainPattern(raw);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect([r.pattern.kind, r.pattern.pinned, r.pattern.port, r.pattern.fixedSuffix]).toEqual([kind, pinned, port, suffix]);
  });
});

describe("parseHeaderValue", () => {
  it("splits literals and references for the proxy to resolve", () => {
    const r = parseHeaderValue("Bearer ${env:TOKEN}; k=${file:/run/secrets/k}!");
    expect(r).toEqual({
      ok: true,
      parts: [
        { kind: "literal", text: "Bearer " },
        { kind: "env", name: "TOKEN" },
        { kind: "literal", text: "; k=" },
        { kind: "file", path: "/run/secrets/k" },
        { kind: "literal", text: "!" },
      ],
    });
    expect(parseHeaderValue("")).toEqual({ ok: true, parts: [] });
    expect(parseHeaderValue("$ {not a ref} $x")).toEqual({ ok: true, parts: [{ kind: "literal", text: "$ {not a ref} $x" }] });
  });
});

describe("policyJsonSchema", () => {
  it("documents every field", () => {
    const s = policyJsonSchema() as { properties: Record<string, { description?: string }>; required: string[]; additionalProperties: boolean };
    expect(s.required).toEqual(["mode"]);
    expect(s.additionalProperties).toBe(false);
    for (const key of ["mode", "allow_domains", "allow_cidrs", "deny_domains", "deny_cidrs", "transforms"]) {
      expect(s.properties[key]?.description, key).toBeTruthy();
    }
  });
});
