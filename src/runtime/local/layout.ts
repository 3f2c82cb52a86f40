import { promises as fs } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../../util/atomic-file.js";
import type { FreezerKind } from "./freezer.js";
import type { ProcIdentity } from "./procfs.js";

/**
 * Where one sandbox's files live: `DATADIR/sandboxes/ID/`. Only `workspace/` and `egress/` are ever visible
 * inside the sandbox; the token, the admin socket, the policy file and the state stay on the host side.
 */
export interface SandboxPaths {
  readonly dir: string;
  /** The sandbox's writable /workspace. */
  readonly workspace: string;
  /** Bind-mounted read-only at /run/egress: the proxy socket and the CA bundle, nothing else. */
  readonly egressDir: string;
  readonly proxySocket: string;
  readonly caBundle: string;
  readonly adminSocket: string;
  readonly adminToken: string;
  readonly policyFile: string;
  /** The driver's own record of pids (kept current across proxy restarts; the lifecycle's copy may be older). */
  readonly stateFile: string;
  readonly proxyLog: string;
  readonly sandboxLog: string;
}

/** Where the sandbox sees them. */
export const INSIDE = {
  workspace: "/workspace",
  egressDir: "/run/egress",
  proxySocket: "/run/egress/proxy.sock",
  caBundle: "/run/egress/ca-bundle.pem",
  bridge: "/run/sandbox-egress/bridge.mjs",
  node: "/run/sandbox-egress/node",
} as const;

/** sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Sandbox ids become directory names, cgroup names and the hostname: keep them to a safe, short alphabet. */
export function validId(id: string): boolean {
  return ID_RE.test(id) && !id.includes("..");
}

export function sandboxPaths(dataDir: string, id: string): SandboxPaths {
  const dir = path.join(path.resolve(dataDir), "sandboxes", id);
  const egressDir = path.join(dir, "egress");
  return {
    dir,
    workspace: path.join(dir, "workspace"),
    egressDir,
    proxySocket: path.join(egressDir, "proxy.sock"),
    caBundle: path.join(egressDir, "ca-bundle.pem"),
    adminSocket: path.join(dir, "admin.sock"),
    adminToken: path.join(dir, "admin-token"),
    policyFile: path.join(dir, "policy.json"),
    stateFile: path.join(dir, "runtime.json"),
    proxyLog: path.join(dir, "proxy.log"),
    sandboxLog: path.join(dir, "sandbox.log"),
  };
}

/** A unix socket path that does not fit in sun_path fails at bind time with a confusing error; say why up front. */
export function socketPathProblem(p: SandboxPaths): string | null {
  for (const s of [p.proxySocket, p.adminSocket]) {
    if (Buffer.byteLength(s) > MAX_SOCKET_PATH) return `${s} is ${Buffer.byteLength(s)} bytes, longer than a unix socket path may be (${MAX_SOCKET_PATH}); use a shorter data directory`;
  }
  return null;
}

/** Everything the driver needs to find and manage a sandbox again; also what RuntimeRecord.data carries. */
export interface SandboxState {
  version: 1;
  id: string;
  dir: string;
  freezer: FreezerKind;
  proxy: ProcIdentity | null;
  /** The bwrap process on the host side (spawned by the driver, in the sandbox's cgroup). Null while starting. */
  bwrap: ProcIdentity | null;
  /** pid 1 of the sandbox's pid namespace (bwrap's child): the nsenter target; killing it ends the sandbox. */
  init: ProcIdentity | null;
  pidNs: string | null;
  /** Paused by the lifecycle (pause()), as opposed to frozen by the driver because the proxy is down. */
  paused: boolean;
  uid: number;
  gid: number;
  /** The environment inside the sandbox (exec uses the same). Stored 0600 on the host. */
  env: Record<string, string>;
  createdAt: string;
}

export async function writeState(p: SandboxPaths, state: SandboxState): Promise<void> {
  await writeFileAtomic(p.stateFile, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

export async function readState(p: SandboxPaths): Promise<SandboxState | null> {
  try {
    const parsed = JSON.parse(await fs.readFile(p.stateFile, "utf8")) as SandboxState;
    return parsed.version === 1 ? parsed : null;
  } catch {
    return null;
  }
}
