import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/**
 * The runtime suites need bubblewrap able to create namespaces. That is checked once; when it cannot, the
 * suites skip and say why (a container without user namespaces, a missing bwrap). Anything else fails loudly.
 */
export const bwrapProblem: string | null = (() => {
  try {
    execFileSync("bwrap", ["--unshare-net", "--ro-bind", "/", "/", "true"], { stdio: "pipe", timeout: 15_000 });
    return null;
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    return `bwrap cannot create namespaces on this machine (${(e.stderr?.toString() || e.message).trim()}); the local runtime tests are skipped`;
  }
})();
if (bwrapProblem) process.stderr.write(`SKIP: ${bwrapProblem}\n`);

/** The driver spawns the compiled CLI and bridge: fail with the fix rather than a confusing spawn error. */
export function requireBuild(): void {
  for (const f of ["dist/cli.js", "dist/runtime/local/bridge.js"]) {
    if (!existsSync(path.join(ROOT, f))) throw new Error(`${f} is missing: run npm run build before the runtime tests`);
  }
}

export function procState(pid: number): string | null {
  try {
    const m = /^State:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? m[1]!.trim() : null;
  } catch {
    return null;
  }
}

export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return procState(pid)?.startsWith("Z") !== true;
  } catch {
    return false;
  }
}

/**
 * The states of the processes still alive, zombies left out: a child that was exiting when the freeze came
 * finishes exiting (exiting tasks are not frozen) and waits, dead, for its frozen parent.
 */
export function liveStates(pids: number[]): string[] {
  return pids.map(procState).filter((s): s is string => s !== null && !s.startsWith("Z"));
}

/** Host pids in the same pid namespace as `initPid` (the sandbox's processes). */
export function sandboxPids(initPid: number): number[] {
  let ns: string;
  try {
    ns = execFileSync("readlink", [`/proc/${initPid}/ns/pid`]).toString().trim();
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const name of execFileSync("ls", ["/proc"]).toString().split("\n")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (execFileSync("readlink", [`/proc/${name}/ns/pid`], { stdio: ["ignore", "pipe", "ignore"] }).toString().trim() === ns) out.push(Number(name));
    } catch {
      /* exited */
    }
  }
  return out;
}

/** One HTTP request through a proxy's unix socket, as the in-sandbox bridge would relay it. */
export function viaProxySocket(socketPath: string, url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({ socketPath, method: "GET", path: url, headers: { host: u.host }, agent: false, timeout: 5_000 }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

/** Admin REST of a sandbox's proxy over its unix socket, with its token (what the driver does). */
export function adminGet(dir: string, pathname: string): Promise<{ status: number; body: unknown }> {
  const token = readFileSync(path.join(dir, "admin-token"), "utf8").trim();
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: path.join(dir, "admin.sock"), path: pathname, headers: { authorization: `Bearer ${token}` }, agent: false, timeout: 5_000 }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: body ? (JSON.parse(body) as unknown) : null }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

export async function eventually<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
