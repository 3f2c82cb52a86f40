/**
 * An upstream that closes its idle keep-alive connections: the proxy must close its side too, at once, for the
 * intercepted (TLS) leg and for plain http forwarding.
 *
 * The leak this keeps caught: intercepted requests went through a node:https Agent over sockets dialled with
 * allowHalfOpen, so an upstream's FIN on an idle pooled connection was never answered and the proxy kept one
 * socket per host in CLOSE_WAIT (3,000 fds after 3,000 hosts, bench rss-hosts). Checked against scratch builds:
 * 201281a (the build that bench measured) and b26cb6b^ with dial.ts's allowHalfOpen default set back to true both
 * fail here with {"CLOSE_WAIT":51}; b26cb6b^ as committed passes (9463c88 had already made pooled sockets
 * non-half-open), as does HEAD (undici pools, b26cb6b) even with that default set back to true.
 *
 * Both upstreams announce `Keep-Alive: timeout=60`, so the proxy's own idle timer (hint − 2 s) cannot be what
 * closes anything within the 2 s allowed here: only its reaction to the upstream's FIN can (without the upstream's
 * close the proxy still holds every connection ESTABLISHED after 2 s). Loopback only.
 */
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeHostsFile } from "../helpers/hosts-file.js";
import { startProxy, type RunningProxy } from "../helpers/proxy-process.js";
import { connectRequest, rawRequest } from "../helpers/raw-client.js";
import { createTestCa, headerValues } from "../helpers/tls-upstream.js";
import { admin, fdCount, until } from "./helpers.js";

const SECRET = `sk-close-${randomBytes(8).toString("hex")}`;
const HOSTS = Array.from({ length: 50 }, (_, i) => `h${i + 1}.brokered.test`);
/** Concurrent plain-http requests: the upstream holds every response until all have arrived, so the pool opens this many connections. */
const PLAIN_PARALLEL = 20;
/** How long the proxy may take to close its side after the upstream closed (its own idle timer would take ~58 s). */
const CLOSE_WITHIN_MS = 2000;

// ---------------------------------------------------------------------------------------------------------------
// The proxy's TCP sockets, read from /proc: a socket counts when the proxy holds an fd for it (so CLOSE_WAIT, the
// leak, counts; an orphaned FIN_WAIT/TIME_WAIT the kernel finishes on its own does not).

const TCP_STATES: Record<string, string> = {
  "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
  "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
};

/** States of every TCP socket process `pid` holds an fd for whose remote port is `remotePort`. */
function heldSockets(pid: number, remotePort: number): string[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed between readdir and readlink
    }
  }
  const states: string[] = [];
  for (const table of ["tcp", "tcp6"]) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, "utf8").split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const rport = parseInt(f[2]!.slice(f[2]!.lastIndexOf(":") + 1), 16);
      if (rport === remotePort && inodes.has(f[9]!)) states.push(TCP_STATES[f[3]!] ?? f[3]!);
    }
  }
  return states;
}

/** How many of those sockets are ESTABLISHED. */
function established(pid: number, remotePort: number): number {
  return heldSockets(pid, remotePort).filter((s) => s === "ESTABLISHED").length;
}

function tally(states: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of states) out[s] = (out[s] ?? 0) + 1;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Loopback upstreams that keep idle connections open for a minute and close them when told to.

interface SeenRequest {
  url: string;
  rawHeaders: string[];
  /** SNI of the TLS connection it came on (null for plain http). */
  servername: string | null;
}

interface KeepAliveUpstream {
  readonly port: number;
  readonly requests: SeenRequest[];
  /** TCP connections accepted. */
  readonly accepted: number;
  /** TCP connections currently open on the server side. */
  readonly open: number;
  /** server.closeIdleConnections(): every connection with no request in flight is closed. */
  closeIdle(): void;
  close(): Promise<void>;
}

/**
 * Answers 200 `{"ok":true,"url":…}` without echoing headers. With `holdUntil`, responses wait until that many
 * requests are in flight (then all go out; a safety timer releases them after 5 s so a failure cannot hang).
 */
async function startKeepAliveUpstream(pair?: { cert: string; key: string }, holdUntil = 0): Promise<KeepAliveUpstream> {
  const requests: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  let accepted = 0;
  let held: (() => void)[] = [];
  const release = (): void => {
    const all = held;
    held = [];
    for (const f of all) f();
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const sock = req.socket as Socket & { servername?: string | false };
    requests.push({ url: req.url ?? "", rawHeaders: [...req.rawHeaders], servername: sock.servername || null });
    req.resume();
    req.on("end", () => {
      const answer = (): void => {
        const body = JSON.stringify({ ok: true, url: req.url });
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
        res.end(body);
      };
      if (holdUntil <= 0) return answer();
      held.push(answer);
      if (held.length >= holdUntil) release();
      else if (held.length === 1) setTimeout(release, 5000).unref();
    });
  };
  const server: http.Server = pair ? https.createServer({ cert: pair.cert, key: pair.key, ALPNProtocols: ["http/1.1"] }, handler) : http.createServer(handler);
  // Node's default is 5 s (sent as Keep-Alive: timeout=5, which the proxy's pool would honour): a minute here.
  server.keepAliveTimeout = 60_000;
  server.on("connection", (s: Socket) => {
    accepted++;
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  if (pair) server.on("tlsClientError", () => undefined);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    get accepted() {
      return accepted;
    },
    get open() {
      return sockets.size;
    },
    closeIdle: () => server.closeIdleConnections(),
    close: () =>
      new Promise<void>((r) => {
        release();
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Clients: each request on a connection of its own, `Connection: close`, read to the end.

interface ClientResult {
  status: number;
  body: string;
}

function parseClosed(raw: Buffer): ClientResult {
  const text = raw.toString("latin1");
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`no response head: ${JSON.stringify(text.slice(0, 200))}`);
  return { status: Number(text.slice(0, end).split(" ")[1]), body: raw.subarray(Buffer.byteLength(text.slice(0, end + 4), "latin1")).toString() };
}

let proxy: RunningProxy;
let proxyCa: string;
let tlsUp: KeepAliveUpstream;
let plainUp: KeepAliveUpstream;
let pid: number;

/** CONNECT host:port, TLS to the proxy's leaf (verified against its CA), one GET with Connection: close, read until the proxy closes. */
async function interceptedGet(host: string, path: string): Promise<ClientResult> {
  const r = await connectRequest(proxy.proxy, `${host}:${tlsUp.port}`);
  if (r.status !== 200) {
    r.socket.destroy();
    throw new Error(`CONNECT ${host} answered ${r.status}: ${r.body}`);
  }
  const s = tls.connect({ socket: r.socket, servername: host, ca: proxyCa, ALPNProtocols: ["http/1.1"] });
  return new Promise<ClientResult>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${host}: no end of response within 10 s; got ${JSON.stringify(Buffer.concat(chunks).toString().slice(0, 300))}`));
    }, 10_000);
    s.once("secureConnect", () =>
      s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${tlsUp.port}\r\nX-Broker-Token: sandbox-guess\r\nConnection: close\r\n\r\n`),
    );
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
    // The CONNECT socket was opened allowHalfOpen: the proxy's FIN is an 'end' here, not a 'close'.
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      try {
        resolve(parseClosed(Buffer.concat(chunks)));
      } catch (e) {
        reject(e as Error);
      }
    };
    s.once("end", done);
    s.once("close", done);
  });
}

/** Absolute-form plain http GET through the proxy with Connection: close. */
async function plainGet(path: string): Promise<ClientResult> {
  const r = await rawRequest(proxy.proxy, `GET http://plain.test:${plainUp.port}${path} HTTP/1.1\r\nHost: plain.test:${plainUp.port}\r\nConnection: close\r\n\r\n`, { timeoutMs: 10_000 });
  r.socket.destroy();
  return { status: r.status, body: r.body };
}

/** Map `items` through `f` with at most `n` in flight. */
async function inBatches<T, R>(items: readonly T[], n: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += n) out.push(...(await Promise.all(items.slice(i, i + n).map(f))));
  return out;
}

/** The upstream closes its idle connections; within CLOSE_WITHIN_MS the proxy must hold no socket to it, in any state. */
async function expectProxyFollowsClose(up: KeepAliveUpstream): Promise<void> {
  up.closeIdle();
  expect(await until(() => up.open === 0, 1000), `upstream still has ${up.open} open connections`).toBe(true);
  const closed = await until(() => heldSockets(pid, up.port).length === 0, CLOSE_WITHIN_MS);
  expect(closed, `proxy sockets to the upstream ${CLOSE_WITHIN_MS} ms after it closed them: ${JSON.stringify(tally(heldSockets(pid, up.port)))}`).toBe(true);
}

beforeAll(async () => {
  const ca = await createTestCa();
  tlsUp = await startKeepAliveUpstream(await ca.issue(["*.brokered.test"]));
  plainUp = await startKeepAliveUpstream(undefined, PLAIN_PARALLEL);
  const hosts = await writeHostsFile(Object.fromEntries([...HOSTS, "warm.brokered.test", "plain.test"].map((h) => [h, "127.0.0.1"])));
  proxy = await startProxy({
    policy: {
      mode: "custom",
      allow_domains: ["plain.test"],
      transforms: [{ domain: "*.brokered.test", inject_headers: { "X-Broker-Token": "${env:BROKER_TOKEN}" } }],
    },
    args: ["--hosts", hosts, "--internal-allow", "127.0.0.0/8", "--upstream-ca", ca.certPath],
    env: { BROKER_TOKEN: SECRET },
  });
  pid = proxy.proc.pid!;
  const r = await admin(proxy.admin, "GET", "/v1/ca.pem");
  expect(r.status).toBe(200);
  proxyCa = r.text;
  rmSync(ca.dir, { recursive: true, force: true });
});

afterAll(async () => {
  await proxy?.stop();
  if (proxy) rmSync(proxy.dir, { recursive: true, force: true });
  await tlsUp?.close();
  await plainUp?.close();
});

describe("upstream closes idle keep-alive connections", () => {
  it(`intercepted: after ${HOSTS.length} brokered hosts, the proxy closes every upstream socket the upstream closed (none ESTABLISHED, none CLOSE_WAIT) and its fds return to baseline`, async () => {
    // Warm up (leaf minting, lazy modules, the pool machinery), let the upstream close that connection, then take
    // the baseline. Not asserted here: the assertions below count this connection too if it is left behind.
    expect(await interceptedGet("warm.brokered.test", "/warm")).toMatchObject({ status: 200 });
    tlsUp.closeIdle();
    await until(() => heldSockets(pid, tlsUp.port).length === 0, CLOSE_WITHIN_MS);
    await new Promise((r) => setTimeout(r, 100));
    const baseline = fdCount(pid);
    const acceptedBefore = tlsUp.accepted;
    const requestsBefore = tlsUp.requests.length;

    const results = await inBatches(HOSTS, 10, (h) => interceptedGet(h, `/r/${h}`));
    for (const [i, r] of results.entries()) {
      expect(r.status, `${HOSTS[i]}: ${r.body}`).toBe(200);
      expect(JSON.parse(r.body)).toEqual({ ok: true, url: `/r/${HOSTS[i]}` });
    }

    // Exactly one upstream request per client request, each with the secret injected once (the client's own value replaced).
    const got = tlsUp.requests.slice(requestsBefore);
    expect(got.map((g) => g.url).sort()).toEqual(HOSTS.map((h) => `/r/${h}`).sort());
    for (const g of got) {
      const host = g.url.slice("/r/".length);
      expect(headerValues(g.rawHeaders, "x-broker-token"), g.url).toEqual([SECRET]);
      expect(g.servername, g.url).toBe(host);
      expect(headerValues(g.rawHeaders, "host"), g.url).toEqual([`${host}:${tlsUp.port}`]);
    }

    // The precondition: every client connection is gone, but the proxy keeps one idle TLS connection per host
    // (a pool per verified name), and the upstream keeps them open too.
    expect(tlsUp.accepted - acceptedBefore).toBe(HOSTS.length);
    expect(tlsUp.open).toBe(HOSTS.length);
    // (ESTABLISHED only: a build with the bug also still holds the warm-up connection, in CLOSE_WAIT.)
    expect(await until(() => established(pid, tlsUp.port) === HOSTS.length, 1000), JSON.stringify(tally(heldSockets(pid, tlsUp.port)))).toBe(true);
    expect(fdCount(pid)).toBeGreaterThanOrEqual(baseline + HOSTS.length - 2);

    await expectProxyFollowsClose(tlsUp);
    expect(await until(() => fdCount(pid) <= baseline + 2, 2000), `fds ${fdCount(pid)}, baseline ${baseline}`).toBe(true);

    // A host whose pooled connection was closed is served again, on a fresh connection.
    const acceptedAfter = tlsUp.accepted;
    expect(await interceptedGet(HOSTS[0]!, "/again")).toMatchObject({ status: 200 });
    expect(tlsUp.accepted).toBe(acceptedAfter + 1);
    expect(headerValues(tlsUp.requests.at(-1)!.rawHeaders, "x-broker-token")).toEqual([SECRET]);
  });

  it(`plain http: the proxy closes all ${PLAIN_PARALLEL} pooled connections the upstream closed, and its fds return to baseline`, async () => {
    // Warm up with a full round (fewer requests would wait for the upstream's safety timer), then the baseline.
    const warm = await Promise.all(Array.from({ length: PLAIN_PARALLEL }, (_, i) => plainGet(`/warm/${i}`)));
    for (const r of warm) expect(r.status).toBe(200);
    plainUp.closeIdle();
    await until(() => heldSockets(pid, plainUp.port).length === 0, CLOSE_WITHIN_MS);
    await new Promise((r) => setTimeout(r, 100));
    const baseline = fdCount(pid);
    const acceptedBefore = plainUp.accepted;
    const requestsBefore = plainUp.requests.length;

    const paths = Array.from({ length: PLAIN_PARALLEL }, (_, i) => `/p/${i}`);
    const results = await Promise.all(paths.map((p) => plainGet(p)));
    for (const [i, r] of results.entries()) {
      expect(r.status, r.body).toBe(200);
      expect(JSON.parse(r.body)).toEqual({ ok: true, url: paths[i] });
    }
    expect(plainUp.requests.slice(requestsBefore).map((g) => g.url).sort()).toEqual([...paths].sort());

    // The responses were held until all requests had arrived, so the pool opened one connection per request and keeps them idle.
    expect(plainUp.accepted - acceptedBefore).toBe(PLAIN_PARALLEL);
    expect(plainUp.open).toBe(PLAIN_PARALLEL);
    expect(await until(() => established(pid, plainUp.port) === PLAIN_PARALLEL, 1000), JSON.stringify(tally(heldSockets(pid, plainUp.port)))).toBe(true);
    expect(fdCount(pid)).toBeGreaterThanOrEqual(baseline + PLAIN_PARALLEL - 2);

    await expectProxyFollowsClose(plainUp);
    expect(await until(() => fdCount(pid) <= baseline + 2, 2000), `fds ${fdCount(pid)}, baseline ${baseline}`).toBe(true);
  });
});
