// The C bulk client/server (bench/native/bulk.c) for the CONNECT throughput workload: compiled into the run's
// temporary directory with the machine's C compiler, started once as the TCP source/sink. Where no compiler is
// found, the workload falls back to the Node client and the report says so.
import { execFile, execFileSync, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { commandExists } from "./peers.mjs";
import { track } from "./proc.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const SOURCE = path.join(here, "..", "native", "bulk.c");

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

/** Start `bulk serve 0`; resolves with { child, port } once it printed its port. */
export function startBulkServer(bin) {
  return new Promise((resolve, reject) => {
    const child = track(spawn(bin, ["serve", "0"], { stdio: ["ignore", "pipe", "inherit"] }));
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
export function runBulk(bin, { target, proxy, warmupBytes, targetSeconds, minBytes, maxBytes, timeoutMs }) {
  const args = ["run", target.host, String(target.port), ...(proxy ? [proxy.host, String(proxy.port)] : []),
    String(warmupBytes), String(targetSeconds), String(minBytes), String(maxBytes)];
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`bulk run: ${`${stderr}`.trim() || err.message}`));
      try { resolve(JSON.parse(stdout)); } catch { reject(new Error(`bulk run printed ${JSON.stringify(stdout.slice(0, 200))}`)); }
    });
  });
}
