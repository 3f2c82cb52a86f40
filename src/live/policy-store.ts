import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { watch, promises as fs, type FSWatcher } from "node:fs";
import path from "node:path";
import type { Logger } from "../telemetry/logger.js";
import type { ProxyMetrics } from "../telemetry/metrics.js";
import { compilePolicy, type CompiledPolicy } from "../policy/compile.js";
import { parsePolicy } from "../policy/schema.js";
import type { FieldError, Policy } from "../policy/types.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { describeJsonError } from "../util/json-error.js";
import { resolveTransforms, type ResolvedTransform } from "./secrets.js";

/** The policy in force. Immutable: a change builds a new one and swaps the reference. */
export interface PolicyState {
  readonly revision: number;
  readonly policy: Policy;
  readonly compiled: CompiledPolicy;
  /** Resolved secrets, by transform index. Never serialised. */
  readonly transforms: readonly ResolvedTransform[];
}

export type PrepareResult = { ok: true; policy: Policy; compiled: CompiledPolicy; transforms: readonly ResolvedTransform[] } | { ok: false; errors: readonly FieldError[] };

export type PutResult =
  | { ok: true; state: PolicyState }
  | { ok: false; status: 400; errors: readonly FieldError[] }
  | { ok: false; status: 412; current: number }
  /** The policy file could not be written (disk full, read-only, ...): nothing changed. `errno` is e.g. ENOSPC. */
  | { ok: false; status: 507; errno: string; current: number };

export class PolicyInvalidError extends Error {
  constructor(readonly source: string, readonly errors: readonly FieldError[]) {
    super(`${source}: invalid policy\n${errors.map((e) => `${e.field}: ${e.error}`).join("\n")}`);
    this.name = "PolicyInvalidError";
  }
}

export interface PolicyStoreOptions {
  file?: string;
  internalAllow?: readonly string[];
  log: Logger;
  metrics?: ProxyMetrics;
  env?: NodeJS.ProcessEnv;
}

const DEFAULT_POLICY: Policy = Object.freeze({ mode: "allow-all" as const });

/**
 * Holds the policy in force: loads and watches `--policy-file`, validates every change before it applies
 * (an invalid one changes nothing and counts a reload failure), writes admin PUTs back atomically, and keeps
 * the revision across restarts in a small state file beside the policy.
 */
export class PolicyStore extends EventEmitter<{ change: [PolicyState] }> {
  private stateRef: PolicyState;
  private selfAddresses: readonly string[] = [];
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private lastContentHash: string | undefined;
  /** Serialises writers so If-Match checks and file writes never interleave. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly opts: PolicyStoreOptions, initial: PolicyState, hash: string | undefined) {
    super();
    this.stateRef = initial;
    this.lastContentHash = hash;
    opts.metrics?.policyRevision.set(initial.revision);
  }

  static async open(opts: PolicyStoreOptions): Promise<PolicyStore> {
    let policy: unknown = DEFAULT_POLICY;
    let hash: string | undefined;
    let revision = 1;
    if (opts.file) {
      let text: string;
      try {
        text = await fs.readFile(opts.file, "utf8");
      } catch (err) {
        throw new Error(`cannot read --policy-file ${opts.file} (${(err as NodeJS.ErrnoException).code ?? err}); create it or omit the flag for allow-all`);
      }
      policy = parseJson(text, opts.file);
      hash = sha256(text);
      revision = await readRevision(opts.file, hash);
    }
    const prepared = prepare(policy, { internalAllow: opts.internalAllow ?? [], selfAddresses: [] }, opts.env);
    if (!prepared.ok) throw new PolicyInvalidError(opts.file ?? "policy", prepared.errors);
    const store = new PolicyStore(opts, freezeState(revision, prepared), hash);
    if (opts.file) {
      await store.persistRevision(revision, hash);
      store.startWatching();
    }
    return store;
  }

  get state(): PolicyState {
    return this.stateRef;
  }

  /** The proxy's own listening addresses are internal; recompile once they are known. */
  setSelfAddresses(addresses: readonly string[]): void {
    this.selfAddresses = addresses;
    const s = this.stateRef;
    const compiled = compilePolicy(s.policy, this.compileOptions());
    this.stateRef = Object.freeze({ ...s, compiled });
  }

  /** Validate (schema, secrets, compile) without applying. */
  validate(input: unknown): PrepareResult {
    return prepare(input, this.compileOptions(), this.opts.env);
  }

  /** Apply a new policy (admin PUT): validate, write back to the file atomically, swap, announce. */
  put(input: unknown, ifMatch?: number): Promise<PutResult> {
    const run = async (): Promise<PutResult> => {
      if (ifMatch !== undefined && ifMatch !== this.stateRef.revision) {
        return { ok: false, status: 412, current: this.stateRef.revision };
      }
      const prepared = this.validate(input);
      if (!prepared.ok) {
        this.opts.metrics?.reloadFailures.inc();
        return { ok: false, status: 400, errors: prepared.errors };
      }
      const revision = this.stateRef.revision + 1;
      if (this.opts.file) {
        const text = `${JSON.stringify(prepared.policy, null, 2)}\n`;
        const hash = sha256(text);
        // Record the hash first so the watcher recognises our own write and does not count it twice.
        const previousHash = this.lastContentHash;
        this.lastContentHash = hash;
        try {
          await writeFileAtomic(this.opts.file, text);
        } catch (err) {
          // writeFileAtomic leaves the old file in place and removes its temp file: nothing changed.
          this.lastContentHash = previousHash;
          const errno = (err as NodeJS.ErrnoException).code ?? "EIO";
          this.opts.metrics?.reloadFailures.inc();
          this.opts.log.error({ event: "policy-write-failed", revision: this.stateRef.revision, errno }, "cannot write the policy file; the policy in force is unchanged");
          return { ok: false, status: 507, errno, current: this.stateRef.revision };
        }
        try {
          await this.persistRevision(revision, hash);
        } catch (err) {
          // The new policy is on disk: apply it. A restart that finds the revision file stale counts the changed
          // file as one more revision, which is this one.
          this.opts.log.warn({ event: "policy-revision-write-failed", revision, errno: (err as NodeJS.ErrnoException).code }, "cannot write the revision file");
        }
      }
      return { ok: true, state: this.apply(revision, prepared, "admin") };
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.debounce) clearTimeout(this.debounce);
    this.removeAllListeners();
  }

  private compileOptions(): { internalAllow: readonly string[]; selfAddresses: readonly string[] } {
    return { internalAllow: this.opts.internalAllow ?? [], selfAddresses: this.selfAddresses };
  }

  private apply(revision: number, prepared: Extract<PrepareResult, { ok: true }>, source: string): PolicyState {
    const state = freezeState(revision, prepared);
    this.stateRef = state;
    this.opts.metrics?.policyRevision.set(revision);
    this.opts.log.info({ event: "policy", revision, source, mode: prepared.policy.mode }, "policy applied");
    this.emit("change", state);
    return state;
  }

  private startWatching(): void {
    const file = this.opts.file!;
    const dir = path.dirname(path.resolve(file));
    const base = path.basename(file);
    // Watch the directory, not the file: an atomic rename (ours, an editor's, a ConfigMap's) replaces the
    // inode, and a watch on the old inode would go silent.
    this.watcher = watch(dir, { persistent: false }, (_event, name) => {
      if (name !== null && name !== base && !name.startsWith("..")) return;
      if (this.debounce) clearTimeout(this.debounce);
      this.debounce = setTimeout(() => void this.reloadFromFile(), 50);
    });
    this.watcher.on("error", (err) => this.opts.log.error({ event: "policy-watch-error", err: err.message }, "policy file watch failed"));
  }

  private async reloadFromFile(): Promise<void> {
    const file = this.opts.file!;
    const run = async (): Promise<void> => {
      let text: string;
      try {
        text = await fs.readFile(file, "utf8");
      } catch (err) {
        this.reloadFailed([{ field: "(file)", error: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}` }]);
        return;
      }
      // An editor that writes in place can be caught between truncate and write: give a file that is not
      // (yet) valid JSON one more look before calling it invalid.
      if (!isJson(text)) {
        await new Promise((r) => setTimeout(r, 150));
        text = await fs.readFile(file, "utf8").catch(() => text);
      }
      const hash = sha256(text);
      if (hash === this.lastContentHash) return;
      let parsed: unknown;
      try {
        parsed = parseJson(text, file);
      } catch (err) {
        this.lastContentHash = hash;
        this.reloadFailed((err as PolicyInvalidError).errors ?? [{ field: "(file)", error: String(err) }]);
        return;
      }
      const prepared = this.validate(parsed);
      this.lastContentHash = hash;
      if (!prepared.ok) {
        this.reloadFailed(prepared.errors);
        return;
      }
      const revision = this.stateRef.revision + 1;
      await this.persistRevision(revision, hash);
      this.apply(revision, prepared, "file");
    };
    this.queue = this.queue.then(run, run).catch((err: unknown) => {
      this.opts.log.error({ event: "policy-reload-error", err: String(err) }, "policy reload failed");
    });
    await this.queue;
  }

  private reloadFailed(errors: readonly FieldError[]): void {
    this.opts.metrics?.reloadFailures.inc();
    this.opts.log.error(
      { event: "policy-invalid", revision: this.stateRef.revision, errors },
      "policy file change rejected; the last good policy stays in force",
    );
  }

  private async persistRevision(revision: number, hash: string | undefined): Promise<void> {
    if (!this.opts.file) return;
    await writeFileAtomic(revisionFile(this.opts.file), `${JSON.stringify({ revision, sha256: hash })}\n`);
  }
}

function prepare(
  input: unknown,
  compileOpts: { internalAllow: readonly string[]; selfAddresses: readonly string[] },
  env: NodeJS.ProcessEnv | undefined,
): PrepareResult {
  const parsed = parsePolicy(input);
  if (!parsed.ok) return { ok: false, errors: parsed.errors };
  const secrets = resolveTransforms(parsed.policy, env);
  if (!secrets.ok) return { ok: false, errors: secrets.errors };
  const compiled = compilePolicy(parsed.policy, compileOpts);
  return { ok: true, policy: parsed.policy, compiled, transforms: secrets.transforms };
}

function freezeState(revision: number, p: Extract<PrepareResult, { ok: true }>): PolicyState {
  return Object.freeze({ revision, policy: p.policy, compiled: p.compiled, transforms: p.transforms });
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new PolicyInvalidError(source, [{ field: "(file)", error: describeJsonError(err, text) }]);
  }
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function revisionFile(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.revision`);
}

/** The revision survives restarts; a file changed while the proxy was down counts as one more revision. */
async function readRevision(file: string, hash: string): Promise<number> {
  try {
    const saved = JSON.parse(await fs.readFile(revisionFile(file), "utf8")) as { revision?: unknown; sha256?: unknown };
    if (typeof saved.revision === "number" && Number.isSafeInteger(saved.revision) && saved.revision > 0) {
      return saved.sha256 === hash ? saved.revision : saved.revision + 1;
    }
  } catch {
    // No state yet: first start with this file.
  }
  return 1;
}
