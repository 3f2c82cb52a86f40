import { chmodSync, existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS, type Migration } from "./migrations.js";

export type Db = Database.Database;

export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreError";
  }
}

/**
 * Open (creating if needed) the control store: one SQLite file in WAL mode.
 *
 * synchronous=FULL, not NORMAL: in WAL mode NORMAL survives a process crash but may lose the last commits on
 * power loss or a kernel crash. Here a lost commit can be a security regression, not just stale data: a policy
 * tightened by PUT /network-policy (answered 200) could come back as the older, looser policy at the next
 * resume or restore. Lifecycle writes are a few per operation, so one fsync per commit costs nothing that
 * matters.
 */
export function openDatabase(file: string, migrations: readonly Migration[] = MIGRATIONS): Db {
  const dir = path.dirname(file);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  let db: Db;
  try {
    db = new Database(file);
  } catch (err) {
    throw new StoreError(`cannot open the store ${file}: ${(err as Error).message}`, { cause: err });
  }
  // Policies may hold literal header values: the store is readable by its owner only.
  if (file !== ":memory:") chmodSync(file, 0o600);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma("foreign_keys = ON");
  // Another process (an operator's sqlite3 shell) may hold a lock briefly; wait instead of failing.
  db.pragma("busy_timeout = 5000");
  migrate(db, migrations);
  return db;
}

/** Apply every migration newer than the store's version, each in its own transaction. */
export function migrate(db: Db, migrations: readonly Migration[] = MIGRATIONS): number {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
  )`);
  const current = (db.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get() as { v: number }).v;
  const latest = migrations.reduce((m, x) => Math.max(m, x.version), 0);
  if (current > latest) {
    // A newer build wrote this store; running older code on it could silently drop columns' meaning.
    throw new StoreError(`the store is at schema version ${current}, newer than this build knows (${latest}); run a newer sandbox-egress`);
  }
  const insert = db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)");
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      insert.run(m.version, m.name, new Date().toISOString());
    })();
  }
  return latest;
}
