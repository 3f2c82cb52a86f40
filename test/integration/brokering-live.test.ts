import { ProxyAgent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { createTestCa, headerValues, startTlsUpstream, type TlsUpstream } from "../helpers/tls-upstream.js";
import { admin } from "../security/helpers.js";

// A proxy that starts with nothing to intercept loads neither the certificate encoder nor the upstream root
// store (src/tls/x509.ts, src/proxy/intercept.ts); a live change that adds a transform must still intercept,
// inject and verify the upstream on its very first request.
describe("brokering added by a live policy change to a proxy that started without transforms", () => {
  const SECRET = "sk-live-added-7f3a";
  let up: TlsUpstream;
  let withCa: RunningProxy;
  let systemRootsOnly: RunningProxy;

  beforeAll(async () => {
    const testCa = await createTestCa();
    up = await startTlsUpstream(await testCa.issue(["api.brokered.test"]));
    const hosts = await writeHostsFile({ "api.brokered.test": "127.0.0.1" });
    const common = { policy: { mode: "custom", allow_domains: ["api.brokered.test"] }, env: { LATE_TOKEN: SECRET } };
    withCa = await startProxy({ ...common, args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--upstream-ca", testCa.certPath] });
    systemRootsOnly = await startProxy({ ...common, args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"] });
  });
  afterAll(async () => {
    await withCa?.stop();
    await systemRootsOnly?.stop();
    await up?.close();
  });

  const addTransform = async (p: RunningProxy): Promise<void> => {
    const r = await admin(p, "PUT", "/v1/policy", {
      mode: "custom",
      allow_domains: ["api.brokered.test"],
      transforms: [{ domain: "api.brokered.test", inject_headers: { Authorization: "Bearer ${env:LATE_TOKEN}" } }],
    });
    expect(r.status).toBe(200);
  };

  const get = async (p: RunningProxy, path: string): Promise<{ status: number; code: string | undefined }> => {
    const agent = new ProxyAgent({ uri: `http://${p.proxy}`, requestTls: { ca: (await admin(p, "GET", "/v1/ca.pem")).text } });
    try {
      const res = await request(`https://api.brokered.test:${up.port}${path}`, { dispatcher: agent });
      const body = await res.body.text();
      return { status: res.statusCode, code: res.statusCode === 200 ? undefined : (JSON.parse(body) as { error: { code: string } }).error.code };
    } finally {
      await agent.close();
    }
  };

  it("intercepts and injects on the first request after the change", async () => {
    await addTransform(withCa);
    expect(await get(withCa, "/first")).toEqual({ status: 200, code: undefined });
    const seen = up.requests.find((r) => r.url === "/first")!;
    expect(headerValues(seen.rawHeaders, "authorization")).toEqual([`Bearer ${SECRET}`]);
  });

  it("verifies the upstream against the roots it then builds: an upstream only the test CA vouches for is refused", async () => {
    await addTransform(systemRootsOnly);
    const before = up.requests.length;
    expect(await get(systemRootsOnly, "/unverified")).toEqual({ status: 502, code: "upstream-tls-failed" });
    expect(up.requests.length).toBe(before); // nothing, and no secret, reached it
  });
});
