import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, promises as fs } from "node:fs";
import { AdminClient } from "./admin-client.js";
import { launcherArgv } from "./launcher.js";
import type { SandboxPaths } from "./layout.js";
import { identify, isAlive, signalIfAlive, sleep, waitFor, type ProcIdentity } from "./procfs.js";

export interface ProxyLaunch {
  readonly node: string;
  readonly cliPath: string;
  readonly caDir: string;
  /** --hosts/--dns-server/--internal-allow/--upstream-ca, handed to every sandbox's proxy. */
  readonly extraArgs: readonly string[];
  readonly readyTimeoutMs: number;
}

export interface StartedProxy {
  readonly identity: ProcIdentity;
  /** For exit events: supervision reacts at once instead of at its next poll. */
  readonly child: ChildProcess;
}

export class ProxyStartError extends Error {}

export function proxyArgs(id: string, p: SandboxPaths, launch: ProxyLaunch): string[] {
  return [
    launch.cliPath,
    "proxy",
    "--listen",
    `unix:${p.proxySocket}`,
    "--admin",
    `unix:${p.adminSocket}`,
    "--admin-token-file",
    p.adminToken,
    "--policy-file",
    p.policyFile,
    "--ca-dir",
    launch.caDir,
    "--sandbox-id",
    id,
    ...launch.extraArgs,
  ];
}

/**
 * Start one sandbox's proxy and resolve once it enforces: its listening line is in its log AND its admin
 * /healthz answers 200 over the unix socket. It runs detached (own session and process group, output to a file,
 * no pipe to this process) so that it outlives a restart of the control module.
 */
export async function startProxy(id: string, p: SandboxPaths, launch: ProxyLaunch): Promise<StartedProxy> {
  // A proxy that died by SIGKILL leaves its socket files behind, and listen() on them fails with EADDRINUSE.
  await fs.rm(p.proxySocket, { force: true });
  await fs.rm(p.adminSocket, { force: true });
  const offset = await fs.stat(p.proxyLog).then(
    (s) => s.size,
    () => 0,
  );
  const out = openSync(p.proxyLog, "a", 0o600);
  let child: ChildProcess;
  try {
    const argv = launcherArgv([launch.node, ...proxyArgs(id, p, launch)], { procsFile: null, keepFds: 3 });
    child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ["ignore", out, out], env: process.env });
  } finally {
    closeSync(out);
  }
  // Held in an object: the exit callback writes it while the readiness loop reads it.
  const status: { exited: string | null } = { exited: null };
  child.once("exit", (code, signal) => {
    status.exited = signal ? `signal ${signal}` : `code ${code}`;
  });
  child.once("error", (err) => {
    status.exited = err.message;
  });
  const pid = child.pid;
  const identity = pid === undefined ? null : await identify(pid);
  if (!identity) throw new ProxyStartError(`the proxy did not start: ${status.exited ?? "no pid"}; ${await logTail(p.proxyLog, offset)}`);

  const admin = new AdminClient(p.adminSocket, (await fs.readFile(p.adminToken, "utf8")).trim(), 2_000);
  let listening = false;
  const ready = await waitFor(
    async () => {
      if (status.exited !== null) return true;
      if (!listening) listening = await hasListeningLine(p.proxyLog, offset);
      return listening && (await admin.healthy());
    },
    launch.readyTimeoutMs,
    25,
  );
  if (status.exited !== null || !ready) {
    const why = status.exited !== null ? `it exited (${status.exited})` : `it was not ready within ${launch.readyTimeoutMs} ms`;
    await stopProxy(identity, 0);
    throw new ProxyStartError(`the proxy for sandbox ${id} failed to start: ${why}; ${await logTail(p.proxyLog, offset)}`);
  }
  return { identity, child };
}

/** SIGTERM the proxy's process group (it drains), SIGKILL after `graceMs`. */
export async function stopProxy(identity: ProcIdentity | null, graceMs = 2_000): Promise<void> {
  if (!identity) return;
  if (graceMs > 0 && (await signalIfAlive(identity, "SIGTERM", true))) {
    if (await waitFor(async () => !(await isAlive(identity)), graceMs, 25)) return;
  }
  await signalIfAlive(identity, "SIGKILL", true);
  await waitFor(async () => !(await isAlive(identity)), 2_000, 10);
}

async function hasListeningLine(file: string, offset: number): Promise<boolean> {
  const text = await readFrom(file, offset);
  for (const line of text.split("\n")) {
    if (!line.includes('"listening"')) continue;
    try {
      if ((JSON.parse(line) as { event?: unknown }).event === "listening") return true;
    } catch {
      /* a partial line: read again next time */
    }
  }
  return false;
}

async function readFrom(file: string, offset: number, max = 1 << 20): Promise<string> {
  const fh = await fs.open(file, "r").catch(() => null);
  if (!fh) return "";
  try {
    const { size } = await fh.stat();
    const len = Math.min(Math.max(0, size - offset), max);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, offset);
    return buf.toString("utf8");
  } finally {
    await fh.close();
  }
}

/** The last lines the proxy wrote, for an error message (the proxy never logs secrets). */
export async function logTail(file: string, offset: number, lines = 5): Promise<string> {
  await sleep(0);
  const text = (await readFrom(file, offset)).trim();
  if (!text) return "it wrote nothing";
  return `its last output: ${text.split("\n").slice(-lines).join(" | ").slice(0, 2_000)}`;
}
