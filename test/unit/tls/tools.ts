import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command without a shell; never rejects, so tests can assert on the exit code and output. */
export function run(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 20_000, env: opts.env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export interface TempDir {
  readonly path: string;
  file(name: string, content: string): Promise<string>;
  remove(): Promise<void>;
}

export async function tempDir(prefix = "sandbox-egress-tls-"): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    async file(name, content) {
      const p = join(path, name);
      await writeFile(p, content);
      return p;
    },
    remove: () => rm(path, { recursive: true, force: true }),
  };
}

/** An environment for client tools with every proxy variable removed: tests talk to loopback only, directly. */
export function directEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/_proxy$/i.test(k)) delete env[k];
  return env;
}
