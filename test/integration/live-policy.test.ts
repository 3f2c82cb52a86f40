import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest } from "../helpers/raw-client.js";
import { startEchoServer } from "../helpers/upstream.js";
import { admin } from "../security/helpers.js";

describe("live policy: admin REST and the watched file", () => {
  let proxy: RunningProxy;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;

  beforeAll(async () => {
    echo = await startEchoServer();
    const hosts = await writeHostsFile({ "a.test": "127.0.0.1", "b.test": "127.0.0.1" });
    proxy = await startProxy({
      policy: { mode: "custom", allow_domains: ["a.test", "b.test"], transforms: [{ domain: "api.brokered.test", inject_headers: { Authorization: "Bearer ${env:LIVE_SECRET}" } }] },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"],
      env: { LIVE_SECRET: "sk-live-secret-value" },
    });
  });
  afterAll(async () => {
    await proxy?.stop();
    await echo?.close();
  });

  it("GET /v1/policy shows the revision, an ETag and redacted inject_headers", async () => {
    const r = await admin(proxy, "GET", "/v1/policy");
    expect(r.status).toBe(200);
    expect(r.headers.get("etag")).toBe(`"${r.json!.revision}"`);
    expect(JSON.stringify(r.json)).not.toContain("sk-live-secret-value");
    expect(JSON.stringify(r.json)).toContain("[redacted]");
  });

  it("an invalid PUT answers 400 with field errors and changes nothing", async () => {
    const before = await admin(proxy, "GET", "/v1/policy");
    const fileBefore = readFileSync(proxy.policyFile, "utf8");
    const r = await admin(proxy, "PUT", "/v1/policy", { mode: "custom", allow_domains: ["ok.test", "*.com", "1.2.3.4"] });
    expect(r.status).toBe(400);
    const err = r.json!.error as { code: string; errors: { field: string }[] };
    expect(err.code).toBe("invalid-policy");
    expect(err.errors.map((e) => e.field)).toEqual(expect.arrayContaining(["allow_domains[1]", "allow_domains[2]"]));
    const after = await admin(proxy, "GET", "/v1/policy");
    expect(after.json!.revision).toBe(before.json!.revision);
    expect(readFileSync(proxy.policyFile, "utf8")).toBe(fileBefore);
  });

  it("a PUT with a stale If-Match answers 412 and changes nothing", async () => {
    const before = await admin(proxy, "GET", "/v1/policy");
    const r = await admin(proxy, "PUT", "/v1/policy", { mode: "allow-all" }, { "if-match": `"${Number(before.json!.revision) - 1}"` });
    expect(r.status).toBe(412);
    expect((await admin(proxy, "GET", "/v1/policy")).json!.revision).toBe(before.json!.revision);
  });

  it("a PUT that denies an open tunnel's host closes the tunnel within one second", async () => {
    const t = await connectRequest(proxy.proxy, `b.test:${echo.port}`);
    expect(t.status).toBe(200);
    const closed = new Promise<number>((resolve) => {
      const start = Date.now();
      // The helper socket is allowHalfOpen: the proxy closing the tunnel shows as the end of its stream.
      t.socket.once("end", () => resolve(Date.now() - start));
    });
    t.socket.resume(); // read the FIN when it comes
    const before = await admin(proxy, "GET", "/v1/policy");
    const r = await admin(proxy, "PUT", "/v1/policy", { mode: "custom", allow_domains: ["a.test"], deny_domains: ["b.test"] }, { "if-match": `"${before.json!.revision}"` });
    expect(r.status).toBe(200);
    expect(r.json!.revision).toBe(Number(before.json!.revision) + 1);
    expect(await closed).toBeLessThan(1000);
    // Written back to the file atomically, and new tunnels follow the new policy.
    expect(JSON.parse(readFileSync(proxy.policyFile, "utf8"))).toMatchObject({ deny_domains: ["b.test"] });
    const again = await connectRequest(proxy.proxy, `b.test:${echo.port}`);
    expect(again.headers["x-egress-denied"]).toBe("domain-denied");
    // A tunnel the new policy still allows stays open.
    const a = await connectRequest(proxy.proxy, `a.test:${echo.port}`);
    expect(a.status).toBe(200);
    a.socket.destroy();
  });

  it("a valid file change applies; an invalid one keeps the last good policy and counts a reload failure", async () => {
    const before = Number((await admin(proxy, "GET", "/v1/policy")).json!.revision);
    const transforms = [{ domain: "api.brokered.test", inject_headers: { Authorization: "Bearer ${env:LIVE_SECRET}" } }];
    writeFileSync(proxy.policyFile, JSON.stringify({ mode: "custom", allow_domains: ["a.test", "b.test"], transforms }));
    await proxy.waitForLine((l) => l.event === "policy" && Number(l.revision) === before + 1);
    expect((await connectRequest(proxy.proxy, `b.test:${echo.port}`)).status).toBe(200);

    writeFileSync(proxy.policyFile, JSON.stringify({ mode: "custom", allow_domains: ["*"] }));
    const invalid = await proxy.waitForLine((l) => l.event === "policy-invalid");
    expect(JSON.stringify(invalid.errors)).toContain("allow_domains[0]");
    expect((await admin(proxy, "GET", "/v1/policy")).json!.revision).toBe(before + 1);
    expect((await connectRequest(proxy.proxy, `b.test:${echo.port}`)).status).toBe(200);
    const metrics = await admin(proxy, "GET", "/metrics");
    expect(metrics.text).toMatch(/egress_policy_reload_failures_total \d*[1-9]/);
    expect(metrics.text).toMatch(new RegExp(`egress_policy_revision ${before + 1}`));
  });

  it("POST /v1/policy/validate and POST /v1/decide judge without applying or dialling", async () => {
    const ok = await admin(proxy, "POST", "/v1/policy/validate", { mode: "deny-all" });
    expect(ok.json).toEqual({ valid: true });
    const bad = await admin(proxy, "POST", "/v1/policy/validate", { mode: "sometimes" });
    expect(bad.status).toBe(400);
    expect((bad.json!.error as { errors: { field: string }[] }).errors[0]!.field).toBe("mode");
    const d = await admin(proxy, "POST", "/v1/decide", { host: "169.254.169.254", port: 80 });
    expect(d.json).toMatchObject({ allowed: false, reason: expect.stringMatching(/internal-address|not-allowed/) });
    const allowed = await admin(proxy, "POST", "/v1/decide", { host: "a.test", port: 443 });
    expect(allowed.json).toMatchObject({ allowed: true, reason: "domain-allowed", addresses: ["127.0.0.1"] });
  });

  it("the OpenSandbox sidecar routes GET/PATCH/DELETE /policy map onto the same policy", async () => {
    const patched = await admin(proxy, "PATCH", "/policy", [{ action: "allow", target: "c.test" }, { action: "deny", target: "a.test" }]);
    expect(patched.status).toBe(200);
    const policy = (await admin(proxy, "GET", "/v1/policy")).json!.policy as { allow_domains: string[]; deny_domains: string[] };
    expect(policy.allow_domains).toContain("c.test");
    expect(policy.deny_domains).toContain("a.test");
    const os = await admin(proxy, "GET", "/policy");
    expect(os.json).toMatchObject({ status: "ok", policy: { defaultAction: "deny" } });
    const del = await admin(proxy, "DELETE", "/policy", ["c.test", "a.test"]);
    expect(del.status).toBe(200);
    const after = (await admin(proxy, "GET", "/v1/policy")).json!.policy as { allow_domains?: string[]; deny_domains?: string[] };
    expect(after.allow_domains ?? []).not.toContain("c.test");
    expect(after.deny_domains ?? []).not.toContain("a.test");
    // Transforms survive the OpenSandbox-shaped edits.
    expect(JSON.stringify(after)).toContain("api.brokered.test");
  });

  it("rejects bodies that are not JSON with a clear error", async () => {
    const r = await admin(proxy, "PUT", "/v1/policy", "{nope");
    expect(r.status).toBe(400);
    expect((r.json!.error as { code: string }).code).toBe("invalid-json");
  });
});

describe("admin authentication", () => {
  it("requires the bearer token when one is configured, except for healthz and ca.pem", async () => {
    const proxy = await startProxy({ env: { SANDBOX_EGRESS_ADMIN_TOKEN: "admin-token-123" } });
    try {
      expect((await admin(proxy, "GET", "/healthz")).status).toBe(200);
      expect((await admin(proxy, "GET", "/v1/ca.pem")).status).toBe(200);
      const no = await admin(proxy, "GET", "/v1/policy");
      expect(no.status).toBe(401);
      expect((no.json!.error as { code: string }).code).toBe("unauthorized");
      expect((await admin(proxy, "GET", "/v1/policy", undefined, { authorization: "Bearer wrong" })).status).toBe(401);
      expect((await admin(proxy, "GET", "/v1/policy", undefined, { authorization: "Bearer admin-token-123" })).status).toBe(200);
      expect(proxy.lines.join("\n")).not.toContain("admin-token-123");
    } finally {
      await proxy.stop();
    }
  });

  it("refuses to start a non-loopback admin listener without a token", async () => {
    await expect(startProxy({ args: ["--admin", "0.0.0.0:0"] })).rejects.toThrow(/without a token/);
  });
});
