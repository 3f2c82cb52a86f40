/**
 * Name tricks (DESIGN.md "Names"): case, trailing dots, IDN and homoglyphs, wildcard edges, ports smuggled
 * into names, zone IDs, empty and oversized labels. Every test name resolves through --hosts to loopback, so a
 * matcher bug would show as a connection to the loopback echo server, never as traffic anywhere else.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest, type RawResponse } from "../helpers/raw-client.js";
import { startEchoServer } from "../helpers/upstream.js";
import { admin, decide, errorCode, firstResponse, rawExchange } from "./helpers.js";

const LABEL63 = "a".repeat(63);
// 63+1+63+1+63+1+49+12 = 253 octets, the longest a name can be (RFC 1035 §2.3.4).
const LONGEST = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(49)}.example.com`;

describe("name tricks", () => {
  let proxy: RunningProxy;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let otherPort: number;

  beforeAll(async () => {
    echo = await startEchoServer();
    otherPort = echo.port === 65535 ? echo.port - 1 : echo.port + 1;
    const names = [
      "api.github.com",
      "gist.github.com",
      "xn--pi-6kc.github.com", // аpi.github.com with a Cyrillic а
      "example.com",
      "evilexample.com",
      "a.example.com",
      "deep.a.example.com",
      "deny.example.com",
      "x.deny.example.com",
      "api.github.com.evil.test",
      "github.com.evil.test",
      "api-1.corp.test",
      "api-1.x.corp.test",
      "xapi-1.corp.test",
      "ports.test",
      "a_b.example.com",
      `${LABEL63}.example.com`,
      LONGEST,
    ];
    const hosts = await writeHostsFile(Object.fromEntries(names.map((n) => [n, "127.0.0.1"])));
    proxy = await startProxy({
      policy: {
        mode: "custom",
        allow_domains: ["api.github.com", "*.example.com", "api-*.corp.test", `ports.test:${echo.port}`],
        deny_domains: ["gist.github.com", "*.deny.example.com"],
      },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"],
    });
  });
  afterAll(async () => {
    await echo?.close();
    await proxy?.stop();
  });

  async function connectTo(target: string): Promise<RawResponse> {
    const r = await connectRequest(proxy.proxy, target);
    r.socket.destroy();
    return r;
  }

  /** CONNECT and expect a refusal with `code`, with nothing dialled. */
  async function expectRefused(target: string, status: number, code: string): Promise<void> {
    const before = echo.connections;
    const r = await connectTo(target);
    expect(r.status, target).toBe(status);
    expect(r.headers["x-egress-denied"], target).toBe(code);
    expect(echo.connections, `${target} was dialled`).toBe(before);
  }

  async function expectTunnel(target: string): Promise<void> {
    const before = echo.connections;
    const r = await connectTo(target);
    expect(r.status, target).toBe(200);
    // The echo server counts the accept on its own event-loop turn; wait for it so the next test starts clean.
    await expect.poll(() => echo.connections, { timeout: 2000, interval: 5 }).toBeGreaterThan(before);
  }

  describe("case and trailing dots", () => {
    it("matches an allowed name in any case, with or without its trailing dot", async () => {
      for (const spelling of ["API.GITHUB.COM", "Api.GitHub.Com.", "api.github.com."]) await expectTunnel(`${spelling}:${echo.port}`);
      expect(await decide(proxy, "API.GitHub.COM.", echo.port)).toMatchObject({ allowed: true, host: "api.github.com", rule: "allow_domains[0]=api.github.com" });
    });

    it("a deny rule cannot be dodged with case, a trailing dot, full-width letters or ideographic dots", async () => {
      await expectRefused(`GIST.GITHUB.COM.:${echo.port}`, 403, "domain-denied");
      for (const spelling of ["GiSt.GitHub.com.", "ｇｉｓｔ.github.com", "gist。github。com", "ＧＩＳＴ．ＧＩＴＨＵＢ．ＣＯＭ"]) {
        expect(await decide(proxy, spelling, 443), spelling).toMatchObject({ allowed: false, reason: "domain-denied", host: "gist.github.com", rule: "deny_domains[0]=gist.github.com" });
      }
    });

    it("two trailing dots are an empty label, not the same name: invalid-target", async () => {
      await expectRefused(`api.github.com..:${echo.port}`, 400, "invalid-target");
      expect(await decide(proxy, "api.github.com..", 443)).toMatchObject({ allowed: false, reason: "invalid-target" });
    });
  });

  describe("IDN and homoglyphs", () => {
    it.each([
      ["аpi.github.com", "xn--pi-6kc.github.com"], // U+0430 CYRILLIC SMALL LETTER A
      ["api.gіthub.com", "api.xn--gthub-n2e.com"], // U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I
      ["αpi.github.com", "xn--pi-b9b.github.com"], // U+03B1 GREEK SMALL LETTER ALPHA
      ["api.githuЬ.com", "api.xn--githu-10e.com"], // U+042C CYRILLIC CAPITAL LETTER SOFT SIGN
    ])("%s is its own punycode name %s and does not match api.github.com (not-allowed)", async (unicode, ascii) => {
      expect(await decide(proxy, unicode, echo.port)).toMatchObject({ allowed: false, reason: "not-allowed", host: ascii, rule: null });
    });

    it("the punycode of a homoglyph is refused even though it resolves to a reachable upstream", async () => {
      await expectRefused(`xn--pi-6kc.github.com:${echo.port}`, 403, "not-allowed");
    });

    it("raw UTF-8 in a CONNECT request line is a protocol error (400 bad-request), nothing dialled", async () => {
      const before = echo.connections;
      const transcript = await rawExchange(proxy.proxy, Buffer.from(`CONNECT аpi.github.com:${echo.port} HTTP/1.1\r\nHost: x\r\n\r\n`, "utf8"));
      const r = firstResponse(transcript);
      expect(r.status).toBe(400);
      expect(errorCode(r.body)).toBe("bad-request");
      expect(r.headers["x-egress-denied"]).toBeUndefined();
      expect(echo.connections).toBe(before);
    });

    it("a rule written with a homoglyph is stored as punycode and does not allow the ASCII name", async () => {
      const v = await admin(proxy, "POST", "/v1/policy/validate", { mode: "custom", allow_domains: ["аpi.github.com"] });
      expect(v.json).toEqual({ valid: true });
      const put = await admin(proxy, "PUT", "/v1/policy", { mode: "custom", allow_domains: ["аpi.github.com"] });
      expect((put.json!.policy as { allow_domains: string[] }).allow_domains).toEqual(["xn--pi-6kc.github.com"]);
      try {
        expect(await decide(proxy, "api.github.com", echo.port)).toMatchObject({ allowed: false, reason: "not-allowed" });
      } finally {
        await admin(proxy, "PUT", "/v1/policy", {
          mode: "custom",
          allow_domains: ["api.github.com", "*.example.com", "api-*.corp.test", `ports.test:${echo.port}`],
          deny_domains: ["gist.github.com", "*.deny.example.com"],
        });
      }
    });
  });

  describe("wildcard edges", () => {
    it("*.example.com allows subdomains at any depth", async () => {
      await expectTunnel(`a.example.com:${echo.port}`);
      await expectTunnel(`deep.a.example.com:${echo.port}`);
    });

    it("*.example.com never matches its apex (not-allowed)", async () => {
      await expectRefused(`example.com:${echo.port}`, 403, "not-allowed");
    });

    it("*.example.com does not match evilexample.com: the wildcard starts at a label boundary", async () => {
      await expectRefused(`evilexample.com:${echo.port}`, 403, "not-allowed");
    });

    it("an allowed name used as a prefix of another domain is not allowed", async () => {
      await expectRefused(`api.github.com.evil.test:${echo.port}`, 403, "not-allowed");
      await expectRefused(`github.com.evil.test:${echo.port}`, 403, "not-allowed");
    });

    it("the more specific *.deny.example.com denies below it, but not its own apex", async () => {
      await expectRefused(`x.deny.example.com:${echo.port}`, 403, "domain-denied");
      await expectTunnel(`deny.example.com:${echo.port}`);
    });

    it("an in-label glob api-*.corp.test stays within its label", async () => {
      await expectTunnel(`api-1.corp.test:${echo.port}`);
      await expectRefused(`api-1.x.corp.test:${echo.port}`, 403, "not-allowed");
      await expectRefused(`xapi-1.corp.test:${echo.port}`, 403, "not-allowed");
    });

    it("a wildcard is not a target: CONNECT *.example.com is invalid-target", async () => {
      await expectRefused(`*.example.com:${echo.port}`, 400, "invalid-target");
    });
  });

  describe("ports smuggled into names", () => {
    it.each([
      "api.github.com:443:PORT",
      "api.github.com:PORT:443",
      "api.github.com:443@127.0.0.1:PORT",
      "127.0.0.1:PORT@api.github.com:443",
      "[api.github.com]:PORT",
      "api.github.com%3aPORT:PORT",
      "api.github.com:+443",
      "api.github.com:0x1bb",
      "api.github.com:65536",
      "api.github.com:0",
      "api.github.com",
    ])("CONNECT %s is invalid-target", async (template) => {
      await expectRefused(template.replaceAll("PORT", String(echo.port)), 400, "invalid-target");
    });

    it.each(["http://api.github.com:443:PORT/", "http://api.github.com%3a443/", "http://api.github.com:65536/", "http://api.github.com%00.evil.test/"])(
      "GET %s is invalid-target",
      async (template) => {
        const before = echo.connections;
        const r = await rawRequest(proxy.proxy, `GET ${template.replaceAll("PORT", String(echo.port))} HTTP/1.1\r\nHost: api.github.com\r\nConnection: close\r\n\r\n`);
        r.socket.destroy();
        expect(r.status).toBe(400);
        expect(r.headers["x-egress-denied"]).toBe("invalid-target");
        expect(echo.connections).toBe(before);
      },
    );

    it("userinfo cannot carry an allowed name: the host after @ is what is judged", async () => {
      const r = await rawRequest(proxy.proxy, `GET http://api.github.com:${echo.port}@evil.test/ HTTP/1.1\r\nHost: api.github.com\r\nConnection: close\r\n\r\n`);
      r.socket.destroy();
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "not-allowed", host: "evil.test" } });
    });

    it("a port-restricted rule allows only its port", async () => {
      await expectTunnel(`ports.test:${echo.port}`);
      await expectRefused(`ports.test:${otherPort}`, 403, "not-allowed");
    });

    it("/v1/decide refuses a host whose port contradicts the port field (400, field port)", async () => {
      const r = await admin(proxy, "POST", "/v1/decide", { host: `ports.test:${otherPort}`, port: echo.port });
      expect(r.status).toBe(400);
      expect(r.json).toMatchObject({ error: { code: "invalid-request", errors: [{ field: "port" }] } });
      const same = await admin(proxy, "POST", "/v1/decide", { host: `ports.test:${echo.port}`, port: echo.port });
      expect(same.json).toMatchObject({ allowed: true, reason: "domain-allowed", port: echo.port });
      const inHost = await admin(proxy, "POST", "/v1/decide", { host: `ports.test:${otherPort}` });
      expect(inHost.json).toMatchObject({ allowed: false, reason: "not-allowed", port: otherPort });
    });
  });

  describe("zone IDs", () => {
    it.each(["[fe80::1%25eth0]", "[fe80::1%eth0]", "[::1%25lo]", "[::ffff:127.0.0.1%25lo]", "[fe80::1%251]"])("CONNECT %s is invalid-target", async (host) => {
      await expectRefused(`${host}:${echo.port}`, 400, "invalid-target");
      expect(await decide(proxy, host, echo.port)).toMatchObject({ allowed: false, reason: "invalid-target" });
    });

    it("GET http://[fe80::1%25eth0]/ is invalid-target", async () => {
      const r = await rawRequest(proxy.proxy, `GET http://[fe80::1%25eth0]:${echo.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      r.socket.destroy();
      expect(r.status).toBe(400);
      expect(r.headers["x-egress-denied"]).toBe("invalid-target");
    });
  });

  describe("empty and oversized labels", () => {
    it.each(["a..example.com", ".example.com", "..", ".", "example.com..", "a.example.com.."])("CONNECT %s is invalid-target", async (host) => {
      await expectRefused(`${host}:${echo.port}`, 400, "invalid-target");
    });

    it("a 63-octet label is accepted; 64 octets is invalid-target", async () => {
      await expectTunnel(`${LABEL63}.example.com:${echo.port}`);
      await expectRefused(`${LABEL63}a.example.com:${echo.port}`, 400, "invalid-target");
    });

    it("a 253-octet name is accepted; 254 octets is invalid-target", async () => {
      expect(LONGEST).toHaveLength(253);
      await expectTunnel(`${LONGEST}:${echo.port}`);
      await expectRefused(`a${LONGEST}:${echo.port}`, 400, "invalid-target");
      expect(await decide(proxy, `a${LONGEST}`, 443)).toMatchObject({ reason: "invalid-target" });
    });

    it("a 4,000-character host is invalid-target, not a crash", async () => {
      await expectRefused(`${"a.".repeat(2000)}example.com:${echo.port}`, 400, "invalid-target");
      expect((await admin(proxy, "GET", "/healthz")).status).toBe(200);
    });

    it("percent-encoding and characters outside hostnames are invalid-target; underscore is a hostname character", async () => {
      await expectRefused(`exa%6dple.com:${echo.port}`, 400, "invalid-target");
      await expectRefused(`a!b.example.com:${echo.port}`, 400, "invalid-target");
      await expectTunnel(`a_b.example.com:${echo.port}`);
    });
  });
});
