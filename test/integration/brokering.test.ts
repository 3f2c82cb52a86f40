import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import tls from "node:tls";
import { ProxyAgent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/telemetry/logger.js";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, refusalCode } from "../helpers/raw-client.js";
import {
  createTestCa,
  headerValues,
  startRecordingTlsServer,
  startTlsUpstream,
  type RecordingTlsServer,
  type SeenRequest,
  type TestCa,
  type TlsUpstream,
} from "../helpers/tls-upstream.js";

/**
 * Credential brokering end to end (DESIGN.md "Transforms", "TLS interception"): a real proxy process, real clients
 * (curl, undici, Python urllib, openssl, raw TLS), HTTPS upstreams on loopback with certificates from a test CA.
 * Every byte the proxy prints and every body an admin or client receives is kept and searched for the secrets by
 * the last test.
 */

const tag = randomBytes(8).toString("hex");
const SECRET_ENV = `sk-env-${tag}-A1`;
const SECRET_FILE = `sk-file-${tag}-B2`;
const SECRET_LITERAL = `sk-literal-${tag}-C3`;
const SECRETS = [SECRET_ENV, SECRET_FILE, SECRET_LITERAL];

/** Every admin response body, client response body and client tool output of the suite. */
const seen: string[] = [];

interface Cmd {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a client tool without a shell and with no proxy variables; never rejects. */
function run(cmd: string, args: readonly string[], input?: string): Promise<Cmd> {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/_proxy$/i.test(k)) delete env[k];
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 20_000, env, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const out = { code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) };
      seen.push(out.stdout, out.stderr);
      resolve(out);
    });
    child.stdin?.end(input ?? "");
  });
}

interface Resp {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Read one HTTP/1.1 response (Content-Length or close-delimited) from a socket. */
function readResponse(s: tls.TLSSocket, timeoutMs = 10_000): Promise<Resp> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`no complete response: ${JSON.stringify(buf.toString())}`)), timeoutMs);
    const parse = (ended: boolean): void => {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (ended) done(new Error(`closed without a response: ${JSON.stringify(buf.toString())}`));
        return;
      }
      const head = buf.subarray(0, end).toString("latin1").split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const c = line.indexOf(":");
        headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
      }
      const status = Number(head[0]!.split(" ")[1]);
      const rest = buf.subarray(end + 4);
      const len = headers["content-length"] !== undefined ? Number(headers["content-length"]) : status === 101 ? 0 : -1;
      if (len >= 0 ? rest.length < len : !ended) return;
      done(null, { status, headers, body: rest.subarray(0, len >= 0 ? len : rest.length).toString() });
    };
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      parse(false);
    };
    const onEnd = (): void => parse(true);
    const done = (err: Error | null, r?: Resp): void => {
      clearTimeout(timer);
      s.off("data", onData);
      s.off("end", onEnd);
      s.off("close", onEnd);
      if (err) reject(err);
      else {
        seen.push(r!.body);
        resolve(r!);
      }
    };
    s.on("data", onData);
    s.once("end", onEnd);
    s.once("close", onEnd);
  });
}

function countMetric(text: string, name: string, labels = ""): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `) || (labels === "" && l.startsWith(`${name} `)));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("credential brokering: TLS interception, header transforms, no secret ever leaks", () => {
  let proxy: RunningProxy;
  let testCa: TestCa;
  let up: TlsUpstream;
  let up2: TlsUpstream;
  let bad: RecordingTlsServer;
  let proxyCa: string;
  let proxyCaFile: string;
  /** Proxy CA + test upstream CA, for a client that follows a redirect from an intercepted to an opaque host. */
  let bothCasFile: string;
  let policy: Record<string, unknown>;
  const dir = mkdtempSync(path.join(tmpdir(), "egress-brokering-"));

  async function admin(method: string, p: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
    const res = await fetch(`http://${proxy.admin}${p}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    seen.push(text);
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // metrics, PEM
    }
    return { status: res.status, json, text };
  }

  /** CONNECT, then TLS inside the tunnel (SNI = `servername`, verified against `ca`). */
  async function tunnel(host: string, port: number, opts: { servername?: string; ca?: string } = {}): Promise<tls.TLSSocket> {
    const r = await connectRequest(proxy.proxy, `${host}:${port}`);
    expect(r.status, `CONNECT ${host}:${port}`).toBe(200);
    const s = tls.connect({ socket: r.socket, servername: opts.servername ?? host, ca: opts.ca ?? proxyCa, ALPNProtocols: ["http/1.1"] });
    await new Promise<void>((resolve, reject) => {
      s.once("secureConnect", () => resolve());
      s.once("error", reject);
    });
    return s;
  }

  const lastRequest = (u: TlsUpstream): SeenRequest => u.requests[u.requests.length - 1]!;

  beforeAll(async () => {
    testCa = await createTestCa();
    const untrusted = await createTestCa("untrusted upstream CA");
    const pair = await testCa.issue(["*.brokered.test", "other.test", "plain.test", "pinned.test"]);
    up = await startTlsUpstream(pair);
    up2 = await startTlsUpstream(pair);
    bad = await startRecordingTlsServer(await untrusted.issue(["bad.brokered.test"]));
    const secretFile = path.join(dir, "api-key");
    writeFileSync(secretFile, `${SECRET_FILE}\n`, { mode: 0o600 });
    const hosts = await writeHostsFile({
      "api.brokered.test": "127.0.0.1",
      "files.brokered.test": "127.0.0.1",
      "literal.brokered.test": "127.0.0.1",
      "keepalive.brokered.test": "127.0.0.1",
      "fresh.brokered.test": "127.0.0.1",
      "bad.brokered.test": "127.0.0.1",
      "denied.brokered.test": "127.0.0.1",
      "meta.brokered.test": "169.254.169.254",
      "cidr.brokered.test": "127.0.0.2",
      "nosan.elsewhere.test": "127.0.0.1",
      "other.test": "127.0.0.1",
      "plain.test": "127.0.0.1",
      "pinned.test": "127.0.0.1",
    });
    policy = {
      mode: "custom",
      allow_domains: ["other.test", "plain.test", "pinned.test"],
      deny_domains: ["denied.brokered.test"],
      deny_cidrs: ["127.0.0.2/32"],
      transforms: [
        { domain: "*.brokered.test", inject_headers: { "X-Org": "org-default" }, strip_headers: ["x-debug-token"] },
        { domain: "api.brokered.test", inject_headers: { Authorization: "Bearer ${env:BROKER_TOKEN}", "X-Org": "org-api" }, strip_headers: ["Cookie"] },
        { domain: "files.brokered.test", inject_headers: { "X-Api-Key": `\${file:${secretFile}}` } },
        { domain: "literal.brokered.test", inject_headers: { "X-Literal": SECRET_LITERAL } },
        { domain: `pinned.test:${up.port}`, inject_headers: { "X-Pinned": "Bearer ${env:BROKER_TOKEN}" } },
        { domain: "bad.brokered.test", inject_headers: { Authorization: "Bearer ${env:BROKER_TOKEN}" } },
        { domain: "nosan.elsewhere.test", inject_headers: { Authorization: "Bearer ${env:BROKER_TOKEN}" } },
      ],
    };
    proxy = await startProxy({
      policy,
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--upstream-ca", testCa.certPath, "--header-timeout", "1500"],
      env: { BROKER_TOKEN: SECRET_ENV },
    });
    proxyCa = (await admin("GET", "/v1/ca.pem")).text;
    proxyCaFile = path.join(dir, "proxy-ca.pem");
    writeFileSync(proxyCaFile, proxyCa);
    bothCasFile = path.join(dir, "both-cas.pem");
    writeFileSync(bothCasFile, `${proxyCa}\n${testCa.certPem}`);
  });

  afterAll(async () => {
    await proxy?.stop();
    await up?.close();
    await up2?.close();
    await bad?.close();
  });

  it("curl: the upstream receives the injected Authorization exactly once, stripped headers are gone, HTTP/1.1 even when h2 is offered", async () => {
    const before = up.requests.length;
    const r = await run("curl", [
      "-sS", "--http2", "--cacert", proxyCaFile, "-x", `http://${proxy.proxy}`, "--max-time", "10",
      "-H", "Authorization: Bearer sandbox-own-token", "-H", "Cookie: session=abc", "-H", "X-Debug-Token: dbg", "-H", "X-Keep: kept",
      "-w", "\n%{http_code} %{http_version}",
      `https://api.brokered.test:${up.port}/v1/models?x=1`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const [body, status] = r.stdout.split("\n");
    expect(status).toBe("200 1.1");
    expect(JSON.parse(body!)).toMatchObject({ ok: true });
    expect(up.requests.length).toBe(before + 1);
    const got = lastRequest(up);
    expect(got.url).toBe("/v1/models?x=1");
    expect(got.servername).toBe("api.brokered.test");
    expect(headerValues(got.rawHeaders, "authorization")).toEqual([`Bearer ${SECRET_ENV}`]);
    expect(headerValues(got.rawHeaders, "x-org")).toEqual(["org-api"]); // the later matching transform wins
    expect(headerValues(got.rawHeaders, "cookie")).toEqual([]);
    expect(headerValues(got.rawHeaders, "x-debug-token")).toEqual([]);
    expect(headerValues(got.rawHeaders, "x-keep")).toEqual(["kept"]);
    expect(headerValues(got.rawHeaders, "host")).toEqual([`api.brokered.test:${up.port}`]);
  });

  it("writes one audit line per intercepted request naming the transformed headers, never their values", async () => {
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.kind === "intercepted" && l.host === "api.brokered.test" && l.status === 200);
    expect(line.intercepted).toBe(true);
    expect(line.allowed).toBe(true);
    expect(line.address).toBe("127.0.0.1");
    expect([...(line.transforms as string[])].sort()).toEqual(["authorization", "cookie", "x-debug-token", "x-org"]);
  });

  it("undici ProxyAgent: a ${file:} secret is injected, with the wildcard transform's header", async () => {
    const agent = new ProxyAgent({ uri: `http://${proxy.proxy}`, requestTls: { ca: proxyCa } });
    try {
      const res = await request(`https://files.brokered.test:${up.port}/files`, {
        dispatcher: agent,
        method: "POST",
        headers: { "x-api-key": "sandbox-guess", "x-debug-token": "t", "content-type": "application/json" },
        body: JSON.stringify({ prompt: "x".repeat(100_000) }),
      });
      const body = await res.body.text();
      seen.push(body);
      expect(res.statusCode).toBe(200);
    } finally {
      await agent.close();
    }
    const got = lastRequest(up);
    expect(got.url).toBe("/files");
    expect(got.method).toBe("POST");
    expect(got.body).toBe(JSON.stringify({ prompt: "x".repeat(100_000) }));
    expect(headerValues(got.rawHeaders, "x-api-key")).toEqual([SECRET_FILE]);
    expect(headerValues(got.rawHeaders, "x-org")).toEqual(["org-default"]);
    expect(headerValues(got.rawHeaders, "x-debug-token")).toEqual([]);
    expect(headerValues(got.rawHeaders, "authorization")).toEqual([]);
  });

  it("Python urllib with the proxy CA as cafile: a literal secret is injected", async () => {
    const script = [
      "import ssl, sys, urllib.request",
      "ctx = ssl.create_default_context(cafile=sys.argv[1])",
      "opener = urllib.request.build_opener(urllib.request.ProxyHandler({'https': 'http://' + sys.argv[2]}), urllib.request.HTTPSHandler(context=ctx))",
      "req = urllib.request.Request(sys.argv[3], headers={'X-Literal': 'sandbox-value'})",
      "r = opener.open(req, timeout=10)",
      "print(r.status)",
      "print(r.read().decode())",
    ].join("\n");
    const r = await run("python3", ["-c", script, proxyCaFile, proxy.proxy, `https://literal.brokered.test:${up.port}/py`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe("200");
    const got = lastRequest(up);
    expect(got.url).toBe("/py");
    expect(headerValues(got.rawHeaders, "x-literal")).toEqual([SECRET_LITERAL]);
  });

  it("exactly one value leaves for an injected name, whatever case and how many times the client sent it", async () => {
    const s = await tunnel("api.brokered.test", up.port);
    s.write(
      `GET /dup HTTP/1.1\r\nHost: api.brokered.test:${up.port}\r\nauthorization: a\r\nAUTHORIZATION: b\r\nAuthorization: c\r\n` +
        "x-ORG: mine\r\nX-Org: mine-too\r\nX-DEBUG-TOKEN: 1\r\nx-debug-token: 2\r\ncookie: x=1\r\nCOOKIE: y=2\r\n\r\n",
    );
    const r = await readResponse(s);
    s.destroy();
    expect(r.status).toBe(200);
    const got = lastRequest(up);
    expect(got.url).toBe("/dup");
    expect(headerValues(got.rawHeaders, "authorization")).toEqual([`Bearer ${SECRET_ENV}`]);
    expect(headerValues(got.rawHeaders, "x-org")).toEqual(["org-api"]);
    expect(headerValues(got.rawHeaders, "x-debug-token")).toEqual([]);
    expect(headerValues(got.rawHeaders, "cookie")).toEqual([]);
  });

  it("serves a leaf that `openssl verify -x509_strict` accepts for the CONNECT host (grabbed with s_client -proxy)", async () => {
    const r = await run(
      "openssl",
      ["s_client", "-proxy", proxy.proxy, "-connect", `api.brokered.test:${up.port}`, "-servername", "api.brokered.test", "-CAfile", proxyCaFile, "-verify_return_error"],
      "",
    );
    const leaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0];
    expect(leaf, r.stderr).toBeDefined();
    const leafFile = path.join(dir, "served-leaf.pem");
    writeFileSync(leafFile, `${leaf}\n`);
    const v = await run("openssl", ["verify", "-x509_strict", "-purpose", "sslserver", "-verify_hostname", "api.brokered.test", "-CAfile", proxyCaFile, leafFile]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain(": OK");
    // And as Node sees it: issued by the proxy's CA, for exactly the CONNECT host.
    const s = await tunnel("api.brokered.test", up.port);
    const cert = s.getPeerCertificate(true);
    s.destroy();
    expect(cert.subjectaltname).toBe("DNS:api.brokered.test");
    const caCert = new (await import("node:crypto")).X509Certificate(proxyCa);
    expect(cert.issuerCertificate.fingerprint256).toBe(caCert.fingerprint256);
    expect(new Date(cert.valid_to).getTime()).toBeLessThanOrEqual(new Date(caCert.validTo).getTime());
  });

  it("keeps hosts without a matching transform as opaque tunnels (the client sees the upstream's own certificate)", async () => {
    const before = up.requests.length;
    const s = await tunnel("plain.test", up.port, { ca: testCa.certPem });
    const cert = s.getPeerCertificate(true);
    s.write(`GET /opaque HTTP/1.1\r\nHost: plain.test:${up.port}\r\nAuthorization: sandbox\r\n\r\n`);
    const r = await readResponse(s);
    s.destroy();
    expect(r.status).toBe(200);
    expect(cert.issuer.CN).toBe("egress test upstream CA");
    expect(up.requests.length).toBe(before + 1);
    expect(headerValues(lastRequest(up).rawHeaders, "authorization")).toEqual(["sandbox"]);
    expect(headerValues(lastRequest(up).rawHeaders, "x-org")).toEqual([]);
  });

  it("intercepts a host whose transform names a port only on that port", async () => {
    const s = await tunnel("pinned.test", up.port);
    s.write(`GET /pinned HTTP/1.1\r\nHost: pinned.test:${up.port}\r\n\r\n`);
    expect((await readResponse(s)).status).toBe(200);
    s.destroy();
    expect(headerValues(lastRequest(up).rawHeaders, "x-pinned")).toEqual([`Bearer ${SECRET_ENV}`]);

    const o = await tunnel("pinned.test", up2.port, { ca: testCa.certPem });
    expect(o.getPeerCertificate().issuer.CN).toBe("egress test upstream CA");
    o.write(`GET /pinned-other-port HTTP/1.1\r\nHost: pinned.test:${up2.port}\r\n\r\n`);
    expect((await readResponse(o)).status).toBe(200);
    o.destroy();
    expect(lastRequest(up2).url).toBe("/pinned-other-port");
    expect(headerValues(lastRequest(up2).rawHeaders, "x-pinned")).toEqual([]);
  });

  it("keeps HTTP/1.1 connections alive on both legs: 10 requests, one client tunnel, one upstream connection; ALPN offers http/1.1 only", async () => {
    const handshakes = up.handshakes;
    const before = up.requests.length;
    const agent = new ProxyAgent({ uri: `http://${proxy.proxy}`, requestTls: { ca: proxyCa }, connections: 1 });
    try {
      for (let i = 0; i < 10; i++) {
        const res = await request(`https://keepalive.brokered.test:${up.port}/ka/${i}`, { dispatcher: agent });
        seen.push(await res.body.text());
        expect(res.statusCode).toBe(200);
      }
    } finally {
      await agent.close();
    }
    expect(up.requests.length).toBe(before + 10);
    expect(up.requests.slice(before).every((r) => r.servername === "keepalive.brokered.test")).toBe(true);
    expect(up.handshakes - handshakes).toBe(1);
    const tunnelLine = await proxy.waitForLine((l) => l.event === "egress" && l.kind === "connect" && l.host === "keepalive.brokered.test");
    expect(tunnelLine.intercepted).toBe(true);
    expect(proxy.audit().filter((l) => l.kind === "connect" && l.host === "keepalive.brokered.test")).toHaveLength(1);
    expect(proxy.audit().filter((l) => l.kind === "intercepted" && l.host === "keepalive.brokered.test")).toHaveLength(10);
    const intercepted = up.alpnOffers.filter((o) => o.servername.endsWith(".brokered.test") || o.servername === "pinned.test");
    expect(intercepted.length).toBeGreaterThan(0);
    for (const o of intercepted) expect(o.protocols).toEqual(["http/1.1"]);
  });

  it("relays an upstream redirect to another host as is, and the client's follow-up to that host carries no secret", async () => {
    const target = `https://other.test:${up.port}/landing`;
    const before = up.requests.length;
    const r = await run("curl", [
      "-sS", "--cacert", proxyCaFile, "-x", `http://${proxy.proxy}`, "--max-time", "10", "-o", "/dev/null",
      "-w", "%{http_code} %{redirect_url}", `https://api.brokered.test:${up.port}/redirect?to=${encodeURIComponent(target)}`,
    ]);
    expect(r.stdout).toBe(`302 ${target}`);
    expect(up.requests.length).toBe(before + 1); // not followed by the proxy

    const followed = await run("curl", [
      "-sS", "-L", "--cacert", bothCasFile, "-x", `http://${proxy.proxy}`, "--max-time", "10",
      "-w", "\n%{http_code} %{num_redirects}", `https://api.brokered.test:${up.port}/redirect?to=${encodeURIComponent(target)}`,
    ]);
    expect(followed.stdout.split("\n").pop()).toBe("200 1");
    const landing = lastRequest(up);
    expect(landing.url).toBe("/landing");
    expect(landing.servername).toBe("other.test");
    expect(headerValues(landing.rawHeaders, "authorization")).toEqual([]);
    expect(headerValues(landing.rawHeaders, "x-org")).toEqual([]);
  });

  it("refuses absolute-form plain http to a host with inject_headers (inject-requires-tls) without contacting it", async () => {
    const before = up.connections;
    const r = await run("curl", ["-sS", "-i", "-x", `http://${proxy.proxy}`, "--max-time", "10", `http://api.brokered.test:${up.port}/plain`]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 403/);
    expect(r.stdout).toMatch(/x-egress-denied: inject-requires-tls/i);
    expect(r.stdout).toContain('"code":"inject-requires-tls"');
    expect(up.connections).toBe(before);
  });

  it("answers 421 misdirected when Host or an absolute request target names another host inside the tunnel", async () => {
    const before = up.requests.length;
    const s = await tunnel("api.brokered.test", up.port);
    for (const req of [
      `GET / HTTP/1.1\r\nHost: other.test:${up.port}\r\n\r\n`,
      "GET / HTTP/1.1\r\nHost: api.brokered.test:1\r\n\r\n",
      `GET https://other.test:${up.port}/ HTTP/1.1\r\nHost: api.brokered.test:${up.port}\r\n\r\n`,
      "GET / HTTP/1.0\r\n\r\n",
    ]) {
      s.write(req);
      const r = await readResponse(s);
      expect(r.status, req).toBe(421);
      expect(r.headers["x-egress-denied"]).toBe("misdirected");
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "misdirected", host: "api.brokered.test" } });
      if (req.includes("HTTP/1.0")) break;
    }
    s.destroy();
    expect(up.requests.length).toBe(before);
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.reason === "misdirected");
    expect(line.allowed).toBe(false);
    expect(line.status).toBe(421);
  });

  it("closes an intercepted request whose headers never complete (the slow-loris guard applies inside the tunnel)", async () => {
    const before = up.requests.length;
    const s = await tunnel("api.brokered.test", up.port);
    s.write(`GET /slow HTTP/1.1\r\nHost: api.brokered.test:${up.port}\r\nX-Slow: 1\r\n`);
    const r = await readResponse(s, 15_000);
    s.destroy();
    expect(r.status).toBe(408);
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: "request-timeout" } });
    expect(up.requests.length).toBe(before);
  });

  it("refuses a ClientHello whose SNI names another host inside an intercepted tunnel (sni-mismatch, answered inside TLS)", async () => {
    const before = up.requests.length;
    for (const sni of ["other.test", "files.brokered.test"]) {
      const s = await tunnel("api.brokered.test", up.port, { servername: sni });
      expect(s.getPeerCertificate().subjectaltname).toBe(`DNS:${sni}`);
      s.write(`GET / HTTP/1.1\r\nHost: api.brokered.test:${up.port}\r\n\r\n`);
      const r = await readResponse(s);
      s.destroy();
      expect(r.status).toBe(403);
      expect(r.headers["x-egress-denied"]).toBe("sni-mismatch");
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "sni-mismatch", host: sni } });
    }
    expect(up.requests.length).toBe(before);
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.kind === "connect" && l.reason === "sni-mismatch" && l.host === "api.brokered.test");
    expect(line.allowed).toBe(false);
    expect(line.rule).toMatch(/^sni:/);
  });

  it("bounds refusal certificates for made-up SNIs: own small cache, rate-limited, the interception cache untouched", async () => {
    const metric = async (labels: string, name = "egress_leaf_certificates_minted_total"): Promise<number> =>
      countMetric((await admin("GET", "/metrics")).text, name, labels);
    const interceptBefore = await metric('{purpose="intercept"}');
    const refusalBefore = await metric('{purpose="refusal"}');
    const n = 60;
    const outcomes = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const r = await connectRequest(proxy.proxy, `api.brokered.test:${up.port}`);
        const s = tls.connect({ socket: r.socket, servername: `fake-${tag}-${i}.example`, ca: proxyCa });
        return new Promise<"answered" | "aborted">((resolve) => {
          s.once("secureConnect", () => {
            s.destroy();
            resolve("answered");
          });
          s.once("error", () => resolve("aborted"));
        });
      }),
    );
    const refusalMinted = (await metric('{purpose="refusal"}')) - refusalBefore;
    expect(refusalMinted).toBe(outcomes.filter((o) => o === "answered").length);
    expect(refusalMinted).toBeLessThan(n);
    expect(await metric("", "egress_refusal_leaves_throttled_total")).toBeGreaterThan(0);
    // The leaf of the real host is still cached: a request to it mints nothing.
    const s = await tunnel("api.brokered.test", up.port);
    s.write(`GET /after-fakes HTTP/1.1\r\nHost: api.brokered.test:${up.port}\r\n\r\n`);
    expect((await readResponse(s)).status).toBe(200);
    s.destroy();
    expect((await metric('{purpose="intercept"}')) - interceptBefore).toBe(0);
  });

  it("answers 502 upstream-tls-failed for an upstream certificate from an untrusted CA, and not one byte reached it", async () => {
    const r = await run("curl", ["-sS", "--cacert", proxyCaFile, "-x", `http://${proxy.proxy}`, "--max-time", "10", "-i", "--suppress-connect-headers", `https://bad.brokered.test:${bad.port}/secret-path`]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 502/);
    expect(r.stdout).toMatch(/x-egress-denied: upstream-tls-failed/i);
    expect(r.stdout).toContain('"code":"upstream-tls-failed"');
    expect(bad.connections).toBeGreaterThanOrEqual(1);
    expect(bad.handshakes).toBe(0);
    expect(bad.applicationBytes).toBe(0);
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.kind === "intercepted" && l.reason === "upstream-tls-failed");
    expect(line.status).toBe(502);
  });

  it("answers 502 upstream-tls-failed when a trusted upstream certificate does not name the host, sending it nothing", async () => {
    const before = up.requests.length;
    const handshakes = up.handshakes;
    const r = await run("curl", ["-sS", "--cacert", proxyCaFile, "-x", `http://${proxy.proxy}`, "--max-time", "10", "-i", "--suppress-connect-headers", `https://nosan.elsewhere.test:${up.port}/`]);
    expect(r.stdout).toMatch(/^HTTP\/1.1 502/);
    expect(r.stdout).toMatch(/x-egress-denied: upstream-tls-failed/i);
    expect(up.requests.length).toBe(before);
    expect(up.handshakes).toBe(handshakes);
  });

  it("allows transform domains in custom mode, still behind the address guard and the deny lists", async () => {
    const allowed = await admin("POST", "/v1/decide", { host: "api.brokered.test", port: 443 });
    expect(allowed.json).toMatchObject({ allowed: true, reason: "domain-allowed", rule: "transforms[1].domain=api.brokered.test" });
    for (const [target, code] of [
      ["meta.brokered.test:443", "internal-address"],
      ["denied.brokered.test:443", "domain-denied"],
      [`cidr.brokered.test:${up.port}`, "cidr-denied"],
      [`unlisted.test:${up.port}`, "not-allowed"],
    ] as const) {
      const r = await connectRequest(proxy.proxy, target);
      seen.push(r.body);
      expect(r.status, target).toBe(403);
      expect(r.headers["x-egress-denied"], target).toBe(code);
      expect(refusalCode(r)).toBe(code);
      r.socket.destroy();
    }
  });

  it("applies transforms to a WebSocket upgrade inside the tunnel, then pipes raw bytes both ways", async () => {
    const before = up.upgradedBytes;
    const s = await tunnel("api.brokered.test", up.port);
    s.write(
      `GET /ws HTTP/1.1\r\nHost: api.brokered.test:${up.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: sandbox\r\nX-Debug-Token: d\r\n\r\n",
    );
    const r = await readResponse(s);
    expect(r.status).toBe(101);
    expect(r.headers["sec-websocket-accept"]).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    const got = lastRequest(up);
    expect(got.url).toBe("/ws");
    expect(headerValues(got.rawHeaders, "authorization")).toEqual([`Bearer ${SECRET_ENV}`]);
    expect(headerValues(got.rawHeaders, "x-debug-token")).toEqual([]);
    const payload = Buffer.from([0x81, 0x85, 1, 2, 3, 4, 0x69, 0x67, 0x6f, 0x68, 0x6e]); // a masked "hello" frame
    const echoed = new Promise<Buffer>((resolve) => {
      let acc = Buffer.alloc(0);
      s.on("data", (d: Buffer) => {
        acc = Buffer.concat([acc, d]);
        if (acc.length >= payload.length) resolve(acc);
      });
    });
    s.write(payload);
    expect((await echoed).equals(payload)).toBe(true);
    expect(up.upgradedBytes - before).toBe(payload.length);
    s.destroy();
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.kind === "intercepted" && l.status === 101);
    expect(line.transforms).toEqual(expect.arrayContaining(["authorization", "x-debug-token"]));
  });

  it("mints exactly one leaf for 20 parallel first requests to a new brokered host", async () => {
    const metrics = async (): Promise<number> => countMetric((await admin("GET", "/metrics")).text, "egress_leaf_certificates_minted_total", '{purpose="intercept"}');
    const before = await metrics();
    const statuses = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const s = await tunnel("fresh.brokered.test", up.port);
        s.write(`GET /fresh/${i} HTTP/1.1\r\nHost: fresh.brokered.test:${up.port}\r\nConnection: close\r\n\r\n`);
        const r = await readResponse(s);
        s.destroy();
        return r.status;
      }),
    );
    expect(statuses).toEqual(Array(20).fill(200));
    expect((await metrics()) - before).toBe(1);
  });

  it("rejects a policy whose ${env:} or ${file:} reference is missing: 400 naming the field, the last good policy stays", async () => {
    const current = await admin("GET", "/v1/policy");
    for (const [value, field] of [
      ["Bearer ${env:BROKER_TOKEN_MISSING}", "transforms[0].inject_headers.Authorization"],
      [`\${file:${path.join(dir, "no-such-file")}}`, "transforms[0].inject_headers.Authorization"],
    ]) {
      const r = await admin("PUT", "/v1/policy", { mode: "custom", transforms: [{ domain: "api.brokered.test", inject_headers: { Authorization: value } }] });
      expect(r.status).toBe(400);
      const err = r.json.error as { code: string; errors: { field: string; error: string }[] };
      expect(err.code).toBe("invalid-policy");
      expect(err.errors.map((e) => e.field)).toEqual([field]);
    }
    const after = await admin("GET", "/v1/policy");
    expect(after.json.revision).toBe(current.json.revision);
    const shown = after.json.policy as { transforms: { inject_headers?: Record<string, string> }[] };
    expect(shown.transforms[1]!.inject_headers).toEqual({ Authorization: "[redacted]", "X-Org": "[redacted]" });
    expect(shown.transforms[3]!.inject_headers).toEqual({ "X-Literal": "[redacted]" });
    // A valid PUT (carrying a literal secret) answers redacted too, and injection keeps working after it.
    const put = await admin("PUT", "/v1/policy", policy);
    expect(put.status).toBe(200);
    expect(put.text).toContain("[redacted]");
    const s = await tunnel("api.brokered.test", up.port);
    s.write(`GET /after-put HTTP/1.1\r\nHost: api.brokered.test:${up.port}\r\n\r\n`);
    expect((await readResponse(s)).status).toBe(200);
    s.destroy();
    expect(headerValues(lastRequest(up).rawHeaders, "authorization")).toEqual([`Bearer ${SECRET_ENV}`]);
  });

  it("refuses to start with a policy whose ${env:} reference is missing, naming the field and not the value", async () => {
    await expect(
      startProxy({
        policy: { mode: "custom", transforms: [{ domain: "api.brokered.test", inject_headers: { Authorization: "Bearer ${env:BROKER_TOKEN_UNSET}", "X-Literal": SECRET_LITERAL } }] },
        env: { BROKER_TOKEN: SECRET_ENV },
      }).catch((err: Error) => {
        seen.push(err.message);
        throw err;
      }),
    ).rejects.toThrow(/exited with 1: [\s\S]*transforms\[0\]\.inject_headers\.Authorization: references environment variable BROKER_TOKEN_UNSET/);
  });

  it("configures pino redaction for secret-bearing fields", () => {
    const out: string[] = [];
    const log = createLogger({ destination: new Writable({ write: (c: Buffer, _e, cb) => (out.push(c.toString()), cb()) }) });
    log.info({ headers: { authorization: SECRET_ENV }, transforms: [{ inject_headers: { Authorization: SECRET_ENV } }] }, "probe");
    expect(out.join("")).toContain("[redacted]");
    expect(out.join("")).not.toContain(SECRET_ENV);
  });

  it("never shows a secret: not in any proxy stdout/stderr line, admin response, metric or client response of this suite", async () => {
    seen.push((await admin("GET", "/metrics")).text, (await admin("GET", "/policy")).text);
    expect(await proxy.stop()).toBe(0);
    const haystacks: [string, string[]][] = [
      ["proxy stdout", proxy.lines],
      ["proxy stderr", proxy.stderr],
      ["admin and client responses", seen],
    ];
    expect(proxy.lines.length).toBeGreaterThan(50);
    expect(seen.length).toBeGreaterThan(50);
    for (const [where, lines] of haystacks) {
      SECRETS.forEach((secret, i) => {
        // Only the position is reported: printing the line would put the secret into the test output.
        const at = lines.findIndex((l) => l.includes(secret));
        expect(at, `${where}: entry ${at} contains secret #${i}`).toBe(-1);
      });
    }
  });
});
