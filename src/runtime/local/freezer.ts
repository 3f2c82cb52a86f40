import { constants, existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { isAlive, processesInPidNamespace, readStat, readStopPending, sleep, waitFor, type ProcIdentity } from "./procfs.js";

export type FreezerKind = "cgroup-v2" | "cgroup-v1" | "sigstop";

/** What a freezer needs to find a sandbox's processes. */
export interface FreezeTarget {
  readonly id: string;
  /** The sandbox's init (pid 1 of its pid namespace, seen from the host). */
  readonly init: ProcIdentity;
  /** `pid:[…]` of the sandbox's pid namespace; the signal fallback finds processes by it. */
  readonly pidNs: string;
  /**
   * bwrap's host-side monitor (the init's parent), spared by killAll: it reaps the init and then exits by
   * itself. Killed first, it would leave the init a zombie reparented to the host's pid 1.
   */
  readonly monitor?: ProcIdentity | null;
}

/**
 * Freezes and kills every process of one sandbox. The cgroup freezers are exact (the kernel moves every
 * descendant along and stops them atomically); the signal fallback is best effort against a process that
 * forks while it is being stopped, so it loops until a pass finds nothing new.
 */
export interface Freezer {
  readonly kind: FreezerKind;
  /** Create the sandbox's group. Returns the `cgroup.procs` file a launcher writes its own pid into, or null. */
  create(id: string): Promise<string | null>;
  /** The `cgroup.procs` path of an existing group (or null for signals). */
  procsFile(id: string): string | null;
  freeze(t: FreezeTarget): Promise<void>;
  thaw(t: FreezeTarget): Promise<void>;
  isFrozen(t: FreezeTarget): Promise<boolean>;
  /** SIGKILL every process of the sandbox and wait until they are gone (bounded). */
  killAll(t: FreezeTarget): Promise<void>;
  /** Remove the group (after killAll). Idempotent. */
  remove(id: string): Promise<void>;
  /** Human-readable state for tests and logs: FROZEN/THAWED, 1/0, or per-process states. */
  describe(t: FreezeTarget): Promise<string>;
}

const GROUP = "sandbox-egress";
// Generous: under heavy I/O a process can sit in uninterruptible sleep before a pending stop takes effect.
const FREEZE_TIMEOUT_MS = 12_000;

export class FreezerError extends Error {}

/**
 * Pick the best freezer this host offers. On a pure cgroup2 host that is cgroup.freeze; on a v1 or hybrid host
 * the v1 freezer controller (the hierarchy administrators and tools look at there); a hybrid host's unified
 * mount comes next; signals when no cgroup hierarchy is writable (e.g. inside an unprivileged container).
 */
export async function detectFreezer(root = "/sys/fs/cgroup", prefer?: FreezerKind): Promise<Freezer> {
  const candidates: (() => CgroupFreezer | null)[] = [];
  const v2Pure = (): CgroupFreezer | null => (existsSync(path.join(root, "cgroup.controllers")) ? new CgroupV2Freezer(path.join(root, GROUP)) : null);
  const v1 = (): CgroupFreezer | null => (existsSync(path.join(root, "freezer", "cgroup.procs")) ? new CgroupV1Freezer(path.join(root, "freezer", GROUP)) : null);
  const v2Hybrid = (): CgroupFreezer | null => (existsSync(path.join(root, "unified", "cgroup.controllers")) ? new CgroupV2Freezer(path.join(root, "unified", GROUP)) : null);
  if (prefer === "sigstop") return new SignalFreezer();
  if (prefer === "cgroup-v2") candidates.push(v2Pure, v2Hybrid);
  else if (prefer === "cgroup-v1") candidates.push(v1);
  else candidates.push(v2Pure, v1, v2Hybrid);
  for (const make of candidates) {
    const f = make();
    if (f && (await f.usable())) return f;
  }
  if (prefer) throw new FreezerError(`the ${prefer} freezer is not available on this host`);
  return new SignalFreezer();
}

abstract class CgroupFreezer implements Freezer {
  abstract readonly kind: FreezerKind;
  constructor(readonly base: string) {}

  /** Can this process create groups here (root, writable hierarchy)? */
  async usable(): Promise<boolean> {
    try {
      await fs.mkdir(this.base, { recursive: true });
      await fs.access(path.join(this.base, "cgroup.procs"), constants.W_OK);
      return true;
    } catch {
      return false;
    }
  }

  dir(id: string): string {
    return path.join(this.base, id);
  }

  procsFile(id: string): string {
    return path.join(this.dir(id), "cgroup.procs");
  }

  async create(id: string): Promise<string> {
    await fs.mkdir(this.dir(id), { recursive: true });
    // Groups are named by sandbox id alone; a second data directory on the same host reusing an id must not
    // join (and later freeze or kill) another sandbox's processes.
    if ((await this.pids(id)).length > 0) throw new FreezerError(`cgroup ${this.dir(id)} already holds processes of another sandbox with id ${id}`);
    return this.procsFile(id);
  }

  async pids(id: string): Promise<number[]> {
    try {
      const text = await fs.readFile(this.procsFile(id), "utf8");
      return text.split("\n").filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  abstract freeze(t: FreezeTarget): Promise<void>;
  abstract thaw(t: FreezeTarget): Promise<void>;
  abstract isFrozen(t: FreezeTarget): Promise<boolean>;
  abstract describe(t: FreezeTarget): Promise<string>;

  async killAll(t: FreezeTarget): Promise<void> {
    const spare = t.monitor && (await isAlive(t.monitor)) ? t.monitor.pid : -1;
    const onlySpared = async (): Promise<boolean> => (await this.pids(t.id)).every((p) => p === spare);
    for (let sweep = 0; sweep < 3; sweep++) {
      // Repeated: a process may fork between reading cgroup.procs and the kill.
      await this.killPids(t.id, spare);
      await this.unfreeze(t);
      if (await waitFor(onlySpared, 5_000, 20)) return;
    }
  }

  protected async killPids(id: string, spare: number): Promise<void> {
    for (const pid of await this.pids(id)) {
      if (pid === spare) continue;
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }

  /** After SIGKILL: v1 frozen tasks only die once thawed, and a frozen monitor cannot reap. */
  protected abstract unfreeze(t: FreezeTarget): Promise<void>;

  async remove(id: string): Promise<void> {
    const dir = this.dir(id);
    if (!existsSync(dir)) return;
    // rmdir fails with EBUSY while the kernel still accounts an exiting task: retry briefly.
    for (let i = 0; i < 50; i++) {
      try {
        await fs.rmdir(dir);
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") return;
        if (code !== "EBUSY") throw err;
        await sleep(50);
      }
    }
    throw new FreezerError(`cannot remove ${dir}: processes remain in it`);
  }
}

/** cgroup v2: `cgroup.freeze` (1/0), completion read from `cgroup.events` ("frozen 1"); `cgroup.kill` to kill. */
export class CgroupV2Freezer extends CgroupFreezer {
  readonly kind = "cgroup-v2" as const;

  override async create(id: string): Promise<string> {
    const procs = await super.create(id);
    if (!existsSync(path.join(this.dir(id), "cgroup.freeze"))) throw new FreezerError("this kernel's cgroup2 has no cgroup.freeze (Linux < 5.2)");
    return procs;
  }

  async freeze(t: FreezeTarget): Promise<void> {
    await fs.writeFile(path.join(this.dir(t.id), "cgroup.freeze"), "1");
    const ok = await waitFor(() => this.isFrozen(t), FREEZE_TIMEOUT_MS);
    if (!ok) {
      await fs.writeFile(path.join(this.dir(t.id), "cgroup.freeze"), "0").catch(() => undefined);
      throw new FreezerError(`sandbox ${t.id} did not freeze within ${FREEZE_TIMEOUT_MS} ms`);
    }
  }

  async thaw(t: FreezeTarget): Promise<void> {
    await fs.writeFile(path.join(this.dir(t.id), "cgroup.freeze"), "0");
    await waitFor(async () => !(await this.isFrozen(t)), FREEZE_TIMEOUT_MS);
  }

  async isFrozen(t: FreezeTarget): Promise<boolean> {
    try {
      const events = await fs.readFile(path.join(this.dir(t.id), "cgroup.events"), "utf8");
      return /^frozen 1$/m.test(events);
    } catch {
      return false;
    }
  }

  async describe(t: FreezeTarget): Promise<string> {
    return (await this.isFrozen(t)) ? "frozen 1" : "frozen 0";
  }

  protected async unfreeze(t: FreezeTarget): Promise<void> {
    // SIGKILL works on v2-frozen tasks, but the spared monitor must run to reap the init.
    await fs.writeFile(path.join(this.dir(t.id), "cgroup.freeze"), "0").catch(() => undefined);
  }
}

/** cgroup v1 freezer controller: `freezer.state` FROZEN/THAWED (FREEZING while in progress). */
export class CgroupV1Freezer extends CgroupFreezer {
  readonly kind = "cgroup-v1" as const;

  private state(id: string): Promise<string> {
    return fs.readFile(path.join(this.dir(id), "freezer.state"), "utf8").then(
      (s) => s.trim(),
      () => "",
    );
  }

  async freeze(t: FreezeTarget): Promise<void> {
    await fs.writeFile(path.join(this.dir(t.id), "freezer.state"), "FROZEN");
    const ok = await waitFor(async () => (await this.state(t.id)) === "FROZEN", FREEZE_TIMEOUT_MS);
    if (!ok) {
      await fs.writeFile(path.join(this.dir(t.id), "freezer.state"), "THAWED").catch(() => undefined);
      throw new FreezerError(`sandbox ${t.id} did not freeze within ${FREEZE_TIMEOUT_MS} ms (stuck in FREEZING)`);
    }
  }

  async thaw(t: FreezeTarget): Promise<void> {
    await fs.writeFile(path.join(this.dir(t.id), "freezer.state"), "THAWED");
    await waitFor(async () => (await this.state(t.id)) === "THAWED", FREEZE_TIMEOUT_MS);
  }

  async isFrozen(t: FreezeTarget): Promise<boolean> {
    return (await this.state(t.id)) === "FROZEN";
  }

  async describe(t: FreezeTarget): Promise<string> {
    return this.state(t.id);
  }

  protected async unfreeze(t: FreezeTarget): Promise<void> {
    // A task in the v1 refrigerator keeps a pending SIGKILL until it is thawed.
    if ((await this.state(t.id)) !== "THAWED") await fs.writeFile(path.join(this.dir(t.id), "freezer.state"), "THAWED").catch(() => undefined);
  }
}

/**
 * Stopped, gone, or unable to run user code again before it stops: in uninterruptible sleep with a SIGSTOP
 * pending (a vfork() parent whose child was stopped before execve waits in D until the child is continued).
 */
async function stoppedOrStopping(pid: number): Promise<boolean> {
  const st = await readStat(pid);
  if (!st || st.state === "T" || st.state === "t" || st.state === "Z" || st.state === "X") return true;
  return st.state === "D" && (await readStopPending(pid));
}

/**
 * No writable cgroup: SIGSTOP every process in the sandbox's pid namespace (SIGCONT to thaw). The namespace is
 * the unit, not the process tree, so commands started by exec are stopped too.
 */
export class SignalFreezer implements Freezer {
  readonly kind = "sigstop" as const;

  async create(): Promise<null> {
    return null;
  }

  procsFile(): null {
    return null;
  }

  private async members(t: FreezeTarget): Promise<number[]> {
    if (!(await isAlive(t.init))) return [];
    return processesInPidNamespace(t.pidNs);
  }

  async freeze(t: FreezeTarget): Promise<void> {
    const deadline = Date.now() + FREEZE_TIMEOUT_MS;
    // Stop, then re-scan: anything forked meanwhile is stopped on the next pass; done when a pass finds every
    // member already stopped.
    for (;;) {
      let pending = 0;
      for (const pid of await this.members(t)) {
        if (await stoppedOrStopping(pid)) continue;
        pending++;
        try {
          process.kill(pid, "SIGSTOP");
        } catch {
          /* exited */
        }
      }
      if (pending === 0) return;
      if (Date.now() > deadline) throw new FreezerError(`sandbox ${t.id} did not stop within ${FREEZE_TIMEOUT_MS} ms`);
      await sleep(10);
    }
  }

  async thaw(t: FreezeTarget): Promise<void> {
    for (const pid of await this.members(t)) {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        /* exited */
      }
    }
  }

  async isFrozen(t: FreezeTarget): Promise<boolean> {
    const members = await this.members(t);
    if (members.length === 0) return false;
    for (const pid of members) {
      if (!(await stoppedOrStopping(pid))) return false;
    }
    return true;
  }

  async describe(t: FreezeTarget): Promise<string> {
    const states: string[] = [];
    for (const pid of await this.members(t)) states.push(`${pid}:${(await readStat(pid))?.state ?? "?"}`);
    return states.join(" ");
  }

  async killAll(t: FreezeTarget): Promise<void> {
    // Killing pid 1 of a pid namespace makes the kernel SIGKILL every other member.
    if (await isAlive(t.init)) {
      try {
        process.kill(t.init.pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    await waitFor(async () => (await processesInPidNamespace(t.pidNs)).length === 0, 5_000, 25);
  }

  async remove(): Promise<void> {}
}
