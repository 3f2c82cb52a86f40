#!/usr/bin/env node
// Soak test for the egress proxy (NOT part of `npm test`): 1,000 concurrent idle CONNECT tunnels held open while
// a sustained plain-HTTP request load runs through the same proxy, all on loopback. Reports unexpected errors
// (must be zero), and the proxy's open file descriptors (/proc/PID/fd) and RSS before, during, and for 10 s after
// the load ends (no growth after it ends: every tunnel and connection must be released).
//
// Usage: npm run build && node test/load/soak.mjs [--tunnels 1000] [--load-seconds 30] [--concurrency 32] [--json]
// Bounded: a hard deadline (default 60 s) kills everything and exits 1.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { setInterval, clearInterval } from "node:timers";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, "../../bin/sandbox-egress.js");

const { values: opt } = parseArgs({
  options: {
    tunnels: { type: "string", default: "1000" },
    "load-seconds": { type: "string", default: "30" },
    concurrency: { type: "string", default: "32" },
    "after-seconds": { type: "string", default: "10" },
    deadline: { type: "string", default: "60" },
    json: { type: "boolean", default: false },
  },
});
const TUNNELS = Number(opt.tunnels);
const LOAD_MS = Number(opt["load-seconds"]) * 1000;
const CONCURRENCY = Number(opt.concurrency);
const AFTER_MS = Number(opt["after-seconds"]) * 1000;
const DEADLINE_MS = Number(opt.deadline) * 1000;

const started = Date.now();
const elapsed = () => ((Date.now() - started) / 1000).toFixed(1);
const log = (msg) => {
  if (!opt.json) process.stderr.write(`[${elapsed().padStart(5)} s] ${msg}\n`);
};

/** Every unexpected event, by kind; the run fails unless this stays empty. */
const errors = new Map();
function error(kind, detail) {
  const e = errors.get(kind) ?? { count: 0, first: String(detail) };
  e.count++;
  errors.set(kind, e);
}

// ---- loopback upstreams ------------------------------------------------------------------------------------

const echoSockets = new Set();
const echo = net.createServer({ allowHalfOpen: true }, (s) => {
  echoSockets.add(s);
  s.on("close", () => echoSockets.delete(s));
  s.on("error", (e) => error("echo-upstream-socket", e.code ?? e.message));
  s.pipe(s);
});
const body = Buffer.alloc(512, "x");
// A short keep-alive, hinted to the proxy's upstream pool (undici honours the server's Keep-Alive: timeout), so
// that pooled idle upstream connections are gone well within the 10 s "after" window: whatever fds remain
// then are leaks, not a cache.
const web = http.createServer({ keepAliveTimeout: 3000 }, (req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length });
    res.end(body);
  });
});
await new Promise((r) => echo.listen(0, "127.0.0.1", r));
await new Promise((r) => web.listen(0, "127.0.0.1", r));
const echoPort = echo.address().port;
const webPort = web.address().port;

// ---- the proxy ----------------------------------------------------------------------------------------------

const dir = mkdtempSync(path.join(os.tmpdir(), "egress-soak-"));
const policyFile = path.join(dir, "policy.json");
const hostsFile = path.join(dir, "hosts");
writeFileSync(policyFile, JSON.stringify({ mode: "custom", allow_domains: ["soak.test", "echo.soak.test"] }));
writeFileSync(hostsFile, "127.0.0.1 soak.test\n127.0.0.1 echo.soak.test\n");
const proxyProc = spawn(
  process.execPath,
  [CLI, "proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--policy-file", policyFile, "--ca-dir", path.join(dir, "certs"),
    "--hosts", hostsFile, "--internal-allow", "127.0.0.0/8", "--max-connections", String(TUNNELS + CONCURRENCY + 100), "--log-level", "warn"],
  { stdio: ["ignore", "pipe", "pipe"] },
);
let stderrTail = "";
proxyProc.stderr.on("data", (d) => (stderrTail = (stderrTail + d.toString()).slice(-2000)));
const auditCounts = { allowed: 0, denied: 0 };
const listening = await new Promise((resolve, reject) => {
  const rl = createInterface({ input: proxyProc.stdout });
  rl.on("line", (line) => {
    let l;
    try {
      l = JSON.parse(line);
    } catch {
      return;
    }
    if (l.event === "listening") resolve(l);
    else if (l.event === "egress") auditCounts[l.allowed ? "allowed" : "denied"]++;
    else if (l.level >= 50) error("proxy-logged-error", line.slice(0, 300));
  });
  proxyProc.once("exit", (code) => reject(new Error(`proxy exited with ${code}: ${stderrTail}`)));
});
const [proxyHost, proxyPortText] = [listening.proxy.slice(0, listening.proxy.lastIndexOf(":")), listening.proxy.slice(listening.proxy.lastIndexOf(":") + 1)];
const proxyPort = Number(proxyPortText);
const pid = proxyProc.pid;

const deadline = setTimeout(() => {
  process.stderr.write(`soak: hard deadline of ${DEADLINE_MS / 1000} s reached; aborting\n`);
  proxyProc.kill("SIGKILL");
  process.exit(1);
}, DEADLINE_MS);
deadline.unref();

// ---- measurement --------------------------------------------------------------------------------------------

async function metric(name) {
  try {
    const res = await globalThis.fetch(`http://${listening.admin}/metrics`);
    const m = new RegExp(`^${name} (\\d+)`, "m").exec(await res.text());
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function sample(phase) {
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);
  const s = {
    phase,
    t: Number(elapsed()),
    fds,
    rss_mib: Math.round((rssKb / 1024) * 10) / 10,
    tunnels: await metric("egress_active_tunnels"),
    connections: await metric("egress_active_connections"),
  };
  samples.push(s);
  log(`${phase.padEnd(7)} fds=${String(s.fds).padStart(5)}  rss=${String(s.rss_mib).padStart(6)} MiB  tunnels=${s.tunnels}  connections=${s.connections}`);
  return s;
}
const samples = [];

// ---- tunnels ------------------------------------------------------------------------------------------------

/** Open one CONNECT tunnel and prove it with one echo round trip; resolves with the socket, left idle. */
function openTunnel(i) {
  return new Promise((resolve) => {
    const s = net.connect({ host: proxyHost, port: proxyPort });
    let buf = Buffer.alloc(0);
    let established = false;
    const token = `tunnel-${i}\n`;
    const fail = (kind, detail) => {
      error(kind, detail);
      s.destroy();
      resolve(null);
    };
    const timer = setTimeout(() => fail("tunnel-open-timeout", `tunnel ${i}`), 10_000);
    s.on("error", (e) => {
      clearTimeout(timer);
      if (!established) fail("tunnel-open-error", e.code ?? e.message);
    });
    s.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (!established) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!head.startsWith("HTTP/1.1 200")) return fail("tunnel-refused", head.split("\r\n")[0]);
        established = true;
        buf = buf.subarray(end + 4);
        s.write(token);
      }
      if (buf.toString() === token) {
        clearTimeout(timer);
        s.removeAllListeners("data");
        s.on("data", (more) => s.emit("echo", more));
        resolve(s);
      }
    });
    s.write(`CONNECT echo.soak.test:${echoPort} HTTP/1.1\r\nHost: echo.soak.test:${echoPort}\r\n\r\n`);
  });
}

/** After the load: every tunnel must still carry bytes both ways. */
function pingTunnel(s, i) {
  return new Promise((resolve) => {
    const token = `still-open-${i}\n`;
    let got = "";
    const timer = setTimeout(() => {
      error("tunnel-dead-after-load", `tunnel ${i} got ${JSON.stringify(got)}`);
      resolve();
    }, 10_000);
    const onEcho = (d) => {
      got += d.toString();
      if (got === token) {
        clearTimeout(timer);
        s.off("echo", onEcho);
        resolve();
      }
    };
    s.on("echo", onEcho);
    s.write(token);
  });
}

// ---- plain-HTTP load ----------------------------------------------------------------------------------------

const latencies = [];
let requests = 0;
let loadRunning = true;
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function oneRequest(i) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(
      { host: proxyHost, port: proxyPort, agent, method: i % 10 === 0 ? "POST" : "GET", path: `http://soak.test:${webPort}/r/${i}`, headers: { host: `soak.test:${webPort}` } },
      (res) => {
        let n = 0;
        res.on("data", (d) => (n += d.length));
        res.on("end", () => {
          if (res.statusCode !== 200) error("http-status", `${res.statusCode} ${res.headers["x-egress-denied"] ?? ""}`);
          else if (n !== body.length) error("http-short-body", n);
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
          requests++;
          resolve();
        });
        res.on("error", (e) => {
          error("http-response-error", e.code ?? e.message);
          resolve();
        });
      },
    );
    req.on("error", (e) => {
      error("http-request-error", e.code ?? e.message);
      resolve();
    });
    req.end(i % 10 === 0 ? "payload=soak" : undefined);
  });
}

async function worker(w) {
  for (let i = w; loadRunning; i += CONCURRENCY) await oneRequest(i);
}

// ---- run ----------------------------------------------------------------------------------------------------

log(`proxy pid ${pid} on ${listening.proxy}; ${TUNNELS} tunnels, ${CONCURRENCY} HTTP workers for ${LOAD_MS / 1000} s`);
// Warm up the lazy parts (resolver, undici pool, TLS-free paths) so that "before" is the steady idle state.
for (let i = 0; i < 20; i++) await oneRequest(i);
agent.destroy();
await sleep(500);
const before = await sample("before");

const workers = Array.from({ length: CONCURRENCY }, (_, w) => worker(w));
const tunnels = [];
for (let i = 0; i < TUNNELS; i += 100) {
  const batch = await Promise.all(Array.from({ length: Math.min(100, TUNNELS - i) }, (_, j) => openTunnel(i + j)));
  for (const s of batch) if (s) tunnels.push(s);
}
log(`${tunnels.length} tunnels open and idle`);
const during = [];
const sampler = setInterval(() => {
  sample("during").then((s) => during.push(s), (e) => error("sample", e.message));
}, 5000);
const loadStarted = Date.now();
await sleep(Math.max(0, LOAD_MS - (Date.now() - loadStarted)));
clearInterval(sampler);
during.push(await sample("during"));
loadRunning = false;
await Promise.all(workers);
const loadSeconds = (Date.now() - loadStarted) / 1000;
await Promise.all(tunnels.map((s, i) => pingTunnel(s, i)));
const endOfLoad = await sample("end");

// Release everything the client side holds, then watch the proxy give it all back.
for (const s of tunnels) s.destroy();
agent.destroy();
const after = [];
for (const at of [1000, 5000, AFTER_MS]) {
  await sleep(at - (after.length === 0 ? 0 : [1000, 5000, AFTER_MS][after.length - 1]));
  after.push(await sample(`+${at / 1000}s`));
}

const final = after[after.length - 1];
latencies.sort((a, b) => a - b);
const pct = (p) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN) * 100) / 100;
const peak = during.reduce((m, s) => (s.fds > m.fds ? s : m), endOfLoad);
const checks = {
  "no unexpected errors": errors.size === 0,
  [`all ${TUNNELS} tunnels opened and still echoing after the load`]: tunnels.length === TUNNELS && !errors.has("tunnel-dead-after-load"),
  "fds back to the idle level 10 s after (≤ before + 8)": final.fds <= before.fds + 8,
  "no tunnel or connection left open in the proxy": final.tunnels === 0 && final.connections === 0,
  // The allocator keeps freed pages; "growth" means more than allocator noise (2 MiB) above the end of the load.
  "no RSS growth after the load ended (+10 s ≤ end of load + 2 MiB)": final.rss_mib <= endOfLoad.rss_mib + 2,
};
const report = {
  config: { tunnels: TUNNELS, concurrency: CONCURRENCY, load_seconds: Math.round(loadSeconds * 10) / 10, node: process.version },
  http: { requests, rps: Math.round(requests / loadSeconds), p50_ms: pct(50), p99_ms: pct(99), max_ms: pct(100) },
  audit_lines: auditCounts,
  proxy: { before, peak_during: peak, end_of_load: endOfLoad, after },
  errors: Object.fromEntries(errors),
  checks,
  ok: Object.values(checks).every(Boolean),
};

// ---- teardown -----------------------------------------------------------------------------------------------
proxyProc.kill("SIGTERM");
const exitCode = await Promise.race([new Promise((r) => proxyProc.once("exit", (c) => r(c))), sleep(5000).then(() => "timeout")]);
report.proxy.sigterm_exit = exitCode;
if (exitCode !== 0) {
  report.checks["proxy exits 0 on SIGTERM"] = false;
  report.ok = false;
}
for (const s of echoSockets) s.destroy();
echo.close();
web.closeAllConnections();
web.close();
rmSync(dir, { recursive: true, force: true });

if (opt.json) {
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
} else {
  const row = (s) => `${s.phase.padEnd(8)} ${String(s.fds).padStart(6)} ${String(s.rss_mib).padStart(9)} ${String(s.tunnels).padStart(8)} ${String(s.connections).padStart(12)}`;
  process.stdout.write(
    [
      "",
      `sandbox-egress soak: ${TUNNELS} idle tunnels + ${CONCURRENCY}-way plain-HTTP load for ${report.config.load_seconds} s (${report.config.node})`,
      `HTTP: ${requests} requests, ${report.http.rps} req/s, p50 ${report.http.p50_ms} ms, p99 ${report.http.p99_ms} ms, max ${report.http.max_ms} ms`,
      "",
      "phase       fds  rss(MiB)  tunnels  connections",
      row(before),
      row({ ...peak, phase: "peak" }),
      row(endOfLoad),
      ...after.map(row),
      "",
      `errors: ${errors.size === 0 ? "none" : JSON.stringify(Object.fromEntries(errors))}`,
      ...Object.entries(report.checks).map(([name, ok]) => `${ok ? "PASS" : "FAIL"}  ${name}`),
      "",
    ].join("\n"),
  );
}
clearTimeout(deadline);
process.exit(report.ok ? 0 : 1);
