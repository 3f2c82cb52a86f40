import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetch, ProxyAgent } from "undici";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { rawRequest, refusalCode } from "../helpers/raw-client.js";
import { startHttpUpstream, type Upstream } from "../helpers/upstream.js";

const run = promisify(execFile);

/** curl through the proxy; returns status, headers (lower-case) and body. */
async function curl(args: string[]): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  const { stdout } = await run("curl", ["-sS", "-i", "--max-time", "10", ...args]);
  const sep = stdout.indexOf("\r\n\r\n");
  const head = stdout.slice(0, sep).split("\r\n");
  const headers: Record<string, string> = {};
  for (const l of head.slice(1)) headers[l.slice(0, l.indexOf(":")).toLowerCase()] = l.slice(l.indexOf(":") + 1).trim();
  return { status: Number(head[0]!.split(" ")[1]), headers, body: stdout.slice(sep + 4) };
}

describe("HTTP forward proxy", () => {
  let up: Upstream;
  let proxy: RunningProxy;
  let hosts: string;

  beforeAll(async () => {
    up = await startHttpUpstream();
    hosts = await writeHostsFile({ "allowed.test": "127.0.0.1", "denied.test": "127.0.0.1", "other.test": "127.0.0.1", "meta.test": "169.254.169.254" });
    proxy = await startProxy({
      policy: {
        mode: "custom",
        allow_domains: ["allowed.test", "*.wild.test", "meta.test"],
        deny_domains: ["denied.test"],
        transforms: [{ domain: "secret.test", inject_headers: { Authorization: "Bearer ${env:TEST_SECRET}" } }],
      },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"],
      env: { TEST_SECRET: "sk-test-never-leaks-1" },
    });
  });
  afterAll(async () => {
    await proxy?.stop();
    await up?.close();
  });

  it("forwards an allowed absolute-form request with curl -x and sets Host from the target", async () => {
    const r = await curl(["-x", `http://${proxy.proxy}`, `http://allowed.test:${up.port}/hello?x=1`]);
    expect(r.status).toBe(200);
    const echoed = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
    expect(echoed.url).toBe("/hello?x=1");
    expect(echoed.headers.host).toBe(`allowed.test:${up.port}`);
  });

  it("strips hop-by-hop headers, Proxy-Authorization and every header named in Connection", async () => {
    const r = await rawRequest(
      proxy.proxy,
      `GET http://allowed.test:${up.port}/h HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic c2VjcmV0\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n`,
    );
    r.socket.destroy();
    expect(r.status).toBe(200);
    const h = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
    expect(h["proxy-authorization"]).toBeUndefined();
    expect(h["x-private"]).toBeUndefined();
    expect(h["keep-alive"]).toBeUndefined();
    expect(h.te).toBeUndefined();
    expect(h["x-kept"]).toBe("yes");
    expect(h.host).toBe(`allowed.test:${up.port}`);
  });

  it("keeps the client connection alive across requests (undici ProxyAgent)", async () => {
    const agent = new ProxyAgent(`http://${proxy.proxy}`);
    const connectionsBefore = up.connections;
    try {
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`http://allowed.test:${up.port}/n${i}`, { dispatcher: agent });
        expect(res.status).toBe(200);
        await res.text();
      }
    } finally {
      await agent.close();
    }
    // Upstream keep-alive: five sequential requests reuse pooled connections (a socket may still be on its
    // way back to the pool when the next request starts, hence not exactly one).
    expect(up.connections - connectionsBefore).toBeLessThanOrEqual(2);
  });

  it("works with Python's urllib through the proxy", async () => {
    const script = `import urllib.request,sys
h=urllib.request.ProxyHandler({"http":"http://${proxy.proxy}"})
r=urllib.request.build_opener(h).open("http://allowed.test:${up.port}/py",timeout=10)
print(r.status)`;
    const { stdout } = await run("python3", ["-c", script]);
    expect(stdout.trim()).toBe("200");
  });

  it("refuses a name the policy does not allow with not-allowed", async () => {
    const r = await curl(["-x", `http://${proxy.proxy}`, `http://other.test:${up.port}/`]);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("not-allowed");
    expect(JSON.parse(r.body)).toEqual({ error: { code: "not-allowed", message: expect.any(String), host: "other.test" } });
  });

  it("refuses a deny_domains match with domain-denied", async () => {
    const r = await curl(["-x", `http://${proxy.proxy}`, `http://denied.test:${up.port}/`]);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("domain-denied");
  });

  it("refuses an allowed name that resolves to 169.254.169.254 with internal-address, without dialling", async () => {
    const r = await curl(["-x", `http://${proxy.proxy}`, "http://meta.test/latest/meta-data/"]);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("internal-address");
    expect(r.body).not.toContain("169.254");
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.host === "meta.test");
    expect(line.address).toBeNull();
  });

  it("refuses plain http to a host whose transforms inject headers with inject-requires-tls", async () => {
    const r = await rawRequest(proxy.proxy, `GET http://secret.test:${up.port}/ HTTP/1.1\r\nHost: secret.test\r\n\r\n`);
    r.socket.destroy();
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("inject-requires-tls");
    expect(refusalCode(r)).toBe("inject-requires-tls");
    expect(up.requests.some((q) => q.url === "/" && q.headers.host?.startsWith("secret.test"))).toBe(false);
  });

  it("answers an unparseable target with invalid-target", async () => {
    const r = await rawRequest(proxy.proxy, "GET http://[fe80::1%25eth0]:80/ HTTP/1.1\r\nHost: x\r\n\r\n");
    r.socket.destroy();
    expect(r.status).toBe(400);
    expect(r.headers["x-egress-denied"]).toBe("invalid-target");
  });

  it("answers an allowed target whose port is closed with upstream-connect-failed", async () => {
    const closed = await startHttpUpstream();
    const port = closed.port;
    await closed.close();
    const r = await curl(["-x", `http://${proxy.proxy}`, `http://allowed.test:${port}/`]);
    expect(r.status).toBe(502);
    expect(r.headers["x-egress-denied"]).toBe("upstream-connect-failed");
  });

  it("writes one audit line per request with the contract's fields and no header values", async () => {
    await curl(["-x", `http://${proxy.proxy}`, "-H", "Authorization: Bearer client-secret-xyz", `http://allowed.test:${up.port}/audit`]);
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.status === 200 && l.host === "allowed.test");
    for (const k of ["sandbox", "method", "host", "port", "address", "allowed", "reason", "rule", "intercepted", "transforms", "status", "bytes_up", "bytes_down", "duration_ms"]) {
      expect(line).toHaveProperty(k);
    }
    expect(line.address).toBe("127.0.0.1");
    expect(line.reason).toBe("domain-allowed");
    expect(proxy.lines.join("\n")).not.toContain("client-secret-xyz");
    expect(proxy.lines.join("\n")).not.toContain("sk-test-never-leaks-1");
  });
});

describe("deny-all", () => {
  it("refuses every request and tunnel with mode-deny-all", async () => {
    const proxy = await startProxy({ policy: { mode: "deny-all" } });
    try {
      const r = await curl(["-x", `http://${proxy.proxy}`, "http://127.0.0.1:9/"]);
      expect(r.status).toBe(403);
      expect(r.headers["x-egress-denied"]).toBe("mode-deny-all");
      const c = await rawRequest(proxy.proxy, "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n");
      expect(c.status).toBe(403);
      expect(c.headers["x-egress-denied"]).toBe("mode-deny-all");
      expect(refusalCode(c)).toBe("mode-deny-all");
    } finally {
      await proxy.stop();
    }
  });
});
