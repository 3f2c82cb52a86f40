// Load client for the tunnel workloads, run as a forked process (its CPU is not the runner's).
// IPC requests {id, cmd, ...} → replies {id, result} or {id, error}. See workloads.mjs for the callers.
//
//   bulk    one tunnel (or direct TCP), timed upload and/or download of N bytes through it
//   rate    a new tunnel per request (CONNECT, 'P' → 'p', close) at fixed concurrency for S seconds
//   hold    open N tunnels (each pinged once, so they are established end to end) and keep them open
//   release close every held tunnel
import net from "node:net";
import { performance } from "node:perf_hooks";

const OP_TIMEOUT_MS = 15_000;

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what} timed out`)), ms); }),
  ]);
}

function connectTcp({ host, port }) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.setNoDelay(true);
    s.once("connect", () => { s.off("error", reject); resolve(s); });
    s.once("error", reject);
  });
}

/**
 * Open a tunnel: direct TCP when proxy is null, else CONNECT through the proxy. Resolves with the socket
 * once the tunnel is up; bytes that arrived after the response header are pushed back (unshift).
 */
async function openTunnel(proxy, target) {
  if (!proxy) return connectTcp(target);
  const s = await connectTcp(proxy);
  const authority = `${target.host}:${target.port}`;
  s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) { if (buf.length > 16384) fail(new Error("CONNECT response header too long")); return; }
      s.off("data", onData); s.off("error", fail); s.off("close", onClose);
      const head = buf.subarray(0, end).toString("latin1");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]);
      if (status !== 200) { s.destroy(); reject(new Error(`CONNECT answered ${head.split("\r\n")[0]}`)); return; }
      const rest = buf.subarray(end + 4);
      if (rest.length) s.unshift(rest);
      resolve(s);
    };
    const fail = (e) => { s.destroy(); reject(e); };
    const onClose = () => reject(new Error("proxy closed the connection before answering CONNECT"));
    s.on("data", onData); s.once("error", fail); s.once("close", onClose);
  });
}

function ping(s) {
  return new Promise((resolve, reject) => {
    const onData = (d) => { if (d.includes(0x70)) { cleanup(); resolve(); } };
    const onErr = (e) => { cleanup(); reject(e); };
    const onClose = () => { cleanup(); reject(new Error("closed before pong")); };
    function cleanup() { s.off("data", onData); s.off("error", onErr); s.off("close", onClose); }
    s.on("data", onData); s.once("error", onErr); s.once("close", onClose);
    s.write("P");
  });
}

function lenHeader(cmd, n) {
  const b = Buffer.alloc(9);
  b.write(cmd, 0, "latin1");
  b.writeBigUInt64BE(BigInt(n), 1);
  return b;
}

/** Upload n bytes; resolves with seconds from the first byte written to the sink's acknowledgement. */
function upload(s, n, chunk) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let left = n;
    const onData = (d) => { if (d.includes(0x4b /* K */)) { cleanup(); resolve((performance.now() - t0) / 1000); } };
    const onErr = (e) => { cleanup(); reject(e); };
    const onClose = () => { cleanup(); reject(new Error(`tunnel closed with ${left} bytes still to send`)); };
    function cleanup() { s.off("data", onData); s.off("error", onErr); s.off("close", onClose); s.off("drain", pump); }
    function pump() {
      while (left > 0) {
        const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= c.length;
        if (!s.write(c)) { s.once("drain", pump); return; }
      }
    }
    s.on("data", onData); s.once("error", onErr); s.once("close", onClose);
    s.write(lenHeader("U", n));
    pump();
  });
}

/** Download n bytes; resolves with seconds from the request to the last byte. */
function download(s, n) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let got = 0;
    const onData = (d) => { got += d.length; if (got >= n) { cleanup(); resolve((performance.now() - t0) / 1000); } };
    const onErr = (e) => { cleanup(); reject(e); };
    const onClose = () => { cleanup(); reject(new Error(`tunnel closed after ${got} of ${n} bytes`)); };
    function cleanup() { s.off("data", onData); s.off("error", onErr); s.off("close", onClose); }
    s.on("data", onData); s.once("error", onErr); s.once("close", onClose);
    s.write(lenHeader("D", n));
  });
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const MiB = 1024 * 1024;

/**
 * Per direction: an untimed warm-up of warmupBytes, then a timed transfer. Its size is what the warm-up rate
 * would move in targetSeconds, clamped to [minBytes, maxBytes]: long enough to average out noise on a fast
 * path, bounded on a slow one.
 */
async function bulk({ proxy, target, warmupBytes, minBytes, maxBytes, targetSeconds, directions, chunkBytes }) {
  const chunk = Buffer.alloc(chunkBytes ?? 64 * 1024, 0x62);
  const s = await withTimeout(openTunnel(proxy, target), OP_TIMEOUT_MS, "tunnel setup");
  try {
    const out = {};
    for (const dir of directions) {
      const fn = dir === "up" ? (n) => upload(s, n, chunk) : (n) => download(s, n);
      const warmSecs = await withTimeout(fn(warmupBytes), OP_TIMEOUT_MS * 4, `${dir} warm-up`);
      const want = (warmupBytes / warmSecs) * targetSeconds;
      const bytes = Math.round(Math.min(maxBytes, Math.max(minBytes, want)) / MiB) * MiB;
      const limit = Math.max(60_000, (bytes / (10 * MiB)) * 1000); // fail if slower than 10 MiB/s
      const secs = await withTimeout(fn(bytes), limit, `${dir} transfer`);
      out[dir] = { bytes, seconds: secs, mibps: bytes / MiB / secs, warmupMiBps: warmupBytes / MiB / warmSecs };
    }
    return out;
  } finally { s.destroy(); }
}

async function rate({ proxy, target, concurrency, seconds }) {
  const lat = [];
  let errors = 0;
  let firstError = null;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  async function worker() {
    while (performance.now() < end) {
      const start = performance.now();
      let s;
      try {
        s = await withTimeout(openTunnel(proxy, target), OP_TIMEOUT_MS, "tunnel setup");
        await withTimeout(ping(s), OP_TIMEOUT_MS, "ping");
        lat.push(performance.now() - start);
      } catch (e) {
        errors++;
        firstError ??= e.message;
        if (errors > 1000 && errors > lat.length) return; // everything fails: stop spinning
      } finally { s?.destroy(); }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return {
    tunnels: lat.length, errors, firstError, seconds: elapsed, perSecond: lat.length / elapsed,
    p50ms: percentile(lat, 50), p99ms: percentile(lat, 99),
  };
}

const held = [];
async function hold({ proxy, target, count, concurrency }) {
  let errors = 0;
  let firstError = null;
  let next = 0;
  const t0 = performance.now();
  async function worker() {
    while (next < count) {
      next++;
      try {
        const s = await withTimeout(openTunnel(proxy, target), OP_TIMEOUT_MS, "tunnel setup");
        s.on("error", () => {});
        held.push(s);
        await withTimeout(ping(s), OP_TIMEOUT_MS, "ping");
      } catch (e) { errors++; firstError ??= e.message; }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const open = held.filter((s) => !s.destroyed).length;
  return { requested: count, open, errors, firstError, ms: performance.now() - t0 };
}

async function release() {
  const n = held.length;
  for (const s of held.splice(0)) s.destroy();
  return { closed: n };
}

const handlers = { bulk, rate, hold, release };

process.on("message", async (msg) => {
  try {
    const fn = handlers[msg.cmd];
    if (!fn) throw new Error(`unknown command ${msg.cmd}`);
    process.send({ id: msg.id, result: await fn(msg) });
  } catch (e) {
    process.send({ id: msg.id, error: e?.message ?? String(e) });
  }
});
process.on("disconnect", () => process.exit(0));
process.send({ ready: true });
