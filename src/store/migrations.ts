/**
 * Versioned schema migrations. Append only: a migration that has shipped is never edited, a change is a new
 * entry. Each runs in its own transaction together with its row in schema_migrations, so a crash mid-way
 * leaves the previous version intact.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

const SANDBOX_STATES_SQL = "'Pending','Running','Pausing','Paused','Resuming','Stopping','Terminated','Failed'";
const SNAPSHOT_STATES_SQL = "'Creating','Ready','Deleting','Failed'";

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "sandboxes and snapshots",
    sql: `
      CREATE TABLE sandboxes (
        id                 TEXT PRIMARY KEY,
        state              TEXT NOT NULL CHECK (state IN (${SANDBOX_STATES_SQL})),
        reason             TEXT NOT NULL CHECK (reason <> ''),
        message            TEXT NOT NULL CHECK (message <> ''),
        last_transition_at TEXT NOT NULL,
        created_at         TEXT NOT NULL,
        -- NULL: no automatic expiry (OpenSandbox "timeout": null).
        expires_at         TEXT,
        timeout_seconds    INTEGER,
        auto_pause         INTEGER NOT NULL DEFAULT 0 CHECK (auto_pause IN (0, 1)),
        metadata           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
        image              TEXT NOT NULL,
        env                TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(env)),
        entrypoint         TEXT NOT NULL CHECK (json_valid(entrypoint)),
        -- The validated policy exactly as given: \${env:…}/\${file:…} references, never resolved values.
        policy             TEXT NOT NULL CHECK (json_valid(policy)),
        policy_revision    INTEGER NOT NULL DEFAULT 1,
        -- 1 while the stored policy is not yet confirmed enforced by the sandbox's proxy (set while paused,
        -- or between the write and the proxy's acknowledgement); resume and adoption apply it.
        pending_policy     INTEGER NOT NULL DEFAULT 0 CHECK (pending_policy IN (0, 1)),
        runtime            TEXT CHECK (runtime IS NULL OR json_valid(runtime)),
        template_id        TEXT NOT NULL,
        vcpu               INTEGER NOT NULL,
        memory             INTEGER NOT NULL,
        disk               INTEGER NOT NULL,
        snapshot_source    TEXT REFERENCES snapshots(id) ON DELETE SET NULL,
        updated_at         TEXT NOT NULL
      );
      CREATE INDEX sandboxes_state ON sandboxes(state);
      CREATE INDEX sandboxes_expiry ON sandboxes(expires_at) WHERE expires_at IS NOT NULL;
      CREATE INDEX sandboxes_created ON sandboxes(created_at);

      CREATE TABLE snapshots (
        id                 TEXT PRIMARY KEY,
        name               TEXT UNIQUE,
        sandbox_id         TEXT NOT NULL REFERENCES sandboxes(id),
        state              TEXT NOT NULL CHECK (state IN (${SNAPSHOT_STATES_SQL})),
        reason             TEXT NOT NULL CHECK (reason <> ''),
        message            TEXT NOT NULL CHECK (message <> ''),
        type               TEXT NOT NULL CHECK (type IN ('filesystem')),
        -- A copy of the source sandbox's policy at capture time (references only).
        policy             TEXT NOT NULL CHECK (json_valid(policy)),
        layout_path        TEXT NOT NULL,
        manifest_digest    TEXT,
        layer_size         INTEGER,
        image              TEXT NOT NULL,
        entrypoint         TEXT NOT NULL CHECK (json_valid(entrypoint)),
        template_id        TEXT NOT NULL,
        vcpu               INTEGER NOT NULL,
        memory             INTEGER NOT NULL,
        disk               INTEGER NOT NULL,
        created_at         TEXT NOT NULL,
        last_transition_at TEXT NOT NULL
      );
      CREATE INDEX snapshots_sandbox ON snapshots(sandbox_id);
      CREATE INDEX snapshots_state ON snapshots(state);
    `,
  },
];
