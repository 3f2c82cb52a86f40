// The proxies under test ("peers"), each started fresh on loopback with a config written to a temp dir.
//
// A peer is { name, kind: "direct" | "proxy", check() → {ok, reason?, warning?}, version() → string,
//             start(ctx) → instance | null }.
// An instance is { name, host, port, pid, rssPid(), stop(), logs }. `direct` has no instance: workloads then
// talk to the upstream itself. To add a peer, add an entry to PEERS; workloads only use the instance shape.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync, readdirSync, statSync, chmodSync, readFileSync } from "node:fs";
import path from "node:path";
import {
  spawnLogged, stopChild, freePort, waitForPort, waitForLine, tail, childPidsOf, commOf,
} from "./proc.mjs";

export function commandExists(cmd) {
  try { execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }); return true; } catch { return false; }
}

function firstLine(cmd, args) {
  try {
    return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString().trim().split("\n")[0];
  } catch (e) {
    // wrk -v exits 1 but prints its version.
    const out = `${e.stdout ?? ""}${e.stderr ?? ""}`.trim();
    return out ? out.split("\n")[0] : "unknown";
  }
}

function debVersion(pkg) {
  try { return execFileSync("dpkg-query", ["-W", "-f=${Version}", pkg]).toString().trim(); } catch { return null; }
}

function newestMtime(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Wrap a started child as an instance. */
function instance(name, child, { host = "127.0.0.1", port, logs, rssPid, extra = {} }) {
  return {
    name, host, port, pid: child.pid, logs, child, ...extra,
    startedAt: Date.now(), // ready: the rss workload times its samples from here
    rssPid: rssPid ?? (() => child.pid),
    stop: () => stopChild(child),
    failureContext: () => [logs.stdout, logs.stderr].filter(Boolean).map((f) => tail(f, 10)).filter(Boolean).join("\n"),
  };
}

async function started(name, child, port, logs, opts = {}) {
  try {
    await waitForPort(port, { child, what: name, timeoutMs: opts.timeoutMs ?? 20_000 });
  } catch (e) {
    await stopChild(child);
    throw new Error(`${e.message}\n${tail(logs.stderr ?? logs.stdout)}`);
  }
  return instance(name, child, { port, logs, ...opts });
}

// ---------------------------------------------------------------------------------------------------------

const direct = {
  name: "direct",
  kind: "direct",
  check: () => ({ ok: true }),
  version: () => "(no proxy)",
  start: async () => null,
};

const sandboxEgress = {
  name: "sandbox-egress",
  kind: "proxy",
  check(ctx) {
    const cli = path.join(ctx.repoRoot, "dist", "cli.js");
    if (!existsSync(cli)) return { ok: false, reason: "dist/cli.js missing: run `npm run build` first" };
    const src = path.join(ctx.repoRoot, "src");
    if (existsSync(src) && newestMtime(src) > statSync(cli).mtimeMs) {
      return { ok: true, warning: "src/ is newer than dist/cli.js: benchmarking a stale build (run `npm run build`)" };
    }
    return { ok: true };
  },
  version(ctx) {
    let v = "unknown";
    try { v = JSON.parse(readFileSync(path.join(ctx.repoRoot, "package.json"), "utf8")).version; } catch { /* keep */ }
    try {
      const sha = execFileSync("git", ["-C", ctx.repoRoot, "rev-parse", "--short", "HEAD"]).toString().trim();
      const dirty = execFileSync("git", ["-C", ctx.repoRoot, "status", "--porcelain", "--", "src"]).toString().trim();
      v += ` (git ${sha}${dirty ? ", src/ modified" : ""})`;
    } catch { /* not a git checkout */ }
    return v;
  },
  // opts (from a workload's column, all optional): policy (object, default allow-all), args (extra CLI
  // arguments, e.g. --hosts, --upstream-ca), env (added to the proxy's environment, e.g. a secret it injects).
  async start(ctx, opts = {}) {
    const dir = path.join(ctx.tmpDir, `sandbox-egress-${Date.now()}`);
    mkdirSync(dir, { recursive: true });
    const policy = path.join(dir, "policy.json");
    writeFileSync(policy, JSON.stringify(opts.policy ?? { mode: "allow-all" }));
    const adminPort = await freePort();
    const logs = { stdout: path.join(dir, "stdout.log"), stderr: path.join(dir, "stderr.log") };
    // One CA for every start, created before the first: every sandbox's proxy loads an existing CA (the runtime
    // shares one directory), and creating one is a one-off that would count in the first proxy's memory.
    const caDir = path.join(ctx.tmpDir, "sandbox-egress-ca");
    if (!existsSync(path.join(caDir, "ca.pem"))) {
      execFileSync(process.execPath, [path.join(ctx.repoRoot, "bin", "sandbox-egress.js"), "ca", "init", "--ca-dir", caDir], { stdio: "ignore" });
    }
    const args = [
      // BENCH_PROXY_NODE_ARGS: node flags for the proxy only, to try V8 options against the same peers.
      ...(process.env.BENCH_PROXY_NODE_ARGS ?? "").split(/\s+/).filter(Boolean),
      path.join(ctx.repoRoot, "bin", "sandbox-egress.js"), "proxy",
      "--listen", "127.0.0.1:0",
      "--admin", `127.0.0.1:${adminPort}`,
      "--policy-file", policy,
      // The upstreams live on loopback, which the built-in deny would refuse.
      "--internal-allow", "127.0.0.0/8",
      "--ca-dir", caDir,
      "--sandbox-id", "bench",
      "--log-level", ctx.logLevel ?? "warn",
      ...(opts.args ?? []),
    ];
    const env = opts.env ? { ...process.env, ...opts.env } : undefined;
    const child = spawnLogged(process.execPath, args, { stdoutFile: logs.stdout, stderrFile: logs.stderr, cwd: dir, env });
    let proxyAddr;
    try {
      proxyAddr = await waitForLine(logs.stdout, (line) => {
        if (!line.includes("listening")) return null;
        try { const j = JSON.parse(line); return j.event === "listening" && j.proxy ? j.proxy : null; } catch { return null; }
      }, { child, what: "sandbox-egress", timeoutMs: 20_000 });
    } catch (e) {
      await stopChild(child);
      throw new Error(`${e.message}\n${tail(logs.stderr)}\n${tail(logs.stdout)}`.trim());
    }
    const m = /^(.*):(\d+)$/.exec(proxyAddr);
    const host = m[1].replace(/^\[|\]$/g, "");
    const port = Number(m[2]);
    await waitForPort(port, { host, child, what: "sandbox-egress" });
    // The interception CA (created on start): what a client must trust for intercepted hosts.
    const caPath = path.join(caDir, "ca.pem");
    return instance("sandbox-egress", child, { host, port, logs, extra: { adminPort, caPath } });
  },
};

const squid = {
  name: "squid",
  kind: "proxy",
  check: () => commandExists("squid") ? { ok: true } : { ok: false, reason: "squid not installed" },
  version: () => `${firstLine("squid", ["-v"]).replace(/^Squid Cache: Version /, "")} (deb ${debVersion("squid")})`,
  async start(ctx) {
    const dir = path.join(ctx.tmpDir, `squid-${Date.now()}`);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o777); // squid drops root to its effective user (proxy) and writes cache.log here
    const port = await freePort();
    const conf = path.join(dir, "squid.conf");
    writeFileSync(conf, [
      `http_port 127.0.0.1:${port}`,
      "workers 1",
      // Any method, any port (CONNECT included) from loopback clients; nothing else.
      "http_access allow localhost",
      "http_access deny all",
      // No caching at all: a pure forwarder, like the other peers.
      "cache deny all",
      "cache_mem 0 MB",
      "access_log none",
      `cache_log ${path.join(dir, "cache.log")}`,
      "pid_filename none",
      "pinger_enable off",
      "visible_hostname bench",
      "max_filedescriptors 16384",
      "shutdown_lifetime 0 seconds",
      "",
    ].join("\n"));
    const logs = { stdout: path.join(dir, "stdout.log"), stderr: path.join(dir, "cache.log") };
    // -N: no daemon (foreground; with -N squid also runs without SMP kids, so this pid is the worker).
    const child = spawnLogged("squid", ["-N", "-f", conf], { stdoutFile: logs.stdout, cwd: dir });
    return started("squid", child, port, logs, {
      // If a squid build ever forks a kid despite -N, measure the kid (the worker), not the master.
      rssPid: () => childPidsOf(child.pid).find((p) => commOf(p) === "squid") ?? child.pid,
    });
  },
};

const tinyproxy = {
  name: "tinyproxy",
  kind: "proxy",
  check: () => commandExists("tinyproxy") ? { ok: true } : { ok: false, reason: "tinyproxy not installed" },
  version: () => firstLine("tinyproxy", ["-v"]).replace(/^tinyproxy /, ""),
  async start(ctx) {
    const dir = path.join(ctx.tmpDir, `tinyproxy-${Date.now()}`);
    mkdirSync(dir, { recursive: true });
    const port = await freePort();
    const conf = path.join(dir, "tinyproxy.conf");
    // No ConnectPort lines: tinyproxy then allows CONNECT to any port.
    writeFileSync(conf, [
      "User nobody",
      "Group nogroup",
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 600",
      "MaxClients 4000",
      "Allow 127.0.0.1",
      "LogLevel Error",
      "",
    ].join("\n"));
    const logs = { stdout: path.join(dir, "stdout.log") };
    const child = spawnLogged("tinyproxy", ["-d", "-c", conf], { stdoutFile: logs.stdout, cwd: dir });
    return started("tinyproxy", child, port, logs);
  },
};

// Not in the default peer set; the `intercept` and `mint` workloads use it as the interception peer. Started as a
// forward proxy; opts.args (from a workload's column) or ctx.peerArgs.mitmproxy add mitmdump arguments.
// Its CA (what a client must trust) is written to confdir on first start: instance.caPath.
const mitmproxy = {
  name: "mitmproxy",
  kind: "proxy",
  check: () => commandExists("mitmdump") ? { ok: true } : { ok: false, reason: "mitmproxy (mitmdump) not installed" },
  version: () => `${firstLine("mitmdump", ["--version"]).replace(/^Mitmproxy:\s*/, "")} (deb ${debVersion("mitmproxy")})`,
  async start(ctx, opts = {}) {
    const dir = path.join(ctx.tmpDir, `mitmproxy-${Date.now()}`);
    mkdirSync(dir, { recursive: true });
    const port = await freePort();
    const logs = { stdout: path.join(dir, "stdout.log") };
    const confdir = path.join(dir, "conf");
    const child = spawnLogged("mitmdump", [
      "--listen-host", "127.0.0.1", "--listen-port", String(port),
      "--set", `confdir=${confdir}`, "-q",
      ...(ctx.peerArgs?.mitmproxy ?? []),
      ...(opts.args ?? []),
    ], { stdoutFile: logs.stdout, cwd: dir });
    const caPath = path.join(confdir, "mitmproxy-ca-cert.pem");
    const inst = await started("mitmproxy", child, port, logs, { timeoutMs: 30_000, extra: { caPath } });
    if (!existsSync(caPath)) {
      await inst.stop();
      throw new Error(`mitmproxy listens but wrote no CA at ${caPath}\n${tail(logs.stdout)}`);
    }
    return inst;
  },
};

export const PEERS = { direct, "sandbox-egress": sandboxEgress, squid, tinyproxy, mitmproxy };
export const DEFAULT_PEERS = ["direct", "sandbox-egress", "squid", "tinyproxy"];
