// Process plumbing for the bench: every child we start is registered here and killed on the way out,
// whatever the way out is (normal end, thrown error, SIGINT/SIGTERM, uncaught exception).
import { spawn, fork, execFileSync } from "node:child_process";
import { readFileSync, readdirSync, openSync, closeSync } from "node:fs";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** @type {Set<import("node:child_process").ChildProcess>} */
const children = new Set();
let handlersInstalled = false;
/** @type {Array<() => void>} synchronous clean-ups (temp dirs) run after the children are killed */
const exitHooks = [];

/** Register a synchronous clean-up that runs on every exit path, after the children are killed. */
export function onExitSync(fn) { exitHooks.push(fn); }

function runExitHooks() {
  for (const fn of exitHooks.splice(0)) { try { fn(); } catch { /* best effort */ } }
}

function killAllSync(signal = "SIGKILL") {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      try { process.kill(child.pid, signal); } catch { /* already gone */ }
    }
  }
}

/** Install once: on any exit path, SIGKILL every registered child (synchronous, so it works in 'exit'). */
export function installExitHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", () => { killAllSync(); runExitHooks(); });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping children\n`);
      killAllSync();
      process.exit(130);
    });
  }
  process.on("uncaughtException", (err) => {
    process.stderr.write(`bench: uncaught ${err?.stack ?? err}\n`);
    killAllSync();
    process.exit(1);
  });
}

export function track(child) {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/**
 * Spawn a long-running program with stdout/stderr going to files (never to a pipe that this process has to
 * drain: reading a peer's log would put the runner's CPU into the measurement).
 */
export function spawnLogged(cmd, args, { stdoutFile, stderrFile, env, cwd } = {}) {
  const out = openSync(stdoutFile, "a");
  const err = openSync(stderrFile ?? stdoutFile, "a");
  try {
    return track(spawn(cmd, args, { stdio: ["ignore", out, err], env: env ?? process.env, cwd }));
  } finally {
    closeSync(out);
    closeSync(err);
  }
}

/** Fork a bench helper (upstream server, load client) with an IPC channel. */
export function forkHelper(modulePath, args = [], { execArgv = [], env } = {}) {
  return track(fork(modulePath, args, { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv, env: env ?? process.env }));
}

/** Send a request over IPC and wait for the reply with the same id. */
let nextId = 1;
export function ipcCall(child, msg, timeoutMs) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const onMsg = (m) => {
      if (!m || m.id !== id) return;
      cleanup();
      if (m.error) reject(new Error(m.error));
      else resolve(m.result);
    };
    const onExit = (code, sig) => { cleanup(); reject(new Error(`helper exited (${code ?? sig}) during ${msg.cmd}`)); };
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${msg.cmd} timed out after ${timeoutMs} ms`)); }, timeoutMs);
    function cleanup() { clearTimeout(timer); child.off("message", onMsg); child.off("exit", onExit); }
    child.on("message", onMsg);
    child.once("exit", onExit);
    child.send({ ...msg, id });
  });
}

/** Wait for the 'ready' message a forked helper sends once it listens. */
export function waitReady(child, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("helper not ready in time")), timeoutMs);
    child.once("exit", (code) => { clearTimeout(timer); reject(new Error(`helper exited with ${code} before ready`)); });
    child.on("message", function onMsg(m) {
      if (m && m.ready) { clearTimeout(timer); child.off("message", onMsg); resolve(m); }
    });
  });
}

/** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
export async function stopChild(child, graceMs = 3000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once("exit", r));
  try { child.kill("SIGTERM"); } catch { /* gone */ }
  const t = setTimeout(() => { try { child.kill("SIGKILL"); } catch { /* gone */ } }, graceMs);
  await gone;
  clearTimeout(t);
}

/** A free TCP port on 127.0.0.1 (bind 0, read, close; the usual small race is acceptable here). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Poll until host:port accepts a TCP connection, or the child dies, or the deadline passes. */
export async function waitForPort(port, { host = "127.0.0.1", timeoutMs = 15_000, child, what = "process" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening on ${port}`);
    }
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host, port });
      s.once("connect", () => { s.destroy(); resolve(true); });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} not listening on ${host}:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Wait until a file contains a line for which `match(line)` returns a value; returns that value. */
export async function waitForLine(file, match, { timeoutMs = 15_000, child, what = "process" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = "";
    try { text = readFileSync(file, "utf8"); } catch { /* not yet */ }
    for (const line of text.split("\n")) {
      const v = match(line);
      if (v) return v;
    }
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    }
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Last `n` lines of a file, for error messages. */
export function tail(file, n = 15) {
  try { return readFileSync(file, "utf8").trimEnd().split("\n").slice(-n).join("\n"); } catch { return ""; }
}

// ---- /proc readings -------------------------------------------------------------------------------------

/** { rssKiB, hwmKiB } from /proc/PID/status, or null if the process is gone. */
export function memOf(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const rss = /VmRSS:\s+(\d+)/.exec(s);
    const hwm = /VmHWM:\s+(\d+)/.exec(s);
    return { rssKiB: rss ? Number(rss[1]) : null, hwmKiB: hwm ? Number(hwm[1]) : null };
  } catch { return null; }
}

let clkTck = 100;
try { clkTck = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100; } catch { /* default */ }

/** CPU seconds (user + system, all threads) a process has used so far. */
export function cpuSecondsOf(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // comm may contain spaces/parens: fields start after the last ')'.
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / clkTck; // utime, stime are fields 14, 15 (1-based)
  } catch { return null; }
}

/** Direct children of a process (by scanning /proc/[pid]/stat ppid). */
export function childPidsOf(pid) {
  const out = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) === pid) out.push(Number(d));
    } catch { /* raced */ }
  }
  return out;
}

export function commOf(pid) {
  try { return readFileSync(`/proc/${pid}/comm`, "utf8").trim(); } catch { return null; }
}

// ---- interference: CPU used by processes that are not ours while a measurement ran ---------------------
// The bench often shares a small machine with other work (builds, test runs). We cannot stop that, but we
// can say when it happened: a sample taken while foreign processes burned CPU is flagged.

/** Snapshot of every process's CPU ticks and parent, plus the system-wide counters of /proc/stat. */
export function procSnapshot() {
  const procs = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      procs.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch { /* raced */ }
  }
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = cpu;
  return { at: Date.now(), procs, busy: user + nice + system + irq + softirq, steal: steal ?? 0, idle: idle + iowait };
}

/**
 * Between two snapshots: cores used by the whole system, stolen by the hypervisor, and by processes that are
 * neither this process's descendants nor kernel threads ("foreign"; a lower bound: processes that started or
 * ended inside the window are not attributed).
 */
export function interference(a, b, rootPid = process.pid) {
  const secs = (b.at - a.at) / 1000;
  if (secs <= 0) return null;
  const ours = new Set([rootPid]);
  const all = new Map([...a.procs, ...b.procs]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, p] of all) if (!ours.has(pid) && ours.has(p.ppid)) { ours.add(pid); grew = true; }
  }
  let foreign = 0;
  const top = [];
  for (const [pid, pb] of b.procs) {
    const pa = a.procs.get(pid);
    if (!pa || ours.has(pid) || pid === 2 || pb.ppid === 2) continue;
    const d = pb.ticks - pa.ticks;
    if (d > 0) { foreign += d; top.push([pid, d]); }
  }
  top.sort((x, y) => y[1] - x[1]);
  return {
    seconds: secs,
    systemBusyCores: (b.busy - a.busy) / clkTck / secs,
    stealCores: (b.steal - a.steal) / clkTck / secs,
    foreignCores: foreign / clkTck / secs,
    foreignTop: top.slice(0, 3).map(([pid, d]) => ({ pid, comm: commOf(pid), cores: d / clkTck / secs })),
  };
}
