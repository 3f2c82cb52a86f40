/**
 * Policy bypass attempts: absolute-form URL vs Host header, CONNECT target vs TLS SNI (domain fronting), bytes
 * pipelined behind CONNECT, chained-proxy headers, upgrades and h2c, userinfo. All upstreams are on loopback.
 */
import net, { type AddressInfo } from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest, type RawResponse } from "../helpers/raw-client.js";
import {
  admin,
  errorCode,
  firstResponse,
  pipelinedTls,
  proxyCa,
  rawExchange,
  readAll,
  startByteRecorder,
  startRecorder,
  type ByteRecorder,
  type Recorder,
} from "./helpers.js";

const POLICY = { mode: "custom", allow_domains: ["allowed.test"], deny_domains: ["denied.test"] };

describe("policy bypass attempts", () => {
  let proxy: RunningProxy;
  let web: Recorder;
  let bytes: ByteRecorder;
  let ca: string;
  let U: string;

  beforeAll(async () => {
    web = await startRecorder("127.0.0.1");
    bytes = await startByteRecorder();
    const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1", "denied.test": "127.0.0.1", "evil.test": "127.0.0.1" });
    proxy = await startProxy({ policy: POLICY, transparent: true, args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"] });
    ca = await proxyCa(proxy);
    U = `allowed.test:${web.port}`;
  });
  afterAll(async () => {
    await web?.close();
    await bytes?.close();
    await proxy?.stop();
  });

  /** A request through the forward listener; the response, its socket closed. */
  async function send(head: string): Promise<RawResponse> {
    const r = await rawRequest(proxy.proxy, head);
    r.socket.destroy();
    return r;
  }

  /** Every Host value in a raw header list. */
  const hostHeaders = (rawHeaders: string[]): string[] => rawHeaders.flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() === "host" ? [rawHeaders[i + 1]!] : []));

  describe("absolute-form URL vs Host header: the URL decides, Host is rewritten", () => {
    it("an allowed URL with a denied Host reaches the URL's host, with Host rewritten from the URL", async () => {
      const before = web.requests.length;
      const r = await send(`GET http://${U}/path?q=1 HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(200);
      const seen = web.requests.slice(before);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.url).toBe("/path?q=1");
      expect(hostHeaders(seen[0]!.rawHeaders)).toEqual([U]);
    });

    it("a denied URL with an allowed Host is refused with domain-denied, forwarding nothing", async () => {
      const before = web.connections;
      const r = await send(`GET http://denied.test:${web.port}/ HTTP/1.1\r\nHost: ${U}\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "domain-denied", host: "denied.test" } });
      expect(web.connections).toBe(before);
    });

    it("a URL that no rule allows is not-allowed whatever Host says", async () => {
      const r = await send(`GET http://evil.test:${web.port}/ HTTP/1.1\r\nHost: ${U}\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(403);
      expect(r.headers["x-egress-denied"]).toBe("not-allowed");
    });

    it("two Host headers, one with a smuggled port, leave exactly one Host upstream: the URL's", async () => {
      const before = web.requests.length;
      const r = await send(`GET http://${U}/two HTTP/1.1\r\nHost: denied.test\r\nHost: allowed.test:22\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(200);
      expect(hostHeaders(web.requests[before]!.rawHeaders)).toEqual([U]);
    });

    it("origin-form on the forward listener is invalid-target: Host is never a target there", async () => {
      const before = web.connections;
      const r = await send(`GET /origin HTTP/1.1\r\nHost: ${U}\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(400);
      expect(r.headers["x-egress-denied"]).toBe("invalid-target");
      expect(web.connections).toBe(before);
    });

    it("https:// in absolute-form is invalid-target (TLS goes through CONNECT)", async () => {
      const r = await send(`GET https://${U}/ HTTP/1.1\r\nHost: ${U}\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(400);
      expect(r.headers["x-egress-denied"]).toBe("invalid-target");
    });

    it("userinfo naming the allowed host does not help: http://allowed.test@evil.test/ is judged as evil.test", async () => {
      const r = await send(`GET http://allowed.test@evil.test:${web.port}/ HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "not-allowed", host: "evil.test" } });
      const r2 = await send(`GET http://allowed.test:${web.port}@denied.test/ HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n`);
      expect(JSON.parse(r2.body)).toMatchObject({ error: { code: "domain-denied", host: "denied.test" } });
    });

    it("userinfo on an allowed URL is dropped, not turned into credentials", async () => {
      const before = web.requests.length;
      const r = await send(`GET http://user:s3cret@${U}/u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(200);
      const seen = web.requests[before]!;
      expect(seen.url).toBe("/u");
      expect(seen.rawHeaders.join("\n")).not.toMatch(/s3cret|authorization/i);
    });

    it("on the transparent listener it is the other way round: Host decides, an absolute URL cannot override it", async () => {
      const before = web.connections;
      const r = await rawRequest(proxy.transparent!, `GET http://${U}/ HTTP/1.1\r\nHost: denied.test:${web.port}\r\nConnection: close\r\n\r\n`);
      r.socket.destroy();
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "domain-denied", host: "denied.test" } });
      expect(web.connections).toBe(before);
    });
  });

  describe("CONNECT target vs TLS SNI: no domain fronting past the policy", () => {
    /** CONNECT to `target`, then a TLS handshake naming `servername`; the plaintext the proxy answers inside TLS. */
    async function tlsThrough(target: string, servername: string): Promise<string> {
      const r = await connectRequest(proxy.proxy, target);
      expect(r.status).toBe(200);
      const secure = tls.connect({ socket: r.socket, servername, ca });
      secure.on("error", () => undefined);
      secure.once("secureConnect", () => secure.write(`GET / HTTP/1.1\r\nHost: ${servername}\r\n\r\n`));
      return readAll(secure);
    }

    it.each([
      ["denied.test", "a deny_domains host"],
      ["evil.test", "a host no rule allows"],
    ])("an opaque tunnel to allowed.test whose SNI names %s (%s): sni-mismatch, not one client byte upstream", async (sni) => {
      const before = bytes.received().length;
      const answer = await tlsThrough(`allowed.test:${bytes.port}`, sni);
      expect(answer).toMatch(/^HTTP\/1\.1 403/);
      expect(answer).toMatch(/x-egress-denied: sni-mismatch/i);
      expect(answer).toContain(`"host":"${sni}"`);
      expect(bytes.received().length).toBe(before);
      const line = await proxy.waitForLine((l) => l.event === "egress" && l.reason === "sni-mismatch" && l.rule === `sni:${sni}`);
      expect(line).toMatchObject({ allowed: false, host: "allowed.test" });
    });

    it("an SNI that is the CONNECT host in another case passes the ClientHello through untouched", async () => {
      const before = bytes.received().length;
      const r = await connectRequest(proxy.proxy, `allowed.test:${bytes.port}`);
      const secure = tls.connect({ socket: r.socket, servername: "ALLOWED.test" });
      secure.on("error", () => undefined);
      await expect.poll(() => bytes.received().length, { timeout: 3000 }).toBeGreaterThan(before);
      expect(bytes.received()[before]).toBe(0x16); // a TLS handshake record: the ClientHello, forwarded
      secure.destroy();
    });

    it("a ClientHello without SNI is judged by the CONNECT host alone and passes", async () => {
      const before = bytes.received().length;
      const r = await connectRequest(proxy.proxy, `allowed.test:${bytes.port}`);
      const secure = tls.connect({ socket: r.socket });
      secure.on("error", () => undefined);
      await expect.poll(() => bytes.received().length, { timeout: 3000 }).toBeGreaterThan(before);
      secure.destroy();
    });

    it("a CONNECT to an allowed IP literal cannot front a denied name in SNI", async () => {
      const put = await admin(proxy, "PUT", "/v1/policy", { ...POLICY, allow_cidrs: ["127.0.0.1/32"] });
      expect(put.status).toBe(200);
      try {
        const before = bytes.received().length;
        const answer = await tlsThrough(`127.0.0.1:${bytes.port}`, "denied.test");
        expect(answer).toMatch(/x-egress-denied: sni-mismatch/i);
        expect(bytes.received().length).toBe(before);
      } finally {
        expect((await admin(proxy, "PUT", "/v1/policy", POLICY)).status).toBe(200);
      }
    });

    it("the transparent listener judges the SNI itself: a denied SNI is refused inside TLS, nothing dialled", async () => {
      const socket = net.connect({ host: "127.0.0.1", port: Number(proxy.transparent!.split(":")[1]) });
      const secure = tls.connect({ socket, servername: "denied.test", ca });
      secure.on("error", () => undefined);
      secure.once("secureConnect", () => secure.write("GET / HTTP/1.1\r\nHost: denied.test\r\n\r\n"));
      const answer = await readAll(secure);
      expect(answer).toMatch(/^HTTP\/1\.1 403/);
      expect(answer).toMatch(/x-egress-denied: domain-denied/i);
    });
  });

  describe("bytes pipelined behind CONNECT in the same packet", () => {
    it("CONNECT + a ClientHello naming a denied host in one write: sni-mismatch, nothing reaches the upstream", async () => {
      const before = bytes.received().length;
      const r = await pipelinedTls(proxy.proxy, `allowed.test:${bytes.port}`, "denied.test", ca);
      expect(r.established).toBe(true);
      expect(r.plaintext).toMatch(/^HTTP\/1\.1 403/);
      expect(r.plaintext).toMatch(/x-egress-denied: sni-mismatch/i);
      expect(bytes.received().length).toBe(before);
    });

    it("a refused CONNECT with a request pipelined behind it: one refusal, the connection closes, the request is never parsed", async () => {
      const before = web.connections;
      const transcript = await rawExchange(
        proxy.proxy,
        `CONNECT denied.test:${web.port} HTTP/1.1\r\nHost: denied.test\r\n\r\nGET http://${U}/smuggled HTTP/1.1\r\nHost: ${U}\r\n\r\n`,
      );
      expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 403"]);
      expect(firstResponse(transcript).headers["x-egress-denied"]).toBe("domain-denied");
      expect(web.connections).toBe(before);
    });

    it("bytes behind an allowed CONNECT are tunnel data for the CONNECT host only, never a new proxy request", async () => {
      const beforeBytes = bytes.received().length;
      const beforeWeb = web.connections;
      const pipelined = `GET http://${U}/not-for-the-proxy HTTP/1.1\r\nHost: denied.test\r\n\r\n`;
      const socket = net.connect({ host: "127.0.0.1", port: Number(proxy.proxy.split(":")[1]) });
      socket.on("error", () => undefined);
      socket.write(`CONNECT allowed.test:${bytes.port} HTTP/1.1\r\nHost: allowed.test\r\n\r\n${pipelined}`);
      await expect.poll(() => bytes.received().length - beforeBytes, { timeout: 3000 }).toBe(pipelined.length);
      expect(bytes.received().subarray(beforeBytes).toString()).toBe(pipelined);
      expect(web.connections).toBe(beforeWeb);
      socket.destroy();
    });

    it("keep-alive pipelining on the forward listener judges every request: allowed, then denied", async () => {
      const before = web.requests.length;
      const transcript = await rawExchange(
        proxy.proxy,
        `GET http://${U}/first HTTP/1.1\r\nHost: x\r\n\r\nGET http://denied.test:${web.port}/second HTTP/1.1\r\nHost: ${U}\r\nConnection: close\r\n\r\n`,
      );
      expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 200", "HTTP/1.1 403"]);
      expect(transcript).toMatch(/x-egress-denied: domain-denied/i);
      expect(web.requests.slice(before).map((q) => q.url)).toEqual(["/first"]);
    });
  });

  describe("chained-proxy headers from the client are not trusted for anything", () => {
    const CHAIN = [
      "Forwarded: for=127.0.0.1;host=allowed.test;proto=https",
      "X-Forwarded-Host: allowed.test",
      "X-Forwarded-For: 127.0.0.1",
      "X-Forwarded-Proto: https",
      "X-Real-IP: 127.0.0.1",
      "X-Original-URL: http://allowed.test/",
      "X-Rewrite-URL: http://allowed.test/",
      "Via: 1.1 trusted-upstream-proxy",
    ].join("\r\n");

    it("they cannot turn a denied URL into an allowed one", async () => {
      const before = web.connections;
      const r = await send(`GET http://denied.test:${web.port}/ HTTP/1.1\r\nHost: denied.test\r\n${CHAIN}\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(403);
      expect(r.headers["x-egress-denied"]).toBe("domain-denied");
      expect(web.connections).toBe(before);
    });

    it("they cannot redirect a CONNECT", async () => {
      const r = await connectRequest(proxy.proxy, `denied.test:${web.port}`, `${CHAIN}\r\n`);
      r.socket.destroy();
      expect(r.headers["x-egress-denied"]).toBe("domain-denied");
    });

    it("they do not change where an allowed request goes, nor what the audit log records", async () => {
      const before = web.requests.length;
      const r = await send(`GET http://${U}/chained HTTP/1.1\r\nHost: ${U}\r\nForwarded: host=denied.test\r\nX-Forwarded-Host: denied.test\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(200);
      expect(hostHeaders(web.requests[before]!.rawHeaders)).toEqual([U]);
      const line = await proxy.waitForLine((l) => l.event === "egress" && l.method === "GET" && l.host === "allowed.test" && l.status === 200);
      expect(line).toMatchObject({ allowed: true, reason: "domain-allowed", address: "127.0.0.1" });
    });
  });

  describe("upgrades and h2c on the forward listener never get a raw pipe", () => {
    it("Upgrade: h2c with Connection: Upgrade is refused (400 upgrade-not-supported) and the HTTP/2 bytes behind it go nowhere", async () => {
      const before = web.connections;
      const transcript = await rawExchange(
        proxy.proxy,
        `GET http://${U}/ HTTP/1.1\r\nHost: ${U}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`,
      );
      const r = firstResponse(transcript);
      expect(r.status).toBe(400);
      expect(errorCode(r.body)).toBe("upgrade-not-supported");
      expect(transcript.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
      expect(web.connections).toBe(before);
    });

    it("Upgrade: websocket on the forward listener is refused the same way (WebSockets go through CONNECT)", async () => {
      const before = web.connections;
      const r = firstResponse(
        await rawExchange(proxy.proxy, `GET http://${U}/ws HTTP/1.1\r\nHost: ${U}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`),
      );
      expect(r.status).toBe(400);
      expect(errorCode(r.body)).toBe("upgrade-not-supported");
      expect(web.connections).toBe(before);
    });

    it("HTTP/2 prior knowledge on the forward listener is a 400, nothing forwarded", async () => {
      const before = web.connections;
      const r = firstResponse(await rawExchange(proxy.proxy, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
      expect(r.status).toBe(400);
      expect(errorCode(r.body)).toBe("bad-request");
      expect(web.connections).toBe(before);
    });

    it("an Upgrade header without Connection: Upgrade is stripped, and an upstream that answers 101 anyway gets no pipe", async () => {
      // An upstream that switches protocols whatever it is asked, then streams raw bytes.
      const received: Buffer[] = [];
      const switcher = net.createServer((s) => {
        s.on("error", () => undefined);
        s.once("data", (d: Buffer) => {
          received.push(d);
          s.on("data", (more: Buffer) => received.push(more));
          s.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nRAW-BYTES-FROM-UPSTREAM");
        });
      });
      await new Promise<void>((r) => switcher.listen(0, "127.0.0.1", r));
      const port = (switcher.address() as AddressInfo).port;
      try {
        const transcript = await rawExchange(proxy.proxy, `GET http://allowed.test:${port}/ HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: h2c\r\nConnection: close\r\n\r\n`);
        const r = firstResponse(transcript);
        expect(r.status).toBe(502);
        expect(r.headers["x-egress-denied"]).toBe("upstream-connect-failed");
        expect(transcript).not.toContain("RAW-BYTES-FROM-UPSTREAM");
        const upstreamSaw = Buffer.concat(received).toString("latin1");
        expect(upstreamSaw).toMatch(/^GET \/ HTTP\/1\.1\r\n/);
        expect(upstreamSaw).not.toMatch(/^upgrade:/im);
      } finally {
        await new Promise<void>((r) => switcher.close(() => r()));
      }
    });
  });
  describe("refusals do not hold resources", () => {
    /** egress_active_connections from /metrics. */
    async function activeConnections(p: RunningProxy): Promise<number> {
      const m = /^egress_active_connections (\d+)/m.exec((await admin(p, "GET", "/metrics")).text);
      return Number(m?.[1] ?? NaN);
    }

    it("a refused CONNECT releases the client connection at once", async () => {
      const before = await activeConnections(proxy);
      for (let i = 0; i < 20; i++) await rawExchange(proxy.proxy, `CONNECT denied.test:${web.port} HTTP/1.1\r\nHost: denied.test\r\n\r\n`);
      await expect.poll(() => activeConnections(proxy), { timeout: 2000 }).toBeLessThanOrEqual(before);
    });

    // Regression: an in-TLS refusal used to keep the client socket until --header-timeout (10 s) after the client
    // had gone, pinning a file descriptor per refusal and stalling the SIGTERM drain.
    it("an sni-mismatch refusal inside TLS releases the client connection once the client has gone", async () => {
      const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1" });
      const p = await startProxy({ policy: POLICY, args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"] });
      try {
        const pca = await proxyCa(p);
        const r = await connectRequest(p.proxy, `allowed.test:${bytes.port}`);
        expect(r.status).toBe(200);
        const secure = tls.connect({ socket: r.socket, servername: "denied.test", ca: pca });
        secure.on("error", () => undefined);
        secure.once("secureConnect", () => secure.write("GET / HTTP/1.1\r\nHost: denied.test\r\n\r\n"));
        expect(await readAll(secure)).toMatch(/x-egress-denied: /i);
        r.socket.destroy();
        await expect.poll(() => activeConnections(p), { timeout: 3000 }).toBe(0);
      } finally {
        await p.stop("SIGKILL");
      }
    });
  });
});
