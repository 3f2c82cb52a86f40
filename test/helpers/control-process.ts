import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { CLI } from "./proxy-process.js";

export interface RunningControl {
  proc: ChildProcess;
  /** HOST:PORT from the listening line. */
  api: string;
  base: string;
  dataDir: string;
  lines: string[];
  stderr: string[];
  /** Send `signal` (default SIGTERM) and resolve with the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface ControlStartOptions {
  /** Reuse a data directory (restart tests); default a fresh temp directory. */
  dataDir?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Listen address; default 127.0.0.1:0. */
  listen?: string;
}

/**
 * Start `sandbox-egress control` as a real child process with the real LocalDriver, and wait for its listening
 * line. Short data directories keep the sandboxes' unix socket paths within sun_path.
 */
export async function startControlProcess(opts: ControlStartOptions = {}): Promise<RunningControl> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), "ctl-"));
  const args = [CLI, "control", "--listen", opts.listen ?? "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "info", ...(opts.args ?? [])];
  const proc = spawn(process.execPath, args, { env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  const stderr: string[] = [];
  createInterface({ input: proc.stdout! }).on("line", (l) => lines.push(l));
  createInterface({ input: proc.stderr! }).on("line", (l) => stderr.push(l));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const api = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`control did not start within 30 s; stderr: ${stderr.join("\n")}`)), 30_000);
    const poll = setInterval(() => {
      for (const l of lines) {
        try {
          const j = JSON.parse(l) as { event?: string; api?: string };
          if (j.event === "listening" && j.api) {
            clearInterval(poll);
            clearTimeout(timer);
            resolve(j.api);
            return;
          }
        } catch {
          // not JSON
        }
      }
    }, 20);
    void exited.then((code) => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`control exited with ${code}: ${stderr.join("\n")}`));
    });
  }).catch((err: unknown) => {
    // A directory this helper created for a start that failed holds nothing anyone will look at.
    if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  });
  return {
    proc,
    api,
    base: `http://${api}`,
    dataDir,
    lines,
    stderr,
    stop: async (signal = "SIGTERM") => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}
