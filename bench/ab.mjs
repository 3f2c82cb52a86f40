#!/usr/bin/env node
// Paired A/B of two builds of the proxy on plain HTTP: CPU per request, the figure the http workload's race is
// decided by. Both proxies run at the same time under the same wrk load (one wrk each, same upstream), so a
// noisy machine slows both alike; sequential runs on this project's shared 2-core VM swung ±15 % and hid
// a real 15 % cost once. Each round starts both fresh and swaps which one wrk starts first.
//
//   node bench/ab.mjs --a ../other-checkout [--b .] [--rounds 6] [--seconds 8] [--connections 16] [--a-args=FLAGS]
//
// A and B are checkouts with `npm run build` done (bin/ + dist/). --a-args= / --b-args= add node flags for one side
// (e.g. `--a . --b . --b-args=--max-semi-space-size=1` prices a V8 flag: 1.12× CPU per request here). Prints one line per round and
// the median of B's CPU per request relative to A's.
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { cpuSecondsOf, forkHelper, installExitHandlers, spawnLogged, stopChild, tail, waitForLine, waitReady } from "./lib/proc.mjs";
import { parseWrk } from "./lib/workloads.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: o } = parseArgs({
  options: {
    a: { type: "string" },
    b: { type: "string", default: path.resolve(here, "..") },
    rounds: { type: "string", default: "6" },
    seconds: { type: "string", default: "8" },
    connections: { type: "string", default: "16" },
    "a-args": { type: "string", default: "" },
    "b-args": { type: "string", default: "" },
  },
});
if (!o.a) {
  process.stderr.write("usage: node bench/ab.mjs --a DIR [--b DIR] [--rounds N] [--seconds S] [--connections C] [--a-args FLAGS] [--b-args FLAGS]\n");
  process.exit(2);
}
installExitHandlers();

const tmp = mkdtempSync(path.join(os.tmpdir(), "se-ab-"));
const sides = [
  { name: "A", root: path.resolve(o.a), nodeArgs: o["a-args"].split(/\s+/).filter(Boolean) },
  { name: "B", root: path.resolve(o.b), nodeArgs: o["b-args"].split(/\s+/).filter(Boolean) },
];
const policy = path.join(tmp, "policy.json");
writeFileSync(policy, JSON.stringify({ mode: "allow-all" }));
const caDir = path.join(tmp, "ca");
execFileSync(process.execPath, [path.join(sides[1].root, "bin", "sandbox-egress.js"), "ca", "init", "--ca-dir", caDir], { stdio: "ignore" });

const wrk = (args) => new Promise((resolve, reject) => {
  execFile("wrk", args, { timeout: 120_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
});

async function startProxy(side, round) {
  const logs = { stdout: path.join(tmp, `${side.name}-${round}.out`), stderr: path.join(tmp, `${side.name}-${round}.err`) };
  const child = spawnLogged(process.execPath, [
    ...side.nodeArgs, path.join(side.root, "bin", "sandbox-egress.js"), "proxy",
    "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--policy-file", policy, "--ca-dir", caDir,
    "--internal-allow", "127.0.0.0/8", "--log-level", "warn",
  ], { stdoutFile: logs.stdout, stderrFile: logs.stderr, cwd: tmp });
  try {
    const addr = await waitForLine(logs.stdout, (l) => { try { return JSON.parse(l).proxy ?? null; } catch { return null; } }, { child, what: side.name });
    return { child, url: `http://${addr}/` };
  } catch (e) {
    await stopChild(child);
    throw new Error(`${e.message}\n${tail(logs.stderr)}`);
  }
}

const upstream = forkHelper(path.join(here, "lib", "upstream.mjs"), ["http"]);
const { port } = await waitReady(upstream);
const script = path.join(tmp, "abs.lua");
writeFileSync(script, `wrk.method = "GET"\nwrk.path = "http://127.0.0.1:${port}/"\nwrk.headers["Host"] = "127.0.0.1:${port}"\n`);
const base = ["-t1", `-c${o.connections}`, "--timeout", "5s", "-s", script];

const ratios = [];
try {
  for (let round = 1; round <= Number(o.rounds); round++) {
    const order = round % 2 ? sides : [...sides].reverse();
    const running = [];
    for (const side of order) running.push({ side, ...(await startProxy(side, round)) });
    await Promise.all(running.map((r) => wrk([...base, "-d2s", r.url])));
    const before = running.map((r) => cpuSecondsOf(r.child.pid));
    const outs = await Promise.all(running.map((r) => wrk([...base, `-d${o.seconds}s`, r.url])));
    const after = running.map((r) => cpuSecondsOf(r.child.pid));
    const res = {};
    running.forEach((r, i) => {
      const w = parseWrk(outs[i]);
      res[r.side.name] = { usPerReq: ((after[i] - before[i]) / w.requests) * 1e6, rps: w.rps };
    });
    for (const r of running) await stopChild(r.child);
    const ratio = res.B.usPerReq / res.A.usPerReq;
    ratios.push(ratio);
    process.stdout.write(`round ${round}: A ${res.A.usPerReq.toFixed(0)} µs/req (${Math.round(res.A.rps)} req/s) · ` +
      `B ${res.B.usPerReq.toFixed(0)} µs/req (${Math.round(res.B.rps)} req/s) · B/A ${ratio.toFixed(3)}\n`);
  }
} finally {
  await stopChild(upstream, 1000);
  rmSync(tmp, { recursive: true, force: true });
}
const sorted = [...ratios].sort((x, y) => x - y);
const mid = sorted.length / 2;
const median = sorted.length % 2 ? sorted[Math.floor(mid)] : (sorted[mid - 1] + sorted[mid]) / 2;
process.stdout.write(`B's CPU per request relative to A's: median ${median.toFixed(3)} (range ${sorted[0].toFixed(3)}–${sorted[sorted.length - 1].toFixed(3)}, ${ratios.length} rounds)\n`);
process.exit(0);
