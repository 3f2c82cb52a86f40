/**
 * Internal addresses (DESIGN.md "Addresses"): every spelling of loopback and of the cloud metadata addresses,
 * names that resolve to them, names with an internal and a permitted address, DNS rebinding, and the proxy's
 * own listeners.
 *
 * NETWORK RULE: real sockets only ever aim at loopback (127.0.0.0/8, ::1, and 0.0.0.0/:: which Linux routes to
 * loopback). 169.254.169.254, 168.63.129.16, 10/8 and every other non-loopback address are judged without
 * dialling: POST /v1/decide, `policy explain`, or the pure engine.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SelfAddresses } from "../../src/proxy/self.js";
import { startDnsServer, type DnsServerHandle } from "../helpers/dns-server.js";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { port as portOf, startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest, refusalCode, type RawResponse } from "../helpers/raw-client.js";
import { startEchoServer } from "../helpers/upstream.js";
import { admin, decide, explain, startRecorder, type Recorder } from "./helpers.js";

/** CONNECT to `target` through `proxy`; the response, its socket closed. */
async function connectTo(proxy: RunningProxy, target: string): Promise<RawResponse> {
  const r = await connectRequest(proxy.proxy, target);
  r.socket.destroy();
  return r;
}

/** An absolute-form GET through `proxy`; the response, its socket closed. */
async function getThrough(proxy: RunningProxy, url: string, extra = ""): Promise<RawResponse> {
  const r = await rawRequest(proxy.proxy, `GET ${url} HTTP/1.1\r\nHost: ignored.invalid\r\nConnection: close\r\n${extra}\r\n`);
  r.socket.destroy();
  return r;
}

async function putPolicy(proxy: RunningProxy, policy: unknown): Promise<void> {
  const r = await admin(proxy, "PUT", "/v1/policy", policy);
  expect(r.status, r.text).toBe(200);
}

/**
 * One proxy without --internal-allow serves the three groups below that need none (each PUTs its own policy),
 * because starting a proxy costs more than all of a group's requests.
 */
let shared: RunningProxy;

beforeAll(async () => {
  const hosts = await writeHostsFile({
    "loop.test": "127.0.0.1",
    "loop6.test": "::1",
    "mapped.test": "::ffff:127.0.0.1",
    "dual-stack.test": ["127.0.0.1", "::1"],
    "zero.test": "0.0.0.0",
    "metadata.google.internal": "169.254.169.254",
    "metadata.goog": "169.254.169.254",
    "azure-wireserver.test": "168.63.129.16",
    "alibaba-metadata.test": "100.100.100.200",
    "oracle-metadata.test": "192.0.0.192",
    "ecs-metadata.test": "169.254.170.2",
    "aws-v6-metadata.test": "fd00:ec2::254",
    "mapped-metadata.test": "::ffff:169.254.169.254",
    "nat64-metadata.test": "64:ff9b::a9fe:a9fe",
    "private.test": ["10.0.0.1", "fd12:3456::1"],
  });
  shared = await startProxy({ policy: { mode: "allow-all" }, args: ["--hosts", hosts] });
});
afterAll(async () => {
  await shared?.stop();
});

// Loopback (and unspecified, which Linux routes to loopback) in every spelling the host parser accepts.
const LOOPBACK_SPELLINGS: readonly [spelling: string, canonical: string][] = [
  ["127.0.0.1", "127.0.0.1"],
  ["127.1", "127.0.0.1"],
  ["127.0.1", "127.0.0.1"],
  ["2130706433", "127.0.0.1"],
  ["0x7f000001", "127.0.0.1"],
  ["0x7F.0.0.1", "127.0.0.1"],
  ["0177.0.0.1", "127.0.0.1"],
  ["0177.1", "127.0.0.1"],
  ["017700000001", "127.0.0.1"],
  ["127.000.000.001", "127.0.0.1"],
  ["127.0.0.1.", "127.0.0.1"],
  ["127.0.0.2", "127.0.0.2"],
  ["127.255.255.254", "127.255.255.254"],
  ["[::ffff:127.0.0.1]", "127.0.0.1"],
  ["[::ffff:7f00:1]", "127.0.0.1"],
  ["[::FFFF:7F00:0001]", "127.0.0.1"],
  ["[::1]", "::1"],
  ["[0:0:0:0:0:0:0:1]", "::1"],
  ["[0000::0001]", "::1"],
  ["0.0.0.0", "0.0.0.0"],
  ["0", "0.0.0.0"],
  ["[::]", "::"],
  ["localhost", "localhost"],
  ["LOCALHOST.", "localhost"],
  ["LocalHost", "localhost"],
  ["loop.test", "loop.test"],
  ["loop6.test", "loop6.test"],
  ["mapped.test", "mapped.test"],
  ["dual-stack.test", "dual-stack.test"],
  ["zero.test", "zero.test"],
];

describe("loopback spellings through a proxy without --internal-allow (allow-all policy)", () => {
  let proxy: RunningProxy;
  let v4: Recorder;
  let v6: Recorder;
  let auditBefore: number;

  beforeAll(async () => {
    proxy = shared;
    await putPolicy(proxy, { mode: "allow-all" });
    v4 = await startRecorder("127.0.0.1");
    v6 = await startRecorder("::1", v4.port);
    auditBefore = proxy.audit().length;
  });
  afterAll(async () => {
    await v4?.close();
    await v6?.close();
  });

  it.each(LOOPBACK_SPELLINGS)("refuses CONNECT %s with internal-address", async (spelling, canonical) => {
    const r = await connectTo(proxy, `${spelling}:${v4.port}`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("internal-address");
    expect(JSON.parse(r.body)).toEqual({ error: { code: "internal-address", message: expect.any(String), host: canonical } });
  });

  it.each(LOOPBACK_SPELLINGS)("refuses GET http://%s/ with internal-address", async (spelling, canonical) => {
    const r = await getThrough(proxy, `http://${spelling}:${v4.port}/`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("internal-address");
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: "internal-address", host: canonical } });
  });

  it("never opened a connection to either loopback upstream, and audited every refusal with no address", async () => {
    expect(v4.connections).toBe(0);
    expect(v6.connections).toBe(0);
    const expected = auditBefore + LOOPBACK_SPELLINGS.length * 2;
    await proxy.waitForLine(() => proxy.audit().length >= expected);
    const audit = proxy.audit().slice(auditBefore);
    expect(audit).toHaveLength(LOOPBACK_SPELLINGS.length * 2);
    for (const line of audit) expect(line).toMatchObject({ allowed: false, reason: "internal-address", address: null });
  });

  it("never puts a resolved address in the refusal message", async () => {
    const r = await connectTo(proxy, `loop.test:${v4.port}`);
    expect(r.body).not.toContain("127.0.0.1");
    const d = await decide(proxy, "loop.test", v4.port);
    // The operator's decide endpoint does show it, with the rule that denied it.
    expect(d.judged).toEqual([{ address: "127.0.0.1", usable: false, reason: "internal-address", rule: "internal:127.0.0.0/8 (loopback)" }]);
  });
});

describe("--internal-allow exempts a range; it never allows by itself", () => {
  let proxy: RunningProxy;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;

  beforeAll(async () => {
    echo = await startEchoServer();
    const hosts = await writeHostsFile({ "loop.test": "127.0.0.1" });
    proxy = await startProxy({ policy: { mode: "custom" }, args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"] });
  });
  afterAll(async () => {
    await echo?.close();
    await proxy?.stop();
  });

  it("custom mode without a rule: an exempted address is not-allowed, and nothing is dialled", async () => {
    await putPolicy(proxy, { mode: "custom" });
    for (const target of [`127.0.0.1:${echo.port}`, `127.1:${echo.port}`, `loop.test:${echo.port}`]) {
      const r = await connectTo(proxy, target);
      expect(r.status, target).toBe(403);
      expect(r.headers["x-egress-denied"], target).toBe("not-allowed");
    }
    expect(echo.connections).toBe(0);
  });

  it("custom mode with allow_cidrs covering it: cidr-allowed, and the tunnel reaches the upstream", async () => {
    await putPolicy(proxy, { mode: "custom", allow_cidrs: ["127.0.0.1/32"] });
    expect(await decide(proxy, "127.1", echo.port)).toMatchObject({ allowed: true, reason: "cidr-allowed", rule: "allow_cidrs[0]=127.0.0.1/32" });
    const r = await connectRequest(proxy.proxy, `127.1:${echo.port}`);
    expect(r.status).toBe(200);
    r.socket.write("ping");
    expect(await new Promise<string>((resolve) => r.socket.once("data", (d: Buffer) => resolve(d.toString())))).toBe("ping");
    r.socket.destroy();
  });

  it("custom mode with allow_domains: the name allows the exempted address (domain-allowed)", async () => {
    await putPolicy(proxy, { mode: "custom", allow_domains: ["loop.test"] });
    expect(await decide(proxy, "loop.test", echo.port)).toMatchObject({ allowed: true, reason: "domain-allowed", rule: "allow_domains[0]=loop.test" });
    expect((await connectTo(proxy, `127.0.0.1:${echo.port}`)).headers["x-egress-denied"]).toBe("not-allowed");
  });

  it("allow-all: mode-allow-all; a deny_cidrs rule still wins (cidr-denied)", async () => {
    await putPolicy(proxy, { mode: "allow-all" });
    expect(await decide(proxy, "127.0.0.1", echo.port)).toMatchObject({ allowed: true, reason: "mode-allow-all" });
    await putPolicy(proxy, { mode: "allow-all", deny_cidrs: ["127.0.0.0/24"] });
    const r = await connectTo(proxy, `127.0.0.1:${echo.port}`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("cidr-denied");
  });

  it("the exemption covers only its own family and range: ::1 and IPv4-compatible ::127.0.0.1 stay internal", async () => {
    await putPolicy(proxy, { mode: "allow-all" });
    const before = echo.connections;
    const r = await connectTo(proxy, `[::1]:${echo.port}`);
    expect(r.headers["x-egress-denied"]).toBe("internal-address");
    // ::/96 (IPv4-compatible) is an internal range of its own; not dialled, only judged.
    expect(await decide(proxy, "[::127.0.0.1]", echo.port)).toMatchObject({ allowed: false, reason: "internal-address", rule: "internal:::/96 (ipv4-compatible)" });
    // IPv4-mapped IPv6 IS the IPv4 (DESIGN.md "Names"), so the exemption applies to it.
    expect(await decide(proxy, "[::ffff:127.0.0.1]", echo.port)).toMatchObject({ allowed: true, host: "127.0.0.1" });
    expect(echo.connections).toBe(before);
  });
});

describe("allow_cidrs unlocks an internal address only with a longer prefix than its internal range", () => {
  let proxy: RunningProxy;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;

  beforeAll(async () => {
    proxy = shared;
    echo = await startEchoServer();
  });
  afterAll(async () => {
    await echo?.close();
  });

  it.each([
    [["127.0.0.0/8"], "internal:127.0.0.0/8 (loopback)"], // equal prefix: a tie, which goes to deny
    [["0.0.0.0/0"], "internal:127.0.0.0/8 (loopback)"],
    [["0.0.0.0/1"], "internal:127.0.0.0/8 (loopback)"],
    [["::ffff:0:0/96"], "internal:127.0.0.0/8 (loopback)"], // the mapped space is the IPv4 space: 0.0.0.0/0
  ])("allow_cidrs %j does not unlock 127.0.0.1 (internal-address, nothing dialled)", async (allow, rule) => {
    await putPolicy(proxy, { mode: "custom", allow_cidrs: allow });
    const r = await connectTo(proxy, `127.0.0.1:${echo.port}`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("internal-address");
    expect((await decide(proxy, "127.0.0.1", echo.port)).rule).toBe(rule);
    expect(echo.connections).toBe(0);
  });

  it("allow_domains never unlocks an internal address: a name rule is not an address rule", async () => {
    await putPolicy(proxy, { mode: "custom", allow_domains: ["loop.test", "localhost"] });
    for (const target of [`loop.test:${echo.port}`, `localhost:${echo.port}`]) {
      const r = await connectTo(proxy, target);
      expect(r.headers["x-egress-denied"], target).toBe("internal-address");
    }
    expect(echo.connections).toBe(0);
  });

  it.each([["127.0.0.0/9"], ["127.0.0.1/32"], ["::ffff:127.0.0.1/128"]])("allow_cidrs [%s] (longer than /8) unlocks 127.0.0.1: cidr-allowed", async (cidr) => {
    await putPolicy(proxy, { mode: "custom", allow_cidrs: [cidr] });
    expect(await decide(proxy, "127.0.0.1", echo.port)).toMatchObject({ allowed: true, reason: "cidr-allowed" });
    const r = await connectRequest(proxy.proxy, `127.0.0.1:${echo.port}`);
    expect(r.status).toBe(200);
    r.socket.destroy();
  });

  it.each([
    [["169.254.0.0/16"], "169.254.169.254", "internal:169.254.169.254/32 (cloud-metadata)"],
    [["169.254.169.254/32"], "169.254.169.254", "internal:169.254.169.254/32 (cloud-metadata)"],
    [["10.0.0.0/8"], "10.1.2.3", "internal:10.0.0.0/8 (private)"],
    [["fd00::/8"], "[fd00:ec2::254]", "internal:fd00:ec2::254/128 (cloud-metadata)"],
    [["168.63.0.0/16"], "168.63.129.16", "internal:168.63.129.16/32 (cloud-metadata)"],
  ])("judged without dialling: allow_cidrs %j leaves %s internal", async (allow, host, rule) => {
    await putPolicy(proxy, { mode: "custom", allow_cidrs: allow });
    expect(await decide(proxy, host, 80)).toMatchObject({ allowed: false, reason: "internal-address", rule });
  });

  it("judged without dialling: a /16 inside 10/8 is more specific, so it unlocks 10.1.2.3", async () => {
    await putPolicy(proxy, { mode: "custom", allow_cidrs: ["10.1.0.0/16"] });
    expect(await decide(proxy, "10.1.2.3", 80)).toMatchObject({ allowed: true, reason: "cidr-allowed", rule: "allow_cidrs[0]=10.1.0.0/16" });
  });
});

describe("a name with an internal and a permitted address: the internal one is never dialled", () => {
  let proxy: RunningProxy;
  let r1: Recorder;
  let r2: Recorder;
  let r3: Recorder;
  let lonely: Recorder;

  beforeAll(async () => {
    // 127.0.0.1 is exempted (it plays the public address); 127.0.0.2 stays internal; 127.0.0.3 is deny_cidrs.
    r1 = await startRecorder("127.0.0.1");
    r2 = await startRecorder("127.0.0.2", r1.port);
    r3 = await startRecorder("127.0.0.3", r1.port);
    // Only the internal address listens on this port: a fallback to it would be the bug.
    lonely = await startRecorder("127.0.0.2");
    const hosts = await writeHostsFile({
      "both.test": ["127.0.0.2", "127.0.0.1"],
      "denied-first.test": ["127.0.0.3", "127.0.0.1"],
      "dual.test": ["169.254.169.254", "93.184.216.34"],
      "dual6.test": ["fd00:ec2::254", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
      "metadata-only.test": ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"],
      "metadata-and-testnet.test": ["169.254.169.254", "198.51.100.7", "2001:db8::7"],
    });
    proxy = await startProxy({ policy: { mode: "allow-all", deny_cidrs: ["127.0.0.3/32"] }, args: ["--hosts", hosts, "--internal-allow", "127.0.0.1/32"] });
  });
  afterAll(async () => {
    for (const r of [r1, r2, r3, lonely]) await r?.close();
    await proxy?.stop();
  });

  it("GET: dials the permitted address, skipping the internal one listed first", async () => {
    const r = await getThrough(proxy, `http://both.test:${r1.port}/x`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ served_by: "127.0.0.1", url: "/x" });
    expect(r2.connections).toBe(0);
  });

  it("CONNECT: the tunnel is opened to the permitted address only", async () => {
    const r = await connectRequest(proxy.proxy, `both.test:${r1.port}`);
    expect(r.status).toBe(200);
    r.socket.write(`GET /tunnelled HTTP/1.1\r\nHost: both.test\r\nConnection: close\r\n\r\n`);
    const text = await new Promise<string>((resolve) => {
      let t = "";
      r.socket.on("data", (d: Buffer) => (t += d.toString()));
      r.socket.on("end", () => resolve(t));
    });
    r.socket.destroy();
    expect(text).toContain('"served_by":"127.0.0.1"');
    expect(r2.connections).toBe(0);
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.method === "CONNECT" && l.host === "both.test");
    expect(line.address).toBe("127.0.0.1");
  });

  it("a deny_cidrs address listed first is skipped the same way", async () => {
    const r = await getThrough(proxy, `http://denied-first.test:${r1.port}/`);
    expect(JSON.parse(r.body)).toMatchObject({ served_by: "127.0.0.1" });
    expect(r3.connections).toBe(0);
    const d = await decide(proxy, "denied-first.test", r1.port);
    expect(d.judged.map((j) => [j.address, j.usable, j.reason])).toEqual([
      ["127.0.0.3", false, "cidr-denied"],
      ["127.0.0.1", true, "mode-allow-all"],
    ]);
  });

  it("when the permitted address refuses, the answer is upstream-connect-failed: no fallback to the internal one", async () => {
    const r = await getThrough(proxy, `http://both.test:${lonely.port}/`);
    expect(r.status).toBe(502);
    expect(r.headers["x-egress-denied"]).toBe("upstream-connect-failed");
    expect(lonely.connections).toBe(0);
    const c = await connectTo(proxy, `both.test:${lonely.port}`);
    expect(c.headers["x-egress-denied"]).toBe("upstream-connect-failed");
    expect(lonely.connections).toBe(0);
  });

  it("judged without dialling: metadata + public address → allowed, the metadata address unusable", async () => {
    const d = await decide(proxy, "dual.test", 80);
    expect(d).toMatchObject({ allowed: true, reason: "mode-allow-all" });
    expect(d.judged).toEqual([
      { address: "169.254.169.254", usable: false, reason: "internal-address", rule: "internal:169.254.169.254/32 (cloud-metadata)" },
      { address: "93.184.216.34", usable: true, reason: "mode-allow-all", rule: "mode:allow-all" },
    ]);
    const d6 = await decide(proxy, "dual6.test", 443);
    expect(d6.judged.map((j) => [j.address, j.usable, j.rule])).toEqual([
      ["fd00:ec2::254", false, "internal:fd00:ec2::254/128 (cloud-metadata)"],
      ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", true, "mode:allow-all"],
    ]);
  });

  it("judged without dialling: TEST-NET and documentation addresses are internal too, so metadata + TEST-NET is refused", async () => {
    const d = await decide(proxy, "metadata-and-testnet.test", 80);
    expect(d).toMatchObject({ allowed: false, reason: "internal-address", rule: "internal:169.254.169.254/32 (cloud-metadata)" });
    expect(d.judged.map((j) => j.rule)).toEqual([
      "internal:169.254.169.254/32 (cloud-metadata)",
      "internal:198.51.100.0/24 (documentation)",
      "internal:2001:db8::/32 (documentation)",
    ]);
  });

  it("judged without dialling: a name with only metadata addresses is internal-address", async () => {
    const d = await decide(proxy, "metadata-only.test", 80);
    expect(d).toMatchObject({ allowed: false, reason: "internal-address", rule: "internal:169.254.169.254/32 (cloud-metadata)" });
    expect(d.judged.every((j) => !j.usable && j.reason === "internal-address")).toBe(true);
  });
});

describe("DNS rebinding: the answer that was judged is the address that is dialled", () => {
  let proxy: RunningProxy;
  let dns: DnsServerHandle;
  let good: Recorder;
  let evil: Recorder;
  let aQueries = 0;

  beforeAll(async () => {
    good = await startRecorder("127.0.0.1");
    evil = await startRecorder("127.0.0.2", good.port);
    // Every other A answer for rebind.test points at the internal address (an attacker's TTL-0 flip-flop).
    dns = await startDnsServer((name, type) => {
      // Internal answers from a real DNS server (judged through /v1/decide only, never dialled).
      if (name === "internal-dns.test") return type === "A" ? ["10.1.2.3"] : ["::ffff:a9fe:a9fe", "fd00::1"];
      if (name === "mixed-dns.test") return type === "A" ? ["169.254.169.254", "93.184.216.34"] : ["64:ff9b::a9fe:a9fe"];
      if (name !== "rebind.test") return "nxdomain";
      if (type === "AAAA") return [];
      return aQueries++ % 2 === 0 ? ["127.0.0.1"] : ["127.0.0.2"];
    });
    proxy = await startProxy({ policy: { mode: "allow-all" }, args: ["--dns-server", dns.address, "--internal-allow", "127.0.0.1/32"] });
  });
  afterAll(async () => {
    await dns?.close();
    await good?.close();
    await evil?.close();
    await proxy?.stop();
  });

  it("resolves once per request: each request is served by the judged address or refused, never the rebound one", async () => {
    const before = aQueries;
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await getThrough(proxy, `http://rebind.test:${good.port}/${i}`);
      outcomes.push(r.status === 200 ? (JSON.parse(r.body) as { served_by: string }).served_by : (r.headers["x-egress-denied"] ?? String(r.status)));
    }
    expect(outcomes.filter((o) => o === "127.0.0.1").length).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o === "internal-address").length).toBeGreaterThan(0);
    expect(outcomes.every((o) => o === "127.0.0.1" || o === "internal-address")).toBe(true);
    // One A question per decision: there is no second lookup at connect time for the attacker to flip.
    expect(aQueries - before).toBe(6);
    expect(evil.connections).toBe(0);
  });

  it("judged without dialling: DNS answers that are internal, mapped or NAT64 are all internal-address", async () => {
    const d = await decide(proxy, "internal-dns.test", 443);
    expect(d).toMatchObject({ allowed: false, reason: "internal-address" });
    expect(d.judged.map((j) => [j.address, j.usable, j.rule])).toEqual([
      ["10.1.2.3", false, "internal:10.0.0.0/8 (private)"],
      ["169.254.169.254", false, "internal:169.254.169.254/32 (cloud-metadata)"],
      ["fd00::1", false, "internal:fc00::/7 (unique-local)"],
    ]);
    const mixed = await decide(proxy, "mixed-dns.test", 443);
    expect(mixed).toMatchObject({ allowed: true, reason: "mode-allow-all" });
    expect(mixed.judged.filter((j) => j.usable).map((j) => j.address)).toEqual(["93.184.216.34"]);
  });

  it("CONNECT: tunnels open only to the judged address", async () => {
    const before = aQueries;
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await connectTo(proxy, `rebind.test:${good.port}`)).status);
    expect(codes.sort()).toEqual([200, 200, 403, 403]);
    expect(aQueries - before).toBe(4);
    expect(evil.connections).toBe(0);
  });
});

describe("the proxy's own listeners are refused, whatever spelling and whatever --internal-allow", () => {
  let proxy: RunningProxy;
  let other: Recorder;
  let ports: { proxy: number; admin: number; transparent: number };

  beforeAll(async () => {
    other = await startRecorder("127.0.0.1");
    const hosts = await writeHostsFile({ "self.test": "127.0.0.1", "self-mapped.test": "::ffff:127.0.0.1", "self-zero.test": "0.0.0.0" });
    // 0.0.0.0/8 is exempted too, so that only the self rule stands between 0.0.0.0:PORT and the listener.
    proxy = await startProxy({
      policy: { mode: "allow-all" },
      transparent: true,
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--internal-allow", "0.0.0.0/8"],
    });
    ports = { proxy: portOf(proxy.proxy), admin: portOf(proxy.admin), transparent: portOf(proxy.transparent!) };
  });
  afterAll(async () => {
    await other?.close();
    await proxy?.stop();
  });

  const SELF_SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "self.test", "self-mapped.test", "localhost", "LOCALHOST."];
  const UNSPECIFIED = ["0.0.0.0", "0", "[::ffff:0.0.0.0]", "self-zero.test"];
  const LISTENERS = ["proxy", "admin", "transparent"] as const;
  const cases = LISTENERS.flatMap((l) => [...SELF_SPELLINGS, ...UNSPECIFIED].map((s) => [l, s] as const));

  it.each(cases)("CONNECT to the %s port as %s: internal-address with a self: rule", async (listener, spelling) => {
    const r = await connectTo(proxy, `${spelling}:${ports[listener]}`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("internal-address");
  });

  it.each(cases)("GET through the proxy to the %s port as %s: internal-address", async (listener, spelling) => {
    const r = await getThrough(proxy, `http://${spelling}:${ports[listener]}/v1/policy`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("internal-address");
    expect(r.body).not.toContain("revision");
  });

  it("names the self rule in the audit log and in /v1/decide", async () => {
    const d = await decide(proxy, "127.0.0.1", ports.admin);
    expect(d).toMatchObject({ allowed: false, reason: "internal-address", rule: `self:127.0.0.1:${ports.admin}` });
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.port === ports.admin && l.host === "self.test");
    expect(String(line.rule)).toMatch(/^self:/);
  });

  it("the transparent listener refuses a Host naming the admin port", async () => {
    const r = await rawRequest(proxy.transparent!, `GET /v1/policy HTTP/1.1\r\nHost: 127.0.0.1:${ports.admin}\r\nConnection: close\r\n\r\n`);
    r.socket.destroy();
    expect(r.status).toBe(403);
    expect(refusalCode(r)).toBe("internal-address");
  });

  it("refuses per port: another loopback port stays reachable under the exemption", async () => {
    const r = await getThrough(proxy, `http://127.0.0.1:${other.port}/ok`);
    expect(r.status).toBe(200);
    expect(other.requests.map((q) => q.url)).toEqual(["/ok"]);
  });

  // A socket bound to 0.0.0.0 also accepts 127.0.0.2 … 127.255.255.254, so `--listen 0.0.0.0:PORT
  // --internal-allow 127.0.0.0/8` must not let CONNECT 127.0.0.2:PORT loop back into the proxy itself.
  it("treats every loopback address as self for a listener bound to 0.0.0.0", () => {
    const self = new SelfAddresses();
    self.add({ address: "0.0.0.0", family: "IPv4", port: 3128 });
    expect(self.has("127.0.0.1", 3128)).toBe(true);
    expect(self.has("127.0.0.2", 3128)).toBe(true);
  });
});

describe("cloud metadata and embedded-IPv4 spellings, judged without dialling", () => {
  let proxy: RunningProxy;

  beforeAll(async () => {
    proxy = shared;
    // Even a policy that names these hosts explicitly does not reach them: only address rules could.
    await putPolicy(proxy, {
      mode: "custom",
      allow_domains: [
        "metadata.google.internal",
        "metadata.goog",
        "*.metadata.goog",
        "azure-wireserver.test",
        "alibaba-metadata.test",
        "oracle-metadata.test",
        "ecs-metadata.test",
        "aws-v6-metadata.test",
        "mapped-metadata.test",
        "nat64-metadata.test",
        "private.test",
      ],
    });
  });

  const META = "internal:169.254.169.254/32 (cloud-metadata)";
  it.each([
    // IPv4 spellings of 169.254.169.254
    ["169.254.169.254", META],
    ["2852039166", META],
    ["0251.0376.0251.0376", META],
    ["0xa9fea9fe", META],
    ["0xA9.0xFE.0xA9.0xFE", META],
    ["0xa9.254.0251.0xfe", META],
    ["169.254.43518", META],
    ["169.16689662", META],
    ["0251.0xfe.43518", META],
    ["169.254.169.254.", META],
    // IPv6 forms that embed it
    ["[::ffff:169.254.169.254]", META],
    ["[::ffff:a9fe:a9fe]", META],
    ["[0:0:0:0:0:ffff:a9fe:a9fe]", META],
    ["[::a9fe:a9fe]", META], // IPv4-compatible
    ["[::169.254.169.254]", META],
    ["[64:ff9b::a9fe:a9fe]", META], // NAT64 well-known prefix
    ["[64:ff9b::169.254.169.254]", META],
    ["[64:ff9b:1::a9fe:a9fe]", META], // NAT64 local-use
    ["[2002:a9fe:a9fe::]", META], // 6to4
    ["[2002:a9fe:a9fe:1234::1]", META],
    ["[2001:0:4136:e378:8000:63bf:5601:5601]", META], // Teredo: client address is the inverted last 32 bits
    // Cloud metadata of the major clouds
    ["[fd00:ec2::254]", "internal:fd00:ec2::254/128 (cloud-metadata)"], // AWS IMDS over IPv6
    ["169.254.170.2", "internal:169.254.170.2/32 (cloud-metadata)"], // AWS ECS task metadata
    ["metadata.google.internal", META], // GCP, via --hosts
    ["METADATA.Google.Internal.", META],
    ["metadata.goog", META],
    ["168.63.129.16", "internal:168.63.129.16/32 (cloud-metadata)"], // Azure WireServer (a global address)
    ["azure-wireserver.test", "internal:168.63.129.16/32 (cloud-metadata)"],
    ["100.100.100.200", "internal:100.100.100.200/32 (cloud-metadata)"], // Alibaba Cloud
    ["alibaba-metadata.test", "internal:100.100.100.200/32 (cloud-metadata)"],
    ["192.0.0.192", "internal:192.0.0.192/32 (cloud-metadata)"], // Oracle Cloud
    ["oracle-metadata.test", "internal:192.0.0.192/32 (cloud-metadata)"],
    ["ecs-metadata.test", "internal:169.254.170.2/32 (cloud-metadata)"],
    ["aws-v6-metadata.test", "internal:fd00:ec2::254/128 (cloud-metadata)"],
    ["mapped-metadata.test", META],
    ["nat64-metadata.test", META],
    // Names and other internal ranges
    ["private.test", "internal:10.0.0.0/8 (private)"],
    ["10.0.0.1", "internal:10.0.0.0/8 (private)"],
    ["012.0.0.1", "internal:10.0.0.0/8 (private)"],
    ["172.16.0.1", "internal:172.16.0.0/12 (private)"],
    ["192.168.1.1", "internal:192.168.0.0/16 (private)"],
    ["3232235777", "internal:192.168.0.0/16 (private)"],
    ["100.64.0.1", "internal:100.64.0.0/10 (cgnat)"],
    ["224.0.0.1", "internal:224.0.0.0/4 (multicast)"],
    ["255.255.255.255", "internal:255.255.255.255/32 (broadcast)"],
    ["198.18.0.1", "internal:198.18.0.0/15 (benchmarking)"],
    ["192.0.2.1", "internal:192.0.2.0/24 (documentation)"],
    ["[fe80::1]", "internal:fe80::/10 (link-local)"],
    ["[fc00::1]", "internal:fc00::/7 (unique-local)"],
    ["[ff02::1]", "internal:ff00::/8 (multicast)"],
    ["[64:ff9b::a00:1]", "internal:10.0.0.0/8 (private)"],
    ["[2002:c0a8:101::1]", "internal:192.168.0.0/16 (private)"],
  ])("%s → internal-address (%s)", async (host, rule) => {
    const d = await decide(proxy, host, 80);
    expect(d).toMatchObject({ allowed: false, reason: "internal-address", rule });
  });

  it("`policy explain` gives the same verdicts from the command line", async () => {
    const hosts = await writeHostsFile({ "metadata.google.internal": "169.254.169.254" });
    // The policy file holds what the PUT above wrote back (custom, naming metadata.google.internal).
    const [gcp, aws, azure] = await Promise.all([
      explain(proxy.policyFile, "metadata.google.internal:80", ["--hosts", hosts]),
      explain(proxy.policyFile, "[::ffff:a9fe:a9fe]:80"),
      explain(proxy.policyFile, "168.63.129.16:80", ["--internal-allow", "10.0.0.0/8"]),
    ]);
    expect(gcp).toMatchObject({ allowed: false, reason: "internal-address", rule: META, addresses: [] });
    expect(aws).toMatchObject({ allowed: false, reason: "internal-address", host: "169.254.169.254" });
    expect(azure).toMatchObject({ allowed: false, reason: "internal-address", rule: "internal:168.63.129.16/32 (cloud-metadata)" });
  });
});
