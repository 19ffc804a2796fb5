//! Schema migrations, versioned with `PRAGMA user_version`.
//!
//! Migration `n` (1-based) is `MIGRATIONS[n - 1]`. Migrations are only ever appended: a released
//! database may sit at any earlier version, and rewriting an applied step would leave it silently
//! different from a fresh one.

use rusqlite::Connection;
use tasklane_core::{Error, Result};

use super::error::sql_err;
use super::status_sets::{active_run, finished_run, not_open_work, open_run, unclaimable_task};

const MIGRATION_1: &str = r#"
CREATE TABLE tasks (
    id                     TEXT PRIMARY KEY NOT NULL,
    identifier             TEXT,
    scope                  TEXT NOT NULL,
    workspace_id           TEXT,
    parent_task_id         TEXT REFERENCES tasks(id) ON DELETE RESTRICT,
    network_channel        TEXT,
    title                  TEXT NOT NULL,
    description            TEXT,
    priority               TEXT NOT NULL,
    max_attempts           INTEGER NOT NULL,
    auto_enqueue_on_ready  INTEGER NOT NULL,
    status                 TEXT NOT NULL,
    approval_policy        TEXT NOT NULL,
    approval_state         TEXT NOT NULL,
    owner_kind             TEXT,
    owner_ref              TEXT,
    current_run_id         TEXT,
    latest_event_seq       INTEGER NOT NULL DEFAULT 0,
    created_by_kind        TEXT NOT NULL,
    created_by_ref         TEXT NOT NULL,
    origin_kind            TEXT NOT NULL,
    origin_ref             TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    closed_at              INTEGER,
    last_activity_at       INTEGER NOT NULL,
    metadata               TEXT,
    required_capabilities  TEXT NOT NULL DEFAULT '[]',
    preferred_capabilities TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX tasks_list_order ON tasks (last_activity_at DESC, updated_at DESC, created_at DESC, id DESC);
-- Children are listed in list order, so the parent index carries the sort keys.
CREATE INDEX tasks_parent ON tasks (parent_task_id, last_activity_at DESC, updated_at DESC, created_at DESC, id DESC);
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_workspace ON tasks (workspace_id);

CREATE TABLE task_runs (
    id                      TEXT PRIMARY KEY NOT NULL,
    task_id                 TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    status                  TEXT NOT NULL,
    attempt                 INTEGER NOT NULL,
    claimed_by_kind         TEXT,
    claimed_by_ref          TEXT,
    session_id              TEXT,
    origin_kind             TEXT NOT NULL,
    origin_ref              TEXT NOT NULL,
    idempotency_key         TEXT,
    network_channel         TEXT,
    coordination_channel_id TEXT,
    claim_token_hash        TEXT,
    lease_until             INTEGER,
    heartbeat_at            INTEGER,
    lease_expirations       INTEGER NOT NULL DEFAULT 0,
    queued_at               INTEGER NOT NULL,
    claimed_at              INTEGER,
    started_at              INTEGER,
    ended_at                INTEGER,
    error                   TEXT,
    metadata                TEXT,
    result                  TEXT,
    required_capabilities   TEXT NOT NULL DEFAULT '[]',
    preferred_capabilities  TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX task_runs_task ON task_runs (task_id, queued_at DESC, id DESC);
-- The claim query scans only queued runs, oldest first.
CREATE INDEX task_runs_queued ON task_runs (queued_at, id) WHERE status = 'queued';
-- Lease expiry looks only at active runs, soonest expiry first.
CREATE INDEX task_runs_active_lease ON task_runs (lease_until) WHERE status IN ('claimed', 'starting', 'running');
CREATE INDEX task_runs_session ON task_runs (session_id) WHERE session_id IS NOT NULL;

CREATE TABLE task_dependencies (
    task_id            TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    depends_on_task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind               TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (task_id, depends_on_task_id, kind)
) WITHOUT ROWID;
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on_task_id);

-- AUTOINCREMENT: a sequence is never handed out twice, even after the newest events are deleted
-- with their task, so "everything after N" stays meaningful for stream readers.
CREATE TABLE task_events (
    sequence    INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    run_id      TEXT,
    event_type  TEXT NOT NULL,
    actor_kind  TEXT NOT NULL,
    actor_ref   TEXT NOT NULL,
    origin_kind TEXT NOT NULL,
    origin_ref  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    timestamp   INTEGER NOT NULL
);
CREATE INDEX task_events_task ON task_events (task_id, sequence);

CREATE TABLE run_idempotency (
    key         TEXT NOT NULL,
    origin_kind TEXT NOT NULL,
    origin_ref  TEXT NOT NULL,
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    run_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (key, origin_kind, origin_ref)
) WITHOUT ROWID;
-- Without it every task delete would scan the whole table to cascade.
CREATE INDEX run_idempotency_task ON run_idempotency (task_id);

CREATE TABLE agent_sessions (
    session_id    TEXT PRIMARY KEY NOT NULL,
    agent_name    TEXT,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Agent leases and API tokens.
const MIGRATION_2: &str = r#"
-- The task's priority, copied onto its runs so one partial index serves the claim order.
ALTER TABLE task_runs ADD COLUMN priority_rank INTEGER NOT NULL DEFAULT 1;
ALTER TABLE task_runs ADD COLUMN claim_idempotency_key TEXT;
UPDATE task_runs SET priority_rank = (
    SELECT CASE t.priority WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END
    FROM tasks t WHERE t.id = task_runs.task_id);
DROP INDEX task_runs_queued;
CREATE INDEX task_runs_claim ON task_runs (priority_rank DESC, queued_at, id) WHERE status = 'queued';
-- A session's active runs, without walking its whole history of finished runs.
CREATE INDEX task_runs_session_active ON task_runs (session_id)
    WHERE status IN ('claimed', 'starting', 'running');

-- The token a session acts through (token mode): a session id belongs to one token.
ALTER TABLE agent_sessions ADD COLUMN token_name TEXT;

CREATE TABLE api_tokens (
    name         TEXT PRIMARY KEY NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) WITHOUT ROWID;
"#;

/// Agent sessions namespaced by the API token that acts: two tokens using one session id are two
/// sessions. `''` stands for no token (open mode, operator attach) where a key needs a value.
const MIGRATION_4: &str = r#"
ALTER TABLE task_runs ADD COLUMN session_token TEXT;
-- Live leases keep working across the upgrade: a leased run's session was bound to one token.
UPDATE task_runs SET session_token = (
    SELECT s.token_name FROM agent_sessions s WHERE s.session_id = task_runs.session_id)
WHERE session_id IS NOT NULL AND claim_token_hash IS NOT NULL;

CREATE TABLE agent_sessions_by_token (
    token_name    TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    agent_name    TEXT,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    PRIMARY KEY (token_name, session_id)
) WITHOUT ROWID;
INSERT INTO agent_sessions_by_token
    SELECT COALESCE(token_name, ''), session_id, agent_name, first_seen_at, last_seen_at
    FROM agent_sessions;
DROP TABLE agent_sessions;
ALTER TABLE agent_sessions_by_token RENAME TO agent_sessions;
"#;

/// Cheaper index maintenance per task write, each change found by counting WAL frames per create
/// (BENCHMARKS.md, "WAL size under sustained writes"). Plans stay the same: SQLite scans an index
/// backwards as cheaply, and every query these serve compares the column with `=` or `IN`, which
/// rules out NULL and so lets SQLite use an index limited to `IS NOT NULL`.
///
/// - Indexes led by a time that only grows are ascending. A new row's key lands at the high end:
///   ascending, that is the right-most leaf, which SQLite fills completely and extends with one
///   new page; descending, it is the left-most leaf, which SQLite splits in half, so the index
///   keeps half-empty pages and dirties about twice as many per insert (each one a WAL frame).
/// - Indexes on a column most tasks leave NULL (parent, workspace, owner) skip those tasks: no
///   query looks them up by NULL, and a root, global, unowned task then touches none of them.
const MIGRATION_5: &str = r#"
DROP INDEX tasks_list_order;
CREATE INDEX tasks_list_order ON tasks (last_activity_at, updated_at, created_at, id);
DROP INDEX tasks_parent;
-- Children are listed in list order, so the parent index carries the sort keys.
CREATE INDEX tasks_parent ON tasks (parent_task_id, last_activity_at, updated_at, created_at, id)
    WHERE parent_task_id IS NOT NULL;
DROP INDEX tasks_workspace;
CREATE INDEX tasks_workspace ON tasks (workspace_id) WHERE workspace_id IS NOT NULL;
DROP INDEX tasks_owner_status;
CREATE INDEX tasks_owner_status ON tasks (owner_kind, owner_ref, status) WHERE owner_kind IS NOT NULL;
DROP INDEX tasks_inbox_approvals;
CREATE INDEX tasks_inbox_approvals ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE status = 'blocked' AND approval_policy = 'manual' AND approval_state = 'pending';
DROP INDEX tasks_inbox_failed;
CREATE INDEX tasks_inbox_failed ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE latest_run_status = 'failed';
DROP INDEX tasks_inbox_blocked;
CREATE INDEX tasks_inbox_blocked ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE status = 'blocked' AND latest_run_status IS NOT 'failed'
      AND NOT (approval_policy = 'manual' AND approval_state = 'pending');
-- my_work is the caller's own tasks: an unowned task is never in it.
DROP INDEX tasks_inbox_open;
CREATE INDEX tasks_inbox_open ON tasks (owner_kind, owner_ref, MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE owner_kind IS NOT NULL AND status NOT IN ('draft', 'completed', 'failed', 'canceled', 'blocked')
      AND latest_run_status IS NOT 'failed';
"#;

/// No temporary b-tree on a run's status change:
/// - partial indexes on status sets, restated with `OR` chains (see `status_sets`): an `IN` list in
///   a partial index's predicate built one on every write of a run or a task;
/// - the latest run of a task (the counters' `latest_run_status`, kept by the run triggers on every
///   status change) read in index order instead of sorting the task's runs;
/// - `task_runs_live` dropped: it held exactly the runs of `task_runs_active_lease`, which serves
///   the dashboard's active runs as well.
const MIGRATION_6: &str = concat!(
    "CREATE INDEX task_runs_latest ON task_runs (task_id, attempt DESC, queued_at DESC, id DESC);
DROP INDEX task_runs_active_lease;
CREATE INDEX task_runs_active_lease ON task_runs (lease_until) WHERE ",
    active_run!("status"),
    ";
DROP INDEX task_runs_session_active;
CREATE INDEX task_runs_session_active ON task_runs (session_id) WHERE ",
    active_run!("status"),
    ";
DROP INDEX task_runs_live;
DROP INDEX task_runs_open_claimer;
CREATE INDEX task_runs_open_claimer ON task_runs (claimed_by_kind, claimed_by_ref) WHERE ",
    open_run!("status"),
    ";
DROP INDEX tasks_inbox_open;
CREATE INDEX tasks_inbox_open ON tasks (owner_kind, owner_ref, MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE owner_kind IS NOT NULL AND NOT ",
    not_open_work!("status"),
    " AND latest_run_status IS NOT 'failed';
"
);

/// Claim classes: claim-next seeks the oldest run of each (audience, priority, capability class)
/// instead of walking the queue past runs the caller may not take (see `claim_class_heads`).
/// - `claim_audience`: who may claim the run while it is queued (`claim_audience::of_task` of its
///   task), NULL when nobody can (a draft, blocked or canceled task, an owner that never claims);
///   such runs stay out of the index.
/// - `claim_caps`: the run's required and preferred capability sets, sorted, as JSON.
///
/// Finished runs keep NULL / '': no claim ever reads them.
const MIGRATION_8: &str = concat!(
    "ALTER TABLE task_runs ADD COLUMN claim_audience TEXT;
ALTER TABLE task_runs ADD COLUMN claim_caps TEXT NOT NULL DEFAULT '';
UPDATE task_runs SET
    claim_caps = json_array(
        json((SELECT json_group_array(value) FROM
            (SELECT DISTINCT value FROM json_each(task_runs.required_capabilities) ORDER BY value))),
        json((SELECT json_group_array(value) FROM
            (SELECT DISTINCT value FROM json_each(task_runs.preferred_capabilities) ORDER BY value)))),
    claim_audience = (SELECT CASE
        WHEN ",
    unclaimable_task!("t.status"),
    " THEN NULL
        WHEN t.owner_kind IS NOT NULL AND t.owner_kind <> 'agent_session' AND t.owner_kind <> 'pool'
            THEN NULL
        WHEN t.scope = 'global' THEN 'g|'
        WHEN t.workspace_id IS NULL THEN NULL
        ELSE 'w:' || t.workspace_id || '|' END
        || COALESCE(t.owner_kind || ':' || t.owner_ref, '')
        FROM tasks t WHERE t.id = task_runs.task_id)
WHERE NOT ",
    finished_run!("status"),
    ";
DROP INDEX task_runs_claim;
CREATE INDEX task_runs_claim_class ON task_runs (claim_audience, priority_rank, claim_caps, queued_at, id)
    WHERE status = 'queued' AND claim_audience IS NOT NULL;
-- The queue by age also carries each run's priority, so that the depth and the oldest run per
-- priority (metrics) are read from this index alone, without the table.
DROP INDEX task_runs_queue_recent;
CREATE INDEX task_runs_queue_recent ON task_runs (queued_at, id, priority_rank) WHERE status = 'queued';
"
);

/// The schema's backstop for the rule that a task has at most one open run (checked in
/// `tasklane-core` before every enqueue): should a write ever break it, the transaction fails
/// instead of committing a second open run.
const MIGRATION_9: &str = concat!(
    "CREATE UNIQUE INDEX task_runs_one_open ON task_runs (task_id) WHERE ",
    open_run!("status"),
    ";"
);

/// `task_runs_session` served no query: every read by session asks for the session's active
/// runs, which `task_runs_session_active` serves, yet each claim added an entry to it (a WAL page
/// for every claim's commit).
const MIGRATION_10: &str = "DROP INDEX IF EXISTS task_runs_session;";

/// Settings the database keeps about itself. `event_ids = sequence`: events are named by their
/// sequence (`ids::event_id_of`), which puts each new id at the end of `task_events`' unique
/// index on `id` instead of on a random leaf of it (a WAL page of its own per event). Set only
/// for a log that has never held an event, since a random id already stored could be one that
/// a later sequence names.
const MIGRATION_11: &str = "\
CREATE TABLE tasklane_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO tasklane_settings (name, value) SELECT 'event_ids', 'sequence'
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'task_events');";

/// Every migration in order; the schema version is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    super::observe::schema::MIGRATION,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    super::observe::schema::MIGRATION_DELTAS,
    MIGRATION_8,
    MIGRATION_9,
    MIGRATION_10,
    MIGRATION_11,
];

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Whether the database names its events by sequence (see `MIGRATION_11`).
pub(crate) fn events_named_by_sequence(conn: &Connection) -> Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM tasklane_settings \
         WHERE name = 'event_ids' AND value = 'sequence')",
        [],
        |r| r.get(0),
    )
    .map_err(sql_err)
}

pub(crate) fn user_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)
}

/// Refuses a database written by a newer Tasklane: running old code on a newer schema could
/// silently drop what the newer one records.
pub(crate) fn check_not_newer(conn: &Connection) -> Result<i64> {
    let version = user_version(conn)?;
    if version > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "database schema version {version} is newer than this tasklane (knows {SCHEMA_VERSION}); upgrade tasklane"
        )));
    }
    Ok(version)
}

/// Applies every pending migration, each in its own IMMEDIATE transaction together with its
/// version bump, so a crash leaves the database at a whole version and another process opening the
/// same file concurrently waits instead of applying the same step twice.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let version = check_not_newer(&tx)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let next = version + 1;
        tx.execute_batch(MIGRATIONS[version as usize])
            .map_err(sql_err)?;
        tx.pragma_update(None, "user_version", next)
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        tracing::info!(version = next, "applied sqlite migration");
    }
}
