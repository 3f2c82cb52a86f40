import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Policy } from "../../src/policy/types.js";
import {
  RuntimeError,
  type ExecResult,
  type RuntimeCapabilities,
  type RuntimeDriver,
  type RuntimeRecord,
  type SandboxSpec,
  type SnapshotArtifact,
} from "../../src/runtime/driver.js";

/**
 * A runtime driver with no processes, for the few tests that need a failure the real LocalDriver cannot be made
 * to produce on demand (a snapshot that fails, a proxy that refuses a policy). Everything else runs against the
 * real driver.
 */
export class FailingDriver implements RuntimeDriver {
  readonly name = "failing-test-driver";
  readonly sandboxes = new Map<string, { state: "running" | "paused"; policy: Policy }>();
  failSnapshot: string | null = null;
  failSetPolicy: string | null = null;
  failCreate: string | null = null;
  /** Milliseconds a snapshot takes. */
  snapshotDelayMs = 0;
  calls: string[] = [];

  async capabilities(): Promise<RuntimeCapabilities> {
    return { images: ["local:host"], memorySnapshot: { supported: false, reason: "the test driver has no CRIU" }, freezer: "sigstop" };
  }
  async create(spec: SandboxSpec): Promise<RuntimeRecord> {
    this.calls.push(`create ${spec.id}`);
    if (this.failCreate) throw new RuntimeError("failed", this.failCreate);
    this.sandboxes.set(spec.id, { state: "running", policy: spec.policy });
    return { id: spec.id, data: { fake: true } };
  }
  async adopt(record: RuntimeRecord): Promise<RuntimeRecord | null> {
    return this.sandboxes.has(record.id) ? record : null;
  }
  async pause(id: string): Promise<void> {
    this.calls.push(`pause ${id}`);
    this.get(id).state = "paused";
  }
  async resume(id: string, policy: Policy): Promise<void> {
    this.calls.push(`resume ${id}`);
    const s = this.get(id);
    s.policy = policy;
    s.state = "running";
  }
  async setPolicy(id: string, policy: Policy): Promise<void> {
    this.calls.push(`setPolicy ${id}`);
    if (this.failSetPolicy) throw new RuntimeError("failed", this.failSetPolicy);
    this.get(id).policy = policy;
  }
  async exec(id: string, command: readonly string[]): Promise<ExecResult> {
    this.get(id);
    return { exitCode: 0, stdout: command.join(" "), stderr: "", timedOut: false };
  }
  async snapshotFilesystem(id: string, layoutDir: string, annotations: Record<string, string>): Promise<SnapshotArtifact> {
    this.calls.push(`snapshot ${id}`);
    this.get(id);
    if (this.snapshotDelayMs) await new Promise((r) => setTimeout(r, this.snapshotDelayMs));
    mkdirSync(layoutDir, { recursive: false });
    if (this.failSnapshot) throw new RuntimeError("failed", this.failSnapshot);
    writeFileSync(path.join(layoutDir, "annotations.json"), JSON.stringify(annotations));
    return { manifestDigest: "sha256:0000", layerSize: 1 };
  }
  async destroy(id: string): Promise<void> {
    this.calls.push(`destroy ${id}`);
    this.sandboxes.delete(id);
  }
  async status(id: string): Promise<"running" | "paused" | "gone"> {
    return this.sandboxes.get(id)?.state ?? "gone";
  }
  async detach(): Promise<void> {}

  private get(id: string) {
    const s = this.sandboxes.get(id);
    if (!s) throw new RuntimeError("not-found", `no sandbox ${id}`);
    return s;
  }
}
