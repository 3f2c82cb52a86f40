// Control-plane workloads, each with its own table and no peers: the policy decision micro-benchmark (in process,
// against dist/) and the sandbox lifecycle timings of `sandbox-egress control` (local:host runtime). Appended to
// WORKLOADS by workloads.mjs.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { forkHelper, waitReady, ipcCall, stopChild, spawnLogged, waitForLine, tail } from "./proc.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;

// ---- 8. policy decision time vs rule count ---------------------------------------------------------------

const SIZES = [10, 1_000, 100_000];
const DEC = "decide";

const decision = {
  name: "decision",
  title: "Policy decision time vs number of domain rules (decide() from dist/, in process)",
  section: "policy decision micro-benchmark",
  maxRepeat: 1, // rounds × sizes inside one process, median
  describe: (env) => `a forked Node process imports dist/policy/{schema,compile,decide}.js, builds custom policies of ` +
    `${SIZES.map((n) => n.toLocaleString("en-US")).join(", ")} domain rules (60 % exact, 25 % *. wildcards, 10 % in-label ` +
    "globs such as w17-*.g0.org, 5 % deny_domains; plus allow/deny CIDRs, 1 per 100 rules) and times decide() over 13 " +
    "fixed hosts (exact, wildcard and glob hits, denies, misses, a CIDR allow by address, IP literals in allow/deny/none) " +
    `with their resolved addresses given: ${env.decision.rounds} rounds of ${env.decision.ms} ms per size, rotating order, ` +
    "median. Every probe's decision is checked at every size first",
  requires: (env) => (existsSync(path.join(env.repoRoot, "dist", "policy", "decide.js")) ? null : "dist/policy/decide.js missing: run `npm run build`"),
  columns: [{ name: DEC, peer: null, label: "decide() (dist/, in process)" }],
  ratios: [],
  metrics: [
    ...SIZES.map((n) => ({ key: `ns${n}`, label: `ns per decision, ${n.toLocaleString("en-US")} domain rules`, better: "lower", digits: 0 })),
    { key: "ratio", label: "100,000 rules ÷ 10 rules", better: "lower", digits: 2,
      target: { text: "≤ 2×", check: (v) => (v[DEC] == null ? null : v[DEC] <= 2) } },
    { key: "compileMs", label: "parse + compile 100,000 rules (ms)", better: "lower", digits: 0 },
  ],
  async run(env) {
    const child = forkHelper(path.join(here, "decision-bench.mjs"));
    try {
      await waitReady(child);
      const r = await ipcCall(child, { cmd: "run", distDir: path.join(env.repoRoot, "dist"), sizes: SIZES, rounds: env.decision.rounds, ms: env.decision.ms }, 300_000);
      const big = r.sizes[SIZES[SIZES.length - 1]];
      return {
        ...Object.fromEntries(SIZES.map((n) => [`ns${n}`, r.sizes[n].nsPerDecision])),
        ratio: big.nsPerDecision / r.sizes[SIZES[0]].nsPerDecision,
        compileMs: big.parseMs + big.compileMs,
        detail: r,
        notes: [`all ${r.probes} probe decisions as expected at every size; ` +
          SIZES.map((n) => `${n.toLocaleString("en-US")}: ${r.sizes[n].domainRules.toLocaleString("en-US")} domain + ` +
            `${r.sizes[n].cidrRules.toLocaleString("en-US")} CIDR rules`).join(", ")],
      };
    } finally {
      await stopChild(child, 1000);
    }
  },
};

// ---- 9. sandbox lifecycle (sandbox-egress control) -------------------------------------------------------

const LC = "control";

/** True when dist/cli.js has the `control` command (it was being built when this workload was written). */
function controlMissing(env) {
  const cli = path.join(env.repoRoot, "dist", "cli.js");
  if (!existsSync(cli)) return "dist/cli.js missing: run `npm run build`";
  const text = readFileSync(cli, "utf8");
  if (!/case\s+"control"/.test(text) || !existsSync(path.join(env.repoRoot, "dist", "commands", "control.js"))) {
    return "`sandbox-egress control` is not in dist/cli.js (not built yet): lifecycle skipped";
  }
  return null;
}

function api(addr, method, p, body) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: p, timeout: 120_000,
      headers: data ? { "content-type": "application/json", "content-length": data.length } : {} }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => {
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, json, text });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${p} timed out`)));
    req.on("error", reject);
    req.end(data);
  });
}

async function expectStatus(p, want, what) {
  const r = await p;
  if (!want.includes(r.status)) throw new Error(`${what}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  return r.json;
}

/** Poll GET `p` every 10 ms until status.state is `want`; fail on a terminal state or after timeoutMs. */
async function until(addr, p, want, { fail = ["Failed", "Terminated"], timeoutMs = 120_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await expectStatus(api(addr, "GET", p), [200], `GET ${p}`);
    const state = j?.status?.state;
    if (state === want) return j;
    if (fail.includes(state)) throw new Error(`${p} is ${state}: ${j.status.message}`);
    if (Date.now() > deadline) throw new Error(`${p} still ${state} after ${timeoutMs} ms (waiting for ${want})`);
    await sleep(10);
  }
}

/** Pids whose command line contains `needle` (a path only our own children use). */
function pidsMentioning(needle) {
  const out = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try { if (readFileSync(`/proc/${d}/cmdline`, "utf8").includes(needle)) out.push(Number(d)); } catch { /* raced */ }
  }
  return out;
}

const lifecycle = {
  name: "lifecycle",
  title: "Sandbox lifecycle through the control REST (local:host runtime)",
  section: "sandbox lifecycle (sandbox-egress control)",
  maxRepeat: 1,
  describe: (env) => "node bin/sandbox-egress.js control --listen 127.0.0.1:0 --data-dir <tmp>; per iteration (median " +
    `of ${env.lifecycle.iterations}): create = POST /v1/sandboxes {image:{uri:"local:host"}, timeout:600} → GET every 10 ms ` +
    "until Running; pause → Paused; resume → Running; then exec `head -c 104857600 /dev/urandom > /workspace/blob` " +
    "(its own row); snapshot = POST /v1/sandboxes/{id}/snapshots → GET /v1/snapshots/{id} " +
    "until Ready; restore = POST /v1/sandboxes {snapshotId} → Running, then the restored /workspace/blob's size is " +
    "checked by exec; both sandboxes and the snapshot are deleted before the next iteration",
  requires: controlMissing,
  columns: [{ name: LC, peer: null, label: "sandbox-egress control" }],
  ratios: [],
  metrics: [
    { key: "createMs", label: "create → Running (ms)", better: "lower", digits: 0 },
    { key: "pauseMs", label: "pause → Paused (ms)", better: "lower", digits: 0 },
    { key: "resumeMs", label: "resume → Running (ms)", better: "lower", digits: 0 },
    { key: "writeMs", label: "exec: write 100 MiB into /workspace (ms)", better: "lower", digits: 0 },
    { key: "snapshotMs", label: "snapshot of a 100 MiB workspace → Ready (ms)", better: "lower", digits: 0 },
    { key: "restoreMs", label: "restore from the snapshot → Running (ms)", better: "lower", digits: 0 },
  ],
  async run(env) {
    const s = env.lifecycle;
    const dir = path.join(env.tmpDir, `control-${Date.now()}`);
    mkdirSync(dir, { recursive: true });
    const logs = { stdout: path.join(dir, "stdout.log"), stderr: path.join(dir, "stderr.log") };
    // Short: a sandbox's proxy socket lives at DATA/sandboxes/<id>/egress/proxy.sock, and unix socket paths are
    // limited to 107 bytes (the control module refuses a longer one).
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "seb-"));
    const child = spawnLogged(process.execPath, [path.join(env.repoRoot, "bin", "sandbox-egress.js"), "control",
      "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "warn"],
    { stdoutFile: logs.stdout, stderrFile: logs.stderr, cwd: dir });
    const cleanup = [];
    let addr = null;
    try {
      addr = await waitForLine(logs.stdout, (line) => {
        try { const j = JSON.parse(line); return j.event === "listening" && j.api ? j.api : null; } catch { return null; }
      }, { child, what: "sandbox-egress control", timeoutMs: 30_000 });
      const times = { createMs: [], pauseMs: [], resumeMs: [], writeMs: [], snapshotMs: [], restoreMs: [] };
      const timed = async (key, fn) => { const t0 = performance.now(); const r = await fn(); times[key].push(performance.now() - t0); return r; };
      const del = async (p) => { const r = await api(addr, "DELETE", p); return r.status; };
      for (let i = 0; i < s.iterations; i++) {
        const id = await timed("createMs", async () => {
          const j = await expectStatus(api(addr, "POST", "/v1/sandboxes", { image: { uri: "local:host" }, timeout: 600 }), [202], "create");
          cleanup.push(`/v1/sandboxes/${j.id}`);
          await until(addr, `/v1/sandboxes/${j.id}`, "Running");
          return j.id;
        });
        await timed("pauseMs", async () => {
          await expectStatus(api(addr, "POST", `/v1/sandboxes/${id}/pause`), [202], "pause");
          await until(addr, `/v1/sandboxes/${id}`, "Paused");
        });
        await timed("resumeMs", async () => {
          await expectStatus(api(addr, "POST", `/v1/sandboxes/${id}/resume`), [202], "resume");
          await until(addr, `/v1/sandboxes/${id}`, "Running");
        });
        await timed("writeMs", async () => {
          const r = await expectStatus(api(addr, "POST", `/v1/sandboxes/${id}/exec`, {
            command: ["sh", "-c", `head -c ${s.blobBytes} /dev/urandom > /workspace/blob`], timeoutSeconds: 120 }), [200], "exec");
          if (r.exitCode !== 0) throw new Error(`writing the blob failed (${r.exitCode}): ${r.stderr}`);
        });
        const snap = await timed("snapshotMs", async () => {
          const j = await expectStatus(api(addr, "POST", `/v1/sandboxes/${id}/snapshots`, {}), [202], "snapshot");
          cleanup.push(`/v1/snapshots/${j.id}`);
          await until(addr, `/v1/snapshots/${j.id}`, "Ready");
          return j.id;
        });
        const restored = await timed("restoreMs", async () => {
          const j = await expectStatus(api(addr, "POST", "/v1/sandboxes", { snapshotId: snap, timeout: 600 }), [202], "restore");
          cleanup.push(`/v1/sandboxes/${j.id}`);
          await until(addr, `/v1/sandboxes/${j.id}`, "Running");
          return j.id;
        });
        const chk = await expectStatus(api(addr, "POST", `/v1/sandboxes/${restored}/exec`, { command: ["stat", "-c", "%s", "/workspace/blob"] }), [200], "check");
        if (chk.exitCode !== 0 || Number(chk.stdout.trim()) !== s.blobBytes) {
          throw new Error(`the restored sandbox's /workspace/blob is not ${s.blobBytes} bytes: ${JSON.stringify(chk)}`);
        }
        // Sandboxes first (a snapshot can be deleted any time once Ready), so disk use stays bounded.
        for (const p of cleanup.splice(0).reverse()) await del(p);
      }
      const med = (xs) => { const v = [...xs].sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };
      return {
        ...Object.fromEntries(Object.entries(times).map(([k, v]) => [k, med(v)])),
        detail: { api: addr, times },
        notes: [`${s.iterations} iterations; the restored sandbox had the ${s.blobBytes / MiB} MiB blob every time; ` +
          `all ms: ${Object.entries(times).map(([k, v]) => `${k.replace(/Ms$/, "")} ${v.map((x) => x.toFixed(0)).join("/")}`).join(", ")}`],
      };
    } catch (e) {
      throw new Error(`${e.message}\n${tail(logs.stderr, 10)}`.trim());
    } finally {
      // After a failure: delete what is left, so the control process does not have to tear it down on SIGTERM.
      if (addr) for (const p of cleanup.reverse()) await api(addr, "DELETE", p).catch(() => {});
      await stopChild(child, 15_000);
      // Safety net: a sandbox's processes (its proxy, bwrap) that outlived the control process are ours: they
      // name our data dir on their command line. Killed by pid, then the data dir goes.
      for (const pid of pidsMentioning(dataDir)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
};

export const CONTROL_WORKLOADS = [decision, lifecycle];
