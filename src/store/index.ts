import type { Policy } from "../policy/types.js";
import type { RuntimeRecord } from "../runtime/driver.js";
import {
  canTransition,
  canTransitionSnapshot,
  type SandboxState,
  type SnapshotState,
} from "../control/state-machine.js";
import { openDatabase, StoreError, type Db } from "./db.js";

export { StoreError };

/** A sandbox as stored. Timestamps are RFC 3339 UTC strings (Date#toISOString), so they also sort as text. */
export interface SandboxRow {
  id: string;
  state: SandboxState;
  reason: string;
  message: string;
  lastTransitionAt: string;
  createdAt: string;
  expiresAt: string | null;
  timeoutSeconds: number | null;
  autoPause: boolean;
  metadata: Record<string, string>;
  image: string;
  env: Record<string, string>;
  entrypoint: string[];
  policy: Policy;
  policyRevision: number;
  pendingPolicy: boolean;
  runtime: RuntimeRecord | null;
  templateId: string;
  vcpu: number;
  memory: number;
  disk: number;
  snapshotSource: string | null;
  updatedAt: string;
}

export interface SnapshotRow {
  id: string;
  name: string | null;
  sandboxId: string;
  state: SnapshotState;
  reason: string;
  message: string;
  type: "filesystem";
  policy: Policy;
  layoutPath: string;
  manifestDigest: string | null;
  layerSize: number | null;
  image: string;
  entrypoint: string[];
  templateId: string;
  vcpu: number;
  memory: number;
  disk: number;
  createdAt: string;
  lastTransitionAt: string;
}

export interface Page<T> {
  items: T[];
  totalItems: number;
}

export interface SandboxFilter {
  states?: readonly SandboxState[];
  /** Every pair must match (AND). */
  metadata?: Readonly<Record<string, string>>;
  page: number;
  pageSize: number;
}

export interface SnapshotFilter {
  sandboxId?: string;
  name?: string;
  states?: readonly SnapshotState[];
  page: number;
  pageSize: number;
}

/** Columns a transition may change together with the state, in the same UPDATE. */
export interface SandboxChanges {
  runtime?: RuntimeRecord | null;
  expiresAt?: string | null;
  pendingPolicy?: boolean;
}

interface RawSandbox {
  id: string;
  state: SandboxState;
  reason: string;
  message: string;
  last_transition_at: string;
  created_at: string;
  expires_at: string | null;
  timeout_seconds: number | null;
  auto_pause: number;
  metadata: string;
  image: string;
  env: string;
  entrypoint: string;
  policy: string;
  policy_revision: number;
  pending_policy: number;
  runtime: string | null;
  template_id: string;
  vcpu: number;
  memory: number;
  disk: number;
  snapshot_source: string | null;
  updated_at: string;
}

interface RawSnapshot {
  id: string;
  name: string | null;
  sandbox_id: string;
  state: SnapshotState;
  reason: string;
  message: string;
  type: "filesystem";
  policy: string;
  layout_path: string;
  manifest_digest: string | null;
  layer_size: number | null;
  image: string;
  entrypoint: string;
  template_id: string;
  vcpu: number;
  memory: number;
  disk: number;
  created_at: string;
  last_transition_at: string;
}

function sandboxFromRaw(r: RawSandbox): SandboxRow {
  return {
    id: r.id,
    state: r.state,
    reason: r.reason,
    message: r.message,
    lastTransitionAt: r.last_transition_at,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    timeoutSeconds: r.timeout_seconds,
    autoPause: r.auto_pause === 1,
    metadata: JSON.parse(r.metadata) as Record<string, string>,
    image: r.image,
    env: JSON.parse(r.env) as Record<string, string>,
    entrypoint: JSON.parse(r.entrypoint) as string[],
    policy: JSON.parse(r.policy) as Policy,
    policyRevision: r.policy_revision,
    pendingPolicy: r.pending_policy === 1,
    runtime: r.runtime === null ? null : (JSON.parse(r.runtime) as RuntimeRecord),
    templateId: r.template_id,
    vcpu: r.vcpu,
    memory: r.memory,
    disk: r.disk,
    snapshotSource: r.snapshot_source,
    updatedAt: r.updated_at,
  };
}

function snapshotFromRaw(r: RawSnapshot): SnapshotRow {
  return {
    id: r.id,
    name: r.name,
    sandboxId: r.sandbox_id,
    state: r.state,
    reason: r.reason,
    message: r.message,
    type: r.type,
    policy: JSON.parse(r.policy) as Policy,
    layoutPath: r.layout_path,
    manifestDigest: r.manifest_digest,
    layerSize: r.layer_size,
    image: r.image,
    entrypoint: JSON.parse(r.entrypoint) as string[],
    templateId: r.template_id,
    vcpu: r.vcpu,
    memory: r.memory,
    disk: r.disk,
    createdAt: r.created_at,
    lastTransitionAt: r.last_transition_at,
  };
}

/** Thrown when a caller asks the store for a transition the state machine forbids: a bug, never user input. */
export class IllegalTransitionError extends StoreError {}

function assertLegal(from: readonly SandboxState[], to: SandboxState): void {
  for (const f of from) if (!canTransition(f, to)) throw new IllegalTransitionError(`illegal sandbox transition ${f} → ${to}`);
}

function assertLegalSnapshot(from: readonly SnapshotState[], to: SnapshotState): void {
  for (const f of from) if (!canTransitionSnapshot(f, to)) throw new IllegalTransitionError(`illegal snapshot transition ${f} → ${to}`);
}

const now = (): string => new Date().toISOString();

/**
 * The control module's persistence. Every state change is one compare-and-set UPDATE (`WHERE id = ? AND state
 * IN (…)`) inside a transaction: when the row is no longer in an expected state, nothing changes and the caller
 * learns it from the `false` return. Synchronous (better-sqlite3): a lifecycle write is microseconds, and no
 * other request can interleave inside one.
 */
export class Store {
  readonly db: Db;

  constructor(file: string) {
    this.db = openDatabase(file);
  }

  close(): void {
    this.db.close();
  }

  /** Run `fn` in one transaction (nested calls join the outer one). */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // ---- sandboxes ------------------------------------------------------------------------------------------

  insertSandbox(row: Omit<SandboxRow, "updatedAt" | "policyRevision" | "pendingPolicy" | "runtime"> & { runtime?: RuntimeRecord | null }): SandboxRow {
    const t = now();
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, state, reason, message, last_transition_at, created_at, expires_at, timeout_seconds,
           auto_pause, metadata, image, env, entrypoint, policy, policy_revision, pending_policy, runtime, template_id,
           vcpu, memory, disk, snapshot_source, updated_at)
         VALUES (@id, @state, @reason, @message, @lastTransitionAt, @createdAt, @expiresAt, @timeoutSeconds,
           @autoPause, @metadata, @image, @env, @entrypoint, @policy, 1, 0, @runtime, @templateId,
           @vcpu, @memory, @disk, @snapshotSource, @updatedAt)`,
      )
      .run({
        ...row,
        autoPause: row.autoPause ? 1 : 0,
        metadata: JSON.stringify(row.metadata),
        env: JSON.stringify(row.env),
        entrypoint: JSON.stringify(row.entrypoint),
        policy: JSON.stringify(row.policy),
        runtime: row.runtime ? JSON.stringify(row.runtime) : null,
        updatedAt: t,
      });
    return this.getSandbox(row.id)!;
  }

  getSandbox(id: string): SandboxRow | undefined {
    const r = this.db.prepare("SELECT * FROM sandboxes WHERE id = ?").get(id) as RawSandbox | undefined;
    return r ? sandboxFromRaw(r) : undefined;
  }

  sandboxesIn(states: readonly SandboxState[]): SandboxRow[] {
    if (states.length === 0) return [];
    const rows = this.db
      .prepare(`SELECT * FROM sandboxes WHERE state IN (${states.map(() => "?").join(",")}) ORDER BY created_at`)
      .all(...states) as RawSandbox[];
    return rows.map(sandboxFromRaw);
  }

  /** Sandboxes in `states` whose expiresAt is at or before `at`. */
  expiredSandboxes(states: readonly SandboxState[], at: string): SandboxRow[] {
    const rows = this.db
      .prepare(
        `SELECT * FROM sandboxes WHERE expires_at IS NOT NULL AND expires_at <= ?
           AND state IN (${states.map(() => "?").join(",")}) ORDER BY expires_at`,
      )
      .all(at, ...states) as RawSandbox[];
    return rows.map(sandboxFromRaw);
  }

  listSandboxes(f: SandboxFilter): Page<SandboxRow> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.states && f.states.length > 0) {
      where.push(`state IN (${f.states.map(() => "?").join(",")})`);
      args.push(...f.states);
    }
    for (const [k, v] of Object.entries(f.metadata ?? {})) {
      // json_each keeps keys as data, never as a JSON path, so any key (quotes, dots) is safe.
      where.push("EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) AS m WHERE m.key = ? AND m.value = ?)");
      args.push(k, v);
    }
    return this.page("sandboxes", where, args, f, sandboxFromRaw);
  }

  /**
   * Compare-and-set: move `id` from one of `from` to `to` with reason and message, plus `changes` in the same
   * UPDATE. Returns false (and changes nothing) when the row is not in `from`.
   */
  transitionSandbox(
    id: string,
    from: SandboxState | readonly SandboxState[],
    to: SandboxState,
    reason: string,
    message: string,
    changes: SandboxChanges = {},
  ): boolean {
    const fromList: readonly SandboxState[] = typeof from === "string" ? [from] : from;
    assertLegal(fromList, to);
    const t = now();
    const sets = ["state = ?", "reason = ?", "message = ?", "last_transition_at = ?", "updated_at = ?"];
    const args: unknown[] = [to, reason, message, t, t];
    if (changes.runtime !== undefined) {
      sets.push("runtime = ?");
      args.push(changes.runtime === null ? null : JSON.stringify(changes.runtime));
    }
    if (changes.expiresAt !== undefined) {
      sets.push("expires_at = ?");
      args.push(changes.expiresAt);
    }
    if (changes.pendingPolicy !== undefined) {
      sets.push("pending_policy = ?");
      args.push(changes.pendingPolicy ? 1 : 0);
    }
    const info = this.db
      .prepare(`UPDATE sandboxes SET ${sets.join(", ")} WHERE id = ? AND state IN (${fromList.map(() => "?").join(",")})`)
      .run(...args, id, ...fromList);
    return info.changes === 1;
  }

  /**
   * Replace the policy when the sandbox is in one of `states`; bumps policy_revision and marks it pending (not
   * yet confirmed by the proxy). Returns the new revision, or null when the state did not match.
   */
  setPolicy(id: string, policy: Policy, states: readonly SandboxState[]): number | null {
    return this.tx(() => {
      const info = this.db
        .prepare(
          `UPDATE sandboxes SET policy = ?, policy_revision = policy_revision + 1, pending_policy = 1, updated_at = ?
           WHERE id = ? AND state IN (${states.map(() => "?").join(",")})`,
        )
        .run(JSON.stringify(policy), now(), id, ...states);
      if (info.changes !== 1) return null;
      return (this.db.prepare("SELECT policy_revision AS r FROM sandboxes WHERE id = ?").get(id) as { r: number }).r;
    });
  }

  /** The proxy enforces revision `revision`: clear the pending mark unless a newer policy was stored since. */
  policyApplied(id: string, revision: number): boolean {
    const info = this.db
      .prepare("UPDATE sandboxes SET pending_policy = 0, updated_at = ? WHERE id = ? AND policy_revision = ?")
      .run(now(), id, revision);
    return info.changes === 1;
  }

  /** Update columns that are not part of the state (CAS on the states in which the change is allowed). */
  updateSandbox(
    id: string,
    states: readonly SandboxState[],
    changes: { metadata?: Record<string, string>; expiresAt?: string | null; runtime?: RuntimeRecord | null },
  ): boolean {
    const sets: string[] = ["updated_at = ?"];
    const args: unknown[] = [now()];
    if (changes.metadata !== undefined) {
      sets.push("metadata = ?");
      args.push(JSON.stringify(changes.metadata));
    }
    if (changes.expiresAt !== undefined) {
      sets.push("expires_at = ?");
      args.push(changes.expiresAt);
    }
    if (changes.runtime !== undefined) {
      sets.push("runtime = ?");
      args.push(changes.runtime === null ? null : JSON.stringify(changes.runtime));
    }
    const info = this.db
      .prepare(`UPDATE sandboxes SET ${sets.join(", ")} WHERE id = ? AND state IN (${states.map(() => "?").join(",")})`)
      .run(...args, id, ...states);
    return info.changes === 1;
  }

  // ---- snapshots ------------------------------------------------------------------------------------------

  insertSnapshot(row: Omit<SnapshotRow, "manifestDigest" | "layerSize">): SnapshotRow {
    this.db
      .prepare(
        `INSERT INTO snapshots (id, name, sandbox_id, state, reason, message, type, policy, layout_path, manifest_digest,
           layer_size, image, entrypoint, template_id, vcpu, memory, disk, created_at, last_transition_at)
         VALUES (@id, @name, @sandboxId, @state, @reason, @message, @type, @policy, @layoutPath, NULL,
           NULL, @image, @entrypoint, @templateId, @vcpu, @memory, @disk, @createdAt, @lastTransitionAt)`,
      )
      .run({ ...row, policy: JSON.stringify(row.policy), entrypoint: JSON.stringify(row.entrypoint) });
    return this.getSnapshot(row.id)!;
  }

  getSnapshot(id: string): SnapshotRow | undefined {
    const r = this.db.prepare("SELECT * FROM snapshots WHERE id = ?").get(id) as RawSnapshot | undefined;
    return r ? snapshotFromRaw(r) : undefined;
  }

  getSnapshotByName(name: string): SnapshotRow | undefined {
    const r = this.db.prepare("SELECT * FROM snapshots WHERE name = ?").get(name) as RawSnapshot | undefined;
    return r ? snapshotFromRaw(r) : undefined;
  }

  snapshotsIn(states: readonly SnapshotState[]): SnapshotRow[] {
    const rows = this.db
      .prepare(`SELECT * FROM snapshots WHERE state IN (${states.map(() => "?").join(",")}) ORDER BY created_at`)
      .all(...states) as RawSnapshot[];
    return rows.map(snapshotFromRaw);
  }

  listSnapshots(f: SnapshotFilter): Page<SnapshotRow> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.sandboxId !== undefined) {
      where.push("sandbox_id = ?");
      args.push(f.sandboxId);
    }
    if (f.name !== undefined) {
      where.push("name = ?");
      args.push(f.name);
    }
    if (f.states && f.states.length > 0) {
      where.push(`state IN (${f.states.map(() => "?").join(",")})`);
      args.push(...f.states);
    }
    return this.page("snapshots", where, args, f, snapshotFromRaw);
  }

  /** One page of a filtered list, newest first, with the total count under the same filter. */
  private page<Raw, T>(
    table: "sandboxes" | "snapshots",
    where: readonly string[],
    args: readonly unknown[],
    f: { page: number; pageSize: number },
    map: (raw: Raw) => T,
  ): { items: T[]; totalItems: number } {
    const clause = where.length > 0 ? `WHERE ${where.join(" AND ")}` : "";
    const total = (this.db.prepare(`SELECT COUNT(*) AS n FROM ${table} ${clause}`).get(...args) as { n: number }).n;
    const rows = this.db
      .prepare(`SELECT * FROM ${table} ${clause} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?`)
      .all(...args, f.pageSize, (f.page - 1) * f.pageSize) as Raw[];
    return { items: rows.map(map), totalItems: total };
  }

  transitionSnapshot(
    id: string,
    from: SnapshotState | readonly SnapshotState[],
    to: SnapshotState,
    reason: string,
    message: string,
    changes: { manifestDigest?: string; layerSize?: number; policy?: Policy } = {},
  ): boolean {
    const fromList: readonly SnapshotState[] = typeof from === "string" ? [from] : from;
    assertLegalSnapshot(fromList, to);
    const sets = ["state = ?", "reason = ?", "message = ?", "last_transition_at = ?"];
    const args: unknown[] = [to, reason, message, now()];
    if (changes.manifestDigest !== undefined) {
      sets.push("manifest_digest = ?");
      args.push(changes.manifestDigest);
    }
    if (changes.layerSize !== undefined) {
      sets.push("layer_size = ?");
      args.push(changes.layerSize);
    }
    if (changes.policy !== undefined) {
      sets.push("policy = ?");
      args.push(JSON.stringify(changes.policy));
    }
    const info = this.db
      .prepare(`UPDATE snapshots SET ${sets.join(", ")} WHERE id = ? AND state IN (${fromList.map(() => "?").join(",")})`)
      .run(...args, id, ...fromList);
    return info.changes === 1;
  }

  /** Rewrite the policy copy of a snapshot that is still being created (capture time is what counts). */
  setSnapshotPolicy(id: string, policy: Policy): boolean {
    const info = this.db.prepare("UPDATE snapshots SET policy = ? WHERE id = ? AND state = 'Creating'").run(JSON.stringify(policy), id);
    return info.changes === 1;
  }

  /** Remove a snapshot row; only a Deleting one (its files are gone), so a live snapshot can never vanish. */
  removeSnapshot(id: string): boolean {
    return this.db.prepare("DELETE FROM snapshots WHERE id = ? AND state = 'Deleting'").run(id).changes === 1;
  }

  /** Sandboxes still being created from this snapshot (its layout must not be deleted under them). */
  restoresInFlight(snapshotId: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM sandboxes WHERE snapshot_source = ? AND state = 'Pending'").get(snapshotId) as { n: number }).n;
  }
}
