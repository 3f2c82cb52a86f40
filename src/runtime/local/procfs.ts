import { promises as fs } from "node:fs";

/**
 * A process as the driver remembers it: the pid plus its start time (field 22 of /proc/PID/stat, clock ticks
 * since boot). Pids are reused; the pair is not, so a recorded identity never names some later process.
 */
export interface ProcIdentity {
  readonly pid: number;
  readonly start: number;
}

export interface ProcStat {
  /** One letter: R, S, D, T, t, Z, X, I… */
  readonly state: string;
  readonly ppid: number;
  readonly pgrp: number;
  readonly start: number;
}

/** Parse /proc/PID/stat; null when the process does not exist. */
export async function readStat(pid: number): Promise<ProcStat | null> {
  let text: string;
  try {
    text = await fs.readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  return parseStat(text);
}

export function parseStat(text: string): ProcStat | null {
  // comm (field 2) is in parentheses and may itself contain spaces and ')': fields resume after the LAST ')'.
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  const f = text.slice(close + 2).split(" ");
  // f[0] is field 3 (state), so field N is f[N - 3].
  const state = f[0];
  const ppid = Number(f[1]);
  const pgrp = Number(f[2]);
  const start = Number(f[19]);
  if (!state || !Number.isFinite(ppid) || !Number.isFinite(start)) return null;
  return { state, ppid, pgrp, start };
}

/**
 * Whether a SIGSTOP is pending on the process (thread or process-wide set, from /proc/PID/status SigPnd/ShdPnd,
 * hex masks where signal N is bit N-1). A task in uninterruptible sleep with a stop pending cannot run any user
 * code again before it stops: the case of a shell parent in vfork() whose child was stopped before its execve
 * (dash uses vfork), which waits in state D until the child is continued.
 */
export function stopPending(statusText: string): boolean {
  const SIGSTOP_BIT = 1n << 18n; // SIGSTOP = 19 on Linux
  for (const field of ["SigPnd", "ShdPnd"]) {
    const m = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(statusText);
    if (m && (BigInt(`0x${m[1]}`) & SIGSTOP_BIT) !== 0n) return true;
  }
  return false;
}

export async function readStopPending(pid: number): Promise<boolean> {
  try {
    return stopPending(await fs.readFile(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

/** The identity of a live process now, for recording right after spawn. */
export async function identify(pid: number): Promise<ProcIdentity | null> {
  const st = await readStat(pid);
  if (!st || st.state === "Z" || st.state === "X") return null;
  return { pid, start: st.start };
}

/** True when the recorded process still runs: same pid, same start time, and not a zombie waiting to be reaped. */
export async function isAlive(id: ProcIdentity | null | undefined): Promise<boolean> {
  if (!id) return false;
  const st = await readStat(id.pid);
  return st !== null && st.start === id.start && st.state !== "Z" && st.state !== "X";
}

/**
 * Signal a recorded process (or its process group) only if it is still the same process: a stale record must
 * never kill whatever now has that pid.
 */
export async function signalIfAlive(id: ProcIdentity | null | undefined, signal: NodeJS.Signals, group = false): Promise<boolean> {
  if (!id || !(await isAlive(id))) return false;
  try {
    process.kill(group ? -id.pid : id.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** `pid:[4026532180]` for the process's pid namespace, or null. */
export async function pidNamespace(pid: number): Promise<string | null> {
  return namespace(pid, "pid");
}

/** `KIND:[inode]` of one of the process's namespaces, or null. */
export async function namespace(pid: number | "self", kind: string): Promise<string | null> {
  try {
    return await fs.readlink(`/proc/${pid}/ns/${kind}`);
  } catch {
    return null;
  }
}

/**
 * Every process (host pids) whose pid namespace is `ns`: the whole sandbox, including commands started by exec
 * (they join the namespace through nsenter, so they are not descendants of the sandbox's init).
 */
export async function processesInPidNamespace(ns: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if ((await pidNamespace(pid)) === ns) out.push(pid);
  }
  return out;
}

/** Wait until `pred` holds, polling; false on timeout. */
export async function waitFor(pred: () => Promise<boolean> | boolean, timeoutMs: number, intervalMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
