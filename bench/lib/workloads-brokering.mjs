// Credential-brokering workloads (DESIGN.md "TLS interception", "Performance targets"): intercepted HTTPS with
// header injection vs mitmproxy, certificate minting for new hosts, RSS over many intercepted hosts. Appended to
// WORKLOADS by workloads.mjs. Each declares its own `columns` (peer + start options), so the table compares like
// with like: both interceptors inject the same header into the same HTTPS upstream, and the upstream counts the
// injected values (a sample whose header did not arrive is an error, not a number).
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { forkHelper, waitReady, ipcCall, stopChild, memOf, cpuSecondsOf } from "./proc.mjs";
import { API_HOST, OPAQUE_HOST, WARM_HOST, hostName, writeHosts } from "./tls-fixture.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const SE = "sandbox-egress";
const TUNNEL = "sandbox-egress-tunnel";
const MITM = "mitmproxy";

// ---- shared plumbing ------------------------------------------------------------------------------------

async function withHttpsClient(fn) {
  const client = forkHelper(path.join(here, "https-client.mjs"));
  try {
    await waitReady(client);
    return await fn(client);
  } finally {
    await stopChild(client, 1000);
  }
}

/**
 * The proxy's CPU (cores) during the timed part of a client `load` call: sampled when the client announces the
 * end of its warm-up ({event: "measure-start"}) and when the call returns.
 */
async function cpuDuring(inst, client, fn) {
  const pid = inst?.rssPid();
  let c0 = null;
  let t0 = Date.now();
  const onMsg = (m) => { if (m?.event === "measure-start") { c0 = pid ? cpuSecondsOf(pid) : null; t0 = Date.now(); } };
  client.on("message", onMsg);
  try {
    const result = await fn();
    const c1 = pid ? cpuSecondsOf(pid) : null;
    return { result, cores: c0 !== null && c1 !== null ? (c1 - c0) / ((Date.now() - t0) / 1000) : null };
  } finally {
    client.off("message", onMsg);
  }
}

function httpGet(port, p) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: p, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${p}: HTTP ${res.statusCode}`))));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${p} timed out`)));
    req.on("error", reject);
  });
}

/** The CA a client must trust for an interceptor: its file, or (sandbox-egress) GET /v1/ca.pem. */
async function caOf(inst) {
  for (let i = 0; i < 40; i++) {
    if (inst.caPath && existsSync(inst.caPath)) return readFileSync(inst.caPath, "utf8");
    await sleep(50);
  }
  if (inst.adminPort) return httpGet(inst.adminPort, "/v1/ca.pem");
  throw new Error(`no CA at ${inst.caPath}`);
}

/** One Prometheus sample value from sandbox-egress's /metrics (0 when absent). */
function metricValue(text, name, labels = "") {
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

const upstreamStats = (env, reset = false) => ipcCall(env.https.upstream, { cmd: reset ? "reset" : "stats" }, 10_000);

/**
 * What the upstream saw must match the column: an interceptor injected `Bearer <secret>` exactly once into every
 * request; a tunnel or a direct connection never carries it (the client sends no Authorization).
 */
function checkUpstream(stats, injecting, what) {
  if (stats.requests === 0) throw new Error(`${what}: the upstream received no request`);
  if (injecting) {
    if (stats.injected !== stats.requests) {
      throw new Error(`${what}: header injection broken: of ${stats.requests} requests at the upstream ${stats.injected} carried ` +
        `the injected Authorization (missing ${stats.missing}, wrong value ${stats.wrong}, duplicated ${stats.duplicated})`);
    }
  } else if (stats.missing !== stats.requests) {
    throw new Error(`${what}: ${stats.requests - stats.missing} of ${stats.requests} requests carried an Authorization header`);
  }
  return `upstream verified ${stats.requests.toLocaleString("en-US")} requests (${stats.handshakes.toLocaleString("en-US")} TLS handshakes): ` +
    (injecting ? "every one carried the injected `Authorization: Bearer <secret>` exactly once" : "none carried an Authorization header");
}

const viaProxy = (inst, ca) => ({ proxy: `http://${inst.host}:${inst.port}`, ca: [ca] });

const httpsMissing = (env) => env.httpsMissing ?? (env.https ? null : "HTTPS upstream not started");

/** Policy for the interception columns; `${env:BENCH_SECRET}` is resolved by the proxy from its environment. */
const injectPolicy = (domain) => ({
  mode: "allow-all",
  transforms: [{ domain, inject_headers: { Authorization: "Bearer ${env:BENCH_SECRET}" } }],
});

/** Start options for sandbox-egress intercepting `domain` (hosts file + upstream CA + the secret in its env). */
function seOptions(env, domain, hostsFile) {
  return {
    policy: injectPolicy(domain),
    args: ["--hosts", hostsFile, "--upstream-ca", env.https.caPath],
    env: { BENCH_SECRET: env.https.secret },
  };
}

/** mitmdump options: the same header on every request, upstream verified against the test CA, loopback names. */
function mitmOptions(env) {
  const secretFile = path.join(env.tmpDir, "mitm-authorization.txt");
  if (!existsSync(secretFile)) writeFileSync(secretFile, `Bearer ${env.https.secret}`, { mode: 0o600 });
  return {
    args: [
      "-s", path.join(here, "mitm_hosts.py"),
      "--set", `ssl_verify_upstream_trusted_ca=${env.https.caPath}`,
      // modify_headers: filter ~q (requests), header Authorization, value read from the file (@).
      "-H", `/~q/Authorization/@${secretFile}`,
    ],
  };
}

function hostsFileFor(env, key, names) {
  const file = path.join(env.tmpDir, `hosts-${key}`);
  if (!existsSync(file)) writeHosts(file, names);
  return file;
}

// ---- 5. intercepted HTTPS with header injection ---------------------------------------------------------

const interceptHosts = (env) => hostsFileFor(env, "intercept", [API_HOST, OPAQUE_HOST]);

const intercept = {
  name: "intercept",
  title: "Intercepted HTTPS with header injection (undici ProxyAgent, keep-alive, 2-byte responses)",
  section: "intercepted HTTPS, header injection",
  needsHttps: true,
  maxRepeat: 2,
  describe: (env) => `undici in a forked client, keep-alive, GET https://${API_HOST}/ on a Node HTTPS upstream (test CA); ` +
    `warm-up ≥ ${env.intercept.warmup}s and ≥ ${env.intercept.warmupRequests.toLocaleString("en-US")} requests (at most ` +
    `${env.intercept.warmupMax}s), then ${env.intercept.seconds}s at concurrency 16 and ${env.intercept.seconds}s at 1. ` +
    `sandbox-egress: transform {domain: "${API_HOST}", inject_headers: {Authorization: "Bearer \${env:BENCH_SECRET}"}}, ` +
    "--upstream-ca <test CA>, client trusts GET /v1/ca.pem; mitmproxy: mitmdump -H '/~q/Authorization/@FILE' " +
    "--set ssl_verify_upstream_trusted_ca=<test CA> -s mitm_hosts.py (dials 127.0.0.1 for the test names, keeps the SNI), " +
    `client trusts its confdir CA; opaque tunnel: the same sandbox-egress config, host ${OPAQUE_HOST} (no transform, ` +
    "TLS end to end); direct: undici straight to the upstream. The upstream counts the Authorization values it " +
    "receives. Added p50: concurrency 1, same proxy, " +
    `${env.intercept.rounds} alternating blocks of ${env.intercept.perBlock} requests intercepted vs opaque, median of per-block p50 differences`,
  requires: httpsMissing,
  columns: [
    { name: "direct", peer: "direct", label: "direct HTTPS", short: "direct" },
    { name: SE, peer: SE, label: "sandbox-egress (intercept)", short: "sandbox-egress", options: (env) => seOptions(env, API_HOST, interceptHosts(env)) },
    { name: TUNNEL, peer: SE, label: "sandbox-egress (opaque tunnel)", short: "tunnel", options: (env) => seOptions(env, API_HOST, interceptHosts(env)) },
    { name: MITM, peer: MITM, label: "mitmproxy (intercept)", short: "mitmproxy", options: mitmOptions },
  ],
  ratios: [{ num: SE, den: MITM }, { num: SE, den: TUNNEL }, { num: SE, den: "direct" }],
  metrics: [
    { key: "rps16", label: "req/s, 16 concurrent", better: "higher", digits: 0,
      target: { text: `${SE} ≥ 5× mitmproxy`, check: (v) => (v[SE] == null || v[MITM] == null ? null : v[SE] >= 5 * v[MITM]) } },
    { key: "p50ms16", label: "p50 ms, 16 concurrent", better: "lower", digits: 2 },
    { key: "p99ms16", label: "p99 ms, 16 concurrent", better: "lower", digits: 2 },
    { key: "rps1", label: "req/s, 1 at a time", better: "higher", digits: 0 },
    { key: "p50ms1", label: "p50 ms, 1 at a time", better: "lower", digits: 3 },
    { key: "p99ms1", label: "p99 ms, 1 at a time", better: "lower", digits: 3 },
    { key: "addedP50ms", label: "added p50 over the opaque tunnel, 1 at a time, paired (ms)", better: "lower", digits: 3, ratios: false,
      target: { text: "≤ 1 ms", check: (v) => (v[SE] == null ? null : v[SE] <= 1) } },
    { key: "cpuCores", label: "proxy CPU at 16 concurrent (cores)", better: "lower", digits: 2 },
    { key: "rpsPerCore", label: "req/s per proxy core, 16 concurrent", better: "higher", digits: 0 },
    { key: "injectedPct", label: "requests with the injected header at the upstream (%)", better: "higher", digits: 0, ratios: false },
  ],
  async run(env, inst, col) {
    const s = env.intercept;
    const injecting = col.name === SE || col.name === MITM;
    const host = col.name === TUNNEL ? OPAQUE_HOST : API_HOST;
    const url = `https://${host}:${env.https.port}/`;
    const via = !inst ? { proxy: null, ca: [env.https.caPem] }
      : viaProxy(inst, injecting ? await caOf(inst) : env.https.caPem);
    await upstreamStats(env, true);
    return withHttpsClient(async (client) => {
      const warnings = [];
      const load = async (concurrency, warmup, warmupRequests = 0) => {
        const r = await ipcCall(client, { cmd: "load", via, url, concurrency, seconds: s.seconds, warmupSeconds: warmup,
          warmupRequests, warmupMaxSeconds: s.warmupMax }, (s.seconds + s.warmupMax + 60) * 1000);
        if (!r.requests) throw new Error(`no request completed at concurrency ${concurrency} (${r.errors} errors; first: ${r.firstError})`);
        if (r.errors || r.warmupErrors) warnings.push(`concurrency ${concurrency}: ${r.errors + r.warmupErrors} failed requests (first: ${r.firstError})`);
        return r;
      };
      const { result: c16, cores } = await cpuDuring(inst, client, () => load(16, s.warmup, s.warmupRequests));
      const c1 = await load(1, 0.5);
      const note = checkUpstream(await upstreamStats(env), injecting, col.name);
      let pairedRes = null;
      const notes = [note];
      if (col.name === SE) {
        // The same proxy, the same upstream, one connection each: intercepted vs opaque, alternating blocks.
        await upstreamStats(env, true);
        pairedRes = await ipcCall(client, {
          cmd: "paired", rounds: s.rounds, perBlock: s.perBlock,
          a: { via, url },
          b: { via: viaProxy(inst, env.https.caPem), url: `https://${OPAQUE_HOST}:${env.https.port}/` },
        }, 300_000);
        const st = await upstreamStats(env);
        if (st.injected !== pairedRes.a.total || st.missing !== pairedRes.b.total || st.wrong || st.duplicated) {
          throw new Error(`paired run: expected ${pairedRes.a.total} injected and ${pairedRes.b.total} plain requests at the upstream, got ${JSON.stringify(st)}`);
        }
        notes.push(`paired c=1 (${pairedRes.a.requests} requests each, upstream checked): intercepted p50 ${pairedRes.a.p50ms.toFixed(3)} ms, ` +
          `opaque p50 ${pairedRes.b.p50ms.toFixed(3)} ms`);
      }
      return {
        rps16: c16.rps, p50ms16: c16.p50ms, p99ms16: c16.p99ms,
        rps1: c1.rps, p50ms1: c1.p50ms, p99ms1: c1.p99ms,
        addedP50ms: pairedRes?.addedP50ms ?? null,
        cpuCores: cores,
        // Efficiency: robust to how much of the shared machine the proxy got during its sample.
        rpsPerCore: cores ? c16.rps / cores : null,
        injectedPct: injecting ? 100 : null, // checkUpstream threw otherwise
        detail: { c16, c1, paired: pairedRes },
        notes,
        warnings,
      };
    });
  },
};

// ---- 6. first request to a new host (leaf certificate minted) -------------------------------------------

const mintNames = (n) => Array.from({ length: n }, (_, i) => hostName("h", i + 1));
const mintHosts = (env) => hostsFileFor(env, "mint", [WARM_HOST, ...mintNames(env.mint.names)]);

const mint = {
  name: "mint",
  title: "First request to a new host (interception leaf minted) vs the same to a warm host",
  section: "new host: certificate minting",
  needsHttps: true,
  maxRepeat: 1,
  describe: (env) => `${env.mint.names} distinct names h00001…h${String(env.mint.names).padStart(5, "0")}.brokered.test ` +
    "(hosts file → 127.0.0.1; sandbox-egress transform domain *.brokered.test). Per name: a new undici ProxyAgent " +
    "(new CONNECT, full TLS handshake, no session reuse), one GET, timed; each alternates with the same for " +
    `${WARM_HOST}, whose leaf is cached. Added = cold − warm. A new host also needs a new upstream TLS connection ` +
    "(the warm name may reuse one); direct shows a fresh loopback TLS handshake + request for scale. " +
    "The proxy's leaf counter is checked: one mint per new name",
  requires: httpsMissing,
  columns: [
    { name: "direct", peer: "direct", label: "direct HTTPS (new TLS connection)", short: "direct" },
    { name: SE, peer: SE, label: "sandbox-egress", short: "sandbox-egress", options: (env) => seOptions(env, "*.brokered.test", mintHosts(env)) },
    { name: MITM, peer: MITM, label: "mitmproxy", short: "mitmproxy", options: mitmOptions },
  ],
  ratios: [{ num: SE, den: MITM }],
  metrics: [
    { key: "coldP50ms", label: "new host: first request p50 (ms)", better: "lower", digits: 2 },
    { key: "coldP99ms", label: "new host: first request p99 (ms)", better: "lower", digits: 2 },
    { key: "warmP50ms", label: "warm host, new connection: p50 (ms)", better: "lower", digits: 2 },
    { key: "warmP99ms", label: "warm host, new connection: p99 (ms)", better: "lower", digits: 2 },
    { key: "addedP50ms", label: "added by a new host, p50 (ms)", better: "lower", digits: 2,
      target: { text: "≤ 10 ms", check: (v) => (v[SE] == null ? null : v[SE] <= 10) } },
    { key: "addedP99ms", label: "added by a new host, p99 (ms)", better: "lower", digits: 2,
      target: { text: "≤ 10 ms", check: (v) => (v[SE] == null ? null : v[SE] <= 10) } },
  ],
  async run(env, inst, col) {
    const names = mintNames(env.mint.names);
    const injecting = col.name !== "direct";
    const via = inst ? viaProxy(inst, await caOf(inst)) : { proxy: null, ca: [env.https.caPem] };
    await upstreamStats(env, true);
    const before = col.name === SE ? await httpGet(inst.adminPort, "/metrics") : null;
    const r = await withHttpsClient((client) => ipcCall(client, { cmd: "firsts", via, names, warmName: WARM_HOST, port: env.https.port }, 300_000));
    const notes = [checkUpstream(await upstreamStats(env), injecting, col.name)];
    if (col.name === SE) {
      const after = await httpGet(inst.adminPort, "/metrics");
      const m = (t) => metricValue(t, "egress_leaf_certificates_minted_total", '{purpose="intercept"}');
      const minted = m(after) - m(before);
      if (minted !== names.length + 1) throw new Error(`expected ${names.length + 1} leaves minted (${names.length} names + the warm one), the proxy counted ${minted}`);
      notes.push(`the proxy minted ${minted} leaves (${names.length} new names + 1 warm name), as expected`);
    }
    return {
      coldP50ms: r.cold.p50ms, coldP99ms: r.cold.p99ms, warmP50ms: r.warm.p50ms, warmP99ms: r.warm.p99ms,
      addedP50ms: r.addedP50ms, addedP99ms: r.addedP99ms,
      detail: r, notes,
    };
  },
};

// ---- 7. RSS over many intercepted hosts (bounded leaf cache) --------------------------------------------

const rssNames = (n, phase) => Array.from({ length: n }, (_, i) => hostName(phase === 1 ? "r" : "s", i + 1));
const rssHostsFile = (env) => hostsFileFor(env, "rss", [...rssNames(env.rssHosts.hosts, 1), ...rssNames(env.rssHosts.hosts, 2)]);
const MiB = 1024 * 1024;

/** Open file descriptors of a process (sockets included), or null. */
function fdCount(pid) {
  try { return readdirSync(`/proc/${pid}/fd`).length; } catch { return null; }
}

const TCP_STATES = { "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
  "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING" };

/** The TCP states of a process's sockets, e.g. {ESTABLISHED: 3, CLOSE_WAIT: 3000} (from /proc/PID/fd + /proc/net/tcp*). */
function tcpStates(pid) {
  const inodes = new Set();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try { const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`)); if (m) inodes.add(m[1]); } catch { /* closed meanwhile */ }
    }
  } catch { return null; }
  const out = {};
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try { text = readFileSync(f, "utf8"); } catch { continue; }
    for (const line of text.split("\n").slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length > 9 && inodes.has(c[9])) { const st = TCP_STATES[c[3]] ?? c[3]; out[st] = (out[st] ?? 0) + 1; }
    }
  }
  return out;
}
const fmtStates = (st) => (st ? Object.entries(st).map(([k, v]) => `${v} ${k}`).join(", ") : "unknown");

const rssHosts = {
  name: "rss-hosts",
  title: "Proxy RSS over many distinct intercepted hosts (leaf cache bounded at 1,000)",
  section: "RSS over many intercepted hosts",
  needsHttps: true,
  maxRepeat: 1,
  describe: (env) => `fresh sandbox-egress (transform *.brokered.test), ${env.rssHosts.settle}s settle → idle; then one ` +
    `request to each of ${env.rssHosts.hosts.toLocaleString("en-US")} distinct hosts (each on a new connection: bare ` +
    `CONNECT + TLS + GET with Connection: close, ${env.rssHosts.concurrency} at a time, so every one mints a leaf) → ` +
    `settle → RSS; then ${env.rssHosts.hosts.toLocaleString("en-US")} further distinct hosts → RSS again. Plateau = the ` +
    "second batch adds ≤ 10 MiB (a leaf cache bounded at 1,000 should hold RSS flat once full). The upstream keeps idle " +
    "connections open for 120 s (like many servers); at the end it closes them (closeIdleConnections) and RSS is read " +
    "once more, which separates memory held by idle upstream connections from the rest. Heap: the proxy's /metrics " +
    "(nodejs_heap_size_used_bytes); fds: /proc/PID/fd",
  requires: httpsMissing,
  columns: [
    { name: SE, peer: SE, label: "sandbox-egress", options: (env) => seOptions(env, "*.brokered.test", rssHostsFile(env)) },
  ],
  ratios: [],
  metrics: [
    { key: "idleMiB", label: "RSS idle (MiB)", better: "lower", digits: 1 },
    { key: "firstMiB", label: "RSS after the first batch of hosts (MiB)", better: "lower", digits: 1 },
    { key: "secondMiB", label: "RSS after the second batch (MiB)", better: "lower", digits: 1 },
    { key: "growthMiB", label: "RSS growth over the second batch (MiB)", better: "lower", digits: 1,
      target: { text: "plateau: ≤ 10 MiB", check: (v) => (v[SE] == null ? null : v[SE] <= 10) } },
    { key: "closedMiB", label: "RSS after the upstream closed its idle connections (MiB)", better: "lower", digits: 1 },
    { key: "heapFirstMiB", label: "JS heap used after the first batch (MiB)", better: "lower", digits: 1 },
    { key: "heapSecondMiB", label: "JS heap used after the second batch (MiB)", better: "lower", digits: 1 },
    { key: "fdsFirst", label: "open fds after the first batch", better: "lower", digits: 0 },
    { key: "fdsSecond", label: "open fds after the second batch", better: "lower", digits: 0 },
    { key: "hostsPerSecond", label: "new hosts per second (sweep)", better: "higher", digits: 0 },
    { key: "proxyMsPerHost", label: "proxy CPU per new host (ms)", better: "lower", digits: 2 },
  ],
  async run(env, inst) {
    const s = env.rssHosts;
    const pid = inst.rssPid();
    const via = viaProxy(inst, await caOf(inst));
    const heap = async () => metricValue(await httpGet(inst.adminPort, "/metrics"), "egress_process_nodejs_heap_size_used_bytes") / MiB;
    await sleep(s.settle * 1000);
    const idle = memOf(pid);
    await upstreamStats(env, true);
    const warnings = [];
    const points = [];
    const cpu0 = cpuSecondsOf(pid);
    const step = Math.max(250, Math.floor(s.hosts / 10));
    return withHttpsClient(async (client) => {
      const batch = async (phase) => {
        const names = rssNames(s.hosts, phase);
        let ok = 0;
        let secs = 0;
        let errors = 0;
        let firstError = null;
        for (let i = 0; i < names.length; i += step) {
          const r = await ipcCall(client, { cmd: "sweep", via, names: names.slice(i, i + step), port: env.https.port, concurrency: s.concurrency }, 600_000);
          if (!r.ok) throw new Error(`batch ${phase}: no request succeeded (first error: ${r.firstError})`);
          errors += r.errors;
          firstError ??= r.firstError;
          ok += r.ok;
          secs += r.seconds;
          points.push({ hosts: (phase - 1) * s.hosts + Math.min(i + step, names.length), rssKiB: memOf(pid)?.rssKiB ?? null, fds: fdCount(pid), perSecond: r.perSecond });
        }
        if (errors) warnings.push(`batch ${phase}: ${errors} of ${names.length} requests failed (first: ${firstError})`);
        await sleep(s.settle * 1000);
        return { ok, errors, secs, mem: memOf(pid), fds: fdCount(pid), tcp: tcpStates(pid), heapMiB: await heap() };
      };
      const first = await batch(1);
      const second = await batch(2);
      const cpuSecs = cpuSecondsOf(pid) - cpu0;
      const metrics = await httpGet(inst.adminPort, "/metrics");
      const minted = metricValue(metrics, "egress_leaf_certificates_minted_total", '{purpose="intercept"}');
      const stats = await upstreamStats(env);
      // Now let the upstream end its idle keep-alive connections, as a server's idle timeout would.
      await ipcCall(env.https.upstream, { cmd: "closeIdle" }, 10_000);
      await sleep(Math.max(2, s.settle) * 1000);
      const closed = { mem: memOf(pid), fds: fdCount(pid), tcp: tcpStates(pid), heapMiB: await heap() };
      const notes = [checkUpstream(stats, true, SE),
        `${minted.toLocaleString("en-US")} leaves minted for ${(2 * s.hosts).toLocaleString("en-US")} hosts; ` +
        `every ${step.toLocaleString("en-US")} hosts RSS MiB / open fds / hosts per s: ` +
        points.map((p) => `${(p.rssKiB / 1024).toFixed(0)}/${p.fds}/${p.perSecond.toFixed(0)}`).join(" "),
        `proxy's TCP sockets after the second batch: ${fmtStates(second.tcp)}`,
        `after the upstream closed its idle connections: RSS ${(closed.mem.rssKiB / 1024).toFixed(0)} MiB, ${closed.fds} fds, ` +
        `heap ${closed.heapMiB.toFixed(0)} MiB; TCP sockets: ${fmtStates(closed.tcp)}`];
      const kib = (m) => (m?.rssKiB == null ? null : m.rssKiB / 1024);
      return {
        idleMiB: kib(idle), firstMiB: kib(first.mem), secondMiB: kib(second.mem),
        growthMiB: first.mem && second.mem ? (second.mem.rssKiB - first.mem.rssKiB) / 1024 : null,
        closedMiB: kib(closed.mem),
        heapFirstMiB: first.heapMiB, heapSecondMiB: second.heapMiB,
        fdsFirst: first.fds, fdsSecond: second.fds,
        hostsPerSecond: (first.ok + second.ok) / (first.secs + second.secs),
        proxyMsPerHost: cpuSecs == null ? null : (cpuSecs * 1000) / (first.ok + second.ok),
        detail: { idle, first, second, closed, points, minted, upstream: stats }, notes, warnings,
      };
    });
  },
};

export const BROKERING_WORKLOADS = [intercept, mint, rssHosts];
