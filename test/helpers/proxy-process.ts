import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const CLI = fileURLToPath(new URL("../../bin/sandbox-egress.js", import.meta.url));

export interface RunningProxy {
  proc: ChildProcess;
  proxy: string;
  admin: string;
  transparent?: string;
  /** The listening line itself. */
  listening: Record<string, unknown>;
  /** Every stdout line so far (audit log and events). */
  lines: string[];
  stderr: string[];
  dir: string;
  policyFile: string;
  /** Parsed JSON lines with event:"egress". */
  audit(): Record<string, unknown>[];
  /** Wait until a line matching `pred` appears. */
  waitForLine(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A test that times out never reaches its cleanup: no proxy may outlive the test worker that started it. */
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

export interface StartOptions {
  policy?: unknown;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  transparent?: boolean;
}

/** Start `sandbox-egress proxy` as a real child process on free loopback ports and wait for its listening line. */
export async function startProxy(opts: StartOptions = {}): Promise<RunningProxy> {
  const dir = mkdtempSync(path.join(tmpdir(), "egress-test-"));
  const policyFile = path.join(dir, "policy.json");
  writeFileSync(policyFile, JSON.stringify(opts.policy ?? { mode: "allow-all" }, null, 2));
  const args = [
    CLI,
    "proxy",
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--policy-file",
    policyFile,
    "--ca-dir",
    path.join(dir, "certs"),
    ...(opts.transparent ? ["--transparent", "127.0.0.1:0"] : []),
    ...(opts.args ?? []),
  ];
  const proc = spawn(process.execPath, args, { env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
  live.add(proc);
  proc.once("exit", () => live.delete(proc));
  const lines: string[] = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: proc.stdout! }).on("line", (l) => {
    lines.push(l);
    for (const w of waiters) w();
  });
  createInterface({ input: proc.stderr! }).on("line", (l) => stderr.push(l));
  const parsed = (): Record<string, unknown>[] =>
    lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  const waitForLine = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 10_000): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = parsed().find(pred);
        if (hit) {
          waiters.delete(check as () => void);
          clearTimeout(timer);
          resolve(hit);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        waiters.delete(check as () => void);
        reject(new Error(`timed out waiting for a log line; stderr: ${stderr.join("\n")}; stdout: ${lines.slice(-5).join("\n")}`));
      }, timeoutMs);
      if (!check()) waiters.add(check as () => void);
    });
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const listening = await Promise.race([
    waitForLine((l) => l.event === "listening", 15_000),
    exited.then((code) => {
      throw new Error(`proxy exited with ${code}: ${stderr.join("\n")}`);
    }),
  ]);
  return {
    proc,
    proxy: listening.proxy as string,
    admin: listening.admin as string,
    transparent: listening.transparent as string | undefined,
    listening,
    lines,
    stderr,
    dir,
    policyFile,
    audit: () => parsed().filter((l) => l.event === "egress"),
    waitForLine,
    stop: async (signal = "SIGTERM") => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

export function port(hostPort: string): number {
  return Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));
}

export function writePolicy(file: string, policy: unknown): void {
  writeFileSync(file, JSON.stringify(policy));
}
