import { readFileSync } from "node:fs";
import { unlink, writeFile } from "node:fs/promises";
import { afterEach, describe, expect, it, vi } from "vitest";
import { canonicalAddress, parseHosts, ResolveError, Resolver } from "../../../src/net/resolve.js";
import { startDnsServer, type DnsServerHandle } from "../../helpers/dns-server.js";
import { writeHostsFile } from "../../helpers/hosts-file.js";

// Resolution only: nothing here connects anywhere. The DNS server is on 127.0.0.1, and the system resolver is only
// asked for "localhost" and IP literals, which never leave the machine.

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function resolver(opts: ConstructorParameters<typeof Resolver>[0]): Resolver {
  const r = new Resolver(opts);
  cleanups.push(() => r.close());
  return r;
}

async function dnsServer(...args: Parameters<typeof startDnsServer>): Promise<DnsServerHandle> {
  const s = await startDnsServer(...args);
  cleanups.push(() => s.close());
  return s;
}

async function rejection(p: Promise<unknown>): Promise<ResolveError> {
  const err = await p.then(
    () => expect.fail("expected resolve() to reject"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ResolveError);
  return err as ResolveError;
}

const ADDRESS_IN_TEXT = /\d+\.\d+\.\d+\.\d+|[0-9a-f]*:[0-9a-f]*:/i;

describe("parseHosts (hosts(5) format)", () => {
  it("reads comments, blank lines, tabs, several names per line, IPv4 and IPv6", () => {
    const map = parseHosts(
      [
        "# a comment line",
        "",
        "192.0.2.10\tApi.Example.com  api-alias.example.com   # trailing comment 192.0.2.99",
        "  2001:DB8:0:0::1 api.example.com",
        "#192.0.2.11 commented.example.com",
        "192.0.2.12 dotted.example.com.",
      ].join("\n"),
    );
    expect(map.get("api.example.com")).toEqual(["192.0.2.10", "2001:db8::1"]);
    expect(map.get("api-alias.example.com")).toEqual(["192.0.2.10"]);
    expect(map.get("dotted.example.com")).toEqual(["192.0.2.12"]);
    expect(map.has("commented.example.com")).toBe(false);
    expect([...map.keys()]).not.toContain("192.0.2.99");
  });

  it("ignores lines whose address is not a plain address: zone IDs, short IPv4 spellings, names", () => {
    const map = parseHosts(
      ["fe80::1%eth0 zoned.example", "127.1 short.example", "0x7f.0.0.1 hex.example", "example.org alias.example", "192.0.2.1"].join(
        "\n",
      ),
    );
    expect(map.size).toBe(0);
  });

  it("collects a name's addresses across lines without duplicates, in file order (CRLF too)", () => {
    const map = parseHosts("192.0.2.1 a.example\r\n::1 a.example\r\n192.0.2.1 A.EXAMPLE\r\n");
    expect(map.get("a.example")).toEqual(["192.0.2.1", "::1"]);
  });
});

describe("canonicalAddress", () => {
  it.each([
    ["192.0.2.1", "192.0.2.1"],
    ["2001:DB8:0000:0:0:0:0:1", "2001:db8::1"],
    ["::FFFF:127.0.0.1", "::ffff:7f00:1"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["fe80::1%lo", null],
    ["127.1", null],
    ["01.2.3.4", null],
    ["example.com", null],
  ])("%s → %s", (input, expected) => {
    expect(canonicalAddress(input)).toBe(expected);
  });
});

describe("Resolver with a hosts file", () => {
  it("answers from the hosts file before DNS, and asks DNS nothing for an overridden name", async () => {
    const dns = await dnsServer(() => ["192.0.2.200"]);
    const hostsFile = await writeHostsFile({ "api.example.com": ["192.0.2.10", "2001:db8::10"] });
    const r = resolver({ hostsFile, dnsServer: dns.address });
    expect(await r.resolve("api.example.com")).toEqual(["192.0.2.10", "2001:db8::10"]);
    expect(dns.queries).toEqual([]);
    // A name that is not in the file goes to DNS.
    expect(await r.resolve("other.example.com")).toEqual(["192.0.2.200"]);
    expect(dns.queries.map((q) => q.name)).toContain("other.example.com");
  });

  it("returns only the hosts-file addresses, even when DNS has others for the name", async () => {
    const dns = await dnsServer((_n, type) => (type === "A" ? ["192.0.2.200"] : ["2001:db8::200"]));
    const hostsFile = await writeHostsFile({ "only-v6.example": "::1" });
    const r = resolver({ hostsFile, dnsServer: dns.address });
    expect(await r.resolve("only-v6.example")).toEqual(["::1"]);
  });

  it("matches names case-insensitively and ignores trailing dots", async () => {
    const hostsFile = await writeHostsFile({ "MiXeD.Example.COM.": "192.0.2.7" });
    const r = resolver({ hostsFile, dnsServer: "127.0.0.1:9" });
    expect(await r.resolve("mixed.example.com")).toEqual(["192.0.2.7"]);
    expect(await r.resolve("MIXED.example.com.")).toEqual(["192.0.2.7"]);
  });

  it("reloads the file when it changes, and keeps the last good map while it is missing", async () => {
    const hostsFile = await writeHostsFile({ "svc.example": "192.0.2.1" });
    const r = resolver({ hostsFile, dnsServer: "127.0.0.1:9", timeoutMs: 200 });
    expect(await r.resolve("svc.example")).toEqual(["192.0.2.1"]);

    await writeHostsFile({ "svc.example": "192.0.2.2", "new.example": "192.0.2.3" }, hostsFile);
    await vi.waitFor(async () => expect(await r.resolve("svc.example")).toEqual(["192.0.2.2"]), { timeout: 5000, interval: 100 });
    expect(await r.resolve("new.example")).toEqual(["192.0.2.3"]);

    await unlink(hostsFile);
    await new Promise((res) => setTimeout(res, 1200)); // more than two polling intervals
    expect(await r.resolve("svc.example")).toEqual(["192.0.2.2"]);

    await writeFile(hostsFile, "192.0.2.4 svc.example\n");
    await vi.waitFor(async () => expect(await r.resolve("svc.example")).toEqual(["192.0.2.4"]), { timeout: 5000, interval: 100 });
  });

  it("stops following the file after close()", async () => {
    const hostsFile = await writeHostsFile({ "svc.example": "192.0.2.1" });
    const r = new Resolver({ hostsFile, dnsServer: "127.0.0.1:9" });
    r.close();
    await writeHostsFile({ "svc.example": "192.0.2.2" }, hostsFile);
    await new Promise((res) => setTimeout(res, 1200));
    expect(await r.resolve("svc.example")).toEqual(["192.0.2.1"]);
    expect(readFileSync(hostsFile, "utf8")).toContain("192.0.2.2");
  });

  it("throws at construction when the hosts file cannot be read", () => {
    expect(() => new Resolver({ hostsFile: "/nonexistent/sandbox-egress/hosts" })).toThrow();
  });
});

describe("Resolver with --dns-server", () => {
  it("asks for A and AAAA in parallel and returns IPv4 first, canonical and de-duplicated", async () => {
    const dns = await dnsServer((_n, type) => (type === "A" ? ["192.0.2.1", "192.0.2.1", "192.0.2.2"] : ["2001:DB8:0::1"]));
    const r = resolver({ dnsServer: dns.address });
    expect(await r.resolve("dual.example")).toEqual(["192.0.2.1", "192.0.2.2", "2001:db8::1"]);
    expect(dns.queries.map((q) => q.type).sort()).toEqual(["A", "AAAA"]);
    expect(new Set(dns.queries.map((q) => q.name))).toEqual(new Set(["dual.example"]));
  });

  it("returns the one family that exists (NODATA for the other)", async () => {
    const dns = await dnsServer((_n, type) => (type === "AAAA" ? ["2001:db8::5"] : []));
    const r = resolver({ dnsServer: dns.address });
    expect(await r.resolve("v6only.example")).toEqual(["2001:db8::5"]);
  });

  it("rejects NXDOMAIN with dns-failed, naming the host and no address", async () => {
    const dns = await dnsServer(() => "nxdomain");
    const r = resolver({ dnsServer: dns.address });
    const err = await rejection(r.resolve("missing.example"));
    expect(err.code).toBe("dns-failed");
    expect(err.message).toContain("missing.example");
    expect(err.message).not.toMatch(ADDRESS_IN_TEXT);
  });

  it("rejects a name with no A and no AAAA records (NODATA) with dns-failed", async () => {
    const dns = await dnsServer(() => []);
    const err = await rejection(resolver({ dnsServer: dns.address }).resolve("empty.example"));
    expect(err.code).toBe("dns-failed");
  });

  it("rejects with upstream-timeout when the server never answers, within the deadline", async () => {
    const dns = await dnsServer(() => "timeout");
    const r = resolver({ dnsServer: dns.address, timeoutMs: 300 });
    const started = Date.now();
    const err = await rejection(r.resolve("slow.example"));
    expect(err.code).toBe("upstream-timeout");
    expect(err.message).not.toMatch(ADDRESS_IN_TEXT);
    expect(Date.now() - started).toBeLessThan(1500);
  });

  it("returns the A answer when only AAAA times out", async () => {
    const dns = await dnsServer((_n, type) => (type === "A" ? ["192.0.2.9"] : "timeout"));
    const r = resolver({ dnsServer: dns.address, timeoutMs: 300 });
    expect(await r.resolve("half.example")).toEqual(["192.0.2.9"]);
  });

  it("prefers dns-failed when one family is NXDOMAIN and the other times out", async () => {
    const dns = await dnsServer((_n, type) => (type === "A" ? "nxdomain" : "timeout"));
    const err = await rejection(resolver({ dnsServer: dns.address, timeoutMs: 300 }).resolve("gone.example"));
    expect(err.code).toBe("dns-failed");
  });

  it("asks the server again on every lookup: an answer that changes is seen as it changes (no cache)", async () => {
    // A rebinding server: the first answer looks public, the second points at loopback. The resolver must not
    // hide the change; the proxy judges each answer and dials only what it judged.
    let lookups = 0;
    const dns = await dnsServer(
      (_n, type) => {
        if (type === "AAAA") return [];
        lookups++;
        return lookups === 1 ? ["192.0.2.1"] : ["127.0.0.1"];
      },
      { ttl: 300 },
    );
    const r = resolver({ dnsServer: dns.address });
    expect(await r.resolve("rebind.example")).toEqual(["192.0.2.1"]);
    expect(await r.resolve("rebind.example")).toEqual(["127.0.0.1"]);
    expect(dns.queries.filter((q) => q.type === "A")).toHaveLength(2);
  });

  it("accepts an IPv6 server in brackets and refuses a server that is not HOST:PORT", () => {
    expect(() => new Resolver({ dnsServer: "[::1]:5353" }).close()).not.toThrow();
    expect(() => new Resolver({ dnsServer: "dns.example:53" })).toThrow();
  });

  it("returns an IP literal as itself without asking DNS", async () => {
    const dns = await dnsServer(() => ["192.0.2.1"]);
    const r = resolver({ dnsServer: dns.address });
    expect(await r.resolve("2001:DB8::7")).toEqual(["2001:db8::7"]);
    expect(await r.resolve("192.0.2.77")).toEqual(["192.0.2.77"]);
    expect(dns.queries).toEqual([]);
  });
});

describe("Resolver with the system resolver", () => {
  const etcHostsHasLocalhost = (() => {
    try {
      return /^\s*127\.0\.0\.1\s.*\blocalhost\b/m.test(readFileSync("/etc/hosts", "utf8"));
    } catch {
      return false;
    }
  })();

  it.skipIf(!etcHostsHasLocalhost)("resolves localhost through getaddrinfo", async () => {
    const addresses = await resolver({}).resolve("localhost");
    expect(addresses).toContain("127.0.0.1");
    expect(new Set(addresses).size).toBe(addresses.length);
  });

  it("still consults the hosts file first", async () => {
    const hostsFile = await writeHostsFile({ localhost: "192.0.2.55" });
    expect(await resolver({ hostsFile }).resolve("localhost")).toEqual(["192.0.2.55"]);
  });
});
