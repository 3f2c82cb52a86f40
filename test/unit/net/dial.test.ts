import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { DialError, dialVetted } from "../../../src/net/dial.js";

// Every connection in this file goes to 127.0.0.1 or ::1, including the ones that are meant to fail.

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ADDRESS_IN_TEXT = /\d+\.\d+\.\d+\.\d+|[0-9a-f]*::[0-9a-f]*/i;

/** An echo server on host:port (0 = any); resolves null when the address cannot be bound. */
async function listen(host: string, port = 0): Promise<{ port: number; connections: () => number } | null> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on("error", () => undefined);
    s.pipe(s);
  });
  const bound = await new Promise<boolean>((resolve) => {
    server.once("error", () => resolve(false));
    server.listen({ host, port, ipv6Only: host.includes(":") }, () => resolve(true));
  });
  if (!bound) return null;
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections };
}

/** A port on which neither 127.0.0.1 nor ::1 listens (bound, then released). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/**
 * A loopback listener that completes no handshakes: a child process listens with backlog 1 (0 would mean Node's default, 511) and is then stopped
 * (SIGSTOP), so nothing accepts; once its accept queue is full the kernel drops further SYNs and a connect hangs
 * until our timeout. This stays on 127.0.0.1 instead of dialling a black-holed address.
 */
async function stalledListener(): Promise<{ port: number }> {
  const child: ChildProcess = spawn(
    process.execPath,
    ["-e", "const s=require('net').createServer();s.listen({host:'127.0.0.1',port:0,backlog:1},()=>console.log(s.address().port))"],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  cleanups.push(() => child.kill("SIGKILL"));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once("exit", () => reject(new Error("listener child exited")));
  });
  child.kill("SIGSTOP");
  // Fill the accept queue: connect until one attempt does not complete.
  for (let i = 0; i < 16; i++) {
    const filler = net.connect(port, "127.0.0.1");
    filler.on("error", () => undefined);
    cleanups.push(() => filler.destroy());
    const connected = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 200);
      filler.once("connect", () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    if (!connected) return { port };
  }
  throw new Error("could not saturate the listener's accept queue");
}

async function rejection(p: Promise<unknown>): Promise<DialError> {
  const err = await p.then(
    () => expect.fail("expected dialVetted to reject"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DialError);
  return err as DialError;
}

let hasIpv6Loopback = false;
beforeAll(async () => {
  hasIpv6Loopback = (await listen("::1")) !== null;
  for (const c of cleanups.splice(0)) await c();
});

describe("dialVetted", () => {
  it("connects to the first address that accepts, and the socket carries data", async () => {
    const server = await listen("127.0.0.1");
    const { socket, address } = await dialVetted(["127.0.0.1"], server!.port, { timeoutMs: 2000 });
    cleanups.push(() => socket.destroy());
    expect(address).toBe("127.0.0.1");
    socket.write("ping");
    const echoed = await new Promise<string>((r) => socket.once("data", (d: Buffer) => r(d.toString())));
    expect(echoed).toBe("ping");
    expect(socket.listenerCount("connect")).toBe(0);
  });

  it("falls back to the next vetted address when the first refuses", async () => {
    const server = await listen("127.0.0.1");
    // Nothing listens on [::1]:port (or ::1 does not exist): either way the first attempt fails at once.
    const { socket, address } = await dialVetted(["::1", "127.0.0.1"], server!.port, { timeoutMs: 2000 });
    cleanups.push(() => socket.destroy());
    expect(address).toBe("127.0.0.1");
    expect(server!.connections()).toBe(1);
  });

  it("rejects with upstream-connect-failed when no vetted address accepts, naming no address", async () => {
    const port = await closedPort();
    const err = await rejection(dialVetted(["127.0.0.1", "::1"], port, { timeoutMs: 2000 }));
    expect(err.code).toBe("upstream-connect-failed");
    expect(err.message).not.toMatch(ADDRESS_IN_TEXT);
  });

  it("rejects with upstream-timeout when the only address never completes the handshake", async () => {
    const { port } = await stalledListener();
    const started = Date.now();
    const err = await rejection(dialVetted(["127.0.0.1"], port, { timeoutMs: 300 }));
    expect(err.code).toBe("upstream-timeout");
    expect(err.message).not.toMatch(ADDRESS_IN_TEXT);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("destroys the socket of an attempt that timed out", async () => {
    const { port } = await stalledListener();
    const tcpHandles = (): number => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length;
    const before = tcpHandles();
    await rejection(dialVetted(["127.0.0.1", "127.0.0.1"], port, { timeoutMs: 150 }));
    // Closing a handle completes on a later turn of the event loop.
    await new Promise((r) => setTimeout(r, 100));
    expect(tcpHandles()).toBe(before);
  });

  it("answers upstream-connect-failed, not timeout, when only some attempts timed out", async () => {
    const { port } = await stalledListener();
    // The stalled child listens on IPv4 only, so [::1]:port refuses (or is unreachable without IPv6).
    const err = await rejection(dialVetted(["127.0.0.1", "::1"], port, { timeoutMs: 300 }));
    expect(err.code).toBe("upstream-connect-failed");
  });

  it("falls back to the next address after a timeout", async ({ skip }) => {
    if (!hasIpv6Loopback) skip();
    const { port } = await stalledListener();
    const v6 = await listen("::1", port);
    if (v6 === null) skip();
    const { socket, address } = await dialVetted(["127.0.0.1", "::1"], port, { timeoutMs: 300 });
    cleanups.push(() => socket.destroy());
    expect(address).toBe("::1");
  });

  it("stops at once when the signal aborts mid-attempt", async () => {
    const { port } = await stalledListener();
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("client went away")), 50);
    const started = Date.now();
    const err = await rejection(dialVetted(["127.0.0.1", "127.0.0.1"], port, { timeoutMs: 10_000, signal: controller.signal }));
    expect(err.code).toBe("upstream-timeout");
    expect(err.cause).toEqual(new Error("client went away"));
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("does not dial at all when the signal is already aborted", async () => {
    const server = await listen("127.0.0.1");
    const err = await rejection(dialVetted(["127.0.0.1"], server!.port, { timeoutMs: 2000, signal: AbortSignal.abort() }));
    expect(err.code).toBe("upstream-timeout");
    await new Promise((r) => setTimeout(r, 50));
    expect(server!.connections()).toBe(0);
  });

  it("refuses host names and zone IDs without dialling: only judged addresses are dialled", async () => {
    const server = await listen("127.0.0.1");
    await expect(dialVetted(["localhost"], server!.port, { timeoutMs: 2000 })).rejects.toThrow(TypeError);
    await expect(dialVetted(["127.0.0.1", "localhost"], server!.port, { timeoutMs: 2000 })).rejects.toThrow(TypeError);
    await expect(dialVetted(["fe80::1%lo"], server!.port, { timeoutMs: 2000 })).rejects.toThrow(TypeError);
    await new Promise((r) => setTimeout(r, 50));
    expect(server!.connections()).toBe(0);
  });

  it("refuses a port out of range, and answers upstream-connect-failed for an empty list", async () => {
    await expect(dialVetted(["127.0.0.1"], 0, { timeoutMs: 100 })).rejects.toThrow(TypeError);
    await expect(dialVetted(["127.0.0.1"], 65536, { timeoutMs: 100 })).rejects.toThrow(TypeError);
    expect((await rejection(dialVetted([], 443, { timeoutMs: 100 }))).code).toBe("upstream-connect-failed");
  });
});
