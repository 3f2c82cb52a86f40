import { randomBytes } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import type { Policy } from "../../policy/types.js";
import type { Logger } from "../../telemetry/logger.js";
import { CertificateAuthority } from "../../tls/index.js";
import { writeFileAtomic } from "../../util/atomic-file.js";
import {
  RuntimeError,
  type ExecResult,
  type RuntimeCapabilities,
  type RuntimeDriver,
  type RuntimeRecord,
  type SandboxSpec,
  type SnapshotArtifact,
} from "../driver.js";
import { probeCriu, type MemorySnapshotSupport } from "./criu.js";
import { ENV_NAME, execInSandbox } from "./exec.js";
import { detectFreezer, type FreezeTarget, type Freezer, type FreezerKind } from "./freezer.js";
import { INSIDE, readState, sandboxPaths, socketPathProblem, validId, writeState, type SandboxPaths, type SandboxState } from "./layout.js";
import { unpackSnapshot, verifySnapshot, writeSnapshot, type VerifiedLayout } from "./oci.js";
import { isAlive, namespace, signalIfAlive, waitFor, type ProcIdentity } from "./procfs.js";
import { startProxy, stopProxy, type ProxyLaunch } from "./proxy-process.js";
import { BRIDGE_PORT, startSandbox } from "./sandbox-process.js";
import { KeyedSerial } from "./serial.js";
import { freezeTarget, managed, Supervisor, type Managed } from "./supervisor.js";

export const LOCAL_IMAGE = "local:host";
const DEFAULT_ENTRYPOINT = ["sleep", "infinity"] as const;
/** nobody:nogroup: the sandbox's processes own /workspace and nothing else on the host. */
const DEFAULT_UID = 65534;
const DEFAULT_GID = 65534;
const SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
const PATH_INSIDE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface LocalDriverOptions {
  dataDir: string;
  /** bin/sandbox-egress.js; default: the one in this repository. */
  cliPath?: string;
  /** --hosts/--dns-server/--internal-allow/--upstream-ca handed to every sandbox's proxy. */
  proxyArgs?: string[];
  log?: Logger;
  /** Force a freezer instead of detecting the best one (tests exercise every kind on one host). */
  freezer?: FreezerKind;
  /** The uid/gid the sandbox's processes run as (default 65534, nobody). */
  sandboxUid?: number;
  sandboxGid?: number;
  /** How often supervision checks each proxy (an exited child is noticed at once regardless). Default 500 ms. */
  superviseIntervalMs?: number;
  /** How long a proxy or a sandbox may take to become ready. Default 20 s. */
  readyTimeoutMs?: number;
  /** exec output cap per stream. Default 1 MiB. */
  maxExecOutputBytes?: number;
  /** Extra host directories hidden inside every sandbox (the data directory always is). */
  hidePaths?: string[];
}

/**
 * RuntimeDriver for one Linux machine, no container engine: each sandbox is a bubblewrap process tree in its
 * own pid/net/ipc/uts/mount namespaces whose network namespace has only `lo`; its only way out is a relay on
 * 127.0.0.1:3128 to its own egress proxy (a detached `sandbox-egress proxy` on a unix socket), started and
 * healthy before the sandbox's first process runs. Pause = proxy refuses everything + freezer cgroup (v2, v1,
 * or SIGSTOP as a fallback). Snapshots = OCI image layouts of /workspace.
 */
export class LocalDriver implements RuntimeDriver {
  readonly name = "local";
  private readonly dataDir: string;
  private readonly cliPath: string;
  private readonly bridgePath: string;
  private readonly proxyArgs: readonly string[];
  private readonly log: Logger;
  private readonly uid: number;
  private readonly gid: number;
  private readonly readyTimeoutMs: number;
  private readonly maxExecOutputBytes: number;
  private readonly hide: readonly string[];
  private readonly serial = new KeyedSerial();
  private readonly supervisor: Supervisor;
  private readonly freezers = new Map<string, Promise<Freezer>>();
  private criu: Promise<MemorySnapshotSupport> | null = null;
  private caPem: Promise<string> | null = null;

  constructor(private readonly opts: LocalDriverOptions) {
    this.dataDir = path.resolve(opts.dataDir);
    const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
    this.cliPath = path.resolve(opts.cliPath ?? path.join(repoRoot, "bin", "sandbox-egress.js"));
    // Running from dist/ the bridge sits beside this file; from src/ (tests) use the compiled copy.
    const beside = fileURLToPath(new URL("./bridge.js", import.meta.url));
    this.bridgePath = existsSync(beside) ? beside : path.join(path.dirname(path.dirname(this.cliPath)), "dist", "runtime", "local", "bridge.js");
    this.proxyArgs = [...(opts.proxyArgs ?? [])];
    this.log = (opts.log ?? pino({ level: "silent" })).child({ component: "runtime-local" });
    this.uid = opts.sandboxUid ?? DEFAULT_UID;
    this.gid = opts.sandboxGid ?? DEFAULT_GID;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
    this.maxExecOutputBytes = opts.maxExecOutputBytes ?? 1024 * 1024;
    this.supervisor = new Supervisor({ serial: this.serial, log: this.log, intervalMs: opts.superviseIntervalMs ?? 500, launch: () => this.proxyLaunch() });
    this.hide = [this.dataDir, ...(opts.hidePaths ?? []).map((p) => path.resolve(p))];
  }

  // ---- capabilities ------------------------------------------------------------------------------------------

  async capabilities(): Promise<RuntimeCapabilities> {
    this.criu ??= probeCriu();
    const [memorySnapshot, freezer] = await Promise.all([this.criu, this.freezer()]);
    return { images: [LOCAL_IMAGE], memorySnapshot, freezer: freezer.kind };
  }

  private freezer(kind: FreezerKind | undefined = this.opts.freezer): Promise<Freezer> {
    const key = kind ?? "auto";
    let f = this.freezers.get(key);
    if (!f) {
      f = detectFreezer("/sys/fs/cgroup", kind);
      this.freezers.set(key, f);
      f.catch(() => this.freezers.delete(key));
    }
    return f;
  }

  // ---- create ------------------------------------------------------------------------------------------------

  create(spec: SandboxSpec): Promise<RuntimeRecord> {
    // Queued per id like every other operation: a destroy() that arrives mid-create waits for it, then stops it.
    return validId(spec.id) ? this.serial.run(spec.id, () => this.createNow(spec)) : this.createNow(spec);
  }

  private async createNow(spec: SandboxSpec): Promise<RuntimeRecord> {
    const { id } = spec;
    if (!validId(id)) throw new RuntimeError("failed", `sandbox id ${JSON.stringify(id)} must be 1-63 characters of A-Z a-z 0-9 _ . - starting with a letter or digit`);
    if (spec.image !== LOCAL_IMAGE) throw new RuntimeError("unsupported", `image ${JSON.stringify(spec.image)} is not available; the local runtime has only ${JSON.stringify(LOCAL_IMAGE)}`);
    for (const [k, v] of Object.entries(spec.env)) {
      if (!ENV_NAME.test(k)) throw new RuntimeError("failed", `environment variable name ${JSON.stringify(k)} is not valid (letters, digits and _, not starting with a digit)`);
      if (typeof v !== "string" || v.includes("\0")) throw new RuntimeError("failed", `environment variable ${k} must be a string without NUL bytes`);
    }
    const entrypoint = spec.entrypoint && spec.entrypoint.length > 0 ? [...spec.entrypoint] : [...DEFAULT_ENTRYPOINT];
    const paths = sandboxPaths(this.dataDir, id);
    const tooLong = socketPathProblem(paths);
    if (tooLong) throw new RuntimeError("failed", tooLong);
    if (existsSync(paths.dir)) throw new RuntimeError("failed", `sandbox ${id} already exists in ${paths.dir}`);
    if (!existsSync(this.bridgePath)) throw new RuntimeError("failed", `${this.bridgePath} is missing: run npm run build`);
    if (!existsSync(this.cliPath)) throw new RuntimeError("failed", `${this.cliPath} is missing`);

    // A tampered or truncated snapshot is refused before anything exists on disk or runs.
    const verified = spec.restoreFrom === undefined ? null : await verifySnapshot(spec.restoreFrom);
    const freezer = await this.freezer();
    const started: Leftovers = { proxy: null, bwrap: null, init: null, pidNs: null, killGroup: false };
    const t0 = Date.now();
    // Outside the try: if another process made this directory meanwhile, the cleanup below must not remove it.
    await fs.mkdir(path.dirname(paths.dir), { recursive: true, mode: 0o700 });
    await fs.mkdir(paths.dir, { mode: 0o700 }).catch((err: unknown) => {
      throw new RuntimeError("failed", `cannot create ${paths.dir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    });
    try {
      await fs.mkdir(paths.egressDir, { mode: 0o755 });
      await this.prepareWorkspace(paths, verified);
      // The policy is on disk before any process starts: the proxy enforces it from its first connection.
      await writeFileAtomic(paths.policyFile, `${JSON.stringify(spec.policy, null, 2)}\n`, { mode: 0o600 });
      const token = randomBytes(32).toString("hex");
      await writeFileAtomic(paths.adminToken, token, { mode: 0o600 });
      await writeFileAtomic(paths.caBundle, await this.caBundle(), { mode: 0o644 });
      const procsFile = await freezer.create(id);
      started.killGroup = true;

      const proxy = await startProxy(id, paths, this.proxyLaunch());
      started.proxy = proxy.identity;
      const env = this.sandboxEnv(id, spec.env);
      const state: SandboxState = {
        version: 1,
        id,
        dir: paths.dir,
        freezer: freezer.kind,
        proxy: proxy.identity,
        bwrap: null,
        init: null,
        pidNs: null,
        paused: false,
        uid: this.uid,
        gid: this.gid,
        env,
        createdAt: new Date().toISOString(),
      };
      // Written before the sandbox starts too, so that a crash right here still leaves destroy() a proxy to stop.
      await writeState(paths, state);

      const sandbox = await startSandbox({
        id,
        paths,
        bridgePath: this.bridgePath,
        node: process.execPath,
        uid: this.uid,
        gid: this.gid,
        env,
        entrypoint,
        procsFile,
        hide: this.hide,
        readyTimeoutMs: this.readyTimeoutMs,
      });
      started.bwrap = sandbox.bwrap;
      started.init = sandbox.init;
      started.pidNs = sandbox.pidNs;
      sandbox.child.unref();
      state.bwrap = sandbox.bwrap;
      state.init = sandbox.init;
      state.pidNs = sandbox.pidNs;
      await writeState(paths, state);
      const m = managed(paths, state, freezer, token);
      this.supervisor.watch(m, proxy.child);
      this.log.info({ event: "sandbox-started", sandbox: id, ms: Date.now() - t0, freezer: freezer.kind, restored: verified !== null }, "sandbox running behind its proxy");
      return this.record(m);
    } catch (err) {
      await this.teardown(id, paths, freezer, started).catch((e: unknown) => this.log.error({ event: "teardown-failed", sandbox: id, err: String(e) }, "cleanup after a failed create failed"));
      if (err instanceof RuntimeError) throw err;
      throw new RuntimeError("failed", `cannot start sandbox ${id}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

  private async prepareWorkspace(paths: SandboxPaths, verified: VerifiedLayout | null): Promise<void> {
    if (!verified) {
      await fs.mkdir(paths.workspace, { mode: 0o755 });
    } else {
      // Unpack beside the final place and rename: a half-unpacked tree is never a workspace.
      const staging = `${paths.workspace}.restoring`;
      await fs.mkdir(staging, { mode: 0o755 });
      await unpackSnapshot(verified, staging, { uid: this.uid, gid: this.gid });
      await fs.rename(staging, paths.workspace);
    }
    await fs.chown(paths.workspace, this.uid, this.gid);
    await fs.chmod(paths.workspace, 0o755);
  }

  private sandboxEnv(id: string, user: Record<string, string>): Record<string, string> {
    const proxy = `http://127.0.0.1:${BRIDGE_PORT}`;
    const noProxy = "localhost,127.0.0.1,::1";
    return {
      PATH: PATH_INSIDE,
      HOME: INSIDE.workspace,
      HOSTNAME: id,
      LANG: "C.UTF-8",
      HTTP_PROXY: proxy,
      HTTPS_PROXY: proxy,
      http_proxy: proxy,
      https_proxy: proxy,
      NO_PROXY: noProxy,
      no_proxy: noProxy,
      SSL_CERT_FILE: INSIDE.caBundle,
      NODE_EXTRA_CA_CERTS: INSIDE.caBundle,
      REQUESTS_CA_BUNDLE: INSIDE.caBundle,
      CURL_CA_BUNDLE: INSIDE.caBundle,
      ...user,
    };
  }

  /** The system roots plus the proxy CA: what TLS clients inside trust (intercepted hosts present proxy leaves). */
  private async caBundle(): Promise<string> {
    this.caPem ??= CertificateAuthority.loadOrCreate(path.join(this.dataDir, "ca")).then(({ ca }) => ca.certPem);
    const caPem = await this.caPem.catch((err: unknown) => {
      this.caPem = null;
      throw err;
    });
    const system = await fs.readFile(SYSTEM_BUNDLE, "utf8").catch(() => "");
    return `${system.trimEnd()}\n# sandbox-egress proxy CA\n${caPem.trim()}\n`;
  }

  private proxyLaunch(): ProxyLaunch {
    return {
      node: process.execPath,
      cliPath: this.cliPath,
      caDir: path.join(this.dataDir, "ca"),
      extraArgs: this.proxyArgs,
      readyTimeoutMs: this.readyTimeoutMs,
    };
  }

  // ---- lifecycle operations ----------------------------------------------------------------------------------

  pause(id: string): Promise<void> {
    return this.serial.run(id, async () => {
      const m = await this.live(id);
      m.state.paused = true;
      await writeState(m.paths, m.state);
      // Egress first: once this answers, the proxy refuses everything and has closed open connections.
      await m.admin.setPaused(true).catch((err: unknown) => {
        // A dead proxy lets nothing through either; supervision tells the restarted one it is paused.
        this.log.warn({ event: "pause-proxy-unreachable", sandbox: id, err: String(err) }, "proxy unreachable while pausing; freezing anyway");
      });
      try {
        if (!(await m.freezer.isFrozen(freezeTarget(m)))) await m.freezer.freeze(freezeTarget(m));
      } catch (err) {
        m.state.paused = false;
        await writeState(m.paths, m.state);
        await m.admin.setPaused(false).catch(() => undefined);
        throw new RuntimeError("failed", `cannot freeze sandbox ${id}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      this.log.info({ event: "sandbox-paused", sandbox: id }, "sandbox frozen, egress refused");
    });
  }

  resume(id: string, policy: Policy): Promise<void> {
    return this.serial.run(id, async () => {
      const m = await this.live(id);
      // Order matters: the latest policy is in force before a single packet may flow, and packets flow before
      // the processes thaw (so their first request after the pause is judged by that policy).
      await m.admin.putPolicy(id, policy);
      await m.admin.setPaused(false).catch((err: unknown) => {
        throw new RuntimeError("failed", `cannot resume sandbox ${id}: its proxy did not accept the resume: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      });
      m.state.paused = false;
      await writeState(m.paths, m.state);
      if (!m.failClosed && (await m.freezer.isFrozen(freezeTarget(m)))) await m.freezer.thaw(freezeTarget(m));
      this.log.info({ event: "sandbox-resumed", sandbox: id }, "sandbox running again");
    });
  }

  setPolicy(id: string, policy: Policy): Promise<void> {
    return this.serial.run(id, async () => {
      const m = await this.known(id);
      await m.admin.putPolicy(id, policy);
    });
  }

  async exec(id: string, command: readonly string[], opts: { timeoutMs: number; env?: Record<string, string> }): Promise<ExecResult> {
    const m = await this.live(id);
    if (command.length === 0 || command.some((c) => typeof c !== "string" || c.includes("\0"))) {
      throw new RuntimeError("failed", "command must be a non-empty list of strings without NUL bytes");
    }
    // A frozen sandbox would hold the command frozen too (and under the v1 freezer not even SIGKILL frees it).
    if (m.state.paused || m.failClosed) throw new RuntimeError("failed", `sandbox ${id} is paused; resume it before running commands`);
    const env = { ...m.state.env };
    for (const [k, v] of Object.entries(opts.env ?? {})) {
      if (!ENV_NAME.test(k) || v.includes("\0")) throw new RuntimeError("failed", `environment variable ${JSON.stringify(k)} is not valid`);
      env[k] = v;
    }
    return execInSandbox({
      init: m.state.init!,
      procsFile: m.freezer.procsFile(id),
      uid: m.state.uid,
      gid: m.state.gid,
      env,
      command,
      timeoutMs: Math.max(1, opts.timeoutMs),
      maxOutputBytes: this.maxExecOutputBytes,
      cgroupNs: (await namespace(m.state.init!.pid, "cgroup")) !== (await namespace("self", "cgroup")),
    });
  }

  snapshotFilesystem(id: string, layoutDir: string, annotations: Record<string, string>): Promise<SnapshotArtifact> {
    return this.serial.run(id, async () => {
      const m = await this.known(id);
      const running = await isAlive(m.state.init);
      const target = running ? freezeTarget(m) : null;
      // Frozen for the copy so the tar is one consistent instant; left frozen if it was already (paused).
      const thawAfter = target !== null && !(await m.freezer.isFrozen(target));
      const t0 = Date.now();
      const art = await writeSnapshot(m.paths.workspace, layoutDir, annotations, {
        beforeCopy: async () => {
          if (thawAfter) await m.freezer.freeze(target);
        },
        afterCopy: async () => {
          if (thawAfter) await m.freezer.thaw(target);
        },
      });
      this.log.info({ event: "snapshot", sandbox: id, ms: Date.now() - t0, layerBytes: art.layerSize }, "workspace snapshot written");
      return art;
    });
  }

  destroy(id: string): Promise<void> {
    if (!validId(id)) return Promise.resolve();
    return this.serial.run(id, async () => {
      const m = this.supervisor.unwatch(id);
      const paths = sandboxPaths(this.dataDir, id);
      const state = m?.state ?? (await readState(paths));
      const freezer = await this.freezer(state?.freezer);
      await this.teardown(id, paths, freezer, {
        proxy: state?.proxy ?? null,
        bwrap: state?.bwrap ?? null,
        init: state?.init ?? null,
        pidNs: state?.pidNs ?? null,
        // The group is named by id alone: only a sandbox of this data directory may have it killed.
        killGroup: existsSync(paths.dir),
      });
      this.log.info({ event: "sandbox-destroyed", sandbox: id }, "sandbox and proxy stopped, files removed");
    });
  }

  async status(id: string): Promise<"running" | "paused" | "gone"> {
    const m = this.supervisor.get(id) ?? (await this.fromDisk(id));
    if (!m || !(await isAlive(m.state.init))) return "gone";
    return m.state.paused || m.failClosed ? "paused" : "running";
  }

  async adopt(record: RuntimeRecord): Promise<RuntimeRecord | null> {
    const id = record.id;
    if (!validId(id)) return null;
    const paths = sandboxPaths(this.dataDir, id);
    const state = await readState(paths);
    const alive = state !== null && (await isAlive(state.init)) && (await isAlive(state.bwrap));
    if (!alive) {
      // Whatever is left (a proxy without its sandbox, a cgroup, files) goes, including processes the record
      // names, in case the state file itself is gone.
      const data = record.data as { proxy?: ProcIdentity; bwrap?: ProcIdentity; init?: ProcIdentity };
      const freezer = await this.freezer(state?.freezer);
      await this.teardown(id, paths, freezer, {
        proxy: state?.proxy ?? identity(data.proxy),
        bwrap: state?.bwrap ?? identity(data.bwrap),
        init: state?.init ?? identity(data.init),
        pidNs: state?.pidNs ?? null,
        killGroup: existsSync(paths.dir),
      });
      this.log.info({ event: "adopt-gone", sandbox: id }, "sandbox processes gone; leftovers removed");
      return null;
    }
    const freezer = await this.freezer(state.freezer);
    const token = (await fs.readFile(paths.adminToken, "utf8")).trim();
    const m = managed(paths, state, freezer, token);
    this.supervisor.watch(m, null);
    await this.serial.run(id, async () => {
      if (!(await isAlive(m.state.proxy))) {
        await this.supervisor.restartProxy(m, "its proxy was gone when the sandbox was adopted");
      } else if (m.state.paused) {
        // Make the proxy agree with the record (a proxy restarted by hand would come up unpaused).
        await m.admin.setPaused(true).catch(() => undefined);
      }
      if (m.state.paused && !(await m.freezer.isFrozen(freezeTarget(m)))) await m.freezer.freeze(freezeTarget(m));
    });
    this.log.info({ event: "adopted", sandbox: id, proxy: m.state.proxy?.pid, failClosed: m.failClosed }, "sandbox re-attached");
    return this.record(m);
  }

  async detach(): Promise<void> {
    this.supervisor.detach();
  }

  // ---- helpers -----------------------------------------------------------------------------------------------

  /** The sandbox, supervised by this instance or read from its state file; not-found when neither exists. */
  private async known(id: string): Promise<Managed> {
    const m = this.supervisor.get(id) ?? (await this.fromDisk(id));
    if (!m) throw new RuntimeError("not-found", `no sandbox ${id} in this runtime`);
    return m;
  }

  /** As known(), and its processes must be running. */
  private async live(id: string): Promise<Managed> {
    const m = await this.known(id);
    if (!(await isAlive(m.state.init))) throw new RuntimeError("not-found", `sandbox ${id} has no running processes`);
    return m;
  }

  private async fromDisk(id: string): Promise<Managed | null> {
    if (!validId(id)) return null;
    const paths = sandboxPaths(this.dataDir, id);
    const state = await readState(paths);
    if (!state || !state.init) return null;
    const token = await fs.readFile(paths.adminToken, "utf8").catch(() => "");
    return managed(paths, state, await this.freezer(state.freezer), token.trim());
  }

  private record(m: Managed): RuntimeRecord {
    // The environment stays in the 0600 state file; the record only locates the sandbox.
    const { env: _env, ...data } = m.state;
    return { id: m.id, data: { ...data } };
  }

  /**
   * Stop everything a sandbox has: its processes (the whole cgroup, or its pid namespace), the bwrap monitor,
   * the proxy's process group; then the cgroup and the files. Safe on partial state and when repeated.
   */
  private async teardown(id: string, paths: SandboxPaths, freezer: Freezer, s: Leftovers): Promise<void> {
    const target: FreezeTarget = { id, init: s.init ?? { pid: -1, start: -1 }, pidNs: s.pidNs ?? "", monitor: s.bwrap };
    // Everything but bwrap's monitor first; the monitor then reaps the sandbox's init and exits on its own.
    if (s.killGroup) await freezer.killAll(target);
    if (s.init && (await signalIfAlive(s.init, "SIGKILL"))) await waitFor(async () => !(await isAlive(s.init)), 5_000, 10);
    if (s.bwrap && !(await waitFor(async () => !(await isAlive(s.bwrap)), 2_000, 10))) {
      await signalIfAlive(s.bwrap, "SIGKILL");
      await waitFor(async () => !(await isAlive(s.bwrap)), 5_000, 10);
    }
    if (s.killGroup) await freezer.killAll({ ...target, monitor: null });
    await stopProxy(s.proxy);
    if (s.killGroup) await freezer.remove(id);
    await fs.rm(paths.dir, { recursive: true, force: true });
  }
}

/** What teardown() stops: recorded processes (identity-checked), and the cgroup when it is this sandbox's. */
interface Leftovers {
  proxy: ProcIdentity | null;
  bwrap: ProcIdentity | null;
  init: ProcIdentity | null;
  pidNs: string | null;
  killGroup: boolean;
}

function identity(v: unknown): ProcIdentity | null {
  const o = v as { pid?: unknown; start?: unknown } | null | undefined;
  return o && typeof o.pid === "number" && typeof o.start === "number" ? { pid: o.pid, start: o.start } : null;
}
