// The C bulk client/server (bench/native/bulk.c) for the CONNECT throughput workload: compiled into the run's
// temporary directory with the machine's C compiler, started once as the TCP source/sink. Where no compiler is
// found, the workload falls back to the Node client and the report says so.
//
// Cores: with two or more CPUs and taskset, the two ends (client and sink/source) share core 0 and the proxy under
// test runs alone on core 1, for every column (direct too: its ends are pinned the same way). Unpinned, three busy
// parties fight over two cores and the scheduler, not the proxy, decides the figure; pinned, each proxy gets
// exactly one core, which is what "one worker each" compares.
import { execFile, execFileSync, spawn } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { commandExists } from "./peers.mjs";
import { track } from "./proc.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const SOURCE = path.join(here, "..", "native", "bulk.c");

/** { ends, proxy } CPU lists for taskset, or null when the machine cannot separate them. */
export function corePlan() {
  if (os.availableParallelism() < 2 || !commandExists("taskset")) return null;
  return { ends: "0", proxy: "1" };
}

/** Pin every thread of a running process (the proxy under test) to `cpus`. */
export function pinProcess(pid, cpus) {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

const pinned = (cpus, argv) => (cpus ? ["taskset", "-c", cpus, ...argv] : argv);

/** { bin } or { missing: why }. */
export function buildBulkTool(tmpDir) {
  const cc = ["cc", "gcc", "clang"].find(commandExists);
  if (!cc) return { missing: "no C compiler (cc, gcc, clang) on PATH" };
  const bin = path.join(tmpDir, "bulk");
  try {
    execFileSync(cc, ["-O2", "-o", bin, SOURCE], { stdio: ["ignore", "ignore", "pipe"] });
    return { bin, compiler: cc };
  } catch (e) {
    return { missing: `${cc} failed: ${`${e.stderr ?? e.message}`.trim().split("\n")[0]}` };
  }
}

/** Start `bulk serve 0` (on `cpus` when given); resolves with { child, port } once it printed its port. */
export function startBulkServer(bin, cpus) {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = pinned(cpus, [bin, "serve", "0"]);
    const child = track(spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] }));
    let out = "";
    const timer = setTimeout(() => reject(new Error("bulk server did not print its port")), 5_000);
    child.once("error", (e) => { clearTimeout(timer); reject(e); });
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^(\d+)\n/.exec(out);
      if (m) { clearTimeout(timer); resolve({ child, port: Number(m[1]) }); }
    });
  });
}

/** One `bulk run`: both directions over one connection (through `proxy` when given); the program's JSON result. */
export function runBulk(bin, { target, proxy, warmupBytes, targetSeconds, minBytes, maxBytes, timeoutMs, cpus }) {
  const [cmd, ...args] = pinned(cpus, [bin, "run", target.host, String(target.port), ...(proxy ? [proxy.host, String(proxy.port)] : []),
    String(warmupBytes), String(targetSeconds), String(minBytes), String(maxBytes)]);
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`bulk run: ${`${stderr}`.trim() || err.message}`));
      try { resolve(JSON.parse(stdout)); } catch { reject(new Error(`bulk run printed ${JSON.stringify(stdout.slice(0, 200))}`)); }
    });
  });
}
