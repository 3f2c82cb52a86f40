import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import type { ExecResult } from "../driver.js";
import { launcherArgv } from "./launcher.js";
import { INSIDE } from "./layout.js";
import type { ProcIdentity } from "./procfs.js";

export interface ExecLaunch {
  readonly init: ProcIdentity;
  /** Join the sandbox's cgroup first (so pause freezes exec'd commands too), or null. */
  readonly procsFile: string | null;
  readonly uid: number;
  readonly gid: number;
  readonly env: Record<string, string>;
  readonly command: readonly string[];
  readonly timeoutMs: number;
  readonly maxOutputBytes: number;
  /** Enter the sandbox's cgroup namespace too (when bwrap could create one), so /proc/self/cgroup reads "/". */
  readonly cgroupNs: boolean;
}

/** Environment names a shell can export; anything else is refused when the sandbox is created. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `export K='v'` lines for `eval`, single-quoted so that no value is ever interpreted by the shell. */
export function envScript(env: Record<string, string>): string {
  return Object.entries(env)
    .filter(([k]) => ENV_NAME.test(k))
    .map(([k, v]) => `export ${k}='${v.replace(/'/g, `'\\''`)}'`)
    .join("\n");
}

/**
 * Run a command as the sandbox's processes see the world: nsenter into the namespaces of the sandbox's init,
 * drop to the sandbox user with no capabilities and no_new_privs (setpriv), cd /workspace, apply the sandbox's
 * environment, exec. The host-side stages (nsenter runs as root) get only PATH: the sandbox's environment is
 * handed over a pipe and applied by the last, unprivileged stage, so LD_PRELOAD and friends never reach a
 * privileged process and no value appears on a command line.
 */
export function execInSandbox(l: ExecLaunch): Promise<ExecResult> {
  const inner = [
    "nsenter",
    "--target",
    String(l.init.pid),
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "--pid",
    ...(l.cgroupNs ? ["--cgroup"] : []),
    "--",
    "setpriv",
    "--reuid",
    String(l.uid),
    "--regid",
    String(l.gid),
    "--clear-groups",
    "--no-new-privs",
    "--bounding-set",
    "-all",
    "--inh-caps",
    "-all",
    "--",
    "/bin/sh",
    "-c",
    `cd ${INSIDE.workspace} && eval "$(cat <&3)" && exec 3<&- && exec "$@"`,
    "sandbox-exec",
    ...l.command,
  ];
  const argv = launcherArgv(inner, { procsFile: l.procsFile, keepFds: 4 });
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      // Own process group: a timeout kills the command and whatever it started in that group.
      detached: true,
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
    });
    const envPipe = child.stdio[3] as Writable;
    envPipe.on("error", () => undefined);
    envPipe.end(envScript(l.env));
    const out = collect(child.stdout!, l.maxOutputBytes);
    const err = collect(child.stderr!, l.maxOutputBytes);
    let timedOut = false;
    let settled = false;
    const kill = (): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* exited */
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
      // A process that cannot die yet (frozen) must not hold the caller: answer now.
      setTimeout(() => done(null, "SIGKILL"), 1_000).unref();
    }, l.timeoutMs);
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Output may still be in flight; a background process that inherited stdout must not keep us waiting.
      const finish = (): void => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        const exitCode = code ?? 128 + (signal ? constants.signals[signal] : 0);
        resolve({ exitCode, stdout: out.text(), stderr: err.text(), timedOut });
      };
      if (out.ended() && err.ended()) finish();
      else {
        const t = setTimeout(finish, 250);
        let pending = (out.ended() ? 0 : 1) + (err.ended() ? 0 : 1);
        const one = (): void => {
          if (--pending === 0) {
            clearTimeout(t);
            finish();
          }
        };
        if (!out.ended()) child.stdout!.once("close", one);
        if (!err.ended()) child.stderr!.once("close", one);
      }
    };
    child.once("exit", (code, signal) => done(code, signal));
    child.once("error", (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ exitCode: 127, stdout: "", stderr: `cannot run nsenter: ${e.message}`, timedOut: false });
    });
  });
}

function collect(stream: Readable, max: number): { text(): string; ended(): boolean } {
  const chunks: Buffer[] = [];
  let size = 0;
  let ended = false;
  stream.on("data", (c: Buffer) => {
    // Keep reading past the cap (a blocked pipe would stall the command), but keep only the first `max` bytes.
    if (size >= max) return;
    const take = c.subarray(0, max - size);
    chunks.push(take);
    size += take.length;
  });
  stream.on("error", () => undefined);
  stream.once("close", () => {
    ended = true;
  });
  return { text: () => Buffer.concat(chunks).toString("utf8"), ended: () => ended };
}
