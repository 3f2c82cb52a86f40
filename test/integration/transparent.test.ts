import https from "node:https";
import tls from "node:tls";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, port, type RunningProxy } from "../helpers/proxy-process.js";
import { rawRequest } from "../helpers/raw-client.js";
import { startHttpUpstream, type Upstream } from "../helpers/upstream.js";

/** A self-signed TLS server on loopback that answers "tls-ok" (the transparent TLS path is an opaque relay). */
function selfSignedServer(): Promise<{ server: https.Server; port: number; cert: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), "tp-"));
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=tls.test", "-addext", "subjectAltName=DNS:tls.test", "-keyout", `${dir}/k.pem`, "-out", `${dir}/c.pem`], { stdio: "ignore" });
  const cert = readFileSync(`${dir}/c.pem`, "utf8");
  const server = https.createServer({ key: readFileSync(`${dir}/k.pem`), cert }, (_req, res) => res.end("tls-ok"));
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port, cert })));
}

describe("transparent listener", () => {
  let proxy: RunningProxy;
  let up: Upstream;

  beforeAll(async () => {
    up = await startHttpUpstream();
    const hosts = await writeHostsFile({ "plain.test": "127.0.0.1", "tls.test": "127.0.0.1", "nope.test": "127.0.0.1" });
    proxy = await startProxy({
      transparent: true,
      policy: { mode: "custom", allow_domains: ["plain.test", "tls.test"] },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"],
    });
  });
  afterAll(async () => {
    await proxy?.stop("SIGKILL"); // tests leave tunnels open; draining them is tested in limits.test.ts
    await up?.close();
  });

  it("routes plain HTTP by its Host header", async () => {
    const r = await rawRequest(proxy.transparent!, `GET /via-host HTTP/1.1\r\nHost: plain.test:${up.port}\r\nConnection: close\r\n\r\n`);
    r.socket.destroy();
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as { url: string }).url).toBe("/via-host");
  });

  it("refuses a Host the policy does not allow, with the reason code", async () => {
    const r = await rawRequest(proxy.transparent!, `GET / HTTP/1.1\r\nHost: nope.test:${up.port}\r\nConnection: close\r\n\r\n`);
    r.socket.destroy();
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("not-allowed");
  });

  it("refuses plain HTTP without a Host header with invalid-target", async () => {
    const r = await rawRequest(proxy.transparent!, "GET / HTTP/1.0\r\n\r\n");
    r.socket.destroy();
    expect(r.status).toBe(400);
    expect(r.headers["x-egress-denied"]).toBe("invalid-target");
  });

  it("relays TLS by its SNI to port 443 of the named host, and closes a ClientHello without SNI", async () => {
    // The transparent TLS path always dials port 443 (the original destination is not recoverable without
    // SO_ORIGINAL_DST), so this test only checks the judging: an allowed SNI gets past the policy and is dialled
    // (nothing listens on 127.0.0.1:443, so the connection then closes), a denied SNI and a missing SNI do not.
    const { server } = await selfSignedServer();
    try {
      const tryTls = (servername: string | undefined): Promise<string> =>
        new Promise((resolve) => {
          const s = tls.connect({ host: "127.0.0.1", port: port(proxy.transparent!), servername, rejectUnauthorized: false });
          s.on("error", (e) => resolve(`error:${(e as NodeJS.ErrnoException).code ?? e.message}`));
          s.on("close", () => resolve("closed"));
          s.on("secureConnect", () => {
            resolve("secure");
            s.destroy(); // the audit line is written when the connection ends
          });
        });
      await tryTls("tls.test");
      await tryTls("nope.test");
      await tryTls(undefined);
      const lines = await proxy.waitForLine(() => proxy.audit().filter((l) => l.kind === "transparent" && l.method === "TLS").length >= 3);
      expect(lines).toBeTruthy();
      const tlsLines = proxy.audit().filter((l) => l.kind === "transparent" && l.method === "TLS");
      expect(tlsLines.find((l) => l.host === "tls.test")).toMatchObject({ reason: expect.stringMatching(/domain-allowed|upstream-connect-failed/) });
      expect(tlsLines.find((l) => l.host === "nope.test")).toMatchObject({ allowed: false, reason: "not-allowed" });
      expect(tlsLines.find((l) => l.host === "")).toMatchObject({ allowed: false, reason: "invalid-target" });
    } finally {
      server.close();
    }
  });

  it("answers a denied SNI with the refusal inside TLS, signed by the proxy's CA", async () => {
    const caPem = await (await fetch(`http://${proxy.admin}/v1/ca.pem`)).text();
    const started = Date.now();
    const text = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port: port(proxy.transparent!), servername: "nope.test", ca: caPem });
      let out = "";
      s.on("secureConnect", () => s.write("GET / HTTP/1.1\r\nHost: nope.test\r\n\r\n"));
      s.on("data", (d: Buffer) => (out += d.toString()));
      s.on("end", () => resolve(out));
      s.on("error", reject);
    });
    // The peeked ClientHello is replayed into the TLS engine: no stall until a timeout.
    expect(Date.now() - started).toBeLessThan(3000);
    expect(text).toMatch(/^HTTP\/1.1 403/);
    expect(text).toMatch(/X-Egress-Denied: not-allowed/i);
  });
});
