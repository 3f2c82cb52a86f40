import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import type { Logger } from "../telemetry/logger.js";
import { parsePolicy } from "../policy/schema.js";
import type { Policy } from "../policy/types.js";
import { RuntimeError, type RuntimeCapabilities, type RuntimeDriver } from "../runtime/driver.js";
import type { Page, SandboxRow, SnapshotRow, Store } from "../store/index.js";
import { invalid, invalidField, ServiceError } from "./errors.js";
import { KeyedMutex } from "./keyed-mutex.js";
import { referencesOnly } from "./policy-input.js";
import { canTransition, REASONS, type SandboxState, type SnapshotState } from "./state-machine.js";

/** The OCI manifest annotation that carries a snapshot's policy (references only, never resolved values). */
export const POLICY_ANNOTATION = "io.sandbox-egress.policy";
export const SANDBOX_ANNOTATION = "io.sandbox-egress.sandbox-id";

/** OpenSandbox: "if omitted for snapshot restore, the server defaults to tail -f /dev/null" (and for images). */
export const DEFAULT_ENTRYPOINT: readonly string[] = Object.freeze(["tail", "-f", "/dev/null"]);
/** Recorded with every sandbox and snapshot (Leap0 shows them); the local runtime does not enforce them. */
export const DEFAULT_RESOURCES = Object.freeze({ vcpu: 1, memory: 2048, disk: 10240 });

export interface Resources {
  vcpu: number;
  memory: number;
  disk: number;
}

export interface CreateInput {
  /** An image the driver lists (capabilities().images); default the first one. Ignored for a restore. */
  image?: string;
  /** How the request names the image, for the error ("image.uri", "template_name"). */
  imageField?: string;
  /** Restore from this snapshot (by id or by name) instead of an image. */
  snapshot?: { id: string } | { name: string };
  /** Validated policy; for a restore, overrides the snapshot's. Omitted: allow-all, or the snapshot's. */
  policy?: Policy;
  /** Seconds until expiry; null = never. */
  timeoutSeconds: number | null;
  autoPause?: boolean;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
  entrypoint?: readonly string[];
  resources?: Partial<Resources>;
}

export interface Accepted<T> {
  /** The row right after the synchronous part (e.g. Pausing, Creating). */
  row: T;
  /** Settles when the background part has finished, with the row as it ended (Running, Failed, …). */
  done: Promise<T>;
}

export interface SnapshotInput {
  name?: string;
  type?: "filesystem" | "memory";
}

export interface LifecycleOptions {
  store: Store;
  driver: RuntimeDriver;
  /** Snapshots are written under DIR/snapshots. */
  dataDir: string;
  log: Logger;
  /** How often expiry is checked; DESIGN.md asks for at least every second. */
  expiryIntervalMs?: number;
  /** Upper bound for exec; default 1 hour. */
  maxExecTimeoutMs?: number;
}

const STOP_CAUSES: Readonly<Record<string, string>> = {
  [REASONS.UserDelete]: "deleted by request",
  [REASONS.Expired]: "its timeout expired",
  [REASONS.SnapshotAndTerminate]: "terminated after its snapshot was stored",
};

const ACTIVE_SNAPSHOT_STATES: readonly SnapshotState[] = ["Creating"];
/** States in which a policy may be stored (applied live only when Running). */
const POLICY_STATES: readonly SandboxState[] = ["Pending", "Running", "Pausing", "Paused", "Resuming"];
const RENEW_STATES: readonly SandboxState[] = ["Pending", "Running", "Pausing", "Paused", "Resuming"];
const METADATA_STATES: readonly SandboxState[] = ["Pending", "Running", "Pausing", "Paused", "Resuming", "Stopping", "Failed"];

export function newId(prefix: "sbx" | "snap"): string {
  // 16 chars of base32 (80 bits): unguessable, and safe as a file name, a cgroup name and a DNS label.
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  const bytes = randomBytes(16);
  let out = "";
  for (const b of bytes) out += alphabet[b & 31];
  return `${prefix}-${out}`;
}

function errorText(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  // One line, bounded: it ends up in status.message and API errors.
  return m.replace(/\s+/g, " ").trim().slice(0, 500) || "unknown error";
}

/**
 * The lifecycle of sandboxes and snapshots: the state machine, the store, and the runtime driver, with no
 * knowledge of HTTP. Every request does its validation and its compare-and-set transition synchronously (so an
 * illegal request gets 409 and changes nothing), then the runtime work runs in the background, serialised per
 * sandbox, and ends in a state whose reason and message say what happened.
 */
export class LifecycleService {
  private readonly store: Store;
  private readonly driver: RuntimeDriver;
  private readonly log: Logger;
  private readonly snapshotsDir: string;
  private readonly locks = new KeyedMutex();
  private readonly background = new Set<Promise<unknown>>();
  private caps: RuntimeCapabilities | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closing = false;
  private expiryRunning = false;

  constructor(private readonly opts: LifecycleOptions) {
    this.store = opts.store;
    this.driver = opts.driver;
    this.log = opts.log;
    this.snapshotsDir = path.join(opts.dataDir, "snapshots");
  }

  // ---- start, stop ----------------------------------------------------------------------------------------

  /** Ask the driver what it can do, reconcile what a previous run left behind, then start the expiry timer. */
  async start(): Promise<void> {
    mkdirSync(this.snapshotsDir, { recursive: true, mode: 0o700 });
    this.caps = await this.driver.capabilities();
    await this.reconcile();
    const every = Math.min(this.opts.expiryIntervalMs ?? 500, 1000);
    this.timer = setInterval(() => {
      void this.expire();
    }, every);
    this.timer.unref();
  }

  capabilities(): RuntimeCapabilities {
    if (!this.caps) throw new ServiceError("unavailable", "The control module is starting; retry in a moment.");
    return this.caps;
  }

  /**
   * Stop taking work, let running operations finish (bounded), and detach from the runtime so that sandboxes
   * keep running to be adopted by the next start.
   */
  async close(graceMs = 10_000): Promise<void> {
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((r) => (timeout = setTimeout(r, graceMs)))]);
    clearTimeout(timeout);
    await this.driver.detach();
  }

  /** Resolves when no background operation is running (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  private assertOpen(): void {
    if (this.closing) throw new ServiceError("unavailable", "The control module is shutting down; retry against the next instance.");
  }

  /** Run `fn` after the synchronous part of a request, serialised with the sandbox's other operations. */
  private inBackground<T>(sandboxId: string, what: string, fn: () => Promise<T>): Promise<T> {
    const p = this.locks.run(sandboxId, fn);
    const tracked = p.catch((err: unknown) => {
      this.log.error({ event: "lifecycle-error", sandbox: sandboxId, op: what, err: errorText(err) }, `${what} failed`);
    });
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
    return p;
  }

  // ---- reads ----------------------------------------------------------------------------------------------

  get(id: string): SandboxRow {
    const row = this.store.getSandbox(id);
    if (!row) throw new ServiceError("not-found", `No sandbox ${id}.`);
    return row;
  }

  list(f: { states?: readonly SandboxState[]; metadata?: Record<string, string>; page: number; pageSize: number }): Page<SandboxRow> {
    return this.store.listSandboxes(f);
  }

  getSnapshot(id: string): SnapshotRow {
    const row = this.store.getSnapshot(id);
    if (!row) throw new ServiceError("not-found", `No snapshot ${id}.`);
    return row;
  }

  getSnapshotByName(name: string): SnapshotRow {
    const row = this.store.getSnapshotByName(name);
    if (!row) throw new ServiceError("not-found", `No snapshot named ${JSON.stringify(name)}.`);
    return row;
  }

  listSnapshots(f: { sandboxId?: string; name?: string; states?: readonly SnapshotState[]; page: number; pageSize: number }): Page<SnapshotRow> {
    return this.store.listSnapshots(f);
  }

  /** True while a snapshot of this sandbox is being taken (Leap0 shows the sandbox as "snapshotting"). */
  isSnapshotting(sandboxId: string): boolean {
    return this.store.listSnapshots({ sandboxId, states: ACTIVE_SNAPSHOT_STATES, page: 1, pageSize: 1 }).totalItems > 0;
  }

  getPolicy(id: string): Policy {
    return this.get(id).policy;
  }

  // ---- create / restore -----------------------------------------------------------------------------------

  /** Validate, insert Pending, and start the sandbox in the background (→ Running, or Failed with why). */
  async create(input: CreateInput): Promise<Accepted<SandboxRow>> {
    this.assertOpen();
    const caps = this.capabilities();
    let policy: Policy | undefined;
    if (input.policy !== undefined) {
      const r = parsePolicy(input.policy);
      if (!r.ok) throw invalid(r.errors);
      policy = r.policy;
    }
    let snapshot: SnapshotRow | undefined;
    if (input.snapshot) {
      snapshot = "id" in input.snapshot ? this.store.getSnapshot(input.snapshot.id) : this.store.getSnapshotByName(input.snapshot.name);
      if (!snapshot) {
        throw new ServiceError("not-found", "id" in input.snapshot ? `No snapshot ${input.snapshot.id}.` : `No snapshot named ${JSON.stringify(input.snapshot.name)}.`);
      }
      if (snapshot.state !== "Ready") {
        throw new ServiceError("conflict", `Snapshot ${snapshot.id} is ${snapshot.state}; only a Ready snapshot can be restored.`);
      }
    }
    const image = snapshot ? snapshot.image : (input.image ?? caps.images[0] ?? "local:host");
    if (!caps.images.includes(image)) {
      throw invalidField(input.imageField ?? "image", `${JSON.stringify(image)} is not an image this runtime has; use one of ${caps.images.map((i) => JSON.stringify(i)).join(", ")}`);
    }
    const now = Date.now();
    const res = { ...DEFAULT_RESOURCES, ...(snapshot ? { vcpu: snapshot.vcpu, memory: snapshot.memory, disk: snapshot.disk } : {}), ...input.resources };
    const id = newId("sbx");
    const row = this.store.insertSandbox({
      id,
      state: "Pending",
      reason: snapshot ? REASONS.Restoring : REASONS.Provisioning,
      message: snapshot ? `Restoring from snapshot ${snapshot.id}; its policy is enforced before any process starts.` : "Starting the sandbox's proxy, then its processes.",
      lastTransitionAt: new Date(now).toISOString(),
      createdAt: new Date(now).toISOString(),
      expiresAt: input.timeoutSeconds === null ? null : new Date(now + input.timeoutSeconds * 1000).toISOString(),
      timeoutSeconds: input.timeoutSeconds,
      autoPause: input.autoPause ?? false,
      metadata: input.metadata ?? {},
      image,
      env: input.env ?? {},
      entrypoint: [...(input.entrypoint ?? snapshot?.entrypoint ?? DEFAULT_ENTRYPOINT)],
      // Restore: the override if given, else the snapshot's copy (DESIGN.md).
      policy: policy ?? snapshot?.policy ?? parsePolicyOrThrow({ mode: "allow-all" }),
      templateId: snapshot ? snapshot.templateId : image,
      vcpu: res.vcpu,
      memory: res.memory,
      disk: res.disk,
      snapshotSource: snapshot?.id ?? null,
    });
    this.log.info({ event: "sandbox-created", sandbox: id, restoredFrom: snapshot?.id ?? null }, "sandbox accepted");
    const done = this.inBackground(id, "create", () => this.provision(id, snapshot?.layoutPath));
    return { row, done };
  }

  private async provision(id: string, restoreFrom: string | undefined): Promise<SandboxRow> {
    const row = this.get(id);
    if (row.state !== "Pending") return row; // deleted before it started: the delete finishes the job
    try {
      const record = await this.driver.create({
        id,
        image: row.image,
        env: row.env,
        entrypoint: row.entrypoint,
        policy: row.policy,
        ...(restoreFrom !== undefined ? { restoreFrom } : {}),
      });
      const started = this.store.tx(() => {
        const ok = this.store.transitionSandbox(id, "Pending", "Running", REASONS.Started, "The proxy enforces the policy and the sandbox's processes run.", {
          runtime: record,
          pendingPolicy: false,
        });
        // Deleted while starting: keep the record so that the queued delete can find everything.
        if (!ok) this.store.updateSandbox(id, ["Stopping", "Terminated", "Failed"], { runtime: record });
        return ok;
      });
      if (started) this.log.info({ event: "sandbox-state", sandbox: id, state: "Running" }, "sandbox running");
    } catch (err) {
      const why = errorText(err);
      this.store.transitionSandbox(id, "Pending", "Failed", REASONS.ProvisionFailed, `The sandbox could not be started: ${why}`);
      this.log.warn({ event: "sandbox-state", sandbox: id, state: "Failed", reason: REASONS.ProvisionFailed, err: why }, "sandbox failed to start");
      // The driver tears down what it started on failure; this is the belt to those braces.
      await this.driver.destroy(id).catch(() => undefined);
    }
    return this.get(id);
  }

  // ---- pause / resume / delete ----------------------------------------------------------------------------

  private requireTransition(row: SandboxRow, to: SandboxState, verb: string): void {
    if (!canTransition(row.state, to)) {
      throw new ServiceError("conflict", `Cannot ${verb} sandbox ${row.id}: it is ${row.state}.`);
    }
  }

  async pause(id: string, reason: string = REASONS.PauseRequested): Promise<Accepted<SandboxRow>> {
    this.assertOpen();
    const row = this.get(id);
    this.requireTransition(row, "Pausing", "pause");
    const message = reason === REASONS.AutoPause ? "The sandbox expired and auto_pause is set: freezing it." : "Freezing the sandbox's processes and refusing its egress.";
    if (!this.store.transitionSandbox(id, row.state, "Pausing", reason, message)) {
      throw new ServiceError("conflict", `Cannot pause sandbox ${id}: its state changed concurrently; read it and retry.`);
    }
    const done = this.inBackground(id, "pause", async () => {
      if (this.get(id).state !== "Pausing") return this.get(id);
      try {
        await this.driver.pause(id);
        // An expiry pause keeps saying so: "why is this sandbox paused?" is answered by the reason.
        if (reason === REASONS.AutoPause) {
          this.store.transitionSandbox(id, "Pausing", "Paused", REASONS.AutoPause, "Paused at expiry because auto_pause is set; resume gives it a new timeout.");
        } else {
          this.store.transitionSandbox(id, "Pausing", "Paused", REASONS.Paused, "Processes are frozen and the proxy refuses all egress.");
        }
      } catch (err) {
        await this.recoverFrom(id, "Pausing", err, REASONS.PauseFailed, "pause");
      }
      return this.get(id);
    });
    return { row: this.get(id), done };
  }

  async resume(id: string): Promise<Accepted<SandboxRow>> {
    this.assertOpen();
    const row = this.get(id);
    this.requireTransition(row, "Resuming", "resume");
    if (!this.store.transitionSandbox(id, row.state, "Resuming", REASONS.ResumeRequested, "Applying the latest policy, then thawing the processes.")) {
      throw new ServiceError("conflict", `Cannot resume sandbox ${id}: its state changed concurrently; read it and retry.`);
    }
    const done = this.inBackground(id, "resume", async () => {
      const cur = this.get(id);
      if (cur.state !== "Resuming") return cur;
      try {
        // The latest policy, including every update stored while paused: read inside the lock, so nothing
        // can change it between here and the proxy.
        await this.driver.resume(id, cur.policy);
        this.store.tx(() => {
          this.store.transitionSandbox(id, "Resuming", "Running", REASONS.Resumed, "Running again under the latest policy.", {
            expiresAt: this.refreshedExpiry(cur),
          });
          this.store.policyApplied(id, cur.policyRevision);
        });
      } catch (err) {
        await this.recoverFrom(id, "Resuming", err, REASONS.ResumeFailed, "resume");
      }
      return this.get(id);
    });
    return { row: this.get(id), done };
  }

  /** An auto-paused sandbox resumed after its expiry gets a fresh timeout instead of being paused again at once. */
  private refreshedExpiry(row: SandboxRow): string | undefined {
    if (row.expiresAt === null || row.timeoutSeconds === null) return undefined;
    if (Date.parse(row.expiresAt) > Date.now()) return undefined;
    return new Date(Date.now() + row.timeoutSeconds * 1000).toISOString();
  }

  /** A pause or resume failed: put the sandbox in the state its processes are really in, with the reason. */
  private async recoverFrom(id: string, from: SandboxState, err: unknown, reason: string, verb: string): Promise<void> {
    const why = errorText(err);
    const actual = await this.driver.status(id).catch(() => "gone" as const);
    if (actual === "gone") {
      this.store.transitionSandbox(id, from, "Failed", REASONS.ProcessExited, `The ${verb} failed (${why}) and the sandbox's processes are gone.`);
    } else if (actual === "running") {
      this.store.transitionSandbox(id, from, "Running", reason, `The ${verb} failed and the sandbox is still running: ${why}`);
    } else {
      this.store.transitionSandbox(id, from, "Paused", reason, `The ${verb} failed and the sandbox is still paused: ${why}`);
    }
    this.log.warn({ event: "sandbox-op-failed", sandbox: id, op: verb, err: why, actual }, `${verb} failed`);
  }

  async delete(id: string, reason: string = REASONS.UserDelete): Promise<Accepted<SandboxRow>> {
    this.assertOpen();
    const row = this.get(id);
    this.requireTransition(row, "Stopping", "delete");
    const message = reason === REASONS.Expired ? "The sandbox expired: stopping it and its proxy." : "Stopping the sandbox and its proxy.";
    if (!this.store.transitionSandbox(id, row.state, "Stopping", reason, message)) {
      throw new ServiceError("conflict", `Cannot delete sandbox ${id}: its state changed concurrently; read it and retry.`);
    }
    const done = this.inBackground(id, "delete", () => this.finishStopping(id));
    return { row: this.get(id), done };
  }

  private async finishStopping(id: string): Promise<SandboxRow> {
    const row = this.get(id);
    if (row.state !== "Stopping") return row;
    // The final state keeps the cause (UserDelete, Expired, SnapshotAndTerminate): "why is it gone?" is what a
    // user asks of a Terminated sandbox.
    const cause = STOP_CAUSES[row.reason];
    try {
      await this.driver.destroy(id);
      this.store.transitionSandbox(
        id,
        "Stopping",
        "Terminated",
        cause ? row.reason : REASONS.Terminated,
        `The sandbox and its proxy are stopped and their files removed${cause ? ` (${cause})` : ""}.`,
        { runtime: null },
      );
    } catch (err) {
      this.store.transitionSandbox(id, "Stopping", "Failed", REASONS.DestroyFailed, `The sandbox could not be torn down: ${errorText(err)}. Delete it again to retry.`);
    }
    return this.get(id);
  }

  // ---- expiry, metadata -----------------------------------------------------------------------------------

  async renew(id: string, expiresAt: string): Promise<string> {
    this.assertOpen();
    const at = Date.parse(expiresAt);
    if (Number.isNaN(at)) throw invalidField("expiresAt", `${JSON.stringify(expiresAt)} is not an RFC 3339 time such as "2030-01-02T15:04:05Z"`);
    const row = this.get(id);
    if (!RENEW_STATES.includes(row.state)) throw new ServiceError("conflict", `Cannot renew sandbox ${id}: it is ${row.state}.`);
    if (at <= Date.now()) throw invalidField("expiresAt", "must be in the future");
    if (row.expiresAt !== null && at <= Date.parse(row.expiresAt)) {
      throw invalidField("expiresAt", `must be after the current expiresAt ${row.expiresAt}`);
    }
    const iso = new Date(at).toISOString();
    // CAS on the expiry we checked too: two renews racing cannot move it backwards.
    const ok = this.store.tx(() => {
      const cur = this.store.getSandbox(id);
      if (!cur || cur.expiresAt !== row.expiresAt) return false;
      return this.store.updateSandbox(id, RENEW_STATES, { expiresAt: iso });
    });
    if (!ok) throw new ServiceError("conflict", `Sandbox ${id} changed concurrently; read it and retry.`);
    return iso;
  }

  /** JSON Merge Patch (RFC 7396): a string sets a key, null removes it. */
  patchMetadata(id: string, patch: Record<string, string | null>): SandboxRow {
    this.assertOpen();
    return this.store.tx(() => {
      const row = this.get(id);
      if (!METADATA_STATES.includes(row.state)) throw new ServiceError("conflict", `Cannot change the metadata of sandbox ${id}: it is ${row.state}.`);
      const next = { ...row.metadata };
      for (const [k, v] of Object.entries(patch)) {
        if (v === null) delete next[k];
        else next[k] = v;
      }
      this.store.updateSandbox(id, METADATA_STATES, { metadata: next });
      return this.get(id);
    });
  }

  /** Terminate (or pause, with auto_pause) every sandbox whose expiresAt has passed. */
  async expire(): Promise<void> {
    if (this.closing || this.expiryRunning) return;
    this.expiryRunning = true;
    try {
      // Not Pending: a sandbox still starting can be neither paused nor usefully killed half-way; once it runs,
      // the next tick finds it expired and applies the same rule.
      const due = this.store.expiredSandboxes(["Running", "Paused"], new Date().toISOString());
      for (const row of due) {
        try {
          if (row.autoPause && row.state === "Running") await this.pause(row.id, REASONS.AutoPause);
          else if (!(row.autoPause && row.state === "Paused")) await this.delete(row.id, REASONS.Expired);
        } catch (err) {
          // A concurrent request moved it first (409): the next tick sees the new state.
          if (!(err instanceof ServiceError)) this.log.error({ event: "expiry-error", sandbox: row.id, err: errorText(err) }, "expiry failed");
        }
      }
    } finally {
      this.expiryRunning = false;
    }
  }

  // ---- policy ---------------------------------------------------------------------------------------------

  /**
   * Replace the policy. Invalid → 400 with every field error and nothing changed. Running → the proxy enforces
   * it before this resolves (open connections it denies are revoked); Paused (or in a transition) → stored and
   * applied by the resume.
   */
  async putPolicy(id: string, input: unknown): Promise<SandboxRow> {
    this.assertOpen();
    const r = parsePolicy(input);
    if (!r.ok) throw invalid(r.errors);
    const row = this.get(id);
    if (!POLICY_STATES.includes(row.state)) throw new ServiceError("conflict", `Cannot change the policy of sandbox ${id}: it is ${row.state}.`);
    return this.locks.run(id, () => this.applyPolicy(id, r.policy));
  }

  /** Read-modify-write of the policy (OpenSandbox egress PATCH / DELETE), atomic with respect to other updates. */
  async updatePolicy(id: string, change: (current: Policy) => Policy, field = "(body)"): Promise<SandboxRow> {
    this.assertOpen();
    const row = this.get(id);
    if (!POLICY_STATES.includes(row.state)) throw new ServiceError("conflict", `Cannot change the policy of sandbox ${id}: it is ${row.state}.`);
    return this.locks.run(id, async () => {
      const r = parsePolicy(change(this.get(id).policy));
      if (!r.ok) throw invalid(r.errors.map((e) => ({ field: field === "(body)" ? e.field : `${field}.${e.field}`, error: e.error })));
      return this.applyPolicy(id, r.policy);
    });
  }

  private async applyPolicy(id: string, policy: Policy): Promise<SandboxRow> {
    const before = this.get(id);
    const revision = this.store.setPolicy(id, policy, POLICY_STATES);
    if (revision === null) throw new ServiceError("conflict", `Cannot change the policy of sandbox ${id}: it is ${this.get(id).state}.`);
    if (before.state !== "Running") return this.get(id);
    try {
      await this.driver.setPolicy(id, policy);
      this.store.policyApplied(id, revision);
    } catch (err) {
      // The proxy kept its last good policy (fail closed); make the store say so again, so that a resume or a
      // snapshot never carries a policy that was never enforced.
      const back = this.store.setPolicy(id, before.policy, POLICY_STATES);
      if (back !== null) {
        await this.driver.setPolicy(id, before.policy).then(
          () => this.store.policyApplied(id, back),
          () => undefined,
        );
      }
      throw new ServiceError("failed", `The sandbox's proxy did not accept the policy, and the previous one stays in force: ${errorText(err)}`, [], { cause: err });
    }
    return this.get(id);
  }

  // ---- exec -----------------------------------------------------------------------------------------------

  async exec(id: string, command: readonly string[], timeoutMs: number): Promise<{ exitCode: number; stdout: string; stderr: string; timedOut: boolean }> {
    this.assertOpen();
    const row = this.get(id);
    if (row.state !== "Running") throw new ServiceError("conflict", `Cannot exec in sandbox ${id}: it is ${row.state}; only a Running sandbox runs commands.`);
    const max = this.opts.maxExecTimeoutMs ?? 3_600_000;
    try {
      return await this.driver.exec(id, command, { timeoutMs: Math.min(timeoutMs, max) });
    } catch (err) {
      if (err instanceof RuntimeError && err.code === "not-found") throw new ServiceError("conflict", `Sandbox ${id} has no running processes: ${errorText(err)}`);
      throw new ServiceError("failed", `exec failed: ${errorText(err)}`, [], { cause: err });
    }
  }

  // ---- snapshots ------------------------------------------------------------------------------------------

  private checkSnapshotType(type: SnapshotInput["type"]): void {
    if (type === undefined || type === "filesystem") return;
    const caps = this.capabilities();
    const why = caps.memorySnapshot.supported
      ? "this control module takes filesystem snapshots only"
      : (caps.memorySnapshot.reason ?? "this host cannot take memory snapshots");
    throw new ServiceError("unsupported", `Memory snapshots are not available: ${why}. Use snapshot_type "filesystem" (the files under /workspace; processes restart on restore).`, [
      { field: "snapshot_type", error: why },
    ]);
  }

  /** Insert a Creating snapshot of a Running sandbox (the synchronous part of every snapshot request). */
  private beginSnapshot(sandboxId: string, name: string | undefined): SnapshotRow {
    return this.store.tx(() => {
      const sbx = this.get(sandboxId);
      if (sbx.state !== "Running") {
        throw new ServiceError("conflict", `Cannot snapshot sandbox ${sandboxId}: it is ${sbx.state}; only a Running sandbox can be snapshotted.`);
      }
      if (name !== undefined) {
        const existing = this.store.getSnapshotByName(name);
        if (existing?.state === "Creating" || existing?.state === "Deleting") {
          throw new ServiceError("conflict", `A snapshot named ${JSON.stringify(name)} is being ${existing.state === "Creating" ? "created" : "deleted"}.`);
        }
        if (existing?.state === "Ready") throw new ServiceError("conflict", `A snapshot named ${JSON.stringify(name)} already exists (${existing.id}).`);
        if (existing?.state === "Failed") {
          // A failed attempt holds nothing worth keeping; let the name be used again.
          this.store.transitionSnapshot(existing.id, "Failed", "Deleting", REASONS.DeleteRequested, "Replaced by a new snapshot with the same name.");
          rmSync(existing.layoutPath, { recursive: true, force: true });
          this.store.removeSnapshot(existing.id);
        }
      }
      const id = newId("snap");
      const t = new Date().toISOString();
      return this.store.insertSnapshot({
        id,
        name: name ?? null,
        sandboxId,
        state: "Creating",
        reason: REASONS.SnapshotAccepted,
        message: "Capturing /workspace as an OCI image layout; the sandbox keeps running.",
        type: "filesystem",
        policy: sbx.policy,
        layoutPath: path.join(this.snapshotsDir, id),
        image: sbx.image,
        entrypoint: sbx.entrypoint,
        templateId: sbx.templateId,
        vcpu: sbx.vcpu,
        memory: sbx.memory,
        disk: sbx.disk,
        createdAt: t,
        lastTransitionAt: t,
      });
    });
  }

  /** Capture the filesystem (caller holds the sandbox's lock). Returns null on success, else why it failed. */
  private async capture(snap: SnapshotRow, terminate: boolean): Promise<{ why: string; conflict: boolean } | null> {
    const sbx = this.get(snap.sandboxId);
    if (sbx.state !== "Running") {
      this.store.transitionSnapshot(snap.id, "Creating", "Failed", REASONS.SourceNotRunning, `The sandbox became ${sbx.state} before the snapshot started.`);
      return { why: `the sandbox became ${sbx.state} before the snapshot started`, conflict: true };
    }
    // The policy at capture time (a PUT queued before us has been applied by now).
    this.store.setSnapshotPolicy(snap.id, sbx.policy);
    const annotations: Record<string, string> = {
      [POLICY_ANNOTATION]: JSON.stringify(referencesOnly(sbx.policy)),
      [SANDBOX_ANNOTATION]: sbx.id,
      "org.opencontainers.image.created": snap.createdAt,
      ...(snap.name !== null ? { "org.opencontainers.image.ref.name": snap.name } : {}),
    };
    try {
      const art = await this.driver.snapshotFilesystem(sbx.id, snap.layoutPath, annotations);
      this.store.tx(() => {
        this.store.transitionSnapshot(snap.id, "Creating", "Ready", REASONS.SnapshotReady, "The snapshot is stored and can be restored.", {
          manifestDigest: art.manifestDigest,
          layerSize: art.layerSize,
        });
        // Snapshot-and-terminate is one decision: the snapshot becomes Ready in the same transaction that
        // moves its source to Stopping, so a crash between them cannot leave one without the other.
        if (terminate && canTransition(this.get(sbx.id).state, "Stopping")) {
          this.store.transitionSandbox(sbx.id, this.get(sbx.id).state, "Stopping", REASONS.SnapshotAndTerminate, `Snapshot ${snap.id} is stored; stopping the source sandbox.`);
        }
      });
      return null;
    } catch (err) {
      const why = errorText(err);
      rmSync(snap.layoutPath, { recursive: true, force: true });
      this.store.transitionSnapshot(snap.id, "Creating", "Failed", REASONS.SnapshotFailed, `The snapshot failed: ${why}`);
      this.log.warn({ event: "snapshot-failed", snapshot: snap.id, sandbox: sbx.id, err: why }, "snapshot failed");
      return { why, conflict: false };
    }
  }

  /** OpenSandbox / Tensorlake: 202 Creating now, Ready or Failed in the background; the sandbox keeps running. */
  async snapshot(sandboxId: string, input: SnapshotInput = {}): Promise<Accepted<SnapshotRow>> {
    this.assertOpen();
    this.get(sandboxId);
    this.checkSnapshotType(input.type);
    const snap = this.beginSnapshot(sandboxId, input.name);
    const done = this.inBackground(sandboxId, "snapshot", async () => {
      await this.capture(snap, false);
      return this.getSnapshot(snap.id);
    });
    return { row: snap, done };
  }

  /**
   * Leap0 snapshot/pause: the snapshot is stored, then the source terminated; resolves once both are done. If the
   * snapshot fails the source keeps running and the error says why.
   */
  async snapshotAndTerminate(sandboxId: string, name: string | undefined): Promise<{ snapshot: SnapshotRow; sandbox: SandboxRow }> {
    this.assertOpen();
    this.get(sandboxId);
    const snap = this.beginSnapshot(sandboxId, name);
    return this.inBackground(sandboxId, "snapshot-and-terminate", async () => {
      const failure = await this.capture(snap, true);
      if (failure !== null) {
        throw new ServiceError(failure.conflict ? "conflict" : "failed", `The snapshot failed and sandbox ${sandboxId} was not terminated: ${failure.why}`);
      }
      const sandbox = await this.finishStopping(sandboxId);
      return { snapshot: this.getSnapshot(snap.id), sandbox };
    });
  }

  /** Leap0 snapshot/create: synchronous; resolves with the snapshot Ready, or fails with why. */
  async snapshotNow(sandboxId: string, name: string | undefined): Promise<SnapshotRow> {
    const { row, done } = await this.snapshot(sandboxId, { name });
    const final = await done;
    if (final.state !== "Ready") throw new ServiceError("failed", `Snapshot ${row.id} failed: ${final.message}`);
    return final;
  }

  deleteSnapshot(id: string): void {
    this.assertOpen();
    this.store.tx(() => {
      const snap = this.getSnapshot(id);
      if (snap.state === "Creating") throw new ServiceError("conflict", `Snapshot ${id} is still being created; wait until it is Ready or Failed.`);
      if (snap.state === "Deleting") throw new ServiceError("conflict", `Snapshot ${id} is already being deleted.`);
      if (this.store.restoresInFlight(id) > 0) throw new ServiceError("conflict", `Snapshot ${id} is being restored right now; delete it once the new sandbox is Running.`);
      this.store.transitionSnapshot(id, snap.state, "Deleting", REASONS.DeleteRequested, "Removing the snapshot's files.");
    });
    // Deleting is committed first: a crash here is finished by the next start (reconcile), never half-done.
    rmSync(this.getSnapshot(id).layoutPath, { recursive: true, force: true });
    this.store.removeSnapshot(id);
  }

  // ---- restart safety -------------------------------------------------------------------------------------

  /** Bring every row that a previous run left in flight to a consistent state; nothing stays transitional. */
  private async reconcile(): Promise<void> {
    for (const snap of this.store.snapshotsIn(["Creating"])) {
      rmSync(snap.layoutPath, { recursive: true, force: true });
      this.store.transitionSnapshot(snap.id, "Creating", "Failed", REASONS.ControlRestarted, "The control module restarted while this snapshot was being taken; take it again.");
      this.log.warn({ event: "reconcile", snapshot: snap.id, state: "Failed" }, "snapshot interrupted by a restart");
    }
    for (const snap of this.store.snapshotsIn(["Deleting"])) {
      rmSync(snap.layoutPath, { recursive: true, force: true });
      this.store.removeSnapshot(snap.id);
    }
    for (const row of this.store.sandboxesIn(["Pending", "Running", "Pausing", "Paused", "Resuming", "Stopping"])) {
      try {
        await this.reconcileSandbox(row);
      } catch (err) {
        const cur = this.get(row.id);
        if (canTransition(cur.state, "Failed")) {
          this.store.transitionSandbox(row.id, cur.state, "Failed", REASONS.ControlRestarted, `Could not re-adopt the sandbox after a restart: ${errorText(err)}`);
        }
      }
      this.log.info({ event: "reconcile", sandbox: row.id, was: row.state, now: this.get(row.id).state }, "sandbox reconciled");
    }
  }

  private async reconcileSandbox(row: SandboxRow): Promise<void> {
    const id = row.id;
    if (row.state === "Pending") {
      await this.driver.destroy(id).catch(() => undefined);
      this.store.transitionSandbox(id, "Pending", "Failed", REASONS.ControlRestarted, "The control module restarted before this sandbox finished starting; create it again.");
      return;
    }
    if (row.state === "Stopping") {
      await this.finishStopping(id);
      return;
    }
    const adopted = row.runtime ? await this.driver.adopt(row.runtime).catch(() => null) : null;
    if (!adopted) {
      await this.driver.destroy(id).catch(() => undefined);
      this.store.transitionSandbox(id, row.state, "Failed", REASONS.ProcessExited, `The sandbox's processes (or its proxy) were gone when the control module restarted; it was ${row.state}.`, { runtime: null });
      return;
    }
    this.store.updateSandbox(id, [row.state], { runtime: adopted });
    switch (row.state) {
      case "Running":
        // Resume, not just setPolicy, whatever the driver reports: it is idempotent, applies the stored policy
        // first, and thaws processes that a crash left frozen (a snapshot freezes the tree while it copies).
        await this.driver.resume(id, row.policy);
        this.store.policyApplied(id, row.policyRevision);
        return;
      case "Paused":
        if ((await this.driver.status(id)) === "running") await this.driver.pause(id);
        return;
      case "Pausing":
        // The user asked for a pause: finish it.
        if ((await this.driver.status(id)) !== "paused") await this.driver.pause(id);
        this.store.transitionSandbox(id, "Pausing", "Paused", REASONS.Paused, "Processes are frozen and the proxy refuses all egress (pause finished after a control restart).");
        return;
      case "Resuming":
        await this.driver.resume(id, row.policy);
        this.store.tx(() => {
          this.store.transitionSandbox(id, "Resuming", "Running", REASONS.Resumed, "Running again under the latest policy (resume finished after a control restart).");
          this.store.policyApplied(id, row.policyRevision);
        });
        return;
      default:
        return;
    }
  }
}

function parsePolicyOrThrow(p: unknown): Policy {
  const r = parsePolicy(p);
  if (!r.ok) throw invalid(r.errors);
  return r.policy;
}
