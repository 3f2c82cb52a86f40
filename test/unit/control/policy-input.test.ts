import { describe, expect, it } from "vitest";
import { policyFromInput, referencesOnly } from "../../../src/control/policy-input.js";

describe("networkPolicy input", () => {
  it("recognises this project's policy by mode and OpenSandbox's by defaultAction/egress", () => {
    expect(policyFromInput({ mode: "deny-all" }, "networkPolicy", "either")).toEqual({ ok: true, policy: { mode: "deny-all" } });
    expect(policyFromInput({ defaultAction: "deny", egress: [{ action: "allow", target: "a.test" }, { action: "allow", target: "10.0.0.0/8" }] }, "networkPolicy", "either")).toEqual({
      ok: true,
      policy: { mode: "custom", allow_domains: ["a.test"], allow_cidrs: ["10.0.0.0/8"] },
    });
    expect(policyFromInput({ defaultAction: "allow", egress: [{ action: "deny", target: "b.test" }] }, "networkPolicy", "either")).toEqual({
      ok: true,
      policy: { mode: "allow-all", deny_domains: ["b.test"] },
    });
  });

  it("treats null, an omitted policy and OpenSandbox's empty object as allow-all", () => {
    for (const v of [undefined, null, {}]) expect(policyFromInput(v, "networkPolicy", "either")).toEqual({ ok: true, policy: { mode: "allow-all" } });
    expect(policyFromInput(undefined, "network_policy", "project")).toEqual({ ok: true, policy: { mode: "allow-all" } });
  });

  it("names the field the user wrote in every error", () => {
    const os = policyFromInput({ egress: [{ action: "allow", target: "ok.test" }, { action: "allow", target: "*.com" }] }, "networkPolicy", "either");
    expect(os.ok ? [] : os.errors.map((e) => e.field)).toEqual(["networkPolicy.egress[1].target"]);
    const shape = policyFromInput({ egress: [{ action: "permit", target: "x.test" }], extra: 1 }, "networkPolicy", "either");
    expect(shape.ok ? [] : shape.errors.map((e) => e.field).sort()).toEqual(["networkPolicy.egress[0].action", "networkPolicy.extra"]);
    const proj = policyFromInput({ mode: "custom", allow_domains: ["a.test", "1.2.3.4"] }, "network_policy", "project");
    expect(proj.ok ? [] : proj.errors.map((e) => e.field)).toEqual(["network_policy.allow_domains[1]"]);
    const body = policyFromInput({ mode: "custom", deny_cidrs: ["10.0.0.0/40"] }, "", "either");
    expect(body.ok ? [] : body.errors.map((e) => e.field)).toEqual(["deny_cidrs[0]"]);
    const notObject = policyFromInput("allow-all", "network_policy", "project");
    expect(notObject.ok ? [] : notObject.errors.map((e) => e.field)).toEqual(["network_policy"]);
  });

  it("accepts only this project's shape where Leap0 is spoken", () => {
    const r = policyFromInput({ defaultAction: "deny" }, "network_policy", "project");
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.errors.map((e) => e.field)).toContain("network_policy.mode");
  });
});

describe("referencesOnly (the snapshot annotation)", () => {
  it("keeps ${env:…} and ${file:…} references and redacts literal header values", () => {
    const p = referencesOnly({
      mode: "custom",
      allow_domains: ["a.test"],
      transforms: [
        { domain: "api.a.test", inject_headers: { Authorization: "Bearer ${env:TOKEN}", "X-Key": "sk-literal", "X-File": "${file:/run/secret}" }, strip_headers: ["x-debug"] },
        { domain: "b.test", strip_headers: ["cookie"] },
      ],
    });
    expect(p.transforms).toEqual([
      { domain: "api.a.test", inject_headers: { Authorization: "Bearer ${env:TOKEN}", "X-Key": "[redacted]", "X-File": "${file:/run/secret}" }, strip_headers: ["x-debug"] },
      { domain: "b.test", strip_headers: ["cookie"] },
    ]);
  });
});
