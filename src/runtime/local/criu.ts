import { spawn } from "node:child_process";

export interface MemorySnapshotSupport {
  supported: boolean;
  reason?: string;
}

/**
 * Can this host checkpoint processes (CRIU)? Runs `criu check` once, bounded by a timeout, and explains a "no"
 * with criu's own first error line (e.g. "vdso: Unexpected rt vDSO area bounds" on kernels criu does not know).
 */
export function probeCriu(timeoutMs = 10_000, bin = "criu"): Promise<MemorySnapshotSupport> {
  return new Promise((resolve) => {
    let output = "";
    let settled = false;
    const settle = (r: MemorySnapshotSupport): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const child = spawn(bin, ["check"], { stdio: ["ignore", "pipe", "pipe"] });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      settle({ supported: false, reason: `criu check did not finish within ${timeoutMs} ms` });
    }, timeoutMs);
    const take = (c: Buffer): void => {
      if (output.length < 64 * 1024) output += c.toString("utf8");
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.once("error", (err: NodeJS.ErrnoException) => {
      settle({ supported: false, reason: err.code === "ENOENT" ? "criu is not installed, so processes cannot be checkpointed" : `criu cannot run: ${err.message}` });
    });
    child.once("close", (code) => {
      if (code === 0) return settle({ supported: true });
      const lines = output.split("\n").map((l) => l.trim()).filter(Boolean);
      const first = lines.find((l) => /error/i.test(l)) ?? lines[0] ?? `exit code ${code}`;
      settle({ supported: false, reason: `criu check fails on this host, so processes cannot be checkpointed: ${first}` });
    });
  });
}
