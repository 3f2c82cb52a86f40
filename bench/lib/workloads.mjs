// Workloads. Each is { name, title, describe(env), requires(env) → reason|null, metrics[], run(env, inst) }.
// `inst` is a started peer instance, or null for `direct` (then the workload talks to the upstream itself).
// run() returns { <metric key>: number|null, ..., detail: {...}, warnings?: [] }.
//
// A metric is { key, label, unit, better: "higher"|"lower", digits, proxyOnly?, target? } where
// target = { text, check(values) → boolean|null } and values maps peer name → median value.
// To add a workload, append an object to WORKLOADS; run.mjs and report.mjs need no change. Optional fields:
// columns [{name, peer, label, options(env) → peer start options}] (its own columns and table instead of the
// global peer list; peer null = the workload runs itself), ratios [{num, den}] (column names), section, maxRepeat
// (caps the default repeats of a workload that repeats internally), needsHttps (start the shared HTTPS upstream),
// and run(env, inst, column) may return notes[] besides warnings[].
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { forkHelper, waitReady, ipcCall, stopChild, memOf, cpuSecondsOf } from "./proc.mjs";
import { commandExists } from "./peers.mjs";
import { pinProcess, runBulk } from "./bulk-tool.mjs";
import { BROKERING_WORKLOADS } from "./workloads-brokering.mjs";
import { CONTROL_WORKLOADS } from "./workloads-control.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;

/** Run fn() with a fresh load-client process; the client is always stopped afterwards. */
async function withClient(fn) {
  const client = forkHelper(path.join(here, "client.mjs"));
  try {
    await waitReady(client);
    return await fn(client);
  } finally {
    await stopChild(client, 1000);
  }
}

/** CPU seconds the proxy process used while fn() ran (null for direct). */
async function proxyCpu(inst, fn) {
  const pid = inst?.rssPid();
  const c0 = pid ? cpuSecondsOf(pid) : null;
  const t0 = Date.now();
  const result = await fn();
  const c1 = pid ? cpuSecondsOf(pid) : null;
  return { result, cpuSeconds: c0 !== null && c1 !== null ? c1 - c0 : null, wallSeconds: (Date.now() - t0) / 1000 };
}

const proxyOf = (inst) => (inst ? { host: inst.host, port: inst.port } : null);
const se = "sandbox-egress";

// ---- 1. plain HTTP through the proxy (wrk, absolute-form) ----------------------------------------------

function toMs(v, unit) {
  const n = Number(v);
  return unit === "us" ? n / 1000 : unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : NaN;
}

export function parseWrk(text) {
  const num = (re) => { const m = re.exec(text); return m ? Number(m[1]) : null; };
  const lat = (p) => { const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(text); return m ? toMs(m[1], m[2]) : null; };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    rps: num(/^Requests\/sec:\s+([\d.]+)/m),
    requests: num(/^\s*(\d+) requests in/m),
    p50ms: lat(50), p75ms: lat(75), p90ms: lat(90), p99ms: lat(99),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) ?? 0,
    socketErrors: sock ? { connect: +sock[1], read: +sock[2], write: +sock[3], timeout: +sock[4] } : null,
  };
}

function wrk(args) {
  return new Promise((resolve, reject) => {
    execFile("wrk", args, { timeout: 120_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`wrk failed: ${err.message}\n${stdout}${stderr}`.trim()));
      else resolve(stdout);
    });
  });
}

const http = {
  name: "http",
  title: "Plain HTTP, keep-alive, 2-byte responses (wrk)",
  describe: (env) => `wrk -t1 -c${env.http.connections} -d${env.http.seconds}s --latency, ${env.http.warmup}s warm-up; ` +
    "absolute-form GET through the proxy (Lua script sets wrk.path), direct = wrk to the upstream",
  requires: () => (commandExists("wrk") ? null : "wrk not installed"),
  metrics: [
    { key: "rps", label: "req/s", better: "higher", digits: 0,
      target: { text: `${se} ≥ squid`, check: (v) => (v[se] == null || v.squid == null ? null : v[se] >= v.squid) } },
    { key: "p50ms", label: "p50 latency (ms)", better: "lower", digits: 2 },
    { key: "p99ms", label: "p99 latency (ms)", better: "lower", digits: 2,
      target: { text: `${se} ≤ squid`, check: (v) => (v[se] == null || v.squid == null ? null : v[se] <= v.squid) } },
    { key: "cpuCores", label: "proxy CPU (cores)", better: "lower", digits: 2, proxyOnly: true },
  ],
  async run(env, inst) {
    const u = `127.0.0.1:${env.upstream.httpPort}`;
    const script = path.join(env.tmpDir, `wrk-${inst ? "proxy" : "direct"}.lua`);
    // wrk cannot speak to a proxy; an absolute-form request line on a connection to the proxy is exactly
    // what a proxy-aware client sends for plain http (RFC 9112 §3.2.2).
    writeFileSync(script, inst
      ? `wrk.method = "GET"\nwrk.path = "http://${u}/"\nwrk.headers["Host"] = "${u}"\n`
      : `wrk.method = "GET"\nwrk.path = "/"\n`);
    const url = inst ? `http://${inst.host}:${inst.port}/` : `http://${u}/`;
    const base = ["-t1", `-c${env.http.connections}`, "--timeout", "5s", "-s", script];
    if (env.http.warmup > 0) await wrk([...base, `-d${env.http.warmup}s`, url]);
    const { result: out, cpuSeconds, wallSeconds } = await proxyCpu(inst, () => wrk([...base, `-d${env.http.seconds}s`, "--latency", url]));
    const r = parseWrk(out);
    if (!r.rps || !r.requests) throw new Error(`wrk measured nothing:\n${out}`);
    const warnings = [];
    if (r.non2xx > 0) warnings.push(`${r.non2xx} of ${r.requests} responses were not 2xx/3xx`);
    if (r.non2xx >= r.requests) throw new Error(`every response was an error (${r.non2xx} non-2xx)`);
    const se_ = r.socketErrors;
    if (se_ && se_.connect + se_.read + se_.write + se_.timeout > 0) warnings.push(`wrk socket errors ${JSON.stringify(se_)}`);
    return {
      rps: r.rps, p50ms: r.p50ms, p99ms: r.p99ms,
      cpuCores: cpuSeconds == null ? null : cpuSeconds / wallSeconds,
      detail: { ...r, wrkOutput: out }, warnings,
    };
  },
};

// ---- 2. CONNECT bulk throughput -------------------------------------------------------------------------

const connect = {
  name: "connect",
  title: "CONNECT tunnel bulk throughput (1 tunnel)",
  describe: (env) => `per direction ${env.bulk.warmupBytes / MiB} MiB warm-up, then ~${env.bulk.targetSeconds}s worth ` +
    `(${env.bulk.minBytes / MiB}–${env.bulk.maxBytes / MiB} MiB) timed, one connection; ` +
    (env.bulkTool
      ? "C client (bench/native/bulk.c, 256 KiB read/write) → tunnel → C sink/source, separate processes" +
        (env.bulkTool.cores ? `; client and sink pinned to CPU ${env.bulkTool.cores.ends}, the proxy alone on CPU ${env.bulkTool.cores.proxy}` : "")
      : "Node client (64 KiB writes) → tunnel → Node TCP sink/source, separate processes (no C compiler found)") +
    "; up = client→upstream, timed to the sink's ack",
  requires: () => null,
  metrics: [
    { key: "upMiBps", label: "upload (MiB/s)", better: "higher", digits: 0,
      target: { text: `${se} ≥ 1.5× squid and ≥ 0.5× direct`, check: tunnelTarget } },
    { key: "downMiBps", label: "download (MiB/s)", better: "higher", digits: 0,
      target: { text: `${se} ≥ 1.5× squid and ≥ 0.5× direct`, check: tunnelTarget } },
    { key: "cpuSecPerGiB", label: "proxy CPU s per GiB", better: "lower", digits: 2, proxyOnly: true },
  ],
  async run(env, inst) {
    const { warmupBytes, minBytes, maxBytes, targetSeconds } = env.bulk;
    if (env.bulkTool) {
      const cores = env.bulkTool.cores;
      if (cores && inst) pinProcess(inst.rssPid(), cores.proxy);
      const { result, cpuSeconds } = await proxyCpu(inst, () => runBulk(env.bulkTool.bin, {
        target: { host: "127.0.0.1", port: env.bulkTool.port }, proxy: proxyOf(inst),
        warmupBytes, minBytes, maxBytes, targetSeconds, timeoutMs: 300_000, cpus: cores?.ends,
      }));
      const moved = 2 * warmupBytes + result.up.bytes + result.down.bytes;
      return {
        upMiBps: result.up.mibps, downMiBps: result.down.mibps,
        cpuSecPerGiB: cpuSeconds == null ? null : cpuSeconds / (moved / (1024 * MiB)),
        detail: result,
      };
    }
    return withClient(async (client) => {
      const { result, cpuSeconds } = await proxyCpu(inst, () => ipcCall(client, {
        cmd: "bulk", proxy: proxyOf(inst), target: { host: "127.0.0.1", port: env.upstream.tcpPort },
        warmupBytes, minBytes, maxBytes, targetSeconds, directions: ["up", "down"], chunkBytes: 64 * 1024,
      }, 300_000));
      const moved = 2 * warmupBytes + result.up.bytes + result.down.bytes;
      return {
        upMiBps: result.up.mibps, downMiBps: result.down.mibps,
        cpuSecPerGiB: cpuSeconds == null ? null : cpuSeconds / (moved / (1024 * MiB)),
        detail: result,
      };
    });
  },
};

function tunnelTarget(v) {
  if (v[se] == null || v.squid == null || v.direct == null) return null;
  return v[se] >= 1.5 * v.squid && v[se] >= 0.5 * v.direct;
}

// ---- 3. CONNECT setup rate ------------------------------------------------------------------------------

const connectRate = {
  name: "connect-rate",
  title: "CONNECT setup rate (new tunnel per request)",
  describe: (env) => `${env.rate.concurrency} concurrent loops for ${env.rate.seconds}s: TCP connect, CONNECT, 200, ` +
    "1-byte ping/pong through the tunnel, close; direct = TCP connect + ping",
  requires: () => null,
  metrics: [
    { key: "perSecond", label: "tunnels/s", better: "higher", digits: 0 },
    { key: "p50ms", label: "setup+ping p50 (ms)", better: "lower", digits: 2 },
    { key: "p99ms", label: "setup+ping p99 (ms)", better: "lower", digits: 2 },
    { key: "cpuCores", label: "proxy CPU (cores)", better: "lower", digits: 2, proxyOnly: true },
  ],
  async run(env, inst) {
    return withClient(async (client) => {
      const { result, cpuSeconds, wallSeconds } = await proxyCpu(inst, () => ipcCall(client, {
        cmd: "rate", proxy: proxyOf(inst), target: { host: "127.0.0.1", port: env.upstream.tcpPort },
        concurrency: env.rate.concurrency, seconds: env.rate.seconds,
      }, (env.rate.seconds + 60) * 1000));
      if (!result.tunnels) throw new Error(`no tunnel completed (${result.errors} errors; first: ${result.firstError})`);
      const warnings = result.errors ? [`${result.errors} failed tunnels (first: ${result.firstError})`] : [];
      return {
        perSecond: result.perSecond, p50ms: result.p50ms, p99ms: result.p99ms,
        cpuCores: cpuSeconds == null ? null : cpuSeconds / wallSeconds,
        detail: result, warnings,
      };
    });
  },
};

// ---- 4. proxy RSS ---------------------------------------------------------------------------------------

const kib2mib = (k) => (k == null ? null : k / 1024);

const rss = {
  name: "rss",
  title: "Proxy RSS (VmRSS of the proxy / squid worker process)",
  describe: (env) => `fresh proxy: ${env.rss.settle}s after start → just started; ${env.rss.idleSettle}s after start, no ` +
    `traffic → idle (V8 hands back the young generation start-up grew after ~10 s without work); then ` +
    `${env.rss.tunnels} open idle tunnels (each pinged once) → ${env.rss.settle}s settle → with tunnels`,
  requires: () => null,
  proxyOnly: true,
  metrics: [
    { key: "freshMiB", label: "just started (MiB)", better: "lower", digits: 1, proxyOnly: true },
    { key: "idleMiB", label: "idle (MiB)", better: "lower", digits: 1, proxyOnly: true,
      target: { text: `${se} ≤ 60 MiB`, check: (v) => (v[se] == null ? null : v[se] <= 60) } },
    { key: "tunnelsMiB", label: "with 1,000 tunnels (MiB)", better: "lower", digits: 1, proxyOnly: true },
    { key: "deltaMiB", label: "Δ for 1,000 tunnels (MiB)", better: "lower", digits: 1, proxyOnly: true,
      target: { text: `${se} ≤ +50 MiB`, check: (v) => (v[se] == null ? null : v[se] <= 50) } },
  ],
  async run(env, inst) {
    if (!inst) return { freshMiB: null, idleMiB: null, tunnelsMiB: null, deltaMiB: null, detail: { note: "no proxy process" } };
    const pid = inst.rssPid();
    const started = inst.startedAt ?? Date.now();
    const at = (seconds) => sleep(Math.max(0, started + seconds * 1000 - Date.now()));
    await at(env.rss.settle);
    const fresh = memOf(pid);
    await at(env.rss.idleSettle);
    const idle = memOf(pid);
    return withClient(async (client) => {
      const held = await ipcCall(client, {
        cmd: "hold", proxy: proxyOf(inst), target: { host: "127.0.0.1", port: env.upstream.tcpPort },
        count: env.rss.tunnels, concurrency: 50,
      }, 120_000);
      const warnings = held.open < env.rss.tunnels ? [`only ${held.open} of ${env.rss.tunnels} tunnels open (first error: ${held.firstError})`] : [];
      await sleep(env.rss.settle * 1000);
      const loaded = memOf(pid);
      await ipcCall(client, { cmd: "release" }, 30_000);
      await sleep(env.rss.settle * 1000);
      const after = memOf(pid);
      return {
        freshMiB: kib2mib(fresh?.rssKiB), idleMiB: kib2mib(idle?.rssKiB), tunnelsMiB: kib2mib(loaded?.rssKiB),
        deltaMiB: idle && loaded ? kib2mib(loaded.rssKiB - idle.rssKiB) : null,
        detail: { pid, held, fresh, idle, loaded, afterRelease: after }, warnings,
      };
    });
  },
};

// Workloads with their own columns (each its own table): intercepted HTTPS vs mitmproxy, certificate minting,
// RSS over many intercepted hosts (workloads-brokering.mjs); policy decision time, sandbox lifecycle
// (workloads-control.mjs).
export const WORKLOADS = [http, connect, connectRate, rss, ...BROKERING_WORKLOADS, ...CONTROL_WORKLOADS];
