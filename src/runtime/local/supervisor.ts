import type { ChildProcess } from "node:child_process";
import type { Logger } from "../../telemetry/logger.js";
import { AdminClient } from "./admin-client.js";
import type { FreezeTarget, Freezer } from "./freezer.js";
import { writeState, type SandboxPaths, type SandboxState } from "./layout.js";
import { isAlive } from "./procfs.js";
import { startProxy, type ProxyLaunch } from "./proxy-process.js";
import type { KeyedSerial } from "./serial.js";

/** One sandbox as the driver handles it: its files, its state, its proxy's admin API, its freezer. */
export interface Managed {
  readonly id: string;
  readonly paths: SandboxPaths;
  state: SandboxState;
  readonly admin: AdminClient;
  readonly freezer: Freezer;
  proxyChild: ChildProcess | null;
  /** Frozen by the driver because its proxy is down and could not be restarted (fail closed). */
  failClosed: boolean;
  restartFailures: number;
  nextRestartAt: number;
  checking: boolean;
  destroying: boolean;
  reportedExit: boolean;
}

export function managed(paths: SandboxPaths, state: SandboxState, freezer: Freezer, token: string): Managed {
  return {
    id: state.id,
    paths,
    state,
    admin: new AdminClient(paths.adminSocket, token),
    freezer,
    proxyChild: null,
    failClosed: false,
    restartFailures: 0,
    nextRestartAt: 0,
    checking: false,
    destroying: false,
    reportedExit: false,
  };
}

/** What the freezer needs to find this sandbox's processes. */
export function freezeTarget(m: Managed): FreezeTarget {
  return { id: m.id, init: m.state.init ?? { pid: -1, start: -1 }, pidNs: m.state.pidNs ?? "", monitor: m.state.bwrap };
}

export interface SupervisorOptions {
  serial: KeyedSerial;
  log: Logger;
  intervalMs: number;
  launch: () => ProxyLaunch;
}

/**
 * Keeps every sandbox's proxy alive while the sandbox lives: polls each recorded proxy (pid + start time) and
 * reacts at once to the exit of a proxy this process spawned. Restarts go through the per-sandbox queue, so
 * they never interleave with a pause, resume or snapshot of the same sandbox.
 */
export class Supervisor {
  private readonly watched = new Map<string, Managed>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: SupervisorOptions) {}

  get(id: string): Managed | undefined {
    return this.watched.get(id);
  }

  watch(m: Managed, child: ChildProcess | null): void {
    this.attachChild(m, child);
    this.watched.set(m.id, m);
    if (!this.timer) {
      this.timer = setInterval(() => {
        for (const w of this.watched.values()) this.check(w);
      }, this.opts.intervalMs);
      // Supervision alone must not keep the control module's process alive.
      this.timer.unref();
    }
  }

  /** Stop watching one sandbox (it is being destroyed). */
  unwatch(id: string): Managed | undefined {
    const m = this.watched.get(id);
    if (m) {
      m.destroying = true;
      m.proxyChild?.removeAllListeners("exit");
      this.watched.delete(id);
    }
    if (this.watched.size === 0) this.stop();
    return m;
  }

  /** Stop watching everything; the processes keep running. */
  detach(): void {
    this.stop();
    for (const m of this.watched.values()) {
      m.proxyChild?.removeAllListeners("exit");
      m.proxyChild?.unref();
    }
    this.watched.clear();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private attachChild(m: Managed, child: ChildProcess | null): void {
    m.proxyChild?.removeAllListeners("exit");
    m.proxyChild = child;
    if (!child) return;
    child.unref();
    // React at once to our own child's exit; adopted proxies (not our children) are caught by the poll.
    child.once("exit", () => setImmediate(() => this.check(m)));
  }

  private check(m: Managed): void {
    if (m.checking || m.destroying || this.watched.get(m.id) !== m) return;
    m.checking = true;
    this.checkOnce(m)
      .catch((err: unknown) => this.opts.log.error({ event: "supervise-error", sandbox: m.id, err: String(err) }, "supervision check failed"))
      .finally(() => {
        m.checking = false;
      });
  }

  private async checkOnce(m: Managed): Promise<void> {
    if (!(await isAlive(m.state.init))) {
      // The lifecycle service finds out through status() and decides; nothing to restart for a dead sandbox.
      if (!m.reportedExit) this.opts.log.warn({ event: "sandbox-exited", sandbox: m.id }, "the sandbox's processes exited");
      m.reportedExit = true;
      return;
    }
    if (await isAlive(m.state.proxy)) return;
    if (Date.now() < m.nextRestartAt) return;
    await this.opts.serial.run(m.id, async () => {
      if (m.destroying || (await isAlive(m.state.proxy))) return;
      await this.restartProxy(m, "its proxy exited");
    });
  }

  /**
   * The proxy is gone while the sandbox lives. Nothing can leave meanwhile (the relay has no socket to reach),
   * but the invariant is stronger: a sandbox never runs without its proxy. Restart it from the same files (same
   * policy file, same revision); if that fails, freeze the sandbox and keep retrying with backoff, thawing it
   * only once a proxy enforces again. Call it inside the sandbox's queue.
   */
  async restartProxy(m: Managed, why: string): Promise<boolean> {
    const { log } = this.opts;
    log.warn({ event: "proxy-restart", sandbox: m.id, why }, "restarting the sandbox's proxy");
    let lastError = "";
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        const proxy = await startProxy(m.id, m.paths, this.opts.launch());
        m.state.proxy = proxy.identity;
        this.attachChild(m, proxy.child);
        // The paused flag lives in the proxy's memory only: a new proxy must be told again.
        if (m.state.paused) await m.admin.setPaused(true);
        await writeState(m.paths, m.state);
        if (m.failClosed && !m.state.paused) await m.freezer.thaw(freezeTarget(m));
        m.failClosed = false;
        m.restartFailures = 0;
        m.nextRestartAt = 0;
        log.info({ event: "proxy-restarted", sandbox: m.id, pid: proxy.identity.pid }, "proxy restarted");
        return true;
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
      }
    }
    m.restartFailures++;
    m.nextRestartAt = Date.now() + Math.min(30_000, 1_000 * 2 ** m.restartFailures);
    if (!m.failClosed) {
      try {
        if (!(await m.freezer.isFrozen(freezeTarget(m)))) await m.freezer.freeze(freezeTarget(m));
        m.failClosed = true;
      } catch (err) {
        // Cannot freeze either: kill it. A sandbox without its proxy must not keep running.
        log.error({ event: "fail-closed-kill", sandbox: m.id, err: String(err) }, "cannot freeze a sandbox without its proxy; killing it");
        await m.freezer.killAll(freezeTarget(m));
      }
    }
    log.error({ event: "proxy-restart-failed", sandbox: m.id, err: lastError, retryInMs: m.nextRestartAt - Date.now() }, "proxy cannot be restarted; sandbox frozen");
    return false;
  }
}
