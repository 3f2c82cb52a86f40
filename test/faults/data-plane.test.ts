/**
 * Data-plane faults against the real proxy process: an upstream that resets in the middle of a body, and a
 * client that vanishes in the middle of a CONNECT tunnel. Loopback only.
 */
import { rmSync } from "node:fs";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest } from "../helpers/raw-client.js";
import { startHttpUpstream, type Upstream } from "../helpers/upstream.js";
import { fdCount, metric, rawExchange, until } from "./helpers.js";

let proxy: RunningProxy | undefined;
let good: Upstream | undefined;
let resetter: net.Server | undefined;
let sink: net.Server | undefined;
const serverSockets = new Set<net.Socket>();
/** Close times (performance.now) of the sink's sockets, by remote port. */
const sinkClosed = new Map<number, number>();
let resetPort = 0;
let sinkPort = 0;

beforeAll(async () => {
  good = await startHttpUpstream();
  // Headers + 300 of 1000 announced body bytes, then an RST.
  resetter = net.createServer((s) => {
    serverSockets.add(s);
    s.on("close", () => serverSockets.delete(s));
    s.on("error", () => undefined);
    s.once("data", () => {
      s.write(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n${"x".repeat(300)}`);
      setTimeout(() => s.resetAndDestroy(), 200);
    });
  });
  // Echoes and also streams its own data continuously, so that bytes flow both ways.
  sink = net.createServer((s) => {
    serverSockets.add(s);
    const remote = s.remotePort!;
    const pump = setInterval(() => {
      if (!s.destroyed) s.write(Buffer.alloc(16 * 1024, 0x61));
    }, 5);
    s.on("data", (d: Buffer) => s.write(d));
    s.on("error", () => undefined);
    s.on("close", () => {
      clearInterval(pump);
      serverSockets.delete(s);
      sinkClosed.set(remote, performance.now());
    });
  });
  await new Promise<void>((r) => resetter!.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => sink!.listen(0, "127.0.0.1", r));
  resetPort = (resetter.address() as AddressInfo).port;
  sinkPort = (sink.address() as AddressInfo).port;
  const hosts = await writeHostsFile({ "reset.test": "127.0.0.1", "good.test": "127.0.0.1", "sink.test": "127.0.0.1" });
  proxy = await startProxy({ args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8"] });
});

afterAll(async () => {
  await proxy?.stop();
  if (proxy) rmSync(proxy.dir, { recursive: true, force: true });
  for (const s of serverSockets) s.destroy();
  await new Promise<void>((r) => (resetter ? resetter.close(() => r()) : r()));
  await new Promise<void>((r) => (sink ? sink.close(() => r()) : r()));
  await good?.close();
});

describe("upstream reset mid-body", () => {
  it("ends the client's connection early (no hang, no complete-looking body), logs the request and keeps serving", async () => {
    const t0 = performance.now();
    const r = await rawExchange(proxy!.proxy, `GET http://reset.test:${resetPort}/file HTTP/1.1\r\nHost: reset.test\r\n\r\n`, 5000);
    expect(r.ended).not.toBe("timeout");
    expect(performance.now() - t0).toBeLessThan(3000);
    const text = r.bytes.toString("latin1");
    const headEnd = text.indexOf("\r\n\r\n");
    // The head was already relayed when the reset came: the client must see fewer body bytes than announced.
    expect(headEnd).toBeGreaterThan(0);
    expect(text.slice(0, headEnd)).toMatch(/^HTTP\/1\.1 200 /);
    expect(text.slice(0, headEnd)).toMatch(/content-length: 1000/i);
    const body = r.bytes.subarray(headEnd + 4);
    expect(body.length).toBe(300);
    expect(body.toString()).toBe("x".repeat(300));

    const line = await proxy!.waitForLine((l) => l.event === "egress" && l.host === "reset.test", 5000);
    expect(line).toMatchObject({ method: "GET", host: "reset.test", port: resetPort, address: "127.0.0.1", allowed: true, status: 200 });
    // Exactly what was relayed. No field of the line marks the response as cut short: bytes_down < Content-Length is the only sign.
    expect(line.bytes_down).toBe(300);

    // Still up, and the next request is served normally.
    const next = await rawRequest(proxy!.proxy, `GET http://good.test:${good!.port}/after HTTP/1.1\r\nHost: good.test\r\nConnection: close\r\n\r\n`);
    expect(next.status).toBe(200);
    expect(JSON.parse(next.body).url).toBe("/after");
    next.socket.destroy();
    // The same upstream again (a fresh connection in the pool, not the reset one).
    const again = await rawExchange(proxy!.proxy, `GET http://reset.test:${resetPort}/file HTTP/1.1\r\nHost: reset.test\r\n\r\n`, 5000);
    expect(again.ended).not.toBe("timeout");
    expect(again.bytes.toString("latin1")).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe("client vanishes mid-tunnel", () => {
  it("closes the upstream within 1 s, logs the tunnel, and returns tunnels and file descriptors to baseline", async () => {
    const pid = proxy!.proc.pid!;
    // Warm up (lazy modules, pools, log streams) before taking the fd baseline.
    const warm = await connectRequest(proxy!.proxy, `sink.test:${sinkPort}`);
    expect(warm.status).toBe(200);
    warm.socket.destroy();
    expect(await until(async () => (await metric(proxy!.admin, "egress_active_tunnels")) === 0, 3000)).toBe(true);
    expect(await until(() => serverSockets.size === 0, 3000)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    const baseline = fdCount(pid);

    const before = sinkClosed.size;
    const tunnels = await Promise.all(Array.from({ length: 8 }, () => connectRequest(proxy!.proxy, `sink.test:${sinkPort}`)));
    for (const t of tunnels) expect(t.status).toBe(200);
    expect(await metric(proxy!.admin, "egress_active_tunnels")).toBe(8);
    // Data both ways for a moment.
    const received = tunnels.map(() => 0);
    const writers = tunnels.map((t, i) => {
      t.socket.on("data", (d: Buffer) => (received[i]! += d.length));
      t.socket.on("error", () => undefined);
      return setInterval(() => t.socket.write(Buffer.alloc(8 * 1024, 0x62)), 5);
    });
    await new Promise((r) => setTimeout(r, 300));
    for (const n of received) expect(n).toBeGreaterThan(0);
    const killedAt = performance.now();
    for (const [i, t] of tunnels.entries()) {
      clearInterval(writers[i]);
      t.socket.destroy();
    }

    expect(await until(() => sinkClosed.size === before + 8, 2000)).toBe(true);
    const closeTimes = [...sinkClosed.values()].slice(before);
    for (const at of closeTimes) expect(at - killedAt).toBeLessThan(1000);

    expect(await until(async () => (await metric(proxy!.admin, "egress_active_tunnels")) === 0, 2000)).toBe(true);
    expect(await until(() => proxy!.audit().filter((l) => l.method === "CONNECT" && l.host === "sink.test").length === 9, 2000)).toBe(true);
    for (const l of proxy!.audit().filter((a) => a.method === "CONNECT" && a.host === "sink.test").slice(1)) {
      expect(l).toMatchObject({ allowed: true, status: 200, port: sinkPort, address: "127.0.0.1" });
      expect(l.bytes_up).toBeGreaterThan(0);
      expect(l.bytes_down).toBeGreaterThan(0);
    }
    expect(await until(() => fdCount(pid) <= baseline, 3000), `fds ${fdCount(pid)} > baseline ${baseline}`).toBe(true);
  });
});
