import { execFile } from "node:child_process";
import { promisify } from "node:util";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, refusalCode } from "../helpers/raw-client.js";
import { startEchoServer, startHttpUpstream, type Upstream } from "../helpers/upstream.js";

const run = promisify(execFile);

describe("CONNECT tunnels", () => {
  let proxy: RunningProxy;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let up: Upstream;

  beforeAll(async () => {
    echo = await startEchoServer();
    up = await startHttpUpstream();
    const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1", "blocked.test": "127.0.0.1", "ports.test": "127.0.0.1" });
    proxy = await startProxy({
      policy: { mode: "custom", allow_domains: ["allowed.test", `ports.test:${up.port}`], deny_domains: ["blocked.test"] },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"],
    });
  });
  afterAll(async () => {
    await proxy?.stop();
    await echo?.close();
    await up?.close();
  });

  it("tunnels to an allowed target and relays bytes both ways", async () => {
    const r = await connectRequest(proxy.proxy, `allowed.test:${echo.port}`);
    expect(r.status).toBe(200);
    r.socket.write("ping");
    const got = await new Promise<string>((resolve) => r.socket.once("data", (d: Buffer) => resolve(d.toString())));
    expect(got).toBe("ping");
    r.socket.destroy();
  });

  it("propagates a half-close: the client's FIN reaches upstream and the reply still flows back", async () => {
    const r = await connectRequest(proxy.proxy, `allowed.test:${echo.port}`);
    expect(r.status).toBe(200);
    const chunks: Buffer[] = [];
    r.socket.on("data", (d: Buffer) => chunks.push(d));
    const ended = new Promise<void>((resolve) => r.socket.once("end", () => resolve()));
    r.socket.end("half-closed but still answered");
    await ended;
    expect(Buffer.concat(chunks).toString()).toBe("half-closed but still answered");
  });

  it("relays 64 MiB through one tunnel with backpressure intact", async () => {
    const r = await connectRequest(proxy.proxy, `allowed.test:${echo.port}`);
    const total = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(256 * 1024, 7);
    let received = 0;
    const done = new Promise<void>((resolve) => {
      r.socket.on("data", (d: Buffer) => {
        received += d.length;
        if (received >= total) resolve();
      });
    });
    let sent = 0;
    const pump = (): void => {
      while (sent < total) {
        sent += chunk.length;
        if (!r.socket.write(chunk)) {
          r.socket.once("drain", pump);
          return;
        }
      }
    };
    pump();
    await done;
    expect(received).toBe(total);
    r.socket.destroy();
  });

  it("works with curl -p (proxytunnel) to an http upstream", async () => {
    const { stdout } = await run("curl", ["-sS", "-p", "-x", `http://${proxy.proxy}`, "--max-time", "10", `http://allowed.test:${up.port}/tunnelled`]);
    expect((JSON.parse(stdout) as { url: string }).url).toBe("/tunnelled");
  });

  it("refuses a deny_domains target with domain-denied before dialling", async () => {
    const before = echo.connections;
    const r = await connectRequest(proxy.proxy, `blocked.test:${echo.port}`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("domain-denied");
    expect(refusalCode(r)).toBe("domain-denied");
    expect(echo.connections).toBe(before);
  });

  it("refuses a port-restricted name on another port with not-allowed", async () => {
    const r = await connectRequest(proxy.proxy, `ports.test:${echo.port}`);
    expect(r.status).toBe(403);
    expect(r.headers["x-egress-denied"]).toBe("not-allowed");
  });

  it("refuses loopback spellings that no rule allows with internal-address or not-allowed", async () => {
    for (const target of ["127.1:80", "[::ffff:127.0.0.1]:80", "2130706433:80", "0x7f.0.0.1:80"]) {
      const r = await connectRequest(proxy.proxy, target);
      expect(r.status, target).toBe(403);
      expect(["not-allowed", "internal-address"], target).toContain(r.headers["x-egress-denied"]);
      r.socket.destroy();
    }
  });

  it("refuses a target without a port, or with a zone ID, with invalid-target", async () => {
    for (const target of ["allowed.test", "[fe80::1%eth0]:443", "allowed.test:99999", "allowed.test:0"]) {
      const r = await connectRequest(proxy.proxy, target);
      expect(r.status, target).toBe(400);
      expect(r.headers["x-egress-denied"], target).toBe("invalid-target");
    }
  });

  it("refuses a ClientHello whose SNI names a denied host (sni-mismatch), answering inside TLS", async () => {
    const r = await connectRequest(proxy.proxy, `allowed.test:${echo.port}`);
    expect(r.status).toBe(200);
    const caPem = await (await fetch(`http://${proxy.admin}/v1/ca.pem`)).text();
    const before = echo.connections;
    const secure = tls.connect({ socket: r.socket, servername: "blocked.test", ca: caPem });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", () => resolve());
      secure.once("error", reject);
    });
    secure.write("GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n");
    const response = await new Promise<string>((resolve) => {
      let text = "";
      secure.on("data", (d: Buffer) => (text += d.toString()));
      secure.on("end", () => resolve(text));
      secure.on("close", () => resolve(text));
    });
    expect(response).toMatch(/^HTTP\/1.1 403/);
    expect(response).toMatch(/X-Egress-Denied: sni-mismatch/i);
    expect(response).toContain('"code":"sni-mismatch"');
    // The echo upstream was dialled for the tunnel but never received a byte from the client.
    expect(echo.connections).toBeGreaterThanOrEqual(before);
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.reason === "sni-mismatch");
    expect(line.allowed).toBe(false);
  });
});
