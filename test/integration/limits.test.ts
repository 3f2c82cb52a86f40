import net from "node:net";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest } from "../helpers/raw-client.js";
import { startEchoServer } from "../helpers/upstream.js";

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(":");
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

describe("limits and timeouts", () => {
  let proxy: RunningProxy;
  let slow: http.Server;
  let slowPort: number;

  beforeAll(async () => {
    slow = http.createServer((req, res) => {
      if (req.url === "/never") return; // never answers
      setTimeout(() => res.end("slow-ok"), 300);
    });
    await new Promise<void>((r) => slow.listen(0, "127.0.0.1", r));
    slowPort = (slow.address() as AddressInfo).port;
    const hosts = await writeHostsFile({ "slow.test": "127.0.0.1" });
    proxy = await startProxy({
      policy: { mode: "custom", allow_domains: ["slow.test"] },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--max-connections", "4", "--header-timeout", "1000", "--max-header-size", "4096", "--response-timeout", "1000"],
    });
  });
  afterAll(async () => {
    await proxy?.stop();
    slow.closeAllConnections();
    await new Promise<void>((r) => slow.close(() => r()));
  });

  it("answers 431 to a request whose headers exceed the limit, forwarding nothing", async () => {
    const r = await rawRequest(proxy.proxy, `GET http://slow.test:${slowPort}/ HTTP/1.1\r\nHost: slow.test\r\nX-Big: ${"a".repeat(8000)}\r\n\r\n`);
    expect(r.status).toBe(431);
  });

  it("answers 400 to request smuggling attempts (Content-Length with Transfer-Encoding)", async () => {
    const r = await rawRequest(
      proxy.proxy,
      `POST http://slow.test:${slowPort}/ HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    );
    expect(r.status).toBe(400);
  });

  it("closes a client that does not finish its headers in time (slow loris)", async () => {
    const { host, port } = hostPort(proxy.proxy);
    const s = net.connect(port, host);
    s.write("GET http://slow.test/ HTTP/1.1\r\nHost: slow.test\r\n");
    const started = Date.now();
    const text = await new Promise<string>((resolve) => {
      let t = "";
      s.on("data", (d: Buffer) => (t += d.toString()));
      s.on("close", () => resolve(t));
      s.on("error", () => resolve(t));
    });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(text === "" || text.startsWith("HTTP/1.1 408")).toBe(true);
  });

  it("answers upstream-timeout when the upstream never answers", async () => {
    const r = await rawRequest(proxy.proxy, `GET http://slow.test:${slowPort}/never HTTP/1.1\r\nHost: slow.test\r\n\r\n`, { timeoutMs: 8000 });
    expect(r.status).toBe(504);
    expect(r.headers["x-egress-denied"]).toBe("upstream-timeout");
  });

  it("answers 429 too-many-connections past the connection limit", async () => {
    const { host, port } = hostPort(proxy.proxy);
    const held: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const s = net.connect(port, host);
      await new Promise((r) => s.once("connect", r));
      held.push(s);
    }
    await new Promise((r) => setTimeout(r, 100));
    const r = await rawRequest(proxy.proxy, `GET http://slow.test:${slowPort}/ HTTP/1.1\r\nHost: slow.test\r\n\r\n`);
    expect(r.status).toBe(429);
    expect(r.headers["x-egress-denied"]).toBe("too-many-connections");
    for (const s of held) s.destroy();
  });
});

describe("SIGTERM", () => {
  it("drains: a tunnel on the splice relay keeps flowing after SIGTERM, and the proxy exits 0 once it ends", async () => {
    const echo = await startEchoServer();
    const proxy = await startProxy({ args: ["--internal-allow", "127.0.0.0/8"], env: { SANDBOX_EGRESS_TUNNEL_RELAY: "splice" } });
    try {
      const r = await connectRequest(proxy.proxy, `127.0.0.1:${echo.port}`);
      const got: Buffer[] = [];
      r.socket.on("data", (d: Buffer) => got.push(d));
      const ended = new Promise<void>((resolve) => r.socket.once("end", () => resolve()));
      const echoed = async (text: string): Promise<void> => {
        const deadline = Date.now() + 5000;
        while (Buffer.concat(got).toString() !== text) {
          if (Date.now() > deadline) throw new Error(`echo: ${Buffer.concat(got).toString()}`);
          await new Promise((res) => setTimeout(res, 10));
        }
      };
      r.socket.write("one");
      await echoed("one"); // past the peek: carried by the relay now
      const started = Date.now();
      const exit = proxy.stop("SIGTERM");
      await new Promise((res) => setTimeout(res, 300));
      r.socket.write("two"); // draining: open tunnels still carry traffic
      await echoed("onetwo");
      r.socket.end(); // FIN both ways (the echo server half-closes back): the tunnel ends, the drain completes
      await ended;
      expect(await exit).toBe(0);
      expect(Date.now() - started).toBeLessThan(5000); // well before the 10 s drain deadline
      const line = proxy.audit().find((l) => l.kind === "connect" && l.allowed === true);
      expect(line).toMatchObject({ bytes_up: 6, bytes_down: 6 });
    } finally {
      await proxy.stop("SIGKILL");
      await echo.close();
    }
  });

  it("drains: an in-flight request completes, then the proxy exits 0", async () => {
    const server = http.createServer((_req, res) => setTimeout(() => res.end("drained"), 500));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const proxy = await startProxy({ args: ["--internal-allow", "127.0.0.0/8"] });
    try {
      const pending = rawRequest(proxy.proxy, `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
      await new Promise((r) => setTimeout(r, 100));
      const exit = proxy.stop("SIGTERM");
      const r = await pending;
      expect(r.status).toBe(200);
      expect(r.body).toBe("drained");
      r.socket.destroy();
      expect(await exit).toBe(0);
    } finally {
      await proxy.stop("SIGKILL");
      server.closeAllConnections();
      server.close();
    }
  });
});
