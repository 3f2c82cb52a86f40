#!/usr/bin/env node
// sandbox-egress side-by-side bench: direct vs sandbox-egress vs squid vs tinyproxy (vs mitmproxy for intercepted
// HTTPS), all on loopback. See bench/README.md.
// Usage: node bench/run.mjs [--quick] [--only http,connect,connect-rate,rss,intercept,mint,rss-hosts,decision,lifecycle]
//                           [--skip WORKLOAD,…]
//                           [--peers direct,sandbox-egress,squid,tinyproxy,mitmproxy]
//                           [--repeat N] [--out DIR] [--no-install] [--keep-tmp] [--quiet-wait S]
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { buildBulkTool, corePlan, startBulkServer } from "./lib/bulk-tool.mjs";
import {
  installExitHandlers, onExitSync, forkHelper, waitReady, stopChild, procSnapshot, interference,
} from "./lib/proc.mjs";
import { createTlsFixture, opensslMissing } from "./lib/tls-fixture.mjs";
import { PEERS, DEFAULT_PEERS, commandExists } from "./lib/peers.mjs";
import { WORKLOADS } from "./lib/workloads.mjs";
import { machineInfo, aggregate, writeReport } from "./lib/report.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "..");
const MiB = 1024 * 1024;

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    skip: { type: "string" },
    peers: { type: "string" },
    repeat: { type: "string" },
    out: { type: "string", default: path.join(here, "results") },
    "no-install": { type: "boolean", default: false },
    "keep-tmp": { type: "boolean", default: false },
    "quiet-wait": { type: "string", default: "0" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (opt.help) {
  process.stdout.write(`usage: node bench/run.mjs [--quick] [--only ${WORKLOADS.map((w) => w.name).join(",")}] [--skip W,…]
       [--peers ${Object.keys(PEERS).join(",")}] [--repeat N] [--out DIR] [--no-install] [--keep-tmp]
       [--quiet-wait S]   before each sample, wait up to S s for other processes to go quiet (shared machines)
Default peers: ${DEFAULT_PEERS.join(",")}; workloads with their own columns (intercept, mint, …) run theirs
(mitmproxy included) unless --peers is given. Writes DIR/latest.json and DIR/latest.md (default bench/results).\n`);
  process.exit(0);
}

const quick = opt.quick;
// Time budget for the whole run; anything that would start after it is skipped (and says so).
// Quick ≈ 3-4 min, full ≈ 15-16 min on the 2-core box this was tuned on (bench/README.md "Time"); the bounds are hard caps.
const budgetSeconds = quick ? 300 : 1200;
const settings = quick
  ? { http: { connections: 32, seconds: 3, warmup: 1 }, bulk: { warmupBytes: 16 * MiB, minBytes: 64 * MiB, maxBytes: 1024 * MiB, targetSeconds: 1 },
      rate: { concurrency: 16, seconds: 3 }, rss: { tunnels: 1000, settle: 1, idleSettle: 15 }, repeat: 1,
      // Brokering / control workloads, quick: a look, not a decision (rss-hosts: 1,500 + 1,500 hosts, still above the
      // 1,000-leaf cache bound; lifecycle: 2 iterations).
      intercept: { warmup: 2, warmupRequests: 3_000, warmupMax: 6, seconds: 2, rounds: 8, perBlock: 30 }, mint: { names: 100 },
      rssHosts: { hosts: 1_500, concurrency: 16, settle: 1 }, decision: { rounds: 3, ms: 100 },
      lifecycle: { iterations: 2, blobBytes: 100 * MiB } }
  : { http: { connections: 32, seconds: 10, warmup: 2 }, bulk: { warmupBytes: 64 * MiB, minBytes: 512 * MiB, maxBytes: 4096 * MiB, targetSeconds: 3 },
      rate: { concurrency: 16, seconds: 8 }, rss: { tunnels: 1000, settle: 2, idleSettle: 15 }, repeat: 3,
      // Full: rss-hosts walks 10,000 + 10,000 distinct hosts (10× the leaf cache bound each); at the proxy's current
      // ~65-120 new hosts/s here that alone is 3-5 minutes (README "Time"; --skip rss-hosts to leave it out).
      intercept: { warmup: 3, warmupRequests: 4_000, warmupMax: 8, seconds: 3, rounds: 16, perBlock: 40 }, mint: { names: 200 },
      rssHosts: { hosts: 10_000, concurrency: 16, settle: 2 }, decision: { rounds: 5, ms: 300 },
      lifecycle: { iterations: 5, blobBytes: 100 * MiB } };
const repeat = opt.repeat ? Math.max(1, Number(opt.repeat)) : settings.repeat;
/** Repeats for one workload: a workload that repeats internally (median of its own rounds) caps the default. */
const repeatsFor = (w) => (opt.repeat || w.maxRepeat == null ? repeat : Math.min(repeat, w.maxRepeat));

function pickList(arg, all, what) {
  if (!arg) return null;
  const names = arg.split(",").map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!all.includes(n)) throw new Error(`unknown ${what} "${n}" (known: ${all.join(", ")})`);
  return names;
}
const workloads = (() => {
  const names = pickList(opt.only, WORKLOADS.map((w) => w.name), "workload");
  const skip = pickList(opt.skip, WORKLOADS.map((w) => w.name), "workload") ?? [];
  return (names ? WORKLOADS.filter((w) => names.includes(w.name)) : WORKLOADS).filter((w) => !skip.includes(w.name));
})();
const peerNames = pickList(opt.peers, Object.keys(PEERS), "peer") ?? DEFAULT_PEERS;
const peersGiven = Boolean(opt.peers);

/**
 * The columns of one workload: its own `columns` ({name, peer, label?, options?}; peer null = the workload runs
 * everything itself), filtered by --peers when given; else one column per selected peer.
 */
function columnsOf(w) {
  if (!w.columns) return peerNames.map((p) => ({ name: p, peer: p }));
  return w.columns.filter((c) => c.peer == null || !peersGiven || peerNames.includes(c.peer));
}

// A sample during which processes outside the bench used more than this many cores is flagged.
const FOREIGN_CPU_WARN = 0.1;

const quietWait = Math.max(0, Number(opt["quiet-wait"]) || 0);

/** Wait (up to maxSeconds) for a 0.5 s window in which processes outside the bench stay under the threshold. */
async function waitQuiet(maxSeconds) {
  const until = Date.now() + maxSeconds * 1000;
  while (Date.now() < until) {
    const a = procSnapshot();
    await sleep(500);
    if ((interference(a, procSnapshot())?.foreignCores ?? 0) <= FOREIGN_CPU_WARN) return;
  }
}

const log = (msg) => process.stderr.write(`${msg}\n`);
const t0 = Date.now();
const elapsed = () => (Date.now() - t0) / 1000;

// ---- tools ----------------------------------------------------------------------------------------------

const TOOLS = [["squid", "squid"], ["tinyproxy", "tinyproxy"], ["wrk", "wrk"], ["mitmdump", "mitmproxy"], ["openssl", "openssl"]];

function ensureTools() {
  const missing = TOOLS.filter(([cmd]) => !commandExists(cmd)).map(([, pkg]) => pkg);
  if (!missing.length) return [];
  if (opt["no-install"]) return [`not installed (--no-install): ${missing.join(", ")}`];
  if (process.getuid?.() !== 0) return [`not installed and not root, so not installing: ${missing.join(", ")} (apt-get install -y ${missing.join(" ")})`];
  log(`bench: installing ${missing.join(", ")} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const lock = ["-o", "DPkg::Lock::Timeout=300"];
  try {
    execFileSync("apt-get", [...lock, "update"], { stdio: ["ignore", 2, 2], env, timeout: 600_000 });
    execFileSync("apt-get", [...lock, "install", "-y", "--no-install-recommends", ...missing], { stdio: ["ignore", 2, 2], env, timeout: 900_000 });
    return [];
  } catch (e) {
    return [`apt-get install ${missing.join(" ")} failed: ${e.message.split("\n")[0]}`];
  }
}

// ---- main -----------------------------------------------------------------------------------------------

async function main() {
  installExitHandlers();
  const warnings = ensureTools();
  const tmpDir = mkdtempSync(path.join(os.tmpdir(), "sandbox-egress-bench-"));
  const ctx = { repoRoot, tmpDir, logLevel: "warn", peerArgs: {} };
  let keepTmp = opt["keep-tmp"];
  let tmpHandled = false;
  // Interrupted runs (SIGINT, uncaught error) remove the temp dir too, unless asked to keep it.
  onExitSync(() => { if (!tmpHandled && !keepTmp) rmSync(tmpDir, { recursive: true, force: true }); });
  const upstreams = [];

  const report = {
    schema: 2, mode: quick ? "quick" : "full", startedAt: new Date(t0).toISOString(), durationSeconds: 0,
    options: { repeat, budgetSeconds, quietWait, settings, peers: peerNames, workloads: workloads.map((w) => w.name) },
    machine: machineInfo(), tools: {}, peers: {}, peerOrder: peerNames, workloads: [], warnings,
  };

  try {
    report.tools.wrk = commandExists("wrk") ? (() => {
      try { return execFileSync("wrk", ["-v"], { stdio: ["ignore", "pipe", "pipe"] }).toString().split("\n")[0]; }
      catch (e) { return `${e.stdout ?? ""}`.split("\n")[0] || "wrk"; }
    })() : null;

    // Every peer a selected workload will start: the selected set plus the peers of workloads' own columns.
    const checkPeers = [...new Set([...peerNames, ...workloads.flatMap((w) => columnsOf(w).map((c) => c.peer).filter(Boolean))])];
    for (const name of checkPeers) {
      const peer = PEERS[name];
      const c = peer.check(ctx);
      report.peers[name] = { available: c.ok, reason: c.reason ?? null, version: c.ok ? peer.version(ctx) : null };
      if (c.warning) { report.peers[name].warning = c.warning; warnings.push(`${name}: ${c.warning}`); }
      log(`bench: peer ${name}: ${c.ok ? report.peers[name].version : `not available (${c.reason})`}`);
    }

    // Upstreams: separate processes, started once, shared by every peer and workload.
    const httpUp = forkHelper(path.join(here, "lib", "upstream.mjs"), ["http"]);
    const tcpUp = forkHelper(path.join(here, "lib", "upstream.mjs"), ["tcp"]);
    upstreams.push(httpUp, tcpUp);
    const [h, t] = await Promise.all([waitReady(httpUp), waitReady(tcpUp)]);
    const env = { ...settings, quick, tmpDir, repoRoot, upstream: { httpPort: h.port, tcpPort: t.port } };
    // CONNECT bulk throughput: the C client/server where a compiler is present (see bench/native/bulk.c).
    if (workloads.some((w) => w.name === "connect")) {
      const tool = buildBulkTool(tmpDir);
      if (tool.bin) {
        const cores = corePlan();
        const srv = await startBulkServer(tool.bin, cores?.ends);
        upstreams.push(srv.child);
        env.bulkTool = { bin: tool.bin, port: srv.port, cores };
        report.tools.bulk = `bench/native/bulk.c (${tool.compiler} -O2)` +
          (cores ? `; client and sink on CPU ${cores.ends}, the proxy under test alone on CPU ${cores.proxy} (taskset)` : "; unpinned");
        log(`bench: bulk source/sink (C) 127.0.0.1:${srv.port}`);
      } else {
        report.tools.bulk = `Node client (${tool.missing})`;
        warnings.push(`connect: ${tool.missing}; the Node bulk client is used and sets the pace (README "Performance")`);
      }
    }
    log(`bench: upstream http 127.0.0.1:${h.port}, tcp 127.0.0.1:${t.port}; mode ${report.mode}, repeat ${repeat}, budget ${budgetSeconds}s`);

    // The brokering workloads share one HTTPS upstream whose certificate comes from a throwaway CA (openssl), and
    // one random secret that the proxies inject and the upstream checks for.
    if (workloads.some((w) => w.needsHttps)) {
      const missing = opensslMissing();
      if (missing) env.httpsMissing = missing;
      else {
        const tls = createTlsFixture(path.join(tmpDir, "upstream-tls"));
        const secret = `bench-${randomBytes(12).toString("hex")}`;
        const httpsUp = forkHelper(path.join(here, "lib", "upstream.mjs"), ["https", tls.certPath, tls.keyPath],
          { env: { ...process.env, BENCH_SECRET: secret } });
        upstreams.push(httpsUp);
        const hs = await waitReady(httpsUp);
        env.https = { port: hs.port, caPath: tls.caPath, caPem: tls.caPem, secret, upstream: httpsUp };
        log(`bench: upstream https 127.0.0.1:${hs.port} (test CA ${tls.caPath})`);
      }
    }

    for (const w of workloads) {
      const cols = columnsOf(w);
      const colNames = cols.map((c) => c.name);
      const wRepeat = repeatsFor(w);
      const entry = { name: w.name, title: w.title, description: w.describe(env), metrics: w.metrics, results: {}, repeat: wRepeat };
      if (w.columns) {
        entry.columns = cols.map((c) => ({ name: c.name, peer: c.peer ?? null, label: c.label ?? c.name, short: c.short ?? c.label ?? c.name }));
        entry.ratios = (w.ratios ?? []).filter((q) => colNames.includes(q.num) && colNames.includes(q.den));
        entry.section = w.section ?? w.title;
      }
      report.workloads.push(entry);
      const missing = w.requires(env);
      for (const c of cols) {
        const pr = c.peer ? report.peers[c.peer] : { available: true };
        if (missing) entry.results[c.name] = { skipped: true, reason: missing };
        else if (!pr.available) entry.results[c.name] = { skipped: true, reason: pr.reason };
        else if (w.proxyOnly && c.peer && PEERS[c.peer].kind === "direct") entry.results[c.name] = { skipped: true, reason: null };
        else entry.results[c.name] = { samples: [] };
      }
      if (missing) log(`bench: [${w.name}] skipped: ${missing}`);
      for (let rep = 0; rep < wRepeat; rep++) {
        // Rotate the peer order between repeats so slow drift (thermal, page cache) does not favour one peer.
        const order = cols.slice(rep % cols.length).concat(cols.slice(0, rep % cols.length));
        for (const col of order) {
          const name = col.name;
          const r = entry.results[name];
          if (r.skipped) continue;
          if (elapsed() > budgetSeconds) {
            r.samples.push({ error: `skipped: time budget of ${budgetSeconds}s exhausted` });
            continue;
          }
          const label = `[${w.name}] ${name}${wRepeat > 1 ? ` #${rep + 1}` : ""}`;
          let inst = null;
          const s0 = Date.now();
          try {
            if (col.peer) inst = await PEERS[col.peer].start(ctx, col.options?.(env) ?? {});
            if (quietWait > 0) await waitQuiet(quietWait);
            const snap0 = procSnapshot();
            const res = await w.run(env, inst, col);
            const noise = interference(snap0, procSnapshot());
            const { detail, warnings: ws = [], notes: ns = [], ...values } = res;
            if (noise && noise.foreignCores > FOREIGN_CPU_WARN) {
              ws.push(`other processes used ${noise.foreignCores.toFixed(2)} cores meanwhile ` +
                `(${noise.foreignTop.map((p) => `${p.comm} ${p.cores.toFixed(2)}`).join(", ")})`);
            }
            r.samples.push({ values, detail, warnings: ws, notes: ns, interference: noise, seconds: (Date.now() - s0) / 1000 });
            log(`${label}: ${w.metrics.map((m) => `${m.key}=${values[m.key] == null ? "-" : Number(values[m.key]).toFixed(m.digits)}`).join(" ")}` +
              `${ws?.length ? `  (warning: ${ws.join("; ")})` : ""}`);
          } catch (e) {
            keepTmp = true;
            const more = inst?.failureContext?.() ?? "";
            r.samples.push({ error: `${e.message}${more ? `\n${more}` : ""}` });
            log(`${label}: ERROR ${e.message}${more ? `\n${more}` : ""}`);
          } finally {
            if (inst) await inst.stop();
          }
        }
      }
      for (const name of colNames) {
        const r = entry.results[name];
        if (!r.skipped) r.median = aggregate(w, r.samples);
      }
    }
  } finally {
    for (const u of upstreams) await stopChild(u, 1000);
    report.durationSeconds = elapsed();
    report.machine.loadAvgAtEnd = os.loadavg().map((x) => Number(x.toFixed(2)));
    report.finishedAt = new Date().toISOString();
    tmpHandled = true;
    if (keepTmp) warnings.push(`peer configs and logs kept in ${tmpDir}`);
    else rmSync(tmpDir, { recursive: true, force: true });
  }

  const md = writeReport(report, opt.out);
  process.stdout.write(`\n${md}\n`);
  log(`bench: wrote ${path.join(opt.out, "latest.json")} and latest.md in ${elapsed().toFixed(0)} s`);
}

main().then(
  () => process.exit(0),
  (e) => { log(`bench: failed: ${e?.stack ?? e}`); process.exit(1); },
);
