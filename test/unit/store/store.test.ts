import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { migrate, openDatabase, StoreError } from "../../../src/store/db.js";
import { IllegalTransitionError, Store, type SandboxRow } from "../../../src/store/index.js";
import { MIGRATIONS } from "../../../src/store/migrations.js";

let dir: string;
let store: Store;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "store-test-"));
  store = new Store(path.join(dir, "control.sqlite"));
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
function sandbox(over: Partial<SandboxRow> = {}): SandboxRow {
  const t = new Date(Date.now() + n++).toISOString();
  return store.insertSandbox({
    id: `sbx-${n}`,
    state: "Pending",
    reason: "Provisioning",
    message: "starting",
    lastTransitionAt: t,
    createdAt: t,
    expiresAt: null,
    timeoutSeconds: null,
    autoPause: false,
    metadata: {},
    image: "local:host",
    env: {},
    entrypoint: ["tail", "-f", "/dev/null"],
    policy: { mode: "deny-all" },
    templateId: "local:host",
    vcpu: 1,
    memory: 1024,
    disk: 1024,
    snapshotSource: null,
    ...over,
  });
}

describe("store: opening and migrations", () => {
  it("runs in WAL mode with foreign keys on and synchronous=FULL", () => {
    expect(store.db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(store.db.pragma("foreign_keys", { simple: true })).toBe(1);
    expect(store.db.pragma("synchronous", { simple: true })).toBe(2);
  });

  it("records each migration once, and reopening applies nothing twice", () => {
    const rows = () => store.db.prepare("SELECT version, name FROM schema_migrations").all();
    expect(rows()).toEqual(MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));
    store.close();
    store = new Store(path.join(dir, "control.sqlite"));
    expect(rows()).toHaveLength(MIGRATIONS.length);
  });

  it("applies a new migration in a transaction: a failing one leaves the previous version intact", () => {
    const db = openDatabase(path.join(dir, "m.sqlite"));
    const bad = [...MIGRATIONS, { version: 99, name: "broken", sql: "CREATE TABLE extra (x INTEGER); THIS IS NOT SQL;" }];
    expect(() => migrate(db, bad)).toThrow();
    expect(db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get()).toEqual({ v: 1 });
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'extra'").get()).toBeUndefined();
    db.close();
  });

  it("refuses a store written by a newer build", () => {
    const file = path.join(dir, "newer.sqlite");
    const raw = new Database(file);
    raw.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
    raw.prepare("INSERT INTO schema_migrations VALUES (42, 'future', 'x')").run();
    raw.close();
    expect(() => openDatabase(file)).toThrow(StoreError);
    expect(() => openDatabase(file)).toThrow(/schema version 42/);
  });
});

describe("store: compare-and-set transitions", () => {
  it("moves a sandbox when it is in the expected state, with reason, message and a new timestamp", async () => {
    const s = sandbox();
    await new Promise((r) => setTimeout(r, 5));
    expect(store.transitionSandbox(s.id, "Pending", "Running", "Started", "running now", { runtime: { id: s.id, data: { pid: 1 } } })).toBe(true);
    const after = store.getSandbox(s.id)!;
    expect(after.state).toBe("Running");
    expect(after.reason).toBe("Started");
    expect(after.message).toBe("running now");
    expect(after.runtime).toEqual({ id: s.id, data: { pid: 1 } });
    expect(after.lastTransitionAt > s.lastTransitionAt).toBe(true);
  });

  it("changes nothing when the row is no longer in the expected state", () => {
    const s = sandbox();
    store.transitionSandbox(s.id, "Pending", "Running", "Started", "running");
    const before = store.getSandbox(s.id)!;
    expect(store.transitionSandbox(s.id, "Pending", "Failed", "ProvisionFailed", "boom")).toBe(false);
    expect(store.getSandbox(s.id)).toEqual(before);
  });

  it("throws on a transition the state machine forbids, before touching the row", () => {
    const s = sandbox();
    expect(() => store.transitionSandbox(s.id, "Pending", "Paused", "X", "y")).toThrow(IllegalTransitionError);
    expect(() => store.transitionSandbox(s.id, ["Running", "Terminated"], "Running", "X", "y")).toThrow(IllegalTransitionError);
    expect(store.getSandbox(s.id)!.state).toBe("Pending");
  });

  it("lets exactly one of two racing transitions win", () => {
    const s = sandbox();
    store.transitionSandbox(s.id, "Pending", "Running", "Started", "running");
    const a = store.transitionSandbox(s.id, "Running", "Pausing", "PauseRequested", "pausing");
    const b = store.transitionSandbox(s.id, "Running", "Stopping", "UserDelete", "stopping");
    expect([a, b]).toEqual([true, false]);
    expect(store.getSandbox(s.id)!.state).toBe("Pausing");
  });

  it("rejects an empty reason or message at the schema level", () => {
    const s = sandbox();
    expect(() => store.transitionSandbox(s.id, "Pending", "Running", "", "x")).toThrow();
    expect(store.getSandbox(s.id)!.state).toBe("Pending");
  });

  it("bumps the policy revision on every write and clears pending only for the revision applied", () => {
    const s = sandbox();
    const r1 = store.setPolicy(s.id, { mode: "allow-all" }, ["Pending"])!;
    const r2 = store.setPolicy(s.id, { mode: "custom", allow_domains: ["a.test"] }, ["Pending"])!;
    expect(r2).toBe(r1 + 1);
    expect(store.getSandbox(s.id)!.pendingPolicy).toBe(true);
    expect(store.policyApplied(s.id, r1)).toBe(false);
    expect(store.getSandbox(s.id)!.pendingPolicy).toBe(true);
    expect(store.policyApplied(s.id, r2)).toBe(true);
    expect(store.getSandbox(s.id)!.pendingPolicy).toBe(false);
    expect(store.setPolicy(s.id, { mode: "deny-all" }, ["Running"])).toBeNull();
    expect(store.getSandbox(s.id)!.policy).toEqual({ mode: "custom", allow_domains: ["a.test"] });
  });
});

describe("store: listing", () => {
  it("filters states with OR, metadata with AND, and paginates", () => {
    sandbox({ metadata: { team: "a", env: "prod" } });
    const b = sandbox({ metadata: { team: "a", env: "dev" } });
    sandbox({ metadata: { team: "b", env: "prod" } });
    store.transitionSandbox(b.id, "Pending", "Running", "Started", "running");
    expect(store.listSandboxes({ page: 1, pageSize: 10 }).totalItems).toBe(3);
    expect(store.listSandboxes({ states: ["Running", "Paused"], page: 1, pageSize: 10 }).items.map((s) => s.id)).toEqual([b.id]);
    expect(store.listSandboxes({ metadata: { team: "a" }, page: 1, pageSize: 10 }).totalItems).toBe(2);
    expect(store.listSandboxes({ metadata: { team: "a", env: "prod" }, page: 1, pageSize: 10 }).totalItems).toBe(1);
    const p1 = store.listSandboxes({ page: 1, pageSize: 2 });
    const p2 = store.listSandboxes({ page: 2, pageSize: 2 });
    expect(p1.items).toHaveLength(2);
    expect(p2.items).toHaveLength(1);
    expect(new Set([...p1.items, ...p2.items].map((s) => s.id)).size).toBe(3);
  });

  it("treats metadata keys as data, never as a JSON path", () => {
    sandbox({ metadata: { 'we"ird.$key': "v" } });
    expect(store.listSandboxes({ metadata: { 'we"ird.$key': "v" }, page: 1, pageSize: 10 }).totalItems).toBe(1);
    expect(store.listSandboxes({ metadata: { "$.x": "v" }, page: 1, pageSize: 10 }).totalItems).toBe(0);
  });
});

describe("store: snapshots", () => {
  function snap(sandboxId: string, name: string | null) {
    const t = new Date().toISOString();
    return store.insertSnapshot({
      id: `snap-${n++}`,
      name,
      sandboxId,
      state: "Creating",
      reason: "SnapshotAccepted",
      message: "capturing",
      type: "filesystem",
      policy: { mode: "custom", allow_domains: ["a.test"] },
      layoutPath: path.join(dir, "layout"),
      image: "local:host",
      entrypoint: ["sh"],
      templateId: "local:host",
      vcpu: 1,
      memory: 1,
      disk: 1,
      createdAt: t,
      lastTransitionAt: t,
    });
  }

  it("keeps names unique and refers to an existing sandbox", () => {
    const s = sandbox();
    snap(s.id, "warm");
    expect(() => snap(s.id, "warm")).toThrow(/UNIQUE/);
    snap(s.id, null);
    snap(s.id, null);
    expect(() => snap("sbx-nope", "x")).toThrow(/FOREIGN KEY/);
  });

  it("removes a row only once it is Deleting, and restores lose their source reference", () => {
    const s = sandbox();
    const sn = snap(s.id, "warm");
    expect(store.removeSnapshot(sn.id)).toBe(false);
    expect(store.transitionSnapshot(sn.id, "Creating", "Ready", "SnapshotReady", "ready", { manifestDigest: "sha256:00", layerSize: 10 })).toBe(true);
    const restored = sandbox({ snapshotSource: sn.id });
    expect(store.restoresInFlight(sn.id)).toBe(1);
    expect(() => store.transitionSnapshot(sn.id, "Ready", "Creating", "x", "y")).toThrow(IllegalTransitionError);
    expect(store.transitionSnapshot(sn.id, "Ready", "Deleting", "DeleteRequested", "deleting")).toBe(true);
    expect(store.removeSnapshot(sn.id)).toBe(true);
    expect(store.getSnapshot(sn.id)).toBeUndefined();
    expect(store.getSandbox(restored.id)!.snapshotSource).toBeNull();
  });
});
