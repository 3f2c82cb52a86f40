import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { promisify } from "node:util";
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, refusalCode } from "../helpers/raw-client.js";
import { startEchoServer, startHttpUpstream, type Upstream } from "../helpers/upstream.js";

const run = promisify(execFile);

async function until(cond: () => boolean, ms = 5000, what = ""): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met in time: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An SMTP-like upstream: speaks first, answers each line, says bye and closes on QUIT. */
async function startGreeter(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
    s.write("220 ready\r\n");
    let pending = "";
    s.on("data", (d: Buffer) => {
      pending += d.toString();
      for (let i = pending.indexOf("\r\n"); i >= 0; i = pending.indexOf("\r\n")) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 2);
        if (line === "QUIT") s.end("221 bye\r\n");
        else s.write(`250 ${line}\r\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

// Every case runs on both relays: the native splice relay (what Linux builds use) and the JavaScript one (the
// fallback). "splice" is demanded explicitly, so a build without the addon fails here instead of silently
// measuring and testing the fallback twice.
describe.each(["splice", "js"] as const)("CONNECT tunnels (%s relay)", (relay) => {
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
      env: { SANDBOX_EGRESS_TUNNEL_RELAY: relay },
    });
  });
  afterAll(async () => {
    await proxy?.stop("SIGKILL"); // tests leave tunnels open; draining them is tested in limits.test.ts
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
    // The audit line counts what the relay moved, whichever relay moved it.
    const line = await proxy.waitForLine((l) => l.event === "egress" && l.kind === "connect" && (l.bytes_up as number) >= total);
    expect(line.bytes_up).toBe(total);
    expect(line.bytes_down).toBe(total);
  });

  it("carries the tunnel on the relay it was started with", async () => {
    expect(proxy.listening.tunnel_relay).toBe(relay);
    const r = await connectRequest(proxy.proxy, `allowed.test:${echo.port}`);
    r.socket.write("x");
    await new Promise((resolve) => r.socket.once("data", resolve));
    r.socket.destroy();
    const metrics = await (await fetch(`http://${proxy.admin}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`egress_tunnel_relays_total\\{relay="${relay}"\\} [1-9]`));
  });

  it("closes a tunnel that carried traffic within one second of a PUT that denies it, and counts the bytes", async () => {
    const r = await connectRequest(proxy.proxy, `allowed.test:${echo.port}`);
    expect(r.status).toBe(200);
    r.socket.write("before");
    await new Promise((resolve) => r.socket.once("data", resolve)); // past the peek: on the relay now
    const closed = new Promise<number>((resolve) => {
      const start = Date.now();
      // The helper socket is allowHalfOpen: the proxy closing the tunnel shows as the end of its stream.
      r.socket.once("end", () => resolve(Date.now() - start));
    });
    r.socket.resume();
    const policy = { mode: "custom", allow_domains: [`ports.test:${up.port}`], deny_domains: ["blocked.test", "allowed.test"] };
    const put = await fetch(`http://${proxy.admin}/v1/policy`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(policy) });
    expect(put.status).toBe(200);
    try {
      expect(await closed).toBeLessThan(1000);
      const line = await proxy.waitForLine((l) => l.event === "egress" && l.kind === "connect" && l.bytes_up === 6 && l.bytes_down === 6);
      expect(line.allowed).toBe(true);
    } finally {
      const back = { mode: "custom", allow_domains: ["allowed.test", `ports.test:${up.port}`], deny_domains: ["blocked.test"] };
      expect((await fetch(`http://${proxy.admin}/v1/policy`, { method: "PUT", body: JSON.stringify(back) })).status).toBe(200);
    }
  });

  it("enforces the idle timeout on a relayed tunnel, and traffic keeps a tunnel alive past it", async () => {
    const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1" });
    const p = await startProxy({
      policy: { mode: "custom", allow_domains: ["allowed.test"] },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--idle-timeout", "800"],
      env: { SANDBOX_EGRESS_TUNNEL_RELAY: relay },
    });
    try {
      const open = async (): Promise<{ socket: net.Socket; closed: Promise<number> }> => {
        const r = await connectRequest(p.proxy, `allowed.test:${echo.port}`);
        r.socket.write("x");
        await new Promise((resolve) => r.socket.once("data", resolve));
        r.socket.resume();
        const start = Date.now();
        return { socket: r.socket, closed: new Promise((resolve) => r.socket.once("end", () => resolve(Date.now() - start))) };
      };
      const idle = await open();
      const busy = await open();
      let busyClosedAt: number | null = null;
      void busy.closed.then((ms) => (busyClosedAt = ms));
      const ticker = setInterval(() => busy.socket.write("."), 200);
      const idleMs = await idle.closed;
      expect(idleMs).toBeGreaterThanOrEqual(600);
      expect(idleMs).toBeLessThan(2500);
      await new Promise((resolve) => setTimeout(resolve, 2500 - idleMs));
      clearInterval(ticker);
      expect(busyClosedAt).toBeNull();
      busy.socket.destroy();
    } finally {
      await p.stop();
    }
  });

  it.runIf(relay === "splice")("holds pipes only while a tunnel is busy, and survives running out of descriptors", async () => {
    // A proxy of its own: descriptors are counted, and other tests' tunnels must not come and go meanwhile.
    const hosts = await writeHostsFile({ "allowed.test": "127.0.0.1" });
    const own = await startProxy({
      policy: { mode: "custom", allow_domains: ["allowed.test"] },
      args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"],
      env: { SANDBOX_EGRESS_TUNNEL_RELAY: relay },
    });
    try {
      await pipesAndDescriptors(own);
    } finally {
      await own.stop("SIGKILL");
    }
  });

  async function pipesAndDescriptors(proxy: RunningProxy): Promise<void> {
    const pid = proxy.proc.pid!;
    const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;
    const r = await connectRequest(proxy.proxy, `allowed.test:${echo.port}`);
    const got: Buffer[] = [];
    r.socket.on("data", (d: Buffer) => got.push(d));
    const echoed = async (n: number): Promise<void> => until(() => Buffer.concat(got).length >= n, 5000, `${Buffer.concat(got).length} of ${n} bytes echoed`);
    r.socket.write("a");
    await echoed(1);
    const busy = fds();
    const hard = (await run("prlimit", ["--pid", String(pid), "--nofile", "--raw", "--noheadings", "--output", "HARD"])).stdout.trim();
    // Quiet for longer than the relay's pipe idle time (2 s) plus a sweep (1 s): both pipes closed.
    await new Promise((resolve) => setTimeout(resolve, 3500));
    expect(fds()).toBe(busy - 4);
    // Allow only two more descriptors: the first direction gets its pipe, the second cannot, and waits.
    // Only the soft limit moves (raising a hard limit again needs more than root in some containers).
    await run("prlimit", ["--pid", String(pid), `--nofile=${busy - 2}:`]);
    try {
      r.socket.write("b");
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(Buffer.concat(got).toString()).toBe("a");
    } finally {
      await run("prlimit", ["--pid", String(pid), `--nofile=${hard}:`]);
    }
    // Descriptors are back: the next sweep (≤ 1 s) resumes the waiting direction, and nothing was lost.
    await echoed(2);
    expect(Buffer.concat(got).toString()).toBe("ab");
    r.socket.destroy();
  }

  it("never lets one tunnel's bytes reach another, also when tunnels are cut with bytes still in flight", async () => {
    // Each upstream connection streams 32 MiB of its own letter (more than the socket buffers on both sides hold). Most clients cut their tunnel after the first
    // 64 KiB and stop reading, so the relay still holds bytes for them when the tunnel is cut (the splice relay
    // reuses pipes between tunnels, and only empty ones); every third reads to the end. Every tunnel must see its own letter and nothing else.
    let next = 0;
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => s.destroy());
      const chunk = Buffer.alloc(64 * 1024, 0x41 + (next++ % 26));
      let left = 512;
      const pump = (): void => {
        while (left > 0) {
          left--;
          if (!s.write(chunk)) {
            s.once("drain", pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      for (let i = 0; i < 24; i++) {
        const whole = i % 3 === 2;
        const r = await connectRequest(proxy.proxy, `allowed.test:${port}`);
        expect(r.status).toBe(200);
        r.socket.write("x"); // the client's first byte ends the ClientHello peek: from here the relay carries it
        const seen = new Set<number>(r.rest);
        let bytes = r.rest.length;
        await new Promise<void>((resolve) => {
          r.socket.on("data", (d: Buffer) => {
            for (const b of new Set(d)) seen.add(b);
            bytes += d.length;
            if (!whole && bytes >= 64 * 1024 && !r.socket.isPaused()) {
              // Stop reading so that the socket buffers and the relay's pipe fill up, then cut the tunnel.
              r.socket.pause();
              setTimeout(() => {
                r.socket.destroy();
                resolve();
              }, 100);
            }
          });
          r.socket.on("end", () => resolve()); // the upstream finished (the client socket is half-open)
          r.socket.on("close", () => resolve());
          r.socket.on("error", () => resolve());
        });
        r.socket.destroy();
        expect([...seen].map((b) => String.fromCharCode(b))).toEqual([String.fromCharCode(0x41 + (i % 26))]);
        if (whole) expect(bytes).toBe(32 * 1024 * 1024);
      }
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("relays a server-speaks-first protocol: the greeting flows before the client's first byte, then both ways", async () => {
    const greeter = await startGreeter();
    try {
      const r = await connectRequest(proxy.proxy, `allowed.test:${greeter.port}`);
      expect(r.status).toBe(200);
      // The greeting may arrive in the same read as the 200; the raw client then hands it over as the "body".
      const text: string[] = [r.body, r.rest.toString()];
      r.socket.on("data", (d: Buffer) => text.push(d.toString()));
      await until(() => text.join("").includes("220 ready\r\n"), 5000, JSON.stringify(text));
      r.socket.write("HELO x\r\n");
      await until(() => text.join("").includes("250 HELO x\r\n"), 5000, JSON.stringify(text));
      r.socket.end("QUIT\r\n");
      await until(() => text.join("").includes("221 bye\r\n"), 5000, JSON.stringify(text));
    } finally {
      await greeter.close();
    }
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
