import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, lstatSync, openSync, promises as fs, readdirSync, readlinkSync } from "node:fs";
import type { Readable, Writable } from "node:stream";
import { INSIDE, type SandboxPaths } from "./layout.js";
import { launcherArgv } from "./launcher.js";
import { logTail } from "./proxy-process.js";
import { identify, isAlive, pidNamespace, waitFor, type ProcIdentity } from "./procfs.js";

export const BRIDGE_PORT = 3128;

export interface SandboxLaunch {
  readonly id: string;
  readonly paths: SandboxPaths;
  /** Host paths of the compiled bridge and of the node binary that runs it. */
  readonly bridgePath: string;
  readonly node: string;
  readonly uid: number;
  readonly gid: number;
  /** The entrypoint's environment (handed over a pipe, never on a command line). */
  readonly env: Record<string, string>;
  readonly entrypoint: readonly string[];
  /** cgroup.procs to join before bwrap runs, or null (signal freezer). */
  readonly procsFile: string | null;
  /** Host directories covered with an empty tmpfs inside (the data directory: tokens, sockets, CA key, store). */
  readonly hide: readonly string[];
  readonly readyTimeoutMs: number;
}

export interface StartedSandbox {
  readonly bwrap: ProcIdentity;
  readonly init: ProcIdentity;
  readonly pidNs: string;
  readonly child: ChildProcess;
}

export class SandboxStartError extends Error {}

/** Top-level paths that get their own fresh mount instead of the host's. */
const REPLACED = new Set(["proc", "dev", "tmp", "run", "workspace"]);

/**
 * The root file system: every top-level entry of the host's / bound read-only onto bwrap's own root, then that
 * root remounted read-only. Same view as `--ro-bind / /`, but bwrap can still create the /workspace and
 * /run/egress mount points (it cannot mkdir inside a read-only bind of the host root).
 */
function rootArgs(): string[] {
  const args: string[] = [];
  for (const name of readdirSync("/").sort()) {
    if (REPLACED.has(name)) continue;
    const host = `/${name}`;
    let st;
    try {
      st = lstatSync(host);
    } catch {
      continue;
    }
    // Merged-/usr hosts have top-level links (bin -> usr/bin): recreate them as links.
    if (st.isSymbolicLink()) args.push("--symlink", readlinkSync(host), host);
    else if (st.isDirectory() || st.isFile()) args.push("--ro-bind", host, host);
  }
  return args;
}

/** Is `p` inside (or equal to) one of `dirs`? */
function under(p: string, dirs: readonly string[]): boolean {
  return dirs.some((d) => p === d || p.startsWith(`${d}/`));
}

export function bwrapArgs(l: SandboxLaunch): string[] {
  const args = [
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--hostname",
    l.id,
    // No controlling terminal to inject keystrokes into (TIOCSTI).
    "--new-session",
    // bwrap run by root keeps every capability unless told otherwise. The bridge keeps only what it needs to
    // start the entrypoint as the sandbox user with an empty bounding set (setpriv); the entrypoint ends up with
    // no capability at all, and bwrap sets no_new_privs, so nothing inside can regain one.
    "--cap-drop",
    "ALL",
    "--cap-add",
    "CAP_SETUID",
    "--cap-add",
    "CAP_SETGID",
    "--cap-add",
    "CAP_SETPCAP",
    ...rootArgs(),
    "--dev",
    "/dev",
    "--perms",
    "1777",
    "--tmpfs",
    "/dev/shm",
    "--proc",
    "/proc",
    "--perms",
    "1777",
    "--tmpfs",
    "/tmp",
    // A fresh /run hides the host's unix sockets (connect() works on a read-only bind; only permissions stop it).
    "--perms",
    "0755",
    "--tmpfs",
    "/run",
  ];
  for (const dir of l.hide) {
    // /tmp and /run are already fresh inside; anything else (e.g. ./data) gets an empty tmpfs on top.
    if (!under(dir, ["/tmp", "/run", "/proc", "/dev"]) && existsSync(dir)) args.push("--perms", "0755", "--tmpfs", dir);
  }
  args.push(
    "--ro-bind",
    l.paths.egressDir,
    INSIDE.egressDir,
    "--ro-bind",
    l.bridgePath,
    INSIDE.bridge,
    "--ro-bind",
    l.node,
    INSIDE.node,
    "--bind",
    l.paths.workspace,
    INSIDE.workspace,
  );
  // Tools that ignore SSL_CERT_FILE and friends read the system bundle: give them the one with the proxy CA too.
  const systemBundle = "/etc/ssl/certs/ca-certificates.crt";
  if (existsSync(systemBundle) && lstatSync(systemBundle).isFile()) args.push("--ro-bind", l.paths.caBundle, systemBundle);
  args.push(
    "--remount-ro",
    "/",
    "--chdir",
    INSIDE.workspace,
    "--clearenv",
    "--setenv",
    "PATH",
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--info-fd",
    "3",
    "--",
    INSIDE.node,
    INSIDE.bridge,
    "--listen",
    `127.0.0.1:${BRIDGE_PORT}`,
    "--listen-optional",
    `[::1]:${BRIDGE_PORT}`,
    "--socket",
    INSIDE.proxySocket,
    "--uid",
    String(l.uid),
    "--gid",
    String(l.gid),
    "--ready-fd",
    "4",
    "--env-fd",
    "5",
    "--cwd",
    INSIDE.workspace,
    "--",
    ...l.entrypoint,
  );
  return args;
}

/**
 * Start the sandbox: bwrap, in the sandbox's cgroup before it runs anything (see launcher.ts), then wait until
 * the bridge listens and the entrypoint has started. Detached: its own session, output to a file, so it
 * outlives the control module.
 */
export async function startSandbox(l: SandboxLaunch): Promise<StartedSandbox> {
  const args = bwrapArgs(l);
  const argv = launcherArgv(["bwrap", ...args], { procsFile: l.procsFile, keepFds: 6 });
  const offset = await fs.stat(l.paths.sandboxLog).then(
    (s) => s.size,
    () => 0,
  );
  const out = openSync(l.paths.sandboxLog, "a", 0o600);
  let child: ChildProcess;
  try {
    child = spawn(argv[0]!, argv.slice(1), {
      detached: true,
      stdio: ["ignore", out, out, "pipe", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
    });
  } finally {
    closeSync(out);
  }
  // stdio's tuple type stops at fd 4; fd 5 is there all the same.
  const stdio = child.stdio as unknown as (Readable & Writable)[];
  const info = stdio[3] as Readable;
  const ready = stdio[4] as Readable;
  const envPipe = stdio[5] as Writable;
  const cleanupPipes = (): void => {
    for (const s of [info, ready, envPipe]) s?.destroy();
  };
  const progress: StartProgress = { childPid: null };
  try {
    envPipe.on("error", () => undefined);
    envPipe.end(JSON.stringify(l.env));
    await waitForStart(child, info, ready, l.readyTimeoutMs, progress);
    const bwrap = child.pid === undefined ? null : await identify(child.pid);
    const init = progress.childPid === null ? null : await identify(progress.childPid);
    const pidNs = progress.childPid === null ? null : await pidNamespace(progress.childPid);
    if (!bwrap || !init || !pidNs) throw new SandboxStartError("the sandbox exited right after starting");
    return { bwrap, init, pidNs, child };
  } catch (err) {
    cleanupPipes();
    // The init first (its death takes the whole pid namespace along, and bwrap reaps it), then bwrap itself.
    for (const [pid, group] of [
      [progress.childPid, false],
      [child.pid, true],
    ] as const) {
      if (pid === null || pid === undefined) continue;
      try {
        process.kill(group ? -pid : pid, "SIGKILL");
      } catch {
        /* gone */
      }
      await waitFor(async () => !(await isAlive(await identify(pid))), 2_000, 10);
    }
    const message = err instanceof Error ? err.message : String(err);
    throw new SandboxStartError(`the sandbox ${l.id} failed to start: ${message}; ${await logTail(l.paths.sandboxLog, offset)}`, { cause: err });
  } finally {
    cleanupPipes();
  }
}

interface StartProgress {
  /** The sandbox's init, once bwrap's info fd told it (host pid). */
  childPid: number | null;
}

function waitForStart(child: ChildProcess, info: Readable, ready: Readable, timeoutMs: number, progress: StartProgress): Promise<void> {
  return new Promise((resolve, reject) => {
    let infoText = "";
    let readyText = "";
    let isReady = false;
    const timer = setTimeout(() => finish(new Error(`not ready within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      child.off("exit", onExit);
      if (err) reject(err);
      else resolve();
    };
    const check = (): void => {
      if (progress.childPid !== null && isReady) finish();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => finish(new Error(`bwrap exited (${signal ?? `code ${code}`})`));
    child.once("exit", onExit);
    info.on("data", (c: Buffer) => {
      infoText += c.toString("utf8");
      try {
        const parsed = JSON.parse(infoText) as { "child-pid"?: unknown };
        if (typeof parsed["child-pid"] === "number") progress.childPid = parsed["child-pid"];
        check();
      } catch {
        /* incomplete JSON: wait for more */
      }
    });
    ready.on("data", (c: Buffer) => {
      readyText += c.toString("utf8");
      const line = readyText.split("\n")[0] ?? "";
      if (!readyText.includes("\n")) return;
      if (line === "ready") {
        isReady = true;
        check();
      } else finish(new Error(line.replace(/^error /, "")));
    });
    info.on("error", () => undefined);
    ready.on("error", () => undefined);
  });
}
