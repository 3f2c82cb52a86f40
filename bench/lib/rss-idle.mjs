#!/usr/bin/env node
// Idle RSS of a freshly started proxy (DESIGN.md "Performance targets": ≤ 60 MiB idle), median of several starts,
// for each policy given. Starts the built CLI (`npm run build` first) exactly as a sidecar would, waits for the
// listening line, settles, and reads VmRSS from /proc/PID/status (the same reading as the `rss` bench workload).
//
//   node bench/lib/rss-idle.mjs [--runs 5] [--settle 2] [--policy policies/default.json]... [--json]
//                               [--node-arg FLAG]...   (extra node flags, to try V8 options)
//
// Default policies: policies/default.json and policies/openai-brokering.json (its ${env:…} secrets get dummy
// values). Also prints the thread count and the time to the listening line; --detail adds smaps_rollup fields.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { spawnLogged, stopChild, waitForLine, memOf, installExitHandlers, tail } from "./proc.mjs";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "5" },
    settle: { type: "string", default: "2" },
    policy: { type: "string", multiple: true },
    "node-arg": { type: "string", multiple: true },
    json: { type: "boolean", default: false },
    detail: { type: "boolean", default: false },
  },
});
const runs = Number(values.runs);
const settleMs = Number(values.settle) * 1000;
const policies = values.policy ?? ["policies/default.json", "policies/openai-brokering.json"];
const nodeArgs = values["node-arg"] ?? [];

installExitHandlers();

/** Dummy values for every ${env:NAME} the policy names, so a brokering policy loads. */
function envFor(policyFile) {
  const env = { ...process.env };
  for (const m of readFileSync(policyFile, "utf8").matchAll(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g)) env[m[1]] = "dummy-value";
  return env;
}

function threadsOf(pid) {
  try { return Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]); } catch { return null; }
}

function rollup(pid) {
  try {
    const out = {};
    for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").split("\n")) {
      const m = /^(Rss|Anonymous|Private_Clean|Private_Dirty|Shared_Clean):\s+(\d+)/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  } catch { return null; }
}

async function once(policyFile) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rss-idle-"));
  const logs = { stdout: path.join(dir, "stdout.log"), stderr: path.join(dir, "stderr.log") };
  // A copy: the proxy keeps its revision counter in a file beside the policy, which must not land in the repo.
  const policy = path.join(dir, path.basename(policyFile));
  copyFileSync(path.resolve(repoRoot, policyFile), policy);
  // The CA exists before the measured start, as for every sandbox's proxy (the runtime shares one CA directory):
  // creating it is a one-off that loads the certificate encoder, which a sidecar start does not.
  const ca = path.join(dir, "ca");
  execFileSync(process.execPath, [path.join(repoRoot, "bin", "sandbox-egress.js"), "ca", "init", "--ca-dir", ca], { stdio: "ignore" });
  const args = [
    ...nodeArgs, path.join(repoRoot, "bin", "sandbox-egress.js"), "proxy",
    "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    "--policy-file", policy, "--ca-dir", ca,
  ];
  const t0 = performance.now();
  const child = spawnLogged(process.execPath, args, { stdoutFile: logs.stdout, stderrFile: logs.stderr, cwd: dir, env: envFor(path.resolve(repoRoot, policyFile)) });
  try {
    await waitForLine(logs.stdout, (l) => (l.includes('"listening"') ? l : null), { child, what: "sandbox-egress", timeoutMs: 20_000 });
  } catch (e) {
    await stopChild(child);
    throw new Error(`${e.message}\n${tail(logs.stderr)}`);
  }
  const readyMs = performance.now() - t0;
  await sleep(settleMs);
  const mem = memOf(child.pid);
  const r = { rssMiB: mem.rssKiB / 1024, hwmMiB: mem.hwmKiB / 1024, threads: threadsOf(child.pid), readyMs, ...(values.detail ? { smaps: rollup(child.pid) } : {}) };
  await stopChild(child);
  rmSync(dir, { recursive: true, force: true });
  return r;
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };

const results = {};
for (const p of policies) {
  const samples = [];
  for (let i = 0; i < runs; i++) samples.push(await once(p));
  results[p] = {
    medianRssMiB: median(samples.map((s) => s.rssMiB)),
    minRssMiB: Math.min(...samples.map((s) => s.rssMiB)),
    maxRssMiB: Math.max(...samples.map((s) => s.rssMiB)),
    medianHwmMiB: median(samples.map((s) => s.hwmMiB)),
    threads: median(samples.map((s) => s.threads)),
    medianReadyMs: median(samples.map((s) => s.readyMs)),
    samples,
  };
}
if (values.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
else {
  for (const [p, r] of Object.entries(results)) {
    process.stdout.write(
      `${p.padEnd(36)} idle RSS median ${r.medianRssMiB.toFixed(1)} MiB (min ${r.minRssMiB.toFixed(1)}, max ${r.maxRssMiB.toFixed(1)}, ` +
      `n=${runs}), HWM ${r.medianHwmMiB.toFixed(1)} MiB, ${r.threads} threads, ready in ${r.medianReadyMs.toFixed(0)} ms` +
      `${nodeArgs.length ? `  [node ${nodeArgs.join(" ")}]` : ""}\n`,
    );
    if (values.detail) for (const s of r.samples) process.stdout.write(`    ${JSON.stringify(s.smaps)}\n`);
  }
}
process.exit(0);
