// HTTPS load client for the brokering workloads (intercept, mint, rss-hosts), run as a forked process so its CPU
// is not the runner's. undici (the project's own dependency) as a real client would use it: a ProxyAgent that
// CONNECTs and then speaks TLS to the origin inside the tunnel, keep-alive, http/1.1.
// IPC requests {id, cmd, ...} → replies {id, result} or {id, error}:
//
//   load    N concurrent keep-alive loops for S seconds (after an untimed warm-up) against one URL
//   paired  concurrency 1, alternating blocks of requests to URL A and URL B over two keep-alive connections
//           through the same proxy; per-block medians, so slow drift on a shared machine hits both alike
//   firsts  per name: a new dispatcher (new CONNECT, full TLS handshake, no session reuse), one request, timed;
//           each "cold" name alternates with the same for an already-used ("warm") name
//   sweep   one request per name, each on a new connection, at fixed concurrency (walks the leaf cache). Not
//           undici here: a bare CONNECT + tls.connect (one shared SecureContext) + `Connection: close` GET, so
//           the client spends ~1 ms of CPU per host instead of ~5 and the proxy gets the machine
//
// `via` is {proxy: "http://127.0.0.1:P", ca: [PEM…]} through a proxy, or {proxy: null, ca: [PEM…]} direct (then
// every name resolves to 127.0.0.1, like the proxy's --hosts file).
import net from "node:net";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import { Agent, ProxyAgent, request } from "undici";

const OP_TIMEOUT_MS = 15_000;

function loopbackLookup(_host, opts, cb) {
  if (opts && opts.all) cb(null, [{ address: "127.0.0.1", family: 4 }]);
  else cb(null, "127.0.0.1", 4);
}

function dispatcher(via) {
  const tlsOpts = { ca: via.ca };
  const common = { keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000 };
  if (via.proxy) return new ProxyAgent({ uri: via.proxy, requestTls: tlsOpts, ...common });
  return new Agent({ connect: { ...tlsOpts, lookup: loopbackLookup }, ...common });
}

/** One GET, body read to the end. Resolves with ms; rejects on a non-200. */
async function once(d, url, signal) {
  const t0 = performance.now();
  const res = await request(url, { dispatcher: d, headersTimeout: OP_TIMEOUT_MS, bodyTimeout: OP_TIMEOUT_MS, signal });
  const body = await res.body.text();
  const ms = performance.now() - t0;
  if (res.statusCode !== 200) {
    const err = new Error(`HTTP ${res.statusCode}${res.headers["x-egress-denied"] ? ` (${res.headers["x-egress-denied"]})` : ""}: ${body.slice(0, 200)}`);
    err.status = res.statusCode;
    throw err;
  }
  return ms;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
const median = (xs) => percentile([...xs].sort((a, b) => a - b), 50);

function describe(err) {
  const c = err?.cause;
  return `${err?.code ? `${err.code} ` : ""}${err?.message ?? err}${c ? ` (cause: ${c.code ?? ""} ${c.message ?? c})` : ""}`;
}

/**
 * Warm-up: at least warmupSeconds and at least warmupRequests, whichever ends later, but never longer than
 * warmupMaxSeconds (a JIT-compiled proxy needs a few thousand requests to reach its steady rate; a slow one must
 * not eat the time budget). Then `seconds` timed.
 */
async function load({ id, via, url, concurrency, seconds, warmupSeconds, warmupRequests = 0, warmupMaxSeconds }) {
  const d = dispatcher(via);
  try {
    let errors = 0;
    let firstError = null;
    const run = async (secs, lat, { minRequests = 0, maxSecs = secs } = {}) => {
      const t0 = performance.now();
      const minEnd = t0 + secs * 1000;
      const hardEnd = t0 + Math.max(secs, maxSecs) * 1000;
      let done = 0;
      const more = () => { const now = performance.now(); return now < hardEnd && (now < minEnd || done < minRequests); };
      const worker = async () => {
        while (more()) {
          try {
            const ms = await once(d, url);
            done++;
            lat?.push(ms);
          } catch (e) {
            errors++;
            firstError ??= describe(e);
            if (errors > 200 && errors > done) return;
          }
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      return { seconds: (performance.now() - t0) / 1000, requests: done };
    };
    const warm = warmupSeconds > 0
      ? await run(warmupSeconds, null, { minRequests: warmupRequests, maxSecs: warmupMaxSeconds ?? warmupSeconds })
      : { seconds: 0, requests: 0 };
    const warmupErrors = errors;
    // Tells the runner the timed part starts now (it samples the proxy's CPU here). No `id`: not a reply.
    process.send({ event: "measure-start", for: id });
    const lat = [];
    const { seconds: elapsed } = await run(seconds, lat);
    lat.sort((a, b) => a - b);
    return {
      requests: lat.length, errors: errors - warmupErrors, warmupErrors, firstError, seconds: elapsed,
      warmup: warm,
      rps: lat.length / elapsed, p50ms: percentile(lat, 50), p90ms: percentile(lat, 90), p99ms: percentile(lat, 99),
    };
  } finally {
    await d.destroy().catch(() => {});
  }
}

async function paired({ a, b, rounds, perBlock }) {
  const da = dispatcher(a.via);
  const db = dispatcher(b.via);
  try {
    // Warm both connections (and, for an intercepted host, the leaf cache).
    const WARM = 50;
    for (let i = 0; i < WARM; i++) { await once(da, a.url); await once(db, b.url); }
    const all = { a: [], b: [] };
    const deltas = [];
    for (let r = 0; r < rounds; r++) {
      const block = {};
      // Alternate which side goes first, so neither always follows the other.
      for (const side of r % 2 ? ["b", "a"] : ["a", "b"]) {
        const xs = [];
        for (let i = 0; i < perBlock; i++) xs.push(await once(side === "a" ? da : db, side === "a" ? a.url : b.url));
        all[side].push(...xs);
        block[side] = median(xs);
      }
      deltas.push(block.a - block.b);
    }
    const sa = all.a.sort((x, y) => x - y);
    const sb = all.b.sort((x, y) => x - y);
    return {
      rounds, perBlock,
      a: { requests: sa.length, total: sa.length + WARM, p50ms: percentile(sa, 50), p99ms: percentile(sa, 99) },
      b: { requests: sb.length, total: sb.length + WARM, p50ms: percentile(sb, 50), p99ms: percentile(sb, 99) },
      // Median over rounds of (block median A − block median B): the added latency, drift-cancelled.
      addedP50ms: median(deltas),
      blockDeltasMs: deltas,
    };
  } finally {
    await Promise.all([da.destroy().catch(() => {}), db.destroy().catch(() => {})]);
  }
}

/** A fresh dispatcher, one timed request, then torn down. */
async function fresh(via, url) {
  const d = dispatcher(via);
  try { return await once(d, url); } finally { await d.destroy().catch(() => {}); }
}

async function firsts({ via, names, warmName, port }) {
  const url = (n) => `https://${n}:${port}/`;
  for (let i = 0; i < 5; i++) await fresh(via, url(warmName)); // the warm name's leaf is cached from here on
  const cold = [];
  const warm = [];
  for (const n of names) {
    cold.push(await fresh(via, url(n)));
    warm.push(await fresh(via, url(warmName)));
  }
  const sc = [...cold].sort((x, y) => x - y);
  const sw = [...warm].sort((x, y) => x - y);
  return {
    names: names.length,
    cold: { p50ms: percentile(sc, 50), p99ms: percentile(sc, 99), max: sc[sc.length - 1] },
    warm: { p50ms: percentile(sw, 50), p99ms: percentile(sw, 99), max: sw[sw.length - 1] },
    addedP50ms: percentile(sc, 50) - percentile(sw, 50),
    addedP99ms: percentile(sc, 99) - percentile(sw, 99),
    coldMs: cold, warmMs: warm,
  };
}

/** CONNECT name:port through the proxy, TLS inside (verified against ctx), one GET with Connection: close. */
function bareRequest(proxy, ctx, name, port) {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host: proxy.host, port: proxy.port });
    raw.setNoDelay(true);
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`${name}: timed out`)), OP_TIMEOUT_MS);
    const fail = (e) => { if (!settled) { settled = true; clearTimeout(timer); raw.destroy(); reject(e); } };
    raw.once("error", fail);
    raw.write(`CONNECT ${name}:${port} HTTP/1.1\r\nHost: ${name}:${port}\r\n\r\n`);
    let head = "";
    const onHead = (d) => {
      head += d.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      raw.off("data", onHead);
      if (!/^HTTP\/1\.[01] 200/.test(head)) { fail(new Error(`${name}: CONNECT answered ${head.split("\r\n")[0]}`)); return; }
      raw.pause();
      const s = tls.connect({ socket: raw, servername: name, secureContext: ctx, ALPNProtocols: ["http/1.1"] });
      let body = "";
      s.once("error", fail);
      s.once("secureConnect", () => s.write(`GET / HTTP/1.1\r\nHost: ${name}:${port}\r\nConnection: close\r\n\r\n`));
      s.setEncoding("latin1");
      s.on("data", (x) => { body += x; });
      s.once("close", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (/^HTTP\/1\.1 200/.test(body)) resolve();
        else reject(new Error(`${name}: ${body.split("\r\n")[0] || "closed without a response"}`));
      });
    };
    raw.on("data", onHead);
  });
}

async function sweep({ via, names, port, concurrency }) {
  const u = new URL(via.proxy);
  const proxy = { host: u.hostname, port: Number(u.port) };
  const ctx = tls.createSecureContext({ ca: via.ca });
  let next = 0;
  let ok = 0;
  let errors = 0;
  let firstError = null;
  const t0 = performance.now();
  const worker = async () => {
    while (next < names.length) {
      const n = names[next++];
      try { await bareRequest(proxy, ctx, n, port); ok++; } catch (e) { errors++; firstError ??= describe(e); }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  return { names: names.length, ok, errors, firstError, seconds, perSecond: ok / seconds };
}

const handlers = { load, paired, firsts, sweep };

process.on("message", async (msg) => {
  try {
    const fn = handlers[msg.cmd];
    if (!fn) throw new Error(`unknown command ${msg.cmd}`);
    process.send({ id: msg.id, result: await fn(msg) });
  } catch (e) {
    process.send({ id: msg.id, error: describe(e) });
  }
});
process.on("disconnect", () => process.exit(0));
process.send({ ready: true });
