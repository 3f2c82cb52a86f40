import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { startDnsServer, type DnsServerHandle } from "../helpers/dns-server.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest, refusalCode } from "../helpers/raw-client.js";

/** A tiny upstream bound to one loopback address, recording whether it was ever reached. */
async function upstreamOn(address: string, port = 0): Promise<{ port: number; hits: number; close(): Promise<void> }> {
  const state = { hits: 0 };
  const server = http.createServer((_req, res) => {
    state.hits++;
    res.end(address);
  });
  await new Promise<void>((r) => server.listen(port, address, r));
  return {
    port: (server.address() as AddressInfo).port,
    get hits() {
      return state.hits;
    },
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

describe("resolution through --dns-server", () => {
  let dns: DnsServerHandle;
  let proxy: RunningProxy;
  let lookups = 0;
  let good: Awaited<ReturnType<typeof upstreamOn>>;
  let evil: Awaited<ReturnType<typeof upstreamOn>>;

  beforeAll(async () => {
    good = await upstreamOn("127.0.0.1");
    // The rebinding target listens on the same port on another loopback address.
    evil = await upstreamOn("127.0.0.2", good.port);
    dns = await startDnsServer((name, type) => {
      if (type === "AAAA") return [];
      if (name === "rebind.test") return ++lookups === 1 ? ["127.0.0.1"] : ["127.0.0.2"];
      if (name === "gone.test") return "nxdomain";
      if (name === "slow.test") return "timeout";
      return "nxdomain";
    });
    proxy = await startProxy({
      policy: { mode: "custom", allow_domains: ["rebind.test", "gone.test", "slow.test"], deny_cidrs: ["127.0.0.2/32"] },
      args: ["--dns-server", dns.address, "--internal-allow", "127.0.0.0/8", "--connect-timeout", "1500"],
    });
  });
  afterAll(async () => {
    await proxy?.stop();
    await dns?.close();
    await good?.close();
    await evil?.close();
  });
  afterEach(() => undefined);

  it("dials the address it vetted even when the next lookup answers differently (no DNS rebinding)", async () => {
    const first = await rawRequest(proxy.proxy, `GET http://rebind.test:${good.port}/ HTTP/1.1\r\nHost: rebind.test\r\nConnection: close\r\n\r\n`);
    expect(first.status).toBe(200);
    expect(first.body).toBe("127.0.0.1");
    expect(good.hits).toBe(1);
    expect(evil.hits).toBe(0);
    // The second lookup rebinds to a denied address: refused by policy, never dialled.
    const second = await rawRequest(proxy.proxy, `GET http://rebind.test:${good.port}/ HTTP/1.1\r\nHost: rebind.test\r\nConnection: close\r\n\r\n`);
    expect(second.status).toBe(403);
    expect(second.headers["x-egress-denied"]).toBe("cidr-denied");
    expect(evil.hits).toBe(0);
    expect(dns.queries.filter((q) => q.name === "rebind.test" && q.type === "A").length).toBeGreaterThanOrEqual(2);
  });

  it("answers a name that does not resolve with dns-failed", async () => {
    const r = await connectRequest(proxy.proxy, "gone.test:443");
    expect(r.status).toBe(502);
    expect(r.headers["x-egress-denied"]).toBe("dns-failed");
    expect(refusalCode(r)).toBe("dns-failed");
  });

  it("answers a DNS server that never replies with upstream-timeout", async () => {
    const r = await connectRequest(proxy.proxy, "slow.test:443");
    expect(r.status).toBe(504);
    expect(r.headers["x-egress-denied"]).toBe("upstream-timeout");
  });
});
