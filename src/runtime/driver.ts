import type { Policy } from "../policy/types.js";

/**
 * The seam between the lifecycle service (src/control) and whatever runs sandboxes. The local driver
 * (bubblewrap + network namespace + freezer + OCI layouts) is one implementation; a Kubernetes driver
 * (pod = sandbox container + proxy sidecar, freezer via the container runtime, snapshots pushed to a
 * registry) is meant to be another, with no change to the lifecycle service.
 *
 * Invariant every driver keeps: a sandbox's processes never run without its egress proxy already enforcing
 * its policy (fail closed), and the sandbox has no network path except through that proxy.
 */
export interface RuntimeDriver {
  readonly name: string;
  /** What this host can do; asked once at start and shown in errors (e.g. why memory snapshots are off). */
  capabilities(): Promise<RuntimeCapabilities>;
  /**
   * Start a sandbox: write the policy, start its proxy and wait until it enforces, then (only then) start
   * the sandbox's process tree. If any step fails, everything started is torn down and the error says why.
   */
  create(spec: SandboxSpec): Promise<RuntimeRecord>;
  /** After a control-module restart: re-attach to a sandbox from its record; null when its processes are gone. */
  adopt(record: RuntimeRecord): Promise<RuntimeRecord | null>;
  /** Freeze every process of the sandbox and make its proxy refuse all egress. */
  pause(id: string): Promise<void>;
  /** Apply `policy` to the proxy first, then let egress flow again, then thaw the processes. */
  resume(id: string, policy: Policy): Promise<void>;
  /** Apply a policy live (proxy admin PUT); resolves once the proxy enforces it (open connections revoked). */
  setPolicy(id: string, policy: Policy): Promise<void>;
  /** Run a command inside the sandbox's namespaces (as its processes see the world). */
  exec(id: string, command: readonly string[], opts: { timeoutMs: number; env?: Record<string, string> }): Promise<ExecResult>;
  /**
   * Write the sandbox's filesystem (its /workspace) as an OCI image layout into `layoutDir` (created; must
   * not exist), with `annotations` on the manifest. The sandbox keeps running (frozen briefly if needed).
   */
  snapshotFilesystem(id: string, layoutDir: string, annotations: Record<string, string>): Promise<SnapshotArtifact>;
  /** Stop the sandbox and its proxy and remove its files. Idempotent. */
  destroy(id: string): Promise<void>;
  /** Is the sandbox (and its proxy) alive? */
  status(id: string): Promise<"running" | "paused" | "gone">;
  /** Stop supervising (control module shutdown): sandboxes keep running, to be adopted on the next start. */
  detach(): Promise<void>;
}

export interface RuntimeCapabilities {
  images: readonly string[];
  memorySnapshot: { supported: boolean; reason?: string };
  freezer: "cgroup-v2" | "cgroup-v1" | "sigstop";
}

export interface SandboxSpec {
  id: string;
  /** Only "local:host" for the local driver. */
  image: string;
  env: Record<string, string>;
  /** The sandbox's main process; default: a long-running idle init. */
  entrypoint?: readonly string[];
  /** The policy to enforce from the first packet. May hold `${env:…}` / `${file:…}` references. */
  policy: Policy;
  /** Restore: an OCI image layout written by snapshotFilesystem; its layer is verified and unpacked into /workspace. */
  restoreFrom?: string;
}

/** What the driver needs to find a sandbox again; stored by the lifecycle service (JSON in SQLite). */
export interface RuntimeRecord {
  id: string;
  /** Driver-specific details (pids, paths, admin socket, token reference). Opaque to the lifecycle service. */
  data: Record<string, unknown>;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface SnapshotArtifact {
  /** sha256:… of the manifest. */
  manifestDigest: string;
  /** Bytes of the compressed layer. */
  layerSize: number;
}

/** Driver errors carry a stable code the REST layer maps to a status. */
export class RuntimeError extends Error {
  constructor(
    readonly code: "unsupported" | "not-found" | "failed" | "timeout" | "invalid-snapshot",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "RuntimeError";
  }
}
